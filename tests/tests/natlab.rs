//! The NAT lab (`nat::lab`) proves its NATs: real namespaces and netfilter,
//! probed with `udp_probe` processes run inside them. Needs root, `ip` and
//! `iptables`; prints `SKIPPED natlab: WHY` otherwise, unless
//! `NATLAB_REQUIRED=1`, which makes that a failure.

use nat::lab::{Host, Lab, LabError, NatKind};
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use system_tests::lab_or_skip;

const PROBE: &str = env!("CARGO_BIN_EXE_udp_probe");

/// Children killed (and reaped) when the test ends, however it ends.
#[derive(Default)]
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn v4(addr: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(addr, port)
}

/// Start `udp_probe ARGS` in `ns` and wait until it says it is bound.
fn spawn_ready(lab: &Lab, ns: &str, args: &[String]) -> Child {
    let mut child = lab
        .command(ns, PROBE)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("udp_probe starts");
    let mut line = String::new();
    let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
    stderr.read_line(&mut line).expect("udp_probe's first line");
    assert!(
        line.starts_with("listening on"),
        "udp_probe {args:?} in {ns} did not start: {line}"
    );
    // Whatever it says later (errors) goes to the test's output.
    let who = format!("udp_probe {} in {ns}", args[0]);
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            eprintln!("{who}: {line}");
        }
    });
    child
}

fn echo_server(lab: &Lab, ns: &str, bind: SocketAddrV4) -> Child {
    spawn_ready(
        lab,
        ns,
        &["echo-server".into(), "--bind".into(), bind.to_string()],
    )
}

fn listen(lab: &Lab, ns: &str, bind: SocketAddrV4, ms: u64) -> Child {
    spawn_ready(
        lab,
        ns,
        &[
            "listen".into(),
            "--bind".into(),
            bind.to_string(),
            "--ms".into(),
            ms.to_string(),
        ],
    )
}

