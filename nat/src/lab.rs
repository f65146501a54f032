//! A NAT lab built from Linux network namespaces, for system tests.
//!
//! This is test infrastructure, not part of the sans-IO core: it shells out
//! to `ip` and `iptables` (and `sysctl`, `kill`), needs root, and changes
//! the machine's network namespaces. A [`Lab`] is an "internet"
//! (203.0.113.0/24, a bridge in its own namespace), one namespace of peers
//! on [`Lab::PEERS_ADDR`] (many peer processes, one per UDP port), and
//! sites added with [`Lab::add_site`]: site `i` is either a NAT router at
//! 203.0.113.(20+i) in front of hosts 192.168.i.2, .3, … on the LAN
//! 192.168.i.0/24 (router inside 192.168.i.1), or a host directly on the
//! internet at 203.0.113.(100+i). Every interface lives inside a namespace
//! of the lab (veth pairs are made between namespaces), nothing is
//! routed beyond the lab's own networks ([`Lab::check`]), and processes
//! reach the lab only when started with [`Lab::command`]. Dropping the lab,
//! also during a panic, kills every process left in its namespaces and
//! deletes them.
//!
//! The NAT kinds ([`NatKind`]) are netfilter rules on the router:
//! `MASQUERADE` (endpoint-independent mapping in practice, because the
//! kernel keeps the source port when it is free), `MASQUERADE
//! --random-fully` (a new random port per destination), and the filtering
//! of a home router (only replies come in; new inbound traffic is dropped,
//! on INPUT too, so that a punch arriving before the other side's own punch
//! leaves no conntrack entry that would block the hole).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Why a lab cannot be built, or is not what it should be.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Namespaces and netfilter need root.
    #[error("not root ({0}): network namespaces and netfilter need root")]
    NotRoot(String),
    /// A program the lab runs is not installed.
    #[error("`{0}` is not installed (not found in PATH)")]
    Missing(&'static str),
    /// A command failed; its command line and standard error.
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    /// A namespace of the lab is not in `ip netns list` any more.
    #[error("namespace {0} of the lab is gone (not in `ip netns list`)")]
    NamespaceGone(String),
    /// A namespace routes somewhere beyond its own networks.
    #[error("namespace {ns} has a route beyond its own networks: {route}")]
    ForeignRoute { ns: String, route: String },
    /// A request the lab cannot honour (bad tag, too many sites or hosts).
    #[error("invalid lab request: {0}")]
    Invalid(String),
}

/// How a site meets the internet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatKind {
    /// MASQUERADE and a home-router firewall: the mapping keeps one
    /// outside port for every destination; only replies come in (from the
    /// exact address and port that was sent to).
    Cone,
    /// MASQUERADE --random-fully: each destination gets its own random
    /// outside port; filtering as [`NatKind::Cone`].
    Symmetric,
    /// [`NatKind::Cone`], but the LAN may only send UDP to the peers
    /// ([`Lab::PEERS_ADDR`]); everything else out is dropped.
    Blocked,
    /// No NAT: one host directly on the internet.
    Public,
}

/// A host of a site: the namespace to run its processes in, and its
/// address (on the LAN, or on the internet for a [`NatKind::Public`] site).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    pub ns: String,
    pub addr: Ipv4Addr,
    /// The site number (1, 2, …), as in [`Lab::router_addr`].
    pub site: usize,
}

/// A namespace of the lab and the routes it may have: `(destination, via)`
/// as `ip route` prints them (`via` none for a connected network).
struct Ns {
    name: String,
    allowed: Vec<(String, Option<Ipv4Addr>)>,
}

/// A lab of namespaces; see the module documentation.
pub struct Lab {
    prefix: String,
    namespaces: Vec<Ns>,
    sites: Vec<NatKind>,
}

