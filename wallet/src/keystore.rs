//! The keystore: the wallet's secret (its phrase's entropy) encrypted under
//! a password, as the bytes of the file `W/keystore`.
//!
//! Argon2id stretches the password with a random salt into a 32-byte key;
//! XChaCha20-Poly1305 with a random nonce encrypts the entropy. The whole
//! header (magic, version, Argon2 parameters, secret length, salt, nonce)
//! is the AEAD's associated data, so changing any byte of the file,
//! weakening the parameters included, fails decryption. Layout, byte by
//! byte, in `specs/wallet.md` (section Keys and keystore).
//!
//! The decoder is strict and bounded: the parameters are checked against
//! fixed limits before Argon2 allocates its memory, and every malformed
//! file gives its own [`KeystoreError`], never a panic.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{Key, KeyInit, XChaCha20Poly1305, XNonce};
use rand_core::{CryptoRng, RngCore};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::phrase::Phrase;

/// The first seven bytes of every keystore file.
pub const MAGIC: &[u8; 7] = b"posWkey";
/// The format version this code writes and reads.
pub const VERSION: u8 = 1;

const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Magic, version, three u32 parameters, secret length, salt, nonce.
pub const HEADER_LEN: usize = MAGIC.len() + 1 + 3 * 4 + 1 + SALT_LEN + NONCE_LEN;
/// The longest valid file: 32 bytes of entropy and the tag after the header.
pub const MAX_FILE_LEN: usize = HEADER_LEN + 32 + TAG_LEN;

/// Argon2 memory cost bounds in KiB: Argon2's own minimum, and 4 GiB so a
/// crafted file cannot make the wallet allocate without limit.
pub const MIN_M_COST_KIB: u32 = 8;
pub const MAX_M_COST_KIB: u32 = 4 * 1024 * 1024;
pub const MAX_T_COST: u32 = 100;
pub const MAX_P_COST: u32 = 16;

/// Argon2id cost parameters, as stored in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes over the memory.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// What new keystores use: 64 MiB, 3 passes, 1 lane (above OWASP's
    /// Argon2id minimums, a fraction of a second on a laptop).
    pub const DEFAULT: KdfParams = KdfParams {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };

    /// Cheap parameters for tests only: never protect a real wallet
    /// with them.
    pub const INSECURE_FOR_TESTS: KdfParams = KdfParams {
        m_cost_kib: MIN_M_COST_KIB,
        t_cost: 1,
        p_cost: 1,
    };

    /// Whether these are within the bounds the decoder accepts.
    pub fn check(&self) -> Result<(), KeystoreError> {
        let p = self.p_cost;
        if p == 0 || p > MAX_P_COST {
            return Err(KeystoreError::Parallelism(p));
        }
        // Argon2 needs 8 KiB per lane.
        let min_m = MIN_M_COST_KIB.max(8 * p);
        if self.m_cost_kib < min_m || self.m_cost_kib > MAX_M_COST_KIB {
            return Err(KeystoreError::MemoryCost(self.m_cost_kib));
        }
        if self.t_cost == 0 || self.t_cost > MAX_T_COST {
            return Err(KeystoreError::TimeCost(self.t_cost));
        }
        Ok(())
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams::DEFAULT
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeystoreError {
    #[error("not a wallet keystore (the file does not start with the keystore magic bytes)")]
    BadMagic,
    #[error("keystore format version {0} is not supported (this wallet reads version {VERSION})")]
    UnsupportedVersion(u8),
    #[error("keystore is truncated: {got} bytes, expected {expected}")]
    Truncated { got: usize, expected: usize },
    #[error("keystore has {0} unexpected bytes after its end")]
    TrailingBytes(usize),
    #[error(
        "keystore's Argon2 memory cost {0} KiB is outside {MIN_M_COST_KIB} KiB (8 per lane) .. {MAX_M_COST_KIB} KiB"
    )]
    MemoryCost(u32),
    #[error("keystore's Argon2 time cost {0} is outside 1..={MAX_T_COST}")]
    TimeCost(u32),
    #[error("keystore's Argon2 parallelism {0} is outside 1..={MAX_P_COST}")]
    Parallelism(u32),
    #[error("keystore's secret length {0} is not 16, 20, 24, 28 or 32 bytes")]
    SecretLength(u8),
    #[error("wrong password, or the keystore is corrupt")]
    WrongPasswordOrCorrupt,
    #[error("key derivation failed: {0}")]
    Kdf(String),
    #[error("encryption failed")]
    Encrypt,
    #[error("the operating system's random number generator failed: {0}")]
    Randomness(String),
}

