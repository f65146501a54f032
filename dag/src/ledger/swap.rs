//! Atomic swaps: several parties, one transaction, one MuSig signature.
//!
//! Each party offers to give an amount of one asset and wants an amount of
//! another, naming the outputs it spends and the keys it receives its
//! wanted asset and its change at ([`Offer`]), and its share of the fee
//! (native money, from its inputs: native ones besides those of the given
//! asset when that is not native). When the offers balance (per asset, as
//! much given as wanted: two parties trading, or a cycle of three),
//! [`build`] makes the one transaction: every party's inputs, its wanted
//! amount to its receive key, its change to its change key, and the sum
//! of the shares as the fee. Every party checks the transaction against
//! its own offer ([`check_for`]) before it signs anything: it gets exactly
//! what it wants and gives no more than it offered plus its share of the
//! fee. The signature needs every input's key, so the transaction moves
//! everything or (unsigned, or rejected) nothing.
//! [`PartySigner`] runs one party's MuSig sessions (one per input key).

use super::asset::AssetId;
use super::multisig::{Commitment, Cosignature, Reveal, Session, SigError};
use super::output::{Output, OutputId, Value};
use super::transaction::TxBody;
use crate::identity::{Bytes64, PeerKey};
use proofs::Hash;
use schnorrkel::Keypair;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

/// Most parties in one swap.
pub const MAX_PARTIES: usize = 16;
/// Most inputs one party may offer.
pub const MAX_INPUTS_PER_PARTY: usize = 16;

