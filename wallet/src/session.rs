//! One conversation with the wallet's peer: connect, register the login
//! name if the peer has not vouched for it yet, take the committee
//! hand-overs since the last known one, then sync until the wallet's view
//! reaches the peer's latest certified checkpoint. Every answer is checked
//! (see `chain`); the state file is written only after all of it passed.

use crate::chain::{ChainError, ChainState, GENESIS_FILE};
use crate::client::{ClientError, PeerLink};
use dag::identity::{PeerKey, Signer};
use dag::ledger::apply::Outcome;
use dag::ledger::genesis::Genesis;
use dag::ledger::light::{verify_sync, SyncRequest};
use dag::ledger::multisig::sign_local;
use dag::ledger::names::ReceiveKey;
use dag::ledger::names::WalletName;
use dag::ledger::output::{Output, Value};
use dag::ledger::owner_keys::{KeyPurpose, OwnerKeys};
use dag::ledger::transaction::{Transaction, TxBody};
use dag::ledger::AssetId;
use dag::wire::{WalletMessage, MAX_WALLET_HANDOVERS};
use proofs::Hash;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use thiserror::Error;
use tracing::warn;

/// Sync rounds in one session at most (each covers up to 1,024 outputs).
const MAX_ROUNDS: usize = 1024;

#[derive(Debug, Error)]
pub enum SessionError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("genesis file {path}: {why}")]
    Genesis { path: String, why: String },
    #[error("no peer named {0} in the genesis")]
    UnknownPeer(String),
    #[error("this wallet is logged in as {current}; it cannot log in as {asked}")]
    OtherLogin { current: String, asked: String },
    #[error(
        "peer {peer} and witness {witness} certify histories that do not extend each \
         other: {why}"
    )]
    Disagree {
        peer: String,
        witness: String,
        why: String,
    },
    #[error("witness {witness} lied: {why}")]
    WitnessLied { witness: String, why: String },
    #[error("payment: {0}")]
    Payment(String),
    #[error("peer {0} kept sending more heights: giving up after {MAX_ROUNDS} rounds")]
    Endless(String),
}

