//! The node's operational HTTP endpoints, beside the ingress:
//!
//! | route | what |
//! |---|---|
//! | `GET /health` | `{"status":"ok","node":"N1"}` while the supervision tree runs |
//! | `GET /cluster/status` | [`ClusterStatus`]: every node's status as this node can fetch it |
//! | `GET /cluster/logs` | every log's chain of segments |
//! | `GET /metrics` | Prometheus text |
//! | `POST /partitions/{p}/snapshot` | take a snapshot of partition `p` on this node now: `{"partition":0,"lsn":120,"path":"…"}` |
//! | `GET /chaos` | current fault rules (chaos mode only) |
//! | `POST /chaos/partition` | `{"block":[2,3]}`: drop packets to and from those nodes; `"direction":"outbound"` or `"inbound"` cuts one way only |
//! | `POST /chaos/delay` | `{"nodes":[2],"ms":100}`: delay packets to and from those nodes |
//! | `POST /chaos/loss` | `{"nodes":[2,3],"percent":30}`: drop that share of packets to and from those nodes, at random |
//! | `POST /chaos/slow-disk` | `{"ms":500}`: every sync of this node takes that much longer (0: normal) |
//! | `POST /chaos/slow-node` | `{"stall_ms":200,"every_ms":1000}`: block this node's runtime thread that long, that often |
//! | `POST /chaos/heal` | remove every fault rule, the slow disk and the slow node |
//! | `POST /chaos/stall` | `{"actor":"root/log/sealer","wait_ms":2000}`: wedge an actor |
//!
//! The chaos routes answer 404 unless the node was started with `--chaos`.

use super::metrics::Metrics;
use super::net::Net;
use super::stall::{RuntimeStaller, StallPattern};
use super::status::{ClusterStatus, NodeReport, StatusSource};
use super::wire::Wire;
use crate::actors::metadata::MetadataClient;
use crate::actors::partition_processor::TakeSnapshot;
use crate::actors::supervisor::{Chaos, RootHandle};
use crate::config::Config;
use crate::ingress::http::error_response;
use crate::log::{chain_key, Chain, LogClient};
use crate::storage::Storage;
use crate::transport::{FaultFilter, FaultRule};
use crate::types::{LogId, NodeId};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Largest request body any route accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub struct Admin {
    pub config: Arc<Config>,
    pub net: Net,
    pub meta: MetadataClient,
    pub root: RootHandle,
    pub fault: FaultFilter,
    pub status: StatusSource,
    pub metrics: Arc<Metrics>,
    pub logs: LogClient,
    pub seals: Arc<AtomicU64>,
    pub storage: Storage,
    /// Stalls this node's runtime (`/chaos/slow-node`).
    pub staller: RuntimeStaller,
}

pub fn payload_config() -> web::PayloadConfig {
    web::PayloadConfig::new(MAX_BODY_BYTES)
}

pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(MAX_BODY_BYTES)
        .error_handler(|err, _| {
            let status = match &err {
                actix_web::error::JsonPayloadError::OverflowKnownLength { .. }
                | actix_web::error::JsonPayloadError::Overflow { .. } => 413,
                _ => 400,
            };
            actix_web::error::InternalError::from_response(
                err.to_string(),
                error_response(status, err.to_string()),
            )
            .into()
        })
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/cluster/status", web::get().to(cluster_status))
        .route("/cluster/logs", web::get().to(cluster_logs))
        .route("/metrics", web::get().to(metrics))
        .route("/partitions/{p}/snapshot", web::post().to(take_snapshot))
        .route("/chaos", web::get().to(chaos_rules))
        .route("/chaos/partition", web::post().to(chaos_partition))
        .route("/chaos/delay", web::post().to(chaos_delay))
        .route("/chaos/loss", web::post().to(chaos_loss))
        .route("/chaos/slow-disk", web::post().to(chaos_slow_disk))
        .route("/chaos/slow-node", web::post().to(chaos_slow_node))
        .route("/chaos/heal", web::post().to(chaos_heal))
        .route("/chaos/stall", web::post().to(chaos_stall));
}

