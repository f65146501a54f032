//! Random transaction streams against a naive model.
//!
//! Streams mix valid transfers among several keys (multi-owner inputs, so
//! MuSig signatures), double spends within and across heights, conflicting
//! swaps, wrong sums, overflow attempts, and issue/mint/burn of fungible
//! assets. The model is a flat list of outputs with owner, asset and
//! amount and the simplest reading of the rules. After every height:
//! - every transaction's fate (applied or not) is the model's;
//! - unspent outputs, and so balances per (key, asset), are the model's;
//! - each asset's supply equals the sum of its unspent outputs, and changes
//!   only by issue, mint, burn and fees;
//! - a second ledger fed the same payloads, updating its trees as parallel
//!   jobs, has byte-identical roots.

#[path = "ledger/world.rs"]
mod world;

use dag::ledger::apply::Outcome;
use dag::ledger::asset::{AssetClass, AssetDef};
use dag::ledger::output::{output_id, Output, Value};
use dag::ledger::transaction::{Action, Transaction};
use dag::ledger::{encode_payload_item, AssetId};
use proofs::Hash;
use proptest::prelude::*;
use schnorrkel::Keypair;
use std::collections::{BTreeMap, HashMap};
use world::*;

const WALLETS: usize = 5;

#[derive(Clone, Debug)]
struct MOut {
    id: Hash,
    owner: usize,
    asset: AssetId,
    amount: u128,
    spent: bool,
}

#[derive(Default)]
struct Model {
    outs: Vec<MOut>,
    /// asset → (issuer wallet, mintable)
    assets: HashMap<AssetId, (usize, bool)>,
}

impl Model {
    fn unspent(&self) -> Vec<usize> {
        (0..self.outs.len())
            .filter(|&i| !self.outs[i].spent)
            .collect()
    }
    fn balances(&self) -> BTreeMap<(usize, AssetId), u128> {
        let mut b = BTreeMap::new();
        for o in self.outs.iter().filter(|o| !o.spent) {
            *b.entry((o.owner, o.asset)).or_insert(0) += o.amount;
        }
        b
    }
}

/// What a generated step asks for; indices are taken modulo what exists.
#[derive(Clone, Debug)]
enum Step {
    /// Spend `picks` (unspent outputs, or spent ones if `stale`) into
    /// outputs sharing the value by `shares`, with `skew` added to the
    /// first output (0 keeps sums right).
    Transfer {
        picks: Vec<usize>,
        shares: Vec<(usize, u16)>,
        skew: i8,
        stale: bool,
        huge: bool,
    },
    /// Two transactions spending one output, in one height.
    Conflict {
        pick: usize,
        to: (usize, usize),
    },
    Issue {
        issuer: usize,
        mintable: bool,
        amount: u64,
    },
    Mint {
        asset: usize,
        amount: u64,
    },
    Burn {
        pick: usize,
        amount: u64,
    },
    EndHeight,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (
            prop::collection::vec(any::<usize>(), 1..4),
            prop::collection::vec((0..WALLETS, 1u16..100), 1..4),
            prop_oneof![8 => Just(0i8), 1 => -3i8..3],
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.05),
        )
            .prop_map(|(picks, shares, skew, stale, huge)| Step::Transfer {
                picks,
                shares,
                skew,
                stale,
                huge
            }),
        1 => (any::<usize>(), (0..WALLETS, 0..WALLETS))
            .prop_map(|(pick, to)| Step::Conflict { pick, to }),
        1 => (0..WALLETS, any::<bool>(), 1u64..1_000_000)
            .prop_map(|(issuer, mintable, amount)| Step::Issue { issuer, mintable, amount }),
        1 => (any::<usize>(), 1u64..1_000)
            .prop_map(|(asset, amount)| Step::Mint { asset, amount }),
        1 => (any::<usize>(), 1u64..1_000)
            .prop_map(|(pick, amount)| Step::Burn { pick, amount }),
        2 => Just(Step::EndHeight),
    ]
}

