//! Transaction authorisation: ONE schnorrkel signature under the MuSig
//! aggregate of a transaction's signer keys, over its 32-byte id.
//!
//! A transaction carries its canonical signer list and the claimed aggregate
//! key, so [`verify_claim`] needs no ledger state. [`verify_claims_batch`] is
//! the fast path for a whole height: the signatures and the aggregates of
//! all claims in one random linear combination, one multiscalar
//! multiplication, so an aggregate costs a few terms of it instead of a
//! scalar multiplication per key (about a verification per two-key
//! transaction). It is single threaded: callers split a height into chunks
//! and check the chunks on all cores, each with its own generator.
//! [`Session`] runs schnorrkel's three-round MuSig for one participant with
//! serialisable messages; [`sign_local`] runs it in-process.

// schnorrkel 0.11 marks `musig` deprecated ("will be replaced"); it is still
// the MuSig the design names, and the tests below pin its behaviour.
#![allow(deprecated)]

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::LazyLock;

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use merlin::Transcript;
use proofs::Hash;
use rand_core::{CryptoRng, RngCore};
use schnorrkel::context::{SigningContext, SigningTranscript};
use schnorrkel::musig::{self, AggregatePublicKey, CommitStage, CosignStage, MuSig, RevealStage};
use schnorrkel::{signing_context, Keypair, PublicKey, Signature, SignatureError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::identity::{verify_digest, Bytes64, CryptoError, PeerKey};

/// Signing context of ledger transactions.
pub const TX_CONTEXT: &[u8] = b"pos/ledger/tx/v1";
/// Most signer keys one transaction may list.
pub const MAX_SIGNERS: usize = 64;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SigError {
    #[error("the signer list is empty")]
    NoSigners,
    #[error("{0} signers exceed the limit of {MAX_SIGNERS}")]
    TooManySigners(usize),
    #[error("signers are not strictly increasing by bytes")]
    UnsortedSigners,
    #[error("key {0:?} is listed twice")]
    DuplicateSigner(PeerKey),
    #[error("key {0:?} is not a valid ristretto point")]
    BadKey(PeerKey),
    #[error("the claimed aggregate is not the MuSig aggregate of the signers")]
    AggregateMismatch,
    #[error("signature bytes are malformed")]
    MalformedSignature,
    #[error("signature does not verify")]
    BadSignature,
    #[error("the session's own key is not among the signers")]
    NotASigner,
    #[error("message from {0:?}, who is not a signer of this session")]
    UnknownSigner(PeerKey),
    #[error("message is for another digest")]
    WrongDigest,
    #[error("a different {stage:?} message from {signer:?} was already received")]
    DuplicateMessage { signer: PeerKey, stage: Stage },
    #[error("needs stage {expected:?}, session is at {actual:?}")]
    WrongStage { expected: Stage, actual: Stage },
    #[error("reveal of {0:?} is not valid points")]
    MalformedReveal(PeerKey),
    #[error("reveal of {0:?} does not match its commitment")]
    RevealMismatch(PeerKey),
    #[error("cosignature of {0:?} is not a canonical scalar")]
    MalformedCosignature(PeerKey),
    #[error("the cosignatures do not combine into a valid signature")]
    BadCosignature,
}

/// The canonical signer list, decoded: non-empty, at most [`MAX_SIGNERS`],
/// strictly increasing by bytes, every key a valid point. Byte order is
/// schnorrkel's `PublicKey` order (it compares compressed bytes), which the
/// MuSig weightings depend on.
fn parse_signers(signers: &[PeerKey]) -> Result<Vec<PublicKey>, SigError> {
    if signers.is_empty() {
        return Err(SigError::NoSigners);
    }
    if signers.len() > MAX_SIGNERS {
        return Err(SigError::TooManySigners(signers.len()));
    }
    // Cheap checks before any point decompression.
    if signers.windows(2).any(|w| w[0] >= w[1]) {
        return Err(SigError::UnsortedSigners);
    }
    signers
        .iter()
        .map(|k| PublicKey::from_bytes(&k.0).map_err(|_| SigError::BadKey(*k)))
        .collect()
}

/// schnorrkel's aggregate (its `BTreeMap` impl), or the key itself for one
/// signer so a one-input transaction carries a plain signature.
fn aggregate_public(pks: &[PublicKey]) -> PublicKey {
    if pks.len() == 1 {
        return pks[0];
    }
    let set: BTreeMap<PublicKey, ()> = pks.iter().map(|pk| (*pk, ())).collect();
    set.public_key()
}

/// The MuSig weightings of a sorted key list, in list order.
///
/// Mirrors schnorrkel's private `commit_public_keys`/`compute_weighting`
/// (what `AggregatePublicKey::weighting` on a `BTreeMap` calls), but hashes
/// the key set once instead of once per key: O(k) instead of O(k²) hashing.
/// `weightings_match_schnorrkel` pins it to schnorrkel's own output.
fn musig_weightings(pks: &[PublicKey]) -> impl Iterator<Item = Scalar> + '_ {
    // A new transcript costs a Keccak permutation: clone a built one.
    static EMPTY_SET: LazyLock<Transcript> =
        LazyLock::new(|| Transcript::new(b"MuSig-aggregate-public_key"));
    let mut set = EMPTY_SET.clone();
    for pk in pks {
        set.commit_point(b"pk-set", pk.as_compressed());
    }
    pks.iter().map(move |pk| {
        let mut t = set.clone();
        t.commit_point(b"pk-choice", pk.as_compressed());
        t.challenge_scalar(b"")
    })
}

/// The aggregate key of a canonical signer list: the key itself for one
/// signer, schnorrkel's MuSig aggregate for more.
pub fn aggregate_key(signers: &[PeerKey]) -> Result<PeerKey, SigError> {
    let pks = parse_signers(signers)?;
    Ok(PeerKey(aggregate_public(&pks).to_bytes()))
}

fn tx_transcript(digest: &Hash) -> Transcript {
    // As for the weightings: build the context once, clone it per use.
    static CONTEXT: LazyLock<SigningContext> = LazyLock::new(|| signing_context(TX_CONTEXT));
    CONTEXT.bytes(&digest.0)
}

/// What a transaction claims about its authorisation; checkable without
/// ledger state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureClaim {
    /// Canonical signer list (strictly increasing by bytes).
    pub signers: Vec<PeerKey>,
    /// The claimed aggregate of `signers`.
    pub aggregate: PeerKey,
    /// The signed digest (the transaction id).
    pub digest: Hash,
    pub signature: Bytes64,
}

/// Check one claim: list rules, aggregate, then the signature.
pub fn verify_claim(claim: &SignatureClaim) -> Result<(), SigError> {
    let pks = parse_signers(&claim.signers)?;
    let aggregate = aggregate_public(&pks);
    if aggregate.to_bytes() != claim.aggregate.0 {
        return Err(SigError::AggregateMismatch);
    }
    verify_digest(&aggregate, TX_CONTEXT, &claim.digest, &claim.signature).map_err(|e| match e {
        CryptoError::MalformedSignature => SigError::MalformedSignature,
        _ => SigError::BadSignature,
    })
}

