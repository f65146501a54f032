//! Genesis files from arbitrary bytes: an error or a state, never a panic.

#![no_main]

use dag::ledger::genesis::Genesis;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = Genesis::from_json(data) {
        // A file that parses builds its state (or says why it cannot).
        let _ = g.ledger();
        let again = Genesis::from_json(g.to_json().as_bytes()).expect("re-parses");
        assert_eq!(again.chain_id(), g.chain_id());
    }
});
