//! Address echo: a wallet behind a NAT asks a peer which address its
//! datagrams come from (its reflexive address, a candidate for hole
//! punching; asking two peers tells whether the NAT maps by destination).
//! Sans-IO: [`answer`] turns a received request and its source address
//! into the reply to send back.
//!
//! Both are raw datagrams (first byte at most `RAW_MAX_FIRST_BYTE`, so the
//! shared socket does not hand them to QUIC). The request is padded to be
//! at least as long as the reply, so the echo amplifies nothing, and the
//! decoders accept exactly one encoding.
//!
//! Request (40 bytes): `0x01`, a 16-byte nonce, 23 zero bytes.
//! Reply (36 bytes): `0x02`, the request's nonce, the address family
//! (`4` or `6`), 16 address bytes (IPv4 in the first 4, zeros after), the
//! port (big-endian).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const REQUEST: u8 = 0x01;
const REPLY: u8 = 0x02;
/// Length of an echo request.
pub const REQUEST_LEN: usize = 40;
/// Length of an echo reply.
pub const REPLY_LEN: usize = 36;

/// A request with `nonce` (the asker matches the reply by it).
pub fn request(nonce: [u8; 16]) -> [u8; REQUEST_LEN] {
    let mut out = [0u8; REQUEST_LEN];
    out[0] = REQUEST;
    out[1..17].copy_from_slice(&nonce);
    out
}

/// The reply to `datagram` received from `from`, if it is an echo request.
pub fn answer(datagram: &[u8], from: SocketAddr) -> Option<[u8; REPLY_LEN]> {
    if datagram.len() != REQUEST_LEN
        || datagram[0] != REQUEST
        || datagram[17..].iter().any(|b| *b != 0)
    {
        return None;
    }
    let mut out = [0u8; REPLY_LEN];
    out[0] = REPLY;
    out[1..17].copy_from_slice(&datagram[1..17]);
    match from.ip() {
        IpAddr::V4(a) => {
            out[17] = 4;
            out[18..22].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out[17] = 6;
            out[18..34].copy_from_slice(&a.octets());
        }
    }
    out[34..36].copy_from_slice(&from.port().to_be_bytes());
    Some(out)
}

/// The nonce and the echoed address of a reply, if `datagram` is one.
pub fn parse_reply(datagram: &[u8]) -> Option<([u8; 16], SocketAddr)> {
    if datagram.len() != REPLY_LEN || datagram[0] != REPLY {
        return None;
    }
    let mut nonce = [0u8; 16];
    nonce.copy_from_slice(&datagram[1..17]);
    let port = u16::from_be_bytes([datagram[34], datagram[35]]);
    let ip = match datagram[17] {
        4 => {
            if datagram[22..34].iter().any(|b| *b != 0) {
                return None;
            }
            IpAddr::V4(Ipv4Addr::new(
                datagram[18],
                datagram[19],
                datagram[20],
                datagram[21],
            ))
        }
        6 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&datagram[18..34]);
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some((nonce, SocketAddr::new(ip, port)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::is_raw;
    use proptest::prelude::*;

    #[test]
    fn a_request_is_answered_with_the_source_address() {
        let from: SocketAddr = "192.168.7.9:40000".parse().unwrap();
        let req = request([5; 16]);
        assert!(is_raw(&req));
        let rep = answer(&req, from).unwrap();
        assert!(is_raw(&rep));
        assert!(rep.len() <= req.len(), "no amplification");
        assert_eq!(parse_reply(&rep), Some(([5; 16], from)));
        let v6: SocketAddr = "[2001:db8::1]:7".parse().unwrap();
        assert_eq!(parse_reply(&answer(&req, v6).unwrap()), Some(([5; 16], v6)));
    }

    #[test]
    fn only_exact_requests_and_replies_are_taken() {
        let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut req = request([1; 16]).to_vec();
        req[39] = 1; // non-zero padding
        assert_eq!(answer(&req, from), None);
        assert_eq!(answer(&request([1; 16])[..39], from), None);
        let mut rep = answer(&request([1; 16]), from).unwrap().to_vec();
        rep[17] = 5; // unknown family
        assert_eq!(parse_reply(&rep), None);
        let mut rep = answer(&request([1; 16]), from).unwrap().to_vec();
        rep[30] = 1; // bytes after an IPv4 address
        assert_eq!(parse_reply(&rep), None);
    }

    proptest! {
        #[test]
        fn junk_never_panics_and_is_never_amplified(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let from: SocketAddr = "10.0.0.1:1".parse().unwrap();
            if let Some(rep) = answer(&bytes, from) {
                prop_assert!(rep.len() <= bytes.len());
            }
            let _ = parse_reply(&bytes);
        }
    }
}