/// Run `udp_probe ARGS` in `ns` to the end; its one JSON line.
fn probe_json(lab: &Lab, ns: &str, args: &[String]) -> serde_json::Value {
    let out = lab
        .command(ns, PROBE)
        .args(args)
        .output()
        .expect("udp_probe runs");
    assert!(
        out.status.success(),
        "udp_probe {args:?} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "udp_probe {args:?}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn addrs(v: &serde_json::Value, key: &str) -> Vec<Option<SocketAddr>> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {v}"))
        .iter()
        .map(|a| a.as_str().map(|s| s.parse().expect("an address")))
        .collect()
}

/// What each echo server in `to` saw of one socket bound to `bind` in `ns`.
fn ask(lab: &Lab, ns: &str, bind: SocketAddrV4, to: &[SocketAddrV4]) -> Vec<Option<SocketAddr>> {
    let mut args = vec!["ask".to_string(), "--bind".into(), bind.to_string()];
    for t in to {
        args.extend(["--to".into(), t.to_string()]);
    }
    args.extend(["--timeout-ms".into(), "1200".into()]);
    addrs(&probe_json(lab, ns, &args), "seen")
}

/// The sources a `listen` child heard.
fn heard(child: Child) -> Vec<SocketAddr> {
    let out = child.wait_with_output().expect("listen ends");
    assert!(out.status.success(), "listen failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("listen's JSON");
    addrs(&v, "got").into_iter().flatten().collect()
}

fn send(lab: &Lab, ns: &str, bind: SocketAddrV4, to: SocketAddr, count: u32) {
    let out = lab
        .command(ns, PROBE)
        .args(["send", "--bind", &bind.to_string(), "--to", &to.to_string()])
        .args(["--count", &count.to_string()])
        .output()
        .expect("udp_probe runs");
    assert!(
        out.status.success(),
        "send from {bind} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn listed_namespaces() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_gone(names: &[String]) {
    let listed = listed_namespaces();
    let listed: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for n in names {
        assert!(!listed.contains(&n.as_str()), "{n} is still there");
    }
}

#[test]
fn the_lab_nats_behave_as_specified() {
    let started = Instant::now();
    let Some((lab, cone, sym, blocked, public)) = lab_or_skip(|| {
        let mut lab = Lab::new("nats")?;
        let cone = lab.add_site(NatKind::Cone, 2)?;
        let sym = lab.add_site(NatKind::Symmetric, 1)?;
        let blocked = lab.add_site(NatKind::Blocked, 1)?;
        let public = lab.add_site(NatKind::Public, 1)?;
        Ok((lab, cone, sym, blocked, public))
    }) else {
        return;
    };
    let built = started.elapsed();
    let [sym, blocked, public]: [Host; 3] = [&sym, &blocked, &public].map(|h| h[0].clone());
    let mut children = Children::default();
    let peers = lab.peers_ns().to_string();
    let servers = [v4(Lab::PEERS_ADDR, 7001), v4(Lab::PEERS_ADDR, 7002)];
    for s in servers {
        children.0.push(echo_server(&lab, &peers, s));
    }
    let ip = |a: Option<SocketAddr>| a.map(|a| a.ip());
    let port = |a: Option<SocketAddr>| a.map(|a| a.port());

    // 1. Cone: the router's outside address, one port for both servers.
    let cone_out = lab.router_addr(cone[0].site).unwrap();
    assert_eq!(cone_out, Ipv4Addr::new(203, 0, 113, 21));
    let seen = ask(&lab, &cone[0].ns, v4(cone[0].addr, 40000), &servers);
    assert_eq!(ip(seen[0]), Some(cone_out.into()), "cone: {seen:?}");
    assert_eq!(ip(seen[1]), Some(cone_out.into()), "cone: {seen:?}");
    assert_eq!(
        port(seen[0]),
        port(seen[1]),
        "cone maps per destination: {seen:?}"
    );

    // 2. Symmetric: a new outside port per destination.
    let sym_out = lab.router_addr(sym.site).unwrap();
    let mut differ = 0;
    let mut pairs = Vec::new();
    for k in 0..5 {
        let seen = ask(&lab, &sym.ns, v4(sym.addr, 40000 + k), &servers);
        assert!(
            seen.iter().all(|s| ip(*s) == Some(sym_out.into())),
            "symmetric: {seen:?}"
        );
        differ += usize::from(port(seen[0]) != port(seen[1]));
        pairs.push((40000 + k, port(seen[0]).unwrap(), port(seen[1]).unwrap()));
    }
    eprintln!("symmetric NAT (local port, port seen by 7001, by 7002): {pairs:?}");
    assert!(differ >= 4, "symmetric NAT kept ports: {pairs:?}");

    // 3. Public: seen as itself.
    let me = v4(public.addr, 40000);
    assert_eq!(public.addr, Ipv4Addr::new(203, 0, 113, 104));
    assert_eq!(
        ask(&lab, &public.ns, me, &servers),
        vec![Some(me.into()); 2]
    );

    // 4. Blocked: the peers answer, the public host hears nothing (while it
    // does hear the cone site's second host, sending at the same time).
    let blocked_out = lab.router_addr(blocked.site).unwrap();
    let seen = ask(&lab, &blocked.ns, v4(blocked.addr, 40000), &servers);
    assert!(
        seen.iter().all(|s| ip(*s) == Some(blocked_out.into())),
        "blocked: the peers must answer: {seen:?}"
    );
    let public_port = v4(public.addr, 41000);
    let listener = listen(&lab, &public.ns, public_port, 600);
    send(
        &lab,
        &blocked.ns,
        v4(blocked.addr, 41000),
        public_port.into(),
        3,
    );
    send(
        &lab,
        &cone[1].ns,
        v4(cone[1].addr, 41000),
        public_port.into(),
        3,
    );
    let got = heard(listener);
    assert!(!got.is_empty(), "the public host heard nobody");
    assert!(
        got.iter()
            .all(|a| a.ip() == std::net::IpAddr::from(cone_out)),
        "the public host heard the blocked site: {got:?}"
    );

    // 5. Cone filtering: nothing unsolicited comes in; after the cone host
    // sent to the public host's port, that port's datagrams do.
    let host_port = v4(cone[0].addr, 42000);
    let public_port = v4(public.addr, 42000);
    let mapped = ask(&lab, &cone[0].ns, host_port, &servers[..1])[0].expect("mapping");
    let listener = listen(&lab, &cone[0].ns, host_port, 500);
    send(&lab, &public.ns, public_port, mapped, 3);
    let got = heard(listener);
    assert!(got.is_empty(), "unsolicited datagrams came in: {got:?}");
    send(&lab, &cone[0].ns, host_port, public_port.into(), 1);
    let listener = listen(&lab, &cone[0].ns, host_port, 500);
    send(&lab, &public.ns, public_port, mapped, 3);
    let got = heard(listener);
    assert!(
        !got.is_empty() && got.iter().all(|a| *a == SocketAddr::from(public_port)),
        "through the hole from {public_port} to {mapped}: {got:?}"
    );

    // 6. Same NAT: the two hosts of one site reach each other on the LAN.
    let lan_server = v4(cone[1].addr, 9000);
    children.0.push(echo_server(&lab, &cone[1].ns, lan_server));
    let me = v4(cone[0].addr, 43000);
    assert_eq!(
        ask(&lab, &cone[0].ns, me, &[lan_server]),
        vec![Some(me.into())]
    );

    drop(children);
    let names: Vec<String> = lab.namespaces().into_iter().map(String::from).collect();
    lab.check().expect("still a clean lab");
    drop(lab);
    assert_gone(&names);
    eprintln!(
        "natlab: built in {built:?}, whole test {:?}",
        started.elapsed()
    );
}

#[test]
fn a_dropped_lab_is_gone_even_after_a_panic() {
    let Some(lab) = lab_or_skip(|| {
        let mut lab = Lab::new("drop")?;
        lab.add_site(NatKind::Cone, 1)?;
        Ok(lab)
    }) else {
        return;
    };
    let names: Vec<String> = lab.namespaces().into_iter().map(String::from).collect();
    drop(lab);
    assert_gone(&names);

    // A panic in the middle of a test: the unwind drops the lab, which
    // kills what still runs in it.
    let names = Mutex::new(Vec::<String>::new());
    let server = Mutex::new(None::<Child>);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut lab = Lab::new("panic").expect("a lab, as the first one");
        let host = lab.add_site(NatKind::Cone, 1).expect("a site")[0].clone();
        *names.lock().unwrap() = lab.namespaces().into_iter().map(String::from).collect();
        *server.lock().unwrap() = Some(echo_server(&lab, &host.ns, v4(host.addr, 9000)));
        panic!("deliberate panic: a test body fails with the lab up");
    }));
    assert!(outcome.is_err());
    let names = names.into_inner().unwrap();
    assert!(names.len() >= 4, "{names:?}");
    assert_gone(&names);
    let mut server = server.into_inner().unwrap().expect("the server started");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match server.try_wait().expect("try_wait") {
            Some(status) => {
                assert!(!status.success(), "killed, not ended: {status}");
                break;
            }
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            None => {
                let _ = server.kill();
                panic!("the lab's drop left a process running in its namespace");
            }
        }
    }
}

#[test]
fn check_rejects_a_foreign_route() {
    let Some((lab, host)) = lab_or_skip(|| {
        let mut lab = Lab::new("route")?;
        let host = lab.add_site(NatKind::Cone, 1)?[0].clone();
        Ok((lab, host))
    }) else {
        return;
    };
    lab.check().expect("a fresh lab is clean");
    let out = Command::new("ip")
        .args([
            "-n",
            &host.ns,
            "route",
            "add",
            "10.9.9.0/24",
            "via",
            "192.168.1.1",
        ])
        .output()
        .expect("ip route add");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    match lab.check() {
        Err(e @ LabError::ForeignRoute { .. }) => {
            let LabError::ForeignRoute { ns, route } = &e else {
                unreachable!()
            };
            assert_eq!(ns, &host.ns);
            assert!(route.starts_with("10.9.9.0/24 via 192.168.1.1"), "{route}");
            assert!(e.to_string().contains(&host.ns), "{e}");
        }
        other => panic!("check() accepted a foreign route: {other:?}"),
    }
    let names: Vec<String> = lab.namespaces().into_iter().map(String::from).collect();
    drop(lab);
    assert_gone(&names);
}
