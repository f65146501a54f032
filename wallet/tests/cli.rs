//! The `wallet` binary end to end: create, restore from the printed
//! phrase, open the keystore, and the errors a user meets first.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// `wallet --dir DIR ARGS` with `password` in POS_WALLET_PASSWORD (or no
/// password source at all) and `stdin` as standard input.
fn wallet(dir: &Path, args: &[&str], password: Option<&str>, stdin: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wallet"));
    cmd.arg("--dir")
        .arg(dir)
        .args(args)
        // Never the developer's own wallet or settings.
        .env("HOME", dir)
        .env_remove("POS_WALLET_PASSWORD")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(pw) = password {
        cmd.env("POS_WALLET_PASSWORD", pw);
    }
    let mut child = cmd.spawn().expect("run the wallet binary");
    let mut input = child.stdin.take().unwrap();
    // The binary may exit before reading (an early error); ignore EPIPE.
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    child.wait_with_output().unwrap()
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

fn stderr_of(out: &Output) -> String {
    assert!(!out.status.success(), "should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn create_restore_and_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("first");
    let second = tmp.path().join("second");

    let created = json_of(&wallet(
        &first,
        &["create", "--json"],
        Some("correct horse"),
        "",
    ));
    let login = created["login_key"].as_str().unwrap().to_string();
    let phrase = created["phrase"].as_str().unwrap().to_string();
    assert_eq!(login.len(), 64);
    assert_eq!(phrase.split(' ').count(), 24);
    assert_eq!(created["dir"].as_str().unwrap(), first.to_str().unwrap());

    // Restore from the phrase, over two lines, with another (empty) password.
    let words: Vec<&str> = phrase.split(' ').collect();
    let input = format!("{}\n{}\n", words[..12].join(" "), words[12..].join("  "));
    let restored = json_of(&wallet(&second, &["restore", "--json"], Some(""), &input));
    assert_eq!(restored["login_key"].as_str().unwrap(), login);
    assert!(
        restored.get("phrase").is_none(),
        "restore does not echo the phrase"
    );

    // Both keystores open, each with its own password, to the same keys.
    let a = json_of(&wallet(
        &first,
        &["keys", "--json"],
        Some("correct horse"),
        "",
    ));
    let b = json_of(&wallet(
        &second,
        &["keys", "--json", "--receive", "3"],
        Some(""),
        "",
    ));
    assert_eq!(a["login_key"].as_str().unwrap(), login);
    assert_eq!(b["login_key"].as_str().unwrap(), login);
    assert_eq!(a["receive_keys"].as_array().unwrap().len(), 5);
    let (ra, rb) = (
        a["receive_keys"].as_array().unwrap(),
        b["receive_keys"].as_array().unwrap(),
    );
    assert_eq!(rb[..], ra[..3]);

    // The password file takes precedence over the environment.
    let pw_file = tmp.path().join("pw");
    std::fs::write(&pw_file, "correct horse\n").unwrap();
    let pw_arg = pw_file.to_str().unwrap();
    let c = json_of(&wallet(
        &first,
        &["keys", "--json", "--password-file", pw_arg],
        Some("wrong"),
        "",
    ));
    assert_eq!(c["login_key"].as_str().unwrap(), login);
}

#[test]
fn wrong_password_fails_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    json_of(&wallet(
        tmp.path(),
        &["create", "--json"],
        Some("right"),
        "",
    ));
    let out = wallet(tmp.path(), &["keys"], Some("wrong"), "");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("wrong password"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn create_refuses_an_existing_wallet() {
    let tmp = tempfile::tempdir().unwrap();
    let first = json_of(&wallet(tmp.path(), &["create", "--json"], Some(""), ""));
    let err = stderr_of(&wallet(tmp.path(), &["create"], Some(""), ""));
    assert!(err.contains("already exists"), "{err}");
    let phrase = first["phrase"].as_str().unwrap();
    let err = stderr_of(&wallet(tmp.path(), &["restore"], Some(""), phrase));
    assert!(err.contains("already exists"), "{err}");
    // The original keystore is untouched.
    let keys = json_of(&wallet(tmp.path(), &["keys", "--json"], Some(""), ""));
    assert_eq!(keys["login_key"], first["login_key"]);
}

#[test]
fn helpful_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let none = tmp.path().join("none");

    let err = stderr_of(&wallet(&none, &["keys"], Some(""), ""));
    assert!(
        err.contains("wallet create") && err.contains("wallet restore"),
        "{err}"
    );

    // No password source and no terminal to prompt on.
    let err = stderr_of(&wallet(&none, &["create"], None, ""));
    assert!(err.contains("POS_WALLET_PASSWORD"), "{err}");
    assert!(!none.exists(), "nothing written without a password");

    let err = stderr_of(&wallet(&none, &["restore"], Some(""), "legal winner"));
    assert!(err.contains("2"), "{err}");
    let bad = "legal winner thank year wave sausage worth useful legal winner thank \
               yeer wave sausage worth useful legal winner thank year wave sausage worth title";
    let err = stderr_of(&wallet(&none, &["restore"], Some(""), bad));
    assert!(err.contains("word 12"), "{err}");
    assert!(!none.exists(), "nothing written for a bad phrase");

    let out = wallet(&none, &["--help"], None, "");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["create", "restore", "keys", "--dir", "--password-file"] {
        assert!(help.contains(cmd), "--help lacks {cmd}");
    }
}
