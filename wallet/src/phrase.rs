//! Seed phrases: BIP-39 English mnemonics, and the one mapping from a
//! phrase to the 32-byte wallet seed that every key derives from.
//!
//! The mapping is the standard BIP-39 seed with an empty passphrase
//! (PBKDF2-HMAC-SHA512 over the normalised phrase, salt `"mnemonic"`, 2048
//! rounds, 64 bytes), of which the first 32 bytes are the schnorrkel mini
//! secret key given to [`OwnerKeys::from_seed`]. This is the shape of
//! substrate-bip39 (PBKDF2, first 32 bytes as the mini secret), but not its
//! input: substrate-bip39 hashes the phrase's *entropy*, BIP-39 hashes the
//! phrase's *words*, so the same phrase gives different keys in a Polkadot
//! wallet. That does not matter here, as the per-output derivation
//! (`dag::ledger::owner_keys`) is this project's own; what matters is that
//! the mapping never changes, which `known_answer` below pins down.

use std::fmt;

use bip39::{Language, Mnemonic};
use dag::ledger::owner_keys::OwnerKeys;
use rand_core::{CryptoRng, OsRng, RngCore};
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

/// Words of a phrase made by [`Phrase::generate`]: 256 bits of entropy.
pub const GENERATED_WORDS: usize = 24;

/// Bytes of entropy behind a generated phrase.
const GENERATED_ENTROPY: usize = GENERATED_WORDS / 3 * 4;

/// Why a phrase was refused. Word positions count from 1, as a person
/// reading the phrase off paper counts; the words themselves are never
/// put in an error, since errors end up in logs.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PhraseError {
    #[error("a seed phrase has 12, 15, 18, 21 or 24 words, this one has {0}")]
    WordCount(usize),
    #[error("word {position} of the seed phrase is not in the BIP-39 English word list")]
    UnknownWord { position: usize },
    #[error(
        "the seed phrase's checksum does not match: a word is wrong or words are out of order"
    )]
    Checksum,
    #[error("{0} bytes of entropy do not make a seed phrase (16 to 32, a multiple of 4)")]
    EntropyLength(usize),
    #[error("the operating system's random number generator failed: {0}")]
    Randomness(String),
}

/// A valid BIP-39 English phrase. Its words are zeroed on drop (bip39's
/// `zeroize` feature) and never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Phrase(Mnemonic);

impl fmt::Debug for Phrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phrase({} words)", self.0.word_count())
    }
}

impl Phrase {
    /// A fresh 24-word phrase from the operating system's randomness.
    pub fn generate() -> Result<Phrase, PhraseError> {
        let mut rng = OsRng;
        Phrase::generate_with(&mut rng)
    }

    /// A fresh 24-word phrase from `rng` (tests pass a seeded one).
    pub fn generate_with<R: RngCore + CryptoRng>(rng: &mut R) -> Result<Phrase, PhraseError> {
        let mut entropy = Zeroizing::new([0u8; GENERATED_ENTROPY]);
        rng.try_fill_bytes(entropy.as_mut())
            .map_err(|e| PhraseError::Randomness(e.to_string()))?;
        Phrase::from_entropy(entropy.as_ref())
    }

    /// The phrase encoding `entropy` (16 to 32 bytes, a multiple of 4).
    pub fn from_entropy(entropy: &[u8]) -> Result<Phrase, PhraseError> {
        Mnemonic::from_entropy_in(Language::English, entropy)
            .map(Phrase)
            .map_err(|_| PhraseError::EntropyLength(entropy.len()))
    }

    /// Parses a phrase as typed: words separated by any whitespace
    /// (spaces, tabs, new lines), upper or lower case.
    pub fn parse(text: &str) -> Result<Phrase, PhraseError> {
        let mut normalized = Zeroizing::new(text.split_whitespace().collect::<Vec<_>>().join(" "));
        normalized.make_ascii_lowercase();
        Mnemonic::parse_in(Language::English, normalized.as_str())
            .map(Phrase)
            .map_err(|e| match e {
                bip39::Error::BadWordCount(n) => PhraseError::WordCount(n),
                bip39::Error::UnknownWord(i) => PhraseError::UnknownWord { position: i + 1 },
                bip39::Error::BadEntropyBitCount(bits) => PhraseError::EntropyLength(bits / 8),
                // Only English is enabled, so the language is never ambiguous;
                // a checksum failure is the one case left.
                bip39::Error::InvalidChecksum | bip39::Error::AmbiguousLanguages(_) => {
                    PhraseError::Checksum
                }
            })
    }

    /// The words, separated by single spaces: the text to write down.
    pub fn words(&self) -> Zeroizing<String> {
        Zeroizing::new(self.0.words().collect::<Vec<_>>().join(" "))
    }

    pub fn word_count(&self) -> usize {
        self.0.word_count()
    }

