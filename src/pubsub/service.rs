//! Pub/sub's service: publishes across the cluster, on the data plane (never Raft). Each
//! node tells every other member what its clients subscribe to ([`advertise`], on change
//! and every [`REFRESH`]), and forwards a publish only to the peers whose interest matches
//! it.
//!
//! A publish travels one hop, from the node it was published on to each interested peer,
//! which hands it to its own subscribers and forwards nothing: so a subscription hears a
//! message at most once. Each peer has one queue and one sender, which sends in order, in
//! batches: so a publisher's messages keep their order for every subscriber. A queue holds
//! at most [`QUEUED`] messages; a publish finding it full is dropped for that peer (and
//! counted): a slow or unreachable peer never holds up a publisher.
//!
//! A subscription that asks for a backlog gets it from every member ([`Fanout::backlog`]):
//! each node answers what it kept of its own publishes, cut at its latest number, after
//! taking the asking node's interest, so that what it publishes past the cut goes there
//! live (`pubsub::backlog`, `pubsub::exchange`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::control::NodeId;
use crate::control::replica::Control;
use crate::data::client::DataClient;
use crate::protocol::pubsub::{Notifier, PeerMessage, PubSubMessage, TopicPattern};
use crate::pubsub::exchange::Exchange;
use crate::pubsub::interest::{MAX_INTEREST_PATTERNS, RemoteInterest};

/// Messages waiting for one peer, and the most sent in one request (one request is in
/// flight per peer, so a batch is what one round trip carries: 256 capped two nodes at
/// about half of what one node delivers).
const QUEUED: usize = 4096;
const BATCH: usize = 1024;
/// How long one batch or summary may take to reach a peer.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the subscriptions are checked for changes, and sent regardless.
const CHECK_EVERY: Duration = Duration::from_millis(100);
const REFRESH: Duration = Duration::from_secs(2);
/// Bytes of publishes taken from clients and not yet handed out (`Fanout::enqueue`):
/// beyond them, client connections stop reading (`Fanout::has_room`), so the queue holds at
/// most this and one frame per connection.
const QUEUE_BYTES: usize = 16 << 20;

/// A client's publish waiting for the publishing task, and its bytes of the queue; `done`
/// is told when it has been handed out (its publisher subscribes, and hears its own
/// notifications before its ack).
struct Job {
    message: PubSubMessage,
    bytes: usize,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

/// How long the members have to answer a backlog question; a member that has not by then
/// adds nothing to it (its live messages still come).
const BACKLOG_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) struct Fanout {
    remote: Arc<RemoteInterest>,
    control: Arc<Control>,
    /// The node's peer links.
    fabric: crate::fabric::Fabric,
    queues: Mutex<BTreeMap<NodeId, mpsc::Sender<PeerMessage>>>,
    /// This node's subscriptions and backlog; counts what was forwarded and dropped.
    exchange: Arc<Exchange>,
    clock: Arc<dyn crate::env::Clock>,
    /// Clients' publishes on their way to [`publishing`], in the order taken, and their
    /// bytes. Unbounded in count, bounded in bytes by `queued`: past [`QUEUE_BYTES`] client
    /// connections stop reading (`has_room`), so at most one frame per connection more.
    /// (A bounded channel would make a publish wait, which a connection's synchronous
    /// frame handling cannot do without losing its order.)
    jobs: mpsc::UnboundedSender<Job>,
    queued: std::sync::atomic::AtomicUsize,
}

impl Fanout {
    pub(crate) fn new(
        control: Arc<Control>,
        fabric: crate::fabric::Fabric,
        remote: Arc<RemoteInterest>,
        exchange: Arc<Exchange>,
        clock: Arc<dyn crate::env::Clock>,
    ) -> (Fanout, PublishJobs) {
        let (jobs, rx) = mpsc::unbounded_channel();
        let fanout = Fanout {
            remote,
            control,
            fabric,
            queues: Mutex::default(),
            exchange,
            clock,
            jobs,
            queued: std::sync::atomic::AtomicUsize::new(0),
        };
        (fanout, PublishJobs(rx))
    }