/// The genesis the wallet was logged in with.
pub fn load_genesis(path: &Path) -> Result<Genesis, SessionError> {
    let err = |why: String| SessionError::Genesis {
        path: path.display().to_string(),
        why,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    Genesis::from_json(&bytes).map_err(|e| err(e.to_string()))
}

/// Log in as `name` on a chain given by `genesis` (copied into the wallet
/// directory): register with the peer and sync. `via` overrides the peer's
/// address from the genesis.
pub async fn login(
    dir: &Path,
    keys: &OwnerKeys,
    name: WalletName,
    genesis_path: &Path,
    via: Option<SocketAddr>,
) -> Result<ChainState, SessionError> {
    let genesis = load_genesis(genesis_path)?;
    let chain = genesis.chain_id();
    let peer = genesis
        .peers
        .iter()
        .find(|p| p.name == name.peer)
        .ok_or_else(|| SessionError::UnknownPeer(name.peer.clone()))?;
    let mut state = match ChainState::load(dir) {
        Ok(s) if s.chain == chain && s.name == name => s,
        Ok(s) => {
            return Err(SessionError::OtherLogin {
                current: s.name.to_string(),
                asked: name.to_string(),
            })
        }
        Err(ChainError::NotLoggedIn) => {
            ChainState::new(chain, name.clone(), peer.key, via.unwrap_or(peer.addr))
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(a) = via {
        state.peer_addr = a;
    }
    let copy = dir.join(GENESIS_FILE);
    if copy != genesis_path {
        crate::atomic_file::write(
            &copy,
            genesis.to_json().as_bytes(),
            crate::atomic_file::Existing::Replace,
        )
        .map_err(|source| ChainError::Io { path: copy, source })?;
    }
    sync(dir, keys, &mut state, &genesis).await?;
    Ok(state)
}

/// The link to the wallet's own peer.
async fn connect_own(keys: &OwnerKeys, state: &ChainState) -> Result<PeerLink, ClientError> {
    PeerLink::connect(
        state.chain,
        keys.login(),
        &state.name.peer,
        state.peer,
        state.peer_addr,
    )
    .await
}

/// Bring `state` up to the peer's latest certified checkpoint and save it.
pub async fn sync(
    dir: &Path,
    keys: &OwnerKeys,
    state: &mut ChainState,
    genesis: &Genesis,
) -> Result<(), SessionError> {
    sync_witnessed(dir, keys, state, genesis, &[])
        .await
        .map(|_| ())
}

/// [`sync`], then check the accepted checkpoint against each of
/// `witnesses` (other peers): their latest certified checkpoint and ours
/// must lie on one history (one extends the other, proven). The height
/// each witness agreed at.
pub async fn sync_witnessed(
    dir: &Path,
    keys: &OwnerKeys,
    state: &mut ChainState,
    genesis: &Genesis,
    witnesses: &[String],
) -> Result<Vec<(String, u64)>, SessionError> {
    let link = connect_own(keys, state).await?;
    let result = async {
        converse(&link, keys, state, genesis).await?;
        let mut agreed = Vec::new();
        for w in witnesses {
            agreed.push((w.clone(), witness(&link, keys, state, genesis, w).await?));
        }
        Ok::<_, SessionError>(agreed)
    }
    .await;
    link.close();
    let agreed = result?;
    state.save(dir)?;
    Ok(agreed)
}

/// A sync request, asked again a few times while the peer has no
/// certificate yet, its newest one is older than the versions it keeps,
/// or this wallet spent its request budget (all pass within moments).
async fn sync_retrying(link: &PeerLink, req: &SyncRequest) -> Result<WalletMessage, ClientError> {
    let mut tries = 0;
    loop {
        match link.request(WalletMessage::Sync(req.clone())).await {
            Err(ClientError::Refused { reason, .. })
                if tries < 20
                    && (reason.contains("no certified checkpoint")
                        || reason.contains("cannot prove that height")
                        // The peer's per-wallet budget refills in moments.
                        || reason.contains("requests per second")) =>
            {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => return other,
        }
    }
}

/// The error for an answer of the wrong kind to an `asked` request.
fn unexpected(peer: impl Into<String>, asked: &'static str) -> SessionError {
    ClientError::Unexpected {
        peer: peer.into(),
        asked,
    }
    .into()
}

/// One sync request and its (unchecked) answer.
async fn sync_once(
    l: &PeerLink,
    req: SyncRequest,
) -> Result<Box<dag::ledger::light::SyncAnswer>, SessionError> {
    match l.request(WalletMessage::Sync(req)).await? {
        WalletMessage::Synced(a) => Ok(a),
        _ => Err(unexpected(l.peer(), "sync")),
    }
}

/// Our peer's proof that its latest certified history extends a root of
/// `known_leaves` leaves (another wallet's, older than ours): a sync
/// answer for no keys, which the other wallet checks itself.
pub async fn prove_extends(
    keys: &OwnerKeys,
    state: &ChainState,
    known_leaves: u64,
) -> Result<Box<dag::ledger::light::SyncAnswer>, SessionError> {
    let link = connect_own(keys, state).await?;
    let req = SyncRequest {
        keys: Vec::new(),
        from: 0,
        watch: Vec::new(),
        known_leaves,
    };
    let r = sync_retrying(&link, &req).await;
    link.close();
    match r? {
        WalletMessage::Synced(a) => Ok(a),
        _ => Err(unexpected(state.name.peer.clone(), "sync")),
    }
}

/// Check our accepted checkpoint against peer `name`'s latest one.
async fn witness(
    ours_link: &PeerLink,
    keys: &OwnerKeys,
    state: &ChainState,
    genesis: &Genesis,
    name: &str,
) -> Result<u64, SessionError> {
    let peer = genesis
        .peers
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| SessionError::UnknownPeer(name.to_string()))?;
    let Some(ours) = state.checkpoint.as_ref().map(|c| c.statement.clone()) else {
        return Ok(0);
    };
    let committees =
        state.committees(genesis.committee().map_err(|e| SessionError::Genesis {
            path: GENESIS_FILE.into(),
            why: e.to_string(),
        })?)?;
    let link = PeerLink::connect(state.chain, keys.login(), name, peer.key, peer.addr).await?;
    let ask = |known: u64| SyncRequest {
        keys: Vec::new(),
        from: 0,
        watch: Vec::new(),
        known_leaves: known,
    };
    let result = async {
        // The witness's latest certified checkpoint, on its own.
        let req = ask(0);
        let a = sync_once(&link, req.clone()).await?;
        let theirs = verify_sync(&req, &a, &committees, None)
            .map_err(|e| SessionError::WitnessLied {
                witness: name.to_string(),
                why: e.to_string(),
            })?
            .checkpoint;
        // Whichever is ahead proves it extends the other.
        let (prover, older, newer_name) = if theirs.height >= ours.height {
            (&link, &ours, name)
        } else {
            (ours_link, &theirs, state.name.peer.as_str())
        };
        let req = ask(older.roots.history_leaves);
        let a = sync_once(prover, req.clone()).await?;
        let v = verify_sync(&req, &a, &committees, Some(older)).map_err(|e| {
            SessionError::Disagree {
                peer: state.name.peer.clone(),
                witness: name.to_string(),
                why: format!("{newer_name}: {e}"),
            }
        })?;
        Ok(v.checkpoint.height.min(ours.height.max(theirs.height)))
    }
    .await;
    link.close();
    result
}

async fn converse(
    link: &PeerLink,
    keys: &OwnerKeys,
    state: &mut ChainState,
    genesis: &Genesis,
) -> Result<(), SessionError> {
    let peer = state.name.peer.clone();
    if state.voucher.is_none() {
        let answer = link
            .request(WalletMessage::Register {
                name: state.name.login.clone(),
            })
            .await?;
        let WalletMessage::Registered(v) = answer else {
            return Err(unexpected(peer, "register"));
        };
        let bad = |why: String| ChainError::BadVoucher {
            peer: peer.clone(),
            why,
        };
        v.verify(&state.chain, &state.peer)
            .map_err(|e| bad(e.to_string()))?;
        if v.name != state.name.login || v.login != keys.login_key() {
            return Err(bad(format!(
                "it names {} → {}, not {} → {}",
                v.name,
                v.login,
                state.name.login,
                keys.login_key()
            ))
            .into());
        }
        state.voucher = Some(v);
    }
    // Receive keys for payers, signed by the login key.
    let stock = state.receive_stock();
    let mut rng_seed = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut rng_seed);
    let mut login = Signer::from_keypair(keys.login(), rng_seed);
    let offered: Vec<ReceiveKey> = stock
        .into_iter()
        .map(|i| {
            ReceiveKey::sign(
                &state.chain,
                &state.name,
                &mut login,
                keys.public(KeyPurpose::Receive, i),
            )
        })
        .collect();
    let answer = link
        .request(WalletMessage::PutReceiveKeys {
            name: state.name.login.clone(),
            keys: offered,
        })
        .await?;
    if !matches!(answer, WalletMessage::Stocked(_)) {
        return Err(unexpected(peer, "receive keys"));
    }
    let genesis_committee = genesis.committee().map_err(|e| SessionError::Genesis {
        path: GENESIS_FILE.into(),
        why: e.to_string(),
    })?;
    let mut committees = state.committees(genesis_committee)?;
    loop {
        let answer = link
            .request(WalletMessage::GetHandovers {
                after: committees.latest(),
            })
            .await?;
        let WalletMessage::Handovers(list) = answer else {
            return Err(unexpected(peer, "handovers"));
        };
        let full = list.len() == MAX_WALLET_HANDOVERS;
        state.take_handovers(&mut committees, list)?;
        if !full {
            break;
        }
    }
    for _ in 0..MAX_ROUNDS {
        let watched = state.watched_keys(keys);
        let req = state.request(&watched)?;
        let answer = sync_retrying(link, &req).await?;
        let WalletMessage::Synced(answer) = answer else {
            return Err(unexpected(peer, "sync"));
        };
        let v = state.apply(&committees, &watched, &req, &answer)?;
        if !v.more {
            return Ok(());
        }
    }
    Err(SessionError::Endless(peer))
}

/// What `send` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub tx: Hash,
    pub height: u64,
    pub outcome: Outcome,
}

/// What a payment did, and how the payee's key came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paid {
    pub sent: Sent,
    /// `direct` or `relay` (the online wallet's link to the payee at the
    /// time, which carried its key and then the proof), or `prekey`.
    pub path: String,
    /// Over a link: whether the payee took the transaction and its
    /// inclusion proof (`Err`: why not; the payment is final either way).
    pub delivered: Option<Result<(), String>>,
}

