//! `POST /{Object}/{key}/{handler}` (and `GET` for read-only handlers): any
//! node accepts any request and forwards it to the partition's leader.
//!
//! Status codes: 200 done; 400 malformed JSON, wrong argument type, a bad
//! header or a path that does not decode to UTF-8; 404 unknown object or
//! handler; 405 `GET` on a handler that writes, or a method other than
//! `GET`/`POST`; 408 the body did not arrive within the request's deadline;
//! 412 a `Register/cas` mismatch; 413 body over the limit (a declared
//! `Content-Length` over it is refused before anything is read); 431
//! headers over [`MAX_HEADER_BYTES`]; 503 no leader reachable (the request
//! certainly did not apply); 504 deadline passed with the outcome unknown
//! (it may still apply once; a retry with the same `idempotency-key` is
//! safe).
//!
//! Every refusal is decided before the request is forwarded, so none of them
//! changes anything; those that leave part of the request unread (413, 408)
//! also close the connection.

use crate::actors::leader_elector::{cached_leader, leader_of};
use crate::actors::metadata::MetadataClient;
use crate::actors::partition_processor::{Invoke, InvokeReply};
use crate::node::{CallError, Net, Wire};
use crate::objects::Objects;
use crate::types::{NodeId, PartitionId};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use rand::Rng;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest accepted `idempotency-key`.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;
/// Longest accepted object key.
pub const MAX_OBJECT_KEY: usize = 1024;
/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = crate::node::admin::MAX_BODY_BYTES;
/// Most bytes of request headers (names and values) an ingress request may
/// carry; the HTTP parser's own limit is far higher.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// What the ingress handlers share.
#[derive(Clone)]
pub struct Ingress {
    pub net: Net,
    pub meta: MetadataClient,
    pub partitions: u32,
    pub default_timeout: Duration,
    pub metrics: Arc<crate::node::metrics::Metrics>,
    /// The object types served: routing and argument checks.
    pub objects: Objects,
    /// The next generated request id's counter.
    next_id: Arc<AtomicU64>,
}

impl Ingress {
    pub fn new(
        net: Net,
        meta: MetadataClient,
        partitions: u32,
        default_timeout: Duration,
        metrics: Arc<crate::node::metrics::Metrics>,
        objects: Objects,
    ) -> Self {
        Ingress {
            net,
            meta,
            partitions,
            default_timeout,
            metrics,
            objects,
            next_id: Arc::new(AtomicU64::new(rand::thread_rng().gen())),
        }
    }

    fn request_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("g:{}:{n:016x}", self.net.me().0)
    }
}

/// The partition that owns `object/key`: FNV-1a, stable across builds and nodes.
pub fn partition_of(object: &str, key: &str, partitions: u32) -> PartitionId {
    let bytes = object.bytes().chain([b'/']).chain(key.bytes());
    let h = crate::types::fnv1a(crate::types::FNV1A_START, bytes);
    PartitionId((h % partitions.max(1) as u64) as u32)
}

pub fn error_response(status: u16, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .json(json!({ "error": message.into() }))
}

/// Mounts the ingress routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/{object}/{key}/{handler}", web::post().to(invoke))
        .route("/{object}/{key}/{handler}", web::get().to(invoke))
        .route(
            "/{object}/{key}/{handler}",
            web::route().to(method_not_allowed),
        );
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let mut response = error_response(
        405,
        format!("method {} not allowed: use GET or POST", req.method()),
    );
    response.headers_mut().insert(
        actix_web::http::header::ALLOW,
        actix_web::http::header::HeaderValue::from_static("GET, POST"),
    );
    closing(response)
}

/// `response`, and the connection closed after it (part of the request may
/// be unread).
fn closing(mut response: HttpResponse) -> HttpResponse {
    response
        .head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Close);
    response
}

fn too_large() -> HttpResponse {
    closing(error_response(
        413,
        format!("request body exceeds {MAX_BODY_BYTES} bytes"),
    ))
}

