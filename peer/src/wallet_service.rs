//! What a peer answers its wallets besides submissions: login names
//! (vouched for with the peer's signature), proven syncs of keys and
//! outputs against the latest certified checkpoint, and the certified
//! committee hand-overs a wallet walks from genesis. Runs on the driver
//! thread, between inputs, so the ledger is at a committed height.

use crate::driver::Driver;
use crate::store::Store;
use dag::identity::{PeerKey, Signer};
use dag::ledger::checkpoint::{Certified, Handover};
use dag::ledger::light::Inclusion;
use dag::ledger::names::{NameVoucher, PayTo, ReceiveKey, WalletName, MAX_RECEIVE_KEYS};
use dag::ledger::peers::check_name;
use dag::wire::{WalletMessage, MAX_REFUSAL, MAX_WALLET_HANDOVERS};
use proofs::Hash;
use tracing::{debug, warn};

/// One link of a wallet: its login key and the link's id (a wallet may
/// hold a few links at once, and an answer goes back on the link that
/// asked).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WalletAt {
    pub key: PeerKey,
    pub link: usize,
}

/// Requests one wallet key may make per second on average (each may cost
/// proofs of a thousand outputs or 64 signature checks)…
pub const MAX_REQUESTS_PER_SEC: u32 = 10;
/// …and at once: a login or a payment is a burst of a few requests.
pub const MAX_REQUEST_BURST: u32 = 50;
/// Wallet keys tracked at most; full buckets are forgotten first.
const MAX_TRACKED_WALLETS: usize = 4096;

/// Per-wallet request budget: a token bucket of [`MAX_REQUEST_BURST`]
/// refilled at [`MAX_REQUESTS_PER_SEC`], over a bounded map.
#[derive(Default)]
pub struct Budget {
    buckets: std::collections::HashMap<PeerKey, (std::time::Instant, f64)>,
}

impl Budget {
    pub fn allow(&mut self, wallet: PeerKey, now: std::time::Instant) -> bool {
        let burst = f64::from(MAX_REQUEST_BURST);
        let level = |(at, tokens): &(std::time::Instant, f64)| {
            (tokens + now.duration_since(*at).as_secs_f64() * f64::from(MAX_REQUESTS_PER_SEC))
                .min(burst)
        };
        if self.buckets.len() >= MAX_TRACKED_WALLETS && !self.buckets.contains_key(&wallet) {
            // A full bucket is what a new one would be: forget those.
            self.buckets.retain(|_, b| level(b) < burst);
            if self.buckets.len() >= MAX_TRACKED_WALLETS {
                return false;
            }
        }
        let b = self.buckets.entry(wallet).or_insert((now, burst));
        let tokens = level(b);
        if tokens < 1.0 {
            *b = (now, tokens);
            return false;
        }
        *b = (now, tokens - 1.0);
        true
    }
}

/// Ways a test peer lies to its wallets (`test_lie` in its config).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lie {
    /// Leave the last output of a key out of a sync answer.
    HideOutput,
    /// Add one unit to the first output's amount.
    WrongAmount,
    /// Keep only one signature of the certified checkpoint.
    WeakRoot,
    /// Take submitted transactions and never propose them.
    DropSubmissions,
    /// In rendezvous answers, vouch for a login key other than the
    /// answering wallet's (a man in the middle).
    SubstituteLinkKey,
}

/// Apply `lie` to an answer about to be sent.
pub fn tell(lie: Option<Lie>, answer: WalletMessage) -> WalletMessage {
    let WalletMessage::Synced(mut a) = answer else {
        return answer;
    };
    match lie {
        Some(Lie::HideOutput) => {
            if let Some(k) = a.keys.iter_mut().find(|k| !k.outputs.is_empty()) {
                k.outputs.pop();
            }
        }
        Some(Lie::WrongAmount) => {
            let first = a
                .keys
                .iter_mut()
                .flat_map(|k| k.outputs.iter_mut())
                .chain(a.watched.iter_mut())
                .find_map(|o| o.state.as_mut());
            if let Some(s) = first {
                if let dag::ledger::output::Value::Amount(n) = &mut s.output.value {
                    *n = n.wrapping_add(1);
                }
            }
        }
        Some(Lie::WeakRoot) => a.checkpoint.signatures.truncate(1),
        Some(Lie::DropSubmissions | Lie::SubstituteLinkKey) | None => {}
    }
    WalletMessage::Synced(a)
}

