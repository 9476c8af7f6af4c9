//! The gateway at the IO edge: one UDP socket and one TCP listener on `Env`, answering
//! from this node's catalog replica (stale reads, as Consul's `allow_stale`: it answers
//! while no leader is elected), with the answer cache in front and rate limiting on UDP.
//!
//! UDP: one task reads, answers and sends, with buffers reused across packets, so that a
//! cached answer costs no allocation. TCP (RFC 7766): at most `dns_tcp_max_connections`,
//! each closed after `dns_tcp_idle_timeout_ms` of silence, several queries per connection
//! answered in order (pipelining).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::answer::{Facts, Zones, answer};
use super::cache::{AnswerCache, KEY_MAX, scan};
use super::metrics::DnsStats;
use super::rrl::{Kind, RateLimiter, Verdict, labels_hash};
use super::wire::{self, Fit, MAX_QUERY, Parsed, Transport};
use crate::config::Settings;
use crate::control::catalog::NodeId;
use crate::control::policy::{AccessDenial, AuditLog};
use crate::control::replica::Control;
use crate::env::{BoxStream, Datagram, Env, Listener};
use crate::fabric::heartbeat::SharedDetector;
use crate::fabric::liveness::Liveness;

/// Shuffled copies of an answer with several records kept in the cache, served in turn.
const VARIANTS: u64 = 4;
/// The pause after a failed receive or accept, so that a lasting error does not spin.
const ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// The gateway's limits, from the `dns_*` settings.
#[derive(Debug, Clone)]
pub struct DnsLimits {
    pub tcp_max_connections: usize,
    pub tcp_idle: Duration,
    pub rrl_per_second: u32,
    pub rrl_slip: u32,
}

impl DnsLimits {
    pub fn from_settings(s: &Settings) -> DnsLimits {
        DnsLimits {
            tcp_max_connections: s.dns_tcp_max_connections,
            tcp_idle: Duration::from_millis(s.dns_tcp_idle_timeout_ms),
            rrl_per_second: u32::try_from(s.dns_rrl_responses_per_second).unwrap_or(u32::MAX),
            rrl_slip: u32::try_from(s.dns_rrl_slip).unwrap_or(u32::MAX),
        }
    }
}

/// Zones from the settings (checked at start: a bad zone fails it).
pub fn zones_from_settings(s: &Settings) -> Result<Zones, super::answer::ZoneError> {
    let ttl = |t: u64| u32::try_from(t).unwrap_or(u32::MAX);
    Zones::new(
        &s.dns_zones,
        ttl(s.dns_min_ttl_seconds),
        ttl(s.dns_max_ttl_seconds),
        s.dns_allow_external_names,
    )
}

/// The gateway: what every socket task shares.
pub struct Gateway {
    pub zones: Zones,
    control: Arc<Control>,
    detector: SharedDetector,
    env: Env,
    cache: Mutex<AnswerCache>,
    rrl: Mutex<RateLimiter>,
    pub limits: DnsLimits,
    pub stats: Arc<DnsStats>,
    /// Where it listens, once bound: (UDP, TCP).
    pub addrs: Mutex<Option<(SocketAddr, SocketAddr)>>,
    /// Who the asker is to the namespace policy: this node's cluster.
    viewer: String,
    /// Where names the policy hides are recorded (the node's access audit).
    audit: Arc<AuditLog<AccessDenial>>,
}

/// What one query came to, for counting and rate limiting.
struct Outcome {
    rcode: ResponseCode,
    kind: Kind,
    fit: Fit,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("addrs", &*self.addrs.lock())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// TCP connections open now.
    pub fn tcp_connections(&self) -> usize {
        self.stats.tcp_open.load(Ordering::Relaxed)
    }

    pub(crate) fn new(
        zones: Zones,
        limits: DnsLimits,
        control: Arc<Control>,
        detector: SharedDetector,
        env: Env,
        audit: Arc<AuditLog<AccessDenial>>,
        viewer: String,
    ) -> Gateway {
        Gateway {
            viewer,
            audit,
            zones,
            control,
            detector,
            rrl: Mutex::new(RateLimiter::new(limits.rrl_per_second, limits.rrl_slip)),
            cache: Mutex::default(),
            stats: Arc::new(DnsStats::default()),
            limits,
            env,
            addrs: Mutex::new(None),
        }
    }

    /// The catalog's generation: its last applied log index.
    fn generation(&self) -> u64 {
        self.control
            .catalog
            .read(|s| s.last_applied.map_or(0, |l| l.index))
    }

