//! Malformed and hostile HTTP over raw TCP: every request gets a clear 4xx
//! (with the usual JSON error where the server reads far enough to answer
//! one), promptly, and changes nothing. A body declared larger than the
//! limit is refused before a byte of it is read.

mod common;

use common::*;
use keel::rig::Rig;
use serde_json::json;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// What came back on one connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
    /// The server closed the connection after answering.
    closed: bool,
    /// From the end of our request bytes to the complete answer.
    after: Duration,
}

impl Answer {
    fn json_error(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("not a JSON error: {self:?}"))
    }
}

fn addr(rig: &Rig) -> SocketAddr {
    rig.http(1)
        .trim_start_matches("http://")
        .parse()
        .expect("http address")
}

/// Sends `parts` (pausing `gap` between them), then reads one answer, all
/// within `deadline`. Panics if no complete answer arrives in time.
fn exchange(to: SocketAddr, parts: &[&[u8]], gap: Duration, deadline: Duration) -> Answer {
    let end = Instant::now() + deadline;
    let mut s = TcpStream::connect_timeout(&to, deadline).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut sent_at = Instant::now();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 && !gap.is_zero() {
            std::thread::sleep(gap);
        }
        // The server may answer and close before everything is sent.
        if s.write_all(part).is_err() {
            break;
        }
        sent_at = Instant::now();
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let closed;
    let mut answered_at = None;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no complete answer within {deadline:?}; got {:?}",
            String::from_utf8_lossy(&buf)
        );
        s.set_read_timeout(Some(left.min(Duration::from_millis(200))))
            .expect("timeout");
        match s.read(&mut chunk) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                closed = true;
                break;
            }
            Err(e) => panic!("reading the answer: {e}"),
        }
        if complete(&buf) {
            answered_at = Some(Instant::now());
            // Did the server close after it? It lingers up to its client
            // disconnect timeout (1 s) so the client can read the answer;
            // a read that times out after 2 s means "still open".
            s.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            closed = match s.read(&mut chunk) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            };
            break;
        }
    }
    let after = answered_at.unwrap_or_else(Instant::now) - sent_at;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
        closed,
        after,
    }
}

