//! A peer that lies to its wallet is caught and named, and the wallet's
//! stored data stays as it was. The lies come from a test-only setting of
//! the peer (`test_lie`, honoured only by test builds): a hidden output, a
//! wrong amount, a checkpoint without a quorum of signatures, and
//! submissions taken but never proposed.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};
use system_tests::{bin, LocalNet};

fn wallet(dir: &Path, args: &[&str]) -> Output {
    system_tests::wallet(dir, args, "")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Run `args` until it fails for another reason than a peer still
/// starting; that error.
fn failure(dir: &Path, args: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = wallet(dir, args);
        assert!(
            !out.status.success(),
            "`wallet {args:?}` must fail against a lying peer"
        );
        let err = stderr(&out);
        let starting = err.contains("cannot reach")
            || err.contains("closed the link")
            || err.contains("no certified checkpoint");
        if !starting || Instant::now() > deadline {
            return err;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn lying_peers_are_caught_and_named_and_the_wallet_keeps_its_data() {
    let mut net = LocalNet::prepare_with_wallets(4);
    net.start_all();
    let root = net.root.path().to_path_buf();
    peer::devnet::login_wallets(&bin("wallet"), &root, Duration::from_secs(90))
        .expect("the devnet's wallets log in");
    let w = peer::devnet::wallets(&root).expect("wallets.json");
    // While every peer is honest: a payment to w-0 that w-0 has not seen.
    let out = wallet(
        &w[1].dir,
        &["send", "--to", &w[0].login(), "--amount", "1000"],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let lies = [
        "hide_output",
        "wrong_amount",
        "weak_root",
        "drop_submissions",
    ];
    for (i, lie) in lies.iter().enumerate() {
        net.kill(i);
        net.configure(i, &format!("test_lie = \"{lie}\""));
        net.start(i);
    }
    let before: Vec<Vec<u8>> = w
        .iter()
        .map(|x| std::fs::read(x.dir.join("chain.state")).expect("chain.state"))
        .collect();

    let err = failure(&w[0].dir, &["balance"]);
    assert!(
        err.contains("peer peer-0 lied") && err.contains("not proven complete"),
        "{err}"
    );
    let err = failure(&w[1].dir, &["balance"]);
    assert!(
        err.contains("peer peer-1 lied") && err.contains("not the one the output set commits to"),
        "{err}"
    );
    let err = failure(&w[2].dir, &["balance"]);
    assert!(
        err.contains("peer peer-2 lied") && err.contains("not certified"),
        "{err}"
    );
    for (x, b) in w.iter().zip(&before).take(3) {
        assert_eq!(
            &std::fs::read(x.dir.join("chain.state")).expect("chain.state"),
            b,
            "{}: the stored data must not change",
            x.login()
        );
    }
    // A witness whose checkpoint lacks a quorum is named too.
    let err = failure(&w[3].dir, &["balance", "--witness", "peer-2"]);
    assert!(
        err.contains("witness peer-2 lied") && err.contains("not certified"),
        "{err}"
    );
    // Peer-3 takes the payment and drops it: named after the wait, and
    // w-3 still holds what it held.
    let err = failure(
        &w[3].dir,
        &[
            "send",
            "--to",
            &w[0].login(),
            "--amount",
            "5",
            "--wait",
            "5",
        ],
    );
    assert!(
        err.contains("peer-3") && err.contains("may have dropped it"),
        "{err}"
    );
    let out = wallet(&w[3].dir, &["balance", "--offline", "--json"]);
    let b: serde_json::Value =
        serde_json::from_slice(out.stdout.trim_ascii()).expect("balance JSON");
    assert_eq!(b["assets"]["native"]["amount"], w[3].amount as u64);
}
