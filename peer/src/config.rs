//! The peer's configuration file, `DIR/config.toml`.
//!
//! Unknown fields are errors, and every error names the file and the field,
//! so a typo never silently falls back to a default.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The peer's name on chain (2..=32 of `a-z0-9-`).
    pub name: String,
    /// The one UDP socket: QUIC links and raw datagrams.
    pub listen: SocketAddr,
    /// The genesis file, relative to the peer's directory.
    #[serde(default = "default_genesis")]
    pub genesis: PathBuf,
    /// Serve Prometheus metrics over HTTP here (off when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SocketAddr>,
    /// Initial LMDB map size; it grows on demand up to `max_map_size_mb`.
    #[serde(default = "default_map_size")]
    pub map_size_mb: u64,
    #[serde(default = "default_max_map_size")]
    pub max_map_size_mb: u64,
    /// Store a state snapshot every this many heights: a restart replays
    /// only the events after it, and peers far behind download it.
    #[serde(default = "default_snapshot_interval")]
    pub snapshot_interval: u64,
    /// Rounds of events kept in the event log below the current round (for
    /// peers a little behind); older ones are pruned once a certified
    /// snapshot covers them.
    #[serde(default = "default_event_log_rounds")]
    pub event_log_rounds: u64,
    /// Once a round has a quorum of events, wait at most this long for its
    /// other events before building on the quorum alone. Above the network's
    /// usual delay between peers: 100 ms across continents, less on a LAN
    /// (`peer devnet` writes 20).
    #[serde(default = "default_round_wait")]
    pub round_wait_ms: u64,
    /// While no transaction waits to be ordered, build our events no more
    /// often than this: an idle chain then adds a few heights a second
    /// (each stored forever) instead of hundreds. The first transaction
    /// after a pause waits up to this long more; under load the pace is
    /// set by the network alone (`peer devnet` writes 100).
    #[serde(default = "default_idle_round")]
    pub idle_round_ms: u64,
    /// The largest snapshot accepted from another peer.
    #[serde(default = "default_max_snapshot")]
    pub max_snapshot_mb: u64,
    /// Memory for the ledger state that grows with the chain (the output
    /// set's tree, the key index, spent outputs), as Bitcoin Core's
    /// `dbcache`: while the whole state fits, it stays in memory (fastest);
    /// once it outgrows this it moves to the state cache on disk, and this
    /// bounds the writes buffered before they are written there (more
    /// absorbs more rewrites of the same pages; less bounds the peer's
    /// memory tighter). 0: on disk from the start, every write written
    /// back at once.
    #[serde(default = "default_state_cache")]
    pub state_cache_mb: u64,
    /// Tests only: make this peer lie to its wallets in one way, so that
    /// the wallet's checks can be seen catching it (see `wallet_service`).
    /// Accepted only by builds with debug assertions (the test profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_lie: Option<crate::wallet_service::Lie>,
}

fn default_snapshot_interval() -> u64 {
    // About 40 minutes of an idle chain (~8 heights/s at the default idle
    // pace), seconds under load; a snapshot of a large state stalls the
    // driver for its export, so not much more often.
    20_000
}
fn default_event_log_rounds() -> u64 {
    20_000
}
fn default_round_wait() -> u64 {
    100
}
fn default_idle_round() -> u64 {
    500
}
fn default_max_snapshot() -> u64 {
    4096
}

fn default_state_cache() -> u64 {
    256
}

fn default_genesis() -> PathBuf {
    PathBuf::from("genesis.json")
}
fn default_map_size() -> u64 {
    256
}
fn default_max_map_size() -> u64 {
    64 * 1024
}

impl Config {
    pub fn new(name: &str, listen: SocketAddr) -> Config {
        Config {
            name: name.to_string(),
            listen,
            genesis: default_genesis(),
            metrics: None,
            map_size_mb: default_map_size(),
            max_map_size_mb: default_max_map_size(),
            snapshot_interval: default_snapshot_interval(),
            event_log_rounds: default_event_log_rounds(),
            round_wait_ms: default_round_wait(),
            idle_round_ms: default_idle_round(),
            max_snapshot_mb: default_max_snapshot(),
            state_cache_mb: default_state_cache(),
            test_lie: None,
        }
    }

    /// Read and check `path`.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let cfg: Config =
            toml::from_str(&text).with_context(|| format!("config file {}", path.display()))?;
        cfg.check()
            .with_context(|| format!("config file {}", path.display()))?;
        Ok(cfg)
    }

    pub fn check(&self) -> Result<()> {
        if self.test_lie.is_some() && !cfg!(debug_assertions) {
            anyhow::bail!("field `test_lie` is only accepted by test builds (debug assertions on)");
        }
        dag::ledger::peers::check_name(&self.name).context("field `name`")?;
        dag::ledger::peers::check_address(&self.listen).context("field `listen`")?;
        if self.map_size_mb == 0 || self.max_map_size_mb < self.map_size_mb {
            anyhow::bail!("field `max_map_size_mb` must be at least `map_size_mb` (> 0)");
        }
        if self.snapshot_interval == 0 {
            anyhow::bail!("field `snapshot_interval` must be at least 1 height");
        }
        if self.event_log_rounds < 100 {
            anyhow::bail!("field `event_log_rounds` must be at least 100");
        }
        if self.round_wait_ms > 10_000 {
            anyhow::bail!("field `round_wait_ms` must be at most 10000");
        }
        if self.idle_round_ms > 10_000 {
            anyhow::bail!("field `idle_round_ms` must be at most 10000");
        }
        if self.max_snapshot_mb == 0 {
            anyhow::bail!("field `max_snapshot_mb` must be at least 1");
        }
        if self.state_cache_mb > 1 << 20 {
            anyhow::bail!("field `state_cache_mb` must be at most 1048576");
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(s: &str) -> Result<Config> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("config.toml");
        std::fs::write(&p, s)?;
        Config::load(&p)
    }

    #[test]
    fn round_trip_and_defaults() {
        let c = Config::new("alpha", "127.0.0.1:7000".parse().unwrap());
        assert_eq!(load_str(&c.to_toml()).unwrap(), c);
        let c = load_str("name = \"alpha\"\nlisten = \"127.0.0.1:7000\"\n").unwrap();
        assert_eq!(c.genesis, PathBuf::from("genesis.json"));
    }

    #[test]
    fn errors_name_the_field() {
        let e = format!(
            "{:#}",
            load_str("name = \"alpha\"\nlisten = \"nowhere\"\n").unwrap_err()
        );
        assert!(e.contains("listen"), "{e}");
        let e = format!(
            "{:#}",
            load_str("name = \"alpha\"\nlisten = \"127.0.0.1:7000\"\nlistne = 1\n").unwrap_err()
        );
        assert!(e.contains("listne"), "{e}");
        let e = format!(
            "{:#}",
            load_str("name = \"Alpha\"\nlisten = \"127.0.0.1:7000\"\n").unwrap_err()
        );
        assert!(e.contains("`name`"), "{e}");
        let e = format!(
            "{:#}",
            load_str("listen = \"127.0.0.1:7000\"\n").unwrap_err()
        );
        assert!(e.contains("name"), "{e}");
    }
}
