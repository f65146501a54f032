//! A local network in one directory: a fresh genesis with N peers and funded
//! test wallets, one peer directory each (as `peer init` makes them).
//!
//! Layout of `D`: `genesis.json`, `test-wallets.json` (raw funded keys for
//! tests and benchmarks: test money only), `peer-0` … `peer-(N-1)`, each
//! with its `config.toml`, `identity.key` and a copy of `genesis.json`, and
//! when the `wallet` program is at hand, `wallets/w-0` … real wallet
//! directories (empty password) funded at genesis and listed with their
//! phrases in `wallets/wallets.json`. Running the command again on an
//! existing `D` reuses all of it.

use crate::config::Config;
use crate::keys;
use anyhow::{bail, Context, Result};
use dag::identity::{PeerKey, Signer};
use dag::ledger::genesis::{Genesis, GenesisOutput, GenesisPeer, NativeAsset};
use dag::ledger::state::Params;
use rand_core::{OsRng, RngCore};
use schnorrkel::{ExpansionMode, MiniSecretKey};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Test wallets funded at genesis.
pub const TEST_WALLETS: usize = 8;
/// Native base units each test wallet gets (precision 6: 1,000,000 SHARE).
pub const TEST_AMOUNT: u128 = 1_000_000_000_000;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TestWallet {
    /// 64 hex digits: the wallet's seed (its owner key is the expanded key).
    pub secret: String,
    pub key: PeerKey,
    pub amount: u128,
    /// The peer hosting its stake.
    pub host: String,
}

pub fn peer_dir(root: &Path, i: usize) -> PathBuf {
    root.join(format!("peer-{i}"))
}

/// Create (or find) the devnet in `root`; returns each peer's directory.
pub fn prepare(root: &Path, peers: usize, bind: IpAddr, base_port: u16) -> Result<Vec<PathBuf>> {
    prepare_with(root, peers, bind, base_port, Vec::new(), None)
}

/// Wallets `peer devnet` makes with the `wallet` program and funds.
pub const DEVNET_WALLETS: usize = 4;
/// Where they are listed: name, peer, directory, phrase (test money only).
pub const WALLETS_FILE: &str = "wallets/wallets.json";

/// A devnet wallet: a real wallet directory (empty password), funded at
/// genesis on its first receive key, to log in as `name@peer`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DevWallet {
    pub name: String,
    pub peer: String,
    pub dir: PathBuf,
    /// The seed phrase: test money only.
    pub phrase: String,
    pub receive_key: PeerKey,
    pub amount: u128,
}

impl DevWallet {
    pub fn login(&self) -> String {
        format!("{}@{}", self.name, self.peer)
    }
}

/// The devnet's wallets, if it has any.
pub fn wallets(root: &Path) -> Result<Vec<DevWallet>> {
    let path = root.join(WALLETS_FILE);
    if !path.exists() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&std::fs::read(&path)?).with_context(|| format!("{}", path.display()))
}