/// A keystore file's header, decoded and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub params: KdfParams,
    /// Bytes of entropy encrypted (the ciphertext is 16 longer).
    pub secret_len: u8,
    pub salt: [u8; SALT_LEN],
    pub nonce: [u8; NONCE_LEN],
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let mut w = Writer {
            buf: &mut out,
            at: 0,
        };
        w.put(MAGIC);
        w.put(&[VERSION]);
        w.put(&self.params.m_cost_kib.to_le_bytes());
        w.put(&self.params.t_cost.to_le_bytes());
        w.put(&self.params.p_cost.to_le_bytes());
        w.put(&[self.secret_len]);
        w.put(&self.salt);
        w.put(&self.nonce);
        debug_assert_eq!(w.at, HEADER_LEN);
        out
    }

    /// Decodes and checks the header at the start of `file`; the caller
    /// checks the length of what follows.
    fn decode(file: &[u8]) -> Result<Header, KeystoreError> {
        // The magic and version first, so a file of another kind or
        // version is named as such even when it is short.
        let magic_len = MAGIC.len();
        if file.len() < magic_len || &file[..magic_len] != MAGIC {
            return Err(if MAGIC.starts_with(file) {
                KeystoreError::Truncated {
                    got: file.len(),
                    expected: HEADER_LEN,
                }
            } else {
                KeystoreError::BadMagic
            });
        }
        match file.get(magic_len) {
            Some(&VERSION) => {}
            Some(&v) => return Err(KeystoreError::UnsupportedVersion(v)),
            None => {
                return Err(KeystoreError::Truncated {
                    got: file.len(),
                    expected: HEADER_LEN,
                })
            }
        }
        let header: &[u8; HEADER_LEN] = file
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(KeystoreError::Truncated {
                got: file.len(),
                expected: HEADER_LEN,
            })?;
        let mut r = Reader {
            buf: header,
            at: magic_len + 1,
        };
        let params = KdfParams {
            m_cost_kib: u32::from_le_bytes(r.take()),
            t_cost: u32::from_le_bytes(r.take()),
            p_cost: u32::from_le_bytes(r.take()),
        };
        let [secret_len] = r.take();
        let salt = r.take();
        let nonce = r.take();
        params.check()?;
        if !valid_secret_len(secret_len as usize) {
            return Err(KeystoreError::SecretLength(secret_len));
        }
        Ok(Header {
            params,
            secret_len,
            salt,
            nonce,
        })
    }

    fn file_len(&self) -> usize {
        HEADER_LEN + self.secret_len as usize + TAG_LEN
    }
}

/// BIP-39 entropy lengths.
fn valid_secret_len(n: usize) -> bool {
    (16..=32).contains(&n) && n.is_multiple_of(4)
}

