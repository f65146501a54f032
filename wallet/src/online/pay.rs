//! Payments over a wallet link, in `wallet online`.
//!
//! Payer side: `wallet send` (the command, which alone loads and saves the
//! payer's state) asks its daemon for a fresh key of the payee
//! (`pay_key`) and later hands it the final transaction with its inclusion
//! proof (`pay_proof`); the daemon only forwards them over the link
//! (`PayKeyAsk`, `Paid`) and checks the key's signature against the login
//! key the link is bound to.
//!
//! Payee side: a `PayKeyAsk` takes a receive index never handed out
//! (saved in the payee's state before the key leaves) and answers with the
//! key signed by the login key, as a prekey is; a `Paid` is checked (the
//! transaction pays that key, its inclusion proof verifies under a
//! checkpoint the payee's committee chain certifies, and the payee's own
//! sync then holds the output) and acknowledged.

use super::{fail, path_json, Note, Online, PAID_TIMEOUT, PAY_KEY_TIMEOUT};
use crate::chain::ChainState;
use crate::state_lock::StateLock;
use dag::identity::{PeerKey, Signer};
use dag::ledger::apply::Outcome;
use dag::ledger::light::{Inclusion, Receipt};
use dag::ledger::names::{ReceiveKey, WalletName};
use dag::ledger::owner_keys::KeyPurpose;
use dag::ledger::transaction::Transaction;
use dag::rendezvous::MAX_REASON;
use dag::wire::{DirectMessage, MAX_DIRECT_MESSAGE};
use rand_core::{OsRng, RngCore};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::{info, warn};

/// Keys handed to payers and not yet paid, remembered at most (each
/// allocation is also bounded by the key gap in the state).
const MAX_GIVEN: usize = 64;
/// How long the payee keeps syncing for the payment's height.
const SYNC_FOR_PAYMENT: Duration = Duration::from_secs(30);

/// What a payer's command waits for.
enum Waiting {
    Key,
    Ack,
}

#[derive(Default)]
pub(super) struct Payments {
    next_ask: u64,
    /// Payer side: asks in flight, by number: the payee's login key, what
    /// is awaited, since when, and the command waiting.
    asks: HashMap<u64, (PeerKey, Waiting, Instant, oneshot::Sender<Value>)>,
    /// Payee side: the key handed to (payer, ask).
    given: HashMap<(PeerKey, u64), PeerKey>,
    /// Payee side: asks being served (a key being made, a payment checked).
    busy: HashSet<(PeerKey, u64)>,
}

impl Payments {
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.asks
            .values()
            .map(|(_, w, at, _)| *at + timeout(w))
            .min()
    }
}

/// A reason short enough for the wire (`MAX_REASON` bytes).
fn bounded(mut reason: String) -> String {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.truncate(end);
    reason
}

fn timeout(w: &Waiting) -> Duration {
    match w {
        Waiting::Key => PAY_KEY_TIMEOUT,
        Waiting::Ack => PAID_TIMEOUT,
    }
}

