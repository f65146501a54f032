//! Incoming outputs while online: the wallet subscribes its peer link to
//! the keys it watches, and when the peer says a final height created
//! outputs for some of them (`Incoming`, a hint it does not believe) it
//! runs the same proven sync as every command, in the background, and
//! saves what the proofs show. A notice can arrive before a checkpoint
//! covering its height is certified: the sync is then asked again shortly.

use super::{Note, Online};
use crate::chain::ChainState;
use dag::identity::PeerKey;
use dag::wire::{WalletMessage, MAX_SUBSCRIBED};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// How soon a sync that did not reach a notice's height is asked again…
const RETRY_EVERY: Duration = Duration::from_millis(300);
/// …and for how long after the notice.
const RETRY_FOR: Duration = Duration::from_secs(30);

/// What a background sync found.
pub(super) struct Synced {
    /// The height of the checkpoint the wallet now stands on.
    pub height: u64,
    /// Outputs held before and after.
    pub before: usize,
    pub after: usize,
}

#[derive(Default)]
pub(super) struct Incoming {
    /// A background sync is running.
    syncing: bool,
    /// The highest notified height the state has not reached yet, and
    /// when the first such notice came.
    want: Option<(u64, Instant)>,
    /// When to sync again (a notice came while syncing, or the last sync
    /// stopped short of the height).
    again_at: Option<Instant>,
}

impl Incoming {
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.again_at.filter(|_| !self.syncing)
    }
}

impl Online {
    /// Subscribe the peer link to every key the wallet watches (the keys
    /// payers and its own change land on).
    pub(super) fn subscribe(&self) {
        let keys: Vec<PeerKey> = match ChainState::load(&self.dir) {
            Ok(state) => state
                .watched_keys(&self.keys)
                .into_iter()
                .map(|(_, _, k)| k)
                .take(MAX_SUBSCRIBED)
                .collect(),
            Err(e) => {
                warn!("cannot read the wallet state to subscribe: {e}");
                return;
            }
        };
        debug!(keys = keys.len(), "subscribing");
        self.send_peer(WalletMessage::Subscribe { keys });
    }

    pub(super) fn on_incoming(&mut self, height: u64, keys: usize) {
        debug!(height, keys, "peer notice: new outputs");
        let i = &mut self.incoming;
        let first = i.want.map_or(Instant::now(), |(_, at)| at);
        i.want = Some((i.want.map_or(height, |(h, _)| h.max(height)), first));
        i.again_at = Some(Instant::now());
    }

    /// Start the background sync if one is due.
    pub(super) fn incoming_timeout(&mut self, now: Instant) {
        // Not while a swap offer is being prepared: it syncs too, then
        // takes the state without waiting.
        let i = &mut self.incoming;
        if i.syncing || self.rooms.preparing || i.again_at.is_none_or(|t| t > now) {
            return;
        }
        i.again_at = None;
        i.syncing = true;
        let (dir, keys, genesis) = (self.dir.clone(), self.keys.clone(), self.genesis.clone());
        let notes = self.notes_tx.clone();
        tokio::spawn(async move {
            let r = async {
                let (before, state) = super::locked_sync(&dir, &keys, &genesis).await?;
                Ok(Synced {
                    height: state.checkpoint.as_ref().map_or(0, |c| c.statement.height),
                    before,
                    after: state.outputs.len(),
                })
            }
            .await;
            let _ = notes.send(Note::IncomingSynced(r)).await;
        });
    }

    pub(super) fn incoming_synced(&mut self, r: Result<Synced, String>) {
        let i = &mut self.incoming;
        i.syncing = false;
        match r {
            Ok(s) => {
                if s.after != s.before {
                    info!(
                        height = s.height,
                        outputs = s.after,
                        "synced after the peer's notice: {} outputs held (was {})",
                        s.after,
                        s.before
                    );
                }
                match i.want {
                    Some((h, _)) if s.height >= h => i.want = None,
                    Some((h, since)) if since.elapsed() < RETRY_FOR => {
                        debug!(height = s.height, want = h, "not certified that far yet");
                        i.again_at.get_or_insert(Instant::now() + RETRY_EVERY);
                    }
                    Some((h, _)) => {
                        warn!(
                            want = h,
                            "the peer told of outputs at height {h}, but its certified state \
                             stayed at {} for {} s",
                            s.height,
                            RETRY_FOR.as_secs()
                        );
                        i.want = None;
                    }
                    None => {}
                }
                // The receive stock may have moved on: watch the new keys.
                self.subscribe();
            }
            Err(e) => {
                warn!("syncing after the peer's notice: {e}");
                if i.want.is_some_and(|(_, since)| since.elapsed() < RETRY_FOR) {
                    i.again_at.get_or_insert(Instant::now() + RETRY_EVERY);
                } else {
                    i.want = None;
                }
            }
        }
    }
}