/// The refusal (431) of headers over [`MAX_HEADER_BYTES`], if they are.
fn refuse_headers(req: &HttpRequest) -> Option<HttpResponse> {
    let bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    (bytes > MAX_HEADER_BYTES).then(|| {
        closing(error_response(
            431,
            format!("request headers exceed {MAX_HEADER_BYTES} bytes"),
        ))
    })
}

/// The refusal (413) of a body whose declared length is over the limit, if
/// it is, decided before reading any of it: the client may never send it.
fn refuse_declared_length(req: &HttpRequest) -> Option<HttpResponse> {
    let v = req.headers().get(actix_web::http::header::CONTENT_LENGTH)?;
    match v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
        Some(n) if n <= MAX_BODY_BYTES as u64 => None,
        Some(_) => Some(too_large()),
        None => Some(closing(error_response(400, "malformed Content-Length"))),
    }
}

/// Reads the body, refusing (413) beyond [`MAX_BODY_BYTES`] before reading it
/// all, and (408) what has not arrived by `deadline` (a trickling client).
async fn read_body(mut payload: web::Payload, deadline: Instant) -> Result<Vec<u8>, HttpResponse> {
    use futures::StreamExt;
    let started = Instant::now();
    let read = async {
        let mut body = Vec::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk
                .map_err(|e| closing(error_response(400, format!("reading the body: {e}"))))?;
            if body.len().saturating_add(chunk.len()) > MAX_BODY_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    let left = deadline.saturating_duration_since(started);
    match tokio::time::timeout(left, read).await {
        Ok(result) => result,
        Err(_) => Err(closing(error_response(
            408,
            format!("request body not received within {left:?}"),
        ))),
    }
}

/// Decodes one percent-encoded path segment. Unlike the router's lenient
/// decoding (which replaces what is not UTF-8), a segment that is not
/// valid percent-encoded UTF-8 is an error: two different malformed keys
/// must not name the same object.
fn decode_segment(raw: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            // Two hex digits exactly (`from_str_radix` alone would take "+1").
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-encoding in path segment {raw:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("path segment {raw:?} is not valid UTF-8"))
}

/// The object, key and handler of the request's path, decoded strictly
/// (`Err`: why not).
fn path_parts(req: &HttpRequest) -> Result<(String, String, String), String> {
    let raw = req.uri().path();
    let mut parts = raw.trim_start_matches('/').splitn(3, '/');
    let mut next = || decode_segment(parts.next().unwrap_or_default());
    Ok((next()?, next()?, next()?))
}

/// The request's deadline (`keel-timeout-ms`, or the default).
fn request_timeout(req: &HttpRequest, ingress: &Ingress) -> Result<Duration, &'static str> {
    match req.headers().get("keel-timeout-ms") {
        None => Ok(ingress.default_timeout),
        Some(v) => match v.to_str().ok().and_then(|s| s.parse::<u64>().ok()) {
            Some(ms) if (1..=60_000).contains(&ms) => Ok(Duration::from_millis(ms)),
            _ => Err("keel-timeout-ms must be an integer in 1..=60000"),
        },
    }
}

async fn invoke(
    req: HttpRequest,
    payload: web::Payload,
    ingress: web::Data<Ingress>,
) -> HttpResponse {
    let started = Instant::now();
    if let Some(response) = refuse_headers(&req) {
        return response;
    }
    let (object_name, key, handler) = match path_parts(&req) {
        Ok(parts) => parts,
        Err(why) => return closing(error_response(400, why)),
    };
    let object = match ingress.objects.get(&object_name) {
        Ok(t) => t.name().to_string(),
        Err(e) => return error_response(404, e.to_string()),
    };
    if let Some(response) = refuse_declared_length(&req) {
        return response;
    }
    let timeout = match request_timeout(&req, &ingress) {
        Ok(t) => t,
        Err(why) => return closing(error_response(400, why)),
    };
    let deadline = started + timeout;
    let body = match read_body(payload, deadline).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let response = invoke_object(&req, &object, key, &handler, &body, deadline, &ingress).await;
    let outcome = match response.status().as_u16() {
        200 => "ok",
        412 => "precondition_failed",
        400..=499 => "rejected",
        504 => "timeout",
        _ => "unavailable",
    };
    ingress
        .metrics
        .observe_request(&object, outcome, started.elapsed());
    response
}

