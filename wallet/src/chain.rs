//! What the wallet knows of the chain, kept in `W/chain.state`: its login
//! (`name@peer`, the peer's key and address, the peer's voucher), the
//! committee hand-overs it verified from genesis, the last certified
//! checkpoint it accepted, and its own outputs, each with its output-set
//! proof against that checkpoint. Nothing else of the chain.
//!
//! [`ChainState::apply`] takes a sync answer only after
//! `dag::ledger::light::verify_sync` accepted it; a refused answer leaves
//! the state as it was.

use crate::atomic_file::{self, Existing};
use dag::committee::Committee;
use dag::identity::PeerKey;
use dag::ledger::checkpoint::{CertError, Certified, Checkpoint, CommitteeChain, Handover};
use dag::ledger::light::{
    verify_sync, LightError, SyncAnswer, SyncRequest, MAX_SYNC_KEYS, MAX_SYNC_WATCH,
};
use dag::ledger::names::{NameVoucher, WalletName};
use dag::ledger::output::{OutputId, OutputState, Value};
use dag::ledger::owner_keys::{KeyPurpose, OwnerKeys};
use dag::ledger::AssetId;
use proofs::{Hash, SparseProof};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The state file in the wallet directory.
pub const STATE_FILE: &str = "chain.state";
/// The genesis file the wallet was logged in with (a copy).
pub const GENESIS_FILE: &str = "genesis.json";
/// Format version of [`STATE_FILE`]. Version 2 added `direct_keys` at the
/// end; a version-1 file is read as having none.
const STATE_VERSION: u8 = 2;
/// The largest state file read (a wallet of ~100,000 outputs).
const MAX_STATE_BYTES: u64 = 256 << 20;
/// Unused keys watched past the highest used one, per purpose (as BIP-44
/// wallets do): a wallet restored from its phrase finds every output whose
/// key is within this gap of the previous one.
pub const KEY_GAP: u64 = 20;

#[derive(Debug, Error)]
pub enum ChainError {
    #[error("this wallet is not logged in yet: run `wallet login NAME@PEER --genesis FILE`")]
    NotLoggedIn,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is damaged or not a wallet state file: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("peer {peer} sent a committee hand-over that does not verify: {error}")]
    BadHandover { peer: String, error: CertError },
    #[error("peer {peer} lied: {error}")]
    Lied { peer: String, error: LightError },
    #[error(
        "this wallet watches {keys} keys and holds {outputs} outputs: more than one sync \
         request carries ({MAX_SYNC_KEYS} keys, {MAX_SYNC_WATCH} outputs)"
    )]
    TooManyKeys { keys: usize, outputs: usize },
    #[error("peer {peer} vouched for the name with a bad voucher: {why}")]
    BadVoucher { peer: String, why: String },
}

/// One output the wallet holds, with its proof at the accepted checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub id: OutputId,
    pub purpose: KeyPurpose,
    pub index: u64,
    pub state: OutputState,
    pub proof: SparseProof,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainState {
    version: u8,
    pub chain: Hash,
    pub name: WalletName,
    pub peer: PeerKey,
    pub peer_addr: SocketAddr,
    pub voucher: Option<NameVoucher>,
    /// Verified, oldest first, consecutive from the genesis committee.
    pub handovers: Vec<Certified<Handover>>,
    pub checkpoint: Option<Certified<Checkpoint>>,
    /// The next height whose new outputs are wanted.
    pub from: u64,
    /// Keys watched per purpose: indexes `0..n`.
    pub receive_keys: u64,
    pub change_keys: u64,
    /// The highest receive key index that ever received an output.
    pub receive_used: Option<u64>,
    /// The next change key index to use (never reused, saved before use).
    pub change_next: u64,
    /// Assets this wallet issued, with the index of their issuer key.
    pub issued: Vec<(AssetId, u64)>,
    /// The next issuer key index.
    pub issuer_next: u64,
    /// Unspent outputs, by id.
    pub outputs: Vec<Held>,
    /// What happened to this wallet, oldest first.
    pub history: Vec<Event>,
    /// Receive key indexes handed out over direct links and not yet seen
    /// paid (above `receive_used`), ascending: the stock skips them, so no
    /// key goes to two payers.
    pub direct_keys: Vec<u64>,
}

