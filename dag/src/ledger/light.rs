//! What a light client (the wallet) asks its peer, what the peer answers,
//! and how the wallet checks the answer without trusting the peer.
//!
//! A wallet knows its keys, the outputs it holds, and the last certified
//! checkpoint it accepted. It sends a [`SyncRequest`]; the peer answers with
//! a [`SyncAnswer`] built by [`Ledger::prove_sync`] against its latest
//! certified checkpoint; [`verify_sync`] accepts it only if
//! - the checkpoint carries signatures of more than 2/3 of the stake of the
//!   committee the wallet derived itself from genesis;
//! - its history extends the one the wallet accepted before (a consistency
//!   proof), so the past was not rewritten;
//! - for every key, the key index proves the listed outputs are all the
//!   outputs created for it in the asked heights (none hidden);
//! - every output's full state (amount, owner, spent or not) is the one the
//!   output set commits to.
//!
//! Each failure is a [`LightError`] naming what the peer got wrong. No I/O.

use crate::identity::PeerKey;
use crate::ledger::checkpoint::{CertError, Certified, Checkpoint, CommitteeChain};
use crate::ledger::output::{OutputId, OutputState};
use crate::ledger::state::{Ledger, LedgerError};
use proofs::key_index::{CompletenessProof, Entry, KeyIndexError};
use proofs::smt::VersionedTree;
use proofs::{ConsistencyProof, Hash, SparseProof};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Most keys one request asks about.
pub const MAX_SYNC_KEYS: usize = 256;
/// Most outputs one request asks to prove again.
pub const MAX_SYNC_WATCH: usize = 1024;
/// Most new outputs one answer carries over all keys; a wallet with more
/// asks again from the height after the answer's `to`.
pub const MAX_SYNC_OUTPUTS: usize = 1024;

/// A wallet's question to its peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// Keys whose new outputs are wanted.
    pub keys: Vec<PeerKey>,
    /// First height of interest for new outputs (the height after the
    /// wallet's last complete sync; 0 or 1 at first: genesis outputs are
    /// recorded at height 0).
    pub from: u64,
    /// Outputs whose current state the wallet wants proven (those it holds).
    pub watch: Vec<OutputId>,
    /// The history size of the checkpoint the wallet accepted last (0 for
    /// none): the answer proves its history extends that one.
    pub known_leaves: u64,
}

impl SyncRequest {
    /// Refuse requests above the limits before doing any work.
    pub fn check(&self) -> Result<(), LightError> {
        if self.keys.len() > MAX_SYNC_KEYS || self.watch.len() > MAX_SYNC_WATCH {
            return Err(LightError::TooLarge);
        }
        Ok(())
    }
}

/// One output's state as of the checkpoint, with its output-set proof
/// (`state` is `None` when the proof shows the id never existed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvenOutput {
    pub id: OutputId,
    pub state: Option<OutputState>,
    pub proof: SparseProof,
}

/// The new outputs of one key for heights `[from, to]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyOutputs {
    pub key: PeerKey,
    /// Last height covered (≤ the checkpoint's height).
    pub to: u64,
    /// The key index's proof that `outputs` are all of them (`None` when
    /// the range is empty: `from` is above the checkpoint's height).
    pub completeness: Option<CompletenessProof>,
    pub outputs: Vec<ProvenOutput>,
}

/// The peer's answer to a [`SyncRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncAnswer {
    pub checkpoint: Certified<Checkpoint>,
    /// From the wallet's `known_leaves` to the checkpoint's history (`None`
    /// when the wallet knew nothing yet).
    pub consistency: Option<ConsistencyProof>,
    /// In the request's key order.
    pub keys: Vec<KeyOutputs>,
    /// In the request's watch order.
    pub watched: Vec<ProvenOutput>,
}

/// A key's verified new outputs: the key, the last height covered, and
/// the outputs created for it in the asked heights.
pub type KeyUpdate = (PeerKey, u64, Vec<(OutputId, OutputState)>);

/// What a verified answer establishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub checkpoint: Checkpoint,
    /// In the request's key order.
    pub keys: Vec<KeyUpdate>,
    /// The watched outputs' states (`None`: never existed).
    pub watched: Vec<(OutputId, Option<OutputState>)>,
}

