//! Targets on bytes: the frame codec, `Wire` payloads, and the values peers
//! write into the metadata register (chains, leadership).

use crate::samples;
use crate::support::*;
use keel::actors::leader_elector::Leadership;
use keel::log::{Chain, Segment};
use keel::node::Wire;
use keel::transport::frame::{encode, Envelope, FrameDecoder, PROTOCOL_VERSION};
use keel::transport::RemoteError;
use keel::types::{LogletId, Lsn, NodeId};
use serde::Deserialize;
use std::time::Duration;

/// The transport's default frame limit: what a node accepts.
const MAX_FRAME: usize = 16 * 1024 * 1024;

/// What decoding may allocate at most for one allocation, beyond twice the
/// input: serde pre-allocates at most 1 MiB for a sequence whose length
/// prefix it cannot trust yet (its "cautious" size hint).
const ALLOC_SLACK: usize = 2 * 1024 * 1024;
/// What decoding one input may allocate in all, beyond 64 times the input.
const ALLOC_TOTAL_SLACK: usize = 64 * 1024 * 1024;

fn check_allocations(what: &str, input_len: usize, seen: Allocations) {
    assert!(
        seen.largest <= 2 * input_len + ALLOC_SLACK,
        "{what}: one allocation of {} bytes for an input of {input_len} bytes",
        seen.largest
    );
    assert!(
        seen.total <= 64 * input_len + ALLOC_TOTAL_SLACK,
        "{what}: {} bytes allocated in all for an input of {input_len} bytes",
        seen.total
    );
}

fn envelope(g: &mut Gen) -> Envelope<Wire> {
    let k = g.below(samples::KINDS);
    match g.below(4) {
        0 => Envelope::Hello {
            node: NodeId(g.range(0, 5) as u32),
            app: g.edgy_string(32),
        },
        1 => Envelope::Request {
            id: g.edgy_u64(),
            deadline_ms: g.edgy_u64(),
            body: samples::wire(g, k),
        },
        2 => Envelope::Response {
            id: g.edgy_u64(),
            result: match g.below(3) {
                0 => Err(RemoteError::Dropped),
                1 => Err(RemoteError::Encode("too large".into())),
                _ => Ok(samples::wire(g, k)),
            },
        },
        _ => Envelope::OneWay {
            body: samples::wire(g, k),
        },
    }
}

/// A stream of bytes for one decoder: garbage, or valid frames with damage.
fn frame_input(g: &mut Gen) -> Vec<u8> {
    if g.one_in(5) {
        let len = g.usize(0, 300);
        let mut junk = g.bytes(len);
        if len >= 5 && g.bool() {
            // A plausible header, so the payload decoder sees the junk.
            junk[..4].copy_from_slice(&((len - 4) as u32).to_be_bytes());
            junk[4] = PROTOCOL_VERSION;
        }
        return junk;
    }
    let mut bytes = Vec::new();
    for _ in 0..g.range(1, 3) {
        let env = envelope(g);
        bytes.extend(encode(&env, MAX_FRAME).expect("encoding a sample frame"));
    }
    match g.below(10) {
        // Unchanged: must decode.
        0 => {}
        // The length prefix of the first frame.
        1 | 2 => {
            let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            let any = g.u64() as u32;
            let v = *g.pick(&[
                0,
                1,
                4,
                len.wrapping_sub(1),
                len.wrapping_add(1),
                MAX_FRAME as u32,
                MAX_FRAME as u32 + 1,
                u32::MAX,
                any,
            ]);
            bytes[..4].copy_from_slice(&v.to_be_bytes());
        }
        // The version byte.
        3 => {
            let any = g.u64() as u8;
            bytes[4] = *g.pick(&[0, 2, 0x7f, 0xff, any]);
        }
        // Cut short anywhere.
        4 => {
            let n = g.below(bytes.len() as u64) as usize;
            bytes.truncate(n);
        }
        _ => bytes = mutate(g, &bytes),
    }
    bytes
}

/// Feeds `bytes` to a decoder in the given chunks and lists what came out:
/// each frame (as `Debug`), then the end state.
fn decode_stream(bytes: &[u8], cuts: &[usize]) -> Vec<String> {
    let mut out = Vec::new();
    let mut dec = FrameDecoder::new(MAX_FRAME);
    let mut at = 0;
    // Bounded: every frame takes at least 5 bytes.
    let max_frames = bytes.len() / 5 + 1;
    for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let cut = cut.clamp(at, bytes.len());
        dec.extend(&bytes[at..cut]);
        at = cut;
        loop {
            match dec.next_frame::<Wire>() {
                Ok(Some(env)) => {
                    out.push(format!("{env:?}"));
                    assert!(out.len() <= max_frames, "more frames than bytes allow");
                }
                Ok(None) => break,
                Err(e) => {
                    out.push(format!("error: {e}"));
                    return out;
                }
            }
        }
    }
    out.push(match dec.finish() {
        Ok(()) => "end".into(),
        Err(e) => format!("end: {e}"),
    });
    out
}

