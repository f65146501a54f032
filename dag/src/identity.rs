//! Schnorrkel identities: public keys, signatures and VRF tickets as plain
//! bytes on the wire, and a signer that owns a keypair.
//!
//! Every kind of signed message has its own signing context (listed here),
//! so a signature made for one kind can never be replayed as another.

use proofs::Hash;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use schnorrkel::context::attach_rng;
use schnorrkel::vrf::{VRFPreOut, VRFProof};
use schnorrkel::{signing_context, Keypair, MiniSecretKey, PublicKey, Signature};
use serde::{Deserialize, Serialize};
use std::fmt;
use thiserror::Error;

/// Signing context of consensus events.
pub const EVENT_CONTEXT: &[u8] = b"pos/dag/event/v1";
/// Signing context of the VRF ticket over (epoch seed, round).
pub const VRF_CONTEXT: &[u8] = b"pos/dag/vrf-ticket/v1";
/// Label under which the ticket value is drawn from the VRF output.
const TICKET_LABEL: &[u8] = b"pos/dag/ticket-value/v1";

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CryptoError {
    #[error("public key bytes are not a valid ristretto point")]
    BadPublicKey,
    #[error("signature bytes are malformed")]
    MalformedSignature,
    #[error("signature does not verify")]
    BadSignature,
    #[error("VRF output or proof bytes are malformed")]
    MalformedVrf,
    #[error("VRF proof does not verify")]
    BadVrfProof,
}

/// A schnorrkel public key, as its 32 canonical bytes (64 hex digits in
/// human-readable formats such as JSON).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerKey(pub [u8; 32]);

impl Serialize for PeerKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&crate::hex::encode(&self.0))
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for PeerKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            crate::hex::decode_array(&s)
                .map(PeerKey)
                .map_err(serde::de::Error::custom)
        } else {
            <[u8; 32]>::deserialize(d).map(PeerKey)
        }
    }
}

impl fmt::Display for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::hex::encode(&self.0))
    }
}

impl fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerKey(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

impl PeerKey {
    pub fn to_public(&self) -> Result<PublicKey, CryptoError> {
        PublicKey::from_bytes(&self.0).map_err(|_| CryptoError::BadPublicKey)
    }
}

/// 64 bytes with a fixed-length encoding (no length prefix on the wire).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bytes64(pub [u8; 64]);

impl fmt::Debug for Bytes64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes64(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

impl Serialize for Bytes64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(64)?;
        for b in &self.0 {
            t.serialize_element(b)?;
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for Bytes64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Bytes64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "64 bytes")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Bytes64, A::Error> {
                let mut out = [0u8; 64];
                for (i, slot) in out.iter_mut().enumerate() {
                    *slot = seq
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                }
                Ok(Bytes64(out))
            }
        }
        d.deserialize_tuple(64, V)
    }
}

/// A VRF ticket: the VRF pre-output and its proof, as carried in an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VrfTicket {
    pub output: [u8; 32],
    pub proof: Bytes64,
}

/// The transcript input of the VRF: the epoch seed and the round.
fn vrf_transcript(seed: &Hash, round: u64) -> merlin::Transcript {
    let mut msg = [0u8; 40];
    msg[..32].copy_from_slice(&seed.0);
    msg[32..].copy_from_slice(&round.to_le_bytes());
    signing_context(VRF_CONTEXT).bytes(&msg)
}

impl VrfTicket {
    /// Check the proof against the creator's key, the epoch seed and the
    /// round, and return the ticket value (uniform 64 bits) on success.
    pub fn verify(&self, key: &PublicKey, seed: &Hash, round: u64) -> Result<u64, CryptoError> {
        let preout = VRFPreOut::from_bytes(&self.output).map_err(|_| CryptoError::MalformedVrf)?;
        let proof = VRFProof::from_bytes(&self.proof.0).map_err(|_| CryptoError::MalformedVrf)?;
        let (inout, _) = key
            .vrf_verify(vrf_transcript(seed, round), &preout, &proof)
            .map_err(|_| CryptoError::BadVrfProof)?;
        Ok(u64::from_le_bytes(
            inout.make_bytes::<[u8; 8]>(TICKET_LABEL),
        ))
    }
}

/// Verify a signature over a 32-byte digest under `context`.
pub fn verify_digest(
    key: &PublicKey,
    context: &'static [u8],
    digest: &Hash,
    sig: &Bytes64,
) -> Result<(), CryptoError> {
    let sig = Signature::from_bytes(&sig.0).map_err(|_| CryptoError::MalformedSignature)?;
    key.verify(signing_context(context).bytes(&digest.0), &sig)
        .map_err(|_| CryptoError::BadSignature)
}

/// A keypair plus the randomness its signatures use. schnorrkel mixes the
/// secret nonce into every witness, so a deterministic generator (the
/// simulator's) still gives safe signatures; the daemon seeds it from the OS.
pub struct Signer {
    keypair: Keypair,
    key: PeerKey,
    rng: ChaCha20Rng,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({:?})", self.key)
    }
}

