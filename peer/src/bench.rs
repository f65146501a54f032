//! `peer bench`: a fresh local network of real peer processes under load.
//!
//! It funds one genesis output per transaction, signs one transfer each,
//! starts N `peer run` processes on 127.0.0.1, and submits the transfers
//! over wallet links (QUIC, as a wallet would) spread over the peers,
//! keeping `--window` of them in flight (or at `--rate` per second). Each
//! peer tells the submitter when its transactions are final; latency is
//! submission to that notice. The last stdout line is one JSON object.

use crate::devnet;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use dag::identity::{PeerKey, Signer};
use dag::ledger::apply::Outcome;
use dag::ledger::genesis::{Genesis, GenesisOutput};
use dag::ledger::multisig::{sign_local, TX_CONTEXT};
use dag::ledger::output::{output_id, Output, Value};
use dag::ledger::transaction::{Transaction, TxBody};
use dag::ledger::AssetId;
use dag::wire::WalletMessage;
use nat::transport::{LinkSigner, Transport, TransportConfig};
use proofs::Hash;
use schnorrkel::{signing_context, ExpansionMode, Keypair, MiniSecretKey};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct BenchArgs {
    pub peers: usize,
    pub txs: usize,
    /// Transactions in flight at once (closed loop).
    pub window: usize,
    /// Open loop instead: submit this many per second.
    pub rate: Option<u64>,
    /// Give up waiting for finality after this long.
    pub timeout: Duration,
    /// Keep the network's directory here (a temporary one otherwise).
    pub dir: Option<std::path::PathBuf>,
    /// Each peer's `state_cache_mb`, if not the default.
    pub state_cache_mb: Option<u64>,
}

/// Transactions per `Submit` message.
const SUBMIT_BATCH: usize = 64;

fn keypair(i: u64) -> Keypair {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&i.to_le_bytes());
    b[8] = 0xbe;
    MiniSecretKey::from_bytes(&b)
        .expect("32 bytes")
        .expand_to_keypair(ExpansionMode::Ed25519)
}

/// Batch schnorrkel verifications per second on one core, over `secs`.
fn batch_verify_rate(secs: u64) -> f64 {
    let keys: Vec<Keypair> = (0..64).map(|i| keypair(1_000_000 + i)).collect();
    let msgs: Vec<[u8; 32]> = (0..64u8).map(|i| [i; 32]).collect();
    let sigs: Vec<schnorrkel::Signature> = keys
        .iter()
        .zip(&msgs)
        .map(|(k, m)| k.sign(signing_context(TX_CONTEXT).bytes(m)))
        .collect();
    let pubs: Vec<schnorrkel::PublicKey> = keys.iter().map(|k| k.public).collect();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        let ts = msgs.iter().map(|m| signing_context(TX_CONTEXT).bytes(m));
        schnorrkel::verify_batch(ts, &sigs, &pubs, false).expect("valid batch");
        n += sigs.len() as u64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn free_base_port(n: u16) -> u16 {
    let mut p = 30_000 + (std::process::id() % 20_000) as u16;
    loop {
        if (0..n).all(|i| UdpSocket::bind(("127.0.0.1", p + i)).is_ok()) {
            return p;
        }
        p = 30_000 + (p - 30_000 + 131) % 20_000;
    }
}

/// CPU time (user and system) process `pid` has used, in seconds (0 if
/// unknown): fields 14 and 15 of `/proc/PID/stat`, in clock ticks.
fn cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; fields after it are plain.
    let Some(rest) = s.rfind(')').map(|i| &s[i + 1..]) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|x| x.parse::<f64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        ticks / hz as f64
    } else {
        0.0
    }
}

fn peak_rss_mb(pid: u32) -> f64 {
    proc_status_mb(pid, "VmHWM:")
}