/// Whether `buf` holds a whole response (head, and a body as long as its
/// Content-Length says).
fn complete(buf: &[u8]) -> bool {
    let text = String::from_utf8_lossy(buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    body.len() >= len
}

fn request(method: &str, path: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: keel\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    let mut bytes = r.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn counter(rig: &Rig) -> serde_json::Value {
    post(&rig.http(1), "Counter/k/get", json!(null)).body
}

#[test]
fn a_body_declared_too_large_is_refused_at_once() {
    let rig = Rig::builder(1).start().unwrap();
    let to = addr(&rig);
    for len in ["99999999999", "65537", "18446744073709551615"] {
        let req = request(
            "POST",
            "/Counter/k/add",
            &[&format!("Content-Length: {len}")],
            b"",
        );
        // No body follows: the answer must not wait for one.
        let a = exchange(to, &[&req], Duration::ZERO, Duration::from_secs(3));
        assert_eq!(a.status, 413, "Content-Length {len}: {a:?}");
        assert!(a.json_error().contains("exceeds"), "{a:?}");
        assert!(a.after < Duration::from_secs(1), "took {:?}", a.after);
        assert!(
            a.head.to_ascii_lowercase().contains("connection: close"),
            "{a:?}"
        );
        assert!(a.closed, "the connection is closed after a 413: {a:?}");
    }
}

#[test]
fn malformed_http_gets_a_clear_4xx_and_changes_nothing() {
    let rig = Rig::builder(1).start().unwrap();
    wait_for_leaders(&rig, Duration::from_secs(10));
    let to = addr(&rig);
    assert_eq!(post(&rig.http(1), "Counter/k/add", json!(5)).body, json!(5));
    let t = Duration::from_secs(3);

    // A method the ingress does not serve.
    for method in ["PUT", "DELETE", "PATCH", "BREW"] {
        let a = exchange(
            to,
            &[&request(
                method,
                "/Counter/k/add",
                &["Content-Length: 1"],
                b"1",
            )],
            Duration::ZERO,
            t,
        );
        assert_eq!(a.status, 405, "{method}: {a:?}");
        assert!(a.json_error().contains("method"), "{method}: {a:?}");
        assert!(
            a.head.to_ascii_lowercase().contains("allow: get, post"),
            "{a:?}"
        );
    }
    // A path whose key does not decode to UTF-8.
    for path in [
        "/Counter/%ff/add",
        "/Counter/%C3%28/add",
        "/Counter/k%80/get",
    ] {
        let a = exchange(
            to,
            &[&request("POST", path, &["Content-Length: 1"], b"1")],
            Duration::ZERO,
            t,
        );
        assert_eq!(a.status, 400, "{path}: {a:?}");
        assert!(a.json_error().contains("UTF-8"), "{path}: {a:?}");
    }
    // Raw non-UTF-8 bytes in the request line, and a broken request line.
    let mut raw =
        b"POST /Counter/\xff\xfe/add HTTP/1.1\r\nHost: keel\r\nContent-Length: 1\r\n\r\n1".to_vec();
    let a = exchange(to, &[&raw], Duration::ZERO, t);
    assert!((400..500).contains(&a.status), "{a:?}");
    raw = b"POST /Counter/k/add HTTP/9\r\n\r\n".to_vec();
    let a = exchange(to, &[&raw], Duration::ZERO, t);
    assert!((400..500).contains(&a.status), "{a:?}");
    // Headers over the ingress's limit, and over the HTTP parser's.
    for size in [20 * 1024, 200 * 1024] {
        let huge = format!("X-Filler: {}", "a".repeat(size));
        let a = exchange(
            to,
            &[&request(
                "POST",
                "/Counter/k/add",
                &[&huge, "Content-Length: 1"],
                b"1",
            )],
            Duration::ZERO,
            t,
        );
        assert_eq!(a.status, 431, "a header of {size} bytes: {a:?}");
    }
    let many: Vec<String> = (0..200).map(|i| format!("X-H{i}: v")).collect();
    let many: Vec<&str> = many
        .iter()
        .map(String::as_str)
        .chain(["Content-Length: 1"])
        .collect();
    let a = exchange(
        to,
        &[&request("POST", "/Counter/k/add", &many, b"1")],
        Duration::ZERO,
        t,
    );
    assert!((400..500).contains(&a.status), "200 headers: {a:?}");
    // A chunked body that grows past the limit: refused, the rest unread.
    let mut chunks: Vec<Vec<u8>> = vec![request(
        "POST",
        "/Counter/k/add",
        &["Transfer-Encoding: chunked"],
        b"",
    )];
    for _ in 0..20 {
        chunks.push(format!("{:x}\r\n{}\r\n", 8192, "1".repeat(8192)).into_bytes());
    }
    chunks.push(b"0\r\n\r\n".to_vec());
    let parts: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
    let a = exchange(to, &parts, Duration::ZERO, t);
    assert_eq!(a.status, 413, "chunked: {a:?}");
    assert!(a.json_error().contains("exceeds"), "{a:?}");
    // A bad idempotency key, a bad deadline.
    for h in [
        "idempotency-key: \u{1}",
        "keel-timeout-ms: 18446744073709551615",
        "keel-timeout-ms: -1",
    ] {
        let a = exchange(
            to,
            &[&request(
                "POST",
                "/Counter/k/add",
                &[h, "Content-Length: 1"],
                b"1",
            )],
            Duration::ZERO,
            t,
        );
        assert_eq!(a.status, 400, "{h}: {a:?}");
    }
    assert_eq!(counter(&rig), json!(5), "nothing above changed the counter");
}

#[test]
fn a_trickled_body_is_cut_off_at_the_request_deadline() {
    let rig = Rig::builder(1).start().unwrap();
    wait_for_leaders(&rig, Duration::from_secs(10));
    let to = addr(&rig);
    assert_eq!(post(&rig.http(1), "Counter/k/add", json!(2)).body, json!(2));
    // "11" declared as 10 bytes, one byte every 250 ms: the body would take
    // 2.5 s; the request's deadline is 1 s.
    let head = request(
        "POST",
        "/Counter/k/add",
        &["Content-Length: 10", "keel-timeout-ms: 1000"],
        b"",
    );
    let mut parts: Vec<&[u8]> = vec![&head];
    parts.extend(std::iter::repeat_n(b" ".as_slice(), 9));
    parts.push(b"1");
    let started = Instant::now();
    let a = exchange(
        to,
        &parts[..4],
        Duration::from_millis(250),
        Duration::from_secs(4),
    );
    assert_eq!(a.status, 408, "{a:?}");
    assert!(a.json_error().contains("body"), "{a:?}");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "cut off after {:?}",
        started.elapsed()
    );
    assert!(a.closed, "{a:?}");
    assert_eq!(
        counter(&rig),
        json!(2),
        "the trickled request did not apply"
    );
}

#[test]
fn a_trickled_head_is_cut_off_by_the_server() {
    let rig = Rig::builder(1).start().unwrap();
    let to = addr(&rig);
    // A request head sent one byte every 400 ms would take 10 s; the
    // server gives a head 5 s.
    let head = request("POST", "/Counter/k/add", &["Content-Length: 1"], b"1");
    let parts: Vec<&[u8]> = head.chunks(1).take(14).collect();
    let started = Instant::now();
    let a = exchange(
        to,
        &parts,
        Duration::from_millis(400),
        Duration::from_secs(9),
    );
    assert_eq!(a.status, 408, "{a:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "cut off after {:?}",
        started.elapsed()
    );
}