impl Signer {
    /// A signer from a 32-byte secret seed and a seed for signing randomness.
    pub fn from_seed(secret: [u8; 32], rng_seed: [u8; 32]) -> Self {
        let mini = MiniSecretKey::from_bytes(&secret).expect("32 bytes is a valid mini secret key");
        let keypair = mini.expand_to_keypair(schnorrkel::ExpansionMode::Ed25519);
        let key = PeerKey(keypair.public.to_bytes());
        Signer {
            keypair,
            key,
            rng: ChaCha20Rng::from_seed(rng_seed),
        }
    }

    /// A signer for an existing keypair (a wallet's derived login key).
    pub fn from_keypair(keypair: Keypair, rng_seed: [u8; 32]) -> Self {
        let key = PeerKey(keypair.public.to_bytes());
        Signer {
            keypair,
            key,
            rng: ChaCha20Rng::from_seed(rng_seed),
        }
    }

    pub fn key(&self) -> PeerKey {
        self.key
    }

    pub fn public(&self) -> &PublicKey {
        &self.keypair.public
    }

    /// Sign a 32-byte digest under `context`.
    pub fn sign_digest(&mut self, context: &'static [u8], digest: &Hash) -> Bytes64 {
        let t = attach_rng(signing_context(context).bytes(&digest.0), &mut self.rng);
        Bytes64(self.keypair.sign(t).to_bytes())
    }

    /// The VRF ticket for `round` under `seed`, with its ticket value.
    pub fn vrf_ticket(&mut self, seed: &Hash, round: u64) -> (VrfTicket, u64) {
        let extra = attach_rng(merlin::Transcript::new(b"VRF"), &mut self.rng);
        let (inout, proof, _) = self
            .keypair
            .vrf_sign_extra(vrf_transcript(seed, round), extra);
        let value = u64::from_le_bytes(inout.make_bytes::<[u8; 8]>(TICKET_LABEL));
        (
            VrfTicket {
                output: inout.to_preout().to_bytes(),
                proof: Bytes64(proof.to_bytes()),
            },
            value,
        )
    }
}

/// What the consensus core needs from its key: its public key, event
/// signatures and VRF tickets. A trait so a driver can wrap the signer (the
/// simulator times it) without the core knowing about clocks.
pub trait EventSigner {
    fn key(&self) -> PeerKey;
    fn sign_event(&mut self, id: &Hash) -> Bytes64;
    fn vrf_ticket(&mut self, seed: &Hash, round: u64) -> (VrfTicket, u64);
}

impl EventSigner for Signer {
    fn key(&self) -> PeerKey {
        self.key
    }
    fn sign_event(&mut self, id: &Hash) -> Bytes64 {
        self.sign_digest(EVENT_CONTEXT, id)
    }
    fn vrf_ticket(&mut self, seed: &Hash, round: u64) -> (VrfTicket, u64) {
        Signer::vrf_ticket(self, seed, round)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_context_and_digest() {
        let mut s = Signer::from_seed([1; 32], [2; 32]);
        let d = Hash([7; 32]);
        let sig = s.sign_digest(EVENT_CONTEXT, &d);
        assert!(verify_digest(s.public(), EVENT_CONTEXT, &d, &sig).is_ok());
        assert_eq!(
            verify_digest(s.public(), VRF_CONTEXT, &d, &sig),
            Err(CryptoError::BadSignature)
        );
        assert!(verify_digest(s.public(), EVENT_CONTEXT, &Hash([8; 32]), &sig).is_err());
    }

    #[test]
    fn vrf_ticket_is_deterministic_in_value_and_checked() {
        let mut s = Signer::from_seed([1; 32], [2; 32]);
        let seed = Hash([3; 32]);
        let (t1, v1) = s.vrf_ticket(&seed, 5);
        let (_, v2) = s.vrf_ticket(&seed, 5);
        assert_eq!(v1, v2, "one value per (key, seed, round)");
        assert_eq!(t1.verify(s.public(), &seed, 5), Ok(v1));
        assert_eq!(
            t1.verify(s.public(), &seed, 6),
            Err(CryptoError::BadVrfProof)
        );
        let other = Signer::from_seed([9; 32], [2; 32]);
        assert!(t1.verify(other.public(), &seed, 5).is_err());
    }

    #[test]
    fn keys_are_hex_in_json_and_raw_in_postcard() {
        let k = PeerKey([0xab; 32]);
        assert_eq!(proofs::encode(&k), vec![0xab; 32]);
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<PeerKey>(&json).unwrap(), k);
        assert!(serde_json::from_str::<PeerKey>("\"abab\"").is_err());
    }

    #[test]
    fn bytes64_encodes_without_length_prefix() {
        let b = Bytes64([5; 64]);
        let enc = proofs::encode(&b);
        assert_eq!(enc.len(), 64);
        assert_eq!(proofs::decode::<Bytes64>(&enc, 64).unwrap(), b);
        assert!(proofs::decode::<Bytes64>(&enc[..63], 64).is_err());
    }
}
