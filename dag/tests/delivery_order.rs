//! The committed sequence depends on the DAG only, never on the order in
//! which its events arrive: replaying a recorded run's events into a fresh
//! observer core in any order gives the sequence the honest peers committed.

use dag::sim::{commit_digest, record, Behavior, Recording, SimConfig};
use dag::{Core, Output, Signer};
use proofs::Hash;
use proptest::prelude::*;
use std::sync::OnceLock;

fn recording(behavior: Behavior) -> &'static Recording {
    static EQ: OnceLock<Recording> = OnceLock::new();
    static WH: OnceLock<Recording> = OnceLock::new();
    let cell = match behavior {
        Behavior::Equivocate => &EQ,
        _ => &WH,
    };
    cell.get_or_init(|| {
        let mut cfg = SimConfig::new(7, 2, 40, 11);
        cfg.behavior = behavior;
        let rec = record(cfg);
        assert!(
            rec.report.safety_ok && rec.report.live,
            "recorded run must be sound"
        );
        rec
    })
}

/// Feed `order` (indices into the recording) to an observer core and return
/// its committed sequence.
fn replay(rec: &Recording, order: &[usize]) -> Vec<Hash> {
    let mut cfg = rec.core_config.clone();
    // The observer receives events far out of order: let it hold them all.
    cfg.max_rounds_ahead = 10_000;
    cfg.max_pending = 1_000_000;
    let observer = Signer::from_seed([0xAB; 32], [0; 32]);
    let mut core = Core::new(cfg, rec.genesis.clone(), Box::new(observer), 0);
    let mut seq = Vec::new();
    for &i in order {
        let (ev, id, ticket) = &rec.events[i];
        let _ = core.receive_prechecked(1, ev.clone(), *id, *ticket, None);
        while let Some(o) = core.poll_output() {
            match o {
                Output::Committed(c) => seq.push(commit_digest(&c)),
                Output::Broadcast(_) => panic!("an observer outside the committee never proposes"),
                _ => {}
            }
        }
    }
    seq
}

fn check(rec: &Recording, order: &[usize]) -> Result<(), TestCaseError> {
    let seq = replay(rec, order);
    let shortest = rec.sequences.iter().map(|s| s.len()).min().unwrap();
    prop_assert!(shortest > 0, "the recorded run committed something");
    prop_assert!(
        seq.len() >= shortest,
        "observer holding every event commits at least what each peer did ({} < {shortest})",
        seq.len()
    );
    for s in &rec.sequences {
        let n = s.len().min(seq.len());
        prop_assert_eq!(&s[..n], &seq[..n]);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn any_delivery_order_gives_the_same_sequence_with_equivocators(
        order in Just((0..recording(Behavior::Equivocate).events.len()).collect::<Vec<_>>()).prop_shuffle()
    ) {
        check(recording(Behavior::Equivocate), &order)?;
    }

    #[test]
    fn any_delivery_order_gives_the_same_sequence_with_withholders(
        order in Just((0..recording(Behavior::Withhold).events.len()).collect::<Vec<_>>()).prop_shuffle()
    ) {
        check(recording(Behavior::Withhold), &order)?;
    }
}

#[test]
fn reverse_order_is_no_different() {
    let rec = recording(Behavior::Equivocate);
    let order: Vec<usize> = (0..rec.events.len()).rev().collect();
    check(rec, &order).unwrap();
    // And the recorded creation order.
    let order: Vec<usize> = (0..rec.events.len()).collect();
    check(rec, &order).unwrap();
}