impl Online {
    /// `pay_key {to}` and `pay_proof {to, ask, height, tx, inclusion}`
    /// from the payer's `send` command.
    pub(super) fn pay_request(&mut self, op: &str, req: &Value, tx: oneshot::Sender<Value>) {
        let to = req["to"].as_str().unwrap_or_default();
        let Some(key) = self.link_named(to) else {
            let _ = tx.send(fail(&format!("no link to {to}")));
            return;
        };
        match op {
            "pay_key" => {
                self.pay.next_ask += 1;
                let ask = self.pay.next_ask;
                self.send_direct(&key, DirectMessage::PayKeyAsk { ask });
                self.pay
                    .asks
                    .insert(ask, (key, Waiting::Key, Instant::now(), tx));
            }
            _ => {
                let parsed = (|| -> Result<_, String> {
                    let ask = req["ask"].as_u64().ok_or("no ask")?;
                    let height = req["height"].as_u64().ok_or("no height")?;
                    let tx_bytes = crate::control::hex_bytes(req["tx"].as_str().unwrap_or(""))?;
                    let inclusion =
                        crate::control::hex_bytes(req["inclusion"].as_str().unwrap_or(""))?;
                    let inclusion: Inclusion = proofs::decode(&inclusion, MAX_DIRECT_MESSAGE)
                        .map_err(|e| format!("inclusion: {e}"))?;
                    Ok((ask, height, tx_bytes, inclusion))
                })();
                let (ask, height, tx_bytes, inclusion) = match parsed {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(fail(&format!("pay_proof: {e}")));
                        return;
                    }
                };
                self.send_direct(
                    &key,
                    DirectMessage::Paid {
                        ask,
                        height,
                        tx: tx_bytes,
                        inclusion: Box::new(inclusion),
                    },
                );
                self.pay
                    .asks
                    .insert(ask, (key, Waiting::Ack, Instant::now(), tx));
            }
        }
    }

    /// A payment message over the link with `key` (wallet `name`).
    pub(super) fn on_pay_message(&mut self, key: PeerKey, name: String, msg: DirectMessage) {
        match msg {
            // Payer side: answers to our asks, only from the wallet asked.
            DirectMessage::PayKey { ask, key: rk } => {
                let Some(w) = self.answered(ask, &key, |w| matches!(w, Waiting::Key)) else {
                    return;
                };
                // The link is bound to `key` (the TLS handshake was signed
                // by it) and `name` was vouched for it at connect.
                let checked = WalletName::parse(&name)
                    .map_err(|e| e.to_string())
                    .and_then(|n| rk.verify(&self.chain, &n, &key).map_err(|e| e.to_string()));
                let _ = w.send(match checked {
                    Ok(()) => {
                        let mut v = self.link_path(&key);
                        v["ok"] = json!(true);
                        v["ask"] = json!(ask);
                        v["key"] = json!(rk.key.to_string());
                        v
                    }
                    Err(e) => fail(&format!(
                        "{name} sent a key its login key did not sign: {e}"
                    )),
                });
            }
            DirectMessage::PayKeyRefused { ask, reason } => {
                if let Some(w) = self.answered(ask, &key, |w| matches!(w, Waiting::Key)) {
                    let _ = w.send(fail(&format!("{name} gave no key: {reason}")));
                }
            }
            DirectMessage::PaidAck { ask, refused } => {
                if let Some(w) = self.answered(ask, &key, |w| matches!(w, Waiting::Ack)) {
                    let _ = w.send(match refused {
                        None => {
                            let mut v = self.link_path(&key);
                            v["ok"] = json!(true);
                            v
                        }
                        Some(reason) => fail(&format!("{name} did not take the proof: {reason}")),
                    });
                }
            }
            // Payee side.
            DirectMessage::PayKeyAsk { ask } => self.make_pay_key(key, name, ask),
            DirectMessage::Paid {
                ask,
                height,
                tx,
                inclusion,
            } => self.check_paid(key, name, ask, height, tx, *inclusion),
            _ => {}
        }
    }

    /// The command waiting for `ask`, if `from` is the wallet asked and
    /// the answer is of the awaited kind.
    fn answered(
        &mut self,
        ask: u64,
        from: &PeerKey,
        kind: impl Fn(&Waiting) -> bool,
    ) -> Option<oneshot::Sender<Value>> {
        match self.pay.asks.get(&ask) {
            Some((k, w, _, _)) if k == from && kind(w) => {
                self.pay.asks.remove(&ask).map(|(_, _, _, tx)| tx)
            }
            _ => None,
        }
    }

    fn link_path(&self, key: &PeerKey) -> Value {
        self.links
            .get(key)
            .map_or(json!({"path": "direct"}), |l| path_json(&l.path))
    }

    /// Payee side: a fresh receive key for `payer`, made in a task (the
    /// state file is read and written under the daemon's state lock).
    fn make_pay_key(&mut self, payer: PeerKey, name: String, ask: u64) {
        if self.pay.given.len() + self.pay.busy.len() >= MAX_GIVEN {
            self.send_direct(
                &payer,
                DirectMessage::PayKeyRefused {
                    ask,
                    reason: "too many keys handed out and not paid".into(),
                },
            );
            return;
        }
        if self.pay.given.contains_key(&(payer, ask)) || !self.pay.busy.insert((payer, ask)) {
            return;
        }
        info!(payer = %name, "a key asked for a payment");
        let (dir, keys, chain, me) = (
            self.dir.clone(),
            self.keys.clone(),
            self.chain,
            self.name.clone(),
        );
        let notes = self.notes_tx.clone();
        tokio::spawn(async move {
            let made = async {
                let _held = StateLock::take_async(&dir)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut state = ChainState::load(&dir).map_err(|e| e.to_string())?;
                let index = state.take_direct_key()?;
                // Saved before the key leaves: it is never handed out again.
                state.save(&dir).map_err(|e| e.to_string())?;
                let mut seed = [0u8; 32];
                OsRng.fill_bytes(&mut seed);
                let mut login = Signer::from_keypair(keys.login(), seed);
                Ok(ReceiveKey::sign(
                    &chain,
                    &me,
                    &mut login,
                    keys.public(KeyPurpose::Receive, index),
                ))
            }
            .await;
            let _ = notes.send(Note::PayKey(payer, ask, made)).await;
        });
    }

    /// Payee side: the key for (`payer`, `ask`) is made (or not): send it.
    pub(super) fn pay_key_made(
        &mut self,
        payer: PeerKey,
        ask: u64,
        made: Result<ReceiveKey, String>,
    ) {
        self.pay.busy.remove(&(payer, ask));
        match made {
            Ok(rk) => {
                self.pay.given.insert((payer, ask), rk.key);
                self.send_direct(&payer, DirectMessage::PayKey { ask, key: rk });
            }
            Err(reason) => {
                warn!("no key for a payer: {reason}");
                let reason = bounded(reason);
                self.send_direct(&payer, DirectMessage::PayKeyRefused { ask, reason });
            }
        }
    }

    /// Payee side: check a payment to the key given for `ask`, in a task:
    /// sync until our proven state reaches its height, check the inclusion
    /// proof as a receipt, find the output in our own proven state, keep
    /// the transaction with it (so it has a receipt), acknowledge.
    fn check_paid(
        &mut self,
        payer: PeerKey,
        name: String,
        ask: u64,
        height: u64,
        tx_bytes: Vec<u8>,
        inclusion: Inclusion,
    ) {
        let Some(&owner) = self.pay.given.get(&(payer, ask)) else {
            self.send_direct(
                &payer,
                DirectMessage::PaidAck {
                    ask,
                    refused: Some(format!("no key was handed to you for ask {ask}")),
                },
            );
            return;
        };
        if !self.pay.busy.insert((payer, ask)) {
            return;
        }
        let (dir, keys, genesis, chain) = (
            self.dir.clone(),
            self.keys.clone(),
            self.genesis.clone(),
            self.chain,
        );
        let notes = self.notes_tx.clone();
        tokio::spawn(async move {
            let checked = async {
                let tx: Transaction = proofs::decode(&tx_bytes, MAX_DIRECT_MESSAGE)
                    .map_err(|e| format!("the transaction does not decode: {e}"))?;
                if tx.body.chain != chain {
                    return Err("the transaction is of another chain".to_string());
                }
                if !tx.body.outputs.iter().any(|o| o.owner == owner) {
                    return Err("the transaction pays nothing to the key handed out".into());
                }
                let id = tx.id();
                let _held = StateLock::take_async(&dir)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut state = ChainState::load(&dir).map_err(|e| e.to_string())?;
                let deadline = Instant::now() + SYNC_FOR_PAYMENT;
                loop {
                    crate::session::sync(&dir, &keys, &mut state, &genesis)
                        .await
                        .map_err(|e| format!("syncing: {e}"))?;
                    let at = state.checkpoint.as_ref().map_or(0, |c| c.statement.height);
                    if at >= height {
                        break;
                    }
                    if Instant::now() > deadline {
                        return Err(format!(
                            "our peer's certified height is still {at}, below {height}"
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                let committee = genesis.committee().map_err(|e| e.to_string())?;
                let outcome = Receipt {
                    tx,
                    height,
                    inclusion,
                    handovers: state.handovers.clone(),
                }
                .verify(&chain, committee)
                .map_err(|e| format!("the inclusion proof: {e}"))?;
                if !matches!(outcome, Outcome::Applied) {
                    return Err(format!("the transaction was not applied: {outcome:?}"));
                }
                // Held by our own proven state, not by the payer's word.
                let received: Vec<_> = state
                    .history
                    .iter_mut()
                    .filter(|e| e.tx == Some(id) && e.output.is_some())
                    .collect();
                if received.is_empty() {
                    return Err(format!(
                        "our sync to height {height} shows no output of {id}"
                    ));
                }
                for e in received {
                    e.tx_bytes = Some(tx_bytes.clone());
                }
                state.save(&dir).map_err(|e| e.to_string())?;
                Ok(())
            }
            .await;
            match &checked {
                Ok(()) => info!(payer = %name, "a payment over the link checked and held"),
                Err(e) => warn!(payer = %name, "a payment over the link refused: {e}"),
            }
            let _ = notes.send(Note::Paid(payer, ask, checked)).await;
        });
    }

    /// Payee side: the payment for (`payer`, `ask`) is checked (or not).
    pub(super) fn paid_checked(&mut self, payer: PeerKey, ask: u64, r: Result<(), String>) {
        self.pay.busy.remove(&(payer, ask));
        self.pay.given.remove(&(payer, ask));
        self.send_direct(
            &payer,
            DirectMessage::PaidAck {
                ask,
                refused: r.err().map(bounded),
            },
        );
    }

    /// Asks whose answer is overdue fail.
    pub(super) fn pay_timeouts(&mut self, now: Instant) {
        let late: Vec<u64> = self
            .pay
            .asks
            .iter()
            .filter(|(_, (_, w, at, _))| now >= *at + timeout(w))
            .map(|(n, _)| *n)
            .collect();
        for n in late {
            if let Some((_, w, _, tx)) = self.pay.asks.remove(&n) {
                let what = match w {
                    Waiting::Key => "gave no key",
                    Waiting::Ack => "did not acknowledge the proof",
                };
                let _ = tx.send(fail(&format!(
                    "the payee {what} within {} s",
                    timeout(&w).as_secs()
                )));
            }
        }
    }

    /// The link to `key` closed: its asks fail, its keys are forgotten
    /// (they stay reserved in the state, never handed out again).
    pub(super) fn pay_link_gone(&mut self, key: &PeerKey, name: &str) {
        let gone: Vec<u64> = self
            .pay
            .asks
            .iter()
            .filter(|(_, (k, ..))| k == key)
            .map(|(n, _)| *n)
            .collect();
        for n in gone {
            if let Some((.., tx)) = self.pay.asks.remove(&n) {
                let _ = tx.send(fail(&format!("the link to {name} closed")));
            }
        }
        self.pay.given.retain(|(k, _), _| k != key);
    }
}