/// One line of the wallet's history: an output received, or a
/// transaction of its own (`what`: sent, staked, issued, minted, burned).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub height: u64,
    pub what: String,
    pub tx: Option<Hash>,
    pub output: Option<OutputId>,
    /// The asset and value of the output received, or of the transaction's
    /// first output.
    pub value: Option<(AssetId, Value)>,
    /// The encoded transaction, for the wallet's own (what a receipt shows).
    pub tx_bytes: Option<Vec<u8>>,
}

/// A sum per asset: amount (fungible) and number of outputs, items held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holding {
    pub amount: u128,
    pub outputs: usize,
    pub items: Vec<Hash>,
}

impl ChainState {
    pub fn new(chain: Hash, name: WalletName, peer: PeerKey, peer_addr: SocketAddr) -> Self {
        ChainState {
            version: STATE_VERSION,
            chain,
            name,
            peer,
            peer_addr,
            voucher: None,
            handovers: Vec::new(),
            checkpoint: None,
            from: 0,
            receive_keys: KEY_GAP,
            change_keys: KEY_GAP,
            receive_used: None,
            change_next: 0,
            issued: Vec::new(),
            issuer_next: 0,
            outputs: Vec::new(),
            history: Vec::new(),
            direct_keys: Vec::new(),
        }
    }

    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// The stored state; [`ChainError::NotLoggedIn`] if there is none.
    pub fn load(dir: &Path) -> Result<ChainState, ChainError> {
        use std::io::Read;
        let path = Self::path(dir);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ChainError::NotLoggedIn)
            }
            Err(source) => return Err(ChainError::Io { path, source }),
        };
        let mut bytes = Vec::new();
        file.take(MAX_STATE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| ChainError::Io {
                path: path.clone(),
                source,
            })?;
        if bytes.len() as u64 > MAX_STATE_BYTES {
            return Err(ChainError::Corrupt {
                path,
                why: "larger than any wallet state".into(),
            });
        }
        // Version 1 lacks the trailing `direct_keys`: an empty list is one
        // zero byte in postcard, so the old file plus that byte decodes.
        if bytes.first() == Some(&1) {
            bytes.push(0);
        }
        let mut s: ChainState =
            proofs::decode(&bytes, bytes.len()).map_err(|e| ChainError::Corrupt {
                path: path.clone(),
                why: e.to_string(),
            })?;
        if s.version == 1 {
            s.version = STATE_VERSION;
        }
        if s.version != STATE_VERSION {
            return Err(ChainError::Corrupt {
                path,
                why: format!(
                    "format version {} (this build reads {STATE_VERSION})",
                    s.version
                ),
            });
        }
        Ok(s)
    }

    /// Write the state atomically (a crash leaves the old or the new one).
    pub fn save(&self, dir: &Path) -> Result<(), ChainError> {
        let path = Self::path(dir);
        atomic_file::write(&path, &proofs::encode(self), Existing::Replace)
            .map_err(|source| ChainError::Io { path, source })
    }

    /// The committees from genesis through the stored hand-overs (each was
    /// verified when taken; checked again here, as the file is input).
    pub fn committees(&self, genesis: Committee) -> Result<CommitteeChain, ChainError> {
        let mut c = CommitteeChain::new(self.chain, genesis);
        for h in &self.handovers {
            c.extend(h).map_err(|error| ChainError::BadHandover {
                peer: "(stored)".into(),
                error,
            })?;
        }
        Ok(c)
    }

    /// Take hand-overs the peer sent, each verified by the committee before.
    pub fn take_handovers(
        &mut self,
        committees: &mut CommitteeChain,
        got: Vec<Certified<Handover>>,
    ) -> Result<(), ChainError> {
        for h in got {
            committees
                .extend(&h)
                .map_err(|error| ChainError::BadHandover {
                    peer: self.name.peer.clone(),
                    error,
                })?;
            self.handovers.push(h);
        }
        Ok(())
    }

    /// The watched keys, in a fixed order, with their purpose and index.
    pub fn watched_keys(&self, keys: &OwnerKeys) -> Vec<(KeyPurpose, u64, PeerKey)> {
        let mut out = Vec::new();
        for (purpose, n) in [
            (KeyPurpose::Receive, self.receive_keys),
            (KeyPurpose::Change, self.change_keys),
        ] {
            for i in 0..n {
                out.push((purpose, i, keys.public(purpose, i)));
            }
        }
        out
    }

    /// The next sync request: every watched key, every held output, from
    /// the next height on. One request covers them all (a wallet beyond
    /// the protocol's per-request limits is refused for now).
    pub fn request(
        &self,
        watched: &[(KeyPurpose, u64, PeerKey)],
    ) -> Result<SyncRequest, ChainError> {
        if watched.len() > MAX_SYNC_KEYS || self.outputs.len() > MAX_SYNC_WATCH {
            return Err(ChainError::TooManyKeys {
                keys: watched.len(),
                outputs: self.outputs.len(),
            });
        }
        Ok(SyncRequest {
            keys: watched.iter().map(|(_, _, k)| *k).collect(),
            from: self.from,
            watch: self.outputs.iter().map(|h| h.id).collect(),
            known_leaves: self
                .checkpoint
                .as_ref()
                .map_or(0, |c| c.statement.roots.history_leaves),
        })
    }

    /// Check `answer` to `req` and take what it proves. `watched` maps keys
    /// to their purpose and index.
    pub fn apply(
        &mut self,
        committees: &CommitteeChain,
        watched: &[(KeyPurpose, u64, PeerKey)],
        req: &SyncRequest,
        answer: &SyncAnswer,
    ) -> Result<Verified, ChainError> {
        let last = self.checkpoint.as_ref().map(|c| &c.statement);
        let v = verify_sync(req, answer, committees, last).map_err(|error| ChainError::Lied {
            peer: self.name.peer.clone(),
            error,
        })?;
        let height = v.checkpoint.height;
        let by_key: BTreeMap<PeerKey, (KeyPurpose, u64)> =
            watched.iter().map(|(p, i, k)| (*k, (*p, *i))).collect();
        let mut proofs_by_id: BTreeMap<OutputId, SparseProof> = BTreeMap::new();
        for ko in &answer.keys {
            for po in &ko.outputs {
                proofs_by_id.insert(po.id, po.proof.clone());
            }
        }
        for po in &answer.watched {
            proofs_by_id.insert(po.id, po.proof.clone());
        }
        // Held outputs: refreshed, dropped once proven spent (or absent).
        let states: BTreeMap<OutputId, Option<OutputState>> = v.watched.iter().cloned().collect();
        let mut kept = Vec::new();
        for mut h in std::mem::take(&mut self.outputs) {
            match states.get(&h.id) {
                Some(Some(s)) if s.spent.is_none() => {
                    h.state = s.clone();
                    if let Some(p) = proofs_by_id.get(&h.id) {
                        h.proof = p.clone();
                    }
                    kept.push(h);
                }
                Some(_) => {}         // spent, or never existed: not ours to hold
                None => kept.push(h), // not asked in this request
            }
        }
        self.outputs = kept;
        let mut next_from = u64::MAX;
        let mut grow = (0u64, 0u64);
        for (key, to, outs) in &v.keys {
            next_from = next_from.min(to.saturating_add(1));
            let Some(&(purpose, index)) = by_key.get(key) else {
                continue;
            };
            if !outs.is_empty() {
                match purpose {
                    KeyPurpose::Receive => {
                        grow.0 = grow.0.max(index + 1 + KEY_GAP);
                        self.receive_used = Some(self.receive_used.map_or(index, |u| u.max(index)));
                    }
                    KeyPurpose::Change => {
                        grow.1 = grow.1.max(index + 1 + KEY_GAP);
                        self.change_next = self.change_next.max(index + 1);
                    }
                    KeyPurpose::Login | KeyPurpose::Issuer => {}
                }
            }
            for (id, state) in outs {
                if self.outputs.iter().any(|h| h.id == *id)
                    || self.history.iter().any(|e| e.output == Some(*id))
                {
                    continue;
                }
                if purpose == KeyPurpose::Receive {
                    self.history.push(Event {
                        height: state.created_at,
                        what: "received".into(),
                        tx: Some(state.created_by),
                        output: Some(*id),
                        value: Some((state.output.asset, state.output.value)),
                        tx_bytes: None,
                    });
                }
                if state.spent.is_some() {
                    continue;
                }
                // verify_sync checked a proof for every output it passed.
                let Some(proof) = proofs_by_id.get(id).cloned() else {
                    return Err(ChainError::Lied {
                        peer: self.name.peer.clone(),
                        error: LightError::Shape(format!("output {id} came without a proof")),
                    });
                };
                self.outputs.push(Held {
                    id: *id,
                    purpose,
                    index,
                    state: state.clone(),
                    proof,
                });
            }
        }
        let widened = grow.0 > self.receive_keys || grow.1 > self.change_keys;
        if widened {
            // New keys to watch: their outputs may lie below `from`.
            self.receive_keys = self.receive_keys.max(grow.0);
            self.change_keys = self.change_keys.max(grow.1);
            self.from = 0;
        } else if next_from != u64::MAX {
            self.from = next_from;
        }
        self.checkpoint = Some(answer.checkpoint.clone());
        Ok(Verified {
            height,
            more: widened || self.from <= height,
        })
    }

    /// The receive key indexes to leave with the peer for payers: the next
    /// [`RECEIVE_STOCK`] after the highest used one (index 0 is the first
    /// key, given out by `wallet keys`). Watching grows to cover them.
    /// Indexes handed out directly and not paid yet are skipped.
    pub fn receive_stock(&mut self) -> Vec<u64> {
        self.forget_paid_direct_keys();
        let first = self.receive_used.map_or(1, |u| u + 1).max(1);
        let stock: Vec<u64> = (first..)
            .filter(|i| self.direct_keys.binary_search(i).is_err())
            .take(RECEIVE_STOCK as usize)
            .collect();
        let end = stock.last().map_or(first, |l| l + 1);
        if self.receive_keys < end {
            // Keys handed out must be watched from the start.
            self.receive_keys = end;
            self.from = 0;
        }
        stock
    }

    /// A receive key index for one payer over a direct link: above every
    /// key the peer may still hold in its stock (the stock is a function
    /// of `receive_used` and `direct_keys`, and only moves up) and every
    /// direct one before it, and never handed out again. Refused beyond
    /// [`KEY_GAP`] past the highest used key: a wallet restored from its
    /// phrase watches no further (a linked wallet asking for keys it never
    /// pays cannot push them out of reach). The caller saves the state
    /// before the key leaves.
    pub fn take_direct_key(&mut self) -> Result<u64, String> {
        let stock = self.receive_stock();
        let above_stock = stock.last().map_or(1, |l| l + 1);
        let index = self
            .direct_keys
            .last()
            .map_or(above_stock, |d| above_stock.max(d + 1));
        let limit = self.receive_used.map_or(KEY_GAP - 1, |u| u + KEY_GAP);
        if index > limit {
            return Err(format!(
                "{} keys handed out directly are not paid yet",
                self.direct_keys.len()
            ));
        }
        self.direct_keys.push(index);
        // Watched from now on; a key never handed out before can only be
        // paid at heights still to come, so `from` stays.
        self.receive_keys = self.receive_keys.max(index + 1);
        Ok(index)
    }

    /// Direct keys at or below the highest used receive key leave the list
    /// (nothing above them is handed out again either way).
    fn forget_paid_direct_keys(&mut self) {
        if let Some(u) = self.receive_used {
            self.direct_keys.retain(|d| *d > u);
        }
    }

    /// Choose held outputs of `asset` worth at least `amount`, largest
    /// first; their total.
    pub fn select(&self, asset: &AssetId, amount: u128) -> Option<(Vec<&Held>, u128)> {
        let mut candidates: Vec<&Held> = self
            .outputs
            .iter()
            .filter(|h| h.state.output.asset == *asset)
            .filter(|h| matches!(h.state.output.value, Value::Amount(_)))
            .collect();
        candidates.sort_by_key(|h| std::cmp::Reverse(amount_of(h)));
        let mut total: u128 = 0;
        let mut chosen = Vec::new();
        for h in candidates {
            if total >= amount {
                break;
            }
            total = total.checked_add(amount_of(h))?;
            chosen.push(h);
        }
        (total >= amount && !chosen.is_empty()).then_some((chosen, total))
    }

    /// Unspent holdings per asset.
    pub fn holdings(&self) -> BTreeMap<AssetId, Holding> {
        let mut out: BTreeMap<AssetId, Holding> = BTreeMap::new();
        for h in &self.outputs {
            let e = out.entry(h.state.output.asset).or_default();
            e.outputs += 1;
            match h.state.output.value {
                Value::Amount(a) => e.amount = e.amount.saturating_add(a),
                Value::Item(i) => e.items.push(i),
            }
        }
        out
    }

    /// Re-check what is stored: the checkpoint against the committees, and
    /// every held output's proof against its root. The number of outputs
    /// checked.
    pub fn verify(&self, committees: &CommitteeChain) -> Result<usize, String> {
        let Some(cert) = &self.checkpoint else {
            return Ok(0);
        };
        committees
            .verify_checkpoint(cert)
            .map_err(|e| format!("the stored checkpoint: {e}"))?;
        let root = &cert.statement.roots.outputs;
        for h in &self.outputs {
            h.proof
                .verify(root, &h.id, Some(&h.state.leaf_value()))
                .map_err(|e| format!("output {}: {e}", h.id))?;
        }
        Ok(self.outputs.len())
    }
}