/// A `/proc/PID/status` figure given in kB, in MB (0 if unknown).
fn proc_status_mb(pid: u32, field: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.peers == 0 || args.txs == 0 {
        bail!("--peers and --txs must be positive");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The ceiling is measured around the run (1 s before, 1 s after, on an
    // otherwise idle machine) and averaged, so a shared machine's drift in
    // speed during the run weighs on both sides of the ratio alike.

    let tmp = tempfile::tempdir()?;
    let root = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let base = free_base_port(args.peers as u16);
    eprintln!("deriving {} keys…", args.txs);
    let keys: Vec<Keypair> = (0..args.txs as u64).map(keypair).collect();
    let pk = |i: usize| PeerKey(keys[i % keys.len()].public.to_bytes());
    let host_names: Vec<String> = (0..args.peers).map(|i| format!("peer-{i}")).collect();
    let extra: Vec<GenesisOutput> = (0..args.txs)
        .map(|i| GenesisOutput {
            owner: pk(i),
            amount: 1_000,
            host: host_names[i % args.peers].clone(),
        })
        .collect();
    let dirs = devnet::prepare_with(
        &root,
        args.peers,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        base,
        extra,
        None,
    )?;
    if let Some(mb) = args.state_cache_mb {
        for dir in &dirs {
            let path = dir.join("config.toml");
            let mut cfg = crate::config::Config::load(&path)?;
            cfg.state_cache_mb = mb;
            cfg.check()?;
            std::fs::write(&path, cfg.to_toml())?;
        }
    }
    let genesis = Genesis::from_json(&std::fs::read(root.join("genesis.json"))?)?;
    let chain = genesis.chain_id();
    let first = devnet::TEST_WALLETS as u32;

    eprintln!("signing {} transfers…", args.txs);
    let peer_keys: Vec<PeerKey> = genesis.peers.iter().map(|p| p.key).collect();
    let sign = |i: usize| -> Vec<u8> {
        let mut body = TxBody {
            chain,
            inputs: vec![output_id(&chain, first + i as u32)],
            outputs: vec![Output {
                owner: pk(i + 1),
                asset: AssetId::NATIVE,
                value: Value::Amount(1_000),
                host: Some(peer_keys[(i + 1) % peer_keys.len()]),
            }],
            actions: vec![],
            fee: 0,
            memo: None,
            signers: vec![],
            aggregate: PeerKey([0; 32]),
        };
        body.set_signers([pk(i)]).expect("one signer");
        let (_, _, signature) = sign_local(&[&keys[i]], &body.id()).expect("signing");
        Transaction { body, signature }.encode()
    };
    let mut txs: Vec<Vec<u8>> = vec![Vec::new(); args.txs];
    std::thread::scope(|s| {
        let chunk = args.txs.div_ceil(cores);
        for (c, slots) in txs.chunks_mut(chunk).enumerate() {
            let sign = &sign;
            s.spawn(move || {
                for (j, slot) in slots.iter_mut().enumerate() {
                    *slot = sign(c * chunk + j);
                }
            });
        }
    });
    let ids: Vec<Hash> = txs
        .iter()
        .map(|b| {
            proofs::decode::<Transaction>(b, usize::MAX)
                .expect("own encoding")
                .id()
        })
        .collect();

    // Measured once the process is warm: right after start, glibc's heap
    // grows and faults in pages under the verifier's allocations and the
    // rate reads ~15% low (measured: 42–46k/s cold, 51–54k/s warm), which
    // would flatter the ratio to it.
    eprintln!("measuring batch verification on one core…");
    let rate_before = batch_verify_rate(1);
    eprintln!("starting {} peers…", args.peers);
    let exe = std::env::current_exe()?;
    let mut children = Children(Vec::new());
    for dir in &dirs {
        children.0.push(devnet::spawn_peer(&exe, dir, false)?);
    }
    wait_started(&dirs, Duration::from_secs(30))?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    // Resident memory over the run, every 30 s: the largest peer's RSS and
    // its anonymous part (the rest is LMDB's file pages, which the kernel
    // reclaims at will).
    let pids: Vec<u32> = children.0.iter().map(|c| c.id()).collect();
    let sampler_pids = pids.clone();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        let pids = sampler_pids;
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut samples: Vec<(u64, f64, f64)> = Vec::new();
            let mut next = Duration::ZERO;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if start.elapsed() >= next {
                    let max = |f: &str| {
                        pids.iter()
                            .map(|p| proc_status_mb(*p, f))
                            .fold(0.0, f64::max)
                    };
                    samples.push((start.elapsed().as_secs(), max("VmRSS:"), max("RssAnon:")));
                    next += Duration::from_secs(30);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            samples
        })
    };
    let cpu_before: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum();
    let result = rt.block_on(load(&args, &genesis, txs, &ids));
    let cpu_load: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>() - cpu_before;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let samples = sampler.join().unwrap_or_default();
    let result = result?;
    // Own events the peers had to propose again (see the core's requeue),
    // and what they dropped, by reason, summed over the peers.
    let statuses: Vec<crate::admin::Status> = dirs
        .iter()
        .filter_map(|d| crate::admin::query(d).ok())
        .collect();
    if result.finalized + result.rejected < args.txs {
        // What each peer says, to tell where the missing transactions are.
        for s in &statuses {
            eprintln!(
                "{}: height {} round {} lag {} mempool {} applied {} rejected {} requeued {} drops {:?}",
                s.name,
                s.height,
                s.round,
                s.lag_rounds,
                s.mempool_txs,
                s.txs_applied,
                s.txs_rejected,
                s.events_requeued,
                s.drops
            );
        }
    }
    let requeued: u64 = statuses.iter().map(|s| s.events_requeued).sum();
    let height = statuses.iter().map(|s| s.height).max().unwrap_or(0);
    let mut drops: std::collections::BTreeMap<String, u64> = Default::default();
    for (k, v) in statuses.iter().flat_map(|s| s.drops.iter()) {
        if *v > 0 {
            *drops.entry(k.clone()).or_default() += v;
        }
    }
    let peak = children
        .0
        .iter()
        .map(|c| peak_rss_mb(c.id()))
        .fold(0.0, f64::max);
    drop(children);
    let rate_after = batch_verify_rate(1);
    let batch_rate = (rate_before + rate_after) / 2.0;
    let ceiling = batch_rate * cores as f64 / args.peers as f64;

    let mut lat = result.latencies_ms;
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        lat[((lat.len() - 1) as f64 * p).round() as usize]
    };
    let tps = result.finalized as f64 / result.elapsed.as_secs_f64();
    eprintln!(
        "finalized {} of {} in {:.2} s: {:.0} tx/s ({:.0}% of the ceiling {:.0}); p50 {:.1} ms, p99 {:.1} ms",
        result.finalized,
        args.txs,
        result.elapsed.as_secs_f64(),
        tps,
        100.0 * tps / ceiling,
        ceiling,
        pct(0.5),
        pct(0.99)
    );
    println!(
        "{}",
        serde_json::json!({
            "peers": args.peers,
            "txs": args.txs,
            "finalized": result.finalized,
            "rejected": result.rejected,
            "finalized_tx_per_sec": tps.round(),
            "latency_ms_p50": (pct(0.5) * 10.0).round() / 10.0,
            "latency_ms_p99": (pct(0.99) * 10.0).round() / 10.0,
            "verify_ceiling_tx_per_sec": ceiling.round(),
            "batch_verify_per_sec_one_core": batch_rate.round(),
            "batch_verify_per_sec_before_after": [rate_before.round(), rate_after.round()],
            "cores": cores,
            "peak_rss_mb_per_peer": (peak * 10.0).round() / 10.0,
            "height": height,
            "cpu_us_per_tx_per_peer": (cpu_load * 1e6 / result.finalized.max(1) as f64 / args.peers as f64 * 10.0).round() / 10.0,
            "events_requeued": requeued,
            "peer_drops": drops,
            "rss_mb_samples": samples
                .iter()
                .map(|(t, rss, anon)| serde_json::json!([t, rss.round(), anon.round()]))
                .collect::<Vec<_>>(),
            "mode": match args.rate { Some(r) => format!("rate {r}/s"), None => format!("window {}", args.window) },
        })
    );
    Ok(())
}

