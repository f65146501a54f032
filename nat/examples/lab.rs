//! Figures for hole punching through real NATs: the NAT lab of
//! [`nat::lab`], a devnet of four peers on 203.0.113.10, and for each kind
//! of pair two fresh wallets behind their sites' routers, online; then N
//! link attempts per pair (`wallet connect`, fresh link each time, the
//! asking side alternating), counted by outcome with connect time
//! percentiles.
//!
//! ```text
//! cargo build --release
//! sudo target/release/examples/lab --trials 100      # or: cargo run --release -p nat --example lab -- --trials 100
//! ```
//!
//! Prints one JSON line per kind of pair on stdout:
//! `{"pair":"cone-cone","trials":100,"direct":…,"relayed":…,"failed":…,"first_try_direct":…,"connect_ms_p50":…,"connect_ms_p99":…}`
//! (percentiles over the successful trials, nearest rank, `null` when none
//! succeeded); progress and up to three distinct failure reasons per kind
//! go to stderr. A trial is one attempt, no retries: `first_try_direct`
//! equals `direct`.
//!
//! Needs root, `ip` and `iptables` (as [`nat::lab::Lab::new`] says), and
//! the `peer` and `wallet` programs of the same profile next to this
//! example (`target/<profile>/peer`, `target/<profile>/wallet`). Every
//! process it starts that addresses the lab runs inside the lab's
//! namespaces; this process only writes files and talks to Unix sockets.
//!
//! Then one line for swaps: three more wallets (behind a home router, a
//! symmetric NAT, and a network that lets UDP out only to the peers) in a
//! room, funded by the devnet's wallets, two of them issuing an asset each,
//! run `--swaps N` cycles (A gives native for Y, B gives Y for Z, C gives Z
//! for native), each one transaction:
//! `{"swap_parties":3,"swaps":…,"completed":…,"swap_ms_p50":…,"swap_ms_p99":…}`,
//! from the moment the last party's `wallet swap` starts (its offer) to the
//! moment every party's command has returned (final, and each wallet's
//! proven state synced). Swaps are 3 s apart and link trials 200 ms apart:
//! back to back, the wallets' syncs and rendezvous requests would exceed
//! their peers' request budget (10 a second per wallet).

use clap::Parser;
use nat::lab::{Host, Lab, NatKind};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Output, Stdio};
use std::time::{Duration, Instant};

/// The kinds of pair, in the order they run and print.
const KINDS: [&str; 6] = [
    "cone-cone",
    "cone-symmetric",
    "symmetric-symmetric",
    "blocked",
    "same-nat",
    "public",
];

const PEERS: usize = 4;
/// Between two link trials: each costs a wallet a request or two at its
/// peer (`Reach`, `Answer`), and a peer serves one wallet 10 requests a
/// second on average; back to back, the trials would measure that limit.
const TRIAL_GAP: Duration = Duration::from_millis(200);
const BASE_PORT: u16 = 7000;

#[derive(Parser, Debug)]
#[command(
    name = "lab",
    about = "Hole punching figures through real NATs (network namespaces; needs root)"
)]
struct Args {
    /// Link attempts per kind of pair.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    trials: u32,
    /// Kinds of pair, comma separated: cone-cone, cone-symmetric,
    /// symmetric-symmetric, blocked, same-nat, public [default: all].
    #[arg(long, value_delimiter = ',')]
    kinds: Option<Vec<String>>,
    /// Keep the devnet and wallet directory (logs) and print where it is.
    #[arg(long)]
    keep: bool,
    /// Three-party swaps to time (0: none).
    #[arg(long, default_value_t = 5)]
    swaps: u32,
}

