//! System tests that start real `peer` (and later `wallet`) processes on
//! loopback, or inside network namespaces the test creates. This library
//! holds what the tests share: finding the built binaries, a free port
//! range, and a local network of peer processes the test controls one by
//! one (start, `kill -9`, restart).

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A binary of this workspace, built by `cargo test --workspace` next to
/// the test executables' directory.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// A base port with `n` consecutive free UDP ports on 127.0.0.1.
///
/// The tests of one process run in parallel threads and probe ports before
/// their peers bind them, so a probe alone would hand two tests the same
/// range: each call takes the next range of a process-wide cursor, which
/// starts at a place drawn from the process id and the clock (other
/// processes), and skips ranges in use.
pub fn free_ports(n: u16) -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 30_000;
    static CURSOR: AtomicU32 = AtomicU32::new(u32::MAX);
    let n32 = u32::from(n);
    let step = n32 + 3;
    let start = {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        (std::process::id() ^ nanos).wrapping_mul(2_654_435_761) % SPAN
    };
    let _ = CURSOR.compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    loop {
        let offset = CURSOR.fetch_add(step, Ordering::Relaxed) % (SPAN - n32);
        let candidate = (LOW + offset) as u16;
        let ok = (0..n).all(|i| UdpSocket::bind(("127.0.0.1", candidate + i)).is_ok());
        if ok {
            return candidate;
        }
    }
}

/// Peer processes on 127.0.0.1 over a devnet directory.
pub struct LocalNet {
    pub root: tempfile::TempDir,
    pub dirs: Vec<PathBuf>,
    pub children: Vec<Option<Child>>,
    /// Run the peers inside this namespace (its own loopback).
    pub netns: Option<Netns>,
    pub base_port: u16,
}

impl LocalNet {
    /// Prepare `n` peers (as `peer devnet` does) without starting them.
    pub fn prepare(n: usize) -> LocalNet {
        Self::prepare_as(n, None)
    }

    /// [`LocalNet::prepare`] with the devnet's wallets too (made by the
    /// built `wallet` program, funded at genesis, not logged in yet).
    pub fn prepare_with_wallets(n: usize) -> LocalNet {
        Self::prepare_as(n, Some(&bin("wallet")))
    }

    fn prepare_as(n: usize, wallet: Option<&Path>) -> LocalNet {
        let root = tempfile::tempdir().expect("a temporary directory");
        let base = free_ports(n as u16);
        let dirs = peer::devnet::prepare_with(
            root.path(),
            n,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            base,
            Vec::new(),
            wallet,
        )
        .expect("devnet prepared");
        LocalNet {
            root,
            dirs,
            children: (0..n).map(|_| None).collect(),
            netns: None,
            base_port: base,
        }
    }

    /// Set top-level `key = value` lines in peer `i`'s `config.toml`
    /// (before it starts), replacing the keys' current lines.
    pub fn configure(&self, i: usize, toml: &str) {
        let path = self.dirs[i].join("config.toml");
        let text = std::fs::read_to_string(&path).expect("config.toml");
        let key = |l: &str| l.split('=').next().unwrap_or("").trim().to_string();
        let new: Vec<&str> = toml.lines().filter(|l| l.contains('=')).collect();
        let mut lines: Vec<&str> = text
            .lines()
            .filter(|l| !new.iter().any(|n| key(n) == key(l)))
            .collect();
        lines.extend(new);
        std::fs::write(&path, lines.join("\n") + "\n").expect("config.toml written");
    }