pub async fn not_found(req: HttpRequest) -> HttpResponse {
    error_response(404, format!("no route for {} {}", req.method(), req.path()))
}

async fn health(admin: web::Data<Admin>) -> HttpResponse {
    if admin.root.is_stopped() {
        return error_response(503, "supervision tree stopped");
    }
    HttpResponse::Ok().json(json!({ "status": "ok", "node": admin.config.me() }))
}

async fn cluster_status(admin: web::Data<Admin>) -> HttpResponse {
    let me = admin.config.me();
    let mut nodes = Vec::new();
    let fetches = admin.config.nodes.iter().map(|n| {
        let admin = admin.clone();
        let id = NodeId(n.id);
        let http = n.http;
        async move {
            if id == me {
                return NodeReport {
                    node: id,
                    http,
                    status: Some((admin.status)().await),
                    error: None,
                };
            }
            match admin
                .net
                .request_wire(id, Wire::GetNodeStatus, Duration::from_millis(1000))
                .await
            {
                Ok(Wire::NodeStatus(s)) => NodeReport {
                    node: id,
                    http,
                    status: Some(*s),
                    error: None,
                },
                Ok(other) => NodeReport {
                    node: id,
                    http,
                    status: None,
                    error: Some(format!("unexpected reply {other:?}")),
                },
                Err(e) => NodeReport {
                    node: id,
                    http,
                    status: None,
                    error: Some(e.to_string()),
                },
            }
        }
    });
    nodes.extend(futures::future::join_all(fetches).await);
    HttpResponse::Ok().json(ClusterStatus {
        reported_by: me,
        nodes,
        logs: chains(&admin).await,
    })
}

/// Every log's chain: read through the register when it answers, else the
/// cached view.
async fn chains(admin: &Admin) -> Vec<Chain> {
    let mut out = Vec::new();
    for log in 0..admin.config.partitions {
        let key = chain_key(LogId(log));
        let fresh = admin
            .meta
            .read_typed::<Chain>(&key, Duration::from_millis(500))
            .await
            .ok()
            .flatten();
        if let Some((_, chain)) = fresh.or_else(|| admin.meta.cached_typed::<Chain>(&key)) {
            out.push(chain);
        }
    }
    out
}

async fn cluster_logs(admin: web::Data<Admin>) -> HttpResponse {
    HttpResponse::Ok().json(chains(&admin).await)
}

/// How long an operator's snapshot may take before the answer is a 504.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);

async fn take_snapshot(admin: web::Data<Admin>, path: web::Path<String>) -> HttpResponse {
    let Ok(p) = path.parse::<u32>() else {
        return error_response(400, format!("{path:?} is not a partition number"));
    };
    let Some(slot) = admin.net.local().processors.get(p as usize) else {
        return error_response(
            404,
            format!(
                "no partition {p} (this cluster has {})",
                admin.config.partitions
            ),
        );
    };
    let Some(addr) = slot.addr() else {
        return error_response(503, format!("partition {p}'s processor is restarting"));
    };
    match tokio::time::timeout(SNAPSHOT_TIMEOUT, addr.send(TakeSnapshot)).await {
        Ok(Ok(Ok(taken))) => HttpResponse::Ok().json(taken),
        Ok(Ok(Err(why))) => error_response(503, why),
        Ok(Err(_)) => error_response(503, format!("partition {p}'s processor stopped")),
        Err(_) => error_response(504, "the snapshot took too long"),
    }
}