/// One line of the figures.
#[derive(Serialize)]
struct Summary {
    pair: &'static str,
    trials: u32,
    direct: u32,
    relayed: u32,
    failed: u32,
    first_try_direct: u32,
    connect_ms_p50: Option<u64>,
    connect_ms_p99: Option<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lab: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The `peer` and `wallet` programs of this example's profile.
fn find_bins() -> Result<(PathBuf, PathBuf), String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
    // target/<profile>/examples/lab -> target/<profile>
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("{} has no profile directory", exe.display()))?;
    let peer = profile.join("peer");
    let wallet = profile.join("wallet");
    for b in [&peer, &wallet] {
        if !b.is_file() {
            return Err(format!(
                "no {} program at {}: run `cargo build --release` first (same \
                 CARGO_TARGET_DIR and profile as this example)",
                b.file_name().unwrap_or_default().to_string_lossy(),
                b.display()
            ));
        }
    }
    Ok((peer, wallet))
}

/// The sites a kind of pair needs, and the names of its two wallets.
fn sites_of(kind: &str) -> (Vec<(NatKind, usize)>, &'static str) {
    use NatKind::*;
    match kind {
        "cone-cone" => (vec![(Cone, 1), (Cone, 1)], "cc"),
        "cone-symmetric" => (vec![(Cone, 1), (Symmetric, 1)], "cs"),
        "symmetric-symmetric" => (vec![(Symmetric, 1), (Symmetric, 1)], "ss"),
        "blocked" => (vec![(Blocked, 1), (Cone, 1)], "bl"),
        "same-nat" => (vec![(Cone, 2)], "sn"),
        "public" => (vec![(Public, 1), (Cone, 1)], "pu"),
        _ => unreachable!("kinds are checked"),
    }
}

/// Children killed (and reaped) when dropped: on every way out.
struct Children(Vec<(String, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
        }
        for (_, c) in &mut self.0 {
            let _ = c.wait();
        }
    }
}

impl Children {
    /// The first child that exited, if any.
    fn exited(&mut self) -> Option<String> {
        self.0.iter_mut().find_map(|(what, c)| match c.try_wait() {
            Ok(Some(status)) => Some(format!("{what} exited ({status})")),
            _ => None,
        })
    }
}

/// The working directory: deleted on drop, unless --keep.
struct Workdir {
    dir: Option<tempfile::TempDir>,
    keep: bool,
}

impl Workdir {
    fn path(&self) -> &Path {
        self.dir.as_ref().expect("until dropped").path()
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if let Some(d) = self.dir.take() {
            if self.keep {
                eprintln!("lab: kept the devnet and wallets in {}", d.keep().display());
            }
        }
    }
}

/// A wallet of a pair: its name, directory and host.
struct Wallet {
    name: String,
    dir: PathBuf,
    host: Host,
}

