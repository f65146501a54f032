//! `udp_probe`: a tiny UDP tool that the NAT lab test runs inside network
//! namespaces (std only).
//!
//! ```text
//! udp_probe echo-server --bind IP:PORT
//!     answer each datagram with the sender's address as text `IP:PORT`
//!     (until killed)
//! udp_probe ask --bind IP:PORT --to IP:PORT [--to IP:PORT …] [--timeout-ms N]
//!     from one socket, ask each echo server what address it sees; prints
//!     {"seen":["ip:port" or null, …]} in the order of the --to's
//! udp_probe listen --bind IP:PORT --ms N
//!     prints {"got":["ip:port", …]}: the sources of the datagrams received
//!     within N ms
//! udp_probe send --bind IP:PORT --to IP:PORT [--count K]
//!     sends K datagrams (1 by default)
//! ```
//!
//! `echo-server` and `listen` write `listening on IP:PORT` to standard
//! error once bound, so that a test knows when to send. Errors go to
//! standard error, with exit code 1.

use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: udp_probe echo-server --bind IP:PORT
       udp_probe ask --bind IP:PORT --to IP:PORT [--to IP:PORT ...] [--timeout-ms N]
       udp_probe listen --bind IP:PORT --ms N
       udp_probe send --bind IP:PORT --to IP:PORT [--count K]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udp_probe: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The options after the subcommand, as `(flag, value)` pairs.
struct Opts(Vec<(String, String)>);

impl Opts {
    fn parse(args: &[String], allowed: &[&str]) -> Result<Opts, String> {
        let mut pairs = Vec::new();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if !allowed.contains(&flag.as_str()) {
                return Err(format!("unknown option {flag:?}\n{USAGE}"));
            }
            let value = it.next().ok_or(format!("{flag} needs a value"))?;
            pairs.push((flag.clone(), value.clone()));
        }
        Ok(Opts(pairs))
    }

    fn all(&self, flag: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(f, _)| f == flag)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn one(&self, flag: &str) -> Result<Option<&str>, String> {
        match self.all(flag)[..] {
            [] => Ok(None),
            [one] => Ok(Some(one)),
            _ => Err(format!("{flag} given twice")),
        }
    }

    fn addr(&self, flag: &str) -> Result<SocketAddr, String> {
        let v = self
            .one(flag)?
            .ok_or(format!("{flag} IP:PORT is required"))?;
        v.parse().map_err(|_| format!("{flag} {v:?}: not IP:PORT"))
    }

    fn number(&self, flag: &str, default: Option<u64>) -> Result<u64, String> {
        match self.one(flag)? {
            Some(v) => v.parse().map_err(|_| format!("{flag} {v:?}: not a number")),
            None => default.ok_or(format!("{flag} N is required")),
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let Some((cmd, rest)) = args.split_first() else {
        return Err(USAGE.into());
    };
    match cmd.as_str() {
        "echo-server" => {
            let o = Opts::parse(rest, &["--bind"])?;
            echo_server(o.addr("--bind")?)
        }
        "ask" => {
            let o = Opts::parse(rest, &["--bind", "--to", "--timeout-ms"])?;
            let to = o
                .all("--to")
                .into_iter()
                .map(|v| v.parse().map_err(|_| format!("--to {v:?}: not IP:PORT")))
                .collect::<Result<Vec<SocketAddr>, String>>()?;
            if to.is_empty() {
                return Err("ask needs at least one --to IP:PORT".into());
            }
            let timeout = o.number("--timeout-ms", Some(1000))?;
            ask(o.addr("--bind")?, &to, Duration::from_millis(timeout))
        }
        "listen" => {
            let o = Opts::parse(rest, &["--bind", "--ms"])?;
            listen(
                o.addr("--bind")?,
                Duration::from_millis(o.number("--ms", None)?),
            )
        }
        "send" => {
            let o = Opts::parse(rest, &["--bind", "--to", "--count"])?;
            send(
                o.addr("--bind")?,
                o.addr("--to")?,
                o.number("--count", Some(1))?,
            )
        }
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown subcommand {other:?}\n{USAGE}")),
    }
}

fn bind(addr: SocketAddr) -> Result<UdpSocket, String> {
    UdpSocket::bind(addr).map_err(|e| format!("bind {addr}: {e}"))
}

fn json_list(key: &str, items: &[Option<SocketAddr>]) -> String {
    let items: Vec<String> = items
        .iter()
        .map(|a| a.map_or("null".into(), |a| format!("\"{a}\"")))
        .collect();
    format!("{{\"{key}\":[{}]}}", items.join(","))
}

fn echo_server(addr: SocketAddr) -> Result<(), String> {
    let socket = bind(addr)?;
    eprintln!(
        "listening on {}",
        socket.local_addr().map_err(|e| e.to_string())?
    );
    let mut buf = [0u8; 2048];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((_, from)) => {
                // A send error (an ICMP error came back) ends nothing.
                let _ = socket.send_to(from.to_string().as_bytes(), from);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("receive: {e}")),
        }
    }
}

/// Send to every target not answered yet, a few rounds within `timeout`.
fn ask(addr: SocketAddr, to: &[SocketAddr], timeout: Duration) -> Result<(), String> {
    const ROUNDS: u32 = 4;
    let socket = bind(addr)?;
    let mut seen: Vec<Option<SocketAddr>> = vec![None; to.len()];
    let mut buf = [0u8; 2048];
    for _ in 0..ROUNDS {
        for (i, target) in to.iter().enumerate() {
            if seen[i].is_none() {
                socket
                    .send_to(b"ask", target)
                    .map_err(|e| format!("send to {target}: {e}"))?;
            }
        }
        let until = Instant::now() + timeout / ROUNDS;
        while seen.iter().any(Option::is_none) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            socket
                .set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            let (n, from) = match socket.recv_from(&mut buf) {
                Ok(got) => got,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                // An ICMP error from an earlier send: keep waiting.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(format!("receive: {e}")),
            };
            let answer = std::str::from_utf8(&buf[..n])
                .ok()
                .and_then(|t| t.parse::<SocketAddr>().ok());
            if let (Some(i), Some(answer)) = (to.iter().position(|t| *t == from), answer) {
                seen[i].get_or_insert(answer);
            }
        }
        if seen.iter().all(Option::is_some) {
            break;
        }
    }
    println!("{}", json_list("seen", &seen));
    Ok(())
}

fn listen(addr: SocketAddr, window: Duration) -> Result<(), String> {
    let socket = bind(addr)?;
    eprintln!(
        "listening on {}",
        socket.local_addr().map_err(|e| e.to_string())?
    );
    let until = Instant::now() + window;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match socket.recv_from(&mut buf) {
            Ok((_, from)) => got.push(Some(from)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                        | std::io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => return Err(format!("receive: {e}")),
        }
    }
    println!("{}", json_list("got", &got));
    Ok(())
}

fn send(addr: SocketAddr, to: SocketAddr, count: u64) -> Result<(), String> {
    let socket = bind(addr)?;
    for i in 0..count {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        socket
            .send_to(b"probe", to)
            .map_err(|e| format!("send to {to}: {e}"))?;
    }
    Ok(())
}