/// Run `wallet` with an empty password; its stdout as JSON.
fn run_wallet(exe: &Path, args: &[&std::ffi::OsStr]) -> Result<serde_json::Value> {
    let out = Command::new(exe)
        .args(args)
        .env("POS_WALLET_PASSWORD", "")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    if !out.status.success() {
        bail!(
            "{} {:?} failed: {}",
            exe.display(),
            args,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let last = out
        .stdout
        .split(|b| *b == b'\n')
        .rfind(|l| !l.is_empty())
        .unwrap_or_default();
    Ok(serde_json::from_slice(last)?)
}

/// Make `n` wallets under `root/wallets` with `exe` (the `wallet` program).
fn make_wallets(
    exe: &Path,
    root: &Path,
    peers: &[GenesisPeer],
    n: usize,
) -> Result<Vec<DevWallet>> {
    let mut out = Vec::new();
    for i in 0..n {
        let name = format!("w-{i}");
        let dir = root.join("wallets").join(&name);
        let d = dir.as_os_str();
        let created = run_wallet(
            exe,
            &["--dir".as_ref(), d, "create".as_ref(), "--json".as_ref()],
        )?;
        let keys = run_wallet(
            exe,
            &[
                "--dir".as_ref(),
                d,
                "keys".as_ref(),
                "--receive".as_ref(),
                "1".as_ref(),
                "--json".as_ref(),
            ],
        )?;
        let phrase = created["phrase"]
            .as_str()
            .context("wallet create: no phrase")?;
        let key = keys["receive_keys"][0]
            .as_str()
            .context("wallet keys: no key")?;
        out.push(DevWallet {
            name,
            peer: peers[i % peers.len()].name.clone(),
            dir,
            phrase: phrase.to_string(),
            receive_key: PeerKey(dag::hex::decode_array(key).context("wallet keys: a bad key")?),
            amount: TEST_AMOUNT,
        });
    }
    Ok(out)
}

/// Log the devnet's wallets that are not yet logged in, each `name@peer`,
/// retrying while the peers start (their first certified checkpoint).
pub fn login_wallets(exe: &Path, root: &Path, wait: std::time::Duration) -> Result<Vec<String>> {
    let genesis = root.join("genesis.json");
    let deadline = std::time::Instant::now() + wait;
    let mut done = Vec::new();
    for w in wallets(root)? {
        if w.dir.join("chain.state").exists() {
            continue;
        }
        loop {
            let r = run_wallet(
                exe,
                &[
                    "--dir".as_ref(),
                    w.dir.as_os_str(),
                    "login".as_ref(),
                    w.login().as_ref(),
                    "--genesis".as_ref(),
                    genesis.as_os_str(),
                    "--json".as_ref(),
                ],
            );
            match r {
                Ok(_) => {
                    done.push(w.login());
                    break;
                }
                Err(e) if std::time::Instant::now() >= deadline => {
                    return Err(e.context(format!("logging in {}", w.login())))
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(500)),
            }
        }
    }
    Ok(done)
}

/// [`prepare`], with `extra` genesis outputs after the test wallets' (a
/// benchmark's funded keys).
pub fn prepare_with(
    root: &Path,
    peers: usize,
    bind: IpAddr,
    base_port: u16,
    extra: Vec<GenesisOutput>,
    wallet_exe: Option<&Path>,
) -> Result<Vec<PathBuf>> {
    if peers == 0 || peers > 64 {
        bail!("--peers must be between 1 and 64");
    }
    let genesis_path = root.join("genesis.json");
    if genesis_path.exists() {
        let g = Genesis::from_json(&std::fs::read(&genesis_path)?)
            .with_context(|| format!("existing {}", genesis_path.display()))?;
        if g.peers.len() != peers {
            bail!(
                "{} holds a devnet of {} peers, not {peers}; use another --dir",
                root.display(),
                g.peers.len()
            );
        }
        return Ok((0..peers).map(|i| peer_dir(root, i)).collect());
    }
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let mut gpeers = Vec::new();
    let mut dirs = Vec::new();
    for i in 0..peers {
        let dir = peer_dir(root, i);
        std::fs::create_dir_all(&dir)?;
        let name = format!("peer-{i}");
        let listen = SocketAddr::new(bind, base_port + i as u16);
        let secret = keys::create(&dir)?;
        let mut cfg = Config::new(&name, listen);
        // Every peer on one host: a round's last events are never far behind.
        cfg.round_wait_ms = 20;
        // A local chain to try wallets on: quick to wake, still slow to grow.
        cfg.idle_round_ms = 100;
        std::fs::write(dir.join("config.toml"), cfg.to_toml())?;
        gpeers.push(GenesisPeer {
            name,
            key: Signer::from_seed(secret, [0; 32]).key(),
            addr: listen,
        });
        dirs.push(dir);
    }
    let mut wallets = Vec::new();
    for i in 0..TEST_WALLETS {
        let mut secret = [0u8; 32];
        OsRng.fill_bytes(&mut secret);
        let kp = MiniSecretKey::from_bytes(&secret)
            .expect("32 bytes")
            .expand_to_keypair(ExpansionMode::Ed25519);
        wallets.push(TestWallet {
            secret: dag::hex::encode(&secret),
            key: PeerKey(kp.public.to_bytes()),
            amount: TEST_AMOUNT,
            host: gpeers[i % peers].name.clone(),
        });
    }
    let dev_wallets = match wallet_exe {
        Some(exe) => make_wallets(exe, root, &gpeers, DEVNET_WALLETS.min(64))?,
        None => Vec::new(),
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let genesis = Genesis {
        chain_name: "devnet".into(),
        time_ms: now_ms,
        native: NativeAsset {
            name: "SHARE".into(),
            precision: 6,
        },
        params: Params::default(),
        peers: gpeers,
        outputs: wallets
            .iter()
            .map(|w| GenesisOutput {
                owner: w.key,
                amount: w.amount,
                host: w.host.clone(),
            })
            .chain(dev_wallets.iter().map(|w| GenesisOutput {
                owner: w.receive_key,
                amount: w.amount,
                host: w.peer.clone(),
            }))
            .chain(extra)
            .collect(),
    };
    genesis.check()?;
    let json = genesis.to_json();
    for dir in &dirs {
        std::fs::write(dir.join("genesis.json"), &json)?;
    }
    std::fs::write(
        root.join("test-wallets.json"),
        serde_json::to_string_pretty(&wallets)?,
    )?;
    if !dev_wallets.is_empty() {
        std::fs::write(
            root.join(WALLETS_FILE),
            serde_json::to_string_pretty(&dev_wallets)?,
        )?;
    }
    // Written last: its presence means the devnet is complete.
    std::fs::write(&genesis_path, &json)?;
    Ok(dirs)
}

/// Start `exe run --dir DIR` with its log appended to `DIR/peer.log`.
pub fn spawn_peer(exe: &Path, dir: &Path, json_logs: bool) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("peer.log"))?;
    let mut cmd = Command::new(exe);
    if json_logs {
        cmd.arg("--log-format").arg("json");
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // The peers die with the thread that started them: a devnet or a
        // bench killed by a signal leaves no daemons running behind it
        // (holding their directories' locks and the machine's cores).
        // SAFETY: the closure runs in the child between fork and exec and
        // only calls prctl, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd.arg("run")
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting the peer of {}", dir.display()))
}
