//! Real wallet processes against a devnet of real peer processes: funded
//! wallets log in and prove their balances, a wallet restored from its
//! phrase finds its outputs again, payments between names on two peers
//! become final and show in both proven balances, a stake move, an issued
//! asset and a unique item move between wallets, names are unique per
//! peer, and a tampered wallet state is caught by `wallet verify`.

use serde_json::Value;
use std::time::Duration;
use system_tests::{bin, json_of, wallet, LocalNet};

#[test]
fn devnet_wallets_prove_balances_and_a_restored_wallet_finds_its_outputs() {
    let mut net = LocalNet::prepare_with_wallets(4);
    net.start_all();
    let root = net.root.path().to_path_buf();
    let logged = peer::devnet::login_wallets(&bin("wallet"), &root, Duration::from_secs(90))
        .expect("the devnet's wallets log in");
    let wallets = peer::devnet::wallets(&root).expect("wallets.json");
    assert_eq!(logged.len(), wallets.len());
    assert_eq!(wallets.len(), peer::devnet::DEVNET_WALLETS);

    for w in &wallets {
        let b = json_of(&wallet(&w.dir, &["balance", "--json"], ""));
        assert_eq!(b["name"], w.login());
        assert_eq!(b["assets"]["native"]["amount"], w.amount as u64);
        assert_eq!(b["assets"]["native"]["outputs"], 1);
        assert!(b["height"].as_u64().is_some(), "{b}");
        let v = json_of(&wallet(&w.dir, &["verify", "--json"], ""));
        assert_eq!(v["ok"], true);
        assert_eq!(v["outputs_checked"], 1);
    }

    // Other peers witness the same certified history.
    let out = wallet(
        &wallets[0].dir,
        &[
            "balance",
            "--witness",
            "peer-1",
            "--witness",
            "peer-3",
            "--json",
        ],
        "",
    );
    json_of(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("witness peer-3: same certified history"));

    // The same phrase on a fresh directory, logged in elsewhere under
    // another name, finds the same output from the chain alone.
    let w0 = &wallets[0];
    let fresh = root.join("restored");
    json_of(&wallet(&fresh, &["restore", "--json"], &w0.phrase));
    let genesis = root.join("genesis.json");
    let b = json_of(&wallet(
        &fresh,
        &[
            "login",
            "w-0-again@peer-2",
            "--genesis",
            genesis.to_str().expect("utf-8 path"),
            "--json",
        ],
        "",
    ));
    assert_eq!(b["assets"]["native"]["amount"], w0.amount as u64);

    // A payment between names on two peers: final, and both balances
    // proven afterwards (w-1 spends two outputs: one MuSig signature).
    let w1 = &wallets[1];
    let sent = json_of(&wallet(
        &w0.dir,
        &["send", "--to", &w1.login(), "--amount", "2500000", "--json"],
        "",
    ));
    assert_eq!(sent["outcome"], "applied");
    let b1 = json_of(&wallet(&w1.dir, &["balance", "--json"], ""));
    assert_eq!(
        b1["assets"]["native"]["amount"],
        (w1.amount + 2_500_000) as u64
    );
    assert_eq!(b1["assets"]["native"]["outputs"], 2);
    let back = json_of(&wallet(
        &w1.dir,
        &[
            "send",
            "--to",
            &w0.login(),
            "--amount",
            &(w1.amount + 1_000_000).to_string(),
            "--json",
        ],
        "",
    ));
    assert_eq!(back["outcome"], "applied");
    let b0 = json_of(&wallet(&w0.dir, &["balance", "--json"], ""));
    assert_eq!(
        b0["assets"]["native"]["amount"],
        (w0.amount - 2_500_000 + w1.amount + 1_000_000) as u64
    );
    let b1 = json_of(&wallet(&w1.dir, &["balance", "--json"], ""));
    assert_eq!(b1["assets"]["native"]["amount"], 1_500_000u64);
    // Too much is refused before anything is built.
    let out = wallet(
        &w1.dir,
        &["send", "--to", &w0.login(), "--amount", "99999999999999"],
        "",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not enough funds"));

    // A stake move: part of w-3's money is hosted by peer-0 afterwards, as
    // its proven outputs say.
    let w3 = &wallets[3];
    let staked = json_of(&wallet(
        &w3.dir,
        &[
            "stake",
            "--host",
            "peer-0",
            "--amount",
            "400000000000",
            "--json",
        ],
        "",
    ));
    assert_eq!(staked["outcome"], "applied");
    let b3 = json_of(&wallet(&w3.dir, &["balance", "--json"], ""));
    assert_eq!(b3["staked_with"]["peer-0"], 400_000_000_000u64);
    assert_eq!(
        b3["staked_with"][&w3.peer],
        (w3.amount - 400_000_000_000) as u64
    );
    assert_eq!(b3["assets"]["native"]["amount"], w3.amount as u64);

    // A receipt of w-0's payment, checked from the genesis alone; a
    // flipped byte fails.
    let tx = sent["tx"].as_str().expect("tx id");
    let receipt = root.join("receipt.bin");
    let out = wallet(
        &w0.dir,
        &[
            "receipt",
            tx,
            "--out",
            receipt.to_str().expect("utf-8 path"),
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_of(&wallet(
        &root,
        &[
            "verify-receipt",
            receipt.to_str().expect("utf-8 path"),
            "--genesis",
            genesis.to_str().expect("utf-8 path"),
            "--json",
        ],
        "",
    ));
    assert_eq!(v["ok"], true);
    assert_eq!(v["outcome"], "applied");
    assert_eq!(v["outputs"][0]["amount"], 2_500_000);
    let mut bytes = std::fs::read(&receipt).expect("receipt");
    let n = bytes.len();
    bytes[n - 40] ^= 1;
    std::fs::write(&receipt, &bytes).expect("tampered");
    let out = wallet(
        &root,
        &[
            "verify-receipt",
            receipt.to_str().expect("utf-8 path"),
            "--genesis",
            genesis.to_str().expect("utf-8 path"),
        ],
        "",
    );
    assert!(!out.status.success(), "a tampered receipt must not verify");

    // An issued asset and a unique item move between wallets.
    let issued = json_of(&wallet(
        &w3.dir,
        &[
            "issue",
            "--name",
            "gold",
            "--supply",
            "1000",
            "--precision",
            "2",
            "--json",
        ],
        "",
    ));
    let gold = issued["asset"].as_str().expect("asset id").to_string();
    json_of(&wallet(
        &w3.dir,
        &[
            "send",
            "--to",
            &w1.login(),
            "--asset",
            &gold,
            "--amount",
            "250",
            "--json",
        ],
        "",
    ));
    let b1 = json_of(&wallet(&w1.dir, &["balance", "--json"], ""));
    assert_eq!(b1["assets"][&gold]["amount"], 250);
    let b3 = json_of(&wallet(&w3.dir, &["balance", "--json"], ""));
    assert_eq!(b3["assets"][&gold]["amount"], 750);
    let tickets = json_of(&wallet(
        &w3.dir,
        &["issue", "--name", "tickets", "--unique", "--json"],
        "",
    ))["asset"]
        .as_str()
        .expect("asset id")
        .to_string();
    let item = "ab".repeat(32);
    json_of(&wallet(
        &w3.dir,
        &["mint", "--asset", &tickets, "--item", &item, "--json"],
        "",
    ));
    json_of(&wallet(
        &w3.dir,
        &[
            "send",
            "--to",
            &w1.login(),
            "--asset",
            &tickets,
            "--item",
            &item,
            "--json",
        ],
        "",
    ));
    json_of(&wallet(&w1.dir, &["balance", "--json"], ""));
    let items = json_of(&wallet(&w1.dir, &["items", "--json"], ""));
    assert_eq!(items[&tickets][0], item.as_str());
    let items = json_of(&wallet(&w3.dir, &["items", "--json"], ""));
    assert!(items.get(&tickets).is_none(), "{items}");
    // The same item cannot be minted twice.
    let out = wallet(
        &w3.dir,
        &["mint", "--asset", &tickets, "--item", &item, "--json"],
        "",
    );
    assert!(!out.status.success());

    // History: w-1 received at genesis, from w-0, and the gold; it sent
    // once.
    let h: Value = json_of(&wallet(&w1.dir, &["history", "--json"], ""));
    let whats: Vec<&str> = h
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| e["what"].as_str().expect("what"))
        .collect();
    assert_eq!(whats.iter().filter(|w| **w == "sent").count(), 1, "{h}");
    assert!(
        whats.iter().filter(|w| **w == "received").count() >= 3,
        "{h}"
    );

    // Names are unique per peer: w-0's name on its peer is taken.
    let other = root.join("other");
    json_of(&wallet(&other, &["create", "--json"], ""));
    let out = wallet(
        &other,
        &[
            "login",
            &w0.login(),
            "--genesis",
            genesis.to_str().expect("utf-8 path"),
        ],
        "",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("taken"), "{err}");

    // A stored output edited on disk no longer matches its proof.
    let w2 = &wallets[2];
    let state = w2.dir.join("chain.state");
    let mut bytes = std::fs::read(&state).expect("chain.state");
    let amount = w2.amount.to_le_bytes();
    // postcard writes u128 as a varint: find the amount's varint and flip a
    // bit inside it.
    let mut varint = Vec::new();
    let mut v = u128::from_le_bytes(amount);
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            varint.push(b);
            break;
        }
        varint.push(b | 0x80);
    }
    let at = bytes
        .windows(varint.len())
        .position(|w| w == varint.as_slice())
        .expect("the amount in the state file");
    bytes[at] ^= 0x01;
    std::fs::write(&state, &bytes).expect("tampered");
    let out = wallet(&w2.dir, &["verify", "--json"], "");
    assert!(!out.status.success(), "a tampered output must not verify");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("output"), "{err}");
}

