//! The online wallet's control socket, `W/online.sock`: how the other
//! `wallet` commands on the same directory talk to `wallet online` (as
//! `bitcoin-cli` talks to `bitcoind`). One request per connection: a JSON
//! object on one line, answered by one JSON object on one line,
//! `{"ok":true,…}` or `{"ok":false,"error":"…"}`. Only the directory's
//! owner can reach the socket (it lives in the wallet directory, mode 0700).

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// The socket's file name in the wallet directory.
pub const SOCKET: &str = "online.sock";
/// Longest request or answer line.
pub const MAX_LINE: usize = 1 << 20;

#[derive(Debug, Error)]
pub enum ControlError {
    #[error(
        "no online wallet for {dir}: start `wallet --dir {dir} online` first (it keeps the \
         wallet reachable; this command needs it)"
    )]
    NotOnline { dir: String },
    #[error("talking to the online wallet: {0}")]
    Io(#[from] std::io::Error),
    #[error("the online wallet's answer is not JSON: {0}")]
    Garbled(String),
    #[error("{0}")]
    Failed(String),
}

pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join(SOCKET)
}

/// Send `request` to the online wallet of `dir` and wait up to `timeout`
/// for its answer (the `ok` object, without `ok`).
pub fn call(dir: &Path, request: &Value, timeout: Duration) -> Result<Value, ControlError> {
    let path = socket_path(dir);
    let mut s = UnixStream::connect(&path).map_err(|_| ControlError::NotOnline {
        dir: dir.display().to_string(),
    })?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut line = request.to_string();
    line.push('\n');
    s.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(s.take(MAX_LINE as u64)).read_line(&mut answer)?;
    let mut v: Value =
        serde_json::from_str(answer.trim()).map_err(|e| ControlError::Garbled(e.to_string()))?;
    if v["ok"] == Value::Bool(true) {
        if let Some(o) = v.as_object_mut() {
            o.remove("ok");
        }
        Ok(v)
    } else {
        Err(ControlError::Failed(
            v["error"].as_str().unwrap_or("failed").to_string(),
        ))
    }
}

/// Bytes written as lower-case hex in a request (`dag::hex` spells them).
pub fn hex_bytes(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digits = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
            dag::hex::decode_array::<1>(digits)
                .map(|b| b[0])
                .map_err(|e| e.to_string())
        })
        .collect()
}