struct Run {
    w: World,
    twin: World,
    keys: Vec<Keypair>,
    model: Model,
    /// Transactions of the open height, with the model's verdict.
    pending: Vec<(Transaction, bool)>,
    supply_at_start: HashMap<AssetId, u128>,
    /// Net supply change the model expects per asset since the start.
    supply_delta: HashMap<AssetId, i128>,
}

impl Run {
    fn new() -> Run {
        let w = World::new(2, WALLETS as u64);
        // The twin updates its trees as parallel jobs: same roots required.
        let mut twin = World::new(2, WALLETS as u64);
        twin.ledger
            .set_executor(std::sync::Arc::new(ScopedThreads), 3);
        let keys: Vec<Keypair> = (0..WALLETS as u64).map(keypair).collect();
        let mut model = Model::default();
        for i in 0..WALLETS {
            model.outs.push(MOut {
                id: w.genesis_output(i as u32),
                owner: i,
                asset: AssetId::NATIVE,
                amount: GENESIS_AMOUNT,
                spent: false,
            });
        }
        let supply_at_start = [(AssetId::NATIVE, WALLETS as u128 * GENESIS_AMOUNT)].into();
        Run {
            w,
            twin,
            keys,
            model,
            pending: Vec::new(),
            supply_at_start,
            supply_delta: HashMap::new(),
        }
    }

    fn output(&self, owner: usize, asset: AssetId, amount: u128) -> Output {
        Output {
            owner: pk(&self.keys[owner]),
            asset,
            value: Value::Amount(amount),
            host: asset.is_native().then(|| self.w.peers[owner % 2].key()),
        }
    }

    /// Build and sign; the model decides validity and, if valid, applies.
    fn submit(
        &mut self,
        inputs: Vec<usize>,
        outputs: Vec<(usize, AssetId, u128)>,
        actions: Vec<Action>,
        extra_signers: Vec<usize>,
    ) {
        let mut signer_ids: Vec<usize> = inputs.iter().map(|&i| self.model.outs[i].owner).collect();
        signer_ids.extend(extra_signers);
        signer_ids.sort();
        signer_ids.dedup();
        let body = self.w.body(
            inputs.iter().map(|&i| self.model.outs[i].id).collect(),
            outputs
                .iter()
                .map(|&(o, a, v)| self.output(o, a, v))
                .collect(),
            actions.clone(),
        );
        let keys: Vec<&Keypair> = signer_ids.iter().map(|&i| &self.keys[i]).collect();
        let tx = self.w.sign(body, &keys);

        // The model's reading of the rules.
        let mut ok = inputs.iter().all(|&i| !self.model.outs[i].spent);
        let mut sums: BTreeMap<AssetId, (Option<u128>, Option<u128>)> = BTreeMap::new();
        let add =
            |s: &mut BTreeMap<AssetId, (Option<u128>, Option<u128>)>, a, v: u128, into: bool| {
                let e = s.entry(a).or_insert((Some(0), Some(0)));
                let slot = if into { &mut e.0 } else { &mut e.1 };
                *slot = slot.and_then(|x| x.checked_add(v));
            };
        for &i in &inputs {
            add(
                &mut sums,
                self.model.outs[i].asset,
                self.model.outs[i].amount,
                true,
            );
        }
        let first = self.model.outs[inputs[0]].id;
        let mut issued = Vec::new();
        let mut delta: Vec<(AssetId, i128)> = Vec::new();
        for (ai, a) in actions.iter().enumerate() {
            match a {
                Action::Issue(d) => {
                    let id = AssetId::issued(&first, ai as u32);
                    let issuer = self.keys.iter().position(|k| pk(k) == d.issuer).unwrap();
                    issued.push((id, issuer, d.mintable));
                }
                Action::Mint { asset, amount } => {
                    let known = self.model.assets.get(asset).map(|x| x.1);
                    let new = issued.iter().any(|(a, _, _)| a == asset);
                    ok &= new || known == Some(true);
                    add(&mut sums, *asset, *amount, true);
                    delta.push((*asset, *amount as i128));
                }
                Action::Burn { asset, amount } => {
                    add(&mut sums, *asset, *amount, false);
                    delta.push((*asset, -(*amount as i128)));
                }
                _ => unreachable!("not generated"),
            }
        }
        for &(_, a, v) in &outputs {
            add(&mut sums, a, v, false);
        }
        ok &= sums.values().all(|(i, o)| i.is_some() && i == o);
        if ok {
            for &i in &inputs {
                self.model.outs[i].spent = true;
            }
            for (id, issuer, mintable) in issued {
                self.model.assets.insert(id, (issuer, mintable));
            }
            for (j, &(o, a, v)) in outputs.iter().enumerate() {
                self.model.outs.push(MOut {
                    id: output_id(&tx.id(), j as u32),
                    owner: o,
                    asset: a,
                    amount: v,
                    spent: false,
                });
            }
            for (a, d) in delta {
                *self.supply_delta.entry(a).or_insert(0) += d;
            }
        }
        self.pending.push((tx, ok));
    }

