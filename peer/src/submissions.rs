//! Transactions wallets submit: checking several wallets' submissions in
//! one batch, answering each wallet for its own, and remembering who
//! submitted what until it is final.
//!
//! Under load, submissions queue up while the driver applies heights;
//! checked together they make one larger signature batch, which costs less
//! per signature than one batch per message.

use dag::identity::PeerKey;
use dag::ledger::admission::MALFORMED_DOMAIN;
use dag::ledger::apply::Outcome;
use dag::ledger::Transaction;
use dag::wire::{WalletMessage, MAX_TXS_PER_MESSAGE};
use proofs::Hash;
use std::collections::{HashMap, VecDeque};

/// At most this many submitted transactions are gathered into one batch.
pub const MAX_GATHERED: usize = 1024;

/// One wallet's answer: per transaction, its id and why it was refused
/// (`None`: queued, or already queued).
pub type Answers = Vec<(Hash, Option<String>)>;

/// Who submitted which transaction, for the finality notice; the oldest
/// are forgotten past a bound.
pub struct Submitters<W = PeerKey> {
    by_tx: HashMap<Hash, W>,
    order: VecDeque<Hash>,
    bound: usize,
}

impl<W: Copy + Eq + std::hash::Hash> Submitters<W> {
    pub fn new(bound: usize) -> Self {
        Submitters {
            by_tx: HashMap::new(),
            order: VecDeque::new(),
            bound,
        }
    }

    /// Check `submits` (wallet, encoded transactions) in one call of
    /// `check`, which gets every transaction that decodes and returns, in
    /// order, each one's id and whether it was taken (see
    /// `Driver::submit_batch`). Returns each wallet's answers in the order
    /// of `submits`: first its undecodable transactions, then the others in
    /// the order it sent them.
    pub fn check(
        &mut self,
        submits: Vec<(W, Vec<Vec<u8>>)>,
        max_tx_bytes: usize,
        check: impl FnOnce(Vec<Transaction>) -> Vec<(Hash, Result<bool, String>)>,
    ) -> Vec<(W, Answers)> {
        let mut answers: Vec<(W, Answers)> = Vec::with_capacity(submits.len());
        let mut decoded = Vec::new();
        // Which submission each decoded transaction came from.
        let mut from = Vec::new();
        for (i, (wallet, txs)) in submits.into_iter().enumerate() {
            let mut mine = Vec::with_capacity(txs.len());
            for bytes in txs {
                match proofs::decode::<Transaction>(&bytes, max_tx_bytes) {
                    Err(e) => mine.push((
                        Hash::of(MALFORMED_DOMAIN, &bytes),
                        Some(format!("malformed: {e}")),
                    )),
                    Ok(tx) => {
                        decoded.push(tx);
                        from.push(i);
                    }
                }
            }
            answers.push((wallet, mine));
        }
        let results = check(decoded);
        debug_assert_eq!(results.len(), from.len());
        for ((txid, result), i) in results.into_iter().zip(from) {
            let wallet = answers[i].0;
            let refused = match result {
                Ok(_) => {
                    self.remember(txid, wallet);
                    None
                }
                Err(e) => Some(e),
            };
            answers[i].1.push((txid, refused));
        }
        answers
    }

    fn remember(&mut self, txid: Hash, wallet: W) {
        if self.by_tx.insert(txid, wallet).is_none() {
            self.order.push_back(txid);
        }
        while self.order.len() > self.bound {
            if let Some(old) = self.order.pop_front() {
                self.by_tx.remove(&old);
            }
        }
    }

    /// The wallet that submitted `txid`, now that it is final.
    pub fn take(&mut self, txid: &Hash) -> Option<W> {
        // Its id stays in `order` until it ages out; removing a missing key
        // then is harmless.
        self.by_tx.remove(txid)
    }

