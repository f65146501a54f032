//! Two linked wallets agree on the chain before they take anything from
//! each other: each sends the certified root it accepted last, and the one
//! whose root is newer sends its peer's proof that its history extends the
//! other's. A wallet whose root does not verify is refused, and the error
//! names the peer the root came from.

use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use system_tests::{failure, json_of, wallet, OnlineWallet};

fn stored_height(dir: &Path) -> u64 {
    let b = json_of(&wallet(dir, &["balance", "--offline", "--json"], ""));
    b["height"].as_u64().expect("height")
}

fn only_link(dir: &Path) -> Value {
    let l = json_of(&wallet(dir, &["links", "--json"], ""));
    assert_eq!(l["links"].as_array().map(Vec::len), Some(1), "{l}");
    l["links"][0].clone()
}

#[test]
fn linked_wallets_prove_one_chain_and_a_bad_root_is_refused_naming_its_peer() {
    let (_net, ws) = system_tests::devnet_logged_in(4);
    let (a, b, c) = (&ws[0], &ws[1], &ws[2]);

    // A stays at the root it took at login; the chain moves on (a payment
    // between two others) and B syncs to a newer root.
    let sent = json_of(&wallet(
        &c.dir,
        &["send", "--to", &ws[3].login(), "--amount", "1000", "--json"],
        "",
    ));
    assert_eq!(sent["outcome"], "applied", "{sent}");
    json_of(&wallet(&b.dir, &["balance", "--json"], ""));
    let (ha, hb) = (stored_height(&a.dir), stored_height(&b.dir));
    assert!(ha < hb, "A at {ha}, B at {hb}: B's root must be the newer");

    let oa = OnlineWallet::start(&a.dir, None);
    let ob = OnlineWallet::start(&b.dir, None);
    let v = json_of(&wallet(&a.dir, &["connect", &b.login(), "--json"], ""));
    // B proved (through peer-1) that its history extends A's root: the
    // two agree at A's height.
    assert_eq!(v["roots_agreed_at"], ha, "{v}");
    assert_eq!(only_link(&a.dir)["roots"]["agreed_at"], ha);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let lb = only_link(&b.dir);
        if lb["roots"]["agreed_at"] == ha {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{lb}: {}", ob.log());
        std::thread::sleep(Duration::from_millis(100));
    }

    // C's stored root edited on disk (its output-set root): C sends a
    // root its committee never signed. A refuses the link and names the
    // peer C's root came from.
    let state = c.dir.join("chain.state");
    let mut bytes = std::fs::read(&state).expect("chain.state");
    let shown = json_of(&wallet(&c.dir, &["balance", "--offline", "--json"], ""));
    let hex = shown["root"].as_str().expect("root").to_string();
    let raw: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    let mut found = 0;
    for at in 0..bytes.len().saturating_sub(31) {
        if bytes[at..at + 32] == raw[..] {
            bytes[at + 31] ^= 1;
            found += 1;
        }
    }
    assert!(found > 0, "the root in chain.state");
    std::fs::write(&state, &bytes).expect("tampered");
    let oc = OnlineWallet::start(&c.dir, None);
    let out = wallet(&a.dir, &["connect", &c.login(), "--json"], "");
    let err = failure(&out);
    assert!(
        err.contains("not certified") && err.contains("peer-2"),
        "{err}"
    );
    assert_eq!(only_link(&a.dir)["name"], b.login());
    drop((oa, ob, oc));
}