fn amount_of(h: &Held) -> u128 {
    match h.state.output.value {
        Value::Amount(a) => a,
        Value::Item(_) => 0,
    }
}

/// Receive keys a wallet keeps stocked with its peer.
pub const RECEIVE_STOCK: u64 = 16;

/// What one applied answer established.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    pub height: u64,
    /// Another round is needed (more heights, or newly watched keys).
    pub more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> ChainState {
        ChainState::new(
            Hash([1; 32]),
            WalletName::parse("bob@peer-1").expect("name"),
            PeerKey([2; 32]),
            "127.0.0.1:9000".parse().expect("addr"),
        )
    }

    #[test]
    fn direct_keys_are_above_the_stock_never_in_it_and_within_the_gap() {
        let mut s = state();
        assert_eq!(s.receive_stock(), (1..17).collect::<Vec<_>>());
        // Above the stock the peer holds, one after another, up to the
        // gap a restored wallet watches (indexes 0..20).
        assert_eq!(s.take_direct_key(), Ok(17));
        assert_eq!(s.take_direct_key(), Ok(18));
        assert_eq!(s.take_direct_key(), Ok(19));
        assert!(s.take_direct_key().is_err());
        assert!(s.receive_keys >= 20);
        // A prekey paid: the stock moves up and skips the direct keys.
        s.receive_used = Some(3);
        let stock = s.receive_stock();
        assert_eq!(stock.len(), RECEIVE_STOCK as usize);
        assert!(stock.iter().all(|i| *i > 3 && !s.direct_keys.contains(i)));
        let next = s.take_direct_key().expect("a key within the gap");
        assert!(next > *stock.last().expect("stock") && next <= 3 + KEY_GAP);
        // A direct key paid: the ones below it leave the list.
        s.receive_used = Some(18);
        s.receive_stock();
        assert_eq!(s.direct_keys, vec![19, next]);
    }

    #[test]
    fn a_version_1_state_file_reads_as_version_2_without_direct_keys() {
        let dir = tempfile::tempdir().expect("dir");
        let mut s = state();
        s.change_next = 7;
        // Version 1 is version 2's encoding without the trailing empty list.
        let mut v1 = proofs::encode(&s);
        assert_eq!(v1.pop(), Some(0));
        v1[0] = 1;
        std::fs::write(ChainState::path(dir.path()), &v1).expect("write");
        assert_eq!(ChainState::load(dir.path()).expect("loads"), s);
        s.direct_keys.push(17);
        s.save(dir.path()).expect("save");
        assert_eq!(ChainState::load(dir.path()).expect("loads"), s);
    }
}
