//! Lower-case hex for keys and hashes in human-readable formats (genesis
//! files, JSON output). Binary encodings never use it.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HexError {
    #[error("expected {expected} hex digits, got {got}")]
    Length { expected: usize, got: usize },
    #[error("'{0}' is not a lower-case hex digit")]
    Digit(char),
}

pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Exactly `N` bytes as `2N` lower-case digits (one spelling per value).
pub fn decode_array<const N: usize>(s: &str) -> Result<[u8; N], HexError> {
    if s.len() != 2 * N {
        return Err(HexError::Length {
            expected: 2 * N,
            got: s.chars().count(),
        });
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(HexError::Digit(c as char)),
    };
    let mut out = [0u8; N];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strictness() {
        let b = [0u8, 1, 0xab, 0xff];
        assert_eq!(encode(&b), "0001abff");
        assert_eq!(decode_array::<4>("0001abff"), Ok(b));
        assert_eq!(decode_array::<4>("0001ABFF"), Err(HexError::Digit('A')));
        assert!(decode_array::<4>("0001abf").is_err());
        assert!(decode_array::<2>("zz00").is_err());
    }
}
