//! `InclusionProof::decode` on arbitrary bytes, then `verify` on inputs taken
//! from the same bytes.
//!
//! Input: `size` (u64 LE, 8 bytes) ‖ `leaf_index` (u64 LE, 8) ‖ `root` (32)
//! ‖ `leaf` (32) ‖ proof bytes (the rest).

#![no_main]

use libfuzzer_sys::fuzz_target;
use proofs::mmr::InclusionProof;
use proofs::Hash;

fuzz_target!(|data: &[u8]| {
    let Some((head, proof_bytes)) = data.split_first_chunk::<80>() else {
        return;
    };
    let Ok(proof) = InclusionProof::decode(proof_bytes) else {
        return;
    };
    // Canonical: an accepted proof re-encodes to exactly the input bytes.
    assert_eq!(
        proof.encode(),
        proof_bytes,
        "decode accepted a non-canonical proof"
    );
    assert_eq!(InclusionProof::decode(&proof.encode()).as_ref(), Ok(&proof));

    let size = u64::from_le_bytes(head[0..8].try_into().unwrap());
    let leaf_index = u64::from_le_bytes(head[8..16].try_into().unwrap());
    let root = Hash(head[16..48].try_into().unwrap());
    let leaf = Hash(head[48..80].try_into().unwrap());
    // Any result is fine; a panic is the bug.
    let _ = proof.verify(&root, size, leaf_index, &leaf);
});