/// One party's terms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The party's wallet name (`login@peer`), to name it in errors.
    pub party: String,
    pub give: (AssetId, u128),
    pub want: (AssetId, u128),
    /// The outputs it spends, all of the given asset, as the chain holds
    /// them (the ledger rejects the transaction if they are not so).
    pub inputs: Vec<(OutputId, Output)>,
    /// Where its wanted asset goes, and (native money) the peer hosting it.
    pub receive: PeerKey,
    pub receive_host: Option<PeerKey>,
    /// Where the rest of its inputs goes.
    pub change: PeerKey,
    /// Native money it pays toward the transaction's fee.
    pub fee: u128,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SwapError {
    #[error("a swap needs 2 to {MAX_PARTIES} parties, not {0}")]
    Parties(usize),
    #[error("{party}: {why}")]
    BadOffer { party: String, why: String },
    #[error("the offers do not balance: asset {asset} is given {given} and wanted {wanted}")]
    Unbalanced {
        asset: String,
        given: u128,
        wanted: u128,
    },
    #[error("output {0} is offered twice")]
    SharedInput(OutputId),
    #[error("the transaction is not what {party} agreed to: {why}")]
    NotAgreed { party: String, why: String },
    #[error("signing: {0}")]
    Sig(#[from] SigError),
}

fn bad(offer: &Offer, why: impl Into<String>) -> SwapError {
    SwapError::BadOffer {
        party: offer.party.clone(),
        why: why.into(),
    }
}

fn amount(o: &Output) -> Option<u128> {
    match o.value {
        Value::Amount(n) => Some(n),
        Value::Item(_) => None,
    }
}

/// What a party giving `give` with fee share `fee` spends of each asset:
/// the given amount, and the fee share in native money (added to it when
/// the given asset is native money); `None` if that overflows.
pub fn spends(give: (AssetId, u128), fee: u128) -> Option<Vec<(AssetId, u128)>> {
    if give.0 == AssetId::NATIVE {
        return Some(vec![(AssetId::NATIVE, give.1.checked_add(fee)?)]);
    }
    let mut s = vec![give];
    if fee > 0 {
        s.push((AssetId::NATIVE, fee));
    }
    Some(s)
}

impl Offer {
    /// What the inputs of `asset` hold in all.
    pub fn input_total(&self, asset: &AssetId) -> u128 {
        self.inputs
            .iter()
            .filter(|(_, o)| o.asset == *asset)
            .filter_map(|(_, o)| amount(o))
            .fold(0u128, |a, b| a.saturating_add(b))
    }

    /// What it spends of each asset ([`spends`] of its terms).
    fn spends(&self) -> Option<Vec<(AssetId, u128)>> {
        spends(self.give, self.fee)
    }

    /// The offer on its own makes sense.
    pub fn check(&self) -> Result<(), SwapError> {
        if self.give.1 == 0 || self.want.1 == 0 {
            return Err(bad(self, "amounts must be above zero"));
        }
        if self.give.0 == self.want.0 {
            return Err(bad(self, "gives and wants the same asset"));
        }
        if self.inputs.is_empty() || self.inputs.len() > MAX_INPUTS_PER_PARTY {
            return Err(bad(
                self,
                format!(
                    "1 to {MAX_INPUTS_PER_PARTY} inputs, not {}",
                    self.inputs.len()
                ),
            ));
        }
        let spends = self
            .spends()
            .ok_or_else(|| bad(self, "its amounts overflow"))?;
        let mut totals: BTreeMap<AssetId, u128> = BTreeMap::new();
        for (id, o) in &self.inputs {
            if !spends.iter().any(|(a, _)| *a == o.asset) {
                return Err(bad(
                    self,
                    format!(
                        "input {id} is neither of the given asset nor native money for the fee"
                    ),
                ));
            }
            let n = amount(o).ok_or_else(|| bad(self, format!("input {id} is a unique item")))?;
            let t = totals.entry(o.asset).or_default();
            *t = t
                .checked_add(n)
                .ok_or_else(|| bad(self, "inputs overflow"))?;
        }
        for (asset, need) in &spends {
            let total = totals.get(asset).copied().unwrap_or(0);
            if total < *need {
                return Err(bad(
                    self,
                    format!(
                        "its inputs of {asset:?} hold {total}, less than the {need} it gives \
                         (fee share included)"
                    ),
                ));
            }
        }
        if (self.want.0 == AssetId::NATIVE) != self.receive_host.is_some() {
            return Err(bad(
                self,
                "native money received needs a host, other assets none",
            ));
        }
        Ok(())
    }

    /// The outputs this party receives in the transaction, as [`build`]
    /// makes them.
    fn outputs(&self) -> Vec<Output> {
        let mut out = vec![Output {
            owner: self.receive,
            asset: self.want.0,
            value: Value::Amount(self.want.1),
            host: self.receive_host,
        }];
        // (`check` made sure every subtraction here is covered.)
        for (asset, spent) in self.spends().unwrap_or_default() {
            let rest = self.input_total(&asset).saturating_sub(spent);
            if rest > 0 {
                out.push(Output {
                    owner: self.change,
                    asset,
                    value: Value::Amount(rest),
                    host: self
                        .inputs
                        .iter()
                        .find(|(_, o)| o.asset == asset)
                        .and_then(|(_, o)| o.host),
                });
            }
        }
        out
    }
}

/// Whether `offers` balance: per asset, as much given as wanted.
pub fn balance(offers: &[Offer]) -> Result<(), SwapError> {
    let mut given: BTreeMap<AssetId, u128> = BTreeMap::new();
    let mut wanted: BTreeMap<AssetId, u128> = BTreeMap::new();
    for o in offers {
        let g = given.entry(o.give.0).or_default();
        *g = g.saturating_add(o.give.1);
        let w = wanted.entry(o.want.0).or_default();
        *w = w.saturating_add(o.want.1);
    }
    for asset in given.keys().chain(wanted.keys()) {
        let (g, w) = (
            given.get(asset).copied().unwrap_or(0),
            wanted.get(asset).copied().unwrap_or(0),
        );
        if g != w {
            return Err(SwapError::Unbalanced {
                asset: asset.0.to_string(),
                given: g,
                wanted: w,
            });
        }
    }
    Ok(())
}

/// The one transaction of balanced `offers` (parties in name order), with
/// the sum of their fee shares as its fee, signed by every input's key.
pub fn build(chain: Hash, offers: &[Offer]) -> Result<TxBody, SwapError> {
    if offers.len() < 2 || offers.len() > MAX_PARTIES {
        return Err(SwapError::Parties(offers.len()));
    }
    for o in offers {
        o.check()?;
    }
    balance(offers)?;
    let mut sorted: Vec<&Offer> = offers.iter().collect();
    sorted.sort_by(|a, b| a.party.cmp(&b.party));
    let mut inputs = Vec::new();
    let mut outputs = Vec::new();
    for o in &sorted {
        for (id, _) in &o.inputs {
            if inputs.contains(id) {
                return Err(SwapError::SharedInput(*id));
            }
            inputs.push(*id);
        }
        outputs.extend(o.outputs());
    }
    let fee = sorted
        .iter()
        .try_fold(0u128, |a, o| a.checked_add(o.fee))
        .ok_or_else(|| bad(sorted[0], "the fee shares overflow"))?;
    let mut body = TxBody {
        chain,
        inputs,
        outputs,
        actions: Vec::new(),
        fee,
        memo: None,
        signers: Vec::new(),
        aggregate: PeerKey([0; 32]),
    };
    body.set_signers(
        sorted
            .iter()
            .flat_map(|o| o.inputs.iter().map(|(_, out)| out.owner)),
    )?;
    Ok(body)
}

/// What a party checks before it signs `body`: it spends the party's
/// offered inputs (and no other input of the party's keys it knows of),
/// pays exactly the wanted amount to its receive key and exactly its
/// change to its change key (its inputs less what it gives and its fee
/// share), carries no actions, a fee of at least its share, and lists its
/// input keys among the signers. What others pay is theirs to check: the
/// ledger refuses a transaction whose fee the inputs do not cover.
pub fn check_for(offer: &Offer, body: &TxBody) -> Result<(), SwapError> {
    let no = |why: String| SwapError::NotAgreed {
        party: offer.party.clone(),
        why,
    };
    for (id, o) in &offer.inputs {
        if !body.inputs.contains(id) {
            return Err(no(format!("input {id} is missing")));
        }
        if !body.signers.contains(&o.owner) {
            return Err(no(format!("the key of input {id} is not a signer")));
        }
    }
    if !body.actions.is_empty() {
        return Err(no("it carries actions".into()));
    }
    if body.fee < offer.fee {
        return Err(no(format!(
            "its fee {} is less than this party's share {}",
            body.fee, offer.fee
        )));
    }
    let mine: Vec<&Output> = body
        .outputs
        .iter()
        .filter(|o| o.owner == offer.receive || o.owner == offer.change)
        .collect();
    let expected = offer.outputs();
    if mine.len() != expected.len() || !expected.iter().all(|e| mine.contains(&e)) {
        return Err(no(format!(
            "its outputs to this party are {mine:?}, not {expected:?}"
        )));
    }
    Ok(())
}

/// One party's MuSig: a session per input key over one transaction.
pub struct PartySigner {
    sessions: Vec<Session<Keypair>>,
}

/// A party's messages of one round.
pub type Round<T> = Vec<T>;

impl PartySigner {
    pub fn new(keys: Vec<Keypair>, body: &TxBody) -> Result<PartySigner, SwapError> {
        let digest = body.id();
        let sessions = keys
            .into_iter()
            .map(|k| Session::new(k, &body.signers, digest))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PartySigner { sessions })
    }

    pub fn keys(&self) -> Vec<PeerKey> {
        self.sessions.iter().map(Session::me).collect()
    }

    pub fn commitments(&self) -> Result<Round<Commitment>, SwapError> {
        Ok(self
            .sessions
            .iter()
            .map(Session::our_commitment)
            .collect::<Result<_, _>>()?)
    }

    pub fn add_commitments(&mut self, all: &[Commitment]) -> Result<(), SwapError> {
        for s in &mut self.sessions {
            for c in all {
                s.add_commitment(c)?;
            }
        }
        Ok(())
    }

    pub fn reveals(&self) -> Result<Round<Reveal>, SwapError> {
        Ok(self
            .sessions
            .iter()
            .map(Session::our_reveal)
            .collect::<Result<_, _>>()?)
    }

    pub fn add_reveals(&mut self, all: &[Reveal]) -> Result<(), SwapError> {
        for s in &mut self.sessions {
            for r in all {
                s.add_reveal(r)?;
            }
        }
        Ok(())
    }

    pub fn cosignatures(&self) -> Result<Round<Cosignature>, SwapError> {
        Ok(self
            .sessions
            .iter()
            .map(Session::our_cosignature)
            .collect::<Result<_, _>>()?)
    }

    /// Take every cosignature; the signature, once all are in.
    pub fn add_cosignatures(&mut self, all: &[Cosignature]) -> Result<Bytes64, SwapError> {
        let s = self.sessions.first_mut().ok_or(SigError::NoSigners)?;
        for c in all {
            s.add_cosignature(c)?;
        }
        Ok(s.signature()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::multisig::{verify_claim, SignatureClaim};
    use crate::ledger::transaction::Transaction;
    use schnorrkel::{ExpansionMode, MiniSecretKey};

    fn key(seed: u8) -> Keypair {
        MiniSecretKey::from_bytes(&[seed; 32])
            .unwrap()
            .expand_to_keypair(ExpansionMode::Ed25519)
    }

    fn pk(k: &Keypair) -> PeerKey {
        PeerKey(k.public.to_bytes())
    }

    fn asset(n: u8) -> AssetId {
        AssetId(Hash([n; 32]))
    }

    /// Party `n` gives `give` of asset `g` from one input of `held`, wants
    /// `want` of asset `w`. Keys: input 10n, receive 10n+1, change 10n+2.
    fn offer(n: u8, g: u8, give: u128, held: u128, w: u8, want: u128) -> (Offer, Keypair) {
        let input = key(10 * n);
        (
            Offer {
                party: format!("p-{n}@peer-0"),
                give: (asset(g), give),
                want: (asset(w), want),
                inputs: vec![(
                    Hash([n; 32]),
                    Output {
                        owner: pk(&input),
                        asset: asset(g),
                        value: Value::Amount(held),
                        host: None,
                    },
                )],
                receive: pk(&key(10 * n + 1)),
                receive_host: None,
                change: pk(&key(10 * n + 2)),
                fee: 0,
            },
            input,
        )
    }

    /// Every party signs `body`, rounds relayed as a coordinator would.
    fn sign_all(body: &TxBody, keys: Vec<Keypair>) -> Result<Bytes64, SwapError> {
        let mut parties: Vec<PartySigner> = keys
            .into_iter()
            .map(|k| PartySigner::new(vec![k], body))
            .collect::<Result<_, _>>()?;
        let c: Vec<Commitment> = parties
            .iter()
            .map(|p| p.commitments())
            .collect::<Result<Vec<_>, _>>()?
            .concat();
        for p in &mut parties {
            p.add_commitments(&c)?;
        }
        let r: Vec<Reveal> = parties
            .iter()
            .map(|p| p.reveals())
            .collect::<Result<Vec<_>, _>>()?
            .concat();
        for p in &mut parties {
            p.add_reveals(&r)?;
        }
        let s: Vec<Cosignature> = parties
            .iter()
            .map(|p| p.cosignatures())
            .collect::<Result<Vec<_>, _>>()?
            .concat();
        let mut sig = None;
        for p in &mut parties {
            sig = Some(p.add_cosignatures(&s)?);
        }
        Ok(sig.expect("parties"))
    }

    fn verifies(body: &TxBody, sig: Bytes64) -> bool {
        let tx = Transaction {
            body: body.clone(),
            signature: sig,
        };
        verify_claim(&SignatureClaim {
            signers: tx.body.signers.clone(),
            aggregate: tx.body.aggregate,
            digest: tx.id(),
            signature: tx.signature,
        })
        .is_ok()
    }

    #[test]
    fn a_cycle_of_three_is_one_transaction_with_one_signature() {
        // A gives X wants Y, B gives Y wants Z, C gives Z wants X.
        let (a, ka) = offer(1, 1, 100, 150, 2, 70);
        let (b, kb) = offer(2, 2, 70, 70, 3, 5);
        let (c, kc) = offer(3, 3, 5, 9, 1, 100);
        let offers = vec![a.clone(), b.clone(), c.clone()];
        let body = build(Hash([7; 32]), &offers).unwrap();
        assert_eq!(body.inputs.len(), 3);
        // Each gets its want; A and C get change; B spends all it holds.
        assert_eq!(body.outputs.len(), 5);
        for o in &offers {
            check_for(o, &body).unwrap();
        }
        let sig = sign_all(&body, vec![ka, kb, kc]).unwrap();
        assert!(verifies(&body, sig));
        // Order of offers does not matter: the same transaction.
        let again = build(Hash([7; 32]), &[c, a, b]).unwrap();
        assert_eq!(again.id(), body.id());
    }

    #[test]
    fn unbalanced_or_bad_offers_make_no_transaction() {
        let (a, _) = offer(1, 1, 100, 150, 2, 70);
        let (b, _) = offer(2, 2, 60, 70, 1, 100);
        assert!(matches!(
            build(Hash::ZERO, &[a.clone(), b]),
            Err(SwapError::Unbalanced { .. })
        ));
        assert_eq!(
            build(Hash::ZERO, std::slice::from_ref(&a)),
            Err(SwapError::Parties(1))
        );
        let (poor, _) = offer(2, 2, 70, 69, 1, 100);
        assert!(matches!(
            build(Hash::ZERO, &[a.clone(), poor]),
            Err(SwapError::BadOffer { .. })
        ));
        let (mut same, _) = offer(2, 2, 70, 70, 1, 100);
        same.inputs[0].0 = a.inputs[0].0;
        assert_eq!(
            build(Hash::ZERO, &[a.clone(), same]),
            Err(SwapError::SharedInput(a.inputs[0].0))
        );
        let (mut native, _) = offer(2, 2, 70, 70, 0, 100);
        native.want.0 = AssetId::NATIVE;
        assert!(native.check().is_err(), "native money needs a host");
    }

    #[test]
    fn every_party_refuses_a_transaction_that_is_not_its_deal() {
        let (a, _) = offer(1, 1, 100, 150, 2, 70);
        let (b, _) = offer(2, 2, 70, 80, 1, 100);
        let body = build(Hash::ZERO, &[a.clone(), b.clone()]).unwrap();
        let tamper = |f: &dyn Fn(&mut TxBody)| {
            let mut t = body.clone();
            f(&mut t);
            (check_for(&a, &t).is_err(), check_for(&b, &t).is_err())
        };
        // Less than wanted to A.
        let less = |t: &mut TxBody| {
            let o = t.outputs.iter_mut().find(|o| o.owner == a.receive).unwrap();
            o.value = Value::Amount(69);
        };
        assert_eq!(tamper(&less), (true, false));
        // B's change stolen: its change output goes elsewhere.
        let steal = |t: &mut TxBody| {
            let o = t.outputs.iter_mut().find(|o| o.owner == b.change).unwrap();
            o.owner = PeerKey([9; 32]);
        };
        assert_eq!(tamper(&steal), (false, true));
        // A fee paid from A's change: A refuses, B's deal is intact.
        let from_a = |t: &mut TxBody| {
            t.fee = 1;
            let o = t.outputs.iter_mut().find(|o| o.owner == a.change).unwrap();
            o.value = Value::Amount(49);
        };
        assert_eq!(tamper(&from_a), (true, false));
        // A's input left out (inputs are in party order: A's first).
        assert_eq!(
            tamper(&|t: &mut TxBody| {
                t.inputs.remove(0);
            }),
            (true, false)
        );
    }

    #[test]
    fn a_bad_share_makes_no_signature() {
        let (a, ka) = offer(1, 1, 100, 150, 2, 70);
        let (b, kb) = offer(2, 2, 70, 80, 1, 100);
        let body = build(Hash::ZERO, &[a, b]).unwrap();
        let mut pa = PartySigner::new(vec![ka], &body).unwrap();
        let mut pb = PartySigner::new(vec![kb], &body).unwrap();
        let c = [pa.commitments().unwrap(), pb.commitments().unwrap()].concat();
        pa.add_commitments(&c).unwrap();
        pb.add_commitments(&c).unwrap();
        let r = [pa.reveals().unwrap(), pb.reveals().unwrap()].concat();
        pa.add_reveals(&r).unwrap();
        pb.add_reveals(&r).unwrap();
        let mut s = [pa.cosignatures().unwrap(), pb.cosignatures().unwrap()].concat();
        s[1].s[0] ^= 1;
        assert!(pa.add_cosignatures(&s).is_err());
    }

    /// Fee shares: a party giving native money pays its share from the
    /// same inputs; one giving another asset adds a native input for it
    /// and gets native change. The fee is the sum; each party's check
    /// holds, and a share taken twice is refused.
    #[test]
    fn fee_shares_come_from_each_partys_inputs() {
        let native_out = |n: u8, held: u128, owner: PeerKey| {
            (
                Hash([100 + n; 32]),
                Output {
                    owner,
                    asset: AssetId::NATIVE,
                    value: Value::Amount(held),
                    host: Some(PeerKey([7; 32])),
                },
            )
        };
        // A gives 100 native (holds 150) for 70 of asset 2, fee share 3.
        let (mut a, ka) = offer(1, 0, 100, 150, 2, 70);
        a.give.0 = AssetId::NATIVE;
        a.inputs[0].1.asset = AssetId::NATIVE;
        a.inputs[0].1.host = Some(PeerKey([7; 32]));
        a.fee = 3;
        // B gives 70 of asset 2 for 100 native, fee share 2 from a native
        // input of 10.
        let (mut b, kb) = offer(2, 2, 70, 70, 0, 100);
        b.want.0 = AssetId::NATIVE;
        b.receive_host = Some(PeerKey([7; 32]));
        b.fee = 2;
        b.inputs.push(native_out(2, 10, pk(&kb)));
        let body = build(Hash([7; 32]), &[a.clone(), b.clone()]).unwrap();
        assert_eq!(body.fee, 5);
        check_for(&a, &body).unwrap();
        check_for(&b, &body).unwrap();
        let change = |o: &Offer, asset: AssetId| {
            body.outputs
                .iter()
                .find(|x| x.owner == o.change && x.asset == asset)
                .map(|x| x.value)
        };
        assert_eq!(change(&a, AssetId::NATIVE), Some(Value::Amount(47)));
        assert_eq!(change(&b, AssetId::NATIVE), Some(Value::Amount(8)));
        assert_eq!(change(&b, asset(2)), None, "B gives all its asset 2");
        // Per asset, inputs = outputs + fee.
        let per = |asset: AssetId, outs: bool| -> u128 {
            let list: Vec<&Output> = if outs {
                body.outputs.iter().collect()
            } else {
                a.inputs.iter().chain(&b.inputs).map(|(_, o)| o).collect()
            };
            list.iter()
                .filter(|o| o.asset == asset)
                .filter_map(|o| amount(o))
                .sum()
        };
        assert_eq!(per(AssetId::NATIVE, false), per(AssetId::NATIVE, true) + 5);
        assert_eq!(per(asset(2), false), per(asset(2), true));
        let sig = sign_all(&body, vec![ka, kb]).unwrap();
        assert!(verifies(&body, sig));
        // B without the native input cannot pay its share.
        let mut poor = b.clone();
        poor.inputs.pop();
        assert!(matches!(poor.check(), Err(SwapError::BadOffer { .. })));
        // A transaction that charges A's share to A twice is refused by A.
        let mut twice = body.clone();
        twice.fee += 3;
        let o = twice
            .outputs
            .iter_mut()
            .find(|o| o.owner == a.change)
            .unwrap();
        o.value = Value::Amount(44);
        assert!(check_for(&a, &twice).is_err());
        check_for(&b, &twice).unwrap();
    }
}