/// A claim decoded for the batch: its index, nonce point, challenge,
/// response, claimed aggregate and, for several signers, the range of its
/// `(w_j, P_j)` weighting terms.
struct Prepared {
    index: usize,
    r: RistrettoPoint,
    aggregate: RistrettoPoint,
    challenge: Scalar,
    s: Scalar,
    terms: Range<usize>,
}

/// Split signature bytes into schnorrkel's `(R, s)`: `Signature::from_bytes`
/// checks the marker bit and that `s` is canonical; the marker is then
/// cleared to read `s`.
fn split_signature(bytes: &Bytes64) -> Option<(CompressedRistretto, Scalar)> {
    Signature::from_bytes(&bytes.0).ok()?;
    let r = CompressedRistretto(bytes.0[..32].try_into().ok()?);
    let mut s: [u8; 32] = bytes.0[32..].try_into().ok()?;
    s[31] &= 0x7f;
    Option::from(Scalar::from_canonical_bytes(s)).map(|s| (r, s))
}

/// schnorrkel's challenge for a signature by `aggregate` on `digest`
/// (`PublicKey::verify`'s transcript); `batch_equation_is_schnorrkels`
/// pins it to schnorrkel.
fn challenge(digest: &Hash, aggregate: &CompressedRistretto, r: &CompressedRistretto) -> Scalar {
    let mut t = tx_transcript(digest);
    t.proto_name(b"Schnorr-sig");
    t.commit_point(b"sign:pk", aggregate);
    t.commit_point(b"sign:R", r);
    t.challenge_scalar(b"sign:c")
}

/// Decode a claim for the batch, or `None` if it is malformed in any way
/// (those go to [`verify_claim`], which names the exact error).
fn prepare(
    index: usize,
    claim: &SignatureClaim,
    terms: &mut Vec<(Scalar, RistrettoPoint)>,
) -> Option<Prepared> {
    let pks = parse_signers(&claim.signers).ok()?;
    let aggregate = if pks.len() == 1 {
        // The key itself: compare bytes rather than decompress it again.
        if claim.aggregate != claim.signers[0] {
            return None;
        }
        pks[0]
    } else {
        PublicKey::from_bytes(&claim.aggregate.0).ok()?
    };
    let (r_bytes, s) = split_signature(&claim.signature)?;
    let r = r_bytes.decompress()?;
    let start = terms.len();
    if pks.len() > 1 {
        terms.extend(
            musig_weightings(&pks)
                .zip(&pks)
                .map(|(w, pk)| (w, *pk.as_point())),
        );
    }
    Some(Prepared {
        index,
        r,
        aggregate: *aggregate.as_point(),
        challenge: challenge(&claim.digest, aggregate.as_compressed(), &r_bytes),
        s,
        terms: start..terms.len(),
    })
}

/// A uniformly random scalar below 2^128: the small-exponent batch test
/// then accepts a bad batch with probability at most 2^-128.
fn random_128<R: RngCore + CryptoRng>(rng: &mut R) -> Scalar {
    let mut b = [0u8; 16];
    rng.fill_bytes(&mut b);
    Scalar::from(u128::from_le_bytes(b))
}

/// Every claim of `batch` at once, in ONE multiscalar multiplication:
///
/// Σ_i z_i·(R_i + c_i·X_i − s_i·B) + Σ_i y_i·(X_i − Σ_j w_ij·P_ij) = 0
///
/// for random 128-bit z_i, y_i (y_i only for several signers). The first
/// sum is schnorrkel's batch verification of each signature under its
/// claimed aggregate X_i; the second says each X_i is the MuSig aggregate of
/// its signers. Ristretto has prime order, so if any term is nonzero the
/// sum vanishes with probability at most 2^-128. Folding both into one sum
/// costs a two-key transaction four points (R, X, P_1, P_2) of a shared
/// multiplication, not a second verification.
fn claims_hold<R: RngCore + CryptoRng>(
    batch: &[&Prepared],
    terms: &[(Scalar, RistrettoPoint)],
    rng: &mut R,
) -> bool {
    let n = batch.len() + terms.len() + 1;
    let mut scalars = Vec::with_capacity(n + batch.len());
    let mut points = Vec::with_capacity(n + batch.len());
    let mut base = Scalar::ZERO;
    for p in batch {
        let z = random_128(rng);
        base -= z * p.s;
        scalars.push(z);
        points.push(p.r);
        let mut x = z * p.challenge;
        if !p.terms.is_empty() {
            let y = random_128(rng);
            x += y;
            for (w, point) in &terms[p.terms.clone()] {
                scalars.push(-(y * w));
                points.push(*point);
            }
        }
        scalars.push(x);
        points.push(p.aggregate);
    }
    scalars.push(base);
    points.push(RISTRETTO_BASEPOINT_POINT);
    RistrettoPoint::vartime_multiscalar_mul(scalars, points).is_identity()
}

/// Find the members of a batch that `check` rejects, by bisection: a failed
/// batch is split, and when one half passes the other is known to fail
/// without checking it. One bad claim among n costs checks over about 1.5·n
/// more claims; many bad claims cost about as much as checking each alone.
fn bisect<'a>(
    batch: &[&'a Prepared],
    known_bad: bool,
    check: &mut impl FnMut(&[&'a Prepared]) -> bool,
    suspects: &mut Vec<usize>,
) {
    if batch.is_empty() || (!known_bad && check(batch)) {
        return;
    }
    if batch.len() == 1 {
        suspects.push(batch[0].index);
        return;
    }
    let (left, right) = batch.split_at(batch.len() / 2);
    let left_ok = check(left);
    if !left_ok {
        bisect(left, true, check, suspects);
    }
    // If the left half passed, the failure lies in the right half.
    bisect(right, left_ok, check, suspects);
}

/// Check many claims at once; the result for each claim equals
/// [`verify_claim`]'s. Malformed claims and those the batch check isolates
/// are re-checked alone, so one bad transaction rejects only itself.
/// `rng` draws the batch coefficients and must be unpredictable to whoever
/// wrote the claims.
pub fn verify_claims_batch<R: RngCore + CryptoRng>(
    claims: &[SignatureClaim],
    rng: &mut R,
) -> Vec<Result<(), SigError>> {
    let mut results: Vec<Result<(), SigError>> = vec![Ok(()); claims.len()];
    let mut terms = Vec::new();
    let mut prepared = Vec::with_capacity(claims.len());
    for (index, claim) in claims.iter().enumerate() {
        match prepare(index, claim, &mut terms) {
            Some(p) => prepared.push(p),
            None => results[index] = verify_claim(claim),
        }
    }
    let batch: Vec<&Prepared> = prepared.iter().collect();
    let mut suspects = Vec::new();
    bisect(
        &batch,
        false,
        &mut |b| claims_hold(b, &terms, rng),
        &mut suspects,
    );
    for index in suspects {
        results[index] = verify_claim(&claims[index]);
    }
    results
}

// === Signing ===

/// Round 1 message: a commitment to the sender's nonce points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Commitment {
    pub signer: PeerKey,
    pub digest: Hash,
    pub commitment: [u8; 16],
}

/// Round 2 message: the nonce points themselves (schnorrkel uses three).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reveal {
    pub signer: PeerKey,
    pub digest: Hash,
    pub points: [[u8; 32]; 3],
}