fn run(args: &Args) -> Result<(), String> {
    let kinds: Vec<&'static str> = match &args.kinds {
        None => KINDS.to_vec(),
        Some(list) => {
            let mut out = Vec::new();
            for k in list {
                let k = k.trim();
                let Some(found) = KINDS.iter().find(|x| **x == k) else {
                    return Err(format!(
                        "unknown kind {k:?}; the kinds are {}",
                        KINDS.join(", ")
                    ));
                };
                if !out.contains(found) {
                    out.push(*found);
                }
            }
            out
        }
    };
    let (peer_bin, wallet_bin) = find_bins()?;
    // Made before the lab, deleted after it: the lab's drop kills what still
    // runs in its namespaces (and may write here) before this goes.
    let work = Workdir {
        dir: Some(
            tempfile::Builder::new()
                .prefix("pos-lab-")
                .tempdir()
                .map_err(|e| format!("making a temporary directory: {e}"))?,
        ),
        keep: args.keep,
    };
    let root = work.path().to_path_buf();
    let mut lab = Lab::new("figs").map_err(|e| format!("the NAT lab cannot run here: {e}"))?;

    // The swap's three wallets: home router, symmetric NAT, blocked UDP.
    let mut swappers: Vec<Wallet> = Vec::new();
    if args.swaps > 0 {
        for (i, nat) in [NatKind::Cone, NatKind::Symmetric, NatKind::Blocked]
            .into_iter()
            .enumerate()
        {
            let host = lab
                .add_site(nat, 1)
                .map_err(|e| format!("adding a {nat:?} site for the swap: {e}"))?
                .remove(0);
            let side = ["a", "b", "c"][i];
            swappers.push(Wallet {
                name: format!("sw-{side}@peer-{i}"),
                dir: root.join("wallets").join(format!("sw-{side}")),
                host,
            });
        }
    }

    // Sites for every kind, two wallets per kind, spread over the peers.
    let mut pairs: Vec<(&'static str, Wallet, Wallet)> = Vec::new();
    let mut n = 0;
    for kind in &kinds {
        let (sites, short) = sites_of(kind);
        let mut hosts = Vec::new();
        for (nat, count) in sites {
            hosts.extend(
                lab.add_site(nat, count)
                    .map_err(|e| format!("adding a {nat:?} site for {kind}: {e}"))?,
            );
        }
        let mut ws = hosts.into_iter().zip(["a", "b"]).map(|(host, side)| {
            let login = format!("{short}-{side}@peer-{}", n % PEERS);
            n += 1;
            Wallet {
                dir: root.join("wallets").join(format!("{short}-{side}")),
                name: login,
                host,
            }
        });
        let (a, b) = (ws.next().expect("two hosts"), ws.next().expect("two hosts"));
        pairs.push((kind, a, b));
    }
    lab.check()
        .map_err(|e| format!("the lab is not sealed: {e}"))?;
    eprintln!(
        "lab: {} namespaces; devnet and wallets in {}",
        lab.namespaces().len(),
        root.display()
    );

    // The devnet: genesis, 4 peers (and their own 4 wallets), run inside the
    // peers' namespace.
    let devnet = root.join("devnet");
    let log = std::fs::File::create(root.join("devnet.log"))
        .map_err(|e| format!("creating devnet.log: {e}"))?;
    let mut devnet_child = Children(Vec::new());
    devnet_child.0.push((
        "peer devnet".into(),
        lab.command(lab.peers_ns(), &peer_bin)
            .args(["devnet", "--peers", &PEERS.to_string(), "--dir"])
            .arg(&devnet)
            .args(["--bind", &Lab::PEERS_ADDR.to_string()])
            .args(["--base-port", &BASE_PORT.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting peer devnet: {e}"))?,
    ));
    let started = Instant::now();
    wait_for_devnet(&peer_bin, &devnet, &root, &mut devnet_child)?;
    eprintln!(
        "lab: devnet certified its first checkpoint after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Fresh wallets, logged in from inside their hosts.
    let genesis = devnet.join("genesis.json");
    for (_, a, b) in &pairs {
        for w in [a, b] {
            create_wallet(&wallet_bin, w)?;
            login_wallet(&lab, &wallet_bin, w, &genesis)?;
        }
    }
    for w in &swappers {
        create_wallet(&wallet_bin, w)?;
        login_wallet(&lab, &wallet_bin, w, &genesis)?;
    }
    eprintln!(
        "lab: {} wallets logged in",
        pairs.len() * 2 + swappers.len()
    );

    // Online, each inside its host.
    let mut online = Children(Vec::new());
    let everyone: Vec<&Wallet> = pairs
        .iter()
        .flat_map(|(_, a, b)| [a, b])
        .chain(swappers.iter())
        .collect();
    for w in everyone.iter().copied() {
        {
            let log = std::fs::File::create(w.dir.join("online.log"))
                .map_err(|e| format!("creating {}/online.log: {e}", w.dir.display()))?;
            online.0.push((
                format!("wallet online of {}", w.name),
                lab.command(&w.host.ns, &wallet_bin)
                    .arg("--dir")
                    .arg(&w.dir)
                    .arg("online")
                    .env("POS_WALLET_PASSWORD", "")
                    .env("RUST_LOG", "info")
                    .env_remove("RUST_BACKTRACE")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .map_err(|e| format!("starting wallet online for {}: {e}", w.name))?,
            ));
        }
    }
    for w in everyone.iter().copied() {
        wait_online(&wallet_bin, w, &mut online)?;
    }
    eprintln!("lab: all wallets online; {} trials per kind", args.trials);

    for (kind, a, b) in &pairs {
        let s = run_kind(kind, a, b, args.trials, &wallet_bin, &mut online)?;
        println!("{}", serde_json::to_string(&s).expect("serialisable"));
        let _ = std::io::stdout().flush();
    }
    if args.swaps > 0 {
        let line = run_swaps(&lab, &wallet_bin, &devnet, &swappers, args.swaps)?;
        println!("{line}");
    }
    drop(online);
    drop(devnet_child);
    drop(lab);
    drop(work);
    Ok(())
}

fn wait_for_devnet(
    peer_bin: &Path,
    devnet: &Path,
    root: &Path,
    child: &mut Children,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(why) = child.exited() {
            return Err(format!(
                "{why}; its log:\n{}",
                tail(&root.join("devnet.log"))
            ));
        }
        let last = if devnet.join("genesis.json").exists() {
            let out = Command::new(peer_bin)
                .args(["status", "--dir"])
                .arg(devnet.join("peer-0"))
                .arg("--json")
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("running peer status: {e}"))?;
            if out.status.success() {
                match serde_json::from_slice::<Value>(&out.stdout) {
                    Ok(v) if !v["last_certified_height"].is_null() => return Ok(()),
                    Ok(_) => "no certified checkpoint yet".to_string(),
                    Err(e) => format!("peer status --json: {e}"),
                }
            } else {
                String::from_utf8_lossy(&out.stderr).trim().to_string()
            }
        } else {
            "no genesis.json yet".to_string()
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "the devnet did not certify a checkpoint within 180 s ({last}); its log:\n{}",
                tail(&root.join("devnet.log"))
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn create_wallet(wallet_bin: &Path, w: &Wallet) -> Result<(), String> {
    if let Some(parent) = w.dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let out = Command::new(wallet_bin)
        .arg("--dir")
        .arg(&w.dir)
        .args(["create", "--json"])
        .env("POS_WALLET_PASSWORD", "")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running wallet create: {e}"))?;
    if !out.status.success() {
        return Err(format!("wallet create for {}: {}", w.name, stderr_of(&out)));
    }
    Ok(())
}

/// `wallet login` from inside the wallet's host, retrying for up to 60 s
/// (the peers may not have certified a checkpoint the wallet can use yet).
fn login_wallet(lab: &Lab, wallet_bin: &Path, w: &Wallet, genesis: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = lab
            .command(&w.host.ns, wallet_bin)
            .arg("--dir")
            .arg(&w.dir)
            .args(["login", &w.name, "--genesis"])
            .arg(genesis)
            .env("POS_WALLET_PASSWORD", "")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running wallet login: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "wallet login {} (from {}): {}",
                w.name,
                w.host.ns,
                stderr_of(&out)
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Until `wallet links --json` answers, then until the wallet knows how its
/// NAT maps (two address echoes), so that the first trial is not measured
/// against a half-started wallet.
fn wait_online(wallet_bin: &Path, w: &Wallet, online: &mut Children) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(why) = online.exited() {
            return Err(format!(
                "{why}; log of {}:\n{}",
                w.name,
                tail(&w.dir.join("online.log"))
            ));
        }
        if wallet(wallet_bin, &w.dir, &["links", "--json"])?
            .status
            .success()
        {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "wallet online of {} did not answer within 30 s; its log:\n{}",
                w.name,
                tail(&w.dir.join("online.log"))
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match control(&w.dir, r#"{"op":"status"}"#) {
            Ok(v) if v["mapping"] != "unknown" => return Ok(()),
            Ok(_) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Ok(v) => {
                eprintln!("lab: {}: mapping still unknown after 10 s: {v}", w.name);
                return Ok(());
            }
            Err(e) => {
                eprintln!("lab: {}: status: {e}", w.name);
                return Ok(());
            }
        }
    }
}

/// One request on the online wallet's control socket (as `wallet` makes
/// them: a JSON line, answered by a JSON line).
fn control(dir: &Path, request: &str) -> Result<Value, String> {
    let mut s = UnixStream::connect(dir.join("online.sock")).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("{request}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(line.trim()).map_err(|e| e.to_string())?;
    if v["ok"] == true {
        Ok(v)
    } else {
        Err(v["error"].as_str().unwrap_or("failed").to_string())
    }
}

/// `wallet --dir DIR ARGS` from this namespace (it talks only to DIR's
/// control socket).
fn wallet(wallet_bin: &Path, dir: &Path, args: &[&str]) -> Result<Output, String> {
    run_wallet(Command::new(wallet_bin), dir, args)
}

/// `cmd` (the `wallet` program, maybe inside a namespace) on DIR with ARGS.
fn run_wallet(mut cmd: Command, dir: &Path, args: &[&str]) -> Result<Output, String> {
    cmd.arg("--dir")
        .arg(dir)
        .args(args)
        .env("POS_WALLET_PASSWORD", "")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running wallet: {e}"))
}

/// Whether `dir`'s online wallet lists a link to `name`; `None` if it did
/// not answer.
fn lists(wallet_bin: &Path, dir: &Path, name: &str) -> Option<bool> {
    let out = wallet(wallet_bin, dir, &["links", "--json"]).ok()?;
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(
        v["links"]
            .as_array()?
            .iter()
            .any(|l| l["name"].as_str() == Some(name)),
    )
}

fn run_kind(
    kind: &'static str,
    a: &Wallet,
    b: &Wallet,
    trials: u32,
    wallet_bin: &Path,
    online: &mut Children,
) -> Result<Summary, String> {
    eprintln!(
        "lab: {kind}: {} ({}) and {} ({})",
        a.name, a.host.ns, b.name, b.host.ns
    );
    let (mut direct, mut relayed, mut failed) = (0u32, 0u32, 0u32);
    let (mut reused, mut unnoticed, mut stale) = (0u32, 0u32, 0u32);
    let mut times: Vec<u64> = Vec::new();
    // Reason -> (times seen, first trial); at most 3 kept.
    let mut reasons: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    let mut other_reasons = 0u32;
    let started = Instant::now();
    for t in 0..trials {
        if let Some(why) = online.exited() {
            return Err(format!("{why} during {kind}"));
        }
        if t > 0 {
            std::thread::sleep(TRIAL_GAP);
        }
        // Odd trials the other way round: both directions are measured.
        let (from, to) = if t % 2 == 0 { (a, b) } else { (b, a) };
        let out = wallet(wallet_bin, &from.dir, &["connect", &to.name, "--json"])?;
        let result = if out.status.success() {
            serde_json::from_slice::<Value>(&out.stdout)
                .map_err(|e| format!("connect printed no JSON ({e})"))
        } else {
            let why = stderr_of(&out);
            Err(why.strip_prefix("error: ").unwrap_or(&why).to_string())
        };
        match result {
            Ok(v) => {
                if v.get("reused").is_some() {
                    reused += 1;
                }
                match v["path"].as_str() {
                    Some("direct") => direct += 1,
                    Some("relay") => relayed += 1,
                    other => {
                        return Err(format!("{kind}: connect answered path {other:?}: {v}"));
                    }
                }
                let ms = v["connect_ms"].as_u64().unwrap_or(0);
                times.push(ms);
                if t < 3 || (t + 1) % 10 == 0 {
                    eprintln!(
                        "lab: {kind} {}/{trials} {} -> {}: {} {} ms (punch {} ms, rtt {:.2} ms)",
                        t + 1,
                        from.name,
                        to.name,
                        v["path"].as_str().unwrap_or("?"),
                        ms,
                        v["punch_ms"],
                        v["rtt_ms"].as_f64().unwrap_or(f64::NAN)
                    );
                }
            }
            Err(why) => {
                failed += 1;
                let first = reasons.len() < 3 && !reasons.contains_key(&why);
                if let Some(r) = reasons.get_mut(&why) {
                    r.0 += 1;
                } else if reasons.len() < 3 {
                    reasons.insert(why.clone(), (1, t + 1));
                } else {
                    other_reasons += 1;
                }
                if first || t < 3 || (t + 1) % 10 == 0 {
                    eprintln!(
                        "lab: {kind} {}/{trials} {} -> {}: failed: {why}",
                        t + 1,
                        from.name,
                        to.name
                    );
                }
            }
        }
        // Close the link (if one came up), and wait until the other side
        // has noticed: the next trial is a fresh link. In the lab the
        // close arrives within milliseconds when it is sent at all; after
        // 1 s the other side closes its end too (counted: a close lost on
        // the way would otherwise leave it a dead link until its idle
        // timeout, which the next trial would reuse).
        let _ = wallet(wallet_bin, &from.dir, &["disconnect", &to.name]);
        let closed_at = Instant::now();
        let mut closed_far = false;
        loop {
            let listed = lists(wallet_bin, &to.dir, &from.name);
            match listed {
                Some(false) => break,
                _ if closed_at.elapsed() >= Duration::from_secs(5) => {
                    stale += 1;
                    eprintln!(
                        "lab: {kind} {}/{trials}: 5 s after the disconnect {} {}",
                        t + 1,
                        to.name,
                        if listed.is_some() {
                            format!("still lists {}", from.name)
                        } else {
                            "does not answer `links`".to_string()
                        }
                    );
                    break;
                }
                _ if !closed_far && closed_at.elapsed() >= Duration::from_secs(1) => {
                    closed_far = true;
                    unnoticed += 1;
                    let _ = wallet(wallet_bin, &to.dir, &["disconnect", &from.name]);
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    times.sort_unstable();
    let summary = Summary {
        pair: kind,
        trials,
        direct,
        relayed,
        failed,
        // One attempt per trial, no retries.
        first_try_direct: direct,
        connect_ms_p50: percentile(&times, 50),
        connect_ms_p99: percentile(&times, 99),
    };
    eprintln!(
        "lab: {kind}: done in {:.1} s{}{}{}",
        started.elapsed().as_secs_f64(),
        note(reused, "trials reused a link that was still open"),
        note(
            unnoticed,
            "disconnects the other side had not noticed after 1 s (it closed its end too)"
        ),
        note(
            stale,
            "links still listed by the other side 5 s after the disconnect"
        ),
    );
    for (why, (count, first)) in &reasons {
        eprintln!("lab: {kind}: failure ({count}x, first at trial {first}): {why}");
    }
    if other_reasons > 0 {
        eprintln!("lab: {kind}: {other_reasons} more failures for other reasons");
    }
    Ok(summary)
}

/// "; N WHAT" if N > 0.
fn note(n: u32, what: &str) -> String {
    if n > 0 {
        format!("; {n} {what}")
    } else {
        String::new()
    }
}

/// Nearest-rank percentile of sorted `v`.
fn percentile(v: &[u64], p: usize) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    let rank = (p * v.len()).div_ceil(100).max(1);
    Some(v[rank - 1])
}

fn stderr_of(out: &Output) -> String {
    let s = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if s.is_empty() {
        format!("(no message; {})", out.status)
    } else {
        s
    }
}

/// The last lines of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// `wallet ARGS` for wallet `w`, inside its host (for what needs the
/// network); its JSON answer.
fn wallet_in(
    lab: &Lab,
    ns: &str,
    wallet_bin: &Path,
    dir: &Path,
    args: &[&str],
) -> Result<Value, String> {
    let out = run_wallet(lab.command(ns, wallet_bin), dir, args)?;
    if !out.status.success() {
        return Err(format!("wallet {args:?}: {}", stderr_of(&out)));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("null"))
        .map_err(|e| format!("wallet {args:?}: not JSON: {e}"))
}

/// The swap figure: fund the three swap wallets, issue Y and Z, one room,
/// then `n` three-party cycles, timed.
fn run_swaps(
    lab: &Lab,
    wallet_bin: &Path,
    devnet: &Path,
    ws: &[Wallet],
    n: u32,
) -> Result<String, String> {
    let (a, b, c) = (&ws[0], &ws[1], &ws[2]);
    // The devnet's own wallets were logged in from the peers' namespace.
    for (i, w) in ws.iter().enumerate() {
        let from = devnet.join("wallets").join(format!("w-{i}"));
        wallet_in(
            lab,
            lab.peers_ns(),
            wallet_bin,
            &from,
            &["send", "--to", &w.name, "--amount", "100000000", "--json"],
        )?;
    }
    let issue = |w: &Wallet, name: &str| -> Result<String, String> {
        let v = wallet_in(
            lab,
            &w.host.ns,
            wallet_bin,
            &w.dir,
            &[
                "issue",
                "--name",
                name,
                "--supply",
                "1000000",
                "--precision",
                "0",
                "--json",
            ],
        )?;
        v["asset"]
            .as_str()
            .map(str::to_string)
            .ok_or("no asset id".into())
    };
    let y = issue(b, "ygold")?;
    let z = issue(c, "zsilver")?;
    let room = wallet_in(
        lab,
        &a.host.ns,
        wallet_bin,
        &a.dir,
        &["room", "create", "--json"],
    )?;
    let room = room["room"].as_str().ok_or("no room")?.to_string();
    for w in [b, c] {
        wallet_in(
            lab,
            &w.host.ns,
            wallet_bin,
            &w.dir,
            &["room", "join", &room, "--json"],
        )?;
    }
    let terms = [
        (a, "1000:native".to_string(), format!("1:{y}")),
        (b, format!("1:{y}"), format!("1:{z}")),
        (c, format!("1:{z}"), "1000:native".to_string()),
    ];
    let mut times = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    for i in 0..n {
        // One swap every few seconds, as people trade: back to back, the
        // wallets' syncs exceed their peer's request budget (10 requests
        // a second per wallet, bursts of 50) and are refused.
        if i > 0 {
            std::thread::sleep(Duration::from_secs(3));
        }
        let (t0, outs) = std::thread::scope(|s| {
            let mut hs = Vec::new();
            for (w, give, want) in &terms {
                let room = room.as_str();
                hs.push(s.spawn(move || {
                    wallet_in(
                        lab,
                        &w.host.ns,
                        wallet_bin,
                        &w.dir,
                        &["swap", room, "--give", give, "--want", want, "--json"],
                    )
                }));
            }
            let t0 = Instant::now();
            let outs: Vec<Result<Value, String>> = hs
                .into_iter()
                .map(|h| h.join().unwrap_or(Err("panicked".into())))
                .collect();
            (t0, outs)
        });
        let ms = t0.elapsed().as_millis() as u64;
        match outs.iter().find_map(|o| o.as_ref().err()) {
            None => times.push(ms),
            Some(e) => {
                if reasons.len() < 3 {
                    reasons.push(e.clone());
                }
            }
        }
        eprintln!("lab: swap {}/{n}: {ms} ms", i + 1);
    }
    for r in &reasons {
        eprintln!("lab: swap failed: {r}");
    }
    times.sort_unstable();
    Ok(serde_json::json!({
        "swap_parties": 3,
        "swaps": n,
        "completed": times.len(),
        "swap_ms_p50": percentile(&times, 50),
        "swap_ms_p99": percentile(&times, 99),
    })
    .to_string())
}
