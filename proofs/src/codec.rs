//! Canonical postcard encoding.
//!
//! Everything that is hashed, signed or sent uses these two functions. The
//! decoder accepts a byte string only if it decodes completely and encodes
//! back to exactly the same bytes, so every value has one encoding and a
//! hash or signature over bytes is a hash or signature over the value.

use serde::{de::DeserializeOwned, Serialize};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("input of {len} bytes exceeds the limit of {limit}")]
    TooLong { len: usize, limit: usize },
    #[error("malformed encoding: {0}")]
    Malformed(String),
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
    #[error("non-canonical encoding (does not re-encode to the same bytes)")]
    NonCanonical,
}

/// Encode a value. Encoding to a `Vec` only fails for types serde cannot
/// express in postcard (maps with non-serialisable keys, unknown lengths),
/// which none of the project's types are.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("project types always encode")
}

/// Append the encoding of `value` to `out`. The encoding of a struct is its
/// fields' encodings in order and a sequence's is [`encode_len`] then its
/// elements', so a large value can be written piece by piece.
pub fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    postcard::to_extend(value, std::mem::take(out))
        .map(|v| *out = v)
        .expect("project types always encode")
}

/// Append the length prefix of a sequence of `n` elements.
pub fn encode_len(n: usize, out: &mut Vec<u8>) {
    // A sequence's length is the same varint as a u64's.
    encode_into(&(n as u64), out)
}

/// Decode a value, rejecting anything but its one canonical encoding.
/// `limit` bounds the input length before any work is done.
pub fn decode<T: Serialize + DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
) -> Result<T, CodecError> {
    if bytes.len() > limit {
        return Err(CodecError::TooLong {
            len: bytes.len(),
            limit,
        });
    }
    let (value, rest): (T, &[u8]) =
        postcard::take_from_bytes(bytes).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::Trailing(rest.len()));
    }
    if postcard::to_allocvec(&value).map_err(|e| CodecError::Malformed(e.to_string()))? != bytes {
        return Err(CodecError::NonCanonical);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    struct Sample {
        a: u64,
        b: Vec<u8>,
        c: bool,
        d: Option<u32>,
    }

    #[test]
    fn overlong_varint_is_rejected() {
        // 0x80 0x00 is a two-byte spelling of 0; the canonical one is 0x00.
        assert!(decode::<u64>(&[0x80, 0x00], 16).is_err());
        assert_eq!(decode::<u64>(&[0x00], 16), Ok(0));
    }

    #[test]
    fn trailing_and_limit() {
        assert_eq!(decode::<u8>(&[1, 2], 16), Err(CodecError::Trailing(1)));
        assert!(matches!(
            decode::<u8>(&[1, 2], 1),
            Err(CodecError::TooLong { .. })
        ));
        assert!(decode::<bool>(&[2], 16).is_err());
    }

    proptest! {
        /// Piecewise encoding (a header field, a length, the elements) is
        /// byte for byte the encoding of the whole.
        #[test]
        fn piecewise_encoding_is_the_whole(head: u32, items in proptest::collection::vec(any::<(u64, Vec<u8>, bool)>(), 0..300)) {
            let whole = encode(&(head, items.clone()));
            let mut pieces = Vec::new();
            encode_into(&head, &mut pieces);
            encode_len(items.len(), &mut pieces);
            for item in &items {
                encode_into(item, &mut pieces);
            }
            prop_assert_eq!(pieces, whole);
        }

        #[test]
        fn roundtrip(a: u64, b in proptest::collection::vec(any::<u8>(), 0..64), c: bool, d: Option<u32>) {
            let s = Sample { a, b, c, d };
            let bytes = encode(&s);
            prop_assert_eq!(decode::<Sample>(&bytes, 1024).unwrap(), s);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_accepted_ones_are_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(v) = decode::<Sample>(&bytes, 1024) {
                prop_assert_eq!(encode(&v), bytes);
            }
        }
    }
}
