//! Online wallets (`wallet online`) on a devnet on loopback: two wallets of
//! two peers meet through their peers' rendezvous, punch (trivially, on
//! one host) and hold a direct QUIC link authenticated by both login keys;
//! a peer that vouches for a substituted key in the rendezvous is named
//! and no link forms; a member invites a wallet into a room and it joins
//! with no peer taking part; a payment to an online wallet goes over such
//! a link (its key, then its proof), and to an offline one through a
//! prekey. Real NATs are in `nat_wallets.rs`.

use serde_json::Value;
use std::time::{Duration, Instant};
use system_tests::{bin, failure, json_of, wallet, LocalNet, OnlineWallet};

fn rendezvous_requests(net: &LocalNet, i: usize) -> u64 {
    net.status(i)
        .and_then(|s| s["rendezvous_requests"].as_u64())
        .expect("status")
}

#[test]
fn two_online_wallets_link_directly_and_a_substituted_key_is_caught() {
    let mut net = LocalNet::prepare_with_wallets(4);
    // peer-3 lies in its rendezvous answers (tests only).
    net.configure(3, "test_lie = \"substitute_link_key\"");
    net.start_all();
    let root = net.root.path().to_path_buf();
    peer::devnet::login_wallets(&bin("wallet"), &root, Duration::from_secs(90))
        .expect("the devnet's wallets log in");
    let ws = peer::devnet::wallets(&root).expect("wallets.json");

    // Not online yet: the command says what is missing.
    let out = wallet(&ws[0].dir, &["connect", &ws[1].login()], "");
    let err = failure(&out);
    assert!(err.contains("online"), "{err}");

    let a = OnlineWallet::start(&ws[0].dir, None);
    let b = OnlineWallet::start(&ws[1].dir, None);
    let before = (rendezvous_requests(&net, 0), rendezvous_requests(&net, 1));
    let out = wallet(&ws[0].dir, &["connect", &ws[1].login(), "--json"], "");
    let v = json_of(&out);
    assert_eq!(v["name"], ws[1].login(), "{v}");
    assert_eq!(v["path"], "direct", "{v}");
    assert!(v["rtt_ms"].as_f64().is_some(), "{v}");
    // Both peers took part in the rendezvous, once each.
    assert_eq!(rendezvous_requests(&net, 0), before.0 + 1);
    assert_eq!(rendezvous_requests(&net, 1), before.1 + 1);
    // Asked again, the link that is up answers.
    let again = json_of(&wallet(
        &ws[0].dir,
        &["connect", &ws[1].login(), "--json"],
        "",
    ));
    assert_eq!(again["reused"], true, "{again}");
    // Both ends list the link.
    let la = json_of(&wallet(&ws[0].dir, &["links", "--json"], ""));
    assert_eq!(la["links"][0]["name"], ws[1].login(), "{la}");
    let lb = json_of(&wallet(&ws[1].dir, &["links", "--json"], ""));
    assert_eq!(lb["links"][0]["name"], ws[0].login(), "{lb}");
    assert_eq!(lb["links"][0]["path"], "direct", "{lb}");

    // Closed, and opened again: a fresh link, and the other end saw it go.
    let out = wallet(&ws[0].dir, &["disconnect", &ws[1].login()], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while json_of(&wallet(&ws[1].dir, &["links", "--json"], ""))["links"]
        .as_array()
        .is_some_and(|l| !l.is_empty())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "w-1 still lists the link"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let fresh = json_of(&wallet(
        &ws[0].dir,
        &["connect", &ws[1].login(), "--json"],
        "",
    ));
    assert!(fresh.get("reused").is_none(), "{fresh}");
    assert_eq!(fresh["path"], "direct", "{fresh}");

    // A wallet that is not online cannot be reached.
    let out = wallet(&ws[0].dir, &["connect", &ws[2].login()], "");
    let err = failure(&out);
    assert!(err.contains("not online"), "{err}");

    // peer-3 vouches for another key than w-3's: the handshake fails and
    // the error names peer-3.
    let c = OnlineWallet::start(&ws[3].dir, None);
    let out = wallet(&ws[0].dir, &["connect", &ws[3].login()], "");
    let err = failure(&out);
    assert!(
        err.contains("peer-3") && err.contains("man in the middle"),
        "{err}"
    );
    let la = json_of(&wallet(&ws[0].dir, &["links", "--json"], ""));
    assert_eq!(la["links"].as_array().map(|l| l.len()), Some(1), "{la}");
    drop((a, b, c));
}

/// Each peer's `rendezvous_requests` and `relayed_bytes`.
fn peer_counters(net: &LocalNet) -> Vec<(u64, u64)> {
    (0..net.dirs.len())
        .map(|i| {
            let s = net.status(i).expect("status");
            let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
            (n("rendezvous_requests"), n("relayed_bytes"))
        })
        .collect()
}

/// `wallet room invites --json` of `dir` once it lists invitation `id`.
fn invite_listed(dir: &std::path::Path, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = json_of(&wallet(dir, &["room", "invites", "--json"], ""));
        let found = v["invites"]
            .as_array()
            .and_then(|l| l.iter().find(|i| i["id"] == id).cloned());
        if let Some(i) = found {
            return i;
        }
        assert!(Instant::now() < deadline, "invitation {id} not listed: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn member_path(members: &Value, name: &str) -> Option<String> {
    members["members"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)
        .and_then(|m| m["path"].as_str().map(String::from))
}

#[test]
fn a_member_invites_a_wallet_into_a_room_and_no_peer_takes_part() {
    let started = Instant::now();
    let (net, ws) = system_tests::devnet_logged_in(3);
    // A owns room R, M is in it, C is not (three wallets, three peers).
    let (a, m, c) = (&ws[0], &ws[1], &ws[2]);
    let oa = OnlineWallet::start(&a.dir, None);
    let om = OnlineWallet::start(&m.dir, None);
    let oc = OnlineWallet::start(&c.dir, None);
    let room = json_of(&wallet(&a.dir, &["room", "create", "--json"], ""));
    let room = room["room"].as_str().expect("room").to_string();
    json_of(&wallet(&m.dir, &["room", "join", &room, "--json"], ""));
    // M and C link through their peers' rendezvous, before the count.
    json_of(&wallet(&m.dir, &["connect", &c.login(), "--json"], ""));
    let before = peer_counters(&net);
    // (The counters do count: those rendezvous went through the peers.)
    assert!(before.iter().all(|c| c.0 > 0), "{before:?}");

    // Only a member invites, only a linked wallet, and only a received
    // invitation is accepted.
    let out = wallet(&c.dir, &["room", "invite", &room, "--to", &m.login()], "");
    let err = failure(&out);
    assert!(err.contains("not in that room"), "{err}");
    let out = wallet(&c.dir, &["room", "accept", &"ab".repeat(16)], "");
    let err = failure(&out);
    assert!(err.contains("no invitation"), "{err}");

    let inv = json_of(&wallet(
        &m.dir,
        &["room", "invite", &room, "--to", &c.login(), "--json"],
        "",
    ));
    let id = inv["id"].as_str().expect("id").to_string();
    let listed = invite_listed(&c.dir, &id);
    assert_eq!(listed["room"], room.as_str(), "{listed}");
    assert_eq!(listed["from"], m.login(), "{listed}");
    assert_eq!(listed["owner"], a.login(), "{listed}");
    let t = Instant::now();
    let joined = json_of(&wallet(&c.dir, &["room", "accept", &id, "--json"], ""));
    let accept_ms = t.elapsed().as_millis();
    assert_eq!(joined["joined"], true, "{joined}");
    assert_eq!(joined["room"], room.as_str(), "{joined}");
    assert_eq!(joined["path"], "direct", "{joined}");
    assert_eq!(joined["name"], a.login(), "{joined}");
    // A new link, punched for the invitation.
    assert!(joined.get("reused").is_none(), "{joined}");
    assert!(joined["punch_ms"].as_u64().is_some(), "{joined}");
    eprintln!("accepted: {joined}");
    // Taken: gone from the list, and not accepted twice.
    let left = json_of(&wallet(&c.dir, &["room", "invites", "--json"], ""));
    assert_eq!(
        left["invites"].as_array().map(|l| l.len()),
        Some(0),
        "{left}"
    );
    let out = wallet(&c.dir, &["room", "accept", &id], "");
    assert!(!out.status.success());
    // The owner lists C, on the new direct link.
    let members = json_of(&wallet(&a.dir, &["room", "members", &room, "--json"], ""));
    assert_eq!(
        member_path(&members, &c.login()).as_deref(),
        Some("direct"),
        "{members}"
    );
    assert_eq!(
        member_path(&members, &m.login()).as_deref(),
        Some("direct"),
        "{members}"
    );
    let links = json_of(&wallet(&c.dir, &["links", "--json"], ""));
    assert!(
        links["links"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x["name"] == a.login())),
        "{links}"
    );

    // The owner invites too (M = O): C, linked to A now, joins room R2
    // over that link.
    let room2 = json_of(&wallet(&a.dir, &["room", "create", "--json"], ""));
    let room2 = room2["room"].as_str().expect("room").to_string();
    let inv = json_of(&wallet(
        &a.dir,
        &["room", "invite", &room2, "--to", &c.login(), "--json"],
        "",
    ));
    let id2 = inv["id"].as_str().expect("id").to_string();
    let listed = invite_listed(&c.dir, &id2);
    assert_eq!(listed["from"], a.login(), "{listed}");
    let joined = json_of(&wallet(&c.dir, &["room", "accept", &id2, "--json"], ""));
    assert_eq!(joined["joined"], true, "{joined}");
    assert_eq!(joined["room"], room2.as_str(), "{joined}");
    assert_eq!(joined["path"], "direct", "{joined}");
    assert_eq!(joined["reused"], true, "{joined}");
    let members = json_of(&wallet(&a.dir, &["room", "members", &room2, "--json"], ""));
    assert_eq!(
        member_path(&members, &c.login()).as_deref(),
        Some("direct"),
        "{members}"
    );

    // No peer saw any of it: no rendezvous asked, nothing relayed.
    assert_eq!(peer_counters(&net), before);
    eprintln!(
        "invite: accepted in {accept_ms} ms; test ran {:.1} s",
        started.elapsed().as_secs_f64()
    );
    drop((oa, om, oc));
}

/// The proven native balance of the wallet in `dir` (`balance` syncs).
fn native(dir: &std::path::Path) -> u64 {
    let b = json_of(&wallet(dir, &["balance", "--json"], ""));
    b["assets"]["native"]["amount"].as_u64().unwrap_or(0)
}

#[test]
fn a_payment_to_an_online_wallet_goes_over_the_link_and_to_an_offline_one_by_prekey() {
    let (_net, ws) = system_tests::devnet_logged_in(4);
    let (payer, payee, offline) = (&ws[0], &ws[1], &ws[2]);
    let before = (native(&payer.dir), native(&payee.dir), native(&offline.dir));

    let a = OnlineWallet::start(&payer.dir, None);
    let b = OnlineWallet::start(&payee.dir, None);
    let started = std::time::Instant::now();
    let out = wallet(
        &payer.dir,
        &["send", "--to", &payee.login(), "--amount", "1000", "--json"],
        "",
    );
    let v = json_of(&out);
    assert_eq!(v["path"], "direct", "{v}\n{}", b.log());
    assert_eq!(v["delivered"], true, "{v}\n{}", b.log());
    assert_eq!(v["outcome"], "applied", "{v}");
    eprintln!("direct payment: {} ms", started.elapsed().as_millis());
    // The payee checked the proof and holds the output in its proven
    // state; it kept the transaction, so it has a receipt for it.
    assert!(b.log().contains("checked and held"), "{}", b.log());
    assert_eq!(native(&payee.dir), before.1 + 1000);
    assert_eq!(native(&payer.dir), before.0 - 1000);
    let tx = v["tx"].as_str().expect("tx");
    let receipt = payee.dir.join("paid.receipt");
    let out = wallet(
        &payee.dir,
        &["receipt", tx, "--out", receipt.to_str().expect("path")],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The payer is not online (the payee is): a prekey too.
    let out = wallet(
        &ws[3].dir,
        &["send", "--to", &payee.login(), "--amount", "200", "--json"],
        "",
    );
    assert_eq!(json_of(&out)["path"], "prekey");
    assert_eq!(native(&payee.dir), before.1 + 1200);

    // The payee is not online: its peer's prekey, as before.
    let out = wallet(
        &payer.dir,
        &[
            "send",
            "--to",
            &offline.login(),
            "--amount",
            "500",
            "--json",
        ],
        "",
    );
    let v = json_of(&out);
    assert_eq!(v["path"], "prekey", "{v}");
    assert!(v.get("delivered").is_none(), "{v}");
    assert_eq!(native(&offline.dir), before.2 + 500);
    assert_eq!(native(&payer.dir), before.0 - 1500);
    drop((a, b));
}