fn check_frames(g: &mut Gen, bytes: &[u8]) {
    let (whole, seen) = measure_allocations(|| decode_stream(bytes, &[]));
    check_allocations("frame decoding", bytes.len(), seen);
    // However the bytes arrive, the decoder sees the same frames.
    let mut cuts: Vec<usize> = (0..g.usize(1, 6))
        .map(|_| g.usize(0, bytes.len()))
        .collect();
    cuts.sort_unstable();
    let chunked = decode_stream(bytes, &cuts);
    assert_eq!(
        whole, chunked,
        "chunked delivery (cuts {cuts:?}) decoded differently"
    );
    // Whatever decodes, encodes again to the same thing.
    let mut dec = FrameDecoder::new(MAX_FRAME);
    dec.extend(bytes);
    for _ in 0..bytes.len() / 5 + 1 {
        let Ok(Some(env)) = dec.next_frame::<Wire>() else {
            break;
        };
        let again = encode(&env, MAX_FRAME).expect("re-encoding a decoded frame");
        let mut dec2 = FrameDecoder::new(MAX_FRAME);
        dec2.extend(&again);
        let back = dec2
            .next_frame::<Wire>()
            .expect("decoding a re-encoded frame");
        assert_eq!(format!("{:?}", back), format!("{:?}", Some(env)));
    }
}

#[test]
fn frame_codec_survives_hostile_bytes() {
    const TARGET: &str = "frame_codec";
    let seed = seed();
    let budget = Budget::new(TARGET, Duration::from_secs(120));
    let corpus = corpus(TARGET);
    for (path, bytes) in &corpus {
        let _guard = CaseGuard::new(TARGET, corpus_label(path), bytes.clone());
        check_frames(&mut Gen::new(0), bytes);
    }
    let cases = case_range(100_000);
    let n = cases.end - cases.start;
    for case in cases {
        let mut g = Gen::for_case(seed, TARGET, case);
        let bytes = frame_input(&mut g);
        let _guard = CaseGuard::new(TARGET, case_label(seed, case), bytes.clone());
        check_frames(&mut g, &bytes);
        if case % 1024 == 0 {
            budget.check(case);
        }
    }
    budget.report(n, corpus.len());
}

// ---------------------------------------------------------------------------

/// Decodes one payload the way the transport does (a reader, not a slice).
fn decode_wire(bytes: &[u8]) -> Result<Wire, String> {
    let mut cursor = std::io::Cursor::new(bytes);
    let mut de = rmp_serde::Deserializer::new(&mut cursor);
    Wire::deserialize(&mut de).map_err(|e| e.to_string())
}

/// What a decoded message promises by its type, and the checks that run
/// on it where it lands.
fn check_decoded(w: &Wire) {
    match w {
        Wire::Append(a) => check_segment(&a.segment),
        Wire::Invoke(i) => check_invoke(i),
        Wire::Relay(i) => check_invoke(i),
        Wire::MetaUpdate(u) => {
            let _ = keel::actors::metadata::schema::check(&u.key, &u.value.value);
        }
        _ => {}
    }
}

fn check_invoke(i: &keel::actors::partition_processor::Invoke) {
    // However malformed, checking it is an answer, never a panic.
    let _ = i.check(i.partition, 4, &DEMO);
    let _ = i.check(keel::types::PartitionId(0), 1, &DEMO);
}

fn check_segment(s: &Segment) {
    // A segment on its own, as a sequencer receives it: a well-formed
    // loglet id, a nodeset to store to and a quorum it can reach.
    assert!(
        s.loglet == LogletId::new(s.loglet.log(), s.index),
        "segment {s:?}: loglet id does not match its index"
    );
    assert!(
        s.replication >= 1 && s.replication as usize <= s.nodeset.len(),
        "segment {s:?}: replication outside its nodeset"
    );
    let mut ns = s.nodeset.clone();
    ns.sort_unstable();
    ns.dedup();
    assert_eq!(ns.len(), s.nodeset.len(), "segment {s:?}: duplicate nodes");
    assert!(s.base_lsn >= Lsn::OLDEST, "segment {s:?}: base LSN 0");
    assert!(s.nodeset.iter().all(|n| n.0 > 0), "segment {s:?}: node 0");
    if let Some(t) = s.sealed_tail {
        assert!(
            s.base_lsn.0.checked_add(t).is_some(),
            "segment {s:?}: end overflows"
        );
    }
    s.validate().expect("a decoded segment is valid");
    assert!(s.f_majority() >= 1 && s.f_majority() <= s.nodeset.len());
}

