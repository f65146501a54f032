//! `peer`: the Proof of Share peer daemon and its operator commands.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use peer::{admin, config::Config, devnet, keys};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Child;

#[derive(Parser, Debug)]
#[command(
    name = "peer",
    version,
    about = "Proof of Share peer: gossips the blockdag over QUIC, keeps the chain in LMDB, serves wallets"
)]
struct Cli {
    /// Log format on stderr (the level comes from RUST_LOG, default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a peer directory: an identity key and config.toml.
    Init {
        /// The directory to create (must not hold a key yet).
        #[arg(long)]
        dir: PathBuf,
        /// The peer's name on chain (2..=32 of a-z, 0-9, '-').
        #[arg(long)]
        name: String,
        /// The UDP address to listen on, IP:PORT.
        #[arg(long)]
        listen: SocketAddr,
        /// A genesis file to copy into the directory.
        #[arg(long)]
        genesis: Option<PathBuf>,
    },
    /// Run the peer of a directory until interrupted.
    Run {
        /// The peer's directory (config.toml, identity.key, genesis, db).
        #[arg(long, required_unless_present = "config")]
        dir: Option<PathBuf>,
        /// A config file; the directory is the one holding it.
        #[arg(long, conflicts_with = "dir")]
        config: Option<PathBuf>,
    },
    /// Ask the running peer of a directory for its status.
    Status {
        #[arg(long)]
        dir: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Instead of the status, the roots the peer stored for this height
        /// (JSON; `null` if it has not committed it).
        #[arg(long)]
        height: Option<u64>,
    },
    /// Load test: a fresh local network of N peer processes, T signed
    /// transfers submitted over wallet links; prints one JSON line last
    /// (throughput, latency percentiles, the signature-verification
    /// ceiling, peak RSS, `rss_mb_samples`: [seconds, largest peer's
    /// RSS MB, its anonymous part MB] every 30 s of the load,
    /// `cpu_us_per_tx_per_peer`: the peers' CPU time during the load per
    /// finalized transaction and peer, the final `height`, and the peers'
    /// `events_requeued` and `peer_drops` by reason).
    Bench {
        #[arg(long, default_value_t = 4)]
        peers: usize,
        #[arg(long, default_value_t = 20_000)]
        txs: usize,
        /// Transactions in flight at once (the highest rate the network
        /// accepts is found by keeping this many outstanding; with fewer,
        /// four peers on two cores idle between heights).
        #[arg(long, default_value_t = 8_000)]
        window: usize,
        /// Submit at this many per second instead (open loop).
        #[arg(long)]
        rate: Option<u64>,
        /// Seconds to wait for everything to be final (default: 300, plus
        /// the submission time `txs / rate` in open loop).
        #[arg(long)]
        timeout: Option<u64>,
        /// Keep the network's directory (logs) here instead of a temporary one.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Each peer's `state_cache_mb` (default: the config's default).
        #[arg(long)]
        state_cache_mb: Option<u64>,
        /// Accepted for symmetry with other commands; the last stdout line is
        /// always the JSON result.
        #[arg(long)]
        json: bool,
    },
    /// Start a local network: a fresh genesis (or the one in --dir), N peer
    /// processes on one address, funded test keys, and (when the `wallet`
    /// program is next to this one) funded wallets D/wallets/w-0 … w-3,
    /// empty password, logged in as w-i@peer-(i mod N). Runs until Ctrl-C;
    /// running it again on the same --dir resumes the same chain.
    Devnet {
        #[arg(long, default_value_t = 4)]
        peers: usize,
        #[arg(long, default_value = "devnet")]
        dir: PathBuf,
        /// The address every peer binds (the NAT lab uses 203.0.113.10).
        #[arg(long, default_value = "127.0.0.1")]
        bind: IpAddr,
        /// Peer i listens on UDP port base_port + i.
        #[arg(long, default_value_t = 7000)]
        base_port: u16,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Cmd::Init {
            dir,
            name,
            listen,
            genesis,
        } => init(&dir, &name, listen, genesis.as_deref()),
        Cmd::Run { dir, config } => {
            let (dir, cfg_path) = match (dir, config) {
                (Some(d), _) => (d.clone(), d.join("config.toml")),
                (None, Some(c)) => (
                    c.parent()
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|| PathBuf::from(".")),
                    c,
                ),
                (None, None) => bail!("give --dir or --config"),
            };
            let cfg = Config::load(&cfg_path)?;
            peer::node::run(dir, cfg)
        }
        Cmd::Status { dir, json, height } => {
            let text = if let Some(h) = height {
                format!("{}\n", admin::query_height(&dir, h)?)
            } else {
                let s = admin::query(&dir)?;
                if json {
                    format!("{}\n", serde_json::to_string(&s)?)
                } else {
                    admin::render(&s)
                }
            };
            print_out(&text)
        }
        Cmd::Devnet {
            peers,
            dir,
            bind,
            base_port,
        } => run_devnet(&dir, peers, bind, base_port, cli.log_format),
        Cmd::Bench {
            peers,
            txs,
            window,
            rate,
            timeout,
            dir,
            state_cache_mb,
            json: _,
        } => peer::bench::run(peer::bench::BenchArgs {
            peers,
            txs,
            window,
            rate,
            timeout: std::time::Duration::from_secs(
                timeout
                    .unwrap_or_else(|| 300 + rate.map_or(0, |r| (txs as u64).div_ceil(r.max(1)))),
            ),
            dir,
            state_cache_mb,
        }),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn init(dir: &Path, name: &str, listen: SocketAddr, genesis: Option<&Path>) -> Result<()> {
    let cfg = Config::new(name, listen);
    cfg.check()?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let secret = keys::create(dir)?;
    let cfg_path = dir.join("config.toml");
    if cfg_path.exists() {
        bail!("{} exists already", cfg_path.display());
    }
    std::fs::write(&cfg_path, cfg.to_toml())?;
    if let Some(g) = genesis {
        let bytes = std::fs::read(g).with_context(|| format!("reading {}", g.display()))?;
        dag::ledger::genesis::Genesis::from_json(&bytes)?;
        std::fs::write(dir.join("genesis.json"), bytes)?;
    }
    let key = keys::signer(secret).key();
    println!("created peer {name} in {}", dir.display());
    println!("identity key {key}");
    println!("listen       {listen}");
    if genesis.is_none() {
        println!(
            "next: put the chain's genesis.json in {} and run `peer run --dir {}`",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

fn run_devnet(
    root: &Path,
    peers: usize,
    bind: IpAddr,
    base_port: u16,
    log_format: LogFormat,
) -> Result<()> {
    let exe = std::env::current_exe().context("finding the peer executable")?;
    // The wallet program built next to this one makes the funded wallets.
    let wallet_exe = exe.with_file_name("wallet");
    let wallet_exe = wallet_exe.exists().then_some(wallet_exe);
    if !root.join("genesis.json").exists() && wallet_exe.is_none() {
        eprintln!(
            "note: no `wallet` program next to {}: the devnet gets no wallets \
             (build it first: cargo build --release)",
            exe.display()
        );
    }
    let dirs = devnet::prepare_with(
        root,
        peers,
        bind,
        base_port,
        Vec::new(),
        wallet_exe.as_deref(),
    )?;
    let mut children: Vec<Child> = Vec::new();
    for dir in &dirs {
        children.push(devnet::spawn_peer(
            &exe,
            dir,
            matches!(log_format, LogFormat::Json),
        )?);
    }
    println!("devnet of {peers} peers in {}", root.display());
    for (i, dir) in dirs.iter().enumerate() {
        let cfg = Config::load(&dir.join("config.toml"))?;
        println!(
            "  {}  udp {}  status: peer status --dir {}  log: {}",
            cfg.name,
            cfg.listen,
            dir.display(),
            dir.join("peer.log").display()
        );
        let _ = i;
    }
    println!(
        "test wallets (secrets, test money only): {}",
        root.join("test-wallets.json").display()
    );
    let dev_wallets = devnet::wallets(root)?;
    if let (Some(exe), false) = (&wallet_exe, dev_wallets.is_empty()) {
        // Logged in once the peers certify their first checkpoint.
        match devnet::login_wallets(exe, root, std::time::Duration::from_secs(60)) {
            Ok(_) => {}
            Err(e) => eprintln!("logging the wallets in: {e:#}"),
        }
        println!(
            "wallets (empty password; phrases in {}):",
            root.join(devnet::WALLETS_FILE).display()
        );
        for w in &dev_wallets {
            println!(
                "  {:<14} wallet --dir {} balance",
                w.login(),
                w.dir.display()
            );
        }
    }
    println!(
        "a new wallet logs in with `wallet login NAME@peer-0 --genesis {}` (peer-0 at {})",
        root.join("genesis.json").display(),
        SocketAddr::new(bind, base_port)
    );
    println!("Ctrl-C stops the network; running this again resumes it.");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = tick.tick() => {
                    for (i, c) in children.iter_mut().enumerate() {
                        if let Ok(Some(status)) = c.try_wait() {
                            eprintln!("peer-{i} exited ({status}); see {}", dirs[i].join("peer.log").display());
                            return Err(anyhow::anyhow!("peer-{i} exited"));
                        }
                    }
                }
            }
        }
        Ok(())
    })
    .inspect_err(|_| stop(&mut children))?;
    stop(&mut children);
    println!("stopped");
    Ok(())
}

fn stop(children: &mut [Child]) {
    for c in children.iter_mut() {
        // SIGTERM would be gentler, but the peer is built to survive kill -9.
        let _ = c.kill();
    }
    for c in children.iter_mut() {
        let _ = c.wait();
    }
}

/// Print to stdout; a reader that went away (`peer status | head`) ends
/// the output quietly instead of with a panic.
fn print_out(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout"),
    }
}
