//! Swaps between online wallets on a devnet on loopback: a cycle of three
//! (A gives native for Y, B gives Y for Z, C gives Z for native) is one
//! transaction under one MuSig signature of all inputs, signed over the
//! wallets' direct links, final, and visible in every proven balance; a
//! party that stops answering aborts the swap for all, named, and every
//! offered output stays free.

use serde_json::Value;
use std::process::Output;
use std::time::Duration;
use system_tests::{issue_args, json_of, wallet, OnlineWallet};

fn issue(dir: &std::path::Path, name: &str) -> String {
    let v = json_of(&wallet(dir, &issue_args(name), ""));
    v["asset"].as_str().expect("asset id").to_string()
}

fn amount(dir: &std::path::Path, asset: &str) -> u64 {
    let b = json_of(&wallet(dir, &["balance", "--json"], ""));
    b["assets"][asset]["amount"].as_u64().unwrap_or(0)
}

/// Run `wallet swap` for each (dir, give, want, fee share) at once; their
/// outputs.
fn swap_all(
    room: &str,
    parties: &[(&std::path::Path, String, String, u64)],
    wait: u64,
) -> Vec<Output> {
    std::thread::scope(|s| {
        let handles: Vec<_> = parties
            .iter()
            .map(|(dir, give, want, fee)| {
                let (wait, fee) = (wait.to_string(), fee.to_string());
                s.spawn(move || {
                    wallet(
                        dir,
                        &[
                            "swap", room, "--give", give, "--want", want, "--fee", &fee, "--wait",
                            &wait, "--json",
                        ],
                        "",
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    })
}

#[test]
fn a_cycle_of_three_swaps_in_one_transaction_and_a_silent_party_aborts_for_all() {
    let (_net, ws) = system_tests::devnet_logged_in(4);
    let (a, b, c) = (&ws[0], &ws[1], &ws[2]);
    let y = issue(&b.dir, "ygold");
    let z = issue(&c.dir, "zsilver");
    let a_native = amount(&a.dir, "native");
    let c_native = amount(&c.dir, "native");

    let oa = OnlineWallet::start(&a.dir, None);
    let ob = OnlineWallet::start(&b.dir, None);
    let oc = OnlineWallet::start(&c.dir, None);
    let room = json_of(&wallet(&a.dir, &["room", "create", "--json"], ""));
    let room = room["room"].as_str().expect("room").to_string();
    assert!(room.starts_with(&format!("{}/", a.login())), "{room}");
    json_of(&wallet(&b.dir, &["room", "join", &room, "--json"], ""));
    json_of(&wallet(&c.dir, &["room", "join", &room, "--json"], ""));
    let m = json_of(&wallet(&b.dir, &["room", "members", &room, "--json"], ""));
    let members = m["members"].as_array().expect("members");
    assert_eq!(members.len(), 3, "{m}");
    assert!(
        members
            .iter()
            .all(|x| x["path"] == "owner" || x["path"] == "direct"),
        "{m}"
    );

    // The cycle: A gives native for Y, B gives Y for Z, C gives Z for
    // native. A and B share the fee (B pays its share from its native
    // money, besides the Y it gives).
    let price = 1_000_000u64;
    let b_native = amount(&b.dir, "native");
    let outs = swap_all(
        &room,
        &[
            (&a.dir, format!("{price}:native"), format!("50:{y}"), 30),
            (&b.dir, format!("50:{y}"), format!("20:{z}"), 20),
            (&c.dir, format!("20:{z}"), format!("{price}:native"), 0),
        ],
        90,
    );
    let results: Vec<Value> = outs.iter().map(json_of).collect();
    let tx = &results[0]["txid"];
    for r in &results {
        assert_eq!(&r["txid"], tx, "one transaction: {r}");
        assert_eq!(r["parties"], 3, "{r}");
        assert!(r["height"].as_u64().is_some(), "{r}");
    }
    assert_eq!(results[0]["gave"], format!("{price}:native"));
    assert_eq!(results[0]["got"], format!("50:{y}"));
    // Every proven balance shows it.
    assert_eq!(amount(&a.dir, &y), 50);
    assert_eq!(results[0]["fee"], "30");
    assert_eq!(amount(&a.dir, "native"), a_native - price - 30);
    assert_eq!(amount(&b.dir, "native"), b_native - 20);
    assert_eq!(amount(&b.dir, &y), 950);
    assert_eq!(amount(&b.dir, &z), 20);
    assert_eq!(amount(&c.dir, &z), 980);
    assert_eq!(amount(&c.dir, "native"), c_native + price);

    // C stops answering (SIGSTOP) after its offer: the swap aborts for
    // all after the round timeout, naming C; nothing moved.
    let before = (amount(&a.dir, &y), amount(&b.dir, &y), amount(&b.dir, &z));
    let outs = std::thread::scope(|s| {
        let c_offer = s.spawn(|| {
            wallet(
                &c.dir,
                &[
                    "swap",
                    &room,
                    "--give",
                    &format!("5:{z}"),
                    "--want",
                    "100:native",
                    "--wait",
                    "60",
                    "--json",
                ],
                "",
            )
        });
        // Give C's offer time to reach the owner, then freeze C.
        std::thread::sleep(Duration::from_secs(2));
        let stop = std::process::Command::new("kill")
            .args(["-STOP", &oc.pid().to_string()])
            .status()
            .expect("kill");
        assert!(stop.success());
        let others = swap_all(
            &room,
            &[
                (&a.dir, "100:native".to_string(), format!("5:{y}"), 0),
                (&b.dir, format!("5:{y}"), format!("5:{z}"), 0),
            ],
            60,
        );
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &oc.pid().to_string()])
            .status();
        let c_out = c_offer.join().expect("thread");
        (others, c_out)
    });
    for o in &outs.0 {
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("aborted") && err.contains(&c.login()),
            "the error names the party that failed: {err}"
        );
    }
    assert!(!outs.1.status.success(), "C's swap did not happen either");
    assert_eq!(
        before,
        (amount(&a.dir, &y), amount(&b.dir, &y), amount(&b.dir, &z)),
        "nothing moved"
    );
    drop((oa, ob, oc));
}
