//! Messages between objects, as partition state: the outbox of messages a
//! partition's handlers sent, the inbox marks that apply each message once,
//! and durable timers.
//!
//! The protocol (every rule is in `core.rs`, applied from the log, or in
//! `lifecycle.rs`, the leader's delivery loop):
//! - **Send**: a handler's messages join the partition's state with the
//!   call's other writes, in the same atomic batch (a failed call sends
//!   nothing). Each gets the next sequence number of its (this partition,
//!   target partition) pair: `1, 2, 3, ...`, no gaps.
//! - **Deliver**: the leader sends the target partition's leader a batch
//!   that starts at the first unacknowledged message of the pair and is
//!   contiguous; the target appends it to its own log as one `Deliver`
//!   record (the one append on the target's side) and answers once that
//!   record is applied, which is when the messages are durable there.
//! - **Exactly once, in order**: the target keeps, per source partition, the
//!   highest sequence number it applied (its inbox mark). Applying a batch
//!   skips what is at or below the mark and applies `mark + 1`, `mark + 2`,
//!   ... in order, and stops at a gap (a message that would overtake an
//!   earlier one). Batches always start at or below `mark + 1` (everything
//!   before the source's first unacknowledged message was applied), so a
//!   retried, duplicated or late batch never applies a message twice or
//!   out of order. The mark is one entry per source partition: the dedup
//!   state is bounded, whatever the number of messages.
//! - **Acknowledge**: the target's answer names its mark; the source appends
//!   `Acked` (one record for every target and batch answered meanwhile),
//!   which removes the entries up to the mark. Until then a leader change
//!   only causes a redelivery, which the mark drops.
//! - **Timers**: a message sent with a delay waits in the timer index (by
//!   due time on the log's clock). When the leader's clock passes the first
//!   due time it appends `FireTimers{timestamp}`; applying it advances the
//!   log's clock and moves every timer due by then into the outbox, as a
//!   message that raises the receiver's clock to its due time. So a timer
//!   fires at or after its time on the log's clock, once, whoever leads.
//!
//! Keys (in the partition's meta space; the existing meta keys are
//! `epoch`, `leader`, `clock`, `layout` and the expiry index `x...`):
//! `on`+T: the next sequence number towards partition T; `oa`+T: the last
//! acknowledged one; `oq`+T+seq: a message not yet acknowledged; `od`: how
//! many there are in all; `ih`+S: the inbox mark of source S; `tq`+due+id: a
//! timer; `tn`: the next timer id; `tc`: how many timers wait.

use crate::objects::Address;
use crate::types::PartitionId;
use serde::{Deserialize, Serialize};

/// Most messages (sent and not yet acknowledged) a partition keeps; a call
/// that would send more fails (503) until the targets catch up. Bounds the
/// state a target that stays unreachable makes its senders grow.
pub const MAX_OUTBOX: u64 = 100_000;
/// Most messages and timers one call may send.
pub const MAX_SENDS_PER_CALL: usize = 1_000;
/// Most messages in one delivery.
pub const DELIVER_BATCH: usize = 256;
/// Most encoded bytes of messages in one delivery (besides its first
/// message): well under a record's limit (`log::MAX_RECORD_BYTES`, 1 MiB),
/// which the delivery record must fit, since one message may carry an
/// argument of up to `MAX_ARG_BYTES` and addresses of up to 1 KiB keys.
pub const DELIVER_BYTES: usize = 512 * 1024;

/// A message in an outbox, a delivery or the timer index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Its number in its (source, target) pair (0 in the timer index: it
    /// is numbered when it fires).
    pub seq: u64,
    /// Who receives it.
    pub to: Address,
    /// The argument (JSON).
    #[serde(with = "serde_bytes")]
    pub arg: Vec<u8>,
    /// Where the receiver's result goes, if the sender asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<Address>,
    /// The log's clock when it was sent (for the age of the oldest
    /// undelivered message).
    pub sent_ms: u64,
    /// A timer's due time on the log's clock (0: not a timer): applying
    /// the message raises the receiver's clock to it.
    #[serde(default)]
    pub due_ms: u64,
}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("encoding a message")
    }
}

