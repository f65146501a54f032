//! Ledger snapshots from arbitrary bytes: a typed error or a ledger whose
//! roots are the claimed ones, never a panic; accepted bytes are canonical.

#![no_main]

use dag::ledger::snapshot::LedgerSnapshot;
use dag::ledger::Ledger;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(snap) = LedgerSnapshot::decode(data, 1 << 20) {
        assert_eq!(snap.encode(), data, "only canonical bytes decode");
        let roots = snap.roots.clone();
        if let Ok(ledger) = Ledger::from_snapshot(snap) {
            assert_eq!(ledger.roots(), &roots);
            // A restored ledger exports what it was restored from.
            assert_eq!(ledger.export_snapshot().expect("exports").encode(), data);
        }
    }
});