#[derive(Debug, Error)]
pub enum LightError {
    #[error("the request asks about more than {MAX_SYNC_KEYS} keys or {MAX_SYNC_WATCH} outputs")]
    TooLarge,
    #[error("the checkpoint is not certified by the committee: {0}")]
    NotCertified(CertError),
    #[error("the checkpoint of height {new} is older than the one accepted before (height {old})")]
    WentBack { old: u64, new: u64 },
    #[error("the checkpoint's history does not extend the accepted one (a rewritten past): {0}")]
    RewrittenPast(String),
    #[error("the answer does not match the request: {0}")]
    Shape(String),
    #[error("the output list of key {key} is not proven complete: {error}")]
    Incomplete { key: PeerKey, error: String },
    #[error("output {id} is not the one the output set commits to: {why}")]
    WrongOutput { id: Hash, why: String },
    #[error("the transaction is not in the certified history: {0}")]
    NotIncluded(String),
    #[error("the peer cannot prove that height any more (it keeps recent versions only)")]
    VersionGone,
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl From<KeyIndexError> for LightError {
    fn from(e: KeyIndexError) -> Self {
        LightError::Ledger(LedgerError::Index(e))
    }
}

impl From<proofs::SmtError> for LightError {
    fn from(e: proofs::SmtError) -> Self {
        LightError::Ledger(LedgerError::Tree(e))
    }
}

impl From<proofs::MmrError> for LightError {
    fn from(e: proofs::MmrError) -> Self {
        LightError::Ledger(LedgerError::History(e))
    }
}

/// The key-index key of an owner key.
pub fn index_key(key: &PeerKey) -> Hash {
    Hash(key.0)
}

impl Ledger {
    /// Answer `req` against `cert`, a certified checkpoint of this chain at
    /// a height this ledger has applied and still keeps the version of.
    pub fn prove_sync(
        &self,
        req: &SyncRequest,
        cert: &Certified<Checkpoint>,
    ) -> Result<SyncAnswer, LightError> {
        req.check()?;
        let cp = &cert.statement;
        let version = Ledger::version_of(cp.height);
        if cp.height > self.height
            || version < self.output_tree.oldest_version()
            || version < self.key_index.oldest_version()
        {
            return Err(LightError::VersionGone);
        }
        let consistency = match req.known_leaves {
            0 => None,
            n if n > cp.roots.history_leaves => {
                return Err(LightError::Shape(format!(
                    "the wallet knows {n} history leaves, more than the checkpoint's {}",
                    cp.roots.history_leaves
                )))
            }
            n => Some(
                self.history
                    .consistency_proof_at(n, cp.roots.history_leaves)?,
            ),
        };
        let mut budget = MAX_SYNC_OUTPUTS;
        let mut keys = Vec::with_capacity(req.keys.len());
        for key in &req.keys {
            let ik = index_key(key);
            if req.from > cp.height {
                keys.push(KeyOutputs {
                    key: *key,
                    to: cp.height,
                    completeness: None,
                    outputs: Vec::new(),
                });
                continue;
            }
            // Stop the range early when the outputs would exceed the
            // budget; heights are never split, so at least the first one's
            // outputs go in whole unless the budget is spent.
            let entries: Vec<Entry> = self
                .key_index
                .list(&ik)?
                .into_iter()
                .filter(|e| e.height >= req.from && e.height <= cp.height)
                .collect();
            let mut to = cp.height;
            if entries.len() > budget {
                let cut = entries[budget].height;
                to = cut.saturating_sub(1);
                if to < req.from {
                    // Even the first height does not fit: nothing of this
                    // key now (the wallet asks again).
                    keys.push(KeyOutputs {
                        key: *key,
                        to: req.from.saturating_sub(1),
                        completeness: None,
                        outputs: Vec::new(),
                    });
                    budget = 0;
                    continue;
                }
            }
            let proof = self.key_index.prove(&ik, req.from, to, version)?;
            let mut outputs = Vec::new();
            for e in entries.iter().filter(|e| e.height <= to) {
                outputs.push(self.prove_output(&e.output, cp.height, version)?);
            }
            budget -= outputs.len();
            keys.push(KeyOutputs {
                key: *key,
                to,
                completeness: Some(proof),
                outputs,
            });
        }
        let watched = req
            .watch
            .iter()
            .map(|id| self.prove_output(id, cp.height, version))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SyncAnswer {
            checkpoint: cert.clone(),
            consistency,
            keys,
            watched,
        })
    }