/// The answer to wallet `from`'s request `msg` (`None`: not a request).
pub fn answer(
    driver: &Driver,
    store: &Store,
    signer: &mut Signer,
    chain: Hash,
    peer_name: &str,
    from: PeerKey,
    msg: WalletMessage,
) -> Option<WalletMessage> {
    let (what, result) = match msg {
        WalletMessage::Register { name } => {
            ("register", register(store, signer, chain, from, &name))
        }
        WalletMessage::Sync(req) => (
            "sync",
            match driver.last_certified() {
                None => Err("no certified checkpoint yet: try again shortly".to_string()),
                Some(cert) => driver
                    .ledger()
                    .prove_sync(&req, cert)
                    .map(|a| WalletMessage::Synced(Box::new(a)))
                    .map_err(|e| e.to_string()),
            },
        ),
        WalletMessage::GetHandovers { after } => ("handovers", handovers(store, after)),
        WalletMessage::PutReceiveKeys { name, keys } => (
            "receive keys",
            put_receive_keys(store, chain, peer_name, from, &name, keys),
        ),
        WalletMessage::GetPayTo { name } => ("pay to", pay_to(store, signer, chain, &name)),
        WalletMessage::GetInclusion { tx, height } => {
            ("inclusion", inclusion(driver, store, tx, height))
        }
        _ => return None,
    };
    Some(result.unwrap_or_else(|reason| {
        debug!(wallet = %from, what, "wallet request refused: {reason}");
        let mut reason = reason;
        reason.truncate(MAX_REFUSAL - what.len());
        WalletMessage::Refused {
            what: what.into(),
            reason,
        }
    }))
}

fn register(
    store: &Store,
    signer: &mut Signer,
    chain: Hash,
    login: PeerKey,
    name: &str,
) -> Result<WalletMessage, String> {
    check_name(name).map_err(|e| format!("name {name:?}: {e}"))?;
    let owner = store.claim_name(name, &login).map_err(|e| {
        warn!("storing a login name: {e}");
        "the peer could not store the name".to_string()
    })?;
    if owner != login {
        return Err(format!("the name {name:?} is taken on this peer"));
    }
    Ok(WalletMessage::Registered(NameVoucher::sign(
        chain, signer, name, login,
    )))
}

fn handovers(store: &Store, after: u64) -> Result<WalletMessage, String> {
    let all = store.handovers().map_err(|e| {
        warn!("reading hand-overs: {e}");
        "the peer could not read its hand-overs".to_string()
    })?;
    let mut out = Vec::new();
    for (snapshot, bytes) in all.into_iter().filter(|(s, _)| *s > after) {
        if out.len() == MAX_WALLET_HANDOVERS {
            break;
        }
        let h: Certified<Handover> = proofs::decode(&bytes, bytes.len()).map_err(|e| {
            warn!(snapshot, "a stored hand-over does not decode: {e}");
            "the peer's hand-overs are damaged".to_string()
        })?;
        out.push(h);
    }
    Ok(WalletMessage::Handovers(out))
}

fn put_receive_keys(
    store: &Store,
    chain: Hash,
    peer_name: &str,
    login: PeerKey,
    name: &str,
    keys: Vec<ReceiveKey>,
) -> Result<WalletMessage, String> {
    let owner = store.name_owner(name).map_err(|e| {
        warn!("reading a login name: {e}");
        "the peer could not read its names".to_string()
    })?;
    if owner != Some(login) {
        return Err(format!(
            "the name {name:?} is not this wallet's on this peer"
        ));
    }
    let full = WalletName {
        login: name.to_string(),
        peer: peer_name.to_string(),
    };
    // Keep only keys the login key signed: a payer would refuse others.
    for k in &keys {
        k.verify(&chain, &full, &login)
            .map_err(|e| format!("receive key {}: {e}", k.key))?;
    }
    let n = keys.len().min(MAX_RECEIVE_KEYS);
    store
        .put_receive_keys(name, &proofs::encode(&keys[..n].to_vec()))
        .map_err(|e| {
            warn!("storing receive keys: {e}");
            "the peer could not store the keys".to_string()
        })?;
    Ok(WalletMessage::Stocked(n as u32))
}

