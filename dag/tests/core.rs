//! The consensus core driven by hand: parent choice under equivocation,
//! evidence, parking and fetching, refusals.

use dag::event::EventLimits;
use dag::{
    Accepted, Committee, Core, CoreConfig, Event, EventRef, Member, Output, Refused, Signer,
};
use proofs::Hash;
use std::sync::Arc;

const CHAIN: Hash = Hash([7; 32]);

fn signers() -> Vec<Signer> {
    (0..4u8)
        .map(|i| Signer::from_seed([i + 1; 32], [i + 50; 32]))
        .collect()
}

fn committee(s: &[Signer]) -> Committee {
    Committee::new(
        s.iter()
            .map(|x| Member {
                key: x.key(),
                stake: 10,
            })
            .collect(),
    )
    .unwrap()
}

fn cfg() -> CoreConfig {
    let mut c = CoreConfig::new(CHAIN);
    c.limits = EventLimits {
        max_payload_bytes: 1000,
    };
    c
}

fn author(c: &Committee, s: &Signer) -> u32 {
    c.index_of(&s.key()).unwrap()
}

fn ev(s: &mut Signer, round: u64, parents: Vec<EventRef>, payload: Vec<u8>) -> Event {
    Event::create(s, CHAIN, &CHAIN, round, parents, payload, 0).0
}

fn r(c: &Committee, s: &Signer, e: &Event) -> EventRef {
    EventRef {
        round: e.round(),
        author: author(c, s),
        id: e.id(),
    }
}

fn drain(core: &mut Core) -> Vec<Output> {
    std::iter::from_fn(|| core.poll_output()).collect()
}

