//! What a peer answers its wallets besides submissions: login names
//! (vouched for with the peer's signature), proven syncs of keys and
//! outputs against the latest certified checkpoint, and the certified
//! committee hand-overs a wallet walks from genesis. Runs on the driver
//! thread, between inputs, so the ledger is at a committed height.

use crate::driver::Driver;
use crate::store::Store;
use dag::identity::{PeerKey, Signer};
use dag::ledger::checkpoint::{Certified, Handover};
use dag::ledger::names::{NameVoucher, PayTo, ReceiveKey, WalletName, MAX_RECEIVE_KEYS};
use dag::ledger::peers::check_name;
use dag::wire::{WalletMessage, MAX_REFUSAL, MAX_WALLET_HANDOVERS};
use proofs::Hash;
use tracing::{debug, warn};

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
        Some(Lie::DropSubmissions) | None => {}
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
