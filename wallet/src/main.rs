//! `wallet`: the Proof of Share wallet's command line.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use dag::ledger::names::WalletName;
use dag::ledger::owner_keys::KeyPurpose;
use dag::ledger::AssetId;
use serde_json::json;
use wallet::chain::{ChainState, GENESIS_FILE};
use wallet::dir::{DirError, KEYSTORE_FILE};
use wallet::state_lock::StateLock;
use wallet::{control, session};
use wallet::{KdfParams, Phrase, WalletDir};
use zeroize::Zeroizing;

/// The environment variable holding the password (second source).
const PASSWORD_ENV: &str = "POS_WALLET_PASSWORD";

/// The wallet directory under `$HOME` when `--dir` is not given.
const DEFAULT_DIR: &str = ".pos-wallet";

/// The most bytes of standard input taken as a phrase: far more than 24
/// words, so a wrong pipe is refused instead of read forever.
const MAX_PHRASE_INPUT: u64 = 4096;

#[derive(Parser, Debug)]
#[command(
    name = "wallet",
    version,
    about = "Proof of Share wallet: logs in to a peer as name@peer, proves every balance it shows, pays, stakes and issues assets; keys from a seed phrase in a password-encrypted keystore",
    after_help = "The password comes from --password-file FILE (its first line), else the \
                  POS_WALLET_PASSWORD environment variable, else a prompt on the terminal \
                  (asked twice when a keystore is written). An empty password is allowed."
)]
struct Cli {
    /// The wallet directory [default: $HOME/.pos-wallet].
    #[arg(long, global = true, value_name = "W")]
    dir: Option<PathBuf>,
    /// Read the password from the first line of FILE.
    #[arg(long, global = true, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Log format on stderr (the level comes from RUST_LOG, default warn).
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
enum RoomCmd {
    /// Open a room owned by this wallet; prints its name, NAME@PEER/ID.
    Create {
        /// One JSON object {"room"}.
        #[arg(long)]
        json: bool,
    },
    /// Join a room (links to its owner first).
    Join {
        room: String,
        /// One JSON object {"members"}.
        #[arg(long)]
        json: bool,
    },
    /// The room's members and each one's link to the owner.
    Members {
        room: String,
        /// One JSON object {"members":[{"name","path"}]}.
        #[arg(long)]
        json: bool,
    },
    /// Invite a wallet this one is linked with (`wallet connect`) into
    /// ROOM, which this wallet owns or has joined. The invitation, and
    /// later the introduction to the room's owner, go over the wallets'
    /// own links: no peer takes part.
    Invite {
        /// `NAME@PEER/ID`.
        room: String,
        /// The wallet to invite, `login@peer`.
        #[arg(long)]
        to: String,
        /// One JSON object {"id","room","to"}.
        #[arg(long)]
        json: bool,
    },
    /// Invitations this wallet received (kept 10 minutes, at most 64).
    Invites {
        /// One JSON object {"invites":[{"id","room","from","owner","age_s"}]}.
        #[arg(long)]
        json: bool,
    },
    /// Accept invitation ID: link directly to the room's owner (the two
    /// halves of the attempt pass over the inviter's links, not through
    /// any peer) and join the room. Without a peer there is no relay: if
    /// no direct path works, this fails.
    Accept {
        /// The invitation's id (32 hex digits, from `room invites`).
        id: String,
        /// One JSON object {"room","joined","path","members",…}.
        #[arg(long)]
        json: bool,
    },
    /// Leave a room (the owner closes it).
    Leave { room: String },
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Make a new wallet: a fresh 24-word seed phrase, encrypted under a
    /// password in W/keystore. Prints the phrase once: write it down.
    Create {
        /// One JSON object {"dir", "login_key", "phrase"} instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Make a wallet from an existing seed phrase, read from standard input
    /// (one line, or words over several lines).
    Restore {
        /// One JSON object {"dir", "login_key"} instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Open the keystore (asks for the password) and show the login key and
    /// the first receive keys.
    Keys {
        /// How many receive keys to show.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=1000))]
        receive: u64,
        /// One JSON object {"dir", "login_key", "receive_keys"} instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Log in to a peer as NAME@PEER: the peer registers the name for this
    /// wallet's login key (and vouches for it with its signature), then the
    /// wallet syncs its outputs, checking every proof.
    Login {
        /// login@peer: the login name (2–32 of a-z 0-9 -) and the peer's name.
        name: String,
        /// The chain's genesis file (copied into W; needed on the first login).
        #[arg(long, value_name = "FILE")]
        genesis: Option<PathBuf>,
        /// Reach the peer at this address instead of the genesis's.
        #[arg(long, value_name = "IP:PORT")]
        via: Option<std::net::SocketAddr>,
        /// One JSON object (as `balance --json`) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Sync with the peer (every answer checked) and show the balance per
    /// asset, with the height and state root it is proven at.
    Balance {
        /// Show what is stored, without asking the peer.
        #[arg(long, conflicts_with = "witness")]
        offline: bool,
        /// Also check the proven state against this peer's (repeatable):
        /// both must lie on one certified history.
        #[arg(long, value_name = "PEER")]
        witness: Vec<String>,
        /// One JSON object {"name","peer","height","root","assets":{ASSET:{"amount","outputs"}}}.
        #[arg(long)]
        json: bool,
    },
    /// Pay NAME@PEER: spends enough of this wallet's outputs in one
    /// transaction (one MuSig signature) to a fresh key of the payee, waits
    /// for finality and prints the height. When this wallet is online
    /// (`wallet online` on this directory) and so is the payee, the key
    /// comes from the payee over a direct link (punched, or relayed by
    /// peers), signed by its login key, and the payee gets the transaction
    /// and its inclusion proof over the same link; otherwise the key is
    /// one the payee left signed with its peer (a prekey).
    Send {
        /// The payee, login@peer.
        #[arg(long, value_name = "NAME@PEER")]
        to: String,
        /// In base units of the asset (the native asset has 6 decimals).
        #[arg(long, required_unless_present = "item")]
        amount: Option<u128>,
        /// The asset id (64 hex digits); the native asset by default.
        #[arg(long)]
        asset: Option<String>,
        /// Send this unique item (64 hex digits) of --asset instead of an amount.
        #[arg(long, conflicts_with = "amount")]
        item: Option<String>,
        /// Seconds to wait for finality before naming the peer as having
        /// dropped the transaction.
        #[arg(long, default_value_t = 60)]
        wait: u64,
        /// One JSON object {"tx","height","outcome","path"}: path "direct"
        /// or "relay" (the link that carried the key, and "delivered": the
        /// payee took the proof), or "prekey".
        #[arg(long)]
        json: bool,
    },
    /// Issue a new asset: fungible with a fixed supply (or mintable), or
    /// unique items (--unique, always mintable: minted one by one with
    /// `mint --item`).
    Issue {
        #[arg(long)]
        name: String,
        /// Base units created now (fungible assets).
        #[arg(long, default_value_t = 0)]
        supply: u128,
        /// Decimal places for display (fungible assets).
        #[arg(long, default_value_t = 0)]
        precision: u8,
        /// The issuer (this wallet) may mint more later.
        #[arg(long)]
        mintable: bool,
        /// An asset of unique items instead of amounts.
        #[arg(long, conflicts_with_all = ["supply", "precision"])]
        unique: bool,
        #[arg(long, default_value_t = 60)]
        wait: u64,
        /// One JSON object {"tx","height","outcome","asset"}.
        #[arg(long)]
        json: bool,
    },
    /// Mint more of an asset this wallet issued: an amount, or one item.
    Mint {
        #[arg(long)]
        asset: String,
        #[arg(long, required_unless_present = "item")]
        amount: Option<u128>,
        /// The new item's id (64 hex digits).
        #[arg(long, conflicts_with = "amount")]
        item: Option<String>,
        #[arg(long, default_value_t = 60)]
        wait: u64,
        #[arg(long)]
        json: bool,
    },
    /// Destroy an amount of an asset this wallet holds, or one item.
    Burn {
        #[arg(long)]
        asset: String,
        #[arg(long, required_unless_present = "item")]
        amount: Option<u128>,
        #[arg(long, conflicts_with = "amount")]
        item: Option<String>,
        #[arg(long, default_value_t = 60)]
        wait: u64,
        #[arg(long)]
        json: bool,
    },
    /// What happened to this wallet: outputs received and its own
    /// transactions, by height, as of its last sync (offline).
    History {
        /// One JSON array of {"height","what","tx","output","asset","amount"|"item"}.
        #[arg(long)]
        json: bool,
    },
    /// Write a receipt of one of this wallet's transactions: the
    /// transaction with its inclusion proof under a certified checkpoint,
    /// which anyone can check from the genesis alone (`verify-receipt`).
    Receipt {
        /// The transaction id (as `send` printed it).
        tx: String,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Check a receipt from the genesis alone; needs no wallet.
    VerifyReceipt {
        file: PathBuf,
        #[arg(long, value_name = "FILE")]
        genesis: PathBuf,
        /// One JSON object {"ok","tx","height","outcome","outputs":[…]}.
        #[arg(long)]
        json: bool,
    },
    /// The unique items this wallet holds, as of its last sync (offline).
    Items {
        /// One JSON object {ASSET: [ITEM, …]}.
        #[arg(long)]
        json: bool,
    },
    /// Show the name to give payers (and the first receive key), offline.
    Receive {
        /// One JSON object {"name","login_key","receive_key"}.
        #[arg(long)]
        json: bool,
    },
    /// Move native money to be hosted by PEER: the wallet's stake, which
    /// weighs that peer in the committee from the next snapshot on.
    Stake {
        /// The peer's name.
        #[arg(long, value_name = "PEER")]
        host: String,
        /// In base units (all native money by default).
        #[arg(long)]
        amount: Option<u128>,
        /// Seconds to wait for finality.
        #[arg(long, default_value_t = 60)]
        wait: u64,
        /// One JSON object {"tx","height","outcome"}.
        #[arg(long)]
        json: bool,
    },
    /// Stay logged in and reachable by other wallets (foreground; Ctrl-C
    /// stops it): payers reach it over direct links, and hand it fresh
    /// keys' payments with their proofs. Subscribed to the wallet's keys
    /// at its peer, it syncs (with proofs) and stores incoming outputs as
    /// they become final. Commands that need it (`connect`, `links`,
    /// rooms, swaps; `send` uses it when it runs) talk to it through
    /// W/online.sock.
    Online,
    /// Open a direct link to another online wallet: rendezvous through the
    /// peers, hole punching, then QUIC authenticated by both login keys.
    /// Needs `wallet online` running on this directory.
    Connect {
        /// `login@peer`.
        to: String,
        /// One JSON object {"name","key","path","addr","socket","punch_ms","connect_ms","rtt_ms"}.
        #[arg(long)]
        json: bool,
    },
    /// Close the online wallet's link to another wallet.
    Disconnect {
        /// `login@peer`.
        from: String,
    },
    /// Rooms: wallets linked to one owner, where swaps are agreed; a
    /// member can invite a wallet it is linked with. Needs `wallet online`.
    Room {
        #[command(subcommand)]
        cmd: RoomCmd,
    },
    /// Offer a swap in ROOM (every party runs this against its own online
    /// wallet). When the room's offers balance, the owner builds ONE
    /// transaction, every party checks it gives exactly what it offered
    /// (and its fee share) and gets what it wants, all sign it together (one
    /// MuSig signature over the parties' links), and it is submitted; this
    /// waits for finality. The transaction's fee is the sum of the shares.
    Swap {
        /// `NAME@PEER/ID`.
        room: String,
        /// `AMOUNT:ASSET`, ASSET an asset id or `native`.
        #[arg(long)]
        give: String,
        #[arg(long)]
        want: String,
        /// This party's share of the fee, in native money (from its
        /// native outputs).
        #[arg(long, default_value_t = 0)]
        fee: u128,
        /// Seconds to wait for the other parties and finality.
        #[arg(long, default_value_t = 120)]
        wait: u64,
        /// One JSON object {"txid","height","parties","gave","got","fee"}.
        #[arg(long)]
        json: bool,
    },
    /// The online wallet's links to other wallets.
    Links {
        /// One JSON object {"links":[{"name","path","addr","since_s"}]}.
        #[arg(long)]
        json: bool,
    },
    /// The committees the wallet derived from genesis through the certified
    /// hand-overs it holds (one per snapshot): each peer's stake, offline.
    Committee {
        /// One JSON object {"committees":[{"snapshot","total","members":[{"peer","key","stake"}]}]}.
        #[arg(long)]
        json: bool,
    },
    /// Re-check every stored proof and the committee chain from genesis,
    /// without the network.
    Verify {
        /// One JSON object {"ok","height","outputs_checked","handovers"}.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The cause chain on one line; no backtrace, even with
            // RUST_BACKTRACE set, since the reader is a wallet user.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let dir = match cli.dir {
        Some(d) => d,
        None => default_dir()?,
    };
    let password = PasswordSource::choose(cli.password_file)?;
    match cli.command {
        Cmd::Create { json } => create(&dir, &password, json),
        Cmd::Restore { json } => restore(&dir, &password, json),
        Cmd::Keys { receive, json } => keys(&dir, &password, receive, json),
        Cmd::Login {
            name,
            genesis,
            via,
            json,
        } => login(&dir, &password, &name, genesis, via, json),
        Cmd::Balance {
            offline,
            witness,
            json,
        } => balance(&dir, &password, offline, &witness, json),
        Cmd::Verify { json } => verify(&dir, json),
        Cmd::Committee { json } => committee(&dir, json),
        Cmd::Online => online(&dir, &password),
        Cmd::Connect { to, json } => connect(&dir, &to, json),
        Cmd::Links { json } => links(&dir, json),
        Cmd::Room { cmd } => room(&dir, cmd),
        Cmd::Swap {
            room,
            give,
            want,
            fee,
            wait,
            json,
        } => swap(&dir, &password, &room, (&give, &want, fee), wait, json),
        Cmd::Disconnect { from } => {
            control::call(
                &dir,
                &json!({"op": "disconnect", "to": from}),
                Duration::from_secs(10),
            )?;
            Ok(())
        }
        Cmd::Receive { json } => receive(&dir, &password, json),
        Cmd::Stake {
            host,
            amount,
            wait,
            json,
        } => stake(&dir, &password, &host, amount, wait, json),
        Cmd::Send {
            to,
            amount,
            asset,
            item,
            wait,
            json,
        } => send(
            &dir,
            &password,
            &to,
            (amount.unwrap_or(0), asset.as_deref(), item.as_deref()),
            wait,
            json,
        ),
        Cmd::Issue {
            name,
            supply,
            precision,
            mintable,
            unique,
            wait,
            json,
        } => asset_op(
            &dir,
            &password,
            session::AssetOp::Issue {
                name,
                precision: (!unique).then_some(precision),
                supply,
                // Items are minted one by one, after the issue.
                mintable: mintable || unique,
            },
            wait,
            json,
        ),
        Cmd::Mint {
            asset,
            amount,
            item,
            wait,
            json,
        } => asset_op(
            &dir,
            &password,
            session::AssetOp::Mint {
                asset: parse_asset(Some(&asset))?,
                amount: amount.unwrap_or(0),
                item: item.as_deref().map(parse_hash).transpose()?,
            },
            wait,
            json,
        ),
        Cmd::Burn {
            asset,
            amount,
            item,
            wait,
            json,
        } => asset_op(
            &dir,
            &password,
            session::AssetOp::Burn {
                asset: parse_asset(Some(&asset))?,
                amount: amount.unwrap_or(0),
                item: item.as_deref().map(parse_hash).transpose()?,
            },
            wait,
            json,
        ),
        Cmd::Items { json } => items(&dir, json),
        Cmd::History { json } => history(&dir, json),
        Cmd::Receipt { tx, out } => receipt(&dir, &password, &tx, &out),
        Cmd::VerifyReceipt {
            file,
            genesis,
            json,
        } => verify_receipt(&file, &genesis, json),
    }
}

/// As in `peer`: RUST_LOG filters, logs go to stderr. The default level is
/// warn, not info, because a wallet command's stderr is read by a person.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn default_dir() -> Result<PathBuf> {
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => Ok(PathBuf::from(home).join(DEFAULT_DIR)),
        _ => bail!("HOME is not set, so there is no default wallet directory: pass --dir"),
    }
}

/// Where the password comes from, decided before anything is read so a
/// command that cannot get one fails at once.
enum PasswordSource {
    File(PathBuf),
    Env(Zeroizing<String>),
    Prompt,
}

impl PasswordSource {
    fn choose(file: Option<PathBuf>) -> Result<PasswordSource> {
        if let Some(f) = file {
            return Ok(PasswordSource::File(f));
        }
        match std::env::var(PASSWORD_ENV) {
            Ok(p) => return Ok(PasswordSource::Env(Zeroizing::new(p))),
            Err(std::env::VarError::NotUnicode(_)) => {
                bail!("{PASSWORD_ENV} is not valid UTF-8")
            }
            Err(std::env::VarError::NotPresent) => {}
        }
        Ok(PasswordSource::Prompt)
    }

    /// Fails unless the password can be had: a prompt needs a terminal.
    fn check_available(&self) -> Result<()> {
        if matches!(self, PasswordSource::Prompt) && !io::stdin().is_terminal() {
            bail!(
                "no password given and standard input is not a terminal to ask for one: \
                 use --password-file FILE or set {PASSWORD_ENV}"
            );
        }
        Ok(())
    }

    /// The password; `confirm` asks twice at a prompt (when writing a
    /// keystore, where a typo would lock the wallet).
    fn get(&self, confirm: bool) -> Result<Zeroizing<Vec<u8>>> {
        match self {
            PasswordSource::File(path) => {
                let all = Zeroizing::new(std::fs::read(path).with_context(|| {
                    format!("cannot read the password file {}", path.display())
                })?);
                let mut line = all.split(|&b| b == b'\n').next().unwrap_or_default();
                if let Some(stripped) = line.strip_suffix(b"\r") {
                    line = stripped;
                }
                Ok(Zeroizing::new(line.to_vec()))
            }
            PasswordSource::Env(p) => Ok(Zeroizing::new(p.as_bytes().to_vec())),
            PasswordSource::Prompt => {
                self.check_available()?;
                let first = Zeroizing::new(
                    rpassword::prompt_password("Wallet password: ")
                        .context("cannot read the password from the terminal")?,
                );
                if confirm {
                    let again = Zeroizing::new(
                        rpassword::prompt_password("Repeat the password: ")
                            .context("cannot read the password from the terminal")?,
                    );
                    if *first != *again {
                        bail!("the two passwords differ; nothing was written");
                    }
                    if first.is_empty() {
                        eprintln!(
                            "warning: an empty password lets anyone who gets the keystore file \
                             use the wallet"
                        );
                    }
                }
                Ok(Zeroizing::new(first.as_bytes().to_vec()))
            }
        }
    }
}

/// Fails early, before a phrase is shown or typed, when `dir` has a
/// keystore already (the write refuses too, atomically).
fn refuse_existing(dir: &Path) -> Result<()> {
    let keystore = dir.join(KEYSTORE_FILE);
    if keystore.exists() {
        return Err(DirError::KeystoreExists(keystore).into());
    }
    Ok(())
}

fn create(dir: &Path, password: &PasswordSource, json: bool) -> Result<()> {
    refuse_existing(dir)?;
    password.check_available()?;
    let phrase = Phrase::generate().context("cannot make a seed phrase")?;
    let pw = password.get(true)?;
    let wallet = write_wallet(dir, &phrase, &pw)?;
    let login_key = phrase.owner_keys().login_key().to_string();
    let words = phrase.words();
    if json {
        let out = json!({
            "dir": wallet.path().display().to_string(),
            "login_key": login_key,
            "phrase": words.as_str(),
        });
        println!("{out}");
    } else {
        println!("Wallet created in {}", wallet.path().display());
        println!("Login key: {login_key}");
        println!();
        println!("Seed phrase (shown only this once; write it down and keep it offline):");
        println!();
        println!("    {}", words.as_str());
        println!();
        println!(
            "Anyone with these words controls the wallet; without them, a lost password \
             or directory cannot be recovered. `wallet restore` takes them back."
        );
    }
    Ok(())
}

fn restore(dir: &Path, password: &PasswordSource, json: bool) -> Result<()> {
    refuse_existing(dir)?;
    password.check_available()?;
    let text = read_phrase()?;
    let phrase = Phrase::parse(&text).context("the seed phrase is not valid")?;
    let pw = password.get(true)?;
    let wallet = write_wallet(dir, &phrase, &pw)?;
    let login_key = phrase.owner_keys().login_key().to_string();
    if json {
        let out = json!({
            "dir": wallet.path().display().to_string(),
            "login_key": login_key,
        });
        println!("{out}");
    } else {
        println!("Wallet restored in {}", wallet.path().display());
        println!("Login key: {login_key}");
    }
    Ok(())
}

/// The phrase from standard input: one line at a terminal, else all of it
/// (bounded), so a file of words over several lines works too.
fn read_phrase() -> Result<Zeroizing<String>> {
    let stdin = io::stdin();
    let mut text = Zeroizing::new(String::new());
    if stdin.is_terminal() {
        eprint!("Seed phrase (words separated by spaces), then Enter: ");
        io::stderr().flush().ok();
        stdin
            .lock()
            .read_line(&mut text)
            .context("cannot read the seed phrase")?;
    } else {
        let n = stdin
            .lock()
            .take(MAX_PHRASE_INPUT + 1)
            .read_to_string(&mut text)
            .context("cannot read the seed phrase from standard input (is it UTF-8 text?)")?;
        if n as u64 > MAX_PHRASE_INPUT {
            bail!(
                "standard input is longer than any seed phrase ({MAX_PHRASE_INPUT} bytes or more)"
            );
        }
    }
    Ok(text)
}

fn write_wallet(dir: &Path, phrase: &Phrase, password: &[u8]) -> Result<WalletDir> {
    let started = Instant::now();
    let wallet = WalletDir::create(dir, phrase, password, KdfParams::DEFAULT)
        .with_context(|| format!("cannot create the wallet in {}", dir.display()))?;
    tracing::info!(dir = %dir.display(), elapsed_ms = started.elapsed().as_millis() as u64, "keystore written");
    Ok(wallet)
}

fn keys(dir: &Path, password: &PasswordSource, receive: u64, json: bool) -> Result<()> {
    let wallet = WalletDir::open(dir)?;
    let pw = password.get(false)?;
    let started = Instant::now();
    // The error names the keystore's path and says what is wrong.
    let phrase = wallet.unlock(&pw)?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "keystore opened"
    );
    let owner = phrase.owner_keys();
    let login_key = owner.login_key().to_string();
    let receive_keys: Vec<String> = (0..receive)
        .map(|i| owner.public(KeyPurpose::Receive, i).to_string())
        .collect();
    if json {
        let out = json!({
            "dir": wallet.path().display().to_string(),
            "login_key": login_key,
            "receive_keys": receive_keys,
        });
        println!("{out}");
    } else {
        println!("Login key: {login_key}");
        if !receive_keys.is_empty() {
            println!("Receive keys:");
            for (i, k) in receive_keys.iter().enumerate() {
                println!("  {i:>3}  {k}");
            }
        }
    }
    Ok(())
}

/// The wallet's keys, from the keystore (asks for the password).
fn unlock(dir: &Path, password: &PasswordSource) -> Result<dag::ledger::owner_keys::OwnerKeys> {
    let wallet = WalletDir::open(dir)?;
    let pw = password.get(false)?;
    Ok(wallet.unlock(&pw)?.owner_keys())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn login(
    dir: &Path,
    password: &PasswordSource,
    name: &str,
    genesis: Option<PathBuf>,
    via: Option<std::net::SocketAddr>,
    json: bool,
) -> Result<()> {
    let name = WalletName::parse(name)?;
    let keys = unlock(dir, password)?;
    let genesis = genesis.unwrap_or_else(|| dir.join(GENESIS_FILE));
    if !genesis.exists() {
        bail!("no genesis file: pass --genesis FILE (the chain's genesis.json) on the first login");
    }
    let _lock = StateLock::take(dir)?;
    let state = runtime()?.block_on(session::login(dir, &keys, name, &genesis, via))?;
    print_balance(dir, &state, json);
    Ok(())
}

fn balance(
    dir: &Path,
    password: &PasswordSource,
    offline: bool,
    witnesses: &[String],
    json: bool,
) -> Result<()> {
    WalletDir::open(dir)?;
    // Offline reads need no lock: saves replace the file whole.
    let _lock = (!offline).then(|| StateLock::take(dir)).transpose()?;
    let mut state = ChainState::load(dir)?;
    if !offline {
        let keys = unlock(dir, password)?;
        let genesis = session::load_genesis(&dir.join(GENESIS_FILE))?;
        let agreed = runtime()?.block_on(session::sync_witnessed(
            dir, &keys, &mut state, &genesis, witnesses,
        ))?;
        for (w, h) in agreed {
            eprintln!("witness {w}: same certified history (checked up to height {h})");
        }
    }
    print_balance(dir, &state, json);
    Ok(())
}

fn verify(dir: &Path, json: bool) -> Result<()> {
    WalletDir::open(dir)?;
    let state = ChainState::load(dir)?;
    let genesis = session::load_genesis(&dir.join(GENESIS_FILE))?;
    let committee = genesis
        .committee()
        .context("the stored genesis has no valid committee")?;
    let committees = state.committees(committee)?;
    let checked = state
        .verify(&committees)
        .map_err(|e| anyhow::anyhow!("verification failed: {e}"))?;
    let height = state.checkpoint.as_ref().map(|c| c.statement.height);
    if json {
        println!(
            "{}",
            json!({
                "ok": true,
                "height": height,
                "outputs_checked": checked,
                "handovers": state.handovers.len(),
            })
        );
    } else {
        println!(
            "OK: {checked} outputs proven against the certified checkpoint of height {}, \
             committee chain of {} hand-overs from genesis",
            height.map_or("(none yet)".to_string(), |h| h.to_string()),
            state.handovers.len()
        );
    }
    Ok(())
}

fn online(dir: &Path, password: &PasswordSource) -> Result<()> {
    WalletDir::open(dir)?;
    let state = ChainState::load(dir)?;
    let keys = unlock(dir, password)?;
    let genesis = session::load_genesis(&dir.join(GENESIS_FILE))?;
    wallet::online::run(dir, keys, state, genesis)
}

fn connect(dir: &Path, to: &str, json: bool) -> Result<()> {
    let v = control::call(
        dir,
        &json!({"op": "connect", "to": to}),
        wallet::online::CONNECT_TIMEOUT + Duration::from_secs(5),
    )?;
    if json {
        println!("{v}");
    } else {
        println!(
            "linked to {} ({} {}) in {} ms, round trip {:.1} ms",
            v["name"].as_str().unwrap_or("?"),
            v["path"].as_str().unwrap_or("?"),
            v["addr"].as_str().unwrap_or(""),
            v["connect_ms"],
            v["rtt_ms"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}

fn room(dir: &Path, cmd: RoomCmd) -> Result<()> {
    let t = Duration::from_secs(30);
    match cmd {
        RoomCmd::Create { json } => {
            let v = control::call(dir, &json!({"op": "room_create"}), t)?;
            if json {
                println!("{v}");
            } else {
                println!("{}", v["room"].as_str().unwrap_or("?"));
            }
        }
        RoomCmd::Join { room, json } => {
            let (owner, _) = room.rsplit_once('/').context("a room is NAME@PEER/ID")?;
            control::call(
                dir,
                &json!({"op": "connect", "to": owner}),
                wallet::online::CONNECT_TIMEOUT + Duration::from_secs(5),
            )?;
            let v = control::call(dir, &json!({"op": "room_join", "room": room}), t)?;
            if json {
                println!("{v}");
            } else {
                println!("joined {room}");
            }
        }
        RoomCmd::Members { room, json } => {
            let v = control::call(dir, &json!({"op": "room_members", "room": room}), t)?;
            if json {
                println!("{v}");
            } else {
                for m in v["members"].as_array().into_iter().flatten() {
                    println!(
                        "{}  {}",
                        m["name"].as_str().unwrap_or("?"),
                        m["path"].as_str().unwrap_or("?")
                    );
                }
            }
        }
        RoomCmd::Invite { room, to, json } => {
            let v = control::call(
                dir,
                &json!({"op": "room_invite", "room": room, "to": to}),
                t,
            )?;
            if json {
                println!("{v}");
            } else {
                println!(
                    "invited {to} into {room} (invitation {})",
                    v["id"].as_str().unwrap_or("?")
                );
            }
        }
        RoomCmd::Invites { json } => {
            let v = control::call(dir, &json!({"op": "room_invites"}), t)?;
            if json {
                println!("{v}");
            } else {
                for i in v["invites"].as_array().into_iter().flatten() {
                    println!(
                        "{}  {}  from {}",
                        i["id"].as_str().unwrap_or("?"),
                        i["room"].as_str().unwrap_or("?"),
                        i["from"].as_str().unwrap_or("?")
                    );
                }
            }
        }
        RoomCmd::Accept { id, json } => {
            let v = control::call(
                dir,
                &json!({"op": "room_accept", "id": id}),
                wallet::online::CONNECT_TIMEOUT + t,
            )?;
            if json {
                println!("{v}");
            } else {
                println!(
                    "joined {} ({} link to its owner)",
                    v["room"].as_str().unwrap_or("?"),
                    v["path"].as_str().unwrap_or("?")
                );
            }
        }
        RoomCmd::Leave { room } => {
            control::call(dir, &json!({"op": "room_leave", "room": room}), t)?;
        }
    }
    Ok(())
}

fn swap(
    dir: &Path,
    password: &PasswordSource,
    room: &str,
    (give, want, fee): (&str, &str, u128),
    wait: u64,
    json: bool,
) -> Result<()> {
    let v = control::call(
        dir,
        // The fee as text: JSON numbers are not u128.
        &json!({"op": "swap", "room": room, "give": give, "want": want, "fee": fee.to_string()}),
        Duration::from_secs(wait),
    )?;
    // Our outputs moved: bring the proven state up to the swap's height.
    let keys = unlock(dir, password)?;
    let _lock = StateLock::take(dir)?;
    let mut state = ChainState::load(dir)?;
    let genesis = session::load_genesis(&dir.join(GENESIS_FILE))?;
    runtime()?.block_on(session::sync(dir, &keys, &mut state, &genesis))?;
    if json {
        println!("{v}");
    } else {
        println!(
            "swapped in {} (tx {} at height {}, {} parties): gave {}, got {}",
            room, v["txid"], v["height"], v["parties"], v["gave"], v["got"]
        );
    }
    Ok(())
}

fn links(dir: &Path, json: bool) -> Result<()> {
    let v = control::call(dir, &json!({"op": "links"}), Duration::from_secs(10))?;
    if json {
        println!("{v}");
    } else {
        for l in v["links"].as_array().into_iter().flatten() {
            println!(
                "{}  {} {}",
                l["name"].as_str().unwrap_or("?"),
                l["path"].as_str().unwrap_or("?"),
                l["addr"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}

fn committee(dir: &Path, json: bool) -> Result<()> {
    WalletDir::open(dir)?;
    let state = ChainState::load(dir)?;
    let genesis = session::load_genesis(&dir.join(GENESIS_FILE))?;
    let first = genesis
        .committee()
        .context("the stored genesis has no valid committee")?;
    // Checked again, as `verify` does: the state file is input.
    state.committees(first.clone())?;
    let name_of = |key: &dag::PeerKey| {
        genesis
            .peers
            .iter()
            .find(|p| p.key == *key)
            .map(|p| p.name.clone())
    };
    let mut list = vec![(0, first.members().to_vec())];
    list.extend(
        state
            .handovers
            .iter()
            .map(|h| (h.statement.snapshot, h.statement.members.clone())),
    );
    if json {
        let committees: Vec<_> = list
            .iter()
            .map(|(snapshot, members)| {
                json!({
                    "snapshot": snapshot,
                    "total": members.iter().map(|m| u128::from(m.stake)).sum::<u128>(),
                    "members": members.iter().map(|m| json!({
                        "peer": name_of(&m.key),
                        "key": m.key.to_string(),
                        "stake": m.stake,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", json!({ "committees": committees }));
    } else {
        for (snapshot, members) in &list {
            println!("snapshot {snapshot}:");
            for m in members {
                let name = name_of(&m.key).unwrap_or_else(|| m.key.to_string());
                println!("  {name:<32} {}", m.stake);
            }
        }
    }
    Ok(())
}

fn asset_label(a: &AssetId) -> String {
    if *a == AssetId::NATIVE {
        "native".into()
    } else {
        a.0.to_string()
    }
}

fn print_balance(dir: &Path, state: &ChainState, json: bool) {
    let cp = state.checkpoint.as_ref().map(|c| &c.statement);
    let holdings = state.holdings();
    // Native money per hosting peer: the wallet's stake votes.
    let names: std::collections::BTreeMap<dag::identity::PeerKey, String> =
        session::load_genesis(&dir.join(GENESIS_FILE))
            .map(|g| g.peers.into_iter().map(|p| (p.key, p.name)).collect())
            .unwrap_or_default();
    let mut staked: std::collections::BTreeMap<String, u128> = Default::default();
    for h in &state.outputs {
        if let (Some(host), dag::ledger::output::Value::Amount(a)) =
            (h.state.output.host, h.state.output.value)
        {
            let name = names
                .get(&host)
                .cloned()
                .unwrap_or_else(|| host.to_string());
            *staked.entry(name).or_default() += a;
        }
    }
    if json {
        let mut assets = serde_json::Map::new();
        for (a, h) in &holdings {
            let mut o = json!({"amount": h.amount, "outputs": h.outputs});
            if !h.items.is_empty() {
                o["items"] = json!(h.items.iter().map(|i| i.to_string()).collect::<Vec<_>>());
            }
            assets.insert(asset_label(a), o);
        }
        println!(
            "{}",
            json!({
                "name": state.name.to_string(),
                "peer": state.name.peer,
                "height": cp.map(|c| c.height),
                "root": cp.map(|c| c.roots.outputs.to_string()),
                "history_root": cp.map(|c| c.roots.history.to_string()),
                "assets": assets,
                "staked_with": staked,
            })
        );
    } else {
        println!("{}", state.name);
        match cp {
            Some(c) => println!(
                "proven at height {} (output-set root {})",
                c.height, c.roots.outputs
            ),
            None => println!("no certified checkpoint yet"),
        }
        if holdings.is_empty() {
            println!("no outputs");
        }
        for (a, h) in &holdings {
            println!(
                "  {:<66} {:>24}  ({} outputs)",
                asset_label(a),
                h.amount,
                h.outputs
            );
        }
    }
}

fn parse_hash(hex: &str) -> Result<proofs::Hash> {
    Ok(proofs::Hash(
        dag::hex::decode_array(hex).context("an id is 64 hex digits")?,
    ))
}

fn parse_asset(asset: Option<&str>) -> Result<AssetId> {
    Ok(match asset {
        None | Some("native") => AssetId::NATIVE,
        Some(hex) => AssetId(parse_hash(hex).context("--asset: 64 hex digits or `native`")?),
    })
}

fn asset_op(
    dir: &Path,
    password: &PasswordSource,
    op: session::AssetOp,
    wait: u64,
    json: bool,
) -> Result<()> {
    WalletDir::open(dir)?;
    let _lock = StateLock::take(dir)?;
    let mut state = ChainState::load(dir)?;
    let keys = unlock(dir, password)?;
    let genesis = session::load_genesis(&dir.join(GENESIS_FILE))?;
    let what = format!("{op:?}");
    let (sent, issued) = runtime()?.block_on(session::asset_op(
        dir,
        &keys,
        &mut state,
        &genesis,
        op,
        std::time::Duration::from_secs(wait),
    ))?;
    if let (Some(a), false) = (issued, json) {
        println!("asset {}", a.0);
    }
    if json {
        let outcome = match &sent.outcome {
            dag::ledger::Outcome::Applied => "applied".to_string(),
            dag::ledger::Outcome::Rejected(r) => format!("rejected: {r:?}"),
        };
        println!(
            "{}",
            json!({"tx": sent.tx.to_string(), "height": sent.height, "outcome": outcome,
                   "asset": issued.map(|a| a.0.to_string())})
        );
        if !matches!(sent.outcome, dag::ledger::Outcome::Applied) {
            bail!("the transaction was ordered but rejected: {outcome}");
        }
        return Ok(());
    }
    report(&sent, &what, false)
}

fn items(dir: &Path, json: bool) -> Result<()> {
    WalletDir::open(dir)?;
    let state = ChainState::load(dir)?;
    let mut out = serde_json::Map::new();
    for (a, h) in state.holdings() {
        if !h.items.is_empty() {
            out.insert(
                asset_label(&a),
                json!(h.items.iter().map(|i| i.to_string()).collect::<Vec<_>>()),
            );
        }
    }
    if json {
        println!("{}", serde_json::Value::Object(out));
    } else if out.is_empty() {
        println!("no unique items");
    } else {
        for (a, list) in out {
            println!("{a}: {list}");
        }
    }
    Ok(())
}

fn send(
    dir: &Path,
    password: &PasswordSource,
    to: &str,
    (amount, asset, item): (u128, Option<&str>, Option<&str>),
    wait: u64,
    json: bool,
) -> Result<()> {
    let to = WalletName::parse(to)?;
    let asset = parse_asset(asset)?;
    let item = item.map(parse_hash).transpose()?;
    WalletDir::open(dir)?;
    let _lock = StateLock::take(dir)?;
    let mut state = ChainState::load(dir)?;
    let keys = unlock(dir, password)?;
    let genesis = session::load_genesis(&dir.join(GENESIS_FILE))?;
    // Our online wallet, if it runs, links to the payee (or reuses the
    // link); any failure means paying to a prekey from the payee's peer.
    let linked = match control::call(
        dir,
        &json!({"op": "connect", "to": to.to_string()}),
        wallet::online::CONNECT_TIMEOUT + Duration::from_secs(5),
    ) {
        Ok(_) => true,
        Err(control::ControlError::NotOnline { .. }) => false,
        Err(e) => {
            tracing::info!("no link to {to} ({e}): paying to a prekey from its peer");
            false
        }
    };
    let paid = runtime()?.block_on(session::send(
        dir,
        &keys,
        &mut state,
        &genesis,
        &to,
        amount,
        asset,
        item,
        std::time::Duration::from_secs(wait),
        linked,
    ))?;
    if let Some(Err(e)) = &paid.delivered {
        eprintln!("warning: the payment is final, but {to} did not take its proof: {e}");
    }
    let mut extra = json!({"path": paid.path});
    if let Some(d) = &paid.delivered {
        extra["delivered"] = json!(d.is_ok());
    }
    report_with(
        &paid.sent,
        &format!("sent {amount} to {to} ({})", paid.path),
        json,
        extra,
    )
}

/// Print what a transaction did; an error if it was rejected.
fn report(sent: &session::Sent, what: &str, json: bool) -> Result<()> {
    report_with(sent, what, json, json!({}))
}

/// [`report`], with the fields of `extra` added to the JSON.
fn report_with(
    sent: &session::Sent,
    what: &str,
    json: bool,
    extra: serde_json::Value,
) -> Result<()> {
    let outcome = match &sent.outcome {
        dag::ledger::Outcome::Applied => "applied".to_string(),
        dag::ledger::Outcome::Rejected(r) => format!("rejected: {r:?}"),
    };
    if json {
        let mut v = json!({"tx": sent.tx.to_string(), "height": sent.height, "outcome": outcome});
        if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            v.extend(extra.clone());
        }
        println!("{v}");
    } else {
        println!(
            "{what}: transaction {} final at height {} ({outcome})",
            sent.tx, sent.height
        );
    }
    if !matches!(sent.outcome, dag::ledger::Outcome::Applied) {
        bail!("the transaction was ordered but rejected: {outcome}");
    }
    Ok(())
}

fn stake(
    dir: &Path,
    password: &PasswordSource,
    host: &str,
    amount: Option<u128>,
    wait: u64,
    json: bool,
) -> Result<()> {
    WalletDir::open(dir)?;
    let _lock = StateLock::take(dir)?;
    let mut state = ChainState::load(dir)?;
    let keys = unlock(dir, password)?;
    let genesis = session::load_genesis(&dir.join(GENESIS_FILE))?;
    let sent = runtime()?.block_on(session::stake(
        dir,
        &keys,
        &mut state,
        &genesis,
        host,
        amount,
        std::time::Duration::from_secs(wait),
    ))?;
    report(&sent, &format!("staked with {host}"), json)
}

fn receive(dir: &Path, password: &PasswordSource, json: bool) -> Result<()> {
    WalletDir::open(dir)?;
    let state = ChainState::load(dir)?;
    let keys = unlock(dir, password)?;
    let first = keys.public(KeyPurpose::Receive, 0);
    if json {
        println!(
            "{}",
            json!({
                "name": state.name.to_string(),
                "login_key": keys.login_key().to_string(),
                "receive_key": first.to_string(),
            })
        );
    } else {
        println!("Give payers the name {}", state.name);
        println!(
            "(each payer gets a fresh key of yours from {}; key 0, for a first payment by key: {first})",
            state.name.peer
        );
    }
    Ok(())
}

fn history(dir: &Path, json: bool) -> Result<()> {
    WalletDir::open(dir)?;
    let state = ChainState::load(dir)?;
    let mut events = state.history.clone();
    events.sort_by_key(|e| e.height);
    if json {
        let list: Vec<serde_json::Value> = events
            .iter()
            .map(|e| {
                let mut o = json!({
                    "height": e.height,
                    "what": e.what,
                    "tx": e.tx.map(|t| t.to_string()),
                    "output": e.output.map(|t| t.to_string()),
                });
                if let Some((asset, value)) = e.value {
                    o["asset"] = json!(asset_label(&asset));
                    match value {
                        dag::ledger::output::Value::Amount(a) => o["amount"] = json!(a),
                        dag::ledger::output::Value::Item(i) => o["item"] = json!(i.to_string()),
                    }
                }
                o
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
    } else if events.is_empty() {
        println!("nothing yet");
    } else {
        for e in &events {
            let v = match e.value {
                Some((a, dag::ledger::output::Value::Amount(n))) => {
                    format!("{n} {}", asset_label(&a))
                }
                Some((a, dag::ledger::output::Value::Item(i))) => {
                    format!("item {i} of {}", asset_label(&a))
                }
                None => String::new(),
            };
            println!(
                "{:>10}  {:<10} {v}  {}",
                e.height,
                e.what,
                e.tx.map(|t| t.to_string()).unwrap_or_default()
            );
        }
    }
    Ok(())
}

fn receipt(dir: &Path, password: &PasswordSource, tx: &str, out: &Path) -> Result<()> {
    WalletDir::open(dir)?;
    let tx = parse_hash(tx).context("the transaction id")?;
    let state = ChainState::load(dir)?;
    let keys = unlock(dir, password)?;
    let genesis = session::load_genesis(&dir.join(GENESIS_FILE))?;
    let r = runtime()?.block_on(session::receipt(&keys, &state, &genesis, tx))?;
    std::fs::write(out, proofs::encode(&r))
        .with_context(|| format!("writing {}", out.display()))?;
    println!(
        "receipt of {tx} (height {}, proven under the certified checkpoint of height {}) in {}",
        r.height,
        r.inclusion.checkpoint.statement.height,
        out.display()
    );
    Ok(())
}

fn verify_receipt(file: &Path, genesis: &Path, json: bool) -> Result<()> {
    use std::io::Read;
    let g = session::load_genesis(genesis)?;
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .with_context(|| format!("opening {}", file.display()))?
        .take(dag::ledger::light::MAX_RECEIPT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", file.display()))?;
    if bytes.len() > dag::ledger::light::MAX_RECEIPT_BYTES {
        bail!("{} is larger than any receipt", file.display());
    }
    let r: dag::ledger::light::Receipt = proofs::decode(&bytes, bytes.len())
        .with_context(|| format!("{} is not a receipt", file.display()))?;
    let committee = g
        .committee()
        .context("the genesis has no valid committee")?;
    let outcome = r
        .verify(&g.chain_id(), committee)
        .map_err(|e| anyhow::anyhow!("the receipt does not verify: {e}"))?;
    let outputs: Vec<serde_json::Value> =
        r.tx.body
            .outputs
            .iter()
            .map(|o| {
                let mut v = json!({"owner": o.owner.to_string(), "asset": asset_label(&o.asset)});
                match o.value {
                    dag::ledger::output::Value::Amount(a) => v["amount"] = json!(a),
                    dag::ledger::output::Value::Item(i) => v["item"] = json!(i.to_string()),
                }
                v
            })
            .collect();
    let outcome = format!("{outcome:?}").to_lowercase();
    if json {
        println!(
            "{}",
            json!({"ok": true, "tx": r.tx.id().to_string(), "height": r.height,
                   "checkpoint_height": r.inclusion.checkpoint.statement.height,
                   "outcome": outcome, "outputs": outputs})
        );
    } else {
        println!(
            "OK: transaction {} was {outcome} at height {} (certified at height {})",
            r.tx.id(),
            r.height,
            r.inclusion.checkpoint.statement.height
        );
        for o in outputs {
            println!("  {o}");
        }
    }
    Ok(())
}