/// Pay `amount` of `asset` to `to`: sync, get a receive key of `to`,
/// build and sign the transaction over the chosen outputs (one MuSig
/// signature of their keys), submit it to our peer, wait for finality,
/// sync again. `online`: this wallet's online daemon holds a link to `to`,
/// so the key is asked of the payee itself over that link
/// (checked against the login key the link is bound to), and the
/// transaction and its inclusion proof go back the same way; without it,
/// or if the payee does not answer, the key is a prekey from `to`'s peer
/// (checked: the peer's voucher, the payee's signature). Only this
/// command loads and saves the state: the daemon just forwards.
#[allow(clippy::too_many_arguments)]
pub async fn send(
    dir: &Path,
    keys: &OwnerKeys,
    state: &mut ChainState,
    genesis: &Genesis,
    to: &WalletName,
    amount: u128,
    asset: AssetId,
    item: Option<Hash>,
    wait: Duration,
    online: bool,
) -> Result<Paid, SessionError> {
    if amount == 0 && item.is_none() {
        return Err(SessionError::Payment(
            "the amount must be above zero".into(),
        ));
    }
    let link = connect_own(keys, state).await?;
    let result = pay(
        &link,
        dir,
        keys,
        state,
        genesis,
        to,
        (amount, asset, item),
        wait,
        online,
    )
    .await;
    link.close();
    result
}