    pub fn start(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dirs[i].join("peer.log"))
            .expect("log file");
        let mut cmd = match &self.netns {
            Some(ns) => ns.command(&bin("peer")),
            None => Command::new(bin("peer")),
        };
        let child = cmd
            .arg("run")
            .arg("--dir")
            .arg(&self.dirs[i])
            .env("RUST_LOG", "info")
            // An error's message, not pages of frames, ends the log.
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("peer starts");
        self.children[i] = Some(child);
    }

    pub fn start_all(&mut self) {
        for i in 0..self.dirs.len() {
            self.start(i);
        }
    }

    /// `kill -9`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `peer status --json` of peer `i`, if it answers.
    pub fn status(&self, i: usize) -> Option<serde_json::Value> {
        let out = Command::new(bin("peer"))
            .arg("status")
            .arg("--dir")
            .arg(&self.dirs[i])
            .arg("--json")
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn height(&self, i: usize) -> u64 {
        self.status(i)
            .and_then(|s| s["height"].as_u64())
            .unwrap_or(0)
    }

    /// The roots peer `i` stored for `height` (`peer status --height`).
    pub fn roots_at(&self, i: usize, height: u64) -> Option<serde_json::Value> {
        let out = Command::new(bin("peer"))
            .arg("status")
            .arg("--dir")
            .arg(&self.dirs[i])
            .arg("--height")
            .arg(height.to_string())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        // `null`: the peer has no such height.
        serde_json::from_slice(&out.stdout)
            .ok()
            .filter(|v: &serde_json::Value| !v.is_null())
    }

    /// Wait until every listed peer reports at least `height`.
    pub fn wait_height(&self, peers: &[usize], height: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if peers.iter().all(|&i| self.height(i) >= height) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }

    /// The tail of a peer's log, for failure messages.
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(self.dirs[i].join("peer.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for LocalNet {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

/// Resident memory of a process, in kB (0 if unknown).
pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A network namespace the test creates (with loopback up) and deletes on
/// drop. Root only: [`Netns::create`] says why it cannot when it cannot.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(tag: &str) -> Result<Netns, String> {
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| e.to_string())?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("not root: network namespaces need root".into());
        }
        let name = format!("pos-{tag}-{}", std::process::id());
        let ok = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("ip: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        ok(&["netns", "add", &name])?;
        let ns = Netns { name };
        ok(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.arg("netns").arg("exec").arg(&self.name).arg(program);
        c
    }

    /// Run `iptables ARGS` inside the namespace; panics on failure.
    pub fn iptables(&self, args: &[&str]) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "iptables"])
            .args(args)
            .output()
            .expect("iptables runs");
        assert!(
            out.status.success(),
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A wallet-side load: each devnet test wallet moves its output to itself
/// again and again over a wallet link to one peer, submitting the next
/// transfer as soon as the last is final. Runs until `stop` is set;
/// returns how many transfers were applied.
pub fn self_transfers(
    net: &LocalNet,
    peer: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    use dag::ledger::genesis::Genesis;
    let genesis =
        Genesis::from_json(&std::fs::read(net.root.path().join("genesis.json")).expect("genesis"))
            .expect("valid genesis");
    let wallets: Vec<peer::devnet::TestWallet> = serde_json::from_slice(
        &std::fs::read(net.root.path().join("test-wallets.json")).expect("test wallets"),
    )
    .expect("test wallets");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(load::run(genesis, wallets, peer, stop))
    })
}