fn wait_started(dirs: &[std::path::PathBuf], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    for dir in dirs {
        loop {
            if crate::admin::query(dir).is_ok_and(|s| s.peers_connected + 1 >= dirs.len()) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "peer of {} did not come up; see its peer.log",
                    dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

struct LoadResult {
    finalized: usize,
    rejected: usize,
    elapsed: Duration,
    latencies_ms: Vec<f64>,
}

async fn load(
    args: &BenchArgs,
    genesis: &Genesis,
    txs: Vec<Vec<u8>>,
    ids: &[Hash],
) -> Result<LoadResult> {
    let chain = genesis.chain_id();
    let client: Arc<dyn LinkSigner> =
        Arc::new(Mutex::new(Signer::from_seed(rand_secret(), rand_secret())));
    let (transport, _raw) = Transport::bind(
        TransportConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), chain),
        client,
        Arc::new(|_: &PeerKey| true),
    )
    .await?;
    let mut links = Vec::new();
    for p in &genesis.peers {
        links.push(
            transport
                .connect(p.addr, p.key)
                .await
                .with_context(|| format!("connecting to {}", p.name))?,
        );
    }
    let sent_at: Arc<Mutex<HashMap<Hash, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(Hash, Outcome, Instant)>();
    let finishing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for (link, peer) in links.iter().zip(&genesis.peers) {
        let link = link.clone();
        let done_tx = done_tx.clone();
        let name = peer.name.clone();
        let finishing = finishing.clone();
        tokio::spawn(async move {
            while let Some(frame) = link.recv().await {
                let now = Instant::now();
                match WalletMessage::decode(&frame) {
                    Ok(WalletMessage::Finalized(list)) => {
                        for (id, _, outcome) in list {
                            let _ = done_tx.send((id, outcome, now));
                        }
                    }
                    Ok(WalletMessage::Submitted(list)) => {
                        for (id, err) in list {
                            if let Some(e) = err {
                                tracing::warn!(%id, "submission refused: {e}");
                                let _ = done_tx.send((
                                    id,
                                    Outcome::Rejected(dag::ledger::apply::Rejection::Malformed),
                                    now,
                                ));
                            }
                        }
                    }
                    _ => {}
                }
            }
            // Notices for what is still in flight through this peer are
            // lost with the link: say so rather than only time out.
            if !finishing.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(reason) = link.close_reason() {
                    eprintln!("the wallet link to {name} closed: {reason}");
                }
            }
        });
    }
    drop(done_tx);

    let total = txs.len();
    let mut next = 0usize;
    let mut in_flight = 0usize;
    let mut finalized = 0usize;
    let mut rejected = 0usize;
    let mut latencies = Vec::with_capacity(total);
    let start = Instant::now();
    let mut last_final = start;
    let deadline = start + args.timeout;
    let mut round_robin = 0usize;
    while finalized + rejected < total {
        // Submit while the window (or the rate) allows.
        let allowed = match args.rate {
            None => args.window.saturating_sub(in_flight),
            Some(r) => {
                let due = (start.elapsed().as_secs_f64() * r as f64) as usize;
                due.saturating_sub(next)
            }
        };
        let mut budget = allowed.min(total - next);
        while budget > 0 {
            let n = budget.min(SUBMIT_BATCH);
            let batch: Vec<Vec<u8>> = txs[next..next + n].to_vec();
            {
                let now = Instant::now();
                let mut s = sent_at.lock().unwrap_or_else(|p| p.into_inner());
                for id in &ids[next..next + n] {
                    s.insert(*id, now);
                }
            }
            let which = round_robin % links.len();
            round_robin += 1;
            let frame = Bytes::from(WalletMessage::Submit(batch).encode());
            // A peer that stops reading its wallet link must not hang the
            // bench past its deadline.
            match tokio::time::timeout_at(deadline.into(), links[which].send_wait(frame)).await {
                Ok(sent) => sent.context("a peer closed its wallet link")?,
                Err(_) => {
                    eprintln!(
                        "timed out: {} stopped taking submissions ({} of {total} sent)",
                        genesis.peers[which].name, next
                    );
                    break;
                }
            }
            next += n;
            in_flight += n;
            budget -= n;
        }
        let wait = tokio::time::timeout(Duration::from_millis(20), done_rx.recv()).await;
        let mut take = |(id, outcome, at): (Hash, Outcome, Instant)| {
            let Some(t0) = sent_at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id)
            else {
                return;
            };
            in_flight -= 1;
            last_final = last_final.max(at);
            match outcome {
                Outcome::Applied => {
                    finalized += 1;
                    latencies.push(at.duration_since(t0).as_secs_f64() * 1000.0);
                }
                Outcome::Rejected(_) => rejected += 1,
            }
        };
        if let Ok(Some(d)) = wait {
            take(d);
            while let Ok(d) = done_rx.try_recv() {
                take(d);
            }
        }
        if Instant::now() > deadline {
            eprintln!("timed out with {} of {total} final", finalized + rejected);
            break;
        }
    }
    finishing.store(true, std::sync::atomic::Ordering::Relaxed);
    transport.close().await;
    Ok(LoadResult {
        finalized,
        rejected,
        elapsed: last_final.duration_since(start),
        latencies_ms: latencies,
    })
}

fn rand_secret() -> [u8; 32] {
    use rand_core::RngCore;
    let mut b = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut b);
    b
}