    /// The finality notices for `height`'s outcomes: per wallet that
    /// submitted some of them, `Finalized` messages of at most
    /// [`MAX_TXS_PER_MESSAGE`] entries each, which is all a wallet's decoder
    /// accepts. (One message per wallet lost every notice of a height
    /// that carried more of a wallet's transactions than that.)
    pub fn notices(
        &mut self,
        height: u64,
        outcomes: Vec<(Hash, Outcome)>,
    ) -> Vec<(W, WalletMessage)> {
        let mut by_wallet: HashMap<W, Vec<(Hash, u64, Outcome)>> = HashMap::new();
        for (id, outcome) in outcomes {
            if let Some(w) = self.take(&id) {
                by_wallet.entry(w).or_default().push((id, height, outcome));
            }
        }
        let mut out = Vec::new();
        for (w, mut done) in by_wallet {
            while !done.is_empty() {
                let rest = done.split_off(done.len().min(MAX_TXS_PER_MESSAGE));
                out.push((w, WalletMessage::Finalized(done)));
                done = rest;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dag::ledger::transaction::TxBody;

    fn tx(n: u8) -> Transaction {
        let body = TxBody {
            chain: Hash([7; 32]),
            inputs: vec![Hash([n; 32])],
            outputs: vec![],
            actions: vec![],
            fee: 0,
            memo: None,
            signers: vec![PeerKey([n; 32])],
            aggregate: PeerKey([n; 32]),
        };
        Transaction {
            body,
            signature: dag::identity::Bytes64([n; 64]),
        }
    }

    #[test]
    fn each_wallet_gets_its_own_answers_from_one_batch() {
        let (a, b) = (PeerKey([1; 32]), PeerKey([2; 32]));
        let mut s = Submitters::new(100);
        let junk = vec![0xff, 0xff, 0xff];
        let submits = vec![
            (a, vec![tx(10).encode(), junk.clone(), tx(11).encode()]),
            (b, vec![tx(20).encode(), tx(21).encode()]),
        ];
        let mut seen = Vec::new();
        let answers = s.check(submits, 65536, |txs| {
            seen = txs.iter().map(|t| t.id()).collect();
            // Refuse the second of wallet b's.
            txs.iter()
                .map(|t| {
                    let r = if t.body.inputs[0] == Hash([21; 32]) {
                        Err("bad signature".to_string())
                    } else {
                        Ok(true)
                    };
                    (t.id(), r)
                })
                .collect()
        });
        // One batch of all four decodable transactions, in order.
        assert_eq!(
            seen,
            vec![tx(10).id(), tx(11).id(), tx(20).id(), tx(21).id()]
        );
        assert_eq!(answers.len(), 2);
        assert_eq!(answers[0].0, a);
        let a_answers = &answers[0].1;
        assert_eq!(a_answers.len(), 3);
        assert_eq!(a_answers[0].0, Hash::of(MALFORMED_DOMAIN, &junk));
        assert!(a_answers[0].1.as_deref().unwrap().starts_with("malformed"));
        assert_eq!(a_answers[1], (tx(10).id(), None));
        assert_eq!(a_answers[2], (tx(11).id(), None));
        assert_eq!(answers[1].0, b);
        assert_eq!(
            answers[1].1,
            vec![
                (tx(20).id(), None),
                (tx(21).id(), Some("bad signature".to_string()))
            ]
        );
        // Finality goes to the submitter; refused ones are not tracked.
        assert_eq!(s.take(&tx(10).id()), Some(a));
        assert_eq!(s.take(&tx(20).id()), Some(b));
        assert_eq!(s.take(&tx(21).id()), None);
        assert_eq!(s.take(&tx(10).id()), None);
    }

    #[test]
    fn the_oldest_submissions_are_forgotten_past_the_bound() {
        let w = PeerKey([3; 32]);
        let mut s = Submitters::new(2);
        let submits = vec![(w, vec![tx(1).encode(), tx(2).encode(), tx(3).encode()])];
        s.check(submits, 65536, |txs| {
            txs.iter().map(|t| (t.id(), Ok(true))).collect()
        });
        assert_eq!(s.take(&tx(1).id()), None);
        assert_eq!(s.take(&tx(2).id()), Some(w));
        assert_eq!(s.take(&tx(3).id()), Some(w));
    }

    #[test]
    fn a_large_height_is_notified_in_messages_a_wallet_accepts() {
        let (a, b) = (PeerKey([1; 32]), PeerKey([2; 32]));
        let mut s = Submitters::new(100_000);
        let n = 2 * MAX_TXS_PER_MESSAGE + 5;
        let ids: Vec<Hash> = (0..n as u32)
            .map(|i| Hash::of(MALFORMED_DOMAIN, &i.to_le_bytes()))
            .collect();
        for id in &ids {
            s.remember(*id, a);
        }
        let other = Hash([9; 32]);
        s.remember(other, b);
        let mut outcomes: Vec<(Hash, Outcome)> =
            ids.iter().map(|id| (*id, Outcome::Applied)).collect();
        outcomes.push((other, Outcome::Applied));
        outcomes.push((Hash([8; 32]), Outcome::Applied)); // nobody's
        let notices = s.notices(7, outcomes);
        let mut seen_a = Vec::new();
        let mut seen_b = 0;
        for (w, msg) in notices {
            // What the wallet's decoder makes of it.
            let Ok(WalletMessage::Finalized(list)) = WalletMessage::decode(&msg.encode()) else {
                panic!("a notice the wallet refuses");
            };
            assert!(list
                .iter()
                .all(|(_, h, o)| *h == 7 && *o == Outcome::Applied));
            if w == a {
                seen_a.extend(list.into_iter().map(|(id, _, _)| id));
            } else {
                assert_eq!(w, b);
                seen_b += list.len();
            }
        }
        assert_eq!(seen_a, ids, "every id, once, in order");
        assert_eq!(seen_b, 1);
        assert_eq!(s.take(&ids[0]), None, "notified ids are forgotten");
    }
}
