//! Certified checkpoints and hand-overs decoded from arbitrary bytes and
//! checked against a fixed committee: typed errors, never a panic.

#![no_main]

use dag::committee::{Committee, Member};
use dag::identity::Signer;
use dag::ledger::checkpoint::{Certified, Checkpoint, CommitteeChain, Handover};
use libfuzzer_sys::fuzz_target;
use proofs::Hash;

fuzz_target!(|data: &[u8]| {
    let members = (0..4u8)
        .map(|i| Member {
            key: Signer::from_seed([i + 1; 32], [0; 32]).key(),
            stake: 1 + i as u64,
        })
        .collect();
    let committee = Committee::new(members).expect("valid committee");
    let mut chain = CommitteeChain::new(Hash::ZERO, committee);
    if let Ok(c) = proofs::decode::<Certified<Checkpoint>>(data, 1 << 16) {
        let _ = chain.verify_checkpoint(&c);
    }
    if let Ok(h) = proofs::decode::<Certified<Handover>>(data, 1 << 16) {
        let _ = chain.extend(&h);
    }
});