/// The check that a stake move is a vote: the committee the wallet
/// derives for the next snapshot (from certified hand-overs alone) weighs
/// the new host more and the old one less by exactly the amount moved.
/// The peers build rounds without pause here so that round 4096 comes in
/// about a minute.
#[test]
fn a_stake_move_changes_the_next_snapshots_stake_table() {
    let mut net = LocalNet::prepare_with_wallets(4);
    for i in 0..4 {
        net.configure(i, "idle_round_ms = 0");
    }
    net.start_all();
    let root = net.root.path().to_path_buf();
    peer::devnet::login_wallets(&bin("wallet"), &root, Duration::from_secs(90))
        .expect("the devnet's wallets log in");
    let wallets = peer::devnet::wallets(&root).expect("wallets.json");
    let w1 = &wallets[1];
    assert_ne!(w1.peer, "peer-3");

    let stake_of = |c: &Value, peer: &str| -> u64 {
        c["members"]
            .as_array()
            .expect("members")
            .iter()
            .find(|m| m["peer"] == peer)
            .and_then(|m| m["stake"].as_u64())
            .unwrap_or(0)
    };
    let before = json_of(&wallet(&w1.dir, &["committee", "--json"], ""));
    let genesis = &before["committees"][0];
    assert_eq!(genesis["snapshot"], 0);

    let moved = 300_000_000_000u64;
    let staked = json_of(&wallet(
        &w1.dir,
        &[
            "stake",
            "--host",
            "peer-3",
            "--amount",
            &moved.to_string(),
            "--json",
        ],
        "",
    ));
    assert_eq!(staked["outcome"], "applied");
    let round = net.status(0).and_then(|s| s["round"].as_u64()).unwrap_or(0);
    assert!(
        round < 4096,
        "the stake move must precede snapshot 4096 (round {round})"
    );

    // Sync until the wallet holds the certified hand-over of snapshot 4096.
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let next = loop {
        json_of(&wallet(&w1.dir, &["balance", "--json"], ""));
        let c = json_of(&wallet(&w1.dir, &["committee", "--json"], ""));
        if let Some(n) = c["committees"]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["snapshot"] == 4096))
        {
            break n.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no hand-over for snapshot 4096 (peer-0 at round {:?})",
            net.status(0).map(|s| s["round"].clone())
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    assert_eq!(
        stake_of(&next, "peer-3"),
        stake_of(genesis, "peer-3") + moved,
        "{next}"
    );
    assert_eq!(
        stake_of(&next, &w1.peer),
        stake_of(genesis, &w1.peer) - moved,
        "{next}"
    );
    assert_eq!(next["total"], genesis["total"]);
    // And `verify` re-checks the chain of committees it came from.
    let v = json_of(&wallet(&w1.dir, &["verify", "--json"], ""));
    assert_eq!(v["handovers"], 1);
}
