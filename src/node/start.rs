//! Putting a node together, top to bottom: each phase of [`NodeBuilder::start`] is one
//! function below, in the order they run. The fabric (the node's peer links) is built once
//! and handed to the planes that use it.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

use super::running::RunningNode;
use super::serve::serve;
use super::shared::Shared;
use super::{NodeBuilder, NodeError};
use crate::config::Settings;
use crate::control::replica::{self, Control, Registration};
use crate::data::functions::Functions;
use crate::data::plane::{DataBeat, DataPlane};
use crate::env::{Env, Listener};
use crate::fabric::heartbeat::SharedDetector;
use crate::fabric::{ClusterSecret, Fabric, Plane, PlaneHandler};
use crate::pubsub::service::{Fanout, PublishJobs};
use crate::registry::Registry;
use crate::view::NodeView;

impl NodeBuilder {
    /// Binds the listener and starts serving; returns once the node accepts connections.
    pub async fn start(self) -> Result<RunningNode, NodeError> {
        let NodeBuilder {
            settings,
            env,
            disk,
            secret,
            next_protocol,
            mut registry,
            queue_disk,
        } = self;
        let env = env.unwrap_or_else(Env::production);
        let security = Security::load(&settings, secret, &env)?;
        let dns = dns_settings(&settings)?;
        let queue_store = queue_store(&settings, queue_disk)?;
        let mut ports = Ports::bind(&env, &settings, security.tls.is_some()).await?;
        let fabric = security.fabric(&env, &settings, next_protocol);
        let control = control_plane(&env, &settings, disk, &ports.url, fabric.clone()).await?;
        let cache = cache(&env, &settings, control.id).await?;
        if let Some(c) = &cache {
            registry.set_result_cache(Arc::new(crate::cache::results::Results::new(c.clone())));
        }
        let (registered_tx, registered) = watch::channel(false);
        let view = parts(
            &env,
            &settings,
            &ports.url,
            control,
            fabric,
            registry,
            &registered,
            dns,
            queue_store,
            cache,
        );
        install_builtins(&view);
        let upgrade = upgrade_stats(next_protocol);
        let (fanout, publish_jobs) = Fanout::new(
            view.control.clone(),
            view.fabric.clone(),
            view.remote_interest.clone(),
            view.pubsub.clone(),
            view.env.clock.clone(),
        );
        let fanout = Arc::new(fanout);
        let limits = crate::rpc::ExecLimits::from_settings(&settings);
        let data_plane = serve_data_plane(&view, limits, settings.auth_required, upgrade.clone());
        let shared = Arc::new(Shared {
            view: view.clone(),
            limits,
            fanout,
            data_plane,
            tokens: security.tokens,
            tls: security.tls,
            refusals: crate::fabric::handshake::RefusalLog::new("client connection"),
            settings,
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        // The admin server outlives the shutdown signal: `/readyz` says 503 while the node
        // drains, and it stops once the node has.
        let (stopped_tx, stopped_rx) = watch::channel(false);
        let monitoring_url = ports.admin.map(|(listener, url)| {
            serve_admin(&shared, listener, &url, &shutdown_rx, stopped_rx);
            url
        });
        let registration = registration(&view, &shared.settings);
        let peers = registration.peers.clone();
        spawn_tasks(
            &shared,
            publish_jobs,
            upgrade.clone(),
            registered.clone(),
            &shutdown_rx,
        );
        serve_dns(&view, ports.dns.take(), &shutdown_rx)?;
        tokio::spawn(replica::join_and_register(
            view.control.clone(),
            registration,
            shutdown_rx.clone(),
            registered_tx,
        ));
        let task = tokio::spawn(async move {
            serve(shared, ports.listener, shutdown_rx, peers).await;
            stopped_tx.send_replace(true);
        });
        tracing::info!(url = %ports.url, node_id = %view.node_id, "node listening");
        Ok(RunningNode {
            upgrade,
            registered,
            local_addr: ports.local_addr,
            url: ports.url,
            monitoring_url,
            node_id: view.node_id.clone(),
            view,
            shutdown: Arc::new(shutdown_tx),
            task,
        })
    }
}

/// Who may speak to the node: the cluster secret peers prove, clients' tokens, the port's
/// TLS. Checked together, since each makes the others matter.
struct Security {
    secret: ClusterSecret,
    tokens: Option<Arc<crate::auth::TokenVerifier>>,
    tls: Option<crate::tls::NodeTls>,
}

impl Security {
    fn load(
        settings: &Settings,
        secret: Option<ClusterSecret>,
        env: &Env,
    ) -> Result<Security, NodeError> {
        settings.validate()?;
        let secret = match (secret, &settings.cluster_secret_file) {
            (Some(secret), _) => secret,
            (None, Some(path)) => ClusterSecret::from_file(path)?,
            (None, None) => ClusterSecret::none(),
        };
        settings.check_peer_exposure(secret.is_set())?;
        if !secret.is_set() {
            tracing::warn!(
                "no cluster secret (--cluster-secret-file): peers are not authenticated, so \
                 any process that reaches this node's port can join its cluster"
            );
        }
        let tokens = token_verifier(settings)?;
        if tokens.is_some() && !secret.is_set() {
            // Without a secret any process can open the peer endpoint, and a forwarded step
            // is the peer's word for who called: tokens would be bypassed.
            return Err(NodeError::Settings(crate::config::ConfigError::Invalid {
                key: "auth_required".to_owned(),
                reason: "needs a cluster secret (--cluster-secret-file): without one any \
                         process can speak to the peer endpoint and forward steps for any \
                         caller it claims"
                    .to_owned(),
            }));
        }
        let tls = crate::tls::NodeTls::from_files(
            &crate::tls::NodeTlsFiles::from_settings(settings),
            env.clock.clone(),
        )?;
        if tokens.is_some() && tls.is_none() && !settings.loopback_only() {
            tracing::warn!(
                "tokens are required but the port has no TLS (--tls-cert, --tls-key): tokens \
                 cross the network in clear text, and whoever sees one can replay it"
            );
        }
        Ok(Security {
            secret,
            tokens,
            tls,
        })
    }

    /// The node's peer links: Raft, heartbeats, forwarded steps and publishes share them.
    fn fabric(&self, env: &Env, settings: &Settings, next_protocol: bool) -> Fabric {
        let fabric = Fabric::new(
            env.clone(),
            Some(settings.cluster_id.clone()),
            self.secret.clone(),
        )
        .dial_tls(self.tls.clone());
        if next_protocol {
            fabric.speak_next_protocol()
        } else {
            fabric
        }
    }
}

/// The node's token verifier, from its settings (`None` unless `auth_required`).
fn token_verifier(
    settings: &Settings,
) -> Result<Option<Arc<crate::auth::TokenVerifier>>, crate::auth::AuthError> {
    use crate::auth::token::KeySource;
    if !settings.auth_required {
        return Ok(None);
    }
    let source = match (&settings.jwt_secret_file, &settings.jwt_public_key_file) {
        (Some(secret), _) => KeySource::SecretFile(secret),
        (None, Some(public)) => KeySource::PublicKeyFile(public),
        // `Settings::validate` refuses this.
        (None, None) => return Err(crate::auth::AuthError::Missing),
    };
    let verifier = crate::auth::TokenVerifier::new(
        source,
        settings.jwt_issuer.as_deref(),
        settings.jwt_audience.as_deref(),
        settings.allowed_clients.clone(),
    )?;
    Ok(Some(Arc::new(verifier)))
}

/// The node's ports, bound before anything else starts, so that a taken port fails the
/// start.
struct Ports {
    listener: Box<dyn Listener>,
    local_addr: SocketAddr,
    /// What clients and peers are told to use.
    url: String,
    /// The admin HTTP port and its URL, when enabled.
    admin: Option<(Box<dyn Listener>, String)>,
    /// The DNS gateway's UDP socket and TCP listener, when enabled.
    dns: Option<(Box<dyn crate::env::Datagram>, Box<dyn Listener>)>,
}

impl Ports {
    async fn bind(env: &Env, settings: &Settings, tls: bool) -> Result<Ports, NodeError> {
        let (listener, local_addr) = listen(env, settings.bind_addr()).await?;
        let admin = if settings.monitoring_enabled {
            let (l, bound) = listen(env, settings.monitoring_addr()).await?;
            let scheme = if tls { "https" } else { "http" };
            Some((l, format!("{scheme}://{bound}")))
        } else {
            None
        };
        let dns = if settings.dns_enabled() {
            let (udp, tcp) = settings.dns_addrs();
            let bound = crate::dns::service::bind(env, &udp, tcp.as_deref()).await;
            Some(bound.map_err(|source| NodeError::Bind { addr: udp, source })?)
        } else {
            None
        };
        let url = match settings.advertised_urls.first() {
            Some(u) => u.clone(),
            None => {
                if local_addr.ip().is_unspecified() {
                    tracing::warn!(
                        bound = %local_addr,
                        "bound to every interface without --advertised-url: other nodes and \
                         cluster clients are told a loopback address, which only works on \
                         this machine"
                    );
                }
                advertised_url(local_addr, tls)
            }
        };
        Ok(Ports {
            listener,
            local_addr,
            url,
            admin,
            dns,
        })
    }
}

async fn listen(env: &Env, addr: String) -> Result<(Box<dyn Listener>, SocketAddr), NodeError> {
    let listener = env.net.listen(&addr).await;
    let bound = listener.and_then(|l| Ok((l.local_addr()?, l)));
    match bound {
        Ok((local, l)) => Ok((l, local)),
        Err(source) => Err(NodeError::Bind { addr, source }),
    }
}

/// The URL clients should use: a node bound to every interface (`0.0.0.0`, `::`) is
/// reachable on loopback at least, so it advertises that.
fn advertised_url(bound: SocketAddr, tls: bool) -> String {
    let ip = match bound.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let scheme = if tls { "wss" } else { "ws" };
    format!("{scheme}://{}", SocketAddr::new(ip, bound.port()))
}

/// The control plane: this node's Raft replica of the catalog, on the disk the settings
/// name (or the one the simulator keeps across a crash).
async fn control_plane(
    env: &Env,
    settings: &Settings,
    disk: Option<crate::control::raft::LogStore>,
    url: &str,
    fabric: Fabric,
) -> Result<Arc<Control>, NodeError> {
    // Raft ids are nonzero; a node with a data directory keeps the first one it drew.
    let fresh_id = (env.rng.next_u64() >> 1) | 1;
    let disk = match disk {
        Some(disk) => crate::control::raft::Disk::Memory(disk),
        None => crate::control::raft::Disk::open(&settings.persistence, env.clock.clone())
            .await
            .map_err(NodeError::Control)?,
    };
    let addr = crate::ids::NodeUrl::peer(url)
        .map_err(|e| NodeError::Control(format!("this node's URL `{url}`: {e}")))?
        .authority();
    let control = Control::start(env, disk, settings, fresh_id, &addr, fabric)
        .await
        .map_err(NodeError::Control)?;
    Ok(Arc::new(control))
}

/// The node's parts that the planes, the built-ins and the admin surfaces share: its
/// counters, its functions (the user's, built-ins come next), pub/sub, the failure
/// detector and where forwarded steps go.
// Each argument is a part made earlier in `start` in its own fallible step; bundling them
// into a struct only to call this once would hide which step made which.
#[allow(clippy::too_many_arguments)]
fn parts(
    env: &Env,
    settings: &Settings,
    url: &str,
    control: Arc<Control>,
    fabric: Fabric,
    registry: Registry,
    registered: &watch::Receiver<bool>,
    dns: Option<(crate::dns::answer::Zones, crate::dns::service::DnsLimits)>,
    queue_store: crate::queue::store::Store,
    cache: Option<Arc<crate::cache::CacheService>>,
) -> Arc<NodeView> {
    let stats = Arc::new(crate::data::stats::Stats::new(env.clock.clone()));
    let detector = SharedDetector::default();
    let mut resources = settings.resources.clone();
    resources.extend(registry.resources());
    let functions = Arc::new(Functions::new(
        registry,
        settings.resources.clone(),
        control.clone(),
        registered.clone(),
    ));
    let peers = Arc::new(crate::data::forward::Peers {
        control: control.clone(),
        fabric: fabric.clone(),
        detector: detector.clone(),
        env: env.clone(),
        sent: Arc::default(),
        stats: stats.clone(),
    });
    let access_audit = Arc::new(crate::control::policy::AuditLog::default());
    let dns = dns.map(|(zones, limits)| {
        Arc::new(crate::dns::service::Gateway::new(
            zones,
            limits,
            control.clone(),
            detector.clone(),
            env.clone(),
            access_audit.clone(),
            settings.cluster_id.clone(),
        ))
    });
    let queues = Arc::new(crate::queue::service::Queues::new(
        env.clone(),
        control.clone(),
        fabric.clone(),
        detector.clone(),
        queue_store,
        crate::queue::service::QueueLimits::from_settings(settings),
        crate::queue::groups::Groups::new(
            env.clone(),
            control.clone(),
            fabric.clone(),
            detector.clone(),
            settings,
        ),
    ));
    let pubsub = crate::pubsub::exchange::Exchange::new(
        crate::pubsub::backlog::Retention::from_settings(settings),
        env.clock.wall_ms().saturating_mul(1024),
    );
    Arc::new(NodeView {
        node_id: crate::ids::node_id(&settings.name, control.id),
        name: settings.name.clone(),
        cluster_id: settings.cluster_id.clone(),
        url: url.to_owned(),
        resources,
        env: env.clone(),
        stats,
        control,
        fabric,
        detector,
        clients: Arc::new(crate::data::client_budget::ClientBudget::new(
            settings.max_client_bytes,
            settings.max_connection_bytes,
        )),
        functions,
        peers,
        introspection_role: settings
            .introspection_role
            .clone()
            .filter(|_| settings.auth_required),
        pubsub: Arc::new(pubsub),
        remote_interest: Arc::default(),
        dns,
        queues,
        queue_role: settings
            .queue_role
            .clone()
            .filter(|_| settings.auth_required),
        cache,
        cache_role: settings
            .cache_role
            .clone()
            .filter(|_| settings.auth_required),
        access_audit,
        policy_audit: Arc::default(),
    })
}

/// The node's cache, unless `enable_default_cache` is off: L2 in `cache.sqlite` in the data
/// directory in `sqlite` mode, else L1 alone.
async fn cache(
    env: &Env,
    settings: &Settings,
    id: crate::control::NodeId,
) -> Result<Option<Arc<crate::cache::CacheService>>, NodeError> {
    use crate::cache::{CacheLimits, CacheService};
    use crate::config::PersistenceMode;
    if !settings.enable_default_cache {
        return Ok(None);
    }
    let limits = CacheLimits::from_settings(settings);
    let prefix = format!("{:x}", id.0);
    let seed = env.rng.next_u64();
    let service = match settings.persistence.mode {
        PersistenceMode::Sqlite => {
            let path = settings.persistence.data_dir.join("cache.sqlite");
            CacheService::open(&path, limits, env.clock.clone(), prefix, seed).await?
        }
        PersistenceMode::Memory => CacheService::in_memory(limits, env.clock.clone(), prefix, seed),
    };
    Ok(Some(Arc::new(service)))
}

/// Where this node's queues keep their messages: `queues.sqlite` in the data directory in
/// `sqlite` mode (durable before the ack), else memory (said once at start).
fn queue_store(
    settings: &Settings,
    disk: Option<crate::queue::store::MemoryDisk>,
) -> Result<crate::queue::store::Store, NodeError> {
    use crate::config::PersistenceMode;
    use crate::queue::store::Store;
    if let Some(disk) = disk {
        return Ok(Store::memory(disk));
    }
    match settings.persistence.mode {
        PersistenceMode::Sqlite => {
            let path = settings.persistence.data_dir.join("queues.sqlite");
            Ok(Store::sqlite(&path)?)
        }
        PersistenceMode::Memory => {
            tracing::info!(
                "queues keep their messages in memory (persistence mode memory): a restart \
                 loses them; --persistence-mode sqlite keeps them on disk, fsynced before \
                 each send is acknowledged"
            );
            Ok(Store::memory(Default::default()))
        }
    }
}

/// The DNS gateway's zones and limits, checked before anything starts; `None` when it is
/// not served.
fn dns_settings(
    settings: &Settings,
) -> Result<Option<(crate::dns::answer::Zones, crate::dns::service::DnsLimits)>, NodeError> {
    if !settings.dns_enabled() {
        return Ok(None);
    }
    let zones = crate::dns::service::zones_from_settings(settings)?;
    Ok(Some((
        zones,
        crate::dns::service::DnsLimits::from_settings(settings),
    )))
}

/// The DNS gateway's UDP and TCP tasks, until the node stops.
fn serve_dns(
    view: &Arc<NodeView>,
    sockets: Option<(Box<dyn crate::env::Datagram>, Box<dyn Listener>)>,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), NodeError> {
    let (Some(gateway), Some((udp, tcp))) = (&view.dns, sockets) else {
        return Ok(());
    };
    let addrs = |e: std::io::Error| NodeError::Bind {
        addr: "dns".into(),
        source: e,
    };
    let bound = (
        udp.local_addr().map_err(addrs)?,
        tcp.local_addr().map_err(addrs)?,
    );
    *gateway.addrs.lock() = Some(bound);
    tokio::spawn(gateway.clone().serve_udp(udp, shutdown.clone()));
    tokio::spawn(gateway.clone().serve_tcp(tcp, shutdown.clone()));
    tracing::info!(udp = %bound.0, tcp = %bound.1, "DNS gateway listening");
    Ok(())
}

/// The built-in functions, each group by one call.
fn install_builtins(view: &Arc<NodeView>) {
    let mut fs = crate::builtins::introspection::functions(view);
    fs.extend(crate::builtins::discovery::functions(view));
    fs.extend(crate::builtins::dns::functions(view));
    fs.extend(crate::builtins::summary::functions(view));
    fs.extend(crate::builtins::policy::functions(view));
    fs.extend(crate::builtins::queue::functions(view));
    view.functions.install_builtins(fs);
}

/// What a node speaking the next build counts of the other (tests of rolling upgrades).
#[cfg(feature = "next-build")]
fn upgrade_stats(next_protocol: bool) -> Option<Arc<crate::data::next::UpgradeStats>> {
    next_protocol.then(Arc::default)
}

#[cfg(not(feature = "next-build"))]
fn upgrade_stats(_: bool) -> Option<Arc<crate::data::next::UpgradeStats>> {
    None
}

/// Serves the data plane to peers from here on: forwarded steps run against this node's
/// functions; heartbeats, publishes and interest go to their owners. The fabric holds the
/// handler weakly; the node keeps it alive (`Shared`).
fn serve_data_plane(
    view: &Arc<NodeView>,
    limits: crate::rpc::ExecLimits,
    auth_required: bool,
    upgrade: Option<Arc<crate::data::next::UpgradeStats>>,
) -> Arc<DataPlane> {
    let steps = view.clone();
    let run: Box<dyn Fn(crate::rpc::Step) -> crate::registry::BoxFuture<_> + Send + Sync> =
        Box::new(move |step| {
            let view = steps.clone();
            Box::pin(async move {
                let registry = view.functions.current();
                let clock = view.env.clock.as_ref();
                let step = crate::rpc::run_step(&registry, limits, auth_required, clock, step);
                view.stats.serve_step(clock, step).await
            })
        });
    let loads = view.clone();
    let data_plane = Arc::new(DataPlane {
        load: Box::new(move || loads.stats.load(loads.env.clock.now())),
        run,
        next: upgrade,
        pubsub: Arc::new(crate::pubsub::peers::FromPeers {
            exchange: view.pubsub.clone(),
            interest: view.remote_interest.clone(),
            clock: view.env.clock.clone(),
        }),
        queues: Arc::new(crate::queue::service::FromPeers(view.queues.clone())),
    });
    let handler: Arc<dyn PlaneHandler> = data_plane.clone();
    view.fabric.serve(Plane::Data, Arc::downgrade(&handler));
    data_plane
}

/// The admin HTTP server and its hourly sampler, until the node has stopped.
fn serve_admin(
    shared: &Shared,
    listener: Box<dyn Listener>,
    url: &str,
    shutdown: &watch::Receiver<bool>,
    stopped: watch::Receiver<bool>,
) {
    let settings = &shared.settings;
    let admin = crate::admin::status::Admin::new(
        shared.view.clone(),
        metrics(&shared.view),
        shutdown.clone(),
        shared.tokens.clone(),
        settings.introspection_role.clone(),
        settings.monitoring_enable_cors,
        settings.persistence.clone(),
        stopped.clone(),
    );
    tokio::spawn(crate::admin::status::sample_hourly(admin.clone()));
    tokio::spawn(crate::admin::server::serve(
        listener,
        shared.tls.clone(),
        crate::admin::routes::router(admin),
        stopped,
    ));
    tracing::info!(%url, "admin HTTP server listening");
}

/// What `/metrics` reports: each room's collector, read at scrape time.
fn metrics(view: &NodeView) -> prometheus_client::registry::Registry {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(crate::data::metrics::DataMetrics {
        stats: view.stats.clone(),
        fabric: view.fabric.clone(),
        clients: view.clients.clone(),
        functions: view.functions.clone(),
        peers: view.peers.clone(),
    }));
    registry.register_collector(Box::new(crate::pubsub::metrics::PubSubMetrics(
        view.pubsub.clone(),
    )));
    registry.register_collector(Box::new(crate::control::metrics::ControlMetrics(
        view.control.clone(),
    )));
    registry.register_collector(Box::new(crate::queue::metrics::QueueMetrics(
        view.queues.clone(),
    )));
    if let Some(cache) = &view.cache {
        registry.register_collector(Box::new(crate::cache::metrics::CacheMetrics(cache.clone())));
    }
    if let Some(gateway) = &view.dns {
        registry.register_collector(Box::new(crate::dns::metrics::DnsMetrics(
            gateway.stats.clone(),
        )));
    }
    registry
}

/// What this node puts into the catalog once it has joined: itself and its functions.
fn registration(view: &NodeView, settings: &Settings) -> Registration {
    Registration {
        member: replica::member(
            view.control.id,
            &settings.name,
            &settings.cluster_id,
            &view.url,
            &settings.resources,
        ),
        functions: view
            .functions
            .current()
            .specs()
            .map(crate::data::functions::entry)
            .collect(),
        // A peer that does not parse is dialled as written: the join says why it failed.
        peers: settings
            .peers
            .iter()
            .map(|p| crate::ids::NodeUrl::peer(p).map_or_else(|_| p.clone(), |u| u.authority()))
            .collect(),
    }
}

/// The node's background tasks: the membership supervisor, pub/sub's publishing and
/// advertising, and heartbeats.
fn spawn_tasks(
    shared: &Shared,
    publish_jobs: PublishJobs,
    upgrade: Option<Arc<crate::data::next::UpgradeStats>>,
    registered: watch::Receiver<bool>,
    shutdown: &watch::Receiver<bool>,
) {
    let view = &shared.view;
    tokio::spawn(crate::control::raft::supervise(
        view.control.peer_service(),
        view.control.catalog.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(crate::pubsub::service::publishing(
        shared.fanout.clone(),
        publish_jobs,
        shutdown.clone(),
    ));
    tokio::spawn(crate::pubsub::service::advertise(
        view.control.clone(),
        view.fabric.clone(),
        view.pubsub.clone(),
        view.remote_interest.clone(),
        view.env.clock.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(crate::fabric::heartbeat::run(
        heartbeats(view, upgrade),
        shutdown.clone(),
    ));
    tokio::spawn(crate::queue::service::run(
        view.queues.clone(),
        registered,
        shutdown.clone(),
    ));
    if let Some(cache) = &view.cache {
        tokio::spawn(crate::cache::service::sweeping(
            cache.clone(),
            shutdown.clone(),
        ));
    }
}

/// The heartbeat loop of this node: to every other member of its catalog, carrying its
/// load, as the data plane says it.
fn heartbeats(
    view: &Arc<NodeView>,
    next: Option<Arc<crate::data::next::UpgradeStats>>,
) -> crate::fabric::heartbeat::Heartbeats {
    let (members, loads) = (view.clone(), view.clone());
    crate::fabric::heartbeat::Heartbeats {
        env: view.env.clone(),
        fabric: view.fabric.clone(),
        members: Box::new(move || members.control.peer_addrs()),
        load: Box::new(move || loads.stats.load(loads.env.clock.now())),
        beat: Arc::new(DataBeat { next }),
        detector: view.detector.clone(),
    }
}
