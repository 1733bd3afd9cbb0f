//! Assembling a node: storage, transport, the supervision tree of actors, and
//! the HTTP server. Runs inside an actix `System` (the node binary's main
//! thread, or one thread per node in the test rig).

use super::admin::{self, Admin};
use super::local::LocalActors;
use super::metrics::Metrics;
use super::net::{CallError, Net, Remote};
use super::router::Router;
use super::status::{NodeStatus, PartitionView, StatusSource};
use super::wire::Wire;
use crate::actors::leader_elector::{ElectorConfig, LeaderElector};
use crate::actors::log_server::{LogServer, TailWatch};
use crate::actors::metadata::{MetaCache, MetadataClient, MetadataStore};
use crate::actors::partition_processor::{
    GetProcessorStatus, PartitionProcessor, ProcessorOptions, SnapshotSettings,
};
use crate::actors::rejoin::{self, RejoinState, Rejoiner};
use crate::actors::sealer::Sealer;
use crate::actors::sequencer::{SequencerDirectory, SequencerManager, SequencerTuning};
use crate::actors::supervisor::{
    start_root, ChildSpec, RootHandle, Slot, SupervisorSpec, Watchdog,
};
use crate::config::{Config, ConfigError};
use crate::ingress::http::Ingress;
use crate::log::{chain_key, Chain, LogClient, LogConfig};
use crate::objects::Objects;
use crate::storage::identity::{self, ClusterId, IdentityError};
use crate::storage::{Storage, StorageError};
use crate::transport::{
    CaCert, FaultFilter, NodeIdentity, PeerAddr, TlsError, Transport, TransportConfig,
    TransportError,
};
use crate::types::{LogId, NodeId, PartitionId};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::info;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("certificates: {0}")]
    Tls(#[from] TlsError),
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    #[error("cannot serve HTTP on {addr}: {reason}")]
    Http {
        addr: std::net::SocketAddr,
        reason: String,
    },
    #[error("supervision tree: {0}")]
    Supervision(String),
    #[error("object types: {0}")]
    Objects(#[from] crate::objects::RegistryError),
}

/// Everything needed to start a node.
pub struct NodeOptions {
    pub config: Config,
    pub identity: NodeIdentity,
    pub ca: CaCert,
    pub fault: FaultFilter,
    /// HTTP worker threads (actix-web).
    pub http_workers: usize,
    /// Run partition processors and leader electors. Off only in log-level
    /// tests, which use the logs directly and must see only their own records.
    pub partitions_enabled: bool,
    /// `--rejoin`: a blank data directory (a lost disk) is taken as this
    /// node's, and the node rejoins (see `actors::rejoin`); a directory that
    /// holds this node's data starts as usual.
    pub rejoin: bool,
    /// The object types this node serves (every node of the cluster must
    /// serve the same: a peer that does not is refused).
    pub objects: Objects,
}

impl NodeOptions {
    /// Loads certificates from the config's TLS directory.
    pub fn from_config(config: Config) -> Result<Self, NodeError> {
        config.validate()?;
        let ca = CaCert::load(&config.tls.dir)?;
        let identity = NodeIdentity::load(&config.tls.dir, config.me())?;
        Ok(NodeOptions {
            config,
            identity,
            ca,
            fault: FaultFilter::new(),
            http_workers: 2,
            partitions_enabled: true,
            rejoin: false,
            objects: crate::objects::demo::objects(),
        })
    }
}

/// A running node. Cheap handles only; everything runs on the node's arbiter.
#[derive(Clone)]
pub struct Node {
    pub config: Arc<Config>,
    pub net: Net,
    pub transport: Transport<Wire>,
    pub storage: Storage,
    pub meta: MetadataClient,
    pub logs: LogClient,
    pub local: LocalActors,
    pub root: RootHandle,
    pub metrics: Arc<Metrics>,
    pub fault: FaultFilter,
    pub status: StatusSource,
    pub seals: Arc<AtomicU64>,
    /// Chaos: stalls this node's runtime thread (`/chaos/slow-node`).
    pub staller: super::stall::RuntimeStaller,
    /// The threads of the actors that touch the disk (the log-server, the
    /// partition processors), stopped and joined at shutdown.
    disk_homes: Arc<std::sync::Mutex<Vec<actix::Arbiter>>>,
    http: actix_web::dev::ServerHandle,
    router: Arc<Router>,
}

/// `Net`'s remote half: the QUIC transport.
struct QuicRemote(Transport<Wire>);

impl Remote for QuicRemote {
    fn request(
        &self,
        to: NodeId,
        msg: Wire,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Wire, CallError>> {
        let transport = self.0.clone();
        async move {
            transport
                .request(to, msg, timeout)
                .await
                .map_err(|e| map_transport_error(to, timeout, e))
        }
        .boxed()
    }

    fn send(&self, to: NodeId, msg: Wire) -> Result<(), CallError> {
        self.0
            .send(to, msg)
            .map_err(|e| map_transport_error(to, Duration::ZERO, e))
    }

    fn is_suspected(&self, node: NodeId) -> bool {
        !self.0.peer_state(node).is_connected()
    }

    fn is_degraded(&self, node: NodeId) -> bool {
        !self.0.is_healthy(node)
    }
}

fn map_transport_error(to: NodeId, timeout: Duration, e: TransportError) -> CallError {
    match e {
        TransportError::Timeout { .. } => CallError::Timeout(to, timeout),
        TransportError::ConnectionLost { .. } => CallError::ConnectionLost(to),
        TransportError::Remote { .. } => CallError::Remote(to, e.to_string()),
        other if other.maybe_delivered() => CallError::ConnectionLost(to),
        other => CallError::Unavailable(to, other.to_string()),
    }
}

impl Node {
    /// Starts every part of the node. Must run inside an actix `System`.
    pub async fn start(
        opts: NodeOptions,
        on_give_up: impl FnOnce(String) + Send + 'static,
    ) -> Result<Node, NodeError> {
        let config = Arc::new(opts.config);
        config.validate()?;
        let me = config.me();
        let nodes = config.node_ids();
        let my_addr = config.address(me).expect("validated").clone();
        let started = Instant::now();

        // Before anything touches the data directory: it must carry this
        // node's identity. A blank one (a lost disk) or another node's would
        // let this node break promises it made; only `keel init` creates
        // identities, so nothing here creates one.
        let cluster = ClusterId::from_ca_der(opts.ca.der());
        if opts.rejoin {
            let start = identity::prepare_rejoin(&config.data_dir, cluster, me)?;
            info!(node = %me, ?start, "starting with --rejoin");
        }
        let data = identity::verify(&config.data_dir, cluster, me)?;
        info!(node = %me, cluster = %data.cluster, created = %data.created, "data directory identity verified");

        // Claim the HTTP port next: a port in use must fail the start
        // before any actor runs.
        let http_listener =
            std::net::TcpListener::bind(my_addr.http).map_err(|e| NodeError::Http {
                addr: my_addr.http,
                reason: e.to_string(),
            })?;
        let storage = Storage::open_with(&config.data_dir, config.state_cache_bytes())?;
        let local = LocalActors {
            log_server: Slot::new(),
            metadata: Slot::new(),
            meta_cache: MetaCache::default(),
            tails: TailWatch::default(),
            sequencers: SequencerDirectory::default(),
            sequencer_manager: Slot::new(),
            sealer: Slot::new(),
            processors: (0..config.partitions).map(|_| Slot::new()).collect(),
            electors: (0..config.partitions).map(|_| Slot::new()).collect(),
        };
        let router = Router::new(local.clone());

        let mut tcfg = TransportConfig::new(
            my_addr.quic,
            config
                .nodes
                .iter()
                .map(|n| PeerAddr {
                    id: NodeId(n.id),
                    addr: n.quic,
                })
                .collect(),
        );
        tcfg.app = opts.objects.describe();
        tcfg.keep_alive = Duration::from_millis(config.timing.keep_alive_ms);
        tcfg.idle_timeout = Duration::from_millis(config.timing.idle_timeout_ms);
        let transport = Transport::start(
            tcfg,
            opts.identity,
            opts.ca,
            opts.fault.clone(),
            router.clone(),
        )
        .await?;

        let net = Net::new(
            me,
            nodes.clone(),
            local.clone(),
            Arc::new(QuicRemote(transport.clone())),
        );
        let meta = MetadataClient::new(net.clone(), local.meta_cache.clone());
        let tails = local.tails.clone();
        let log_config = LogConfig::new(nodes.clone(), config.replication);
        let logs = LogClient::new(
            net.clone(),
            meta.clone(),
            local.sealer.clone(),
            storage.clone(),
            tails.clone(),
            log_config.clone(),
            config.partitions,
        );
        let metrics = Arc::new(Metrics::default());
        let seals = Arc::new(AtomicU64::new(0));

        // A rejoin after a lost disk: before any actor serves from the blank
        // state, every loglet this node may have held is fenced (see
        // `actors::rejoin`). The register's quorums are the other nodes
        // meanwhile; nothing here is served, so peers see this node down.
        let rejoining = identity::rejoining(&config.data_dir);
        let rejoin: RejoinState = Default::default();
        if rejoining && !storage.meta.rejoin_progress()?.fenced {
            rejoin::show(&rejoin, "fence", "reading every log's chain".into());
            let mut attempt = 0u32;
            loop {
                attempt += 1;
                match rejoin::fence(me, config.partitions, &meta, &storage).await {
                    Ok(marked) => {
                        info!(node = %me, marked, "rejoin fence up: loglets this node may have held are marked lost");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(node = %me, attempt, "rejoin fence not up yet (retrying): {e}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }

        // The log-server's own thread: its handlers write and read sled
        // and trim, which must not delay this thread (QUIC, timers, the
        // failure detector's pings, the supervisor's probes).
        let log_home = actix::Arbiter::new();
        let log_home_handle = log_home.handle();
        // Each partition processor's own thread, for the same reason: they
        // apply batches to sled and read it (state, snapshots). One each, not
        // one shared: reading a snapshot's entries takes a processor tens to
        // hundreds of milliseconds, which on a shared thread every partition
        // of the node, the ones it leads too, waited out (docs/PERF.md).
        // Every thread of a disk actor, the log-server's first: stopped
        // together on a failed start and at shutdown.
        let mut disk_homes: Vec<actix::Arbiter> = vec![log_home];
        // The supervision tree: root → metadata, log, partitions.
        let log_spec = {
            let (st, tw, tr) = (storage.clone(), tails.clone(), transport.clone());
            let (n2, st2, dir) = (net.clone(), storage.clone(), local.sequencers.clone());
            let (n3, m3, lc, s3) = (net.clone(), meta.clone(), log_config.clone(), seals.clone());
            SupervisorSpec::new("log")
                .child(ChildSpec::actor_on(
                    "log-server",
                    local.log_server.clone(),
                    log_home_handle.clone(),
                    move |_cx| {
                        let tr = tr.clone();
                        LogServer::new(me, st.clone(), tw.clone()).reporting_commits_to(Arc::new(
                            move |node, c| tr.commit_progress(node, c.waits, c.slow, c.stuck),
                        ))
                    },
                ))
                .child(ChildSpec::actor(
                    "sequencers",
                    local.sequencer_manager.clone(),
                    move |cx| {
                        SequencerManager::new(
                            n2.clone(),
                            st2.clone(),
                            dir.clone(),
                            SequencerTuning::default(),
                            cx,
                        )
                    },
                ))
                .child(ChildSpec::actor(
                    "sealer",
                    local.sealer.clone(),
                    move |cx| Sealer::new(n3.clone(), m3.clone(), lc.clone(), s3.clone(), cx),
                ))
        };
        let mut partitions_spec = SupervisorSpec::new("partitions");
        let enabled = if opts.partitions_enabled {
            config.partitions
        } else {
            0
        };
        let snapshots = SnapshotSettings::from_config(&config);
        let retention_ms = config.idempotency_retention_ms();
        for p in 0..enabled {
            let partition = PartitionId(p);
            let state_home = actix::Arbiter::new();
            let state_home_handle = state_home.handle();
            disk_homes.push(state_home);
            let (st, lc) = (storage.clone(), logs.clone());
            let options = ProcessorOptions {
                snapshots: snapshots.clone(),
                idempotency_retention_ms: retention_ms,
                objects: opts.objects.clone(),
                meta: meta.clone(),
            };
            partitions_spec = partitions_spec.child(ChildSpec::actor_on(
                format!("processor-{p}"),
                local.processors[p as usize].clone(),
                state_home_handle,
                move |cx| {
                    PartitionProcessor::new(partition, st.clone(), lc.clone(), cx, options.clone())
                },
            ));
            let (n, m, slot, metrics) = (
                net.clone(),
                meta.clone(),
                local.processors[p as usize].clone(),
                metrics.clone(),
            );
            partitions_spec = partitions_spec.child(ChildSpec::actor(
                format!("elector-{p}"),
                local.electors[p as usize].clone(),
                move |_cx| {
                    LeaderElector::new(
                        partition,
                        n.clone(),
                        m.clone(),
                        slot.clone(),
                        ElectorConfig::default(),
                        metrics.clone(),
                    )
                },
            ));
        }
        let st = storage.clone();
        let st_dir = config.data_dir.clone();
        let mut root_spec = SupervisorSpec::new("root")
            .child(ChildSpec::actor(
                "metadata",
                local.metadata.clone(),
                move |_cx| {
                    let progress = st.meta.rejoin_progress().unwrap_or_default();
                    let votes = rejoin::acceptor_votes(&st_dir, progress);
                    MetadataStore::new(me, st.clone(), votes)
                },
            ))
            .child(ChildSpec::supervisor(log_spec))
            .child(ChildSpec::supervisor(partitions_spec));
        if rejoining {
            let (n, m, l, s) = (net.clone(), meta.clone(), logs.clone(), storage.clone());
            let (ls, acc) = (local.log_server.clone(), local.metadata.clone());
            let (dir, state) = (config.data_dir.clone(), rejoin.clone());
            root_spec = root_spec.child(ChildSpec::actor("rejoin", Slot::new(), move |_cx| {
                Rejoiner::new(
                    n.clone(),
                    m.clone(),
                    l.clone(),
                    s.clone(),
                    ls.clone(),
                    acc.clone(),
                    dir.clone(),
                    state.clone(),
                )
            }));
        }
        let root = match start_root(root_spec, Watchdog::for_node(me), on_give_up) {
            Ok(root) => root,
            Err(e) => {
                for home in &disk_homes {
                    home.stop();
                }
                return Err(NodeError::Supervision(e.to_string()));
            }
        };

        let status: StatusSource = {
            let (cfg, transport, root, local, storage, meta, rejoin) = (
                config.clone(),
                transport.clone(),
                root.clone(),
                local.clone(),
                storage.clone(),
                meta.clone(),
                rejoin.clone(),
            );
            Arc::new(move || {
                let (cfg, transport, root, local, storage, meta, rejoin) = (
                    cfg.clone(),
                    transport.clone(),
                    root.clone(),
                    local.clone(),
                    storage.clone(),
                    meta.clone(),
                    rejoin.clone(),
                );
                async move {
                    let (t, r, l, s, m) = (&transport, &root, &local, &storage, &meta);
                    node_status(&cfg, started, t, r, l, s, m, &rejoin).await
                }
                .boxed()
            })
        };
        router.set_status_source(status.clone());

        let ingress = Ingress::new(
            net.clone(),
            meta.clone(),
            config.partitions,
            config.request_timeout(),
            metrics.clone(),
            opts.objects.clone(),
        );
        router.set_relay({
            let ingress = ingress.clone();
            Arc::new(move |invoke| crate::ingress::http::relay(ingress.clone(), invoke).boxed())
        });
        let staller = super::stall::RuntimeStaller::for_current_runtime();
        let admin_state = Admin {
            config: config.clone(),
            net: net.clone(),
            meta: meta.clone(),
            root: root.clone(),
            fault: opts.fault.clone(),
            status: status.clone(),
            metrics: metrics.clone(),
            logs: logs.clone(),
            seals: seals.clone(),
            storage: storage.clone(),
            staller: staller.clone(),
        };
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(actix_web::web::Data::new(ingress.clone()))
                .app_data(actix_web::web::Data::new(admin_state.clone()))
                .app_data(admin::payload_config())
                .app_data(admin::json_config())
                .configure(admin::configure)
                .configure(crate::ingress::http::configure)
                .default_service(actix_web::web::to(admin::not_found))
        })
        .workers(opts.http_workers.max(1))
        // A client has 5 s to send a request's head (then 408), and a
        // connection refused with part of its request unread lingers at
        // most 1 s for the client to read the answer. Bodies have the
        // request's own deadline (see `ingress::http`).
        .client_request_timeout(Duration::from_secs(5))
        .client_disconnect_timeout(Duration::from_secs(1))
        .disable_signals()
        .shutdown_timeout(1)
        .listen(http_listener);
        let server = match server {
            Ok(s) => s.run(),
            Err(e) => {
                let _ = root.shutdown().await;
                transport.shutdown().await;
                for home in &disk_homes {
                    home.stop();
                }
                return Err(NodeError::Http {
                    addr: my_addr.http,
                    reason: e.to_string(),
                });
            }
        };
        let http = server.handle();
        actix::spawn(server);
        info!(node = %me, quic = %my_addr.quic, http = %my_addr.http, "node started");

        Ok(Node {
            config,
            net,
            transport,
            storage,
            meta,
            logs,
            local,
            root,
            metrics,
            fault: opts.fault,
            status,
            seals,
            staller,
            disk_homes: Arc::new(std::sync::Mutex::new(disk_homes)),
            http,
            router,
        })
    }

    pub fn id(&self) -> NodeId {
        self.config.me()
    }

    /// A crash, as far as the rest of the cluster can tell: every packet to
    /// and from the peers is dropped first (no goodbye reaches them), then
    /// the HTTP server stops without draining; the caller drops the rest.
    pub async fn crash(&self) {
        let peers: Vec<std::net::SocketAddr> = self
            .config
            .nodes
            .iter()
            .filter(|n| n.id != self.config.node)
            .map(|n| n.quic)
            .collect();
        self.fault.isolate(&peers);
        self.http.stop(false).await;
        self.local.sequencers.clear();
        // In-process teardown is invisible to the peers now; stop the actors
        // while the runtime still runs their timers.
        let _ = self.root.shutdown().await;
        self.router.detach();
        self.transport.shutdown().await;
        self.stop_disk_homes().await;
        info!(node = %self.id(), "node crashed (simulated)");
    }

    /// Orderly stop: HTTP first (no new requests), then the actors, then the
    /// transport; finally a flush.
    pub async fn shutdown(&self) {
        self.http.stop(true).await;
        let _ = self.root.shutdown().await;
        self.local.sequencers.clear();
        self.router.detach();
        self.transport.shutdown().await;
        self.stop_disk_homes().await;
        let _ = self.storage.sync().await;
        info!(node = %self.id(), "node stopped");
    }

    /// Stops the disk actors' threads (their actors are stopped by then)
    /// and waits for them, so nothing of this node touches its storage after.
    async fn stop_disk_homes(&self) {
        let homes = std::mem::take(&mut *self.disk_homes.lock().unwrap_or_else(|p| p.into_inner()));
        for home in homes {
            home.stop();
            let joined = tokio::task::spawn_blocking(move || home.join());
            if tokio::time::timeout(Duration::from_secs(5), joined)
                .await
                .is_err()
            {
                tracing::warn!(node = %self.id(), "a disk actor's thread did not end within 5 s");
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn node_status(
    cfg: &Config,
    started: Instant,
    transport: &Transport<Wire>,
    root: &RootHandle,
    local: &LocalActors,
    storage: &Storage,
    meta: &MetadataClient,
    rejoin: &RejoinState,
) -> NodeStatus {
    let me = cfg.me();
    let addr = cfg.address(me).expect("validated");
    let mut partitions = Vec::new();
    for (p, slot) in local.processors.iter().enumerate() {
        let partition = PartitionId(p as u32);
        let sequencer = meta
            .cached_typed::<Chain>(&chain_key(LogId(p as u32)))
            .map(|(_, c)| c.tail().sequencer);
        let reply = match slot.addr() {
            Some(addr) => {
                tokio::time::timeout(Duration::from_millis(500), addr.send(GetProcessorStatus))
                    .await
                    .ok()
                    .and_then(|r| r.ok())
            }
            None => None,
        };
        partitions.push(match reply {
            Some(s) => PartitionView {
                partition,
                mode: format!("{:?}", s.mode),
                status: s.status,
                leader: s.leader,
                epoch: s.epoch,
                sequencer,
                applied_lsn: s.applied_lsn,
                persisted_lsn: s.persisted_lsn,
                last_update_ms: s.last_update_ms,
                pending_requests: s.pending_requests,
                snapshot_lsn: s.snapshot_lsn,
                restoring: s.restoring,
                snapshot_fetch_error: s.snapshot_fetch_error,
                snapshots_taken: s.snapshots_taken,
                snapshots_restored: s.snapshots_restored,
                outbox: s.outbox,
            },
            None => PartitionView {
                partition,
                mode: "Down".into(),
                status: "Restarting".into(),
                leader: None,
                epoch: Default::default(),
                sequencer,
                applied_lsn: Default::default(),
                persisted_lsn: Default::default(),
                last_update_ms: 0,
                pending_requests: 0,
                snapshot_lsn: None,
                restoring: None,
                snapshot_fetch_error: None,
                snapshots_taken: 0,
                snapshots_restored: 0,
                outbox: Default::default(),
            },
        });
    }
    NodeStatus {
        node: me,
        quic: addr.quic,
        http: addr.http,
        uptime_ms: started.elapsed().as_millis() as u64,
        peers: transport.peers(),
        partitions,
        supervision: root.status(),
        storage_bytes: storage.size_on_disk(),
        storage: storage.stats(),
        chaos_enabled: cfg.chaos,
        rejoin: rejoin.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        objects: transport.app().to_string(),
    }
}
