//! Online wallets behind real NATs (the lab of `nat::lab`: namespaces,
//! veth, netfilter): peers on 203.0.113.10, each wallet in its own LAN
//! behind its own router. Two wallets behind home-router (cone) NATs link
//! directly by punching; a wallet behind a NAT that maps by destination
//! (symmetric) links with one behind a cone NAT by port probing; two
//! wallets behind one NAT link over their LAN; a public wallet links with
//! one behind a NAT; wallets with no direct path at all (two symmetric
//! NATs; UDP blocked except to the peers) link through the peers' relay,
//! and a payment between two of them goes over that relayed link.
//! Swaps: a cycle of three across a symmetric NAT and a blocked network;
//! a party killed mid-swap aborts it for all (named) and leaves every
//! output free, as the two home-router wallets' direct swap of the same
//! outputs then shows; a member invites a wallet behind a symmetric NAT
//! into a room and no peer takes part; a peer that substitutes a key in
//! its rendezvous answers is named.
//!
//! Every process that addresses the lab runs inside its namespaces; this
//! process only writes files and talks to Unix sockets. Root, `ip` and
//! `iptables` are needed; without them the test prints `SKIPPED natlab:`
//! and passes, unless `NATLAB_REQUIRED=1`.

use nat::lab::{Host, Lab, NatKind};
use serde_json::Value;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use system_tests::{bin, lab_or_skip, OnlineWallet};

/// What `connect` answered for each pair (with the pair's hosts), and the
/// bytes the peers relayed in all.
type Linked = (Vec<(Value, Host, Host)>, u64);

/// Run once the lab's wallets are online and the pairs linked: the lab,
/// its hosts, the wallets' directories (in host order).
type After = dyn Fn(&Lab, &[Host], &[std::path::PathBuf]);

/// The devnet's peers, run inside the lab's peers namespace.
struct Peers(Vec<Child>);

impl Drop for Peers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_peers(lab: &Lab, dirs: &[std::path::PathBuf]) -> Peers {
    let mut out = Vec::new();
    for d in dirs {
        let log = std::fs::File::create(d.join("peer.log")).expect("log");
        out.push(
            lab.command(lab.peers_ns(), bin("peer"))
                .arg("run")
                .arg("--dir")
                .arg(d)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("peer starts"),
        );
    }
    Peers(out)
}

