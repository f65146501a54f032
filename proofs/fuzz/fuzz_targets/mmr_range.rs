//! `RangeProof::decode` on arbitrary bytes, then `verify` on inputs taken
//! from the same bytes.
//!
//! Input: `size` (u64 LE, 8 bytes) ‖ `first` (u64 LE, 8) ‖ leaf count (u16
//! LE, 2; reduced mod 1024, so 0 is possible and exercises `EmptyRange`) ‖
//! `root` (32) ‖ leaf seed (32) ‖ proof bytes (the rest). Leaf `i` is the
//! seed with `i` (u64 LE) XORed into its first 8 bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use proofs::mmr::RangeProof;
use proofs::Hash;

fuzz_target!(|data: &[u8]| {
    let Some((head, proof_bytes)) = data.split_first_chunk::<82>() else {
        return;
    };
    let Ok(proof) = RangeProof::decode(proof_bytes) else {
        return;
    };
    // Canonical: an accepted proof re-encodes to exactly the input bytes.
    assert_eq!(
        proof.encode(),
        proof_bytes,
        "decode accepted a non-canonical proof"
    );
    assert_eq!(RangeProof::decode(&proof.encode()).as_ref(), Ok(&proof));

    let size = u64::from_le_bytes(head[0..8].try_into().unwrap());
    let first = u64::from_le_bytes(head[8..16].try_into().unwrap());
    let count = u16::from_le_bytes(head[16..18].try_into().unwrap()) % 1024;
    let root = Hash(head[18..50].try_into().unwrap());
    let seed: [u8; 32] = head[50..82].try_into().unwrap();
    let leaves: Vec<Hash> = (0..u64::from(count))
        .map(|i| {
            let mut leaf = seed;
            for (b, x) in leaf.iter_mut().zip(i.to_le_bytes()) {
                *b ^= x;
            }
            Hash(leaf)
        })
        .collect();
    // Any result is fine; a panic is the bug.
    let _ = proof.verify(&root, size, first, &leaves);
});