mod load {
    use dag::identity::{PeerKey, Signer};
    use dag::ledger::apply::Outcome;
    use dag::ledger::genesis::Genesis;
    use dag::ledger::multisig::sign_local;
    use dag::ledger::output::{output_id, Output, Value};
    use dag::ledger::transaction::{Transaction, TxBody};
    use dag::ledger::AssetId;
    use dag::wire::WalletMessage;
    use nat::transport::{LinkSigner, Transport, TransportConfig};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    pub async fn run(
        genesis: Genesis,
        wallets: Vec<peer::devnet::TestWallet>,
        peer: usize,
        stop: Arc<AtomicBool>,
    ) -> usize {
        let chain = genesis.chain_id();
        let me: Arc<dyn LinkSigner> = Arc::new(Mutex::new(Signer::from_seed([0x77; 32], [1; 32])));
        let (transport, _raw) = Transport::bind(
            TransportConfig::new(([127, 0, 0, 1], 0).into(), chain),
            me,
            Arc::new(|_: &PeerKey| true),
        )
        .await
        .expect("client transport");
        let target = &genesis.peers[peer];
        let mut link = None;
        for _ in 0..50 {
            if let Ok(l) = transport.connect(target.addr, target.key).await {
                link = Some(l);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let link = link.expect("a wallet link to the peer");
        let keys: Vec<schnorrkel::Keypair> = wallets
            .iter()
            .map(|w| {
                schnorrkel::MiniSecretKey::from_bytes(
                    &dag::hex::decode_array::<32>(&w.secret).expect("hex secret"),
                )
                .expect("32 bytes")
                .expand_to_keypair(schnorrkel::ExpansionMode::Ed25519)
            })
            .collect();
        let hosts: Vec<PeerKey> = wallets
            .iter()
            .map(|w| {
                genesis
                    .peers
                    .iter()
                    .find(|p| p.name == w.host)
                    .expect("host")
                    .key
            })
            .collect();
        // Each wallet's current output: genesis output i to start with.
        let mut current: Vec<_> = (0..wallets.len())
            .map(|i| output_id(&chain, i as u32))
            .collect();
        let transfer = |i: usize, input| {
            let mut body = TxBody {
                chain,
                inputs: vec![input],
                outputs: vec![Output {
                    owner: wallets[i].key,
                    asset: AssetId::NATIVE,
                    value: Value::Amount(wallets[i].amount),
                    host: Some(hosts[i]),
                }],
                actions: vec![],
                fee: 0,
                memo: None,
                signers: vec![],
                aggregate: PeerKey([0; 32]),
            };
            body.set_signers([wallets[i].key]).expect("one signer");
            let (_, _, signature) = sign_local(&[&keys[i]], &body.id()).expect("signing");
            Transaction { body, signature }
        };
        let mut pending: Vec<Option<(dag::ledger::TxId, usize)>> = vec![None; wallets.len()];
        let mut applied = 0;
        while !stop.load(Ordering::Relaxed) {
            let mut batch = Vec::new();
            for i in 0..wallets.len() {
                if pending[i].is_none() {
                    let tx = transfer(i, current[i]);
                    pending[i] = Some((tx.id(), i));
                    batch.push(tx.encode());
                }
            }
            if !batch.is_empty()
                && link
                    .send(WalletMessage::Submit(batch).encode().into())
                    .is_err()
            {
                break;
            }
            let Ok(Some(frame)) =
                tokio::time::timeout(Duration::from_millis(500), link.recv()).await
            else {
                continue;
            };
            match WalletMessage::decode(&frame) {
                Ok(WalletMessage::Finalized(done)) => {
                    for (id, _, outcome) in done {
                        if let Some(i) =
                            pending.iter().position(|p| p.is_some_and(|(x, _)| x == id))
                        {
                            pending[i] = None;
                            if outcome == Outcome::Applied {
                                current[i] = output_id(&id, 0);
                                applied += 1;
                            }
                        }
                    }
                }
                Ok(WalletMessage::Submitted(list)) => {
                    for (id, err) in list {
                        if err.is_some() {
                            if let Some(i) =
                                pending.iter().position(|p| p.is_some_and(|(x, _)| x == id))
                            {
                                pending[i] = None;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        transport.close().await;
        applied
    }
}

/// Run the built `wallet --dir DIR ARGS` with an empty password (the
/// devnet wallets'), `stdin` as its input, and wait for it.
pub fn wallet(dir: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(bin("wallet"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env("POS_WALLET_PASSWORD", "")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wallet starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("stdin written");
    child.wait_with_output().expect("wallet ran")
}

/// `wallet online` on `dir`, started as a child (killed on drop), ready
/// once its control socket answers.
/// A devnet of `n` peers on loopback, started, with its funded wallets
/// logged in (`w-i@peer-(i mod n)`).
pub fn devnet_logged_in(n: usize) -> (LocalNet, Vec<peer::devnet::DevWallet>) {
    let mut net = LocalNet::prepare_with_wallets(n);
    net.start_all();
    let root = net.root.path().to_path_buf();
    peer::devnet::login_wallets(&bin("wallet"), &root, Duration::from_secs(90))
        .expect("the devnet's wallets log in");
    let ws = peer::devnet::wallets(&root).expect("wallets.json");
    (net, ws)
}

pub struct OnlineWallet {
    pub dir: PathBuf,
    child: Child,
}

impl OnlineWallet {
    pub fn start(dir: &Path, wrap: Option<&dyn Fn(&Path) -> Command>) -> OnlineWallet {
        let log = std::fs::File::create(dir.join("online.log")).expect("log file");
        let mut cmd = match wrap {
            Some(w) => w(&bin("wallet")),
            None => Command::new(bin("wallet")),
        };
        let child = cmd
            .arg("--dir")
            .arg(dir)
            .arg("online")
            .env("POS_WALLET_PASSWORD", "")
            .env("RUST_LOG", "info")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("wallet online starts");
        let w = OnlineWallet {
            dir: dir.to_path_buf(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = wallet(dir, &["links", "--json"], "");
            if out.status.success() {
                return w;
            }
            assert!(
                Instant::now() < deadline,
                "wallet online did not come up: {}",
                w.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("online.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for OnlineWallet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Build a NAT lab (`nat::lab`), or say why it cannot run here: a line
/// `SKIPPED natlab: WHY` and `None` — unless `NATLAB_REQUIRED=1`, which
/// makes that a failure (CI sets it).
pub fn lab_or_skip<T>(build: impl FnOnce() -> Result<T, nat::lab::LabError>) -> Option<T> {
    match build() {
        Ok(lab) => Some(lab),
        Err(why) => {
            if std::env::var("NATLAB_REQUIRED").as_deref() == Ok("1") {
                panic!("NATLAB_REQUIRED=1 but the NAT lab cannot run: {why}");
            }
            // Straight to stderr: the test harness does not capture this.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED natlab: {why}");
            None
        }
    }
}

/// The stderr of a command that must have failed (its stdout otherwise).
pub fn failure(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "it succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `wallet` arguments that issue 1000 indivisible units of a new asset
/// `name` and answer in JSON (the asset's id in `"asset"`).
pub fn issue_args(name: &str) -> [&str; 8] {
    [
        "issue",
        "--name",
        name,
        "--supply",
        "1000",
        "--precision",
        "0",
        "--json",
    ]
}

/// The last stdout line of a successful command, as JSON (the failure's
/// stderr otherwise).
pub fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "wallet failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().expect("a JSON line")).expect("JSON")
}
