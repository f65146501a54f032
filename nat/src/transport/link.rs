//! An authenticated link: framing on one long-lived unidirectional QUIC
//! stream per direction, with bounded queues and an inbound rate limit.
//!
//! A frame is `u32 big-endian length ‖ bytes`. Each link runs two tasks: a
//! writer draining the bounded send queue into the stream, and a reader that
//! checks each announced length against `max_frame` (a larger one closes the
//! link), applies the token bucket (excess frames are read and discarded),
//! and delivers the rest to a bounded receive queue. A full receive queue
//! makes the reader wait, which stops reading the stream and lets QUIC flow
//! control push back on the sender instead of growing memory here.

use super::stats::Counters;
use super::{close_code, LinkParams};
use bytes::{Bytes, BytesMut};
use dag::PeerKey;
use quinn::{Connection, RecvStream, SendStream, VarInt};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, Mutex};
use tokio::time::Instant;
use tracing::debug;

/// How long a link whose handles were all dropped waits for its last frames
/// to be acknowledged before closing.
const LINGER: Duration = Duration::from_secs(2);

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LinkError {
    #[error("the link's send queue is full")]
    QueueFull,
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("the link is closed")]
    Closed,
}

/// A handle to one authenticated link. Clones share the link; it closes
/// when [`Link::close`] is called, the peer closes it, or every handle is
/// dropped (after the queued frames are delivered or [`LINGER`] passes).
#[derive(Clone, Debug)]
pub struct Link {
    peer: PeerKey,
    conn: Connection,
    tx: mpsc::Sender<Bytes>,
    rx: Arc<Mutex<mpsc::Receiver<Bytes>>>,
    max_frame: usize,
    counters: Arc<Counters>,
}

impl Link {
    /// Start the link's tasks on streams that already carried the Hellos.
    pub(crate) fn start(
        conn: Connection,
        peer: PeerKey,
        send: SendStream,
        recv: RecvStream,
        params: &LinkParams,
        counters: Arc<Counters>,
    ) -> Link {
        let (tx, out_rx) = mpsc::channel(params.send_queue.max(1));
        let (in_tx, rx) = mpsc::channel(params.recv_queue.max(1));
        tokio::spawn(write_loop(send, out_rx, conn.clone(), counters.clone()));
        tokio::spawn(read_loop(
            recv,
            in_tx,
            conn.clone(),
            params.clone(),
            counters.clone(),
        ));
        Link {
            peer,
            conn,
            tx,
            rx: Arc::new(Mutex::new(rx)),
            max_frame: params.max_frame,
            counters,
        }
    }

    /// The authenticated identity of the other end.
    pub fn peer(&self) -> PeerKey {
        self.peer
    }

    /// Identifies the connection: two handles of one link share it.
    pub fn id(&self) -> usize {
        self.conn.stable_id()
    }

    /// The other end's current UDP address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// QUIC's current estimate of the round-trip time.
    pub fn rtt(&self) -> std::time::Duration {
        self.conn.rtt()
    }

    /// Queue a frame without waiting. A full queue is an error (counted in
    /// `send_queue_full`), so the caller decides what to drop.
    pub fn send(&self, frame: Bytes) -> Result<(), LinkError> {
        if frame.len() > self.max_frame {
            return Err(LinkError::TooLarge {
                len: frame.len(),
                max: self.max_frame,
            });
        }
        self.tx.try_send(frame).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                self.counters.send_queue_full.fetch_add(1, Relaxed);
                LinkError::QueueFull
            }
            mpsc::error::TrySendError::Closed(_) => LinkError::Closed,
        })
    }

    /// Queue a frame, waiting for room in the send queue.
    pub async fn send_wait(&self, frame: Bytes) -> Result<(), LinkError> {
        if frame.len() > self.max_frame {
            return Err(LinkError::TooLarge {
                len: frame.len(),
                max: self.max_frame,
            });
        }
        self.tx.send(frame).await.map_err(|_| LinkError::Closed)
    }

    /// The next frame from the peer; `None` once the link is closed and
    /// every received frame has been taken.
    pub async fn recv(&self) -> Option<Bytes> {
        self.rx.lock().await.recv().await
    }

    /// Close the link now (queued frames are discarded). `reason` is sent to
    /// the peer, truncated to 64 bytes.
    pub fn close(&self, reason: &str) {
        let r = reason.as_bytes();
        self.conn.close(close_code::NORMAL, &r[..r.len().min(64)]);
    }

    /// Whether the link is closed, and why.
    pub fn close_reason(&self) -> Option<quinn::ConnectionError> {
        self.conn.close_reason()
    }

    /// Resolves when the link closes.
    pub async fn closed(&self) -> quinn::ConnectionError {
        self.conn.closed().await
    }
}

