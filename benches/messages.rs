//! Messages between partitions: how many per second, and how long one takes.
//!
//! Three nodes on the in-process rig (real QUIC on loopback, every store
//! fdatasynced before it is acknowledged), two partitions led by different
//! nodes, r = 2. Two object types of the bench's own: `Pinger/{k}/fire n`
//! sends `n` messages to `Sink` objects of the other partition, each
//! carrying the log's clock at the send; `Sink/{k}/got` counts them and
//! keeps a histogram of `now_ms - sent_ms` by 1 ms buckets.
//!
//! - **Throughput**: `KEEL_BENCH_CLIENTS` (16) HTTP clients call `fire` with
//!   `n` = 16 for `KEEL_BENCH_SECS` (4 s); the phase ends when every message
//!   sent has been applied by its sink (read through the log). Messages per
//!   second = messages / (start to that moment).
//! - **Latency**: one client, one message per call, one call at a time. A
//!   message's latency is from the timestamp of the sender's record (the
//!   leader's wall clock when it appended the call that sent it) to that of
//!   the receiver's delivery record (the receiving leader's wall clock when
//!   it appended the delivery): the sender's commit and apply, the delivery
//!   call and the receiver's batching, without the receiver's own commit
//!   (about one append, see `cargo bench --bench append`). Both clocks are
//!   this machine's.
//!
//! Run: `cargo bench --bench messages`.

mod common;

use anyhow::{bail, Context, Result};
use common::*;
use keel::ingress::http::partition_of;
use keel::objects::{ObjectType, Objects};
use keel::rig::Rig;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Sinks per run (messages spread over them).
const SINKS: usize = 16;
/// Messages one throughput call sends.
const FAN: u64 = 16;
/// Upper bound on calls per client and phase (the phase's time bounds it first).
const MAX_CALLS: u64 = 1_000_000;

#[derive(Deserialize)]
struct Fire {
    /// How many messages.
    n: u64,
    /// The sinks' keys to spread them over.
    to: Vec<String>,
}

fn types() -> Objects {
    let pinger = ObjectType::new("Pinger").handler("fire", |ctx, f: Fire| {
        let sent_ms = ctx.now_ms();
        for i in 0..f.n {
            let to = &f.to[(i as usize) % f.to.len().max(1)];
            ctx.send("Sink", to, "got", &sent_ms)?;
        }
        Ok(f.n)
    });
    let sink = ObjectType::new("Sink")
        .handler("got", |ctx, sent_ms: u64| {
            let n = ctx.get::<u64>("n")?.unwrap_or(0) + 1;
            ctx.set("n", &n);
            let bucket = format!("h/{:08}", ctx.now_ms().saturating_sub(sent_ms));
            let c = ctx.get::<u64>(&bucket)?.unwrap_or(0) + 1;
            ctx.set(&bucket, &c);
            Ok(())
        })
        .reader("stats", |ctx, _: IgnoredAny| {
            let n = ctx.get::<u64>("n")?.unwrap_or(0);
            Ok(json!({ "n": n, "h": ctx.scan::<u64>("h/")? }))
        });
    Objects::new([pinger, sink]).expect("valid types")
}

