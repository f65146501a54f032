//! Peer and wallet messages from arbitrary frames: a typed error or a
//! message that re-encodes to exactly the frame, never a panic.

#![no_main]

use dag::wire::{PeerMessage, WalletMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = PeerMessage::decode(data) {
        assert_eq!(m.encode(), data, "accepted a non-canonical peer message");
    }
    if let Ok(m) = WalletMessage::decode(data) {
        assert_eq!(m.encode(), data, "accepted a non-canonical wallet message");
    }
});