const INTERNET: &str = "203.0.113.0/24";
/// Sites are numbered 1..=MAX_SITES (outside addresses .21..=.99).
const MAX_SITES: usize = 79;
const MAX_HOSTS: usize = 253;

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Lab {
    /// The peers' address; they all live in [`Lab::peers_ns`].
    pub const PEERS_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

    /// The internet and the peers' namespace. `tag` (1 to 12 ASCII letters
    /// or digits) names the lab's namespaces: `pos-TAG-PID-N-ROLE`, `N`
    /// counting the labs of this process. Also deletes what labs of
    /// processes that are gone left behind (killed before they could clean
    /// up). Fails, saying why, when the lab cannot run here: not root, a
    /// program missing, or a command failing (namespaces or netfilter not
    /// available).
    pub fn new(tag: &str) -> Result<Lab, LabError> {
        if tag.is_empty() || tag.len() > 12 || !tag.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(LabError::Invalid(format!(
                "tag {tag:?}: 1 to 12 ASCII letters or digits"
            )));
        }
        preflight()?;
        sweep_stale();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut lab = Lab {
            prefix: format!("pos-{tag}-{}-{n}", std::process::id()),
            namespaces: Vec::new(),
            sites: Vec::new(),
        };
        // From here on, an error drops `lab`, which deletes what was made.
        let inet = lab.add_ns("inet", Vec::new(), false)?;
        ip(&["-n", &inet, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &inet, "link", "set", "br0", "up"])?;
        // Netfilter works in a namespace (the routers need it).
        in_ns(&inet, "iptables", &["-w", "-t", "nat", "-S"])?;
        let peers = lab.add_ns("peers", vec![(INTERNET.into(), None)], false)?;
        lab.attach(&peers, "peers", "eth0", Lab::PEERS_ADDR)?;
        lab.check()?;
        Ok(lab)
    }

    /// The namespace of the peers (address [`Lab::PEERS_ADDR`]).
    pub fn peers_ns(&self) -> &str {
        &self.namespaces[1].name
    }

    /// Every namespace of the lab, in the order they were made.
    pub fn namespaces(&self) -> Vec<&str> {
        self.namespaces.iter().map(|n| n.name.as_str()).collect()
    }

    /// Add site number `self.sites + 1` of `kind` with `hosts` hosts (a
    /// [`NatKind::Public`] site has exactly one), then [`Lab::check`] it.
    pub fn add_site(&mut self, kind: NatKind, hosts: usize) -> Result<Vec<Host>, LabError> {
        let i = self.sites.len() + 1;
        if i > MAX_SITES {
            return Err(LabError::Invalid(format!("at most {MAX_SITES} sites")));
        }
        if kind == NatKind::Public && hosts != 1 {
            return Err(LabError::Invalid(format!(
                "a public site has one host, not {hosts}"
            )));
        }
        if hosts == 0 || hosts > MAX_HOSTS {
            return Err(LabError::Invalid(format!(
                "a site has 1 to {MAX_HOSTS} hosts, not {hosts}"
            )));
        }
        self.sites.push(kind);
        let first_new = self.namespaces.len();
        let uplink = format!("s{i}");
        let made = if kind == NatKind::Public {
            let addr = Ipv4Addr::new(203, 0, 113, 100 + i as u8);
            let ns = self.add_ns(&format!("s{i}pub"), vec![(INTERNET.into(), None)], false)?;
            self.attach(&ns, &uplink, "eth0", addr)?;
            vec![Host { ns, addr, site: i }]
        } else {
            let lan = format!("192.168.{i}.0/24");
            let inside = Ipv4Addr::new(192, 168, i as u8, 1);
            let router = self.add_ns(
                &format!("s{i}nat"),
                vec![(INTERNET.into(), None), (lan.clone(), None)],
                true,
            )?;
            self.attach(
                &router,
                &uplink,
                "out",
                Ipv4Addr::new(203, 0, 113, 20 + i as u8),
            )?;
            ip(&["-n", &router, "link", "add", "lan", "type", "bridge"])?;
            ip(&[
                "-n",
                &router,
                "addr",
                "add",
                &format!("{inside}/24"),
                "dev",
                "lan",
            ])?;
            ip(&["-n", &router, "link", "set", "lan", "up"])?;
            firewall(&router, kind)?;
            let mut made = Vec::with_capacity(hosts);
            for j in 1..=hosts {
                let addr = Ipv4Addr::new(192, 168, i as u8, 1 + j as u8);
                let ns = self.add_ns(
                    &format!("s{i}h{j}"),
                    vec![(lan.clone(), None), ("default".into(), Some(inside))],
                    false,
                )?;
                let port = format!("h{j}");
                ip(&[
                    "-n", &router, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                    "netns", &ns,
                ])?;
                ip(&["-n", &router, "link", "set", &port, "master", "lan", "up"])?;
                ip(&[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{addr}/24"),
                    "dev",
                    "eth0",
                ])?;
                ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
                ip(&[
                    "-n",
                    &ns,
                    "route",
                    "add",
                    "default",
                    "via",
                    &inside.to_string(),
                ])?;
                made.push(Host { ns, addr, site: i });
            }
            made
        };
        self.check_some(&self.namespaces[first_new..])?;
        Ok(made)
    }

    /// The outside address of NAT site `site`; `None` for a public site or
    /// one that does not exist.
    pub fn router_addr(&self, site: usize) -> Option<Ipv4Addr> {
        match self.sites.get(site.checked_sub(1)?) {
            Some(NatKind::Public) | None => None,
            Some(_) => Some(Ipv4Addr::new(203, 0, 113, 20 + site as u8)),
        }
    }

    /// Every namespace of the lab exists, and none has a route beyond its
    /// own networks: the connected internet and LAN, and for a LAN host
    /// the default route via its own router (no IPv6 route at all: the lab
    /// turns IPv6 off).
    pub fn check(&self) -> Result<(), LabError> {
        self.check_some(&self.namespaces)
    }

    fn check_some(&self, namespaces: &[Ns]) -> Result<(), LabError> {
        let listed = ip(&["netns", "list"])?;
        let listed: HashSet<&str> = listed
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let v6 = Path::new("/proc/sys/net/ipv6").exists();
        for ns in namespaces {
            if !listed.contains(ns.name.as_str()) {
                return Err(LabError::NamespaceGone(ns.name.clone()));
            }
            let routes = ip(&["-o", "-4", "-n", &ns.name, "route", "show", "table", "main"])?;
            for route in routes.lines().filter(|l| !l.trim().is_empty()) {
                if !route_allowed(route, &ns.allowed) {
                    return Err(LabError::ForeignRoute {
                        ns: ns.name.clone(),
                        route: route.trim().to_string(),
                    });
                }
            }
            if v6 {
                let routes = ip(&["-o", "-6", "-n", &ns.name, "route", "show", "table", "main"])?;
                if let Some(route) = routes.lines().find(|l| !l.trim().is_empty()) {
                    return Err(LabError::ForeignRoute {
                        ns: ns.name.clone(),
                        route: route.trim().to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// `program` to be run inside namespace `ns` of this lab (`ip netns
    /// exec NS PROGRAM`); add its arguments. Panics if `ns` is not one of
    /// the lab's namespaces.
    pub fn command(&self, ns: &str, program: impl AsRef<OsStr>) -> Command {
        assert!(
            self.namespaces.iter().any(|n| n.name == ns),
            "{ns} is not a namespace of this lab"
        );
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }

    /// Make namespace `PREFIX-ROLE` (recorded at once, so that it is
    /// deleted on drop even if what follows fails): IPv6 off, no reverse
    /// path filter, forwarding on for a router, loopback up.
    fn add_ns(
        &mut self,
        role: &str,
        allowed: Vec<(String, Option<Ipv4Addr>)>,
        router: bool,
    ) -> Result<String, LabError> {
        let name = format!("{}-{role}", self.prefix);
        ip(&["netns", "add", &name])?;
        self.namespaces.push(Ns {
            name: name.clone(),
            allowed,
        });
        let mut settings = vec![
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ];
        if Path::new("/proc/sys/net/ipv6").exists() {
            settings.push("net.ipv6.conf.all.disable_ipv6=1");
            settings.push("net.ipv6.conf.default.disable_ipv6=1");
        }
        settings.push(if router {
            "net.ipv4.ip_forward=1"
        } else {
            "net.ipv4.ip_forward=0"
        });
        let mut args = vec!["-qw"];
        args.extend(settings);
        in_ns(&name, "sysctl", &args)?;
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }

    /// Plug namespace `ns` into the internet bridge: a veth named `uplink`
    /// on the bridge and `inside` in `ns`, with `addr`/24.
    fn attach(&self, ns: &str, uplink: &str, inside: &str, addr: Ipv4Addr) -> Result<(), LabError> {
        let inet = &self.namespaces[0].name;
        ip(&[
            "-n", inet, "link", "add", uplink, "type", "veth", "peer", "name", inside, "netns", ns,
        ])?;
        ip(&["-n", inet, "link", "set", uplink, "master", "br0", "up"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            inside,
        ])?;
        ip(&["-n", ns, "link", "set", inside, "up"])?;
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            kill_all(&ns.name);
        }
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = ip(&["netns", "del", &ns.name]) {
                eprintln!("nat::lab: {e}");
            }
        }
    }
}

/// The router's netfilter rules for `kind` (not [`NatKind::Public`]).
fn firewall(router: &str, kind: NatKind) -> Result<(), LabError> {
    let mut rules: Vec<Vec<&str>> = Vec::new();
    let mut masquerade = vec![
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-o",
        "out",
        "-j",
        "MASQUERADE",
    ];
    if kind == NatKind::Symmetric {
        masquerade.push("--random-fully");
    }
    rules.push(masquerade);
    let established = [
        "-m",
        "conntrack",
        "--ctstate",
        "ESTABLISHED,RELATED",
        "-j",
        "ACCEPT",
    ];
    rules.push([&["-A", "INPUT", "-i", "out"][..], &established].concat());
    rules.push(vec!["-A", "INPUT", "-i", "out", "-j", "DROP"]);
    rules.push(
        [
            &["-A", "FORWARD", "-i", "out", "-o", "lan"][..],
            &established,
        ]
        .concat(),
    );
    if kind == NatKind::Blocked {
        rules.push(vec![
            "-A",
            "FORWARD",
            "-i",
            "lan",
            "-o",
            "out",
            "-p",
            "udp",
            "-d",
            "203.0.113.10",
            "-j",
            "ACCEPT",
        ]);
        rules.push(vec![
            "-A", "FORWARD", "-i", "lan", "-o", "out", "-j", "DROP",
        ]);
    } else {
        rules.push(vec![
            "-A", "FORWARD", "-i", "lan", "-o", "out", "-j", "ACCEPT",
        ]);
    }
    rules.push(vec!["-A", "FORWARD", "-i", "out", "-j", "DROP"]);
    for rule in rules {
        let mut args = vec!["-w"];
        args.extend(rule);
        in_ns(router, "iptables", &args)?;
    }
    Ok(())
}

/// Whether one line of `ip -o route` is among `allowed`.
fn route_allowed(line: &str, allowed: &[(String, Option<Ipv4Addr>)]) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    if words.contains(&"nexthop") {
        return false;
    }
    let Some(dst) = words.first() else {
        return true;
    };
    let via = match words.iter().position(|w| *w == "via") {
        None => None,
        Some(at) => match words.get(at + 1).and_then(|v| v.parse().ok()) {
            Some(addr) => Some(addr),
            None => return false,
        },
    };
    allowed.iter().any(|(d, v)| d == dst && *v == via)
}

/// Root, and the programs the lab runs.
fn preflight() -> Result<(), LabError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| LabError::NotRoot(format!("cannot read /proc/self/status: {e}")))?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse::<u32>().ok());
    match euid {
        Some(0) => {}
        Some(uid) => return Err(LabError::NotRoot(format!("effective uid {uid}"))),
        None => return Err(LabError::NotRoot("no Uid line in /proc/self/status".into())),
    }
    for tool in ["ip", "iptables", "sysctl", "kill"] {
        if !in_path(tool) {
            return Err(LabError::Missing(tool));
        }
    }
    Ok(())
}

