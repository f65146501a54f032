//! The wallet's link to its peer: QUIC over the shared transport of `nat`,
//! authenticated both ways (the peer by its registered identity key, the
//! wallet by its login key), carrying `dag::wire::WalletMessage`s. One
//! request at a time; notices the peer pushes meanwhile (finality of
//! submissions) are skipped here.

use bytes::Bytes;
use dag::identity::{PeerKey, Signer};
use dag::wire::WalletMessage;
use nat::transport::{Link, LinkSigner, Transport, TransportConfig, TransportError};
use proofs::Hash;
use rand_core::{OsRng, RngCore};
use schnorrkel::Keypair;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;

/// How long one answer may take (a sync of many outputs is a few MB).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot reach peer {peer} at {addr}: {source}")]
    Connect {
        peer: String,
        addr: SocketAddr,
        source: Box<TransportError>,
    },
    #[error("peer {peer} closed the link{}", .reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    Closed {
        peer: String,
        reason: Option<String>,
    },
    #[error("peer {peer} did not answer within {secs} s")]
    Timeout { peer: String, secs: u64 },
    #[error(
        "peer {peer} took transaction {tx} but it was not final after {secs} s: \
         the peer may have dropped it"
    )]
    NotFinal { peer: String, tx: Hash, secs: u64 },
    #[error("peer {peer} sent a message that does not decode: {why}")]
    Malformed { peer: String, why: String },
    #[error("peer {peer} refused the {what} request: {reason}")]
    Refused {
        peer: String,
        what: String,
        reason: String,
    },
    #[error("peer {peer} answered a {asked} request with something else")]
    Unexpected { peer: String, asked: &'static str },
}

pub struct PeerLink {
    // Kept alive with the link: dropping it closes the socket.
    _transport: Transport,
    link: Link,
    peer: String,
}

impl PeerLink {
    /// Dial `peer` (named `name`) at `addr` as the wallet with `login`.
    pub async fn connect(
        chain: Hash,
        login: Keypair,
        name: &str,
        peer: PeerKey,
        addr: SocketAddr,
    ) -> Result<PeerLink, ClientError> {
        let mut rng_seed = [0u8; 32];
        OsRng.fill_bytes(&mut rng_seed);
        let signer: Arc<dyn LinkSigner> =
            Arc::new(Mutex::new(Signer::from_keypair(login, rng_seed)));
        // Listen where the peer can answer: loopback for a local peer.
        let local: SocketAddr = match addr {
            SocketAddr::V4(a) if a.ip().is_loopback() => ([127, 0, 0, 1], 0).into(),
            SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
            SocketAddr::V6(a) if a.ip().is_loopback() => (std::net::Ipv6Addr::LOCALHOST, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let err = |source| ClientError::Connect {
            peer: name.to_string(),
            addr,
            source: Box::new(source),
        };
        // Nobody but our peer may link to us.
        let (transport, _raw) = Transport::bind(
            TransportConfig::new(local, chain),
            signer,
            Arc::new(move |k: &PeerKey| *k == peer),
        )
        .await
        .map_err(err)?;
        let link = transport.connect(addr, peer).await.map_err(err)?;
        Ok(PeerLink {
            _transport: transport,
            link,
            peer: name.to_string(),
        })
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Send `msg` and wait for its answer.
    pub async fn request(&self, msg: WalletMessage) -> Result<WalletMessage, ClientError> {
        let asked = match &msg {
            WalletMessage::Register { .. } => "register",
            WalletMessage::Sync(_) => "sync",
            WalletMessage::GetHandovers { .. } => "handovers",
            WalletMessage::Submit(_) => "submit",
            _ => "unknown",
        };
        self.link
            .send_wait(Bytes::from(msg.encode()))
            .await
            .map_err(|_| self.closed())?;
        let wait = async {
            loop {
                let Some(frame) = self.link.recv().await else {
                    return Err(self.closed());
                };
                let m = WalletMessage::decode(&frame).map_err(|e| ClientError::Malformed {
                    peer: self.peer.clone(),
                    why: e.to_string(),
                })?;
                match m {
                    WalletMessage::Finalized(_) | WalletMessage::Submitted(_)
                        if asked != "submit" =>
                    {
                        continue
                    }
                    WalletMessage::Refused { what, reason } => {
                        return Err(ClientError::Refused {
                            peer: self.peer.clone(),
                            what,
                            reason,
                        })
                    }
                    m => return Ok(m),
                }
            }
        };
        tokio::time::timeout(ANSWER_TIMEOUT, wait)
            .await
            .map_err(|_| ClientError::Timeout {
                peer: self.peer.clone(),
                secs: ANSWER_TIMEOUT.as_secs(),
            })?
    }

    /// Wait for the peer's finality notice of transaction `id` (its
    /// height and outcome). A peer that never sends one has dropped it.
    pub async fn wait_final(
        &self,
        id: Hash,
        timeout: Duration,
    ) -> Result<(u64, dag::ledger::apply::Outcome), ClientError> {
        let wait = async {
            loop {
                let Some(frame) = self.link.recv().await else {
                    return Err(self.closed());
                };
                if let Ok(WalletMessage::Finalized(list)) = WalletMessage::decode(&frame) {
                    if let Some((_, h, o)) = list.into_iter().find(|(t, _, _)| *t == id) {
                        return Ok((h, o));
                    }
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ClientError::NotFinal {
                peer: self.peer.clone(),
                tx: id,
                secs: timeout.as_secs(),
            })?
    }

    fn closed(&self) -> ClientError {
        ClientError::Closed {
            peer: self.peer.clone(),
            reason: self.link.close_reason().map(|r| r.to_string()),
        }
    }

    pub fn close(&self) {
        self.link.close("done");
    }
}
