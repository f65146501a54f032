//! A swap over the wallets' own links, as two sans-IO state machines that
//! `wallet online` drives: the room owner's [`Coordinator`] and each
//! party's [`Party`] (the owner may be a party too; its messages to itself
//! are delivered in process).
//!
//! The owner builds the one transaction of the room's balanced offers
//! (`dag::ledger::swap::build`) and proposes it; each party checks it
//! against its own offer (`check_for`) before it commits to anything; the
//! owner relays the three MuSig rounds (every party's messages to every
//! party); each party combines the cosignatures, checks the signature and
//! sends it; the owner submits the transaction and, once final, tells
//! everyone. A party that refuses, leaves, or does not answer a round
//! within [`ROUND_TIMEOUT`] aborts the swap for all, named in the reason;
//! nothing is submitted, so every offered output stays free.

use dag::identity::{Bytes64, PeerKey};
use dag::ledger::multisig::{
    bad_cosigners, verify_claim, Commitment, Cosignature, Reveal, SignatureClaim,
};
use dag::ledger::swap::{build, check_for, Offer, PartySigner};
use dag::ledger::transaction::{Transaction, TxBody};
use dag::wire::DirectMessage;
use proofs::Hash;
use schnorrkel::Keypair;
use std::time::{Duration, Instant};

/// How long the owner waits for every party's message of one round.
pub const ROUND_TIMEOUT: Duration = Duration::from_secs(20);

/// What the coordinator wants done.
#[derive(Debug)]
pub enum Step {
    /// Send to a party (by its login key; the owner's own key: deliver
    /// in process).
    Send(PeerKey, DirectMessage),
    /// Submit the signed transaction to the owner's peer.
    Submit(Transaction),
    /// The swap is off; every party was told why.
    Aborted(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Proposed,
    Revealing,
    Cosigning,
    Signing,
    Submitted,
    Over,
}

struct Member {
    name: String,
    key: PeerKey,
    /// The input keys its offer spends (its messages must cover exactly
    /// these).
    signers: Vec<PeerKey>,
    got: bool,
}

/// The owner's side of one swap.
pub struct Coordinator {
    pub id: [u8; 16],
    body: TxBody,
    parties: Vec<Member>,
    stage: Stage,
    commitments: Vec<Commitment>,
    reveals: Vec<Reveal>,
    cosignatures: Vec<Cosignature>,
    deadline: Instant,
}

impl Coordinator {
    /// Start a swap of `offers` (each with the party's login key): the
    /// proposal to every party, or why the offers make no transaction.
    pub fn start(
        id: [u8; 16],
        chain: Hash,
        offers: &[(PeerKey, Offer)],
        now: Instant,
    ) -> Result<(Coordinator, Vec<Step>), String> {
        let only: Vec<Offer> = offers.iter().map(|(_, o)| o.clone()).collect();
        let body = build(chain, &only).map_err(|e| e.to_string())?;
        let parties: Vec<Member> = offers
            .iter()
            .map(|(k, o)| Member {
                name: o.party.clone(),
                key: *k,
                signers: o.inputs.iter().map(|(_, out)| out.owner).collect(),
                got: false,
            })
            .collect();
        let steps = parties
            .iter()
            .map(|p| {
                Step::Send(
                    p.key,
                    DirectMessage::SwapPropose {
                        swap: id,
                        body: Box::new(body.clone()),
                    },
                )
            })
            .collect();
        Ok((
            Coordinator {
                id,
                body,
                parties,
                stage: Stage::Proposed,
                commitments: Vec::new(),
                reveals: Vec::new(),
                cosignatures: Vec::new(),
                deadline: now + ROUND_TIMEOUT,
            },
            steps,
        ))
    }

    pub fn parties(&self) -> usize {
        self.parties.len()
    }

    pub fn is_over(&self) -> bool {
        self.stage == Stage::Over
    }

    pub fn deadline(&self) -> Option<Instant> {
        match self.stage {
            Stage::Over | Stage::Submitted => None,
            _ => Some(self.deadline),
        }
    }

    pub fn tx_id(&self) -> Hash {
        self.body.id()
    }