async fn invoke_object(
    req: &HttpRequest,
    object: &str,
    key: String,
    handler: &str,
    body: &[u8],
    deadline: Instant,
    ingress: &Ingress,
) -> HttpResponse {
    if key.is_empty() || key.len() > MAX_OBJECT_KEY {
        return error_response(
            400,
            format!("object key must be 1..={MAX_OBJECT_KEY} bytes"),
        );
    }
    let arg: Value = if body.iter().all(|b| b.is_ascii_whitespace()) {
        Value::Null
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return error_response(400, format!("malformed JSON body: {e}")),
        }
    };
    let writes = ingress
        .objects
        .handler(object, handler)
        .is_some_and(|h| !h.is_read_only());
    if writes && req.method() == actix_web::http::Method::GET {
        return error_response(405, format!("{object}/{handler} changes state: use POST"));
    }
    if let Err(e) = ingress.objects.check(object, handler, &arg) {
        return error_response(e.http_status(), e.to_string());
    }
    let request_id = match req.headers().get("idempotency-key") {
        None => ingress.request_id(),
        Some(v) => match v.to_str() {
            Ok(s) if !s.is_empty() && s.len() <= MAX_IDEMPOTENCY_KEY => {
                format!("u:{object}/{key}/{handler}/{s}")
            }
            _ => {
                return error_response(
                    400,
                    format!(
                    "idempotency-key must be 1..={MAX_IDEMPOTENCY_KEY} visible ASCII characters"
                ),
                )
            }
        },
    };
    let partition = partition_of(object, &key, ingress.partitions);
    let invoke = Invoke {
        partition,
        request_id,
        object: object.to_string(),
        key,
        handler: handler.to_string(),
        arg: serde_json::to_vec(&arg).unwrap_or_default(),
        timeout_ms: 0,
    };
    // What is left of the request's deadline after reading its body.
    let timeout = deadline.saturating_duration_since(Instant::now());
    forward(invoke, timeout, ingress).await
}

/// Longest a request waits on one register read of its partition's leader.
const LEADER_READ: Duration = Duration::from_millis(500);

/// Sends the request to the partition's leader, following hints and retrying
/// (same request id: it applies at most once) until the deadline.
async fn forward(mut invoke: Invoke, timeout: Duration, ingress: &Ingress) -> HttpResponse {
    let deadline = Instant::now() + timeout;
    let partition = invoke.partition;
    let mut maybe_applied = false;
    let mut hint: Option<NodeId> = None;
    // The cached leader said it does not lead and knew no other: the cache
    // is stale (this node was cut off while leadership moved), so ask the
    // register instead of waiting for the cache to catch up.
    let mut fresh = false;
    let mut last = String::from("no leader known yet");
    let mut attempt = 0u32;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        if attempt > 0 {
            let pause = Duration::from_millis((10 * attempt as u64).min(100));
            tokio::time::sleep(pause.min(left)).await;
        }
        attempt += 1;
        let leader = match hint.take() {
            Some(node) => node,
            None => {
                let timeout = deadline.saturating_duration_since(Instant::now());
                let asked = leader_of(&ingress.meta, partition, timeout.min(LEADER_READ), fresh);
                match asked.await {
                    Ok(node) => node,
                    Err(why) => {
                        last = why;
                        continue;
                    }
                }
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        invoke.timeout_ms = left.as_millis() as u64;
        match try_leader(ingress, leader, invoke.clone(), left).await {
            Ok(InvokeReply::Done(response)) => {
                return HttpResponse::build(
                    StatusCode::from_u16(response.status).unwrap_or(StatusCode::OK),
                )
                .content_type("application/json")
                .body(response.body);
            }
            Ok(InvokeReply::NotLeader { leader: new }) => {
                last = format!("{leader} does not lead partition {partition}");
                hint = new.filter(|n| *n != leader);
                fresh = hint.is_none();
            }
            Ok(InvokeReply::Fenced) => {
                last = format!("leader {leader} of partition {partition} was deposed");
            }
            Ok(InvokeReply::Unavailable(reason)) => last = format!("{leader}: {reason}"),
            Ok(InvokeReply::Timeout) => {
                maybe_applied = true;
                last = format!("leader {leader} did not apply the request in time");
            }
            Err(e) => {
                maybe_applied |= e.maybe_delivered();
                last = e.to_string();
            }
        }
    }
    if maybe_applied {
        HttpResponse::GatewayTimeout().json(json!({
            "error": format!("deadline of {timeout:?} passed; the request may or may not have been applied ({last})"),
            "partition": partition.0,
        }))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({
            "error": format!("no leader reachable for partition {partition}: {last}"),
            "partition": partition.0,
        }))
    }
}