fn check_wire(bytes: &[u8]) {
    let (decoded, seen) = measure_allocations(|| decode_wire(bytes));
    check_allocations("Wire decoding", bytes.len(), seen);
    let from_slice = rmp_serde::from_slice::<Wire>(bytes).map_err(|e| e.to_string());
    assert_eq!(
        format!("{:?}", decoded.as_ref().ok()),
        format!("{:?}", from_slice.as_ref().ok()),
        "reader and slice decoding disagree"
    );
    if let Ok(w) = decoded {
        check_decoded(&w);
        let again = rmp_serde::to_vec_named(&w).expect("re-encoding a decoded message");
        let back = decode_wire(&again).expect("decoding a re-encoded message");
        assert_eq!(format!("{back:?}"), format!("{w:?}"));
    }
}

#[test]
fn wire_payloads_survive_mutation() {
    const TARGET: &str = "wire_payloads";
    let seed = seed();
    let budget = Budget::new(TARGET, Duration::from_secs(120));
    let corpus = corpus(TARGET);
    for (path, bytes) in &corpus {
        let _guard = CaseGuard::new(TARGET, corpus_label(path), bytes.clone());
        check_wire(bytes);
    }
    let mut kinds = std::collections::BTreeSet::new();
    let cases = case_range(100_000);
    let n = cases.end - cases.start;
    for case in cases {
        let mut g = Gen::for_case(seed, TARGET, case);
        let w = samples::wire(&mut g, case % samples::KINDS);
        kinds.insert(samples::kind(&w));
        let valid = rmp_serde::to_vec_named(&w).expect("encoding a sample");
        let bytes = if g.one_in(20) {
            valid.clone()
        } else {
            mutate(&mut g, &valid)
        };
        let _guard = CaseGuard::new(TARGET, case_label(seed, case), bytes.clone());
        if bytes == valid {
            let back = decode_wire(&bytes).expect("a valid message must decode");
            assert_eq!(format!("{back:?}"), format!("{w:?}"));
        }
        check_wire(&bytes);
        if case % 1024 == 0 {
            budget.check(case);
        }
    }
    if n >= samples::KINDS {
        assert_eq!(kinds.len() as u64, samples::KINDS, "every kind was mutated");
    }
    budget.report(n, corpus.len());
}

// ---------------------------------------------------------------------------

/// A register value a peer may have written: a chain, a leadership, a bare
/// segment.
fn register_input(g: &mut Gen) -> Vec<u8> {
    let valid = match g.below(3) {
        0 => rmp_serde::to_vec_named(&samples::chain(g)),
        1 => rmp_serde::to_vec_named(&samples::leadership(g)),
        _ => rmp_serde::to_vec_named(&samples::segment(g)),
    }
    .expect("encoding a sample value");
    if g.one_in(20) {
        valid
    } else {
        mutate(g, &valid)
    }
}

/// Uses a decoded chain the way the log client and the sealer do.
fn exercise_chain(g: &mut Gen, c: &Chain) {
    c.validate().expect("a decoded chain is valid");
    let tail = c.tail();
    assert!(tail.sealed_tail.is_none(), "the tail is open");
    for _ in 0..4 {
        let lsn = Lsn(g.edgy_u64());
        let s = c.segment_for(lsn);
        let _ = s.f_majority();
        let _ = s.end_lsn();
        let _ = s.lsn_of(g.edgy_u64());
        let _ = s.offset_of(lsn.max(s.base_lsn));
        let _ = c.segment(LogletId(g.edgy_u64()));
    }
    let _ = c.sealed_and_extended(
        tail.loglet,
        g.edgy_u64(),
        tail.sequencer,
        tail.nodeset.clone(),
        tail.replication,
    );
}

fn check_register_value(g: &mut Gen, bytes: &[u8]) {
    let (chain, seen) = measure_allocations(|| rmp_serde::from_slice::<Chain>(bytes));
    check_allocations("chain decoding", bytes.len(), seen);
    if let Ok(c) = chain {
        exercise_chain(g, &c);
    }
    if let Ok(s) = rmp_serde::from_slice::<Segment>(bytes) {
        check_segment(&s);
    }
    if let Ok(l) = rmp_serde::from_slice::<Leadership>(bytes) {
        assert!(l.node.0 > 0, "leadership of node 0: {l:?}");
    }
}

#[test]
fn register_values_decode_valid_or_not_at_all() {
    const TARGET: &str = "register_values";
    let seed = seed();
    let budget = Budget::new(TARGET, Duration::from_secs(120));
    let corpus = corpus(TARGET);
    for (path, bytes) in &corpus {
        let _guard = CaseGuard::new(TARGET, corpus_label(path), bytes.clone());
        check_register_value(&mut Gen::new(0), bytes);
    }
    let cases = case_range(100_000);
    let n = cases.end - cases.start;
    for case in cases {
        let mut g = Gen::for_case(seed, TARGET, case);
        let bytes = register_input(&mut g);
        let _guard = CaseGuard::new(TARGET, case_label(seed, case), bytes.clone());
        check_register_value(&mut g, &bytes);
        if case % 1024 == 0 {
            budget.check(case);
        }
    }
    budget.report(n, corpus.len());
}