    /// The reply to `packet` in `out` (empty: send nothing).
    fn handle(&self, packet: &[u8], transport: Transport, out: &mut Vec<u8>) -> Option<Outcome> {
        let mut key = [0u8; KEY_MAX];
        let scanned = scan(packet, transport, &mut key);
        let now_ms = self.env.clock.wall_ms();
        let generation = self.generation();
        if let Some(s) = scanned
            && let Some((kind, fit)) = super::cache::answer_cached(
                &mut self.cache.lock(),
                &key[..s.key_len],
                s,
                packet,
                generation,
                now_ms,
                out,
            )
        {
            self.stats.cache_hit();
            return Some(Outcome {
                rcode: ResponseCode::NoError,
                kind,
                fit,
            });
        }
        self.stats.cache_miss();
        let q = match wire::parse(packet, transport) {
            Parsed::Drop => return None,
            Parsed::Reply(bytes, rcode) => {
                out.clear();
                out.extend_from_slice(&bytes);
                return Some(Outcome {
                    rcode,
                    kind: Kind::Error,
                    fit: Fit::Whole,
                });
            }
            Parsed::Ask(q) => q,
        };
        let variants = self.resolve(&q, transport, generation);
        let (bytes, rcode, fit, zone) = variants[0].clone();
        if let (Some(s), ResponseCode::NoError) = (scanned, rcode) {
            let kept = variants.into_iter().map(|v| v.0).collect();
            self.cache
                .lock()
                .keep(&key[..s.key_len], kept, generation, now_ms);
        }
        out.clear();
        out.extend_from_slice(&bytes);
        let kind = match rcode {
            ResponseCode::NoError => {
                Kind::Answer(labels_hash(q.query.name()), u16::from(q.query.query_type()))
            }
            ResponseCode::NXDomain => Kind::NxDomain(zone),
            _ => Kind::Error,
        };
        Some(Outcome { rcode, kind, fit })
    }

    /// Replies to `q` (several shuffles when the answer has records to shuffle): bytes,
    /// rcode, how it fit, and the zone (for counting NXDOMAINs).
    fn resolve(
        &self,
        q: &wire::Question,
        transport: Transport,
        generation: u64,
    ) -> Vec<(Vec<u8>, ResponseCode, Fit, usize)> {
        let down = self.down();
        let seed = self.env.rng.next_u64();
        let qname = q.query.name();
        let qtype = q.query.query_type();
        self.control.catalog.read(|state| {
            let facts = Facts {
                catalog: &state.catalog,
                down: &down,
                serial: generation as u32,
                viewer: &self.viewer,
            };
            let first = answer(&self.zones, &facts, qname, qtype, seed);
            if let Some(namespace) = &first.denied {
                self.audit.record(AccessDenial {
                    event: "dns_query".into(),
                    timestamp: self.env.wall_seconds(),
                    viewer_cluster_id: self.viewer.clone(),
                    viewer_tenant_id: None,
                    namespace: namespace.clone(),
                    reason: state
                        .catalog
                        .policy()
                        .decide(namespace, &self.viewer, None)
                        .reason,
                });
            }
            let zone = self.zone_of(qname);
            let several = first.answers.len() > 1;
            let mut out = vec![];
            let (bytes, fit) = wire::reply(q, first.clone(), transport);
            out.push((bytes, first.rcode, fit, zone));
            if several && first.rcode == ResponseCode::NoError {
                for i in 1..VARIANTS {
                    let a = answer(&self.zones, &facts, qname, qtype, seed.wrapping_add(i));
                    let (bytes, fit) = wire::reply(q, a, transport);
                    out.push((bytes, first.rcode, fit, zone));
                }
            }
            out
        })
    }

    fn zone_of(&self, name: &hickory_proto::rr::Name) -> usize {
        let lower = name.to_lowercase();
        let labels: Vec<&[u8]> = lower.iter().collect();
        super::names::classify(&labels, &self.zones.labels).map_or(0, |z| z.zone)
    }

    /// Members the failure detector holds down now.
    fn down(&self) -> BTreeSet<NodeId> {
        let me = self.control.id;
        let members: Vec<NodeId> = self
            .control
            .catalog
            .read(|s| s.catalog.members().map(|m| m.id).collect());
        let now = self.env.clock.now();
        let detector = self.detector.lock();
        members
            .into_iter()
            .filter(|id| *id != me && detector.status(*id, now) == Liveness::Down)
            .collect()
    }