    /// Abort for all with `reason`.
    pub fn abort(&mut self, reason: String) -> Vec<Step> {
        if self.stage == Stage::Over {
            return Vec::new();
        }
        self.stage = Stage::Over;
        let mut steps: Vec<Step> = self
            .parties
            .iter()
            .map(|p| {
                Step::Send(
                    p.key,
                    DirectMessage::SwapAbort {
                        swap: self.id,
                        reason: reason.clone(),
                    },
                )
            })
            .collect();
        steps.push(Step::Aborted(reason));
        steps
    }

    /// The round's deadline passed: abort, naming who did not answer.
    pub fn on_timeout(&mut self, now: Instant) -> Vec<Step> {
        if self.deadline().is_none_or(|d| now < d) {
            return Vec::new();
        }
        let late: Vec<&str> = self
            .parties
            .iter()
            .filter(|p| !p.got)
            .map(|p| p.name.as_str())
            .collect();
        let reason = format!(
            "{} did not answer within {} s",
            late.join(", "),
            ROUND_TIMEOUT.as_secs()
        );
        self.abort(reason)
    }

    /// A party's link closed.
    pub fn on_left(&mut self, key: &PeerKey) -> Vec<Step> {
        if self.stage == Stage::Submitted || self.stage == Stage::Over {
            return Vec::new();
        }
        match self.parties.iter().find(|p| p.key == *key) {
            Some(p) => {
                let reason = format!("{} left", p.name);
                self.abort(reason)
            }
            None => Vec::new(),
        }
    }

    /// The transaction is final at `height`.
    pub fn on_final(&mut self, height: u64) -> Vec<Step> {
        self.stage = Stage::Over;
        let tx = self.body.id();
        self.parties
            .iter()
            .map(|p| {
                Step::Send(
                    p.key,
                    DirectMessage::SwapDone {
                        swap: self.id,
                        tx,
                        height,
                        parties: self.parties.len() as u32,
                    },
                )
            })
            .collect()
    }

    /// A message of this swap from party `from`.
    pub fn on_message(&mut self, from: &PeerKey, msg: DirectMessage, now: Instant) -> Vec<Step> {
        let Some(i) = self.parties.iter().position(|p| p.key == *from) else {
            return Vec::new();
        };
        let name = self.parties[i].name.clone();
        let own: Vec<PeerKey> = self.parties[i].signers.clone();
        let covers = |keys: Vec<PeerKey>| {
            let mut k = keys;
            k.sort();
            let mut o = own.clone();
            o.sort();
            k == o
        };
        match (self.stage, msg) {
            (_, DirectMessage::SwapRefuse { reason, .. }) => {
                self.abort(format!("{name} refused: {reason}"))
            }
            (Stage::Proposed, DirectMessage::SwapCommit { commitments, .. })
                if !self.parties[i].got =>
            {
                if !covers(commitments.iter().map(|c| c.signer).collect()) {
                    return self.abort(format!("{name} committed for keys other than its inputs'"));
                }
                self.commitments.extend(commitments);
                self.took(i, now, Stage::Revealing, |c| DirectMessage::SwapCommit {
                    swap: c.id,
                    commitments: c.commitments.clone(),
                })
            }
            (Stage::Revealing, DirectMessage::SwapReveal { reveals, .. })
                if !self.parties[i].got =>
            {
                if !covers(reveals.iter().map(|r| r.signer).collect()) {
                    return self.abort(format!("{name} revealed for keys other than its inputs'"));
                }
                self.reveals.extend(reveals);
                self.took(i, now, Stage::Cosigning, |c| DirectMessage::SwapReveal {
                    swap: c.id,
                    reveals: c.reveals.clone(),
                })
            }
            (Stage::Cosigning, DirectMessage::SwapCosign { cosignatures, .. })
                if !self.parties[i].got =>
            {
                if !covers(cosignatures.iter().map(|c| c.signer).collect()) {
                    return self.abort(format!("{name} cosigned for keys other than its inputs'"));
                }
                // Each share checked on arrival: a bad one names its
                // sender before anyone combines anything.
                let bad = bad_cosigners(
                    &self.body.signers,
                    &self.body.id(),
                    &self.reveals,
                    &cosignatures,
                );
                if !bad.as_ref().is_ok_and(|b| b.is_empty()) {
                    return self.abort(format!(
                        "{name} sent a partial signature that is not its share"
                    ));
                }
                self.cosignatures.extend(cosignatures);
                self.took(i, now, Stage::Signing, |c| DirectMessage::SwapCosign {
                    swap: c.id,
                    cosignatures: c.cosignatures.clone(),
                })
            }
            (Stage::Signing, DirectMessage::SwapSigned { signature, .. }) => {
                let tx = Transaction {
                    body: self.body.clone(),
                    signature,
                };
                let claim = SignatureClaim {
                    signers: tx.body.signers.clone(),
                    aggregate: tx.body.aggregate,
                    digest: tx.id(),
                    signature,
                };
                if verify_claim(&claim).is_err() {
                    return self.abort(format!("{name} sent a signature that does not verify"));
                }
                self.stage = Stage::Submitted;
                vec![Step::Submit(tx)]
            }
            // Late or repeated messages of a finished round.
            _ => Vec::new(),
        }
    }

