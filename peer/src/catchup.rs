//! Catching up from a certified snapshot: for a new peer, or one so far
//! behind that the others' event logs no longer reach back to it.
//!
//! A peer that cannot serve a lagging peer from its event log offers its
//! newest certified snapshot ([`SnapshotOffer`]): the checkpoint certificate
//! of the snapshot's height and the certified committee hand-overs from
//! genesis. The receiver trusts none of it until it has walked the
//! hand-overs from the genesis committee (which its genesis file fixes) and
//! checked the certificate against the committee of the checkpoint's round.
//! It then fetches the snapshot chunk by chunk ([`Download`]), rebuilds the
//! ledger and requires the rebuilt roots to equal the certified ones, and
//! requires every stake table of the consensus state to be a certified one.
//! What the certificate cannot cover (the consensus cursor: which recent
//! events are already ordered, the epoch seed accumulator) is taken from the
//! serving peer; a wrong cursor makes our next roots differ from the
//! certified ones, so our votes never count towards a certificate and the
//! operator sees the mismatch (see `specs/network.md`).

use crate::driver::PeerSnapshot;
use anyhow::{bail, Context, Result};
use dag::identity::PeerKey;
use dag::ledger::checkpoint::CommitteeChain;
use dag::ledger::genesis::Genesis;
use dag::wire::{PeerMessage, SnapshotOffer};
use std::time::{Duration, Instant};
use tracing::info;

/// A download with no chunk for this long is abandoned (another offer
/// starts a new one).
pub const STALL: Duration = Duration::from_secs(10);

/// Check an offer's certificate against the committees walked from genesis.
pub fn check_offer(genesis: &Genesis, offer: &SnapshotOffer) -> Result<CommitteeChain> {
    let committee = genesis
        .ledger()
        .context("the genesis state")?
        .stake_table()
        .context("the genesis committee")?;
    let mut chain = CommitteeChain::new(genesis.chain_id(), committee);
    for h in &offer.handovers {
        if h.statement.snapshot <= chain.latest() {
            continue;
        }
        chain
            .extend(h)
            .with_context(|| format!("the hand-over to snapshot {}", h.statement.snapshot))?;
    }
    chain
        .verify_checkpoint(&offer.checkpoint)
        .context("the snapshot's checkpoint certificate")?;
    Ok(chain)
}

/// Every stake table the snapshot's consensus state uses must be one the
/// certified hand-overs name.
pub fn check_committees(snap: &PeerSnapshot, chain: &CommitteeChain) -> Result<()> {
    for (s, members, _) in &snap.core.epochs {
        match chain.committee_at(*s) {
            Some(c) if c.members() == members.as_slice() => {}
            Some(_) => bail!("the snapshot's stake table of snapshot {s} is not the certified one"),
            None => bail!("no certified hand-over to snapshot {s} came with the snapshot"),
        }
    }
    Ok(())
}

/// One snapshot being fetched from one peer.
pub struct Download {
    pub from: PeerKey,
    pub offer: SnapshotOffer,
    pub chain: CommitteeChain,
    buf: Vec<u8>,
    started: Instant,
    last_chunk: Instant,
    next_report: u64,
    bar: Option<indicatif::ProgressBar>,
}

/// What a chunk led to.
pub enum Step {
    /// Ask for the next chunk.
    Fetch(PeerMessage),
    /// Everything is here.
    Done(Vec<u8>),
}

impl Download {
    /// Start fetching an offer checked with [`check_offer`], at most
    /// `max_bytes` long.
    pub fn start(
        from: PeerKey,
        offer: SnapshotOffer,
        chain: CommitteeChain,
        max_bytes: u64,
    ) -> Result<(Download, PeerMessage)> {
        if offer.bytes > max_bytes {
            bail!(
                "the snapshot is {} bytes, above max_snapshot_mb",
                offer.bytes
            );
        }
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(offer.bytes);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "snapshot {bar:40} {bytes}/{total_bytes} ({eta})",
                )
                .expect("a valid template"),
            );
            b
        });
        info!(
            from = %from,
            height = offer.checkpoint.statement.height,
            bytes = offer.bytes,
            "downloading a certified snapshot"
        );
        let fetch = PeerMessage::SnapshotFetch {
            height: offer.checkpoint.statement.height,
            offset: 0,
        };
        let now = Instant::now();
        Ok((
            Download {
                from,
                offer,
                chain,
                buf: Vec::new(),
                started: now,
                last_chunk: now,
                next_report: 0,
                bar,
            },
            fetch,
        ))
    }

    pub fn height(&self) -> u64 {
        self.offer.checkpoint.statement.height
    }

    pub fn stalled(&self) -> bool {
        self.last_chunk.elapsed() > STALL
    }

    /// Take a chunk from `from`; anything not the next expected chunk of
    /// this snapshot is ignored (`Ok(None)`).
    pub fn on_chunk(
        &mut self,
        from: PeerKey,
        height: u64,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Option<Step>> {
        if from != self.from || height != self.height() || offset != self.buf.len() as u64 {
            return Ok(None);
        }
        let total = self.offer.bytes;
        if data.is_empty() && (self.buf.len() as u64) < total {
            bail!("the serving peer no longer has the snapshot");
        }
        if self.buf.len() as u64 + data.len() as u64 > total {
            bail!("the serving peer sent more than the offered {total} bytes");
        }
        self.buf.extend_from_slice(&data);
        self.last_chunk = Instant::now();
        let done = self.buf.len() as u64;
        if let Some(b) = &self.bar {
            b.set_position(done);
        }
        if done >= self.next_report {
            info!(done, total, "snapshot download progress");
            self.next_report = done + total / 10 + 1;
        }
        if done == total {
            if let Some(b) = &self.bar {
                b.finish_and_clear();
            }
            info!(
                bytes = total,
                ms = self.started.elapsed().as_millis() as u64,
                "snapshot downloaded"
            );
            return Ok(Some(Step::Done(std::mem::take(&mut self.buf))));
        }
        Ok(Some(Step::Fetch(PeerMessage::SnapshotFetch {
            height,
            offset: done,
        })))
    }
}