    /// Output `id` as of `height` (tree `version`), with its proof.
    fn prove_output(
        &self,
        id: &OutputId,
        height: u64,
        version: u64,
    ) -> Result<ProvenOutput, LightError> {
        let (_, proof) = self.output_tree.get_with_proof(id, version)?;
        // The state now, taken back to `height`: created later means absent
        // then, spent later means unspent then.
        let state = self.output(id)?.and_then(|mut s| {
            if s.created_at > height {
                return None;
            }
            if s.spent.is_some_and(|sp| sp.height > height) {
                s.spent = None;
            }
            Some(s)
        });
        Ok(ProvenOutput {
            id: *id,
            state,
            proof,
        })
    }
}

/// Check `answer` to `req`, given the committees the wallet verified from
/// genesis and the checkpoint it accepted last (if any).
pub fn verify_sync(
    req: &SyncRequest,
    answer: &SyncAnswer,
    committees: &CommitteeChain,
    last: Option<&Checkpoint>,
) -> Result<Verified, LightError> {
    req.check()?;
    committees
        .verify_checkpoint(&answer.checkpoint)
        .map_err(LightError::NotCertified)?;
    let cp = &answer.checkpoint.statement;
    let roots = &cp.roots;
    check_extends(last, cp, req.known_leaves, answer.consistency.as_ref())?;

    if answer.keys.len() != req.keys.len() {
        return Err(LightError::Shape(format!(
            "{} keys answered, {} asked",
            answer.keys.len(),
            req.keys.len()
        )));
    }
    let mut keys = Vec::with_capacity(req.keys.len());
    let mut total = 0usize;
    for (asked, ko) in req.keys.iter().zip(&answer.keys) {
        if ko.key != *asked {
            return Err(LightError::Shape(format!(
                "key {} answered where {asked} was asked",
                ko.key
            )));
        }
        if ko.to > cp.height {
            return Err(LightError::Shape(format!(
                "key {asked} answered up to height {} above the checkpoint's {}",
                ko.to, cp.height
            )));
        }
        total += ko.outputs.len();
        if total > MAX_SYNC_OUTPUTS {
            return Err(LightError::Shape("too many outputs".into()));
        }
        let entries = match &ko.completeness {
            None => {
                // Allowed only for an empty range.
                if ko.to >= req.from || !ko.outputs.is_empty() {
                    return Err(LightError::Incomplete {
                        key: *asked,
                        error: format!(
                            "no completeness proof for heights {}..={}",
                            req.from, ko.to
                        ),
                    });
                }
                Vec::new()
            }
            Some(p) => p
                .verify(&roots.keys, &index_key(asked), req.from, ko.to)
                .map_err(|e| LightError::Incomplete {
                    key: *asked,
                    error: e.to_string(),
                })?,
        };
        if entries.len() != ko.outputs.len() {
            return Err(LightError::Incomplete {
                key: *asked,
                error: format!(
                    "the index lists {} outputs, the answer carries {}",
                    entries.len(),
                    ko.outputs.len()
                ),
            });
        }
        let mut outs = Vec::with_capacity(entries.len());
        for (e, po) in entries.iter().zip(&ko.outputs) {
            if po.id != e.output {
                return Err(LightError::Incomplete {
                    key: *asked,
                    error: format!(
                        "output {} carried where the index lists {}",
                        po.id, e.output
                    ),
                });
            }
            let state = check_output(po, &roots.outputs, cp.height)?.ok_or_else(|| {
                LightError::WrongOutput {
                    id: po.id,
                    why: "indexed for the key but absent from the output set".into(),
                }
            })?;
            if state.output.owner != *asked {
                return Err(LightError::WrongOutput {
                    id: po.id,
                    why: format!("owned by {}, not {asked}", state.output.owner),
                });
            }
            if state.created_at != e.height {
                return Err(LightError::WrongOutput {
                    id: po.id,
                    why: format!(
                        "created at height {} but indexed at {}",
                        state.created_at, e.height
                    ),
                });
            }
            outs.push((po.id, state));
        }
        keys.push((*asked, ko.to, outs));
    }

    if answer.watched.len() != req.watch.len()
        || answer
            .watched
            .iter()
            .zip(&req.watch)
            .any(|(p, id)| p.id != *id)
    {
        return Err(LightError::Shape(
            "the watched outputs are not the ones asked".into(),
        ));
    }
    let watched = answer
        .watched
        .iter()
        .map(|po| Ok((po.id, check_output(po, &roots.outputs, cp.height)?)))
        .collect::<Result<Vec<_>, LightError>>()?;
    Ok(Verified {
        checkpoint: cp.clone(),
        keys,
        watched,
    })
}

