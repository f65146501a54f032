//! Event payload bytes through decoding, admission and apply on a small
//! genesis state: never a panic, every item gets exactly one outcome, and a
//! decoded transaction re-encodes to its own bytes.

#![no_main]

use dag::identity::PeerKey;
use dag::ledger::admission::{authorize_batch, decode_payload, PayloadItem};
use dag::ledger::apply::HeightInput;
use dag::ledger::genesis::{Genesis, GenesisOutput, GenesisPeer, NativeAsset};
use dag::ledger::state::Params;
use libfuzzer_sys::fuzz_target;
use proofs::Hash;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fuzz_target!(|data: &[u8]| {
    let genesis = Genesis {
        chain_name: "fuzz".into(),
        time_ms: 0,
        native: NativeAsset {
            name: "SHARE".into(),
            precision: 0,
        },
        params: Params::default(),
        peers: vec![GenesisPeer {
            name: "alpha".into(),
            // The ristretto base point: a valid key.
            key: PeerKey([
                0xe2, 0xf2, 0xae, 0x0a, 0x6a, 0xbc, 0x4e, 0x71, 0xa8, 0x84, 0xa9, 0x61, 0xc5, 0x00,
                0x51, 0x5f, 0x58, 0xe3, 0x0b, 0x6a, 0xa5, 0x82, 0xdd, 0x8d, 0xb6, 0xa6, 0x59, 0x45,
                0xe0, 0x8d, 0x2d, 0x76,
            ]),
            addr: "127.0.0.1:7000".parse().unwrap(),
        }],
        outputs: vec![GenesisOutput {
            owner: PeerKey([1; 32]),
            amount: 1000,
            host: "alpha".into(),
        }],
    };
    let mut ledger = genesis.ledger().expect("valid genesis");
    let chain = ledger.chain();
    let items = decode_payload(data, ledger.params().max_tx_bytes as usize);
    for item in &items {
        if let PayloadItem::Tx { tx, id } = item {
            assert_eq!(tx.id(), *id);
            let bytes = tx.encode();
            assert_eq!(
                proofs::decode::<dag::ledger::Transaction>(&bytes, usize::MAX).as_ref(),
                Ok(&**tx)
            );
        }
    }
    let admitted = authorize_batch(&items, &chain, &mut ChaCha20Rng::seed_from_u64(1));
    assert_eq!(admitted.len(), items.len());
    let out = ledger
        .apply_height(&HeightInput {
            height: 1,
            round: 1,
            leader: Hash::ZERO,
            events: vec![(Hash::ZERO, admitted)],
        })
        .expect("in-memory store");
    assert_eq!(out.outcomes.len(), items.len());
});
