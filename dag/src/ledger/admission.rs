//! From event payload bytes to transactions whose signatures are checked.
//!
//! An event's payload is a sequence of items, each a length-prefixed
//! encoded transaction (the length a postcard varint). One malformed item
//! does not spoil the others; if the framing itself breaks, the rest of the
//! payload is one malformed item. Ordering is consensus' business, so every
//! item ordered gets an outcome, malformed or not.
//!
//! [`authorize_batch`] checks forms and signatures of many transactions at
//! once with batch verification. It needs no state, so a driver runs it on
//! every core for the next height while applying the current one; only an
//! [`Authorized`] transaction can be applied.

use crate::ledger::apply::Rejection;
use crate::ledger::multisig::{verify_claims_batch, SignatureClaim};
use crate::ledger::transaction::{Transaction, TxId};
use proofs::{Domain, Hash};
use rand_core::{CryptoRng, RngCore};
use std::sync::Arc;

/// Domain of the id given to an item that does not decode.
pub const MALFORMED_DOMAIN: Domain = Domain::new("pos/ledger/malformed-item/v1");

/// One payload item.
#[derive(Clone, Debug)]
pub enum PayloadItem {
    Tx {
        tx: Arc<Transaction>,
        id: TxId,
    },
    /// Bytes that are not a transaction; `id` hashes them.
    Malformed {
        id: Hash,
    },
}

impl PayloadItem {
    pub fn id(&self) -> Hash {
        match self {
            PayloadItem::Tx { id, .. } | PayloadItem::Malformed { id } => *id,
        }
    }
}

/// A transaction whose form and signature are good. Only
/// [`authorize_batch`] makes one.
#[derive(Clone, Debug)]
pub struct Authorized {
    tx: Arc<Transaction>,
    id: TxId,
}

impl Authorized {
    pub fn tx(&self) -> &Transaction {
        &self.tx
    }
    pub fn id(&self) -> TxId {
        self.id
    }
}

/// The result of admission for one item.
#[derive(Clone, Debug)]
pub enum Admitted {
    Ok(Authorized),
    Rejected { id: Hash, reason: Rejection },
}

impl Admitted {
    pub fn id(&self) -> Hash {
        match self {
            Admitted::Ok(a) => a.id,
            Admitted::Rejected { id, .. } => *id,
        }
    }
}

/// The bytes to queue as one payload item for `tx`.
pub fn encode_payload_item(tx: &Transaction) -> Vec<u8> {
    proofs::encode(&tx.encode())
}

/// Split a payload into items. Transactions longer than `max_tx_bytes`
/// are malformed.
pub fn decode_payload(payload: &[u8], max_tx_bytes: usize) -> Vec<PayloadItem> {
    let mut items = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        let Some((len, after)) = read_varint(rest) else {
            items.push(malformed(rest));
            break;
        };
        if len > after.len() as u64 {
            items.push(malformed(rest));
            break;
        }
        let (bytes, next) = after.split_at(len as usize);
        items.push(decode_item(bytes, max_tx_bytes));
        rest = next;
    }
    items
}

fn decode_item(bytes: &[u8], max_tx_bytes: usize) -> PayloadItem {
    match Transaction::decode_with_id(bytes, max_tx_bytes) {
        Ok((tx, id)) => {
            debug_assert_eq!(id, tx.id());
            PayloadItem::Tx {
                tx: Arc::new(tx),
                id,
            }
        }
        Err(_) => malformed(bytes),
    }
}

fn malformed(bytes: &[u8]) -> PayloadItem {
    PayloadItem::Malformed {
        id: Hash::of(MALFORMED_DOMAIN, bytes),
    }
}

