//! `CompletenessProof::decode` on arbitrary bytes, then `verify` on inputs
//! taken from the same bytes.
//!
//! Input: `root` (32 bytes) ‖ `key` (32) ‖ `from` (u64 LE, 8) ‖ `to` (u64 LE,
//! 8) ‖ proof bytes (the rest).

#![no_main]

use libfuzzer_sys::fuzz_target;
use proofs::key_index::CompletenessProof;
use proofs::Hash;

fuzz_target!(|data: &[u8]| {
    let Some((head, proof_bytes)) = data.split_first_chunk::<80>() else {
        return;
    };
    let Ok(proof) = CompletenessProof::decode(proof_bytes) else {
        return;
    };
    // Canonical: an accepted proof re-encodes to exactly the input bytes.
    assert_eq!(
        proof.encode(),
        proof_bytes,
        "decode accepted a non-canonical proof"
    );
    assert_eq!(
        CompletenessProof::decode(&proof.encode()).as_ref(),
        Ok(&proof)
    );

    let root = Hash(head[0..32].try_into().unwrap());
    let key = Hash(head[32..64].try_into().unwrap());
    let from = u64::from_le_bytes(head[64..72].try_into().unwrap());
    let to = u64::from_le_bytes(head[72..80].try_into().unwrap());
    // Any result is fine; a panic is the bug. On success every returned
    // entry lies in the proof and in [from, to].
    if let Ok(entries) = proof.verify(&root, &key, from, to) {
        assert!(entries.iter().all(|e| from <= e.height && e.height <= to));
    }
});