/// Accept `cp` after `last` only if its history extends `last`'s.
fn check_extends(
    last: Option<&Checkpoint>,
    cp: &Checkpoint,
    known_leaves: u64,
    proof: Option<&ConsistencyProof>,
) -> Result<(), LightError> {
    let Some(last) = last else {
        return Ok(());
    };
    if known_leaves != last.roots.history_leaves {
        return Err(LightError::Shape(format!(
            "the request names {known_leaves} known history leaves, the accepted checkpoint has {}",
            last.roots.history_leaves
        )));
    }
    if cp.height < last.height {
        return Err(LightError::WentBack {
            old: last.height,
            new: cp.height,
        });
    }
    if last.roots.history_leaves == 0 {
        return Ok(());
    }
    let proof = proof.ok_or_else(|| LightError::RewrittenPast("no consistency proof".into()))?;
    proof
        .verify(
            &last.roots.history,
            last.roots.history_leaves,
            &cp.roots.history,
            cp.roots.history_leaves,
        )
        .map_err(|e| LightError::RewrittenPast(e.to_string()))?;
    if cp.height == last.height && cp.roots != last.roots {
        return Err(LightError::RewrittenPast(format!(
            "two different states certified for height {}",
            cp.height
        )));
    }
    Ok(())
}

/// Check one proven output against the output-set root; its state.
fn check_output(
    po: &ProvenOutput,
    root: &Hash,
    height: u64,
) -> Result<Option<OutputState>, LightError> {
    let value = po.state.as_ref().map(OutputState::leaf_value);
    po.proof
        .verify(root, &po.id, value.as_ref())
        .map_err(|e| LightError::WrongOutput {
            id: po.id,
            why: e.to_string(),
        })?;
    if let Some(s) = &po.state {
        if s.created_at > height || s.spent.is_some_and(|sp| sp.height > height) {
            return Err(LightError::WrongOutput {
                id: po.id,
                why: "its state names heights after the checkpoint".into(),
            });
        }
    }
    Ok(po.state.clone())
}

/// Where transaction `tx` sits in the history, as the peer tells it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inclusion {
    pub leaf_index: u64,
    pub outcome: crate::ledger::apply::Outcome,
    pub proof: proofs::InclusionProof,
    pub checkpoint: Certified<Checkpoint>,
}

/// Proof of a payment that anyone holding the genesis can check: the
/// transaction, its outcome, its leaf in the history, and the certified
/// checkpoint (with the committee hand-overs that lead to its committee).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub tx: crate::ledger::transaction::Transaction,
    pub height: u64,
    pub inclusion: Inclusion,
    pub handovers: Vec<Certified<crate::ledger::checkpoint::Handover>>,
}

/// Largest receipt file accepted.
pub const MAX_RECEIPT_BYTES: usize = 4 << 20;

impl Receipt {
    /// Check the receipt from the genesis alone: `chain` (its id) and its
    /// committee. The transaction's outcome on success.
    pub fn verify(
        &self,
        chain: &Hash,
        genesis_committee: crate::committee::Committee,
    ) -> Result<crate::ledger::apply::Outcome, LightError> {
        if self.tx.body.chain != *chain {
            return Err(LightError::Shape(
                "the transaction is of another chain".into(),
            ));
        }
        let mut committees = CommitteeChain::new(*chain, genesis_committee);
        for h in &self.handovers {
            committees.extend(h).map_err(LightError::NotCertified)?;
        }
        let inc = &self.inclusion;
        committees
            .verify_checkpoint(&inc.checkpoint)
            .map_err(LightError::NotCertified)?;
        let cp = &inc.checkpoint.statement;
        if self.height > cp.height {
            return Err(LightError::Shape(format!(
                "height {} is above the checkpoint's {}",
                self.height, cp.height
            )));
        }
        let leaf = crate::ledger::apply::item_leaf(&self.tx.id(), &inc.outcome);
        inc.proof
            .verify(
                &cp.roots.history,
                cp.roots.history_leaves,
                inc.leaf_index,
                &leaf,
            )
            .map_err(|e| LightError::NotIncluded(e.to_string()))?;
        Ok(inc.outcome.clone())
    }
}