/// A canonical LEB128 varint of at most 10 bytes (postcard's length
/// prefix); `None` when truncated, overlong or non-minimal.
fn read_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        let part = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return None;
        }
        value |= part << (7 * i);
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                return None; // a trailing zero group: not minimal
            }
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// Check forms and signatures of `items` for chain `chain`, in one batch.
pub fn authorize_batch(
    items: &[PayloadItem],
    chain: &Hash,
    rng: &mut (impl RngCore + CryptoRng),
) -> Vec<Admitted> {
    authorize_batch_trusting(items, chain, rng, &|_, _| false)
}

/// [`authorize_batch`], taking the signatures of transactions for which
/// `verified` says so as already checked (a peer verified the transactions
/// submitted to it when it took them; checking them again when they are
/// ordered would double its work). `verified` must compare the whole
/// transaction, signature included: the id covers only the body, and a
/// copy with another signature must still be checked. Forms are always
/// checked.
pub fn authorize_batch_trusting(
    items: &[PayloadItem],
    chain: &Hash,
    rng: &mut (impl RngCore + CryptoRng),
    verified: &dyn Fn(&Transaction, &TxId) -> bool,
) -> Vec<Admitted> {
    let mut out: Vec<Option<Admitted>> = Vec::with_capacity(items.len());
    let mut claims = Vec::new();
    let mut claimed = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item {
            PayloadItem::Malformed { id } => out.push(Some(Admitted::Rejected {
                id: *id,
                reason: Rejection::Malformed,
            })),
            PayloadItem::Tx { tx, id } => match tx.body.check_form(chain) {
                Err(e) => out.push(Some(Admitted::Rejected {
                    id: *id,
                    reason: Rejection::Form(e),
                })),
                Ok(()) if verified(tx, id) => out.push(Some(Admitted::Ok(Authorized {
                    tx: tx.clone(),
                    id: *id,
                }))),
                Ok(()) => {
                    claims.push(SignatureClaim {
                        signers: tx.body.signers.clone(),
                        aggregate: tx.body.aggregate,
                        digest: *id,
                        signature: tx.signature,
                    });
                    claimed.push(i);
                    out.push(None);
                }
            },
        }
    }
    let results = verify_claims_batch(&claims, rng);
    for (i, result) in claimed.into_iter().zip(results) {
        let PayloadItem::Tx { tx, id } = &items[i] else {
            unreachable!("only transactions are claimed")
        };
        out[i] = Some(match result {
            Ok(()) => Admitted::Ok(Authorized {
                tx: tx.clone(),
                id: *id,
            }),
            Err(_) => Admitted::Rejected {
                id: *id,
                reason: Rejection::BadSignature,
            },
        });
    }
    out.into_iter()
        .map(|a| a.expect("every item has a result"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_canonical() {
        assert_eq!(read_varint(&[0]), Some((0, &[][..])));
        assert_eq!(read_varint(&[0x7f, 9]), Some((127, &[9][..])));
        assert_eq!(read_varint(&[0x80, 0x01]), Some((128, &[][..])));
        assert_eq!(read_varint(&[0x80, 0x00]), None, "overlong zero");
        assert_eq!(read_varint(&[0x80]), None, "truncated");
        assert_eq!(read_varint(&[0xff; 11]), None);
        let max = proofs::encode(&u64::MAX);
        assert_eq!(read_varint(&max), Some((u64::MAX, &[][..])));
        for v in [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX - 1] {
            let enc = proofs::encode(&v);
            assert_eq!(read_varint(&enc), Some((v, &[][..])), "{v}");
        }
    }

    #[test]
    fn broken_framing_is_one_malformed_item() {
        let items = decode_payload(&[5, 1, 2], 1000);
        assert_eq!(items.len(), 1);
        assert!(matches!(items[0], PayloadItem::Malformed { .. }));
        let items = decode_payload(&[2, 1, 2, 0x80], 1000);
        assert_eq!(items.len(), 2);
        assert!(items
            .iter()
            .all(|i| matches!(i, PayloadItem::Malformed { .. })));
        assert!(decode_payload(&[], 1000).is_empty());
    }
}