#[test]
fn honest_core_supports_one_event_per_author_and_keeps_evidence() {
    let mut s = signers();
    let c = committee(&s);
    let me = Signer::from_seed([1; 32], [9; 32]);
    let mut core = Core::new(cfg(), c.clone(), Box::new(me), 0);
    let own0 = match drain(&mut core).as_slice() {
        [Output::Broadcast(e)] => e.clone(),
        other => panic!("expected our round-0 event, got {other:?}"),
    };
    assert_eq!(own0.round(), 0);
    let a = ev(&mut s[1], 0, vec![], vec![1]);
    let a_twin = ev(&mut s[1], 0, vec![], vec![2]);
    let b = ev(&mut s[2], 0, vec![], vec![]);
    let d = ev(&mut s[3], 0, vec![], vec![]);
    assert_eq!(core.receive(1, a.clone(), None), Ok(Accepted::Inserted));
    assert_eq!(
        core.receive(1, a_twin.clone(), None),
        Ok(Accepted::Inserted)
    );
    let outs = drain(&mut core);
    let evidence: Vec<_> = outs
        .iter()
        .filter_map(|o| match o {
            Output::Equivocation(e) => Some(e.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(evidence.len(), 1, "the second event of a slot is evidence");
    assert!(evidence[0].is_valid());
    assert_eq!(core.evidence().count(), 1);
    assert_eq!(core.stats().equivocations, 1);
    core.receive(20, b, None).unwrap();
    core.receive(20, d, None).unwrap();
    // Round 0 is complete: the core builds round 1 at once.
    let own1 = drain(&mut core)
        .into_iter()
        .find_map(|o| match o {
            Output::Broadcast(e) => Some(e),
            _ => None,
        })
        .expect("round 1 event");
    assert_eq!(own1.round(), 1);
    let parents = &own1.body.parents;
    assert_eq!(parents.len(), 4);
    let by_a: Vec<_> = parents
        .iter()
        .filter(|p| p.author == author(&c, &s[1]))
        .collect();
    assert_eq!(by_a.len(), 1, "never two events of one author and round");
    assert_eq!(by_a[0].id, a.id(), "the first one seen");
    assert!(
        parents.iter().any(|p| p.id == own0.id()),
        "own previous included"
    );
}

#[test]
fn missing_parents_are_parked_fetched_and_then_inserted() {
    let mut s = signers();
    let c = committee(&s);
    let observer = Signer::from_seed([99; 32], [0; 32]);
    let mut core = Core::new(cfg(), c.clone(), Box::new(observer), 0);
    let g: Vec<Event> = (0..4).map(|i| ev(&mut s[i], 0, vec![], vec![])).collect();
    let refs: Vec<EventRef> = (0..3).map(|i| r(&c, &s[i], &g[i])).collect();
    let e1 = ev(&mut s[0], 1, refs.clone(), vec![]);
    let from = Some(s[3].key());
    assert_eq!(core.receive(5, e1.clone(), from), Ok(Accepted::Parked));
    let fetch = drain(&mut core)
        .into_iter()
        .find_map(|o| match o {
            Output::Fetch { refs, hint } => Some((refs, hint)),
            _ => None,
        })
        .expect("a fetch for the missing parents");
    assert_eq!(fetch.1, from, "ask the peer that sent the child first");
    let mut asked: Vec<_> = fetch.0.iter().map(|x| x.id).collect();
    asked.sort();
    let mut want: Vec<_> = refs.iter().map(|x| x.id).collect();
    want.sort();
    assert_eq!(asked, want);
    // Unanswered requests are repeated after the retry delay.
    let retry_at = core.poll_timeout().unwrap();
    core.handle_timeout(retry_at.max(5 + cfg().fetch_retry_ms));
    assert!(drain(&mut core)
        .iter()
        .any(|o| matches!(o, Output::Fetch { .. })));
    for e in &g[..3] {
        core.receive(6, e.clone(), None).unwrap();
    }
    assert!(
        core.get_event(&e1.id()).is_some(),
        "child inserted once its parents came"
    );
    assert_eq!(core.receive(7, e1, None), Err(Refused::Duplicate));
}

#[test]
fn invalid_and_out_of_range_events_are_refused_and_counted() {
    let mut s = signers();
    let c = committee(&s);
    let observer = Signer::from_seed([99; 32], [0; 32]);
    let mut core = Core::new(cfg(), c.clone(), Box::new(observer), 0);
    let mut bad = ev(&mut s[0], 0, vec![], vec![]);
    bad.signature = dag::identity::Bytes64([1; 64]);
    assert!(matches!(
        core.receive(1, bad, None),
        Err(Refused::Invalid(_))
    ));
    let big = ev(&mut s[1], 0, vec![], vec![0; 1001]);
    assert!(matches!(
        core.receive(1, big, None),
        Err(Refused::Invalid(_))
    ));
    assert_eq!(core.stats().invalid, 2);
    let far = ev(&mut s[2], 10_000, vec![], vec![]);
    assert_eq!(
        core.receive(1, far, None),
        Err(Refused::TooFarAhead(10_000))
    );
    // Round 5096 needs the stake table of snapshot 4096, which nobody supplied.
    let mut c2 = cfg();
    c2.max_rounds_ahead = 100_000;
    let mut core = Core::new(c2, c, Box::new(Signer::from_seed([98; 32], [0; 32])), 0);
    let later = ev(&mut s[2], 5096, vec![], vec![]);
    assert_eq!(
        core.receive(1, later, None),
        Err(Refused::AwaitingSnapshot(5096))
    );
    assert_eq!(core.stats().awaiting_snapshot, 1);
}

#[test]
fn a_lone_member_commits_by_itself() {
    let me = Signer::from_seed([5; 32], [5; 32]);
    let c = Committee::new(vec![Member {
        key: me.key(),
        stake: 1,
    }])
    .unwrap();
    let mut core = Core::new(cfg(), c, Box::new(me), 0);
    core.queue_payload(b"tx".to_vec()).unwrap();
    let mut committed = Vec::new();
    for t in 0..20 {
        core.handle_timeout(t * 100);
        for o in drain(&mut core) {
            if let Output::Committed(sd) = o {
                committed.push(sd);
            }
        }
    }
    assert!(committed.len() >= 5, "committed {}", committed.len());
    // Paced: twenty 100 ms steps make at most about twenty rounds.
    assert!(committed.len() <= 25, "committed {}", committed.len());
    for (h, sd) in committed.iter().enumerate() {
        assert_eq!(sd.height, h as u64 + 1, "heights count from 1");
    }
    let carried: Vec<Arc<Event>> = committed
        .iter()
        .flat_map(|sd| sd.events.iter().map(|v| v.event.clone()))
        .collect();
    assert!(
        carried.iter().any(|e| e.body.payload == b"tx"),
        "queued payload rides in an event"
    );
}

/// Idle, a member builds rounds at the idle pace; payload brings back the
/// fast pace at once, until what it queued is sequenced.
#[test]
fn an_idle_member_slows_down_until_payload_arrives() {
    let me = Signer::from_seed([5; 32], [5; 32]);
    let c = Committee::new(vec![Member {
        key: me.key(),
        stake: 1,
    }])
    .unwrap();
    let mut config = cfg();
    config.min_round_interval_ms = 10;
    config.idle_round_interval_ms = 500;
    let mut core = Core::new(config, c, Box::new(me), 0);
    // Run to `until` in 1 ms steps; return the rounds proposed and the
    // committed sub-DAGs that carried payload.
    let mut now = 0;
    let mut run = |core: &mut Core, until: u64| {
        let (mut proposed, mut carried) = (0, 0);
        while now < until {
            now += 1;
            if core.poll_timeout().is_some_and(|t| t <= now) {
                core.handle_timeout(now);
            }
            for o in drain(core) {
                match o {
                    Output::Broadcast(_) => proposed += 1,
                    Output::Committed(sd) => {
                        carried += sd
                            .events
                            .iter()
                            .filter(|v| !v.event.body.payload.is_empty())
                            .count()
                    }
                    _ => {}
                }
            }
        }
        (proposed, carried)
    };
    let (idle, _) = run(&mut core, 5_000);
    assert!(!core.busy());
    assert!((9..=12).contains(&idle), "{idle} rounds in 5 idle seconds");
    core.queue_payload(b"tx".to_vec()).unwrap();
    assert!(core.busy());
    // The payload rides in the next event (within one idle interval) and
    // the rounds that sequence it follow at the fast pace.
    let (busy, carried) = run(&mut core, 5_600);
    assert_eq!(carried, 1, "the payload is committed");
    assert!(busy >= 4, "{busy} rounds after the payload");
    assert!(!core.busy(), "idle again once it is sequenced");
    let (later, _) = run(&mut core, 10_600);
    assert!(
        (9..=12).contains(&later),
        "{later} rounds in 5 idle seconds"
    );
}

/// Four cores on a lossless in-test network, with D's sends optionally
/// held back.
struct Net {
    cores: Vec<Core>,
    keys: Vec<dag::PeerKey>,
    /// D's events not delivered yet.
    withheld: Vec<Arc<Event>>,
    /// Each core's committed non-empty payloads, in order.
    committed: Vec<Vec<Vec<u8>>>,
    now: u64,
}

const D: usize = 3;

impl Net {
    /// Run in 1 ms steps up to `until`; `cut_off`: nobody hears D.
    fn run(&mut self, until: u64, cut_off: bool) {
        while self.now < until {
            self.now += 1;
            let now = self.now;
            for core in &mut self.cores {
                if core.poll_timeout().is_some_and(|t| t <= now) {
                    core.handle_timeout(now);
                }
            }
            loop {
                let mut mail: Vec<(usize, Arc<Event>, usize)> = Vec::new();
                let mut fetches: Vec<(usize, Vec<EventRef>)> = Vec::new();
                for (i, core) in self.cores.iter_mut().enumerate() {
                    for o in drain(core) {
                        match o {
                            Output::Broadcast(e) | Output::Rebroadcast(e) => {
                                if cut_off && i == D {
                                    self.withheld.push(e);
                                    continue;
                                }
                                for j in (0..4).filter(|&j| j != i) {
                                    mail.push((j, e.clone(), i));
                                }
                            }
                            Output::Fetch { refs, .. } => fetches.push((i, refs)),
                            Output::Committed(sd) => self.committed[i].extend(
                                sd.events
                                    .iter()
                                    .map(|v| v.event.body.payload.clone())
                                    .filter(|p| !p.is_empty()),
                            ),
                            _ => {}
                        }
                    }
                }
                for (i, refs) in fetches {
                    for r in refs {
                        let holder = (0..4).filter(|&j| !(cut_off && j == D));
                        if let Some((j, e)) = holder
                            .filter(|&j| j != i)
                            .find_map(|j| self.cores[j].get_event(&r.id).map(|e| (j, e)))
                        {
                            mail.push((i, e, j));
                        }
                    }
                }
                if mail.is_empty() {
                    break;
                }
                for (to, e, from) in mail {
                    let _ = self.cores[to].receive(now, (*e).clone(), Some(self.keys[from]));
                }
            }
        }
    }

    fn ordered(&self, i: usize, payload: &[u8]) -> usize {
        self.committed[i]
            .iter()
            .filter(|p| p.as_slice() == payload)
            .count()
    }
}

/// A member's event that no leader reached before the rounds it sits in
/// fell below the garbage-collection horizon is never ordered; its payload
/// must not be lost with it. Here D's first events (one carrying a
/// payload) reach nobody until A, B and C have moved far past them; D then
/// proposes that payload again and everyone orders it, once.
#[test]
fn payload_of_an_event_left_below_the_horizon_is_proposed_again() {
    let s = signers();
    let c = committee(&s);
    let mut config = cfg();
    config.gc_depth = 4;
    config.min_round_interval_ms = 10;
    config.idle_round_interval_ms = 10;
    config.round_wait_ms = 5;
    let mut net = Net {
        cores: signers()
            .into_iter()
            .map(|me| Core::new(config.clone(), c.clone(), Box::new(me), 0))
            .collect(),
        keys: s.iter().map(|x| x.key()).collect(),
        withheld: Vec::new(),
        committed: vec![Vec::new(); 4],
        now: 0,
    };
    net.cores[D].queue_payload(b"from D".to_vec()).unwrap();
    // D hears everyone; nobody hears D, for many more rounds than the
    // horizon keeps.
    net.run(400, true);
    assert_eq!(net.ordered(0, b"from D"), 0, "nobody has seen D's events");
    assert!(net.cores[0].stats().committed_leaders > 20);
    // D's oldest events arrive now, late; then everything flows.
    let late = std::mem::take(&mut net.withheld);
    for e in late.iter().take(8) {
        for core in net.cores.iter_mut().take(3) {
            let _ = core.receive(net.now, (**e).clone(), Some(net.keys[D]));
        }
    }
    net.run(1200, false);
    for i in 0..4 {
        assert_eq!(net.ordered(i, b"from D"), 1, "peer {i}");
    }
    assert!(net.cores[D].stats().requeued_events >= 1);
}