/// Round 3 message: the sender's share of the signature scalar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cosignature {
    pub signer: PeerKey,
    pub digest: Hash,
    pub s: [u8; 32],
}

/// The signers whose cosignatures are not their share of the signature
/// (in `signers` order), given every signer's reveal: MuSig's per-signer
/// equation `s_i·B = Σ_j x_ij·R_ij + c·a_i·P_i`, with schnorrkel's nonce
/// weights `x_ij` (its private `rewinder`, mirrored here as
/// [`musig_weightings`] mirrors its key weights), its challenge `c` and
/// key weights `a_i`; `honest_cosignatures_pass_and_a_bad_one_is_named`
/// pins it to schnorrkel's own signing. schnorrkel checks only the
/// combined signature, which says that someone cheated but not who.
/// `cosignatures` may be any subset: only those are checked. A signer
/// without a reveal, or a malformed reveal or cosignature, is named too.
pub fn bad_cosigners(
    signers: &[PeerKey],
    digest: &Hash,
    reveals: &[Reveal],
    cosignatures: &[Cosignature],
) -> Result<Vec<PeerKey>, SigError> {
    let pks = parse_signers(signers)?;
    let aggregate = aggregate_public(&pks);
    let reveal_of = |k: &PeerKey| reveals.iter().find(|r| r.signer == *k);
    // Every signer's nonce points, in signer order; a missing or
    // malformed reveal makes R unknowable: all asked about are named.
    let mut points: Vec<[RistrettoPoint; 3]> = Vec::with_capacity(signers.len());
    let mut blamed = Vec::new();
    for k in signers {
        let decoded = reveal_of(k).and_then(|r| {
            let mut p = [RistrettoPoint::default(); 3];
            for (out, bytes) in p.iter_mut().zip(&r.points) {
                *out = CompressedRistretto(*bytes).decompress()?;
            }
            Some(p)
        });
        match decoded {
            Some(p) => points.push(p),
            None => blamed.push(*k),
        }
    }
    if !blamed.is_empty() {
        return Ok(blamed);
    }
    // schnorrkel's transcript at `cosign_stage`: the signing context and
    // digest, "Schnorr-sig", the aggregate; then the key set and all
    // nonce points; per signer its choice, three nonce weights.
    let mut t = tx_transcript(digest);
    t.proto_name(b"Schnorr-sig");
    t.commit_point(b"sign:pk", aggregate.as_compressed());
    let mut t0 = t.clone();
    for (pk, p) in pks.iter().zip(&points) {
        t0.commit_point(b"pk-set", pk.as_compressed());
        for r in p {
            t0.commit_point(b"R", &r.compress());
        }
    }
    let nonce_weights: Vec<[Scalar; 3]> = pks
        .iter()
        .map(|pk| {
            let mut t1 = t0.clone();
            t1.commit_point(b"pk-choice", pk.as_compressed());
            [
                t1.challenge_scalar(b"R"),
                t1.challenge_scalar(b"R"),
                t1.challenge_scalar(b"R"),
            ]
        })
        .collect();
    let effective: Vec<RistrettoPoint> = points
        .iter()
        .zip(&nonce_weights)
        .map(|(p, x)| p.iter().zip(x).map(|(r, x)| r * x).sum())
        .collect();
    let big_r: RistrettoPoint = effective.iter().sum();
    t.commit_point(b"sign:R", &big_r.compress());
    let c: Scalar = t.challenge_scalar(b"sign:c");
    let weights: Vec<Scalar> = musig_weightings(&pks).collect();
    for (i, k) in signers.iter().enumerate() {
        let Some(cs) = cosignatures.iter().find(|c| c.signer == *k) else {
            continue;
        };
        let ok = Option::<Scalar>::from(Scalar::from_canonical_bytes(cs.s)).is_some_and(|s| {
            RISTRETTO_BASEPOINT_POINT * s == effective[i] + pks[i].as_point() * (c * weights[i])
        });
        if !ok {
            blamed.push(*k);
        }
    }
    Ok(blamed)
}

/// Where a [`Session`] is: which round's messages it is collecting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    Commit,
    Reveal,
    Cosign,
    /// The signature is available.
    Done,
    /// The cosignatures did not combine into a valid signature; start over.
    Failed,
}

enum Phase<K: Borrow<Keypair>> {
    Commit(MuSig<Transcript, CommitStage<K>>),
    Reveal(MuSig<Transcript, RevealStage<K>>),
    Cosign(MuSig<Transcript, CosignStage>),
    Done(Bytes64),
    Failed,
    /// Only inside a stage transition, never observable.
    Moving,
}

/// One participant's run of MuSig over one transaction digest.
///
/// Rounds: send [`Session::our_commitment`] to all; once every signer's
/// commitment is in, send [`Session::our_reveal`]; once every reveal is in,
/// send [`Session::our_cosignature`]; once every cosignature is in,
/// [`Session::signature`] is ready. A message of a later round than the
/// session's is refused with `WrongStage` and must be held by the caller;
/// one identical to a message already received (including our own) is a
/// no-op. With one signer there are no rounds: the session starts `Done`.
///
/// Nonces come from schnorrkel, which mixes the OS generator (getrandom)
/// with the secret nonce seed and the transcript, so a session must never be
/// reused for a second run; create a new one.
pub struct Session<K: Borrow<Keypair>> {
    me: PeerKey,
    digest: Hash,
    signers: Vec<PeerKey>,
    /// `signers`, decoded.
    pks: Vec<PublicKey>,
    aggregate: PeerKey,
    aggregate_pk: PublicKey,
    phase: Phase<K>,
    commitments: BTreeMap<PeerKey, Commitment>,
    reveals: BTreeMap<PeerKey, Reveal>,
    cosignatures: BTreeMap<PeerKey, Cosignature>,
}

impl<K: Borrow<Keypair>> std::fmt::Debug for Session<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("me", &self.me)
            .field("signers", &self.signers.len())
            .field("stage", &self.stage())
            .finish()
    }
}

impl<K: Borrow<Keypair>> Session<K> {
    /// Start signing `digest` as one of `signers` (canonical list). `K` is
    /// an owned, borrowed or shared (`Arc`) keypair.
    pub fn new(keypair: K, signers: &[PeerKey], digest: Hash) -> Result<Self, SigError> {
        let pks = parse_signers(signers)?;
        let me = PeerKey(keypair.borrow().public.to_bytes());
        if signers.binary_search(&me).is_err() {
            return Err(SigError::NotASigner);
        }
        let aggregate_pk = aggregate_public(&pks);
        let single = pks.len() == 1;
        let mut session = Session {
            me,
            digest,
            signers: signers.to_vec(),
            pks,
            aggregate: PeerKey(aggregate_pk.to_bytes()),
            aggregate_pk,
            phase: Phase::Moving,
            commitments: BTreeMap::new(),
            reveals: BTreeMap::new(),
            cosignatures: BTreeMap::new(),
        };
        if single {
            let sig = keypair.borrow().sign(tx_transcript(&digest));
            session.phase = Phase::Done(Bytes64(sig.to_bytes()));
        } else {
            let musig = MuSig::new(keypair, tx_transcript(&digest));
            let ours = Commitment {
                signer: me,
                digest,
                commitment: musig.our_commitment().0,
            };
            session.commitments.insert(me, ours);
            session.phase = Phase::Commit(musig);
        }
        Ok(session)
    }

