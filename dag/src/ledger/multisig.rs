//! TEMPORARY STUB (replaced by the real module): same API, plain checks.
use crate::identity::{verify_digest, Bytes64, PeerKey};
use proofs::Hash;
use rand_core::{CryptoRng, RngCore};
use schnorrkel::musig::AggregatePublicKey;
use std::collections::BTreeMap;

pub const TX_CONTEXT: &[u8] = b"pos/ledger/tx/v1";
pub const MAX_SIGNERS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    #[error("bad")]
    Bad,
}

#[derive(Clone, Debug)]
pub struct SignatureClaim {
    pub signers: Vec<PeerKey>,
    pub aggregate: PeerKey,
    pub digest: Hash,
    pub signature: Bytes64,
}

pub fn aggregate_key(signers: &[PeerKey]) -> Result<PeerKey, SigError> {
    if signers.is_empty() || signers.len() > MAX_SIGNERS || signers.windows(2).any(|w| w[0] >= w[1]) {
        return Err(SigError::Bad);
    }
    if signers.len() == 1 {
        return Ok(signers[0]);
    }
    let mut m = BTreeMap::new();
    for s in signers {
        m.insert(s.to_public().map_err(|_| SigError::Bad)?, ());
    }
    Ok(PeerKey(m.public_key().to_bytes()))
}

pub fn verify_claim(c: &SignatureClaim) -> Result<(), SigError> {
    if aggregate_key(&c.signers)? != c.aggregate {
        return Err(SigError::Bad);
    }
    let k = c.aggregate.to_public().map_err(|_| SigError::Bad)?;
    verify_digest(&k, TX_CONTEXT, &c.digest, &c.signature).map_err(|_| SigError::Bad)
}

pub fn verify_claims_batch(
    claims: &[SignatureClaim],
    _rng: &mut (impl RngCore + CryptoRng),
) -> Vec<Result<(), SigError>> {
    claims.iter().map(verify_claim).collect()
}

/// Sign with keypairs held locally.
pub fn sign_local(
    keypairs: &[&schnorrkel::Keypair],
    digest: &Hash,
) -> Result<(Vec<PeerKey>, PeerKey, Bytes64), SigError> {
    use schnorrkel::signing_context;
    let mut signers: Vec<PeerKey> = keypairs.iter().map(|k| PeerKey(k.public.to_bytes())).collect();
    signers.sort();
    signers.dedup();
    let agg = aggregate_key(&signers)?;
    if keypairs.len() == 1 {
        let sig = keypairs[0].sign(signing_context(TX_CONTEXT).bytes(&digest.0));
        return Ok((signers, agg, Bytes64(sig.to_bytes())));
    }
    Err(SigError::Bad)
}
