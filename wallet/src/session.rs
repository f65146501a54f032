//! One conversation with the wallet's peer: connect, register the login
//! name if the peer has not vouched for it yet, take the committee
//! hand-overs since the last known one, then sync until the wallet's view
//! reaches the peer's latest certified checkpoint. Every answer is checked
//! (see `chain`); the state file is written only after all of it passed.

use crate::chain::{ChainError, ChainState, GENESIS_FILE};
use crate::client::{ClientError, PeerLink};
use dag::ledger::genesis::Genesis;
use dag::ledger::names::WalletName;
use dag::ledger::owner_keys::OwnerKeys;
use dag::wire::{WalletMessage, MAX_WALLET_HANDOVERS};
use std::net::SocketAddr;
use std::path::Path;
use thiserror::Error;

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

/// Bring `state` up to the peer's latest certified checkpoint and save it.
pub async fn sync(
    dir: &Path,
    keys: &OwnerKeys,
    state: &mut ChainState,
    genesis: &Genesis,
) -> Result<(), SessionError> {
    let link = PeerLink::connect(
        state.chain,
        keys.login(),
        &state.name.peer,
        state.peer,
        state.peer_addr,
    )
    .await?;
    let result = converse(&link, keys, state, genesis).await;
    link.close();
    result?;
    state.save(dir)?;
    Ok(())
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
            return Err(ClientError::Unexpected {
                peer,
                asked: "register",
            }
            .into());
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
            return Err(ClientError::Unexpected {
                peer,
                asked: "handovers",
            }
            .into());
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
        let answer = link.request(WalletMessage::Sync(req.clone())).await?;
        let WalletMessage::Synced(answer) = answer else {
            return Err(ClientError::Unexpected {
                peer,
                asked: "sync",
            }
            .into());
        };
        let v = state.apply(&committees, &watched, &req, &answer)?;
        if !v.more {
            return Ok(());
        }
    }
    Err(SessionError::Endless(peer))
}
