//! The node binary refuses bad configurations with one clear error line and a
//! non-zero exit, never a panic.

use std::path::Path;
use std::process::Command;

fn keel(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("running keel");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (out.status.code().unwrap_or(-1), stderr)
}

fn init(dir: &Path, base: u16) {
    let (code, err) = keel(&[
        "init",
        "--dir",
        dir.to_str().unwrap(),
        "--base-port",
        &base.to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
}

fn assert_clear_error(code: i32, stderr: &str, needle: &str) {
    assert_ne!(code, 0, "must fail");
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    let lines: Vec<_> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one error line, got: {stderr}");
    assert!(lines[0].starts_with("keel: error:"), "{stderr}");
    assert!(lines[0].contains(needle), "expected {needle:?} in {stderr}");
}

#[test]
fn bad_configurations_fail_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d, 23100);
    let cfg = d.join("n1/n1.toml");
    let cfg = cfg.to_str().unwrap();

    // A node id the cluster does not list.
    let (code, err) = keel(&["node", "--config", cfg, "--node", "7"]);
    assert_clear_error(code, &err, "N7 but the cluster lists only N1, N2, N3");

    // A missing certificate.
    std::fs::remove_file(d.join("n2/n2.pem")).unwrap();
    let (code, err) = keel(&["node", "--config", d.join("n2/n2.toml").to_str().unwrap()]);
    assert_clear_error(code, &err, "n2.pem");

    // An unreadable (not a directory) data dir.
    let file = d.join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let (code, err) = keel(&[
        "node",
        "--config",
        cfg,
        "--data-dir",
        file.to_str().unwrap(),
    ]);
    assert_clear_error(code, &err, "cannot open data directory");

    // A port in use.
    let _busy = std::net::TcpListener::bind("127.0.0.1:23201").unwrap();
    let (code, err) = keel(&["node", "--config", cfg]);
    assert_clear_error(code, &err, "127.0.0.1:23201");

    // A config that is not TOML / has unknown fields.
    let bad = d.join("bad.toml");
    std::fs::write(&bad, "node = 1\nbogus = true\n").unwrap();
    let (code, err) = keel(&["node", "--config", bad.to_str().unwrap()]);
    assert_clear_error(code, &err, "unknown field");

    // No config at all.
    let (code, err) = keel(&["node", "--config", d.join("missing.toml").to_str().unwrap()]);
    assert_clear_error(code, &err, "cannot read config");
}