/// One attempt at `leader`: directly, or, when this node cannot reach it but
/// a peer can, through that peer. (In a bridge, the two nodes that cannot see
/// each other both still see the third.)
async fn try_leader(
    ingress: &Ingress,
    leader: NodeId,
    invoke: Invoke,
    left: Duration,
) -> Result<InvokeReply, CallError> {
    let net = &ingress.net;
    if net.is_suspected(leader) {
        let via = net
            .nodes()
            .iter()
            .copied()
            .find(|n| *n != net.me() && *n != leader && !net.is_suspected(*n));
        if let Some(via) = via {
            return match net
                .request_wire(via, Wire::Relay(Box::new(invoke)), left)
                .await
            {
                Ok(Wire::RelayResult(reply)) => Ok(reply),
                Ok(other) => Err(CallError::Remote(
                    via,
                    format!("unexpected reply {other:?}"),
                )),
                Err(e) => Err(e),
            };
        }
    }
    net.call(leader, invoke, left).await
}

/// Serves a request relayed by a peer: one attempt at the leader this node
/// knows, never relayed again.
pub async fn relay(ingress: Ingress, invoke: Invoke) -> InvokeReply {
    let left = Duration::from_millis(invoke.timeout_ms.clamp(1, 60_000));
    let Some(leader) = cached_leader(&ingress.meta, invoke.partition) else {
        return InvokeReply::NotLeader { leader: None };
    };
    if ingress.net.is_suspected(leader) {
        return InvokeReply::Unavailable(format!(
            "{} cannot reach leader {leader} either",
            ingress.net.me()
        ));
    }
    match ingress.net.call(leader, invoke, left).await {
        Ok(reply) => reply,
        Err(e) if e.maybe_delivered() => InvokeReply::Timeout,
        Err(e) => InvokeReply::Unavailable(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_decode_strictly() {
        assert_eq!(decode_segment("k"), Ok("k".into()));
        assert_eq!(decode_segment("a%2Fb%20%C3%A9"), Ok("a/b é".into()));
        assert_eq!(decode_segment("%41%4a"), Ok("AJ".into()));
        for bad in ["%ff", "%C3%28", "k%80", "%", "%4", "%zz", "%+1"] {
            assert!(decode_segment(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn partitioning_is_stable_and_spread() {
        let p = |k: &str| partition_of("Counter", k, 4).0;
        assert_eq!(p("a"), p("a"));
        let mut seen = [0; 4];
        for i in 0..400 {
            seen[p(&format!("key-{i}")) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
        // Pinned values: changing the hash would move existing keys.
        // FNV-1a of "Set/x" mod 1000, computed independently.
        assert_eq!(partition_of("Set", "x", 1000).0, 340);
    }
}