fn main() -> Result<()> {
    let secs = phase_secs(4);
    let clients = bench_clients(1..=256, 16);
    println!(
        "keel message benchmark: 3 nodes (in-process rig), 2 partitions, r = 2, flush before ack"
    );
    println!(
        "machine: {}; load average at start: {}",
        machine(),
        load_average()
    );
    let rig = Rig::builder(3)
        .partitions(2)
        .replication(2)
        .objects(types())
        .start()?;
    let keys = |object: &str, p: u32, n: usize| -> Vec<String> {
        (0..)
            .map(|i| format!("{}{i}", object.to_lowercase()))
            .filter(|k| partition_of(object, k, 2).0 == p)
            .take(n)
            .collect()
    };
    let pingers = keys("Pinger", 0, 64);
    let sinks = keys("Sink", 1, SINKS);
    let urls: Vec<String> = (1..=3).map(|n| rig.http(n)).collect();
    // Reads of the sinks are records too: counted, to be told apart.
    let reads = std::cell::Cell::new(0u64);
    let total = |sinks: &[String]| -> Result<Stats> {
        reads.set(reads.get() + sinks.len() as u64);
        let mut n = 0;
        let mut hist = std::collections::BTreeMap::new();
        for s in sinks {
            let v = post(&urls[0], &format!("Sink/{s}/stats"), &Value::Null)?;
            n += v["n"].as_u64().context("stats.n")?;
            for pair in v["h"].as_array().context("stats.h")? {
                let ms: u64 = pair[0].as_str().unwrap_or("h/0")[2..].parse().unwrap_or(0);
                *hist.entry(ms).or_insert(0) += pair[1].as_u64().unwrap_or(0);
            }
        }
        Ok((n, hist.into_iter().collect()))
    };
    // Warm up until a message gets through (leaders elected, connections up).
    let warm_end = Instant::now() + Duration::from_secs(20);
    loop {
        let fire = json!({"n": 1, "to": [sinks[0]]});
        let _ = post(&urls[0], &format!("Pinger/{}/fire", pingers[0]), &fire);
        if total(&sinks[..1]).map(|(n, _)| n).unwrap_or(0) > 0 {
            break;
        }
        if Instant::now() > warm_end {
            bail!("no message got through in 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut fsyncs = fsync_samples(&rig.config(1).data_dir, 100)?;

    let appended = || -> u64 {
        rig.ids()
            .iter()
            .map(|n| {
                rig.node(n.0)
                    .logs
                    .metrics()
                    .appended_records
                    .load(Ordering::Relaxed)
            })
            .sum()
    };
    // Latency: one message at a time.
    let (before, base_hist) = total(&sinks)?;
    let records_before = appended() as i64 - reads.get() as i64;
    let end = Instant::now() + secs;
    let mut sent = 0u64;
    while Instant::now() < end && sent < MAX_CALLS {
        let sink = &sinks[sent as usize % sinks.len()];
        let fire = json!({"n": 1, "to": [sink]});
        let v = post(&urls[0], &format!("Pinger/{}/fire", pingers[0]), &fire)?;
        if v != json!(1) {
            bail!("fire answered {v}");
        }
        sent += 1;
    }
    let latency = drain(&total, &sinks, before + sent, before + sent)?;
    let latency_records = appended() as i64 - reads.get() as i64 - records_before;
    let hist = subtract(latency.1, &base_hist);

    // Throughput: many clients, FAN messages per call.
    let (before, _) = total(&sinks)?;
    let records_before = appended() as i64 - reads.get() as i64;
    let messages = Arc::new(AtomicU64::new(0));
    let attempted = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + secs;
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (url, pinger) = (urls[c % 3].clone(), pingers[c % pingers.len()].clone());
            let to: Vec<String> = sinks
                .iter()
                .skip(c)
                .step_by(clients.max(1))
                .cloned()
                .collect();
            let to = if to.is_empty() {
                vec![sinks[0].clone()]
            } else {
                to
            };
            let (messages, attempted) = (messages.clone(), attempted.clone());
            std::thread::spawn(move || {
                let mut calls = 0;
                while Instant::now() < end && calls < MAX_CALLS {
                    let fire = json!({"n": FAN, "to": to});
                    attempted.fetch_add(FAN, Ordering::Relaxed);
                    if let Ok(v) = post(&url, &format!("Pinger/{pinger}/fire"), &fire) {
                        if v == json!(FAN) {
                            messages.fetch_add(FAN, Ordering::Relaxed);
                        }
                    }
                    calls += 1;
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let sent_fast = messages.load(Ordering::Relaxed);
    let calls_done = start.elapsed();
    let most = before + attempted.load(Ordering::Relaxed);
    drain(&total, &sinks, before + sent_fast, most)?;
    let drained = start.elapsed();
    // The sender's outbox may still hold acknowledged entries whose
    // acknowledgement record is being appended: count it too.
    std::thread::sleep(Duration::from_millis(300));
    let throughput_records = appended() as i64 - reads.get() as i64 - records_before;
    fsyncs.extend(fsync_samples(&rig.config(1).data_dir, 100)?);
    let fsync = Latency::of(&mut fsyncs);

    let pct = |q: f64| -> u64 {
        let n: u64 = hist.iter().map(|(_, c)| c).sum();
        let target = ((n as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (ms, c) in &hist {
            seen += c;
            if seen >= target {
                return *ms;
            }
        }
        0
    };
    println!();
    println!(
        "fdatasync (write 100 B) p50 {} (p99 {})",
        ms(fsync.p50),
        ms(fsync.p99)
    );
    println!(
        "latency, one message at a time: {sent} messages, p50 {} ms, p99 {} ms, max {} ms (1 ms buckets)",
        pct(0.50),
        pct(0.99),
        hist.last().map_or(0, |(ms, _)| *ms)
    );
    println!(
        "throughput, {clients} clients x {FAN} messages per call: {sent_fast} messages in {:.2} s = {:.0} messages/s (calls done after {:.2} s)",
        drained.as_secs_f64(),
        sent_fast as f64 / drained.as_secs_f64(),
        calls_done.as_secs_f64(),
    );
    // Each call is one record of its own (the sender's request); the rest
    // is what messaging costs: deliveries on the receiver and
    // acknowledgements on the sender.
    println!(
        "records appended: latency phase {latency_records} for {sent} calls of 1 message ({:.2} per message beyond the call's own)",
        (latency_records as f64 - sent as f64) / sent.max(1) as f64
    );
    let calls = sent_fast / FAN;
    println!(
        "records appended: throughput phase {throughput_records} for {calls} calls of {FAN} messages ({:.3} per message beyond the calls' own)",
        (throughput_records as f64 - calls as f64) / sent_fast.max(1) as f64
    );
    println!("load average at end: {}", load_average());
    Ok(())
}

/// The sinks' message count and latency histogram (ms, count).
type Stats = (u64, Vec<(u64, u64)>);

/// Waits (up to 60 s) until the sinks hold the `want` messages whose
/// sends were acknowledged; their stats. More than `most` (every send
/// attempted, acknowledged or not) would be a message applied twice.
fn drain(
    total: &dyn Fn(&[String]) -> Result<Stats>,
    sinks: &[String],
    want: u64,
    most: u64,
) -> Result<Stats> {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let (n, hist) = total(sinks)?;
        if n > most {
            bail!("the sinks hold {n} messages, more than the {most} sent");
        }
        if n >= want {
            return Ok((n, hist));
        }
        if Instant::now() > end {
            bail!("only {n} of {want} messages arrived within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `hist` minus `base`, bucket by bucket.
fn subtract(hist: Vec<(u64, u64)>, base: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let base: std::collections::BTreeMap<u64, u64> = base.iter().copied().collect();
    hist.into_iter()
        .map(|(ms, c)| (ms, c - base.get(&ms).copied().unwrap_or(0)))
        .filter(|(_, c)| *c > 0)
        .collect()
}

/// `POST {url}/{path}` with `body`; the JSON answer of a 200.
fn post(url: &str, path: &str, body: &Value) -> Result<Value> {
    let r = ureq::post(&format!("{url}/{path}"))
        .timeout(Duration::from_secs(10))
        .send_string(&body.to_string())
        .with_context(|| format!("POST {path}"))?;
    Ok(r.into_json()?)
}
