//! The local admin socket, `DIR/admin.sock`: a Unix socket (never the
//! public UDP port) where `peer status` asks the running peer for its
//! figures. One request line, one JSON answer line.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const SOCKET: &str = "admin.sock";
/// `status`: the figures below.
pub const STATUS: &str = "status";
/// `height N`: the stored record of height N (its roots), or `null`.
pub const HEIGHT: &str = "height";
/// Longest request line read.
pub const MAX_REQUEST: usize = 256;

pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join(SOCKET)
}

/// What `peer status` shows.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub name: String,
    pub key: String,
    pub chain: String,
    pub listen: String,
    /// The first round not yet sequenced.
    pub round: u64,
    /// The last committed (and applied) height.
    pub height: u64,
    pub committee_size: usize,
    pub peers_connected: usize,
    /// Rounds between the highest round seen from any peer and `round`.
    pub lag_rounds: u64,
    pub mempool_txs: usize,
    pub disk_bytes: u64,
    pub dropped_datagrams: u64,
    pub equivocations: u64,
    pub txs_applied: u64,
    pub txs_rejected: u64,
    pub checkpoints_certified: u64,
    pub last_certified_height: Option<u64>,
    /// State snapshots taken since start, and certified committee
    /// hand-overs.
    #[serde(default)]
    pub snapshots: u64,
    #[serde(default)]
    pub handovers_certified: u64,
    /// Own events that no leader ordered in time (they reached the others
    /// too late), whose transactions were proposed again.
    #[serde(default)]
    pub events_requeued: u64,
    /// The newest stored state snapshot's height.
    #[serde(default)]
    pub snapshot_height: Option<u64>,
    /// The first round still in the event log (older ones are pruned).
    #[serde(default)]
    pub event_log_from_round: Option<u64>,
    /// Memory the ledger state takes against `state_cache_mb` (estimated
    /// bytes): the whole state while it is held in memory, else the writes
    /// not yet handed to the state cache's disk; whether it has moved to
    /// the state cache; and outputs whose state is held in memory (all of
    /// them, or the unspent ones once on disk).
    #[serde(default)]
    pub state_cache_bytes: u64,
    #[serde(default)]
    pub state_on_disk: bool,
    #[serde(default)]
    pub outputs_in_memory: u64,
    /// Requests to introduce a wallet to another (from this peer's
    /// wallets and from other peers).
    #[serde(default)]
    pub rendezvous_requests: u64,
    /// Bytes of wallets' channels relayed (ciphertext to this peer).
    #[serde(default)]
    pub relayed_bytes: u64,
    pub outputs_root: String,
    pub history_root: String,
    /// Drops by reason (malformed messages, refused events, rate limits…).
    pub drops: std::collections::BTreeMap<String, u64>,
}

/// Ask the peer running in `dir`.
pub fn query(dir: &Path) -> Result<Status> {
    let line = request(dir, STATUS)?;
    serde_json::from_str(&line).context("the peer's answer is not a status")
}

/// What height `h` was, as the peer in `dir` stored it.
pub fn query_height(dir: &Path, h: u64) -> Result<serde_json::Value> {
    let line = request(dir, &format!("{HEIGHT} {h}"))?;
    serde_json::from_str(&line).context("the peer's answer is not JSON")
}

fn request(dir: &Path, req: &str) -> Result<String> {
    let path = socket_path(dir);
    let mut s = UnixStream::connect(&path).with_context(|| {
        format!(
            "connecting to {} (is `peer run --dir {}` running?)",
            path.display(),
            dir.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    writeln!(s, "{req}")?;
    let mut line = String::new();
    // Answers are small; a runaway one is cut off.
    BufReader::new(std::io::Read::take(s, 1 << 20)).read_line(&mut line)?;
    if line.is_empty() {
        bail!("the peer closed the admin socket without answering");
    }
    Ok(line)
}

/// Human-readable lines for `peer status` without `--json`.
pub fn render(s: &Status) -> String {
    format!(
        "peer {} ({})\nchain      {}\nlisten     {}\nround      {}\nheight     {} (certified: {})\ncommittee  {} peers, {} connected\nlag        {} rounds\nmempool    {} txs\napplied    {} txs ({} rejected)\ndisk       {} bytes\ndropped    {} datagrams\nequivocations {}\n",
        s.name,
        s.key,
        s.chain,
        s.listen,
        s.round,
        s.height,
        s.last_certified_height
            .map_or("none yet".to_string(), |h| h.to_string()),
        s.committee_size,
        s.peers_connected,
        s.lag_rounds,
        s.mempool_txs,
        s.txs_applied,
        s.txs_rejected,
        s.disk_bytes,
        s.dropped_datagrams,
        s.equivocations,
    )
}