/// The prefix of the next sequence numbers, per target.
pub const NEXT_PREFIX: &[u8] = b"on";
/// The prefix of the last acknowledged sequence numbers, per target.
pub const ACKED_PREFIX: &[u8] = b"oa";

/// The next sequence number towards `to`.
pub fn next_key(to: PartitionId) -> Vec<u8> {
    keyed(NEXT_PREFIX, to)
}

/// The last sequence number `to` acknowledged.
pub fn acked_key(to: PartitionId) -> Vec<u8> {
    keyed(ACKED_PREFIX, to)
}

/// Where message `seq` towards `to` waits.
pub fn queued_key(to: PartitionId, seq: u64) -> Vec<u8> {
    let mut k = keyed(b"oq", to);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// How many messages wait, towards every target together.
pub const DEPTH_KEY: &[u8] = b"od";
/// The next timer id.
pub const TIMER_ID_KEY: &[u8] = b"tn";
/// How many timers wait.
pub const TIMER_COUNT_KEY: &[u8] = b"tc";
/// The timer index's prefix.
pub const TIMER_PREFIX: &[u8] = b"tq";

/// The inbox mark of source `from`: the highest sequence number applied.
pub fn inbox_key(from: PartitionId) -> Vec<u8> {
    keyed(b"ih", from)
}

/// Where a timer waits: by due time, then id (the order timers fire in).
pub fn timer_key(due_ms: u64, id: u64) -> Vec<u8> {
    let mut k = TIMER_PREFIX.to_vec();
    k.extend_from_slice(&due_ms.to_be_bytes());
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The due time of a timer key.
pub fn timer_due(key: &[u8]) -> Option<u64> {
    let b = key.get(TIMER_PREFIX.len()..TIMER_PREFIX.len() + 8)?;
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// The partition a `prefix`+partition key names (`None`: another key).
pub fn keyed_partition(prefix: &[u8], key: &[u8]) -> Option<PartitionId> {
    let rest = key.strip_prefix(prefix)?;
    Some(PartitionId(u32::from_be_bytes(rest.try_into().ok()?)))
}

/// The keys `prefix`+partition span: `[prefix, end)` for a range read.
pub fn keyed_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut end = prefix.to_vec();
    end.extend_from_slice(&[0xff; 5]);
    (prefix.to_vec(), end)
}

fn keyed(prefix: &[u8], p: PartitionId) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&p.0.to_be_bytes());
    k
}

/// The id a delivery's waiters wait under on the target (never a client's:
/// those start with `u:` or `g:`).
pub fn delivery_id(from: PartitionId, first: u64, last: u64) -> String {
    format!("m:{}:{first}-{last}", from.0)
}

/// One target's lane, as the source's state holds it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lane {
    /// The last sequence number the target acknowledged.
    pub acked: u64,
    /// The last sequence number sent (`acked..=sent` wait).
    pub sent: u64,
    /// When the oldest waiting message was sent (log clock), if any waits.
    pub oldest_ms: Option<u64>,
}

impl Lane {
    /// Messages waiting towards this target.
    pub fn depth(&self) -> u64 {
        self.sent.saturating_sub(self.acked)
    }
}

/// What a partition's outbox and timers hold, for the delivery loop and
/// status (re-read from the state after every batch that changed them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboxView {
    /// Per target partition with anything ever sent.
    pub lanes: std::collections::BTreeMap<PartitionId, Lane>,
    /// How many timers wait.
    pub timers: u64,
    /// When the first of them is due (log clock).
    pub next_timer_ms: Option<u64>,
}

impl OutboxView {
    /// Messages waiting, towards every target.
    pub fn depth(&self) -> u64 {
        self.lanes.values().map(Lane::depth).sum()
    }

    /// When the oldest waiting message was sent.
    pub fn oldest_ms(&self) -> Option<u64> {
        self.lanes.values().filter_map(|l| l.oldest_ms).min()
    }
}