    /// Party `i` answered this round; once all have, send everyone
    /// everything (`all`) and move to `next`.
    fn took(
        &mut self,
        i: usize,
        now: Instant,
        next: Stage,
        all: impl Fn(&Coordinator) -> DirectMessage,
    ) -> Vec<Step> {
        self.parties[i].got = true;
        if !self.parties.iter().all(|p| p.got) {
            return Vec::new();
        }
        for p in &mut self.parties {
            p.got = false;
        }
        self.stage = next;
        self.deadline = now + ROUND_TIMEOUT;
        let msg = all(self);
        self.parties
            .iter()
            .map(|p| Step::Send(p.key, msg.clone()))
            .collect()
    }
}

/// One party's side: its offer, the keys of its inputs, and the signing
/// once a proposal is accepted.
pub struct Party {
    pub room: u64,
    pub offer: Offer,
    keys: Vec<Keypair>,
    swap: Option<[u8; 16]>,
    signer: Option<PartySigner>,
    pub body: Option<TxBody>,
}

/// What the party answers (to the owner), or that it is done for.
pub enum PartyStep {
    Reply(DirectMessage),
    None,
}

impl Party {
    pub fn new(room: u64, offer: Offer, keys: Vec<Keypair>) -> Party {
        Party {
            room,
            offer,
            keys,
            swap: None,
            signer: None,
            body: None,
        }
    }

    pub fn swap(&self) -> Option<[u8; 16]> {
        self.swap
    }

    /// A message from the owner about this party's offer.
    pub fn on_message(&mut self, msg: DirectMessage) -> PartyStep {
        let refuse =
            |swap, reason: String| PartyStep::Reply(DirectMessage::SwapRefuse { swap, reason });
        match msg {
            DirectMessage::SwapPropose { swap, body } => {
                if self.swap.is_some() {
                    return PartyStep::None;
                }
                self.swap = Some(swap);
                if let Err(e) = check_for(&self.offer, &body) {
                    return refuse(swap, e.to_string());
                }
                let signer = match PartySigner::new(self.keys.clone(), &body) {
                    Ok(s) => s,
                    Err(e) => return refuse(swap, e.to_string()),
                };
                let commitments = match signer.commitments() {
                    Ok(c) => c,
                    Err(e) => return refuse(swap, e.to_string()),
                };
                self.signer = Some(signer);
                self.body = Some(*body);
                PartyStep::Reply(DirectMessage::SwapCommit { swap, commitments })
            }
            DirectMessage::SwapCommit { swap, commitments } if self.swap == Some(swap) => self
                .round(swap, |s| {
                    s.add_commitments(&commitments)?;
                    Ok(DirectMessage::SwapReveal {
                        swap,
                        reveals: s.reveals()?,
                    })
                }),
            DirectMessage::SwapReveal { swap, reveals } if self.swap == Some(swap) => {
                self.round(swap, |s| {
                    s.add_reveals(&reveals)?;
                    Ok(DirectMessage::SwapCosign {
                        swap,
                        cosignatures: s.cosignatures()?,
                    })
                })
            }
            DirectMessage::SwapCosign { swap, cosignatures } if self.swap == Some(swap) => self
                .round(swap, |s| {
                    let signature: Bytes64 = s.add_cosignatures(&cosignatures)?;
                    Ok(DirectMessage::SwapSigned { swap, signature })
                }),
            _ => PartyStep::None,
        }
    }