fn in_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program)).is_ok_and(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })
    })
}

/// Run `program args`; its standard output, or what failed.
fn run(program: &str, args: &[&str]) -> Result<String, LabError> {
    let command = || format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| LabError::Command {
            command: command(),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: command(),
            stderr: format!(
                "{} ({})",
                String::from_utf8_lossy(&out.stderr).trim(),
                out.status
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String, LabError> {
    run("ip", args)
}

/// Run `program args` inside namespace `ns`.
fn in_ns(ns: &str, program: &str, args: &[&str]) -> Result<String, LabError> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// `kill -9` every process in namespace `ns`, until none is left (a few
/// rounds at most).
fn kill_all(ns: &str) {
    for _ in 0..3 {
        let Ok(pids) = ip(&["netns", "pids", ns]) else {
            return;
        };
        let pids: Vec<&str> = pids.split_whitespace().collect();
        if pids.is_empty() {
            return;
        }
        let _ = Command::new("kill").arg("-9").args(&pids).output();
    }
}

/// Delete the namespaces of labs whose process is gone: names
/// `pos-TAG-PID-N-ROLE` exactly as [`Lab::new`] makes them, with no
/// process `PID` any more.
fn sweep_stale() {
    let Ok(listed) = ip(&["netns", "list"]) else {
        return;
    };
    let me = std::process::id().to_string();
    for name in listed.lines().filter_map(|l| l.split_whitespace().next()) {
        let parts: Vec<&str> = name.split('-').collect();
        let ours = parts.len() == 5
            && parts[0] == "pos"
            && !parts[1].is_empty()
            && parts[1].bytes().all(|b| b.is_ascii_alphanumeric())
            && !parts[2].is_empty()
            && parts[2].bytes().all(|b| b.is_ascii_digit())
            && !parts[3].is_empty()
            && parts[3].bytes().all(|b| b.is_ascii_digit())
            && is_role(parts[4]);
        if ours && parts[2] != me && !Path::new(&format!("/proc/{}", parts[2])).exists() {
            kill_all(name);
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// `inet`, `peers`, `sIpub`, `sInat` or `sIhJ`.
fn is_role(role: &str) -> bool {
    if role == "inet" || role == "peers" {
        return true;
    }
    let Some(rest) = role.strip_prefix('s') else {
        return false;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return false;
    }
    let tail = &rest[digits..];
    tail == "pub"
        || tail == "nat"
        || tail
            .strip_prefix('h')
            .is_some_and(|j| !j.is_empty() && j.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_judged_by_destination_and_gateway() {
        let host = vec![
            ("192.168.1.0/24".to_string(), None),
            ("default".to_string(), Some(Ipv4Addr::new(192, 168, 1, 1))),
        ];
        assert!(route_allowed(
            "192.168.1.0/24 dev eth0 proto kernel scope link src 192.168.1.2 ",
            &host
        ));
        assert!(route_allowed("default via 192.168.1.1 dev eth0 ", &host));
        assert!(!route_allowed("default via 192.168.2.1 dev eth0 ", &host));
        assert!(!route_allowed(
            "10.9.9.0/24 via 192.168.1.1 dev eth0 ",
            &host
        ));
        assert!(!route_allowed("blackhole 192.168.1.0/24 ", &host));
        assert!(!route_allowed(
            "default proto static \\\tnexthop via 192.168.1.1 dev eth0 weight 1",
            &host
        ));
    }

    #[test]
    fn stale_names_are_recognised_exactly() {
        for role in ["inet", "peers", "s1pub", "s12nat", "s3h2"] {
            assert!(is_role(role), "{role}");
        }
        for role in ["", "s", "sx", "s1", "s1h", "s1hx", "s1natx", "partition"] {
            assert!(!is_role(role), "{role}");
        }
    }
}