    /// Takes a client's publish for the publishing task (off the client's connection, whose
    /// task then only reads and acknowledges: the two run side by side), in the order
    /// taken. With `wait`, the answer is told once it has been handed out. `Err`: not
    /// taken (the node is stopping).
    pub(crate) fn enqueue(
        &self,
        message: PubSubMessage,
        wait: bool,
    ) -> Result<Option<tokio::sync::oneshot::Receiver<()>>, ()> {
        let bytes = crate::pubsub::backlog::cost(&message);
        let (done, handed) = if wait {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.queued.fetch_add(bytes, Ordering::Relaxed);
        let job = Job {
            message,
            bytes,
            done,
        };
        if self.jobs.send(job).is_err() {
            self.queued.fetch_sub(bytes, Ordering::Relaxed);
            return Err(());
        }
        Ok(handed)
    }

    /// Nothing is queued for the publishing task, nor being handed out by it.
    pub(crate) fn idle(&self) -> bool {
        self.queued.load(Ordering::Relaxed) == 0
    }

    /// Whether client connections may read more (the publish queue is within its bytes).
    pub(crate) fn has_room(&self) -> bool {
        self.queued.load(Ordering::Relaxed) < QUEUE_BYTES
    }

    /// Publishes `message` from a client of this node: to its subscribers here, and to
    /// every interested peer; kept for backlogs. How many subscriptions here got it. On
    /// the caller's task: the publishing task's, or a connection's when [`Fanout::idle`]
    /// (nothing of its own queued ahead of it).
    pub(crate) fn publish(&self, message: PubSubMessage) -> usize {
        let message = Arc::new(message);
        let now = self.clock.wall_ms();
        self.exchange
            .publish_here(&message, self.control.id.0, now, |seq| {
                self.forward(&message, seq)
            })
    }

    fn client(&self, peer: NodeId) -> Option<DataClient> {
        let addr = self.control.member_addr(peer)?;
        Some(DataClient::new(self.fabric.link_to(peer.0, &addr)))
    }

    /// Queues `message` (this node's number `seq`) for every peer whose clients subscribe
    /// to its topic.
    fn forward(&self, message: &PubSubMessage, seq: u64) {
        let peers = self.remote.peers_for(&message.topic);
        if peers.is_empty() {
            return;
        }
        let mut queues = self.queues.lock();
        for (peer, version) in peers {
            // The engine keeps bare ids; the catalog's are `NodeId`s.
            let peer = NodeId(peer);
            if peer == self.control.id {
                continue;
            }
            let tx = match queues.get(&peer) {
                Some(tx) if !tx.is_closed() => tx.clone(),
                _ => {
                    let Some(client) = self.client(peer) else {
                        continue;
                    };
                    let (tx, rx) = mpsc::channel(QUEUED);
                    tokio::spawn(send_to(client, rx));
                    queues.insert(peer, tx.clone());
                    tx
                }
            };
            let m = PeerMessage::of(message, self.control.id.0, seq).known(version);
            let counter = match tx.try_send(m) {
                Ok(()) => &self.exchange.forwarded,
                Err(_) => &self.exchange.forward_dropped,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Fanout {
    /// Fetches the backlog of subscription `id` of connection `conn` (pending in the
    /// exchange under `token`): what every member kept for `patterns` in the last
    /// `from_ms_ago` ms, at most `max_bytes`, merged; then hands it to the exchange, which
    /// delivers it before the live messages held back meanwhile.
    pub(crate) async fn backlog(
        self: Arc<Self>,
        conn: u64,
        id: String,
        token: u64,
        patterns: Vec<TopicPattern>,
        from_ms_ago: u64,
        max_bytes: usize,
    ) {
        use crate::pubsub::backlog::{Answer, merge};
        // The interest as of now (this subscription included) goes with each question.
        let version = self.exchange.version();
        let mut interest = self.exchange.interest();
        if interest.len() > MAX_INTEREST_PATTERNS {
            interest = vec![("#".to_owned(), false)];
        }
        let wanted: Vec<(String, bool)> = patterns
            .iter()
            .map(|p| (p.pattern.clone(), p.exact_match))
            .collect();
        let fabric = &self.fabric;
        let me = self.control.id.0;
        let asks = self.control.peer_addrs().into_iter().map(|(peer, addr)| {
            let peer = peer.0;
            let client = DataClient::new(fabric.link_to(peer, &addr));
            let (interest, wanted) = (interest.clone(), wanted.clone());
            async move {
                let answer = client
                    .backlog(
                        me,
                        version,
                        interest,
                        wanted,
                        from_ms_ago,
                        max_bytes as u64,
                        BACKLOG_TIMEOUT,
                    )
                    .await;
                (peer, answer)
            }
        });
        let mut answers = Vec::new();
        let mut cuts = BTreeMap::new();
        for (peer, answer) in futures_util::future::join_all(asks).await {
            let (kept, cut) = match answer {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(peer, error = %e, "a member added nothing to a backlog");
                    continue;
                }
            };
            let kept = kept
                .into_iter()
                .filter_map(|(at, m)| {
                    let seq = m.seq;
                    let m = m.into_message().ok().filter(|m| m.check().is_ok())?;
                    Some((at, seq, Arc::new(m)))
                })
                .collect();
            cuts.insert(peer, cut);
            answers.push(Answer { origin: peer, kept });
        }
        // This node's own last: the subscription has heard its live messages since it
        // was made, so the cut here is the latest.
        let now = self.clock.wall_ms();
        let (kept, cut) =
            self.exchange
                .backlog_since(&patterns, now.saturating_sub(from_ms_ago), now, max_bytes);
        cuts.insert(me, cut);
        answers.push(Answer {
            origin: me,
            kept: kept
                .into_iter()
                .map(|k| (k.at_ms, k.seq, k.message))
                .collect(),
        });
        let id_json = serde_json::to_string(&id).unwrap_or_default();
        let backlog = merge(answers, max_bytes)
            .into_iter()
            .map(|(origin, seq, m)| (origin, seq, Notifier::new(&m).for_subscription(&id_json)))
            .collect();
        self.exchange
            .finish_backlog(conn, &id, token, backlog, &cuts);
    }
}

/// The receiving end of a node's publish queue, for [`publishing`].
pub(crate) struct PublishJobs(mpsc::UnboundedReceiver<Job>);

/// The publishing task: hands out clients' publishes in the order taken, until `shutdown`
/// says true, and then what was taken before it.
pub(crate) async fn publishing(
    fanout: Arc<Fanout>,
    jobs: PublishJobs,
    mut shutdown: watch::Receiver<bool>,
) {
    let PublishJobs(mut rx) = jobs;
    let hand_out = |job: Job| {
        fanout.publish(job.message);
        fanout.queued.fetch_sub(job.bytes, Ordering::Relaxed);
        if let Some(done) = job.done {
            let _ = done.send(());
        }
    };
    loop {
        tokio::select! {
            job = rx.recv() => match job {
                Some(job) => hand_out(job),
                None => return,
            },
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    while let Ok(job) = rx.try_recv() {
        hand_out(job);
    }
}

/// Sends one peer's queue, in order, in batches, until the queue is dropped.
async fn send_to(peer: DataClient, mut rx: mpsc::Receiver<PeerMessage>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        if let Err(e) = peer.publish(batch, SEND_TIMEOUT).await {
            tracing::debug!(peer = peer.addr(), error = %e, "publishes to a peer were lost");
        }
    }
}

/// Tells every other member what this node's clients subscribe to: when it changes, and
/// every [`REFRESH`] (a peer that missed one, or joined since, learns it then). Runs until
/// `shutdown` says true.
pub(crate) async fn advertise(
    control: Arc<Control>,
    fabric: crate::fabric::Fabric,
    exchange: Arc<Exchange>,
    remote: Arc<RemoteInterest>,
    clock: Arc<dyn crate::env::Clock>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut sent: Option<u64> = None;
    let mut last = clock.now();
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            () = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let version = exchange.version();
        let now = clock.now();
        if sent == Some(version) && now.saturating_duration_since(last) < REFRESH {
            continue;
        }
        let members = control.peer_addrs();
        remote.retain(&members.keys().map(|id| id.0).collect::<BTreeSet<_>>());
        let mut patterns = exchange.interest();
        if patterns.len() > MAX_INTEREST_PATTERNS {
            // Too many to list: everything, and the subscribers here filter.
            patterns = vec![("#".to_owned(), false)];
        }
        let sends = members.iter().map(|(id, addr)| {
            let peer = DataClient::new(fabric.link_to(id.0, addr));
            let patterns = patterns.clone();
            let me = control.id.0;
            async move { peer.interest(me, version, patterns, SEND_TIMEOUT).await }
        });
        let results = futures_util::future::join_all(sends).await;
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            tracing::debug!(error = %r, "a peer did not take this node's subscriptions");
        }
        sent = Some(version);
        last = now;
    }
}
