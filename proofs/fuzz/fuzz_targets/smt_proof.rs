//! `SparseProof::decode` on arbitrary bytes, then `verify` on inputs taken
//! from the same bytes.
//!
//! Input: `root` (32 bytes) ‖ `key` (32) ‖ claim flag (1; even = non-membership
//! `None`, odd = membership `Some(value)`) ‖ `value` (32) ‖ proof bytes (the
//! rest).

#![no_main]

use libfuzzer_sys::fuzz_target;
use proofs::smt::SparseProof;
use proofs::Hash;

fuzz_target!(|data: &[u8]| {
    let Some((head, proof_bytes)) = data.split_first_chunk::<97>() else {
        return;
    };
    let Ok(proof) = SparseProof::decode(proof_bytes) else {
        return;
    };
    // Canonical: an accepted proof re-encodes to exactly the input bytes.
    assert_eq!(
        proof.encode(),
        proof_bytes,
        "decode accepted a non-canonical proof"
    );
    assert_eq!(SparseProof::decode(&proof.encode()).as_ref(), Ok(&proof));

    let root = Hash(head[0..32].try_into().unwrap());
    let key = Hash(head[32..64].try_into().unwrap());
    let value = Hash(head[65..97].try_into().unwrap());
    let claim = (head[64] & 1 == 1).then_some(&value);
    // Any result is fine; a panic is the bug.
    let _ = proof.verify(&root, &key, claim);
});