/// Encrypts `phrase` under `password` into the bytes of a keystore file,
/// with fresh salt and nonce from `rng`.
pub fn seal<R: RngCore + CryptoRng>(
    phrase: &Phrase,
    password: &[u8],
    params: KdfParams,
    rng: &mut R,
) -> Result<Vec<u8>, KeystoreError> {
    params.check()?;
    let entropy = phrase.entropy();
    let secret_len = u8::try_from(entropy.len())
        .ok()
        .filter(|&n| valid_secret_len(n as usize))
        .ok_or(KeystoreError::SecretLength(u8::MAX))?;
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    rng.try_fill_bytes(&mut salt)
        .and_then(|()| rng.try_fill_bytes(&mut nonce))
        .map_err(|e| KeystoreError::Randomness(e.to_string()))?;
    let header = Header {
        params,
        secret_len,
        salt,
        nonce,
    };
    let header_bytes = header.encode();
    let key = derive_key(password, &header)?;
    let ciphertext = XChaCha20Poly1305::new(Key::from_slice(key.as_ref()))
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: entropy.as_slice(),
                aad: &header_bytes,
            },
        )
        .map_err(|_| KeystoreError::Encrypt)?;
    let mut file = Vec::with_capacity(header.file_len());
    file.extend_from_slice(&header_bytes);
    file.extend_from_slice(&ciphertext);
    debug_assert_eq!(file.len(), header.file_len());
    Ok(file)
}

/// Checks the layout of a keystore file without the password: the header
/// and the exact length. [`open`] does this first.
pub fn decode(file: &[u8]) -> Result<Header, KeystoreError> {
    let header = Header::decode(file)?;
    let expected = header.file_len();
    if file.len() < expected {
        return Err(KeystoreError::Truncated {
            got: file.len(),
            expected,
        });
    }
    if file.len() > expected {
        return Err(KeystoreError::TrailingBytes(file.len() - expected));
    }
    Ok(header)
}

/// Decrypts a keystore file with `password`.
pub fn open(file: &[u8], password: &[u8]) -> Result<Phrase, KeystoreError> {
    let header = decode(file)?;
    let (header_bytes, ciphertext) = file.split_at(HEADER_LEN);
    let key = derive_key(password, &header)?;
    let entropy = Zeroizing::new(
        XChaCha20Poly1305::new(Key::from_slice(key.as_ref()))
            .decrypt(
                XNonce::from_slice(&header.nonce),
                Payload {
                    msg: ciphertext,
                    aad: header_bytes,
                },
            )
            .map_err(|_| KeystoreError::WrongPasswordOrCorrupt)?,
    );
    // The length was checked before decryption, so this cannot fail for an
    // authentic file; treat a failure as corruption rather than panic.
    Phrase::from_entropy(&entropy).map_err(|_| KeystoreError::WrongPasswordOrCorrupt)
}

/// Argon2id(password, salt) -> 32-byte key, with checked parameters.
fn derive_key(password: &[u8], header: &Header) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
    let p = header.params;
    let params = Params::new(p.m_cost_kib, p.t_cost, p.p_cost, Some(32))
        .map_err(|e| KeystoreError::Kdf(e.to_string()))?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(password, &header.salt, key.as_mut())
        .map_err(|e| KeystoreError::Kdf(e.to_string()))?;
    Ok(key)
}

/// Sequential writes into a fixed buffer whose size the caller computed.
struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }
}