async fn metrics(admin: web::Data<Admin>) -> HttpResponse {
    let lm = admin.logs.metrics();
    let node = (admin.status)().await;
    let per_partition = |f: fn(&super::status::PartitionView) -> u64| {
        node.partitions
            .iter()
            .map(|p| (format!("partition=\"{}\"", p.partition.0), f(p) as f64))
            .collect::<Vec<_>>()
    };
    let per_peer = |f: fn(&crate::transport::health::PeerHealth) -> f64| {
        node.peers
            .iter()
            .filter_map(|p| Some((format!("peer=\"{}\"", p.node.0), f(p.health.as_ref()?))))
            .collect::<Vec<_>>()
    };
    let status = admin.root.status();
    let restarts: u64 = status.children.iter().map(|c| c.restarts_total).sum();
    let peers = admin.net.nodes().len() as f64;
    let connected = admin.net.reachable() as f64 - 1.0;
    let counter = |v: u64| vec![(String::new(), v as f64)];
    let storage = admin.storage.stats();
    let text = admin.metrics.render(&[
        (
            "keel_appends_total",
            "Append calls made by this node.",
            "counter",
            counter(lm.appends.load(Ordering::Relaxed)),
        ),
        (
            "keel_appended_records_total",
            "Records this node appended and saw committed.",
            "counter",
            counter(lm.appended_records.load(Ordering::Relaxed)),
        ),
        (
            "keel_append_errors_total",
            "Appends that failed or whose outcome is unknown.",
            "counter",
            counter(lm.append_errors.load(Ordering::Relaxed)),
        ),
        (
            "keel_tail_probes_ahead_total",
            "Commits this node's readers learned from a peer log-server, not the sequencer.",
            "counter",
            counter(lm.tail_probes_ahead.load(Ordering::Relaxed)),
        ),
        (
            "keel_committed_records_total",
            "Records committed by this node's sequencers.",
            "counter",
            counter(admin.net.local().sequencers.committed_records()),
        ),
        (
            "keel_seals_total",
            "Loglets this node's sealer sealed and extended.",
            "counter",
            counter(admin.seals.load(Ordering::Relaxed)),
        ),
        (
            "keel_seals_driven_total",
            "Seal-and-extend requests made by this node's appenders and readers.",
            "counter",
            counter(lm.seals_driven.load(Ordering::Relaxed)),
        ),
        (
            "keel_elections_won_total",
            "Leadership elections this node won.",
            "counter",
            counter(admin.metrics.elections()),
        ),
        (
            "keel_actor_restarts_total",
            "Actor restarts by this node's supervisors.",
            "counter",
            counter(restarts),
        ),
        (
            "keel_pending_waits",
            "Waits registered with the watchdog.",
            "gauge",
            vec![(String::new(), status.waits.len() as f64)],
        ),
        (
            "keel_storage_flushes_total",
            "Group-commit syncs (fdatasync rounds), both lanes.",
            "counter",
            counter(admin.storage.flush_count()),
        ),
        (
            "keel_storage_sync_seconds_total",
            "Time spent in group-commit syncs, by lane.",
            "counter",
            vec![
                ("lane=\"records\"".to_string(), storage.records_sync.sync_micros_total as f64 / 1e6),
                ("lane=\"state\"".to_string(), storage.state_sync.sync_micros_total as f64 / 1e6),
            ],
        ),
        (
            "keel_storage_sync_max_seconds",
            "Longest group-commit sync since start, by lane.",
            "gauge",
            vec![
                ("lane=\"records\"".to_string(), storage.records_sync.max_sync_micros as f64 / 1e6),
                ("lane=\"state\"".to_string(), storage.state_sync.max_sync_micros as f64 / 1e6),
            ],
        ),
        (
            "keel_storage_failed",
            "1 if storage can no longer make writes durable (a sync failed).",
            "gauge",
            vec![(String::new(), admin.storage.failure().is_some() as u8 as f64)],
        ),
        (
            "keel_records_damaged_total",
            "Log records found damaged on this node's disk (treated as missing, repaired from peers).",
            "counter",
            counter(storage.records.damaged_records),
        ),
        (
            "keel_records_damaged_unrepaired",
            "Damaged log records not yet stored again from a peer's copy.",
            "gauge",
            vec![(String::new(), storage.records.unrepaired as f64)],
        ),
        (
            "keel_snapshots_taken_total",
            "Partition snapshots written by this node's processors since they started.",
            "counter",
            per_partition(|p| p.snapshots_taken),
        ),
        (
            "keel_snapshots_restored_total",
            "Partition snapshots restored from a peer since the processors started.",
            "counter",
            per_partition(|p| p.snapshots_restored),
        ),
        (
            "keel_outbox_messages",
            "Messages sent from the partition not yet acknowledged by their targets (as this node's replica holds them).",
            "gauge",
            per_partition(|p| p.outbox.depth),
        ),
        (
            "keel_outbox_oldest_seconds",
            "Age of the partition's oldest undelivered message (0: none).",
            "gauge",
            node.partitions
                .iter()
                .map(|p| {
                    let age = p.outbox.oldest_ms.unwrap_or(0) as f64 / 1e3;
                    (format!("partition=\"{}\"", p.partition.0), age)
                })
                .collect(),
        ),
        (
            "keel_timers_pending",
            "Durable timers waiting to fire in the partition.",
            "gauge",
            per_partition(|p| p.outbox.timers),
        ),
        (
            "keel_messages_delivered_total",
            "Messages this node delivered as the partition's leader and saw acknowledged.",
            "counter",
            per_partition(|p| p.outbox.delivered),
        ),
        (
            "keel_peers_connected",
            "Peers this node's failure detector sees.",
            "gauge",
            vec![(String::new(), connected.max(0.0))],
        ),
        (
            "keel_peers",
            "Peers configured.",
            "gauge",
            vec![(String::new(), peers - 1.0)],
        ),
        (
            "keel_peer_degraded",
            "1 while the peer is scored degraded (loss, timeouts, RTT, lagging commits).",
            "gauge",
            per_peer(|h| f64::from(u8::from(!h.healthy))),
        ),
        (
            "keel_peer_loss_ratio",
            "The share of packets to the peer lost over the last judged sample.",
            "gauge",
            per_peer(|h| h.loss),
        ),
        (
            "keel_peer_commit_stuck_ratio",
            "The share of time records stored here for the peer's sequencer waited long for their commit, over the last judged sample.",
            "gauge",
            per_peer(|h| h.commit_stuck),
        ),
    ]);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text)
}