    /// The entropy the phrase encodes (what the keystore stores).
    pub fn entropy(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.0.to_entropy())
    }

    /// The 32-byte wallet seed: the first half of the BIP-39 seed with an
    /// empty passphrase (see the module documentation).
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        let mut full = self.0.to_seed_normalized("");
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&full[..32]);
        full.zeroize();
        seed
    }

    /// Every key of the wallet, derived from [`Phrase::seed`].
    pub fn owner_keys(&self) -> OwnerKeys {
        OwnerKeys::from_seed(*self.seed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dag::ledger::owner_keys::KeyPurpose;
    use rand_core::SeedableRng;

    /// The BIP-39 test vector phrase for 32 bytes of 0x7f.
    const VECTOR: &str = "legal winner thank year wave sausage worth useful legal winner thank \
                          year wave sausage worth useful legal winner thank year wave sausage \
                          worth title";

    /// Standard BIP-39 seed (empty passphrase), first 32 bytes.
    const SEED_HEX: &str = "761914478ebf6fe16185749372e91549361af22b386de46322cf8b1ba7e92e80";
    /// Computed once with this code; it must never change.
    const LOGIN_HEX: &str = "469afda4d49367977669fbdf16ee64cfe17a6d473fa20546e6540d355f50825d";

    #[test]
    fn known_answer() {
        // Pins the phrase -> seed -> login key mapping forever: a change
        // here would lose every existing wallet's funds.
        let phrase = Phrase::parse(VECTOR).unwrap();
        assert_eq!(*phrase.entropy(), vec![0x7f; 32]);
        // The published vector uses passphrase "TREZOR" (checked below);
        // this empty-passphrase seed was computed independently with
        // Python's hashlib.pbkdf2_hmac("sha512", words, b"mnemonic", 2048).
        assert_eq!(
            dag::hex::encode(phrase.seed().as_ref()),
            SEED_HEX,
            "phrase -> seed mapping changed"
        );
        assert_eq!(
            phrase.owner_keys().login_key().to_string(),
            LOGIN_HEX,
            "phrase -> login key mapping changed"
        );
        let other = Phrase::from_entropy(&[0x80; 32]).unwrap();
        assert_ne!(
            other.owner_keys().login_key(),
            phrase.owner_keys().login_key()
        );
    }

    #[test]
    fn the_crate_matches_the_published_bip39_vector() {
        let phrase = Phrase::parse(VECTOR).unwrap();
        assert_eq!(
            dag::hex::encode(&phrase.0.to_seed("TREZOR")),
            "bc09fca1804f7e69da93c2f2028eb238c227f2e9dda30cd63699232578480a40\
             21b146ad717fbb7e451ce9eb835f43620bf5c514db0f8add49f5d121449d3e87"
        );
    }

    #[test]
    fn generated_phrases_have_24_words_and_round_trip() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let a = Phrase::generate_with(&mut rng).unwrap();
        let b = Phrase::generate_with(&mut rng).unwrap();
        assert_eq!(a.word_count(), GENERATED_WORDS);
        assert_ne!(a, b);
        let again = Phrase::parse(&a.words()).unwrap();
        assert_eq!(again, a);
        assert_eq!(*again.seed(), *a.seed());
        assert_eq!(Phrase::from_entropy(&a.entropy()).unwrap(), a);
        assert_eq!(Phrase::generate().unwrap().word_count(), GENERATED_WORDS);
    }

    #[test]
    fn parse_normalizes_whitespace_and_case() {
        let messy = format!("  {}\n", VECTOR.to_uppercase().replace(' ', " \t\n "));
        assert_eq!(
            Phrase::parse(&messy).unwrap(),
            Phrase::parse(VECTOR).unwrap()
        );
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        assert_eq!(Phrase::parse(""), Err(PhraseError::WordCount(0)));
        assert_eq!(
            Phrase::parse("legal winner"),
            Err(PhraseError::WordCount(2))
        );
        let unknown = VECTOR.replacen("thank", "thanks", 1);
        assert_eq!(
            Phrase::parse(&unknown),
            Err(PhraseError::UnknownWord { position: 3 })
        );
        let swapped = VECTOR.replacen("legal winner", "winner legal", 1);
        assert_eq!(Phrase::parse(&swapped), Err(PhraseError::Checksum));
        assert_eq!(
            Phrase::from_entropy(&[0; 15]),
            Err(PhraseError::EntropyLength(15))
        );
    }

    #[test]
    fn debug_hides_the_words() {
        let phrase = Phrase::parse(VECTOR).unwrap();
        let s = format!("{phrase:?}");
        assert!(!s.contains("legal"), "{s}");
    }

    #[test]
    fn receive_keys_differ_from_login() {
        let keys = Phrase::parse(VECTOR).unwrap().owner_keys();
        assert_ne!(keys.public(KeyPurpose::Receive, 0), keys.login_key());
    }
}