async fn write_loop(
    mut send: SendStream,
    mut rx: mpsc::Receiver<Bytes>,
    conn: Connection,
    counters: Arc<Counters>,
) {
    while let Some(frame) = rx.recv().await {
        // `send` refuses frames above u32::MAX long before this (max_frame).
        let len = (frame.len() as u32).to_be_bytes();
        if send.write_all(&len).await.is_err() || send.write_chunk(frame).await.is_err() {
            return;
        }
        counters.frames_sent.fetch_add(1, Relaxed);
    }
    // Every handle is gone: finish the stream, give the peer a moment to
    // take what was queued, then close.
    if send.finish().is_ok() {
        let _ = tokio::time::timeout(LINGER, send.stopped()).await;
    }
    conn.close(close_code::NORMAL, b"");
}

/// Token bucket over messages: `rate` per second, bursts up to `rate`.
struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: u32) -> Self {
        TokenBucket {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        if self.rate == 0.0 {
            return true; // 0 means no limit
        }
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Why the reader stopped.
enum ReadEnd {
    /// The peer finished its stream or the connection closed.
    Gone,
    /// The peer broke the framing; close with this code.
    Violation(VarInt),
}

async fn read_loop(
    mut recv: RecvStream,
    tx: mpsc::Sender<Bytes>,
    conn: Connection,
    params: LinkParams,
    counters: Arc<Counters>,
) {
    let mut bucket = TokenBucket::new(params.max_msgs_per_sec);
    let end = loop {
        let mut header = [0u8; 4];
        if recv.read_exact(&mut header).await.is_err() {
            break ReadEnd::Gone;
        }
        let len = u32::from_be_bytes(header) as usize;
        if len > params.max_frame {
            counters.frames_too_large.fetch_add(1, Relaxed);
            break ReadEnd::Violation(close_code::FRAME_TOO_LARGE);
        }
        if !bucket.take() {
            counters.frames_dropped_rate.fetch_add(1, Relaxed);
            // Still consume the body to stay in step with the framing.
            match skip(&mut recv, len).await {
                Ok(()) => continue,
                Err(end) => break end,
            }
        }
        let frame = match read_body(&mut recv, len).await {
            Ok(f) => f,
            Err(end) => break end,
        };
        // Counted before the hand-over so a reader that got the frame never
        // sees a counter that lags behind it.
        counters.frames_received.fetch_add(1, Relaxed);
        if tx.send(frame).await.is_err() {
            // Nobody will read: every handle was dropped.
            break ReadEnd::Gone;
        }
    };
    if let ReadEnd::Violation(code) = end {
        debug!(remote = %conn.remote_address(), code = %code, "closing link on framing violation");
        conn.close(code, b"");
    }
}

/// Read exactly `len` bytes, growing the buffer only as data arrives (QUIC
/// flow control bounds how fast), so a peer announcing a large frame and
/// sending nothing costs nothing.
async fn read_body(recv: &mut RecvStream, len: usize) -> Result<Bytes, ReadEnd> {
    let mut buf = BytesMut::new();
    while buf.len() < len {
        let chunk = next_chunk(recv, len - buf.len()).await?;
        if buf.is_empty() && chunk.len() == len {
            return Ok(chunk); // the common case: no copy
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

async fn skip(recv: &mut RecvStream, mut len: usize) -> Result<(), ReadEnd> {
    while len > 0 {
        len -= next_chunk(recv, len).await?.len();
    }
    Ok(())
}

async fn next_chunk(recv: &mut RecvStream, max: usize) -> Result<Bytes, ReadEnd> {
    match recv.read_chunk(max, true).await {
        Ok(Some(chunk)) => Ok(chunk.bytes),
        // The stream ended inside a frame.
        Ok(None) => Err(ReadEnd::Violation(close_code::PROTOCOL)),
        Err(_) => Err(ReadEnd::Gone),
    }
}