fn chaos_guard(admin: &Admin) -> Option<HttpResponse> {
    (!admin.config.chaos).then(|| {
        error_response(
            404,
            "chaos endpoints are disabled (start the node with --chaos)",
        )
    })
}

/// QUIC addresses of `nodes`, or why a node cannot be named.
fn addrs_of(admin: &Admin, nodes: &[u32]) -> Result<Vec<std::net::SocketAddr>, String> {
    nodes
        .iter()
        .map(|id| {
            if *id == admin.config.node {
                return Err(format!("N{id} is this node"));
            }
            admin
                .config
                .address(NodeId(*id))
                .map(|a| a.quic)
                .ok_or_else(|| format!("unknown node N{id}"))
        })
        .collect()
}

async fn chaos_rules(admin: web::Data<Admin>) -> HttpResponse {
    if let Some(r) = chaos_guard(&admin) {
        return r;
    }
    HttpResponse::Ok().json(chaos_state(&admin))
}

/// Every fault in force on this node.
fn chaos_state(admin: &Admin) -> serde_json::Value {
    json!({
        "rules": admin.fault.rules(),
        "counters": admin.fault.counters(),
        "slow_disk_ms": admin.storage.slow_sync().as_millis() as u64,
        "slow_node": admin.staller.current(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartitionBody {
    block: Vec<u32>,
    /// Which way packets are dropped (default both).
    #[serde(default)]
    direction: Direction,
}

/// The direction of a cut, as seen from this node.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Direction {
    /// To and from the nodes.
    #[default]
    Both,
    /// Only packets this node sends to them.
    Outbound,
    /// Only packets this node receives from them.
    Inbound,
}

/// Applies `change` to the fault rule of every listed node and answers with
/// the rules now in force, or 400 (changing nothing) if a node is unknown.
fn modify_peers(admin: &Admin, nodes: &[u32], change: impl Fn(&mut FaultRule)) -> HttpResponse {
    match addrs_of(admin, nodes) {
        Ok(addrs) => {
            for addr in addrs {
                admin.fault.modify(addr, &change);
            }
            HttpResponse::Ok().json(json!({ "rules": admin.fault.rules() }))
        }
        Err(reason) => error_response(400, reason),
    }
}

async fn chaos_partition(admin: web::Data<Admin>, body: web::Json<PartitionBody>) -> HttpResponse {
    if let Some(r) = chaos_guard(&admin) {
        return r;
    }
    tracing::warn!(node = %admin.config.me(), blocked = ?body.block, direction = ?body.direction, "chaos: partition");
    modify_peers(&admin, &body.block, |r| match body.direction {
        Direction::Both => (r.drop_outbound, r.drop_inbound) = (true, true),
        Direction::Outbound => r.drop_outbound = true,
        Direction::Inbound => r.drop_inbound = true,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DelayBody {
    nodes: Vec<u32>,
    ms: u64,
}

async fn chaos_delay(admin: web::Data<Admin>, body: web::Json<DelayBody>) -> HttpResponse {
    if let Some(r) = chaos_guard(&admin) {
        return r;
    }
    if body.ms > 10_000 {
        return error_response(400, "delay must be at most 10000 ms");
    }
    let delay = Duration::from_millis(body.ms);
    tracing::warn!(node = %admin.config.me(), nodes = ?body.nodes, ms = body.ms, "chaos: delay");
    modify_peers(&admin, &body.nodes, |r| {
        r.delay_outbound = Some(delay);
        r.delay_inbound = Some(delay);
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LossBody {
    nodes: Vec<u32>,
    percent: u8,
}

async fn chaos_loss(admin: web::Data<Admin>, body: web::Json<LossBody>) -> HttpResponse {
    if let Some(r) = chaos_guard(&admin) {
        return r;
    }
    if body.percent > 100 {
        return error_response(400, "percent must be at most 100");
    }
    tracing::warn!(node = %admin.config.me(), nodes = ?body.nodes, percent = body.percent, "chaos: packet loss");
    modify_peers(&admin, &body.nodes, |r| {
        r.loss_outbound_pct = body.percent;
        r.loss_inbound_pct = body.percent;
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlowDiskBody {
    ms: u64,
}

async fn chaos_slow_disk(admin: web::Data<Admin>, body: web::Json<SlowDiskBody>) -> HttpResponse {
    if let Some(r) = chaos_guard(&admin) {
        return r;
    }
    if body.ms > 10_000 {
        return error_response(400, "a sync delay must be at most 10000 ms");
    }
    admin.storage.set_slow_sync(Duration::from_millis(body.ms));
    tracing::warn!(node = %admin.config.me(), ms = body.ms, "chaos: slow disk");
    HttpResponse::Ok().json(chaos_state(&admin))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlowNodeBody {
    stall_ms: u64,
    every_ms: u64,
}

async fn chaos_slow_node(admin: web::Data<Admin>, body: web::Json<SlowNodeBody>) -> HttpResponse {
    if let Some(r) = chaos_guard(&admin) {
        return r;
    }
    let pattern = match StallPattern::new(
        Duration::from_millis(body.stall_ms),
        Duration::from_millis(body.every_ms),
    ) {
        Ok(p) => p,
        Err(reason) => return error_response(400, reason),
    };
    admin.staller.start(pattern);
    tracing::warn!(node = %admin.config.me(), stall_ms = body.stall_ms, every_ms = body.every_ms, "chaos: slow node");
    HttpResponse::Ok().json(chaos_state(&admin))
}

async fn chaos_heal(admin: web::Data<Admin>) -> HttpResponse {
    if let Some(r) = chaos_guard(&admin) {
        return r;
    }
    admin.fault.heal();
    admin.storage.set_slow_sync(Duration::ZERO);
    admin.staller.stop();
    tracing::warn!(node = %admin.config.me(), "chaos: heal");
    HttpResponse::Ok().json(chaos_state(&admin))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StallBody {
    actor: String,
    wait_ms: Option<u64>,
}

async fn chaos_stall(admin: web::Data<Admin>, body: web::Json<StallBody>) -> HttpResponse {
    if let Some(r) = chaos_guard(&admin) {
        return r;
    }
    let chaos = Chaos::Stall {
        wait: body.wait_ms.map(Duration::from_millis),
    };
    match admin.root.chaos(&body.actor, chaos) {
        Ok(()) => {
            tracing::warn!(node = %admin.config.me(), actor = %body.actor, "chaos: stall");
            HttpResponse::Ok().json(json!({ "stalled": body.actor }))
        }
        Err(e) => error_response(404, e.to_string()),
    }
}
