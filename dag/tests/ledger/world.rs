#![allow(dead_code)] // shared by several test crates, each using a part
//! A small chain to drive the ledger by hand: a genesis with peers and
//! wallet keys, transactions built and signed as a wallet would, and heights
//! applied the way the daemon will (payload bytes → admission → apply).

use dag::identity::{PeerKey, Signer};
use dag::ledger::admission::{authorize_batch, decode_payload, encode_payload_item};
use dag::ledger::apply::{HeightInput, HeightOutcome, Outcome, Rejection};
use dag::ledger::genesis::{Genesis, GenesisOutput, GenesisPeer, NativeAsset};
use dag::ledger::multisig::sign_local;
use dag::ledger::output::{output_id, Output, OutputId, Value};
use dag::ledger::state::{Ledger, Params};
use dag::ledger::transaction::{Action, Transaction, TxBody};
use dag::ledger::AssetId;
use proofs::Hash;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use schnorrkel::{ExpansionMode, Keypair, MiniSecretKey};

pub fn keypair(seed: u64) -> Keypair {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&seed.to_le_bytes());
    b[31] = 0x5a;
    MiniSecretKey::from_bytes(&b)
        .expect("32 bytes")
        .expand_to_keypair(ExpansionMode::Ed25519)
}

pub fn pk(k: &Keypair) -> PeerKey {
    PeerKey(k.public.to_bytes())
}

pub struct World {
    pub genesis: Genesis,
    pub ledger: Ledger,
    pub chain: Hash,
    pub peers: Vec<Signer>,
    pub rng: ChaCha20Rng,
}

pub const GENESIS_AMOUNT: u128 = 1_000_000;

impl World {
    /// `peers` genesis peers; wallet key `i` (for i < wallets) owns genesis
    /// output `i` of GENESIS_AMOUNT hosted with peer `i % peers`.
    pub fn new(peers: usize, wallets: u64) -> World {
        Self::with_params(peers, wallets, Params::default())
    }

    pub fn with_params(peers: usize, wallets: u64, params: Params) -> World {
        let signers: Vec<Signer> = (0..peers)
            .map(|i| Signer::from_seed([i as u8 + 1; 32], [9; 32]))
            .collect();
        let genesis = Genesis {
            chain_name: "testnet".into(),
            time_ms: 1_700_000_000_000,
            native: NativeAsset {
                name: "SHARE".into(),
                precision: 6,
            },
            params,
            peers: signers
                .iter()
                .enumerate()
                .map(|(i, s)| GenesisPeer {
                    name: format!("peer{i}"),
                    key: s.key(),
                    addr: format!("127.0.0.1:{}", 7000 + i).parse().unwrap(),
                })
                .collect(),
            outputs: (0..wallets)
                .map(|i| GenesisOutput {
                    owner: pk(&keypair(i)),
                    amount: GENESIS_AMOUNT,
                    host: format!("peer{}", i as usize % peers),
                })
                .collect(),
        };
        let ledger = genesis.ledger().expect("valid genesis");
        World {
            chain: genesis.chain_id(),
            genesis,
            ledger,
            peers: signers,
            rng: ChaCha20Rng::seed_from_u64(7),
        }
    }

    /// Genesis output `i`.
    pub fn genesis_output(&self, i: u32) -> OutputId {
        output_id(&self.chain, i)
    }

    pub fn native(&self, owner: &Keypair, amount: u128, host: usize) -> Output {
        Output {
            owner: pk(owner),
            asset: AssetId::NATIVE,
            value: Value::Amount(amount),
            host: Some(self.peers[host].key()),
        }
    }

    pub fn body(
        &self,
        inputs: Vec<OutputId>,
        outputs: Vec<Output>,
        actions: Vec<Action>,
    ) -> TxBody {
        TxBody {
            chain: self.chain,
            inputs,
            outputs,
            actions,
            fee: 0,
            memo: None,
            signers: Vec::new(),
            aggregate: PeerKey([0; 32]),
        }
    }

    /// Sign `body` with `keys` (signers set from them).
    pub fn sign(&self, mut body: TxBody, keys: &[&Keypair]) -> Transaction {
        body.set_signers(keys.iter().map(|k| pk(k)))
            .expect("valid signers");
        let (signers, aggregate, signature) = sign_local(keys, &body.id()).expect("signing");
        assert_eq!(signers, body.signers);
        assert_eq!(aggregate, body.aggregate);
        Transaction { body, signature }
    }

    /// Order `txs` as one event's payload of the next height and apply it.
    pub fn apply(&mut self, txs: &[Transaction]) -> HeightOutcome {
        let payload: Vec<u8> = txs.iter().flat_map(encode_payload_item).collect();
        self.apply_payloads(&[payload])
    }

    pub fn apply_payloads(&mut self, payloads: &[Vec<u8>]) -> HeightOutcome {
        let max = self.ledger.params().max_tx_bytes as usize;
        let height = self.ledger.height() + 1;
        let events = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let items = decode_payload(p, max);
                let admitted = authorize_batch(&items, &self.chain, &mut self.rng);
                (
                    Hash::of(proofs::Domain::new("test/event"), &[height as u8, i as u8]),
                    admitted,
                )
            })
            .collect();
        let input = HeightInput {
            height,
            round: height * 2,
            leader: Hash([height as u8; 32]),
            events,
        };
        self.ledger
            .apply_height(&input)
            .expect("store never fails in memory")
    }
}

/// The outcome of the only item of a height.
pub fn single(o: &HeightOutcome) -> &Outcome {
    assert_eq!(o.outcomes.len(), 1);
    &o.outcomes[0].1
}

pub fn rejected(o: &Outcome) -> &Rejection {
    match o {
        Outcome::Rejected(r) => r,
        Outcome::Applied => panic!("expected a rejection, the transaction was applied"),
    }
}