    pub fn stage(&self) -> Stage {
        match self.phase {
            Phase::Commit(_) => Stage::Commit,
            Phase::Reveal(_) => Stage::Reveal,
            Phase::Cosign(_) => Stage::Cosign,
            Phase::Done(_) => Stage::Done,
            Phase::Failed | Phase::Moving => Stage::Failed,
        }
    }

    pub fn signers(&self) -> &[PeerKey] {
        &self.signers
    }

    /// Our key.
    pub fn me(&self) -> PeerKey {
        self.me
    }

    /// The aggregate key the signature will verify under.
    pub fn aggregate(&self) -> PeerKey {
        self.aggregate
    }

    pub fn our_commitment(&self) -> Result<Commitment, SigError> {
        self.commitments
            .get(&self.me)
            .copied()
            .ok_or(self.wrong_stage(Stage::Commit))
    }

    /// Available once every commitment is in (and afterwards).
    pub fn our_reveal(&self) -> Result<Reveal, SigError> {
        self.reveals
            .get(&self.me)
            .copied()
            .ok_or(self.wrong_stage(Stage::Reveal))
    }

    /// Available once every reveal is in (and afterwards).
    pub fn our_cosignature(&self) -> Result<Cosignature, SigError> {
        self.cosignatures
            .get(&self.me)
            .copied()
            .ok_or(self.wrong_stage(Stage::Cosign))
    }

    /// The finished signature, under [`Session::aggregate`].
    pub fn signature(&self) -> Result<Bytes64, SigError> {
        match self.phase {
            Phase::Done(sig) => Ok(sig),
            Phase::Failed => Err(SigError::BadCosignature),
            _ => Err(self.wrong_stage(Stage::Done)),
        }
    }

    /// The signers whose cosignatures received so far are not their
    /// shares (see [`bad_cosigners`]); empty before every reveal is in.
    pub fn bad_cosigners(&self) -> Vec<PeerKey> {
        if self.reveals.len() < self.signers.len() {
            return Vec::new();
        }
        let reveals: Vec<Reveal> = self.reveals.values().copied().collect();
        let cosignatures: Vec<Cosignature> = self.cosignatures.values().copied().collect();
        bad_cosigners(&self.signers, &self.digest, &reveals, &cosignatures).unwrap_or_default()
    }

    fn wrong_stage(&self, expected: Stage) -> SigError {
        SigError::WrongStage {
            expected,
            actual: self.stage(),
        }
    }

    /// The checks every incoming message passes first. Returns the sender's
    /// key, or `None` if an identical copy was already received (a no-op).
    fn admit<M: PartialEq>(
        &self,
        signer: PeerKey,
        digest: Hash,
        seen: &BTreeMap<PeerKey, M>,
        msg: &M,
        stage: Stage,
    ) -> Result<Option<PublicKey>, SigError> {
        if digest != self.digest {
            return Err(SigError::WrongDigest);
        }
        let Ok(i) = self.signers.binary_search(&signer) else {
            return Err(SigError::UnknownSigner(signer));
        };
        match seen.get(&signer) {
            Some(old) if old == msg => Ok(None),
            Some(_) => Err(SigError::DuplicateMessage { signer, stage }),
            None if self.stage() != stage => Err(self.wrong_stage(stage)),
            None => Ok(Some(self.pks[i])),
        }
    }

    pub fn add_commitment(&mut self, msg: &Commitment) -> Result<(), SigError> {
        let Some(them) = self.admit(
            msg.signer,
            msg.digest,
            &self.commitments,
            msg,
            Stage::Commit,
        )?
        else {
            return Ok(());
        };
        let Phase::Commit(musig) = &mut self.phase else {
            return Err(self.wrong_stage(Stage::Commit));
        };
        musig
            .add_their_commitment(them, musig::Commitment(msg.commitment))
            .map_err(|_| SigError::DuplicateMessage {
                signer: msg.signer,
                stage: Stage::Commit,
            })?;
        self.commitments.insert(msg.signer, *msg);
        if self.commitments.len() == self.signers.len() {
            if let Phase::Commit(musig) = std::mem::replace(&mut self.phase, Phase::Moving) {
                let musig = musig.reveal_stage();
                // A fixed-size binding: fails to compile if schnorrkel's
                // reveal ever changes length.
                let bytes: [u8; 96] = musig.our_reveal().0;
                let mut points = [[0u8; 32]; 3];
                for (p, chunk) in points.iter_mut().zip(bytes.chunks_exact(32)) {
                    p.copy_from_slice(chunk);
                }
                let ours = Reveal {
                    signer: self.me,
                    digest: self.digest,
                    points,
                };
                self.reveals.insert(self.me, ours);
                self.phase = Phase::Reveal(musig);
            }
        }
        Ok(())
    }

    pub fn add_reveal(&mut self, msg: &Reveal) -> Result<(), SigError> {
        let Some(them) = self.admit(msg.signer, msg.digest, &self.reveals, msg, Stage::Reveal)?
        else {
            return Ok(());
        };
        let Phase::Reveal(musig) = &mut self.phase else {
            return Err(self.wrong_stage(Stage::Reveal));
        };
        let mut bytes = [0u8; 96];
        for (chunk, p) in bytes.chunks_exact_mut(32).zip(&msg.points) {
            chunk.copy_from_slice(p);
        }
        musig
            .add_their_reveal(them, musig::Reveal(bytes))
            .map_err(|e| match e {
                SignatureError::PointDecompressionError => SigError::MalformedReveal(msg.signer),
                _ => SigError::RevealMismatch(msg.signer),
            })?;
        self.reveals.insert(msg.signer, *msg);
        if self.reveals.len() == self.signers.len() {
            if let Phase::Reveal(musig) = std::mem::replace(&mut self.phase, Phase::Moving) {
                let musig = musig.cosign_stage();
                let ours = Cosignature {
                    signer: self.me,
                    digest: self.digest,
                    s: musig.our_cosignature().0,
                };
                self.cosignatures.insert(self.me, ours);
                self.phase = Phase::Cosign(musig);
            }
        }
        Ok(())
    }

    /// A wrong (but well-formed) cosignature is detected when the last one
    /// arrives, as `BadCosignature` (schnorrkel checks the combined
    /// signature); [`Session::bad_cosigners`] then names the culprits.
    pub fn add_cosignature(&mut self, msg: &Cosignature) -> Result<(), SigError> {
        let Some(them) = self.admit(
            msg.signer,
            msg.digest,
            &self.cosignatures,
            msg,
            Stage::Cosign,
        )?
        else {
            return Ok(());
        };
        let Phase::Cosign(musig) = &mut self.phase else {
            return Err(self.wrong_stage(Stage::Cosign));
        };
        musig
            .add_their_cosignature(them, musig::Cosignature(msg.s))
            .map_err(|e| match e {
                SignatureError::ScalarFormatError => SigError::MalformedCosignature(msg.signer),
                _ => SigError::DuplicateMessage {
                    signer: msg.signer,
                    stage: Stage::Cosign,
                },
            })?;
        self.cosignatures.insert(msg.signer, *msg);
        if self.cosignatures.len() == self.signers.len() {
            let Phase::Cosign(musig) = &self.phase else {
                return Err(self.wrong_stage(Stage::Cosign));
            };
            let aggregate = self.aggregate_pk;
            // Check before anyone publishes: a bad share would otherwise
            // surface only as a rejected transaction.
            let signature = musig
                .sign()
                .filter(|sig| aggregate.verify(tx_transcript(&self.digest), sig).is_ok());
            match signature {
                Some(sig) => self.phase = Phase::Done(Bytes64(sig.to_bytes())),
                None => {
                    self.phase = Phase::Failed;
                    return Err(SigError::BadCosignature);
                }
            }
        }
        Ok(())
    }
}