/// Wait until every peer is linked to every other. A rendezvous through a
/// peer that is not yet linked to the other wallet's peer fails at once,
/// as it should ("not reachable"); these tests are about the wallets'
/// paths, and a quorum of linked peers certifies (so logins pass) before
/// the last link is up. Asks through each peer's admin socket, a file.
fn wait_for_mesh(dirs: &[std::path::PathBuf]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let linked: Vec<usize> = dirs
            .iter()
            .map(|d| peer::admin::query(d).map_or(0, |s| s.peers_connected))
            .collect();
        if linked.iter().all(|&n| n + 1 == dirs.len()) {
            return;
        }
        assert!(Instant::now() < deadline, "peers linked: {linked:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Run `wallet ARGS` inside `host`'s namespace.
fn wallet_in(lab: &Lab, host: &Host, dir: &Path, args: &[&str]) -> std::process::Output {
    lab.command(&host.ns, bin("wallet"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env("POS_WALLET_PASSWORD", "")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .output()
        .expect("wallet runs")
}

/// Log wallet `dir` in as `name` from inside `host`, retrying while the
/// peers certify their first checkpoint.
fn login_in(lab: &Lab, host: &Host, dir: &Path, name: &str, genesis: &Path) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = wallet_in(
            lab,
            host,
            dir,
            &["login", name, "--genesis", genesis.to_str().expect("utf-8")],
        );
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "login {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn connect(dir: &Path, to: &str) -> Value {
    // The control socket is a file: no network from here.
    let out = system_tests::wallet(dir, &["connect", to, "--json"], "");
    assert!(
        out.status.success(),
        "connect {to}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// One lab, one devnet, a wallet on each of `kinds`' hosts (a site with
/// two hosts is two wallets behind one NAT), all online; returns the
/// result of `connect` from wallet `from` to wallet `to` for each pair.
fn run_lab(tag: &str, kinds: &[(NatKind, usize)], pairs: &[(usize, usize)]) -> Option<Linked> {
    run_lab_with(tag, kinds, pairs, &|_| {}, &|_, _, _| {})
}

/// [`run_lab`], with `before` run once everything is up and `after` once
/// the pairs are linked (given the wallets' directories).
fn run_lab_with(
    tag: &str,
    kinds: &[(NatKind, usize)],
    pairs: &[(usize, usize)],
    before: &dyn Fn(&Lab),
    after: &After,
) -> Option<Linked> {
    run_lab_configured(tag, kinds, pairs, &|_| {}, before, after)
}

/// [`run_lab_with`], with `configure` given the peers' directories before
/// they start.
fn run_lab_configured(
    tag: &str,
    kinds: &[(NatKind, usize)],
    pairs: &[(usize, usize)],
    configure: &dyn Fn(&[std::path::PathBuf]),
    before: &dyn Fn(&Lab),
    after: &After,
) -> Option<Linked> {
    let mut lab = lab_or_skip(|| Lab::new(tag))?;
    let mut hosts: Vec<Host> = Vec::new();
    for (kind, n) in kinds {
        hosts.extend(lab.add_site(*kind, *n).expect("site"));
    }
    let root = tempfile::tempdir().expect("tempdir");
    let dirs = peer::devnet::prepare_with(
        root.path(),
        4,
        IpAddr::V4(Lab::PEERS_ADDR),
        7000,
        Vec::new(),
        Some(&bin("wallet")),
    )
    .expect("devnet prepared");
    lab.check().expect("the lab is sealed");
    configure(&dirs);
    let _peers = start_peers(&lab, &dirs);
    let genesis = root.path().join("genesis.json");
    let ws = peer::devnet::wallets(root.path()).expect("wallets.json");
    assert!(hosts.len() <= ws.len());
    let mut online = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        login_in(&lab, h, &ws[i].dir, &ws[i].login(), &genesis);
        let ns = h.ns.clone();
        let lab_ref = &lab;
        let wrap = move |exe: &Path| -> Command { lab_ref.command(&ns, exe) };
        online.push(OnlineWallet::start(&ws[i].dir, Some(&wrap)));
    }
    wait_for_mesh(&dirs);
    before(&lab);
    let mut out = Vec::new();
    for &(a, b) in pairs {
        let v = std::panic::catch_unwind(|| connect(&ws[a].dir, &ws[b].login()));
        let v = v.unwrap_or_else(|e| {
            for w in &online {
                eprintln!("--- {}:\n{}", w.dir.display(), w.log());
            }
            std::panic::resume_unwind(e)
        });
        out.push((v, hosts[a].clone(), hosts[b].clone()));
    }
    let wdirs: Vec<std::path::PathBuf> = ws.iter().map(|w| w.dir.clone()).collect();
    after(&lab, &hosts, &wdirs);
    // A ping more over each link, so a relayed one shows in the counts.
    for &(a, b) in pairs {
        connect(&ws[a].dir, &ws[b].login());
    }
    let relayed = dirs
        .iter()
        .map(|d| {
            let out = Command::new(bin("peer"))
                .args(["status", "--json", "--dir"])
                .arg(d)
                .output()
                .expect("peer status");
            let v: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
            v["relayed_bytes"].as_u64().expect("relayed_bytes")
        })
        .sum();
    drop(online);
    Some((out, relayed))
}

#[test]
fn wallets_behind_cone_nats_link_directly() {
    let Some((r, relayed)) = run_lab(
        "wcone",
        &[(NatKind::Cone, 1), (NatKind::Cone, 1)],
        &[(0, 1)],
    ) else {
        return;
    };
    let (v, _, _) = &r[0];
    assert_eq!(v["path"], "direct", "{v}");
    assert_eq!(relayed, 0, "a direct link relays nothing");
    // Through the other wallet's router: 203.0.113.(20 + site).
    assert!(
        v["addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("203.0.113.22:")),
        "{v}"
    );
}

#[test]
fn a_wallet_behind_a_symmetric_nat_links_with_one_behind_a_cone_nat() {
    // The cone side asks the symmetric one, then the symmetric side asks
    // another cone wallet: probing works whichever side asks.
    let Some((r, _)) = run_lab(
        "wsym",
        &[
            (NatKind::Cone, 1),
            (NatKind::Symmetric, 1),
            (NatKind::Cone, 1),
        ],
        &[(0, 1), (1, 2)],
    ) else {
        return;
    };
    for (v, _, _) in &r {
        assert_eq!(v["path"], "direct", "{v}");
        assert!(v.get("reused").is_none(), "{v}");
    }
    // Between a port-restricted cone and a random-port NAT only probing
    // finds a direct path. The symmetric side holds one mapping toward the
    // cone side per socket it opened plus its main socket's, and the first
    // probe to hit any of them wins: the main socket's wins 1 time in 257.
    let socket = r[1].0["socket"].as_u64().expect("a socket number");
    let opened = u64::from(nat::punch::Config::default().probe_sockets);
    assert!(socket <= opened, "{}", r[1].0);
}

#[test]
fn wallets_behind_one_nat_and_a_public_wallet_link() {
    let Some((r, _)) = run_lab(
        "wsame",
        &[(NatKind::Cone, 2), (NatKind::Public, 1)],
        &[(0, 1), (2, 0)],
    ) else {
        return;
    };
    let (v, _, b) = &r[0];
    assert_eq!(v["path"], "direct", "{v}");
    assert_eq!(
        v["addr"].as_str().and_then(|a| a.split(':').next()),
        Some(b.addr.to_string().as_str()),
        "behind one NAT the LAN address is used: {v}"
    );
    assert_eq!(r[1].0["path"], "direct", "{}", r[1].0);
}

#[test]
fn wallets_without_a_direct_path_link_through_the_relay() {
    // Two NATs that map by destination; a network that lets UDP out only
    // to the peers.
    // Then a payment from the blocked network's wallet to one behind a
    // symmetric NAT goes over their relayed link.
    let pay = |lab: &Lab, hosts: &[Host], dirs: &[std::path::PathBuf]| {
        let (hc, ha) = (&hosts[2], &hosts[0]);
        let before = json_in(lab, ha, &dirs[0], &["balance", "--json"])["assets"]["native"]
            ["amount"]
            .as_u64()
            .expect("amount");
        let sent = json_in(
            lab,
            hc,
            &dirs[2],
            &["send", "--to", "w-0@peer-0", "--amount", "1234", "--json"],
        );
        assert_eq!(sent["path"], "relay", "{sent}");
        assert_eq!(sent["outcome"], "applied", "{sent}");
        assert_eq!(sent["delivered"], true, "{sent}");
        let after = json_in(lab, ha, &dirs[0], &["balance", "--json"])["assets"]["native"]
            ["amount"]
            .as_u64()
            .expect("amount");
        assert_eq!(after, before + 1234);
    };
    let Some((r, relayed)) = run_lab_with(
        "wrelay",
        &[
            (NatKind::Symmetric, 1),
            (NatKind::Symmetric, 1),
            (NatKind::Blocked, 1),
        ],
        &[(0, 1), (2, 0)],
        &|_| {},
        &pay,
    ) else {
        return;
    };
    for (v, _, _) in &r {
        assert_eq!(v["path"], "relay", "{v}");
        assert!(v["rtt_ms"].as_f64().is_some(), "{v}");
    }
    assert!(relayed > 0, "the peers relayed the links' packets");
}

/// The router namespace of site `site` (1, 2, …) of `lab`.
fn router_ns(lab: &Lab, site: usize) -> String {
    let suffix = format!("-s{site}nat");
    lab.namespaces()
        .into_iter()
        .find(|n| n.ends_with(&suffix))
        .expect("the site's router")
        .to_string()
}

fn iptables(lab: &Lab, ns: &str, args: &[&str]) {
    let out = lab
        .command(ns, "iptables")
        .args(args)
        .output()
        .expect("iptables");
    assert!(
        out.status.success(),
        "iptables {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_link_that_starts_on_the_relay_moves_to_a_direct_path_when_one_opens() {
    // Site 2's router lets UDP out only to the peers at first, so the link
    // comes up through the relay; then it opens, and the same link moves
    // to a direct path without the wallets reconnecting.
    const BLOCK: [&str; 10] = [
        "FORWARD",
        "-i",
        "lan",
        "-p",
        "udp",
        "!",
        "-d",
        "203.0.113.10",
        "-j",
        "DROP",
    ];
    let before = |lab: &Lab| {
        let r = router_ns(lab, 2);
        let mut args = vec!["-I"];
        args.extend(BLOCK);
        iptables(lab, &r, &args);
    };
    let after = |lab: &Lab, _: &[Host], dirs: &[std::path::PathBuf]| {
        let links = |d: &Path| -> Value {
            let out = system_tests::wallet(d, &["links", "--json"], "");
            serde_json::from_slice(&out.stdout).expect("links JSON")
        };
        assert_eq!(links(&dirs[0])["links"][0]["path"], "relay");
        let r = router_ns(lab, 2);
        let mut args = vec!["-D"];
        args.extend(BLOCK);
        iptables(lab, &r, &args);
        let deadline = Instant::now() + Duration::from_secs(15);
        while links(&dirs[0])["links"][0]["path"] != "direct"
            || links(&dirs[1])["links"][0]["path"] != "direct"
        {
            assert!(
                Instant::now() < deadline,
                "still relayed: {}",
                links(&dirs[0])
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let Some((r, _)) = run_lab_with(
        "wmove",
        &[(NatKind::Cone, 1), (NatKind::Cone, 1)],
        &[(0, 1)],
        &before,
        &after,
    ) else {
        return;
    };
    assert_eq!(r[0].0["path"], "relay", "{}", r[0].0);
}

fn json_in(lab: &Lab, host: &Host, dir: &Path, args: &[&str]) -> Value {
    let out = wallet_in(lab, host, dir, args);
    assert!(
        out.status.success(),
        "wallet {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().expect("a line")).expect("JSON")
}

/// Issue 1000 units of a new asset `name` from `dir` (inside `host`); its id.
fn issue_in(lab: &Lab, host: &Host, dir: &Path, name: &str) -> String {
    let v = json_in(lab, host, dir, &system_tests::issue_args(name));
    v["asset"].as_str().expect("asset").to_string()
}

/// A room owned by the first wallet, joined by the other two: its name,
/// each member's path as the owner lists it, and the whole listing.
fn room_of_three(lab: &Lab, hosts: [&Host; 3], dirs: [&Path; 3]) -> (String, Vec<String>, Value) {
    let room = json_in(lab, hosts[0], dirs[0], &["room", "create", "--json"]);
    let room = room["room"].as_str().expect("room").to_string();
    for i in 1..3 {
        json_in(lab, hosts[i], dirs[i], &["room", "join", &room, "--json"]);
    }
    let m = json_in(
        lab,
        hosts[0],
        dirs[0],
        &["room", "members", &room, "--json"],
    );
    let paths = m["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|x| x["path"].as_str().unwrap_or("").to_string())
        .collect();
    (room, paths, m)
}

#[test]
fn a_three_party_swap_across_a_symmetric_nat_and_a_blocked_network() {
    // A behind a home router owns the room; B behind a symmetric NAT
    // (linked to A by port probing), C on a network that lets UDP out only
    // to the peers (linked through the relay). A gives native for Y, B
    // gives Y for Z, C gives Z for native: one transaction.
    let after = |lab: &Lab, hosts: &[Host], dirs: &[std::path::PathBuf]| {
        let (ha, hb, hc) = (&hosts[0], &hosts[1], &hosts[2]);
        let (a, b, c) = (&dirs[0], &dirs[1], &dirs[2]);
        let y = issue_in(lab, hb, b, "ygold");
        let z = issue_in(lab, hc, c, "zsilver");
        let (room, paths, m) = room_of_three(lab, [ha, hb, hc], [a, b, c]);
        assert_eq!(paths, ["owner", "direct", "relay"], "{m}");
        let parties = [
            (ha, a, "1000000:native".to_string(), format!("50:{y}")),
            (hb, b, format!("50:{y}"), format!("20:{z}")),
            (hc, c, format!("20:{z}"), "1000000:native".to_string()),
        ];
        let room = room.as_str();
        let outs: Vec<Value> = std::thread::scope(|s| {
            let hs: Vec<_> = parties
                .iter()
                .map(|(h, d, give, want)| {
                    s.spawn(move || {
                        json_in(
                            lab,
                            h,
                            d,
                            &["swap", room, "--give", give, "--want", want, "--json"],
                        )
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("thread")).collect()
        });
        for o in &outs {
            assert_eq!(o["txid"], outs[0]["txid"], "{o}");
            assert_eq!(o["parties"], 3, "{o}");
        }
        let bal = |h: &Host, d: &Path, asset: &str| -> u64 {
            json_in(lab, h, d, &["balance", "--json"])["assets"][asset]["amount"]
                .as_u64()
                .unwrap_or(0)
        };
        assert_eq!(bal(ha, a, &y), 50);
        assert_eq!(bal(hb, b, &z), 20);
        assert_eq!(bal(hc, c, &z), 980);
    };
    run_lab_with(
        "wswap",
        &[
            (NatKind::Cone, 1),
            (NatKind::Symmetric, 1),
            (NatKind::Blocked, 1),
        ],
        &[],
        &|_| {},
        &after,
    );
}

/// The pid of `wallet --dir DIR online`, from /proc.
fn online_pid(dir: &Path) -> u32 {
    let want = format!("{}\0online", dir.display());
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&want))
                // Not the `ip netns exec` wrapper: it has exec'd by now,
                // but a racing one would show the same arguments.
                && std::fs::read_link(format!("/proc/{pid}/exe"))
                    .is_ok_and(|e| e.ends_with("wallet"))
        })
        .expect("the online wallet's process")
}

#[test]
fn a_killed_party_an_invitation_without_peers_and_a_lying_peer_behind_nats() {
    // A and B behind home routers, C behind a symmetric NAT, D behind a
    // home router at peer-3, which lies in its rendezvous answers.
    let configure = |dirs: &[std::path::PathBuf]| {
        let path = dirs[3].join("config.toml");
        let mut text = std::fs::read_to_string(&path).expect("config.toml");
        text.push_str("\ntest_lie = \"substitute_link_key\"\n");
        std::fs::write(&path, text).expect("config.toml written");
    };
    let after = |lab: &Lab, hosts: &[Host], dirs: &[std::path::PathBuf]| {
        let (ha, hb, hc) = (&hosts[0], &hosts[1], &hosts[2]);
        let (a, b, c) = (&dirs[0], &dirs[1], &dirs[2]);
        let y = issue_in(lab, hb, b, "ygold");
        let (room, paths, m) = room_of_three(lab, [ha, hb, hc], [a, b, c]);
        assert_eq!(paths, ["owner", "direct", "direct"], "{m}");
        let native = |h: &Host, d: &Path| -> u64 {
            json_in(lab, h, d, &["balance", "--json"])["assets"]["native"]["amount"]
                .as_u64()
                .unwrap_or(0)
        };
        let (a0, b0) = (native(ha, a), native(hb, b));

        // C offers, then its online wallet is killed mid-swap: the swap
        // aborts for A and B, naming C, and nothing is spent.
        let room = room.as_str();
        let swap = |h: &Host, d: &Path, give: &str, want: &str| {
            wallet_in(
                lab,
                h,
                d,
                &[
                    "swap", room, "--give", give, "--want", want, "--wait", "60", "--json",
                ],
            )
        };
        // Balanced: B gives 2 Y for 200 native; A and C give 100 native
        // for 1 Y each.
        let (ya, y2) = (format!("1:{y}"), format!("2:{y}"));
        let (aborted, c_out) = std::thread::scope(|s| {
            let c_offer = s.spawn(|| swap(hc, c, "100:native", &ya));
            std::thread::sleep(Duration::from_secs(2));
            let killed = Command::new("kill")
                .args(["-KILL", &online_pid(c).to_string()])
                .status()
                .expect("kill");
            assert!(killed.success());
            let others: Vec<_> = [
                s.spawn(|| swap(ha, a, "100:native", &ya)),
                s.spawn(|| swap(hb, b, &y2, "200:native")),
            ]
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
            (others, c_offer.join().expect("thread"))
        });
        for o in &aborted {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{err}");
            assert!(
                err.contains("aborted") && err.contains("w-2@peer-2"),
                "the error names the party that failed: {err}"
            );
        }
        assert!(!c_out.status.success(), "C's swap did not happen");
        assert_eq!((native(ha, a), native(hb, b)), (a0, b0), "nothing moved");

        // The same outputs are free: A and B swap them, directly.
        let y50 = format!("50:{y}");
        let outs: Vec<Value> = std::thread::scope(|s| {
            let hs = [
                s.spawn(|| swap(ha, a, "1000000:native", &y50)),
                s.spawn(|| swap(hb, b, &y50, "1000000:native")),
            ];
            hs.into_iter()
                .map(|h| {
                    let o = h.join().expect("thread");
                    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                    serde_json::from_slice(&o.stdout).expect("JSON")
                })
                .collect()
        });
        assert_eq!(outs[0]["txid"], outs[1]["txid"], "{outs:?}");
        assert_eq!(outs[0]["parties"], 2);
        assert_eq!(native(hb, b), b0 + 1_000_000);

        // An invitation without a peer: C comes back online, links with B
        // (through the peers), and B invites it into a room A owns; C's
        // link to A is punched with introductions passed over B's links
        // (C behind a symmetric NAT: port probing). No peer's rendezvous
        // or relay counter moves.
        let ns = hc.ns.clone();
        let wrap = move |exe: &Path| -> Command { lab.command(&ns, exe) };
        let _oc = OnlineWallet::start(c, Some(&wrap));
        json_in(lab, hb, b, &["connect", "w-2@peer-2", "--json"]);
        let room2 = json_in(lab, ha, a, &["room", "create", "--json"]);
        let room2 = room2["room"].as_str().expect("room").to_string();
        json_in(lab, hb, b, &["room", "join", &room2, "--json"]);
        let root = a.parent().and_then(Path::parent).expect("devnet root");
        let counters = || -> Vec<(u64, u64)> {
            (0..4)
                .map(|i| {
                    let out = Command::new(bin("peer"))
                        .args(["status", "--json", "--dir"])
                        .arg(peer::devnet::peer_dir(root, i))
                        .output()
                        .expect("peer status");
                    let v: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
                    (
                        v["rendezvous_requests"]
                            .as_u64()
                            .expect("rendezvous_requests"),
                        v["relayed_bytes"].as_u64().expect("relayed_bytes"),
                    )
                })
                .collect()
        };
        let before = counters();
        let inv = json_in(
            lab,
            hb,
            b,
            &["room", "invite", &room2, "--to", "w-2@peer-2", "--json"],
        );
        let id = inv["id"].as_str().expect("id").to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !json_in(lab, hc, c, &["room", "invites", "--json"])["invites"]
            .as_array()
            .is_some_and(|l| l.iter().any(|i| i["id"] == id.as_str()))
        {
            assert!(Instant::now() < deadline, "the invitation never came");
            std::thread::sleep(Duration::from_millis(100));
        }
        let joined = json_in(lab, hc, c, &["room", "accept", &id, "--json"]);
        assert_eq!(joined["joined"], true, "{joined}");
        assert_eq!(joined["path"], "direct", "{joined}");
        let m = json_in(lab, ha, a, &["room", "members", &room2, "--json"]);
        assert!(
            m["members"]
                .as_array()
                .is_some_and(|l| l.iter().any(|x| x["name"] == "w-2@peer-2")),
            "{m}"
        );
        assert_eq!(counters(), before, "no peer took part in the invitation");

        // D's peer vouches for a key of its own: A's link attempt fails
        // and names peer-3; no link to D.
        let out = system_tests::wallet(a, &["connect", "w-3@peer-3"], "");
        let err = system_tests::failure(&out);
        assert!(
            err.contains("peer-3") && err.contains("man in the middle"),
            "{err}"
        );
    };
    run_lab_configured(
        "wkill",
        &[
            (NatKind::Cone, 1),
            (NatKind::Cone, 1),
            (NatKind::Symmetric, 1),
            (NatKind::Cone, 1),
        ],
        &[],
        &configure,
        &|_| {},
        &after,
    );
}