    /// Answers UDP queries until the node stops.
    pub async fn serve_udp(
        self: Arc<Self>,
        socket: Box<dyn Datagram>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        // One byte over the largest query: a datagram that fills it was longer.
        let mut buf = vec![0u8; MAX_QUERY + 1];
        let mut out = Vec::with_capacity(4096);
        loop {
            let (n, from) = tokio::select! {
                biased;
                _ = crate::shutdown::stopping(&mut shutdown) => return,
                r = socket.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // ICMP errors from earlier sends surface here on some systems; a
                        // lasting error must not spin a core, so back off a little.
                        self.stats.error(&e.to_string());
                        tokio::time::sleep(ERROR_BACKOFF).await;
                        continue;
                    }
                },
            };
            let started = self.env.clock.now();
            let Some(outcome) = self.handle(&buf[..n], Transport::Udp, &mut out) else {
                continue;
            };
            let verdict = {
                let now_ms = self.env.clock.wall_ms();
                self.rrl.lock().check(from.ip(), outcome.kind, now_ms)
            };
            match verdict {
                Verdict::Send => {}
                Verdict::Slip => {
                    wire::truncate_in_place(&mut out);
                    self.stats.slipped();
                    if out.is_empty() {
                        continue; // nothing left worth a datagram
                    }
                }
                Verdict::Drop => {
                    self.stats.dropped();
                    continue;
                }
            }
            if let Err(e) = socket.send_to(&out, from).await {
                self.stats.error(&e.to_string());
            }
            self.stats.answered(
                Transport::Udp,
                outcome.rcode,
                outcome.fit,
                self.env.clock.now() - started,
                self.env.clock.wall_ms(),
            );
            if out.capacity() > 64 * 1024 {
                out = Vec::with_capacity(4096);
            }
        }
    }

    /// Accepts TCP connections until the node stops.
    pub async fn serve_tcp(
        self: Arc<Self>,
        mut listener: Box<dyn Listener>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let stream = tokio::select! {
                biased;
                _ = crate::shutdown::stopping(&mut shutdown) => return,
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // Typically out of file descriptors: back off instead of spinning.
                        self.stats.error(&e.to_string());
                        tokio::time::sleep(ERROR_BACKOFF).await;
                        continue;
                    }
                },
            };
            if self.stats.tcp_open.fetch_add(1, Ordering::AcqRel) >= self.limits.tcp_max_connections
            {
                self.stats.tcp_open.fetch_sub(1, Ordering::AcqRel);
                self.stats.tcp_refused();
                continue; // dropped: closed at once
            }
            let gateway = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                gateway.serve_connection(stream, shutdown).await;
                gateway.stats.tcp_open.fetch_sub(1, Ordering::AcqRel);
            });
        }
    }

    /// One TCP connection: length-prefixed queries answered in order until the client
    /// closes, goes idle, sends something that is not a query, or the node stops.
    async fn serve_connection(&self, mut stream: BoxStream, mut shutdown: watch::Receiver<bool>) {
        let mut buf = vec![0u8; MAX_QUERY];
        let mut out = Vec::with_capacity(4096);
        loop {
            let mut len = [0u8; 2];
            let read = async {
                stream.read_exact(&mut len).await?;
                let n = usize::from(u16::from_be_bytes(len));
                if n > MAX_QUERY {
                    return Err(std::io::Error::other("query too long"));
                }
                stream.read_exact(&mut buf[..n]).await?;
                Ok::<usize, std::io::Error>(n)
            };
            let n = tokio::select! {
                biased;
                _ = crate::shutdown::stopping(&mut shutdown) => return,
                r = tokio::time::timeout(self.limits.tcp_idle, read) => match r {
                    Ok(Ok(n)) => n,
                    _ => return,
                },
            };
            let started = self.env.clock.now();
            let Some(outcome) = self.handle(&buf[..n], Transport::Tcp, &mut out) else {
                return;
            };
            let Ok(len) = u16::try_from(out.len()) else {
                return;
            };
            let mut frame = Vec::with_capacity(out.len() + 2);
            frame.extend_from_slice(&len.to_be_bytes());
            frame.extend_from_slice(&out);
            let write = tokio::time::timeout(self.limits.tcp_idle, stream.write_all(&frame));
            if !matches!(write.await, Ok(Ok(()))) {
                return;
            }
            self.stats.answered(
                Transport::Tcp,
                outcome.rcode,
                outcome.fit,
                self.env.clock.now() - started,
                self.env.clock.wall_ms(),
            );
        }
    }
}

/// Binds the gateway's UDP socket and TCP listener: on `dns_port` both; with port 0, a
/// free UDP port and the same number for TCP when it is free (a few tries), else any.
pub async fn bind(
    env: &Env,
    udp_addr: &str,
    tcp_addr: Option<&str>,
) -> std::io::Result<(Box<dyn Datagram>, Box<dyn Listener>)> {
    let mut last = None;
    for _ in 0..8 {
        let udp = env.net.bind_udp(udp_addr).await?;
        let local = udp.local_addr()?;
        let tcp_at = match tcp_addr {
            Some(a) => a.to_owned(),
            None => SocketAddr::new(local.ip(), local.port()).to_string(),
        };
        match env.net.listen(&tcp_at).await {
            Ok(l) => return Ok((udp, l)),
            Err(e) if tcp_addr.is_none() && udp_addr.ends_with(":0") => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port for UDP and TCP")))
}