/// Sign `digest` with keys a wallet holds itself, running every round in
/// process. Returns the sorted signer list, the aggregate key and the
/// signature, i.e. what a transaction carries.
pub fn sign_local(
    keypairs: &[&Keypair],
    digest: &Hash,
) -> Result<(Vec<PeerKey>, PeerKey, Bytes64), SigError> {
    let mut by_key: Vec<(PeerKey, &Keypair)> = keypairs
        .iter()
        .map(|kp| (PeerKey(kp.public.to_bytes()), *kp))
        .collect();
    by_key.sort_by_key(|(k, _)| *k);
    if let Some(w) = by_key.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(SigError::DuplicateSigner(w[0].0));
    }
    let signers: Vec<PeerKey> = by_key.iter().map(|(k, _)| *k).collect();
    parse_signers(&signers)?;
    let mut sessions = by_key
        .iter()
        .map(|(_, kp)| Session::new(*kp, &signers, *digest))
        .collect::<Result<Vec<_>, _>>()?;
    if signers.len() > 1 {
        let commitments = sessions
            .iter()
            .map(Session::our_commitment)
            .collect::<Result<Vec<_>, _>>()?;
        for s in &mut sessions {
            for c in &commitments {
                s.add_commitment(c)?;
            }
        }
        let reveals = sessions
            .iter()
            .map(Session::our_reveal)
            .collect::<Result<Vec<_>, _>>()?;
        for s in &mut sessions {
            for r in &reveals {
                s.add_reveal(r)?;
            }
        }
        let cosignatures = sessions
            .iter()
            .map(Session::our_cosignature)
            .collect::<Result<Vec<_>, _>>()?;
        // Only one participant needs the cosignatures to finish.
        if let Some(lead) = sessions.first_mut() {
            for c in &cosignatures {
                lead.add_cosignature(c)?;
            }
        }
    }
    let lead = sessions.first().ok_or(SigError::NoSigners)?;
    Ok((signers, lead.aggregate(), lead.signature()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::verify_digest;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::{RngCore, SeedableRng};
    use schnorrkel::{ExpansionMode, MiniSecretKey};
    use std::sync::OnceLock;

    fn keypair(seed: u16) -> Keypair {
        let mut b = [0u8; 32];
        b[..2].copy_from_slice(&seed.to_le_bytes());
        b[31] = 0x5a;
        MiniSecretKey::from_bytes(&b)
            .unwrap()
            .expand_to_keypair(ExpansionMode::Ed25519)
    }

    fn key_of(kp: &Keypair) -> PeerKey {
        PeerKey(kp.public.to_bytes())
    }

    fn keypairs(n: usize, base: u16) -> Vec<Keypair> {
        (0..n as u16).map(|i| keypair(base + i)).collect()
    }

    /// A signed transaction's authorisation fields.
    type Signed = SignatureClaim;

    fn signed(kps: &[Keypair], digest: Hash) -> Signed {
        let refs: Vec<&Keypair> = kps.iter().collect();
        let (signers, aggregate, signature) = sign_local(&refs, &digest).unwrap();
        Signed {
            signers,
            aggregate,
            digest,
            signature,
        }
    }

    /// Valid claims of 1 to 4 signers, shared by the property tests.
    fn fixtures() -> &'static [Signed] {
        static F: OnceLock<Vec<Signed>> = OnceLock::new();
        F.get_or_init(|| {
            [1usize, 2, 2, 3, 1, 2, 4, 2]
                .iter()
                .enumerate()
                .map(|(i, &n)| signed(&keypairs(n, 100 * i as u16), Hash([i as u8; 32])))
                .collect()
        })
    }

    /// A 32-byte string that is not a canonical ristretto encoding.
    const BAD_POINT: PeerKey = PeerKey([0xff; 32]);

    fn shuffle<T>(v: &mut [T], rng: &mut ChaCha20Rng) {
        for i in (1..v.len()).rev() {
            v.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
    }

    #[test]
    fn public_key_order_is_byte_order() {
        let kps = keypairs(200, 7);
        let mut by_bytes: Vec<PeerKey> = kps.iter().map(key_of).collect();
        by_bytes.sort();
        let map: BTreeMap<PublicKey, ()> = kps.iter().map(|k| (k.public, ())).collect();
        let by_schnorrkel: Vec<PeerKey> = map.keys().map(|pk| PeerKey(pk.to_bytes())).collect();
        assert_eq!(by_bytes, by_schnorrkel);
        for w in kps.windows(2) {
            assert_eq!(
                w[0].public.cmp(&w[1].public),
                key_of(&w[0]).cmp(&key_of(&w[1]))
            );
        }
    }

    #[test]
    fn weightings_and_aggregate_match_schnorrkel() {
        for n in [2usize, 3, 5, 16, MAX_SIGNERS] {
            let kps = keypairs(n, 1000 + n as u16);
            let map: BTreeMap<PublicKey, ()> = kps.iter().map(|k| (k.public, ())).collect();
            let pks: Vec<PublicKey> = map.keys().copied().collect();
            let ours: Vec<Scalar> = musig_weightings(&pks).collect();
            let theirs: Vec<Scalar> = pks.iter().map(|pk| map.weighting(pk).unwrap()).collect();
            assert_eq!(ours, theirs, "{n} signers");
            let sum: RistrettoPoint = ours.iter().zip(&pks).map(|(w, pk)| w * pk.as_point()).sum();
            assert_eq!(PublicKey::from_point(sum), map.public_key());
            let signers: Vec<PeerKey> = pks.iter().map(|pk| PeerKey(pk.to_bytes())).collect();
            assert_eq!(
                aggregate_key(&signers).unwrap().0,
                map.public_key().to_bytes()
            );
        }
    }

    #[test]
    fn signatures_of_1_2_3_and_10_signers_verify() {
        for n in [1usize, 2, 3, 10] {
            let kps = keypairs(n, 10 * n as u16);
            let s = signed(&kps, Hash([n as u8; 32]));
            assert_eq!(verify_claim(&s), Ok(()), "{n} signers");
            assert_eq!(aggregate_key(&s.signers), Ok(s.aggregate));
            assert!(s.signers.windows(2).all(|w| w[0] < w[1]));
            if n == 1 {
                // One signer: a plain schnorrkel signature under its own key.
                assert_eq!(s.aggregate, key_of(&kps[0]));
                let pk = kps[0].public;
                assert!(verify_digest(&pk, TX_CONTEXT, &s.digest, &s.signature).is_ok());
            }
        }
    }

    #[test]
    fn tampering_is_rejected() {
        let outsider = key_of(&keypair(60_000));
        for n in [1usize, 2, 3] {
            let s = signed(&keypairs(n, 20 * n as u16), Hash([3; 32]));
            let mut t = s.clone();
            t.digest.0[0] ^= 1;
            assert_eq!(verify_claim(&t), Err(SigError::BadSignature));
            for i in [0, 17, 31, 32, 50, 63] {
                let mut t = s.clone();
                t.signature.0[i] ^= 1;
                assert!(verify_claim(&t).is_err(), "signature byte {i}");
            }
            let mut t = s.clone();
            t.aggregate = outsider;
            assert_eq!(verify_claim(&t), Err(SigError::AggregateMismatch));
            for j in 0..n {
                let mut t = s.clone();
                t.signers[j] = outsider;
                assert!(verify_claim(&t).is_err(), "signer {j} replaced");
                t.signers.sort();
                assert!(verify_claim(&t).is_err(), "signer {j} replaced, sorted");
            }
            if n >= 2 {
                let mut t = s.clone();
                t.signers.swap(0, 1);
                assert_eq!(verify_claim(&t), Err(SigError::UnsortedSigners));
                let mut t = s.clone();
                t.signers.pop();
                assert_eq!(verify_claim(&t), Err(SigError::AggregateMismatch));
            }
        }
    }

    #[test]
    fn a_valid_signature_under_a_wrong_aggregate_is_rejected() {
        // The attack the aggregate check exists for: an outsider claims its
        // own key as the "aggregate" of someone else's keys.
        let attacker = keypair(60_001);
        let victims: Vec<PeerKey> = {
            let mut v: Vec<PeerKey> = keypairs(2, 500).iter().map(key_of).collect();
            v.sort();
            v
        };
        let digest = Hash([4; 32]);
        let (_, _, sig) = sign_local(&[&attacker], &digest).unwrap();
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        for signers in [&victims[..1], &victims[..]] {
            let claim = SignatureClaim {
                signers: signers.to_vec(),
                aggregate: key_of(&attacker),
                digest,
                signature: sig,
            };
            assert_eq!(verify_claim(&claim), Err(SigError::AggregateMismatch));
            let fx: Vec<SignatureClaim> = fixtures().to_vec();
            let mut batch = fx.clone();
            batch.insert(3, claim);
            let results = verify_claims_batch(&batch, &mut rng);
            let expected: Vec<_> = batch.iter().map(verify_claim).collect();
            assert_eq!(results, expected);
            assert_eq!(results[3], Err(SigError::AggregateMismatch));
        }
    }

    #[test]
    fn signer_list_rules() {
        let keys: Vec<PeerKey> = {
            let mut v: Vec<PeerKey> = keypairs(MAX_SIGNERS + 1, 2000).iter().map(key_of).collect();
            v.sort();
            v
        };
        assert_eq!(aggregate_key(&[]), Err(SigError::NoSigners));
        assert_eq!(
            aggregate_key(&keys),
            Err(SigError::TooManySigners(MAX_SIGNERS + 1))
        );
        assert!(aggregate_key(&keys[..MAX_SIGNERS]).is_ok());
        assert_eq!(
            aggregate_key(&[keys[0], keys[0]]),
            Err(SigError::UnsortedSigners)
        );
        assert_eq!(
            aggregate_key(&[keys[1], keys[0]]),
            Err(SigError::UnsortedSigners)
        );
        assert_eq!(
            aggregate_key(&[keys[0], BAD_POINT]),
            Err(SigError::BadKey(BAD_POINT))
        );
        assert_eq!(aggregate_key(&[keys[0]]), Ok(keys[0]));
        let s = &fixtures()[1];
        let mut claim = s.clone();
        claim.signature = Bytes64([0xff; 64]);
        assert_eq!(verify_claim(&claim), Err(SigError::MalformedSignature));
    }

    /// How a proptest case damages a fixture claim.
    #[derive(Clone, Copy, Debug)]
    enum Damage {
        None,
        Digest,
        SignatureByte(u8),
        ForeignAggregate,
        BadAggregatePoint,
        SwapSigners,
        ForeignSigner,
        BadSignerPoint,
        DropSigner,
        ForeignSignature,
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            6 => Just(Damage::None),
            1 => Just(Damage::Digest),
            1 => any::<u8>().prop_map(|b| Damage::SignatureByte(b % 64)),
            1 => Just(Damage::ForeignAggregate),
            1 => Just(Damage::BadAggregatePoint),
            1 => Just(Damage::SwapSigners),
            1 => Just(Damage::ForeignSigner),
            1 => Just(Damage::BadSignerPoint),
            1 => Just(Damage::DropSigner),
            1 => Just(Damage::ForeignSignature),
        ]
    }

    fn damaged(i: usize, d: Damage) -> Signed {
        let fx = fixtures();
        let mut s = fx[i].clone();
        let other = &fx[(i + 1) % fx.len()];
        match d {
            Damage::None => {}
            Damage::Digest => s.digest.0[5] ^= 0x40,
            Damage::SignatureByte(b) => s.signature.0[b as usize] ^= 0x01,
            Damage::ForeignAggregate => s.aggregate = other.aggregate,
            Damage::BadAggregatePoint => s.aggregate = BAD_POINT,
            Damage::SwapSigners => s.signers.reverse(),
            Damage::ForeignSigner => {
                s.signers[0] = other.signers[0];
                s.signers.sort();
            }
            Damage::BadSignerPoint => *s.signers.last_mut().unwrap() = BAD_POINT,
            Damage::DropSigner => {
                s.signers.pop();
            }
            Damage::ForeignSignature => s.signature = other.signature,
        }
        s
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn batch_results_equal_verify_claim(
            picks in proptest::collection::vec((0usize..8, damage()), 0..40),
            seed: u64,
        ) {
            let owned: Vec<Signed> = picks.iter().map(|&(i, d)| damaged(i, d)).collect();
            let claims: Vec<SignatureClaim> = owned.to_vec();
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let batch = verify_claims_batch(&claims, &mut rng);
            let single: Vec<_> = claims.iter().map(verify_claim).collect();
            prop_assert_eq!(batch, single);
        }
    }

    /// The folded equation itself, not only its results (a check that always
    /// failed would still give `verify_claim`'s results, by re-checking each
    /// claim alone): valid claims pass it together, and any one damage
    /// among them fails it.
    #[test]
    fn batch_equation_is_schnorrkels() {
        let mut rng = ChaCha20Rng::from_seed([5; 32]);
        let fx = fixtures();
        let prepare_all = |claims: &[SignatureClaim]| {
            let mut terms = Vec::new();
            let prepared: Vec<Prepared> = claims
                .iter()
                .enumerate()
                .map(|(i, c)| prepare(i, c, &mut terms).expect("well formed"))
                .collect();
            (prepared, terms)
        };
        let (prepared, terms) = prepare_all(fx);
        let all: Vec<&Prepared> = prepared.iter().collect();
        assert!(claims_hold(&all, &terms, &mut rng));
        for p in &prepared {
            assert!(claims_hold(&[p], &terms, &mut rng), "claim {}", p.index);
        }
        for i in 0..fx.len() {
            for d in [
                Damage::Digest,
                Damage::SignatureByte(3),
                Damage::ForeignAggregate,
                Damage::ForeignSigner,
                Damage::ForeignSignature,
            ] {
                let mut claims: Vec<SignatureClaim> = fx.to_vec();
                claims[i] = damaged(i, d);
                let mut terms = Vec::new();
                // Damage may make a claim malformed; then `prepare` refuses it.
                let prepared: Vec<Prepared> = claims
                    .iter()
                    .enumerate()
                    .filter_map(|(j, c)| prepare(j, c, &mut terms))
                    .collect();
                if prepared.len() < claims.len() {
                    continue;
                }
                let all: Vec<&Prepared> = prepared.iter().collect();
                assert!(!claims_hold(&all, &terms, &mut rng), "claim {i}, {d:?}");
            }
        }
    }

    #[test]
    fn one_bad_claim_rejects_only_itself() {
        let fx = fixtures();
        let mut owned: Vec<Signed> = (0..300).map(|i| fx[i % fx.len()].clone()).collect();
        for (pos, d) in [
            (0, Damage::Digest),
            (17, Damage::ForeignAggregate),
            (150, Damage::SignatureByte(40)),
            (299, Damage::ForeignSigner),
        ] {
            owned[pos] = damaged(pos % fx.len(), d);
        }
        let claims: Vec<SignatureClaim> = owned.to_vec();
        let results = verify_claims_batch(&claims, &mut ChaCha20Rng::from_seed([9; 32]));
        let bad: Vec<usize> = (0..300).filter(|&i| results[i].is_err()).collect();
        assert_eq!(bad, vec![0, 17, 150, 299]);
        assert_eq!(results, claims.iter().map(verify_claim).collect::<Vec<_>>());
        assert!(verify_claims_batch(&[], &mut ChaCha20Rng::from_seed([9; 32])).is_empty());
    }

    #[test]
    fn three_parties_sign_over_the_wire_in_shuffled_order() {
        let kps = keypairs(3, 300);
        let mut signers: Vec<PeerKey> = kps.iter().map(key_of).collect();
        signers.sort();
        let digest = Hash([42; 32]);
        // Each party holds only its own session; bytes are all that move.
        let mut parties: Vec<Session<Keypair>> = kps
            .into_iter()
            .map(|kp| Session::new(kp, &signers, digest).unwrap())
            .collect();
        let mut rng = ChaCha20Rng::from_seed([5; 32]);

        fn deliver<M, F, G>(
            parties: &mut [Session<Keypair>],
            rng: &mut ChaCha20Rng,
            ours: F,
            add: G,
        ) where
            M: Serialize + serde::de::DeserializeOwned,
            F: Fn(&Session<Keypair>) -> Result<M, SigError>,
            G: Fn(&mut Session<Keypair>, &M) -> Result<(), SigError>,
        {
            let mut mail: Vec<(usize, Vec<u8>)> = Vec::new();
            for (from, p) in parties.iter().enumerate() {
                let bytes = proofs::encode(&ours(p).unwrap());
                for to in (0..parties.len()).filter(|&to| to != from) {
                    mail.push((to, bytes.clone()));
                }
            }
            shuffle(&mut mail, rng);
            for (to, bytes) in mail {
                let msg: M = proofs::decode(&bytes, 256).unwrap();
                add(&mut parties[to], &msg).unwrap();
            }
        }

        assert!(parties.iter().all(|p| p.stage() == Stage::Commit));
        deliver(
            &mut parties,
            &mut rng,
            Session::our_commitment,
            Session::add_commitment,
        );
        assert!(parties.iter().all(|p| p.stage() == Stage::Reveal));
        deliver(
            &mut parties,
            &mut rng,
            Session::our_reveal,
            Session::add_reveal,
        );
        assert!(parties.iter().all(|p| p.stage() == Stage::Cosign));
        deliver(
            &mut parties,
            &mut rng,
            Session::our_cosignature,
            Session::add_cosignature,
        );
        let sig = parties[0].signature().unwrap();
        for p in &parties {
            assert_eq!(p.signature(), Ok(sig));
            assert_eq!(p.stage(), Stage::Done);
        }
        let claim = SignatureClaim {
            signers: signers.clone(),
            aggregate: parties[0].aggregate(),
            digest,
            signature: sig,
        };
        assert_eq!(verify_claim(&claim), Ok(()));
    }

    #[test]
    fn messages_have_fixed_sizes() {
        let kps = keypairs(2, 310);
        let mut signers: Vec<PeerKey> = kps.iter().map(key_of).collect();
        signers.sort();
        let s = Session::new(&kps[0], &signers, Hash([1; 32])).unwrap();
        let c = s.our_commitment().unwrap();
        assert_eq!(proofs::encode(&c).len(), 32 + 32 + 16);
        let r = Reveal {
            signer: c.signer,
            digest: c.digest,
            points: [[1; 32]; 3],
        };
        assert_eq!(proofs::encode(&r).len(), 32 + 32 + 96);
        let k = Cosignature {
            signer: c.signer,
            digest: c.digest,
            s: [2; 32],
        };
        assert_eq!(proofs::encode(&k).len(), 32 + 32 + 32);
    }

    /// Two-party sessions for (a, b), plus the sorted signer list.
    fn pair() -> (Keypair, Keypair, Vec<PeerKey>) {
        let a = keypair(400);
        let b = keypair(401);
        let mut signers = vec![key_of(&a), key_of(&b)];
        signers.sort();
        (a, b, signers)
    }

    #[test]
    fn sessions_refuse_bad_messages() {
        let digest = Hash([8; 32]);
        let (a, b, signers) = pair();
        let stranger = keypair(402);
        assert_eq!(
            Session::new(&stranger, &signers, digest).unwrap_err(),
            SigError::NotASigner
        );
        let mut sa = Session::new(&a, &signers, digest).unwrap();
        let sb = Session::new(&b, &signers, digest).unwrap();
        let cb = sb.our_commitment().unwrap();

        let mut forged = cb;
        forged.signer = key_of(&stranger);
        assert_eq!(
            sa.add_commitment(&forged),
            Err(SigError::UnknownSigner(key_of(&stranger)))
        );
        let mut other_tx = cb;
        other_tx.digest = Hash([9; 32]);
        assert_eq!(sa.add_commitment(&other_tx), Err(SigError::WrongDigest));
        assert!(matches!(
            sa.our_reveal(),
            Err(SigError::WrongStage {
                expected: Stage::Reveal,
                actual: Stage::Commit
            })
        ));
        // Our own commitment echoed back is a no-op, a forged one is not.
        let ca = sa.our_commitment().unwrap();
        assert_eq!(sa.add_commitment(&ca), Ok(()));
        let mut conflicting = ca;
        conflicting.commitment[0] ^= 1;
        assert!(matches!(
            sa.add_commitment(&conflicting),
            Err(SigError::DuplicateMessage { .. })
        ));
        assert_eq!(sa.stage(), Stage::Commit);

        sa.add_commitment(&cb).unwrap();
        assert_eq!(sa.stage(), Stage::Reveal);
        // A repeat of an earlier round's message is a no-op; a different one
        // is a conflict.
        assert_eq!(sa.add_commitment(&cb), Ok(()));
        let mut late = cb;
        late.commitment[3] ^= 1;
        assert_eq!(
            sa.add_commitment(&late),
            Err(SigError::DuplicateMessage {
                signer: cb.signer,
                stage: Stage::Commit
            })
        );
        // A cosignature before the reveals is refused.
        let early = Cosignature {
            signer: cb.signer,
            digest,
            s: [0; 32],
        };
        assert!(matches!(
            sa.add_cosignature(&early),
            Err(SigError::WrongStage {
                expected: Stage::Cosign,
                actual: Stage::Reveal
            })
        ));
        let mut malformed = Reveal {
            signer: cb.signer,
            digest,
            points: [[0xff; 32]; 3],
        };
        assert_eq!(
            sa.add_reveal(&malformed),
            Err(SigError::MalformedReveal(cb.signer))
        );
        malformed.points = sa.our_reveal().unwrap().points;
        assert_eq!(
            sa.add_reveal(&malformed),
            Err(SigError::RevealMismatch(cb.signer))
        );
        assert_eq!(sa.stage(), Stage::Reveal);
    }

    #[test]
    fn a_reveal_must_match_its_commitment() {
        let digest = Hash([10; 32]);
        let (a, b, signers) = pair();
        // Two runs of A: the reveal of the second does not open the
        // commitment of the first.
        let a1 = Session::new(&a, &signers, digest).unwrap();
        let mut a2 = Session::new(&a, &signers, digest).unwrap();
        let mut sb = Session::new(&b, &signers, digest).unwrap();
        sb.add_commitment(&a1.our_commitment().unwrap()).unwrap();
        a2.add_commitment(&sb.our_commitment().unwrap()).unwrap();
        let r2 = a2.our_reveal().unwrap();
        assert_eq!(
            sb.add_reveal(&r2),
            Err(SigError::RevealMismatch(key_of(&a)))
        );
        assert_eq!(sb.stage(), Stage::Reveal);
    }

    #[test]
    fn bad_cosignatures_are_caught() {
        let digest = Hash([11; 32]);
        let (a, b, signers) = pair();
        let run = || {
            let mut sa = Session::new(&a, &signers, digest).unwrap();
            let mut sb = Session::new(&b, &signers, digest).unwrap();
            sa.add_commitment(&sb.our_commitment().unwrap()).unwrap();
            sb.add_commitment(&sa.our_commitment().unwrap()).unwrap();
            sa.add_reveal(&sb.our_reveal().unwrap()).unwrap();
            sb.add_reveal(&sa.our_reveal().unwrap()).unwrap();
            (sa, sb)
        };
        let (mut sa, sb) = run();
        let mut cb = sb.our_cosignature().unwrap();
        cb.s = [0xff; 32];
        assert_eq!(
            sa.add_cosignature(&cb),
            Err(SigError::MalformedCosignature(cb.signer))
        );
        cb.s = sa.our_cosignature().unwrap().s; // canonical, but not b's share
        assert_eq!(sa.add_cosignature(&cb), Err(SigError::BadCosignature));
        assert_eq!(sa.stage(), Stage::Failed);
        assert_eq!(sa.signature(), Err(SigError::BadCosignature));
        assert_eq!(sa.bad_cosigners(), vec![cb.signer]);

        let (mut sa, sb) = run();
        sa.add_cosignature(&sb.our_cosignature().unwrap()).unwrap();
        let claim = SignatureClaim {
            signers: signers.clone(),
            aggregate: sa.aggregate(),
            digest,
            signature: sa.signature().unwrap(),
        };
        assert_eq!(verify_claim(&claim), Ok(()));
    }

    #[test]
    fn one_signer_needs_no_rounds() {
        let kp = keypair(500);
        let signers = [key_of(&kp)];
        let digest = Hash([12; 32]);
        let s = Session::new(std::sync::Arc::new(kp), &signers, digest).unwrap();
        assert_eq!(s.stage(), Stage::Done);
        assert_eq!(s.aggregate(), signers[0]);
        assert!(matches!(
            s.our_commitment(),
            Err(SigError::WrongStage { .. })
        ));
        let sig = s.signature().unwrap();
        let pk = signers[0].to_public().unwrap();
        assert!(verify_digest(&pk, TX_CONTEXT, &digest, &sig).is_ok());
    }

    #[test]
    fn sign_local_rejects_bad_key_sets() {
        let kp = keypair(600);
        let digest = Hash([13; 32]);
        assert_eq!(sign_local(&[], &digest), Err(SigError::NoSigners));
        assert_eq!(
            sign_local(&[&kp, &kp], &digest),
            Err(SigError::DuplicateSigner(key_of(&kp)))
        );
        let many = keypairs(MAX_SIGNERS + 1, 700);
        let refs: Vec<&Keypair> = many.iter().collect();
        assert_eq!(
            sign_local(&refs, &digest),
            Err(SigError::TooManySigners(MAX_SIGNERS + 1))
        );
    }

    /// Honest shares of 2 to 5 signers pass the per-signer equation (which
    /// pins the mirrored nonce weights and challenge to schnorrkel's
    /// signing), and a share changed in any way names exactly its signer.
    #[test]
    fn honest_cosignatures_pass_and_a_bad_one_is_named() {
        for n in 2..=5usize {
            let kps = keypairs(n, 3000 + 10 * n as u16);
            let mut signers: Vec<PeerKey> = kps.iter().map(key_of).collect();
            signers.sort();
            let digest = Hash([n as u8; 32]);
            let mut sessions: Vec<Session<&Keypair>> = kps
                .iter()
                .map(|k| Session::new(k, &signers, digest).unwrap())
                .collect();
            let commits: Vec<Commitment> = sessions
                .iter()
                .map(|s| s.our_commitment().unwrap())
                .collect();
            for s in &mut sessions {
                for c in &commits {
                    s.add_commitment(c).unwrap();
                }
            }
            let reveals: Vec<Reveal> = sessions.iter().map(|s| s.our_reveal().unwrap()).collect();
            for s in &mut sessions {
                for r in &reveals {
                    s.add_reveal(r).unwrap();
                }
            }
            let cos: Vec<Cosignature> = sessions
                .iter()
                .map(|s| s.our_cosignature().unwrap())
                .collect();
            assert_eq!(bad_cosigners(&signers, &digest, &reveals, &cos), Ok(vec![]));
            let cheat = n / 2;
            let mut bad = cos.clone();
            let s = Scalar::from_canonical_bytes(bad[cheat].s).unwrap() + Scalar::ONE;
            bad[cheat].s = s.to_bytes();
            assert_eq!(
                bad_cosigners(&signers, &digest, &reveals, &bad),
                Ok(vec![bad[cheat].signer])
            );
            // One party's share alone is checkable too.
            assert_eq!(
                bad_cosigners(&signers, &digest, &reveals, &bad[cheat..=cheat]),
                Ok(vec![bad[cheat].signer])
            );
            // Without someone's reveal nothing can be checked: named.
            assert_eq!(
                bad_cosigners(&signers, &digest, &reveals[1..], &cos),
                Ok(vec![reveals[0].signer])
            );
        }
    }
}
