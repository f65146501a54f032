//! An online wallet learns of payments through its subscription: its peer
//! tells it when a final height creates outputs for its keys, and it syncs
//! (with proofs) and saves them without any command being run on its
//! directory. Checked with `balance --offline`, which only reads what the
//! wallet stored.

use std::path::Path;
use std::time::{Duration, Instant};
use system_tests::{json_of, wallet, OnlineWallet};

fn stored_native(dir: &Path) -> (u64, u64) {
    let b = json_of(&wallet(dir, &["balance", "--offline", "--json"], ""));
    let n = &b["assets"]["native"];
    (
        n["amount"].as_u64().unwrap_or(0),
        n["outputs"].as_u64().unwrap_or(0),
    )
}

/// Wait until the stored balance is `want`; how long it took.
fn wait_stored(online: &OnlineWallet, want: (u64, u64)) -> Duration {
    let start = Instant::now();
    loop {
        let now = stored_native(&online.dir);
        if now == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the online wallet stored {now:?}, not {want:?}: {}",
            online.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_online_wallet_stores_incoming_payments_from_its_subscription() {
    let (_net, ws) = system_tests::devnet_logged_in(4);
    let (payee, p0, p2) = (&ws[1], &ws[0], &ws[2]);
    let before = stored_native(&payee.dir);
    assert_eq!(before, (payee.amount as u64, 1));

    let online = OnlineWallet::start(&payee.dir, None);
    // Two payments from wallets on other peers; the second lands on a key
    // the payee subscribed to after the first (its receive stock moved).
    let mut want = before;
    for (payer, amount) in [(p0, 2_500_000u64), (p2, 700_000)] {
        let sent = json_of(&wallet(
            &payer.dir,
            &[
                "send",
                "--to",
                &payee.login(),
                "--amount",
                &amount.to_string(),
                "--json",
            ],
            "",
        ));
        assert_eq!(sent["outcome"], "applied", "{sent}");
        want = (want.0 + amount, want.1 + 1);
        let took = wait_stored(&online, want);
        eprintln!(
            "payment of {amount} from {}: stored by the online payee {} ms after the payer saw it final",
            payer.login(),
            took.as_millis()
        );
    }
    // What it stored is proven: `verify` re-checks every output's proof.
    let v = json_of(&wallet(&payee.dir, &["verify", "--json"], ""));
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["outputs_checked"], 3);
    assert!(
        online.log().contains("synced after the peer's notice"),
        "{}",
        online.log()
    );
}