/// A request to this wallet's online daemon, off the async runtime (the
/// control socket is blocking).
async fn ask_online(
    dir: &Path,
    request: serde_json::Value,
    timeout: Duration,
) -> Result<serde_json::Value, String> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || crate::control::call(&dir, &request, timeout))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// A fresh key of `to` over the online wallet's link; the link's path.
async fn direct_key(dir: &Path, to: &WalletName) -> Result<(PeerKey, u64, String), String> {
    let v = ask_online(
        dir,
        serde_json::json!({"op": "pay_key", "to": to.to_string()}),
        crate::online::PAY_KEY_TIMEOUT + Duration::from_secs(5),
    )
    .await?;
    let key = v["key"]
        .as_str()
        .and_then(|k| dag::hex::decode_array(k).ok())
        .map(PeerKey)
        .ok_or("the online wallet's answer has no key")?;
    let ask = v["ask"]
        .as_u64()
        .ok_or("the online wallet's answer has no ask")?;
    let path = v["path"].as_str().unwrap_or("direct").to_string();
    Ok((key, ask, path))
}

/// The inclusion proof of our final transaction, asked again while the
/// peer's certified checkpoint is still below its height (moments).
async fn inclusion_retrying(
    link: &PeerLink,
    tx: Hash,
    height: u64,
) -> Result<dag::ledger::light::Inclusion, SessionError> {
    let mut tries = 0;
    loop {
        match link
            .request(WalletMessage::GetInclusion { tx, height })
            .await
        {
            Ok(WalletMessage::Inclusion(i)) => return Ok(*i),
            Ok(_) => return Err(unexpected(link.peer(), "inclusion")),
            Err(ClientError::Refused { reason, .. })
                if tries < 40
                    && (reason.contains("not certified yet")
                        || reason.contains("no certified checkpoint")) =>
            {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Hand the payee our final transaction with its inclusion proof (checked
/// here first, as a receipt would be), over the online wallet's link.
async fn deliver(
    link: &PeerLink,
    dir: &Path,
    state: &ChainState,
    genesis: &Genesis,
    to: &WalletName,
    ask: u64,
    sent: &Sent,
) -> Result<String, String> {
    let tx_bytes = state
        .history
        .iter()
        .rev()
        .find(|e| e.tx == Some(sent.tx))
        .and_then(|e| e.tx_bytes.clone())
        .ok_or("the transaction is not in the history")?;
    let inclusion = inclusion_retrying(link, sent.tx, sent.height)
        .await
        .map_err(|e| e.to_string())?;
    let tx: Transaction =
        proofs::decode(&tx_bytes, tx_bytes.len()).map_err(|e| format!("our transaction: {e}"))?;
    let committee = genesis.committee().map_err(|e| e.to_string())?;
    dag::ledger::light::Receipt {
        tx,
        height: sent.height,
        inclusion: inclusion.clone(),
        handovers: state.handovers.clone(),
    }
    .verify(&state.chain, committee)
    .map_err(|e| format!("peer {} lied about the inclusion: {e}", state.name.peer))?;
    let v = ask_online(
        dir,
        serde_json::json!({
            "op": "pay_proof",
            "to": to.to_string(),
            "ask": ask,
            "height": sent.height,
            "tx": dag::hex::encode(&tx_bytes),
            "inclusion": dag::hex::encode(&proofs::encode(&inclusion)),
        }),
        crate::online::PAID_TIMEOUT + Duration::from_secs(5),
    )
    .await?;
    Ok(v["path"].as_str().unwrap_or("direct").to_string())
}

#[allow(clippy::too_many_arguments)]
async fn pay(
    link: &PeerLink,
    dir: &Path,
    keys: &OwnerKeys,
    state: &mut ChainState,
    genesis: &Genesis,
    to: &WalletName,
    (amount, asset, item): (u128, AssetId, Option<Hash>),
    wait: Duration,
    online: bool,
) -> Result<Paid, SessionError> {
    converse(link, keys, state, genesis).await?;
    state.save(dir)?;
    // Funds first: asking for a receive key uses one of the payee's up.
    let (inputs, total) = match item {
        Some(item) => state
            .outputs
            .iter()
            .find(|h| h.state.output.asset == asset && h.state.output.value == Value::Item(item))
            .map(|h| (vec![h.clone()], 0))
            .ok_or_else(|| SessionError::Payment("this wallet does not hold that item".into()))?,
        None => state
            .select(&asset, amount)
            .map(|(hs, t)| (hs.into_iter().cloned().collect::<Vec<_>>(), t))
            .ok_or_else(|| {
                let have = state.holdings().get(&asset).map_or(0, |h| h.amount);
                SessionError::Payment(format!("not enough funds: {have} held, {amount} asked"))
            })?,
    };
    let payee_peer = genesis
        .peers
        .iter()
        .find(|p| p.name == to.peer)
        .ok_or_else(|| SessionError::UnknownPeer(to.peer.clone()))?;
    let direct = if online {
        match direct_key(dir, to).await {
            Ok(k) => Some(k),
            Err(e) => {
                warn!(payee = %to, "no key over the link ({e}); asking its peer for a prekey");
                None
            }
        }
    } else {
        None
    };
    let payee_key = match &direct {
        Some((key, _, _)) => *key,
        None => prekey(link, keys, state, to, payee_peer).await?,
    };
    let host_of = |peer: &str| genesis.peers.iter().find(|p| p.name == peer).map(|p| p.key);
    let native = asset == AssetId::NATIVE;
    let first_host = inputs[0].state.output.host;
    let mut outputs = vec![Output {
        owner: payee_key,
        asset,
        // Native money received is staked with the payee's peer.
        host: if native { host_of(&to.peer) } else { None },
        value: item.map_or(Value::Amount(amount), Value::Item),
    }];
    if item.is_none() && total > amount {
        let change = state.change_next;
        state.change_next += 1;
        outputs.push(Output {
            owner: keys.public(KeyPurpose::Change, change),
            asset,
            host: if native { first_host } else { None },
            value: Value::Amount(total - amount),
        });
    }
    let sent = submit_with(
        link,
        dir,
        keys,
        state,
        genesis,
        &inputs,
        outputs,
        Vec::new(),
        Vec::new(),
        ("sent", wait),
    )
    .await?;
    let Some((_, ask, path)) = direct else {
        return Ok(Paid {
            sent,
            path: "prekey".into(),
            delivered: None,
        });
    };
    // Final and paid; the payee now gets the proof from us. Failing that,
    // it still finds the output by its own sync.
    let (path, delivered) = match deliver(link, dir, state, genesis, to, ask, &sent).await {
        Ok(now) => (now, Ok(())),
        Err(e) => {
            warn!(payee = %to, "the payment is final, but the payee did not take its proof: {e}");
            (path, Err(e))
        }
    };
    Ok(Paid {
        sent,
        path,
        delivered: Some(delivered),
    })
}

/// A prekey of `to` from its peer (`GetPayTo`), checked: the peer's
/// voucher for the name, the payee's signature on the key.
async fn prekey(
    link: &PeerLink,
    keys: &OwnerKeys,
    state: &ChainState,
    to: &WalletName,
    payee_peer: &dag::ledger::genesis::GenesisPeer,
) -> Result<PeerKey, SessionError> {
    let ask = WalletMessage::GetPayTo {
        name: to.login.clone(),
    };
    let answer = if to.peer == state.name.peer {
        link.request(ask).await?
    } else {
        let other = PeerLink::connect(
            state.chain,
            keys.login(),
            &to.peer,
            payee_peer.key,
            payee_peer.addr,
        )
        .await?;
        let a = other.request(ask).await;
        other.close();
        a?
    };
    let WalletMessage::PayTo(pay_to) = answer else {
        return Err(unexpected(to.peer.clone(), "pay to"));
    };
    Ok(pay_to
        .verify(&state.chain, to, &payee_peer.key)
        .map_err(|e| ChainError::BadVoucher {
            peer: to.peer.clone(),
            why: e.to_string(),
        })?)
}

/// Sign `outputs` over `inputs` with `actions` (one MuSig signature of the
/// inputs' keys and the keys `extra`, an issuer's), save the state (the
/// change index taken), submit to our peer, wait for finality and sync.
#[allow(clippy::too_many_arguments)]
async fn submit_with(
    link: &PeerLink,
    dir: &Path,
    keys: &OwnerKeys,
    state: &mut ChainState,
    genesis: &Genesis,
    inputs: &[crate::chain::Held],
    outputs: Vec<Output>,
    actions: Vec<dag::ledger::transaction::Action>,
    extra: Vec<schnorrkel::Keypair>,
    (what, wait): (&'static str, Duration),
) -> Result<Sent, SessionError> {
    let mut signing: Vec<_> = inputs
        .iter()
        .map(|h| keys.derive(h.purpose, h.index))
        .collect();
    for k in extra {
        if !signing.iter().any(|s| s.public == k.public) {
            signing.push(k);
        }
    }
    let mut body = TxBody {
        chain: state.chain,
        inputs: inputs.iter().map(|h| h.id).collect(),
        outputs,
        actions,
        fee: 0,
        memo: None,
        signers: Vec::new(),
        aggregate: dag::identity::PeerKey([0; 32]),
    };
    let refs: Vec<&schnorrkel::Keypair> = signing.iter().collect();
    body.set_signers(
        refs.iter()
            .map(|k| dag::identity::PeerKey(k.public.to_bytes())),
    )
    .map_err(|e| SessionError::Payment(format!("signers: {e}")))?;
    let (_, _, signature) = sign_local(&refs, &body.id())
        .map_err(|e| SessionError::Payment(format!("signing: {e}")))?;
    let tx = Transaction { body, signature };
    let id = tx.id();
    // The change key is taken before the transaction leaves.
    state.save(dir)?;
    let answer = link
        .request(WalletMessage::Submit(vec![tx.encode()]))
        .await?;
    match answer {
        WalletMessage::Submitted(list) => {
            if let Some((_, Some(why))) = list.iter().find(|(t, _)| *t == id) {
                return Err(SessionError::Payment(format!(
                    "peer {} refused the transaction: {why}",
                    state.name.peer
                )));
            }
        }
        _ => return Err(unexpected(state.name.peer.clone(), "submit")),
    }
    let first = tx.body.outputs.first().map(|o| (o.asset, o.value));
    let (height, outcome) = link.wait_final(id, wait).await?;
    state.history.push(crate::chain::Event {
        height,
        what: if matches!(outcome, Outcome::Applied) {
            what.to_string()
        } else {
            format!("{what} (rejected: {outcome:?})")
        },
        tx: Some(id),
        output: None,
        value: first,
        tx_bytes: Some(tx.encode()),
    });
    // The peer's word on finality is checked by the next sync: the spent
    // inputs and the change must show in the proven state.
    converse(link, keys, state, genesis).await?;
    state.save(dir)?;
    Ok(Sent {
        tx: id,
        height,
        outcome,
    })
}

/// How long a submitted transaction may take to become final before the
/// peer is suspected of dropping it, unless told otherwise.
pub const FINALITY_TIMEOUT: Duration = Duration::from_secs(60);

/// Move `amount` (all, if `None`) of the wallet's native money to be
/// hosted by peer `host`: the wallet's stake vote. A transaction to the
/// wallet's own next change key, like a payment.
pub async fn stake(
    dir: &Path,
    keys: &OwnerKeys,
    state: &mut ChainState,
    genesis: &Genesis,
    host: &str,
    amount: Option<u128>,
    wait: Duration,
) -> Result<Sent, SessionError> {
    let host_key = genesis
        .peers
        .iter()
        .find(|p| p.name == host)
        .map(|p| p.key)
        .ok_or_else(|| SessionError::UnknownPeer(host.to_string()))?;
    let link = connect_own(keys, state).await?;
    let result = async {
        converse(&link, keys, state, genesis).await?;
        state.save(dir)?;
        let all: u128 = state
            .holdings()
            .get(&AssetId::NATIVE)
            .map_or(0, |h| h.amount);
        let amount = amount.unwrap_or(all);
        if amount == 0 {
            return Err(SessionError::Payment("no native money to stake".into()));
        }
        let (inputs, total) = state
            .select(&AssetId::NATIVE, amount)
            .map(|(hs, t)| (hs.into_iter().cloned().collect::<Vec<_>>(), t))
            .ok_or_else(|| {
                SessionError::Payment(format!("not enough funds: {all} held, {amount} asked"))
            })?;
        let first_host = inputs[0].state.output.host;
        let mut outputs = Vec::new();
        for (value, host) in [(amount, Some(host_key)), (total - amount, first_host)] {
            if value == 0 {
                continue;
            }
            let change = state.change_next;
            state.change_next += 1;
            outputs.push(Output {
                owner: keys.public(KeyPurpose::Change, change),
                asset: AssetId::NATIVE,
                host,
                value: Value::Amount(value),
            });
        }
        submit_with(
            &link,
            dir,
            keys,
            state,
            genesis,
            &inputs,
            outputs,
            Vec::new(),
            Vec::new(),
            ("staked", wait),
        )
        .await
    }
    .await;
    link.close();
    result
}

/// An asset operation of this wallet.
#[derive(Clone, Debug)]
pub enum AssetOp {
    /// A new asset: fungible with `supply` (and `precision`), or unique
    /// items (`precision` None, no supply); mintable later or not.
    Issue {
        name: String,
        precision: Option<u8>,
        supply: u128,
        mintable: bool,
    },
    /// More of an asset this wallet issued: an amount, or one item.
    Mint {
        asset: AssetId,
        amount: u128,
        item: Option<Hash>,
    },
    /// Destroy an amount held, or one item held.
    Burn {
        asset: AssetId,
        amount: u128,
        item: Option<Hash>,
    },
}

/// Carry out `op` in one transaction; for an issue, the new asset's id.
pub async fn asset_op(
    dir: &Path,
    keys: &OwnerKeys,
    state: &mut ChainState,
    genesis: &Genesis,
    op: AssetOp,
    wait: Duration,
) -> Result<(Sent, Option<AssetId>), SessionError> {
    use dag::ledger::asset::{AssetClass, AssetDef};
    use dag::ledger::transaction::Action;
    let link = connect_own(keys, state).await?;
    let result = async {
        converse(&link, keys, state, genesis).await?;
        state.save(dir)?;
        let change = |state: &mut ChainState| {
            let i = state.change_next;
            state.change_next += 1;
            keys.public(KeyPurpose::Change, i)
        };
        // A native output carries issues and mints (a transaction spends
        // at least one output); it goes back whole to a change key.
        let carrier = |state: &ChainState| {
            state
                .select(&AssetId::NATIVE, 1)
                .map(|(hs, _)| hs[0].clone())
                .ok_or_else(|| SessionError::Payment("no native output to carry it".into()))
        };
        let back = |h: &crate::chain::Held, owner| Output {
            owner,
            asset: h.state.output.asset,
            host: h.state.output.host,
            value: h.state.output.value,
        };
        let what = match &op {
            AssetOp::Issue { .. } => "issued",
            AssetOp::Mint { .. } => "minted",
            AssetOp::Burn { .. } => "burned",
        };
        let (inputs, outputs, actions, extra, issued) = match op {
            AssetOp::Issue {
                name,
                precision,
                supply,
                mintable,
            } => {
                let c = carrier(state)?;
                let index = state.issuer_next;
                state.issuer_next += 1;
                let issuer = keys.derive(KeyPurpose::Issuer, index);
                let asset = AssetId::issued(&c.id, 0);
                let class = match precision {
                    Some(p) => AssetClass::Fungible { precision: p },
                    None => AssetClass::Unique,
                };
                let mut actions = vec![Action::Issue(AssetDef {
                    name,
                    class,
                    issuer: dag::identity::PeerKey(issuer.public.to_bytes()),
                    mintable,
                })];
                let mut outputs = vec![back(&c, change(state))];
                if supply > 0 {
                    actions.push(Action::Mint {
                        asset,
                        amount: supply,
                    });
                    outputs.push(Output {
                        owner: change(state),
                        asset,
                        host: None,
                        value: Value::Amount(supply),
                    });
                }
                state.issued.push((asset, index));
                (vec![c], outputs, actions, vec![issuer], Some(asset))
            }
            AssetOp::Mint {
                asset,
                amount,
                item,
            } => {
                let index = state
                    .issued
                    .iter()
                    .find(|(a, _)| *a == asset)
                    .map(|(_, i)| *i)
                    .ok_or_else(|| {
                        SessionError::Payment(format!(
                            "asset {} was not issued by this wallet",
                            asset.0
                        ))
                    })?;
                let c = carrier(state)?;
                let (action, value) = match item {
                    Some(item) => (Action::MintItem { asset, item }, Value::Item(item)),
                    None => (Action::Mint { asset, amount }, Value::Amount(amount)),
                };
                let outputs = vec![
                    back(&c, change(state)),
                    Output {
                        owner: change(state),
                        asset,
                        host: None,
                        value,
                    },
                ];
                (
                    vec![c],
                    outputs,
                    vec![action],
                    vec![keys.derive(KeyPurpose::Issuer, index)],
                    None,
                )
            }
            AssetOp::Burn {
                asset,
                amount,
                item,
            } => match item {
                Some(item) => {
                    let h = state
                        .outputs
                        .iter()
                        .find(|h| {
                            h.state.output.asset == asset
                                && h.state.output.value == Value::Item(item)
                        })
                        .cloned()
                        .ok_or_else(|| {
                            SessionError::Payment("this wallet does not hold that item".into())
                        })?;
                    let c = carrier(state)?;
                    let outputs = vec![back(&c, change(state))];
                    (
                        vec![h, c],
                        outputs,
                        vec![Action::BurnItem { asset, item }],
                        Vec::new(),
                        None,
                    )
                }
                None => {
                    let (hs, total) = state
                        .select(&asset, amount)
                        .map(|(hs, t)| (hs.into_iter().cloned().collect::<Vec<_>>(), t))
                        .ok_or_else(|| SessionError::Payment("not enough of that asset".into()))?;
                    let mut outputs = Vec::new();
                    if total > amount {
                        outputs.push(Output {
                            owner: change(state),
                            asset,
                            host: hs[0].state.output.host,
                            value: Value::Amount(total - amount),
                        });
                    }
                    (
                        hs,
                        outputs,
                        vec![Action::Burn { asset, amount }],
                        Vec::new(),
                        None,
                    )
                }
            },
        };
        let sent = submit_with(
            &link,
            dir,
            keys,
            state,
            genesis,
            &inputs,
            outputs,
            actions,
            extra,
            (what, wait),
        )
        .await?;
        Ok((sent, issued))
    }
    .await;
    link.close();
    result
}

/// A receipt for transaction `tx` of this wallet: its inclusion in the
/// history under the peer's latest certified checkpoint, checked here
/// before it is handed out.
pub async fn receipt(
    keys: &OwnerKeys,
    state: &ChainState,
    genesis: &Genesis,
    tx: Hash,
) -> Result<dag::ledger::light::Receipt, SessionError> {
    let ev = state
        .history
        .iter()
        .find(|e| e.tx == Some(tx) && e.tx_bytes.is_some())
        .ok_or_else(|| {
            SessionError::Payment(format!("{tx} is not a transaction this wallet made"))
        })?;
    let bytes = ev.tx_bytes.as_deref().unwrap_or_default();
    let body: Transaction = proofs::decode(bytes, bytes.len())
        .map_err(|e| SessionError::Payment(format!("the stored transaction: {e}")))?;
    let link = connect_own(keys, state).await?;
    let answer = link
        .request(WalletMessage::GetInclusion {
            tx,
            height: ev.height,
        })
        .await;
    link.close();
    let WalletMessage::Inclusion(inclusion) = answer? else {
        return Err(unexpected(state.name.peer.clone(), "inclusion"));
    };
    let receipt = dag::ledger::light::Receipt {
        tx: body,
        height: ev.height,
        inclusion: *inclusion,
        handovers: state.handovers.clone(),
    };
    let committee = genesis.committee().map_err(|e| SessionError::Genesis {
        path: GENESIS_FILE.into(),
        why: e.to_string(),
    })?;
    receipt
        .verify(&state.chain, committee)
        .map_err(|error| ChainError::Lied {
            peer: state.name.peer.clone(),
            error,
        })?;
    Ok(receipt)
}