    fn round(
        &mut self,
        swap: [u8; 16],
        f: impl FnOnce(&mut PartySigner) -> Result<DirectMessage, dag::ledger::swap::SwapError>,
    ) -> PartyStep {
        let Some(s) = self.signer.as_mut() else {
            return PartyStep::None;
        };
        match f(s) {
            Ok(m) => PartyStep::Reply(m),
            Err(e) => PartyStep::Reply(DirectMessage::SwapRefuse {
                swap,
                reason: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dag::ledger::asset::AssetId;
    use dag::ledger::output::{Output, Value};
    use schnorrkel::{ExpansionMode, MiniSecretKey};
    use std::collections::BTreeMap;

    fn key(seed: u8) -> Keypair {
        MiniSecretKey::from_bytes(&[seed; 32])
            .unwrap()
            .expand_to_keypair(ExpansionMode::Ed25519)
    }

    fn pk(k: &Keypair) -> PeerKey {
        PeerKey(k.public.to_bytes())
    }

    /// The parties by key, and their offers as the owner starts with them.
    fn with_offers(
        list: impl IntoIterator<Item = (PeerKey, Party)>,
    ) -> (BTreeMap<PeerKey, Party>, Vec<(PeerKey, Offer)>) {
        let parties: BTreeMap<PeerKey, Party> = list.into_iter().collect();
        let offers = parties.iter().map(|(k, p)| (*k, p.offer.clone())).collect();
        (parties, offers)
    }

    /// Party n: login key 100+n; gives `give` of asset g (holding `held`),
    /// wants `want` of asset w.
    fn party(n: u8, g: u8, give: u128, held: u128, w: u8, want: u128) -> (PeerKey, Party) {
        let input = key(10 * n);
        let offer = Offer {
            party: format!("p-{n}@peer-0"),
            give: (AssetId(Hash([g; 32])), give),
            want: (AssetId(Hash([w; 32])), want),
            inputs: vec![(
                Hash([n; 32]),
                Output {
                    owner: pk(&input),
                    asset: AssetId(Hash([g; 32])),
                    value: Value::Amount(held),
                    host: None,
                },
            )],
            receive: pk(&key(10 * n + 1)),
            receive_host: None,
            change: pk(&key(10 * n + 2)),
            fee: 0,
        };
        (PeerKey([100 + n; 32]), Party::new(1, offer, vec![input]))
    }

    /// Deliver steps between the coordinator and the parties until quiet;
    /// returns what the coordinator ended with. `drop_from` never answers.
    fn run(
        coord: &mut Coordinator,
        parties: &mut BTreeMap<PeerKey, Party>,
        steps: Vec<Step>,
        silent: Option<PeerKey>,
    ) -> Vec<Step> {
        run_with(coord, parties, steps, silent, &|_, _| {})
    }

    /// [`run`], with `tamper` given each party's reply before the
    /// coordinator sees it.
    fn run_with(
        coord: &mut Coordinator,
        parties: &mut BTreeMap<PeerKey, Party>,
        steps: Vec<Step>,
        silent: Option<PeerKey>,
        tamper: &dyn Fn(&PeerKey, &mut DirectMessage),
    ) -> Vec<Step> {
        let mut queue = steps;
        let mut ends = Vec::new();
        while let Some(step) = queue.pop() {
            match step {
                Step::Send(to, msg) => {
                    if Some(to) == silent {
                        continue;
                    }
                    let Some(p) = parties.get_mut(&to) else {
                        continue;
                    };
                    if let PartyStep::Reply(mut r) = p.on_message(msg) {
                        tamper(&to, &mut r);
                        queue.extend(coord.on_message(&to, r, Instant::now()));
                    }
                }
                other => ends.push(other),
            }
        }
        ends
    }

    #[test]
    fn three_parties_in_a_cycle_end_with_one_signed_transaction() {
        let (mut parties, offers) = with_offers([
            party(1, 1, 100, 150, 2, 70),
            party(2, 2, 70, 70, 3, 5),
            party(3, 3, 5, 9, 1, 100),
        ]);
        let (mut c, steps) =
            Coordinator::start([1; 16], Hash([7; 32]), &offers, Instant::now()).unwrap();
        let ends = run(&mut c, &mut parties, steps, None);
        let [Step::Submit(tx)] = ends.as_slice() else {
            panic!("{ends:?}")
        };
        assert_eq!(tx.id(), c.tx_id());
        assert_eq!(tx.body.inputs.len(), 3);
        let done = c.on_final(42);
        assert_eq!(done.len(), 3);
        assert!(c.is_over());
    }

    #[test]
    fn a_party_that_refuses_leaves_or_is_silent_aborts_for_all_and_is_named() {
        let setup = || {
            let (parties, offers) =
                with_offers([party(1, 1, 100, 150, 2, 70), party(2, 2, 70, 80, 1, 100)]);
            let (c, steps) =
                Coordinator::start([2; 16], Hash::ZERO, &offers, Instant::now()).unwrap();
            (parties, c, steps)
        };
        // Refuses: its wanted amount was changed (a party wanting more than
        // the proposal gives checks and refuses).
        let (mut parties, mut c, steps) = setup();
        parties.get_mut(&PeerKey([102; 32])).unwrap().offer.want.1 = 101;
        let ends = run(&mut c, &mut parties, steps, None);
        let [Step::Aborted(why)] = ends.as_slice() else {
            panic!("{ends:?}")
        };
        assert!(why.contains("p-2@peer-0 refused"), "{why}");
        // Silent: the round times out naming it.
        let (mut parties, mut c, steps) = setup();
        let ends = run(&mut c, &mut parties, steps, Some(PeerKey([101; 32])));
        assert!(ends.is_empty());
        let later = Instant::now() + ROUND_TIMEOUT + Duration::from_secs(1);
        let steps = c.on_timeout(later);
        let Some(Step::Aborted(why)) = steps.last() else {
            panic!("{steps:?}")
        };
        assert!(why.contains("p-1@peer-0 did not answer"), "{why}");
        // Leaves mid-way.
        let (_, mut c, _) = setup();
        let steps = c.on_left(&PeerKey([102; 32]));
        let Some(Step::Aborted(why)) = steps.last() else {
            panic!("{steps:?}")
        };
        assert_eq!(why, "p-2@peer-0 left");
        // Messages for keys not its own are refused.
        let (_, mut c, _) = setup();
        let fake = Commitment {
            signer: PeerKey([9; 32]),
            digest: c.tx_id(),
            commitment: [0; 16],
        };
        let steps = c.on_message(
            &PeerKey([101; 32]),
            DirectMessage::SwapCommit {
                swap: [2; 16],
                commitments: vec![fake],
            },
            Instant::now(),
        );
        let Some(Step::Aborted(why)) = steps.last() else {
            panic!("{steps:?}")
        };
        assert!(why.contains("other than its inputs"), "{why}");
    }

    #[test]
    fn a_bad_partial_signature_aborts_for_all_and_names_its_sender() {
        let (mut parties, offers) = with_offers([
            party(1, 1, 100, 150, 2, 70),
            party(2, 2, 70, 70, 3, 5),
            party(3, 3, 5, 9, 1, 100),
        ]);
        let (mut c, steps) =
            Coordinator::start([3; 16], Hash([7; 32]), &offers, Instant::now()).unwrap();
        // p-2 sends a well-formed share that is not its own.
        let cheat = |to: &PeerKey, r: &mut DirectMessage| {
            if let (true, DirectMessage::SwapCosign { cosignatures, .. }) =
                (*to == PeerKey([102; 32]), r)
            {
                cosignatures[0].s[0] ^= 1;
            }
        };
        let ends = run_with(&mut c, &mut parties, steps, None, &cheat);
        let [Step::Aborted(why)] = ends.as_slice() else {
            panic!("{ends:?}")
        };
        assert!(why.contains("p-2@peer-0 sent a partial signature"), "{why}");
        assert!(c.is_over());
    }
}