    fn step(&mut self, s: &Step) {
        let unspent = self.model.unspent();
        match s {
            Step::Transfer {
                picks,
                shares,
                skew,
                stale,
                huge,
            } => {
                let pool: Vec<usize> = if *stale {
                    (0..self.model.outs.len()).collect()
                } else {
                    unspent.clone()
                };
                if pool.is_empty() {
                    return;
                }
                let mut inputs: Vec<usize> = picks.iter().map(|p| pool[p % pool.len()]).collect();
                inputs.sort();
                inputs.dedup();
                // One asset per transfer: the first input's.
                let asset = self.model.outs[inputs[0]].asset;
                inputs.retain(|&i| self.model.outs[i].asset == asset);
                let total: u128 = inputs.iter().map(|&i| self.model.outs[i].amount).sum();
                let weight: u128 = shares.iter().map(|(_, s)| *s as u128).sum();
                let mut outs: Vec<(usize, AssetId, u128)> = Vec::new();
                let mut left = total;
                for (k, (owner, share)) in shares.iter().enumerate() {
                    let v = if k + 1 == shares.len() {
                        left
                    } else {
                        total * *share as u128 / weight
                    };
                    left -= v;
                    if v > 0 {
                        outs.push((*owner, asset, v));
                    }
                }
                if outs.is_empty() {
                    return;
                }
                let first = &mut outs[0].2;
                *first = first.saturating_add_signed(*skew as i128).max(1);
                if *huge {
                    outs.push((0, asset, u128::MAX - 1));
                }
                self.submit(inputs, outs, vec![], vec![]);
            }
            Step::Conflict { pick, to } => {
                let native: Vec<usize> = unspent
                    .iter()
                    .copied()
                    .filter(|&i| self.model.outs[i].asset.is_native())
                    .collect();
                if native.is_empty() {
                    return;
                }
                let i = native[pick % native.len()];
                let v = self.model.outs[i].amount;
                self.submit(vec![i], vec![(to.0, AssetId::NATIVE, v)], vec![], vec![]);
                self.submit(vec![i], vec![(to.1, AssetId::NATIVE, v)], vec![], vec![]);
            }
            Step::Issue {
                issuer,
                mintable,
                amount,
            } => {
                let Some(&i) = unspent
                    .iter()
                    .find(|&&i| self.model.outs[i].asset.is_native())
                else {
                    return;
                };
                let asset = AssetId::issued(&self.model.outs[i].id, 0);
                let owner = self.model.outs[i].owner;
                let v = self.model.outs[i].amount;
                let def = AssetDef {
                    name: "TOK".into(),
                    class: AssetClass::Fungible { precision: 0 },
                    issuer: pk(&self.keys[*issuer]),
                    mintable: *mintable,
                };
                self.submit(
                    vec![i],
                    vec![
                        (owner, AssetId::NATIVE, v),
                        (*issuer, asset, *amount as u128),
                    ],
                    vec![
                        Action::Issue(def),
                        Action::Mint {
                            asset,
                            amount: *amount as u128,
                        },
                    ],
                    vec![*issuer],
                );
            }
            Step::Mint { asset, amount } => {
                let mut assets: Vec<(AssetId, usize)> = self
                    .model
                    .assets
                    .iter()
                    .map(|(a, (i, _))| (*a, *i))
                    .collect();
                assets.sort();
                let Some(&i) = unspent
                    .iter()
                    .find(|&&i| self.model.outs[i].asset.is_native())
                else {
                    return;
                };
                if assets.is_empty() {
                    return;
                }
                let (a, issuer) = assets[asset % assets.len()];
                let owner = self.model.outs[i].owner;
                let v = self.model.outs[i].amount;
                self.submit(
                    vec![i],
                    vec![(owner, AssetId::NATIVE, v), (issuer, a, *amount as u128)],
                    vec![Action::Mint {
                        asset: a,
                        amount: *amount as u128,
                    }],
                    vec![issuer],
                );
            }
            Step::Burn { pick, amount } => {
                if unspent.is_empty() {
                    return;
                }
                let i = unspent[pick % unspent.len()];
                let o = self.model.outs[i].clone();
                let burn = (*amount as u128).min(o.amount);
                let mut outs = vec![];
                if o.amount > burn {
                    outs.push((o.owner, o.asset, o.amount - burn));
                }
                self.submit(
                    vec![i],
                    outs,
                    vec![Action::Burn {
                        asset: o.asset,
                        amount: burn,
                    }],
                    vec![],
                );
            }
            Step::EndHeight => self.end_height(),
        }
    }

