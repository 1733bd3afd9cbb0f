//! The node binary refuses bad configurations with one clear error line and a
//! non-zero exit, never a panic. Among them, every data directory that is
//! not the node's own: blank (never initialized, or a lost disk), another
//! node's, another cluster's, or an older keel's without an identity; and
//! it leaves such a directory exactly as it found it. `keel init` lays out
//! one relocatable directory per node holding only that node's key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a refusing `keel` may take before the test calls it hung.
const EXIT_WITHIN: Duration = Duration::from_secs(30);
/// How long a node may take to answer `/health` after it was spawned.
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);

/// Runs `keel` to completion (killed and failed past [`EXIT_WITHIN`]) in
/// `cwd`; returns its exit code, stdout and stderr.
fn keel_in(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let out = tempfile::tempdir().unwrap();
    let (stdout, stderr) = (out.path().join("stdout"), out.path().join("stderr"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("running keel");
    let deadline = Instant::now() + EXIT_WITHIN;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("keel {args:?} still running after {EXIT_WITHIN:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap()).to_string();
    (status.code().unwrap_or(-1), read(&stdout), read(&stderr))
}

fn keel(args: &[&str]) -> (i32, String) {
    let (code, _, stderr) = keel_in(Path::new("."), args);
    (code, stderr)
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

/// Every file and directory under `dir` with the contents of the files:
/// what "left as it was" compares. `None` if `dir` does not exist.
fn snapshot(dir: &Path) -> Option<BTreeMap<PathBuf, Option<Vec<u8>>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if p.is_dir() {
                out.insert(rel, None);
                walk(root, &p, out);
            } else {
                out.insert(rel, Some(std::fs::read(&p).unwrap()));
            }
        }
    }
    if !dir.exists() {
        return None;
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    Some(out)
}

/// A base port whose 3-node range is free now; `slot` keeps the tests of
/// this file (which run in parallel) apart. All ports stay below 32768,
/// where the ephemeral range begins (an outgoing connection could take a
/// port up there between the check and the bind).
fn free_base(slot: u16) -> u16 {
    let pid = (std::process::id() % 20) as u16;
    keel::config::free_base_port(
        3,
        (0..20u16).map(|n| 12_000 + slot * 4_000 + pid * 200 + n * 10),
    )
    .expect("a free port range")
}

/// A `keel node` process; killed if still running when dropped.
struct NodeProc {
    /// The process, to wait for and signal.
    child: Child,
    /// Its stdout and stderr, shown when it misbehaves.
    log: PathBuf,
}

impl NodeProc {
    fn start(config: &Path, cwd: &Path, log: PathBuf) -> NodeProc {
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(["node", "--config", config.to_str().unwrap()])
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("starting keel node");
        NodeProc { child, log }
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).to_string()
    }

    /// Waits until `GET /health` answers 200.
    fn wait_healthy(&mut self, http_port: u16) {
        let url = format!("http://127.0.0.1:{http_port}/health");
        let deadline = Instant::now() + HEALTHY_WITHIN;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("keel node exited ({status}):\n{}", self.log());
            }
            let ok = ureq::get(&url)
                .timeout(Duration::from_secs(2))
                .call()
                .is_ok_and(|r| r.status() == 200);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{url} did not answer within {HEALTHY_WITHIN:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(&mut self) {
        // SAFETY: a plain syscall on a pid this test spawned and has not reaped.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + EXIT_WITHIN;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit {status}:\n{}", self.log());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "still running {EXIT_WITHIN:?} after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
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

#[test]
fn a_node_whose_data_was_wiped_after_it_ran_refuses_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("cluster");
    let base = free_base(0);
    init(&d, base);
    let cfg = d.join("n1/n1.toml");
    let data = d.join("n1/data");

    // N1 runs (alone is enough: it opens its storage and serves /health).
    let mut node = NodeProc::start(&cfg, tmp.path(), tmp.path().join("n1.log"));
    node.wait_healthy(base + 101);
    node.stop();
    assert!(
        std::fs::read_dir(&data).unwrap().count() > 1,
        "N1 wrote nothing next to its IDENTITY"
    );

    // The disk is replaced: an empty directory.
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::create_dir(&data).unwrap();
    let (code, err) = keel(&["node", "--config", cfg.to_str().unwrap()]);
    assert_clear_error(code, &err, "is empty");
    assert!(
        err.contains("never initialized by `keel init`, or its disk was lost"),
        "{err}"
    );
    assert!(err.contains("keel node --rejoin"), "{err}");
    assert_eq!(snapshot(&data), Some(BTreeMap::new()), "N1 wrote into it");

    // The directory itself is gone.
    std::fs::remove_dir(&data).unwrap();
    let (code, err) = keel(&["node", "--config", cfg.to_str().unwrap()]);
    assert_clear_error(code, &err, "does not exist");
    assert!(err.contains("disk was lost"), "{err}");
    assert!(!data.exists(), "N1 created its data directory");
}

#[test]
fn a_node_refuses_another_nodes_and_another_clusters_data() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    init(&a, 23300);
    init(&b, 23300);
    let cfg = a.join("n1/n1.toml");
    let cfg = cfg.to_str().unwrap();

    let n2_data = a.join("n2/data");
    let before = snapshot(&n2_data);
    let (code, err) = keel(&[
        "node",
        "--config",
        cfg,
        "--data-dir",
        n2_data.to_str().unwrap(),
    ]);
    assert_clear_error(code, &err, "belongs to N2, not to N1");
    assert_eq!(snapshot(&n2_data), before);

    let other = b.join("n1/data");
    let before = snapshot(&other);
    let (code, err) = keel(&[
        "node",
        "--config",
        cfg,
        "--data-dir",
        other.to_str().unwrap(),
    ]);
    assert_clear_error(code, &err, "belongs to cluster");
    assert!(err.contains("another cluster's data"), "{err}");
    assert_eq!(snapshot(&other), before);

    // The same N1 of cluster b, with a's certificates: still another cluster.
    let (code, err) = keel(&[
        "node",
        "--config",
        cfg,
        "--tls-dir",
        b.join("n1").to_str().unwrap(),
    ]);
    assert_clear_error(code, &err, "belongs to cluster");
}

#[test]
fn a_data_directory_of_an_older_keel_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("cluster");
    init(&d, 23400);
    // What an older keel left: sled data, no IDENTITY.
    let old = tmp.path().join("old-n1");
    {
        let storage = keel::storage::Storage::open(&old).unwrap();
        storage
            .meta
            .acceptor_put("leader/0", &(3u64, "promised"))
            .unwrap();
        storage.sync_blocking().unwrap();
    }
    let before = snapshot(&old);
    let (code, err) = keel(&[
        "node",
        "--config",
        d.join("n1/n1.toml").to_str().unwrap(),
        "--data-dir",
        old.to_str().unwrap(),
    ]);
    assert_clear_error(code, &err, "holds data but no IDENTITY file");
    assert!(err.contains("older keel"), "{err}");
    assert_eq!(snapshot(&old), before);
}

#[test]
fn init_gives_each_node_directory_only_its_own_key() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (code, out, err) = keel_in(d, &["init", "--dir", "cluster", "--nodes", "3"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ca/ (it holds the CA key) offline"), "{out}");
    let d = d.join("cluster");
    let all = snapshot(&d).unwrap();
    let content = |p: &str| all[Path::new(p)].clone().unwrap();

    let keys: Vec<&PathBuf> = all
        .keys()
        .filter(|p| p.extension() == Some("key".as_ref()))
        .collect();
    assert_eq!(
        keys,
        ["ca/ca.key", "n1/n1.key", "n2/n2.key", "n3/n3.key"]
            .iter()
            .map(Path::new)
            .collect::<Vec<_>>()
    );
    let secrets = [
        ("ca/ca.key", content("ca/ca.key")),
        ("n1/n1.key", content("n1/n1.key")),
        ("n2/n2.key", content("n2/n2.key")),
        ("n3/n3.key", content("n3/n3.key")),
    ];
    for i in 1..=3 {
        let node = format!("n{i}");
        for f in [
            "ca.pem",
            &format!("n{i}.pem"),
            &format!("n{i}.key"),
            &format!("n{i}.toml"),
            "data/IDENTITY",
        ] {
            assert!(
                all.contains_key(&Path::new(&node).join(f)),
                "{node}/{f} missing"
            );
        }
        // No copy of another's secret, whatever the file is called.
        for (path, bytes) in all.iter().filter(|(p, _)| p.starts_with(&node)) {
            let Some(bytes) = bytes else { continue };
            for (owner, secret) in &secrets {
                if *owner != format!("{node}/{node}.key") {
                    assert_ne!(bytes, secret, "{} holds {owner}", path.display());
                }
            }
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(d.join(&node).join(format!("{node}.key")))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{node}.key readable by others");
        }
    }
}

#[test]
fn a_node_directory_still_works_after_being_moved() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("cluster");
    let base = free_base(1);
    init(&d, base);
    // "Copied to its host": somewhere else, under another name, and run
    // from an unrelated working directory.
    let host = tmp.path().join("host1");
    std::fs::create_dir(&host).unwrap();
    let moved = host.join("keel");
    std::fs::rename(d.join("n1"), &moved).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();

    let mut node = NodeProc::start(
        &moved.join("n1.toml"),
        elsewhere.path(),
        tmp.path().join("n1.log"),
    );
    node.wait_healthy(base + 101);
    node.stop();
    assert!(
        std::fs::read_dir(moved.join("data")).unwrap().count() > 1,
        "N1 did not store its data in the moved directory"
    );
    assert!(!d.join("n1").exists());
    assert_eq!(snapshot(elsewhere.path()), Some(BTreeMap::new()));
}