fn pay_to(
    store: &Store,
    signer: &mut Signer,
    chain: Hash,
    name: &str,
) -> Result<WalletMessage, String> {
    let read_err = |e: crate::store::StoreError| {
        warn!("reading receive keys: {e}");
        "the peer could not read its names".to_string()
    };
    let login = store
        .name_owner(name)
        .map_err(read_err)?
        .ok_or_else(|| format!("no wallet named {name:?} on this peer"))?;
    let key = store
        .take_receive_key(name, |bytes| {
            let mut keys: Vec<ReceiveKey> = proofs::decode(bytes, bytes.len()).ok()?;
            let k = keys.pop()?;
            Some((k, proofs::encode(&keys)))
        })
        .map_err(read_err)?
        .ok_or_else(|| {
            format!("{name} has no receive keys left here: its wallet must come online")
        })?;
    Ok(WalletMessage::PayTo(PayTo {
        voucher: NameVoucher::sign(chain, signer, name, login),
        key,
    }))
}

/// Where applied transaction `tx` of `height` sits in the history, proven
/// against the latest certified checkpoint. The leaf index is found from
/// the stored height records (`item_leaf_index`); the ledger's own leaf
/// there must be the transaction's, applied.
fn inclusion(
    driver: &Driver,
    store: &Store,
    tx: Hash,
    height: u64,
) -> Result<WalletMessage, String> {
    use dag::ledger::apply::{item_leaf, item_leaf_index, Outcome};
    let cert = driver
        .last_certified()
        .ok_or("no certified checkpoint yet: try again shortly")?;
    if height == 0 || height > cert.statement.height {
        return Err(format!("height {height} is not certified yet"));
    }
    let record = |h: u64| -> Result<crate::driver::HeightRecord, String> {
        let found = store
            .heights_from(h, 1)
            .map_err(|e| format!("reading height {h}: {e}"))?
            .into_iter()
            .find(|(k, _)| *k == h)
            .ok_or_else(|| format!("this peer does not keep the record of height {h}"))?;
        proofs::decode(&found.1, usize::MAX).map_err(|e| format!("height {h}'s record: {e}"))
    };
    let before = if height == 1 {
        dag::ledger::genesis::GENESIS_HISTORY_LEAVES
    } else {
        record(height - 1)?.roots.history_leaves
    };
    let max = driver.ledger().params().max_tx_bytes as usize;
    let at = item_leaf_index(before, &record(height)?.events, max, &tx);
    let at = at.ok_or_else(|| format!("transaction {tx} is not in height {height}"))?;
    let history = driver.ledger().history();
    let leaf = item_leaf(&tx, &Outcome::Applied);
    let stored = history
        .leaf_node(at)
        .map_err(|e| format!("reading the history: {e}"))?;
    if stored != proofs::mmr::leaf_hash(&leaf) {
        return Err(format!("transaction {tx} was not applied"));
    }
    let proof = history
        .inclusion_proof_at(at, cert.statement.roots.history_leaves)
        .map_err(|e| format!("proving: {e}"))?;
    Ok(WalletMessage::Inclusion(Box::new(Inclusion {
        leaf_index: at,
        outcome: Outcome::Applied,
        proof,
        checkpoint: cert.clone(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn each_wallet_gets_its_budget_and_the_map_stays_bounded() {
        let mut b = Budget::default();
        let t = Instant::now();
        let a = PeerKey([1; 32]);
        let c = PeerKey([2; 32]);
        for _ in 0..MAX_REQUEST_BURST {
            assert!(b.allow(a, t));
        }
        assert!(!b.allow(a, t), "over the burst");
        assert!(b.allow(c, t), "another wallet has its own");
        // Refilled at the rate: one more after 1/rate seconds.
        let later = t + Duration::from_secs_f64(1.05 / f64::from(MAX_REQUESTS_PER_SEC));
        assert!(b.allow(a, later));
        assert!(!b.allow(a, later));
        // A flood of fresh keys never grows the map past its bound.
        for i in 0..(MAX_TRACKED_WALLETS as u32 + 100) {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_le_bytes());
            k[31] = 9;
            b.allow(PeerKey(k), t);
        }
        assert!(b.buckets.len() <= MAX_TRACKED_WALLETS);
    }
}