    fn end_height(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        // Split the height's transactions over two events.
        let half = pending.len() / 2;
        let payloads: Vec<Vec<u8>> = [&pending[..half], &pending[half..]]
            .iter()
            .map(|part| {
                part.iter()
                    .flat_map(|(t, _)| encode_payload_item(t))
                    .collect()
            })
            .collect();
        let out = self.w.apply_payloads(&payloads);
        let twin = self.twin.apply_payloads(&payloads);
        assert_eq!(out.roots, twin.roots, "two appliers disagree");
        for ((tx, ok), (id, outcome)) in pending.iter().zip(&out.outcomes) {
            assert_eq!(*id, tx.id());
            assert_eq!(
                *outcome == Outcome::Applied,
                *ok,
                "model and ledger disagree on {tx:?}: {outcome:?}"
            );
        }
        self.check_state();
    }

    fn check_state(&self) {
        let mut ledger_balances: BTreeMap<(usize, AssetId), u128> = BTreeMap::new();
        let mut unspent_sum: HashMap<AssetId, u128> = HashMap::new();
        let mut ledger_unspent = 0;
        for (_, st) in self.w.ledger.outputs().unwrap() {
            if st.spent.is_some() {
                continue;
            }
            ledger_unspent += 1;
            let owner = self
                .keys
                .iter()
                .position(|k| pk(k) == st.output.owner)
                .expect("only wallet keys own outputs");
            let Value::Amount(v) = st.output.value else {
                panic!("no items generated")
            };
            *ledger_balances.entry((owner, st.output.asset)).or_insert(0) += v;
            *unspent_sum.entry(st.output.asset).or_insert(0) += v;
        }
        assert_eq!(ledger_unspent, self.model.unspent().len());
        assert_eq!(ledger_balances, self.model.balances());
        for (asset, sum) in &unspent_sum {
            let supply = self.w.ledger.asset(asset).unwrap().supply;
            assert_eq!(supply, *sum, "supply of {asset:?} is its unspent outputs");
            let start = self.supply_at_start.get(asset).copied().unwrap_or(0) as i128;
            let delta = self.supply_delta.get(asset).copied().unwrap_or(0);
            assert_eq!(
                supply as i128,
                start + delta,
                "supply moved only by mint and burn"
            );
        }
    }
}

proptest! {
    // 24 cases in CI; PROPTEST_CASES=N for a longer sweep.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24),
        ..ProptestConfig::default()
    })]

    #[test]
    fn ledger_matches_the_model(steps in prop::collection::vec(step(), 1..60)) {
        let mut run = Run::new();
        for s in &steps {
            run.step(s);
        }
        run.end_height();
    }
}

use proofs::ScopedThreads;