/// Sequential fixed-size reads from the header, whose length is known.
struct Reader<'a> {
    buf: &'a [u8; HEADER_LEN],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.at..self.at + N]);
        self.at += N;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const FAST: KdfParams = KdfParams::INSECURE_FOR_TESTS;

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(7)
    }

    fn phrase() -> Phrase {
        Phrase::from_entropy(&[0x5a; 32]).unwrap()
    }

    fn sealed() -> Vec<u8> {
        seal(&phrase(), b"hunter2", FAST, &mut rng()).unwrap()
    }

    /// `file` with the u32 at `at` replaced (the parameters).
    fn with_u32(mut file: Vec<u8>, at: usize, v: u32) -> Vec<u8> {
        file[at..at + 4].copy_from_slice(&v.to_le_bytes());
        file
    }

    const M_AT: usize = 8;
    const T_AT: usize = 12;
    const P_AT: usize = 16;
    const LEN_AT: usize = 20;

    #[test]
    fn round_trip() {
        let file = sealed();
        assert_eq!(file.len(), MAX_FILE_LEN);
        assert_eq!(open(&file, b"hunter2").unwrap(), phrase());
        let header = decode(&file).unwrap();
        assert_eq!(header.params, FAST);
        assert_eq!(header.secret_len, 32);
    }

    #[test]
    fn round_trip_short_phrase_and_empty_password() {
        let short = Phrase::from_entropy(&[1; 16]).unwrap();
        let file = seal(&short, b"", FAST, &mut rng()).unwrap();
        assert_eq!(file.len(), HEADER_LEN + 16 + TAG_LEN);
        assert_eq!(open(&file, b"").unwrap(), short);
        assert_eq!(
            open(&file, b" "),
            Err(KeystoreError::WrongPasswordOrCorrupt)
        );
    }

    #[test]
    fn salt_and_nonce_are_fresh() {
        let mut r = rng();
        let a = seal(&phrase(), b"pw", FAST, &mut r).unwrap();
        let b = seal(&phrase(), b"pw", FAST, &mut r).unwrap();
        assert_ne!(a, b);
        assert_ne!(decode(&a).unwrap().salt, decode(&b).unwrap().salt);
        assert_ne!(decode(&a).unwrap().nonce, decode(&b).unwrap().nonce);
    }

    #[test]
    fn wrong_password() {
        assert_eq!(
            open(&sealed(), b"hunter3"),
            Err(KeystoreError::WrongPasswordOrCorrupt)
        );
    }

    #[test]
    fn every_tampered_byte_is_caught() {
        let file = sealed();
        for i in 0..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 0x01;
            // Header bytes may fail their own checks first; past the checks
            // the AEAD refuses any change (associated data included).
            assert!(
                open(&bad, b"hunter2").is_err(),
                "byte {i} flipped went unnoticed"
            );
        }
    }

    #[test]
    fn tampered_header_byte() {
        // A salt byte: decodes fine, so only the AEAD can catch it.
        let mut bad = sealed();
        bad[LEN_AT + 1] ^= 0x80;
        assert!(decode(&bad).is_ok());
        assert_eq!(
            open(&bad, b"hunter2"),
            Err(KeystoreError::WrongPasswordOrCorrupt)
        );
        // A valid but different parameter: caught as associated data.
        let bad = with_u32(sealed(), T_AT, 2);
        assert!(decode(&bad).is_ok());
        assert_eq!(
            open(&bad, b"hunter2"),
            Err(KeystoreError::WrongPasswordOrCorrupt)
        );
    }

    #[test]
    fn tampered_ciphertext_byte() {
        let mut bad = sealed();
        bad[HEADER_LEN + 3] ^= 0x01;
        assert_eq!(
            open(&bad, b"hunter2"),
            Err(KeystoreError::WrongPasswordOrCorrupt)
        );
        let mut bad = sealed();
        let last = bad.len() - 1;
        bad[last] ^= 0x01; // the tag
        assert_eq!(
            open(&bad, b"hunter2"),
            Err(KeystoreError::WrongPasswordOrCorrupt)
        );
    }

    #[test]
    fn bad_magic() {
        let mut bad = sealed();
        bad[0] = b'P';
        assert_eq!(decode(&bad), Err(KeystoreError::BadMagic));
        assert_eq!(decode(b"{\"json\": true}"), Err(KeystoreError::BadMagic));
        assert_eq!(decode(b"x"), Err(KeystoreError::BadMagic));
    }

    #[test]
    fn unsupported_version() {
        let mut bad = sealed();
        bad[MAGIC.len()] = 2;
        assert_eq!(decode(&bad), Err(KeystoreError::UnsupportedVersion(2)));
        assert_eq!(
            decode(b"posWkey\0"),
            Err(KeystoreError::UnsupportedVersion(0))
        );
    }

    #[test]
    fn truncated() {
        let file = sealed();
        for n in [0, 3, MAGIC.len(), MAGIC.len() + 1, HEADER_LEN - 1] {
            assert_eq!(
                decode(&file[..n]),
                Err(KeystoreError::Truncated {
                    got: n,
                    expected: HEADER_LEN
                }),
                "{n} bytes"
            );
        }
        for n in [HEADER_LEN, file.len() - 1] {
            assert_eq!(
                decode(&file[..n]),
                Err(KeystoreError::Truncated {
                    got: n,
                    expected: file.len()
                })
            );
        }
    }

    #[test]
    fn trailing_bytes() {
        let mut bad = sealed();
        bad.extend_from_slice(b"\n\n");
        assert_eq!(decode(&bad), Err(KeystoreError::TrailingBytes(2)));
        assert_eq!(open(&bad, b"hunter2"), Err(KeystoreError::TrailingBytes(2)));
    }

    #[test]
    fn memory_cost_bounds() {
        for m in [0, 7, MAX_M_COST_KIB + 1, u32::MAX] {
            assert_eq!(
                decode(&with_u32(sealed(), M_AT, m)),
                Err(KeystoreError::MemoryCost(m))
            );
        }
        // 8 KiB per lane: 4 lanes need 32 KiB.
        let four_lanes = with_u32(sealed(), P_AT, 4);
        assert_eq!(
            decode(&with_u32(four_lanes, M_AT, 31)),
            Err(KeystoreError::MemoryCost(31))
        );
        // The bounds themselves are accepted (decoding allocates nothing).
        assert!(decode(&with_u32(sealed(), M_AT, MAX_M_COST_KIB)).is_ok());
        assert!(decode(&with_u32(sealed(), M_AT, MIN_M_COST_KIB)).is_ok());
    }

    #[test]
    fn time_cost_bounds() {
        for t in [0, MAX_T_COST + 1, u32::MAX] {
            assert_eq!(
                decode(&with_u32(sealed(), T_AT, t)),
                Err(KeystoreError::TimeCost(t))
            );
        }
        assert!(decode(&with_u32(sealed(), T_AT, MAX_T_COST)).is_ok());
    }

    #[test]
    fn parallelism_bounds() {
        for p in [0, MAX_P_COST + 1, u32::MAX] {
            assert_eq!(
                decode(&with_u32(sealed(), P_AT, p)),
                Err(KeystoreError::Parallelism(p))
            );
        }
    }

    #[test]
    fn secret_length() {
        for n in [0u8, 15, 17, 33, 255] {
            let mut bad = sealed();
            bad[LEN_AT] = n;
            assert_eq!(decode(&bad), Err(KeystoreError::SecretLength(n)));
        }
        // A shorter valid length makes the same file too long.
        let mut bad = sealed();
        bad[LEN_AT] = 28;
        assert_eq!(decode(&bad), Err(KeystoreError::TrailingBytes(4)));
    }

    #[test]
    fn seal_refuses_bad_params() {
        let weak = KdfParams {
            m_cost_kib: 4,
            ..FAST
        };
        assert_eq!(
            seal(&phrase(), b"", weak, &mut rng()),
            Err(KeystoreError::MemoryCost(4))
        );
        assert!(KdfParams::DEFAULT.check().is_ok());
    }

    #[test]
    fn layout_is_as_specified() {
        let file = sealed();
        assert_eq!(&file[..7], b"posWkey");
        assert_eq!(file[7], 1);
        assert_eq!(file[M_AT..M_AT + 4], 8u32.to_le_bytes());
        assert_eq!(file[T_AT..T_AT + 4], 1u32.to_le_bytes());
        assert_eq!(file[P_AT..P_AT + 4], 1u32.to_le_bytes());
        assert_eq!(file[LEN_AT], 32);
        assert_eq!(HEADER_LEN, 61);
        assert_eq!(MAX_FILE_LEN, 109);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            // decode only: open would run Argon2 with whatever parameters
            // pass the checks, up to 4 GiB.
            let _ = decode(&bytes);
        }

        #[test]
        fn random_bodies_after_a_valid_header_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..80),
            password in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            // A valid cheap header followed by random bytes runs the whole
            // open path, AEAD included.
            let mut file = sealed()[..HEADER_LEN].to_vec();
            file.extend_from_slice(&body);
            let r = open(&file, &password);
            prop_assert!(r.is_err());
        }
    }
}
