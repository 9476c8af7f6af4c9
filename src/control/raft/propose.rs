//! Writes handed to Raft in groups: the catalog's, and each queue group's (generic over
//! the Raft type, [`Batching`] says how its commands make one entry).
//!
//! openraft 0.9 appends each client write as one entry and waits for that append's flush
//! before it takes the next message, so writers that reach the leader together still cost
//! one fsync each, one after another (4.1k writes/s with 64 writers where the disk allows
//! 8k fsyncs/s). The proposer keeps at most [`MAX_IN_FLIGHT`] proposal in openraft; the
//! writes that arrive meanwhile wait here and go in the next entry together, a
//! [`CatalogCommand::Batch`], and each writer is answered with its own command's result.
//! A write that finds nothing in flight goes alone and at once: one writer waits no longer
//! than before.
//!
//! Bounds: a batch holds at most [`MAX_BATCH_COMMANDS`] commands and about
//! [`MAX_BATCH_BYTES`] (so an entry stays far below a peer frame, which carries it to the
//! followers); writes wait here only up to [`MAX_QUEUED_BYTES`] in all (a writer past that
//! waits to hand its write over, which holds back its peer connection, not memory).

use std::sync::Arc;

use openraft::BasicNode;
use openraft::error::{ClientWriteError, Fatal, RaftError};
use openraft::raft::ClientWriteResponse;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::{CatalogResponse, StoreStats, TypeConfig};
use crate::control::catalog::CatalogCommand;

/// How a Raft type's commands go in one entry together, and its answer comes apart.
pub trait Batching:
    openraft::RaftTypeConfig<
        NodeId = u64,
        Node = BasicNode,
        Responder = openraft::impls::OneshotResponder<Self>,
    >
{
    /// Whether `cmd` is a batch itself (refused: batches are the proposer's own).
    fn is_batch(cmd: &Self::D) -> bool;
    /// What answers a batch that was handed in (nothing was committed).
    fn nested_refused() -> Self::R;
    /// One entry of `cmds`, applied in order, each on its own.
    fn batch(cmds: Vec<Self::D>) -> Self::D;
    /// A batch's answer as one answer per command (`n` of them), or why it is not one.
    fn split(answer: Self::R, n: usize) -> Result<Vec<Self::R>, String>;
    /// What each writer of a batch is told when its answer does not split (a bug).
    fn internal(why: String) -> Self::R;
}

impl Batching for TypeConfig {
    fn is_batch(cmd: &CatalogCommand) -> bool {
        matches!(cmd, CatalogCommand::Batch(_))
    }
    fn nested_refused() -> CatalogResponse {
        CatalogResponse::Err(crate::control::catalog::CatalogError::NestedBatch)
    }
    fn batch(cmds: Vec<CatalogCommand>) -> CatalogCommand {
        CatalogCommand::Batch(cmds)
    }
    fn split(answer: CatalogResponse, n: usize) -> Result<Vec<CatalogResponse>, String> {
        match answer {
            CatalogResponse::Batch(results) if results.len() == n => {
                Ok(results.into_iter().map(CatalogResponse::from).collect())
            }
            other => Err(format!(
                "a batch of {n} commands was answered with {other:?}"
            )),
        }
    }
    fn internal(why: String) -> CatalogResponse {
        CatalogResponse::Err(crate::control::catalog::CatalogError::Internal(why))
    }
}

/// Proposals openraft holds at once. One: measured with 64 writers on three nodes, 1 gave
/// 19.9k-20.3k writes/s, 2 gave 18.2k-18.6k, 4 17.9k, 8 16.5k (smaller entries; openraft
/// 0.9 flushes the leader's appends one after another anyway, so more in flight overlap
/// nothing but the queue).
pub const MAX_IN_FLIGHT: usize = 1;
/// How long a proposal keeps the slot (see `run`): ~100 times a healthy commit here.
pub const SLOT_HOLD: std::time::Duration = std::time::Duration::from_millis(250);
/// Most commands in one entry.
pub const MAX_BATCH_COMMANDS: usize = 512;
/// An entry stops taking commands past this many bytes (a single larger one goes alone).
pub const MAX_BATCH_BYTES: usize = 1 << 20;
/// Most bytes of writes waiting for a proposal.
pub const MAX_QUEUED_BYTES: usize = 16 << 20;

/// What a write answers: openraft's own result type, per command.
pub type WriteOutcome<C = TypeConfig> =
    Result<ClientWriteResponse<C>, RaftError<u64, ClientWriteError<u64, BasicNode>>>;

struct Pending<C: Batching> {
    cmd: C::D,
    bytes: usize,
    reply: oneshot::Sender<WriteOutcome<C>>,
    _queued: OwnedSemaphorePermit,
}

/// Hands writes to the replica's Raft, grouped. Clones share one proposer; its task ends
/// when the last clone is gone.
pub struct Proposer<C: Batching = TypeConfig> {
    /// Unbounded by count, bounded in bytes: a write enters only with its encoded size
    /// taken from `queued_bytes` (at most MAX_QUEUED_BYTES wait in all).
    pending: mpsc::UnboundedSender<Pending<C>>,
    queued_bytes: Arc<Semaphore>,
}

impl<C: Batching> Clone for Proposer<C> {
    fn clone(&self) -> Self {
        Proposer {
            pending: self.pending.clone(),
            queued_bytes: self.queued_bytes.clone(),
        }
    }
}

impl<C: Batching> Proposer<C> {
    /// Starts the proposer's task on the current runtime (the node's, or the simulated
    /// host's).
    /// `stats` counts the commands per entry. `may_batch` says whether every member reads
    /// batched entries (builds before them do not: until then, each write goes alone).
    pub fn start(
        raft: openraft::Raft<C>,
        stats: Arc<StoreStats>,
        may_batch: impl Fn() -> bool + Send + 'static,
    ) -> Proposer<C> {
        let (pending, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, rx, stats, may_batch));
        Proposer {
            pending,
            queued_bytes: Arc::new(Semaphore::new(MAX_QUEUED_BYTES)),
        }
    }

    /// Commits `cmd` (if this replica leads) and answers as `Raft::client_write` does. A
    /// `Batch` is refused, not proposed: batches are the proposer's own, bounded by it (a
    /// peer's would skip those bounds, and its answer is not one command's).
    pub async fn write(&self, cmd: C::D) -> WriteOutcome<C> {
        if C::is_batch(&cmd) {
            return Ok(ClientWriteResponse {
                // Nothing was committed: no entry to wait for.
                log_id: openraft::LogId::default(),
                data: C::nested_refused(),
                membership: None,
            });
        }
        let bytes = encoded_len(&cmd);
        let wanted = u32::try_from(bytes.min(MAX_QUEUED_BYTES)).unwrap_or(u32::MAX);
        let stopped = || RaftError::Fatal(Fatal::Stopped);
        let queued = self
            .queued_bytes
            .clone()
            .acquire_many_owned(wanted)
            .await
            .map_err(|_| stopped())?;
        let (reply, answer) = oneshot::channel();
        self.pending
            .send(Pending {
                cmd,
                bytes,
                reply,
                _queued: queued,
            })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn encoded_len<D: serde::Serialize>(cmd: &D) -> usize {
    bincode::serde::encode_to_vec(cmd, bincode::config::standard()).map_or(usize::MAX, |b| b.len())
}

async fn run<C: Batching>(
    raft: openraft::Raft<C>,
    mut rx: mpsc::UnboundedReceiver<Pending<C>>,
    stats: Arc<StoreStats>,
    may_batch: impl Fn() -> bool,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut carried: Option<Pending<C>> = None;
    loop {
        // Wait for a free slot first: while it is taken, writes gather in `rx`.
        let Ok(slot) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        let most = if may_batch() { MAX_BATCH_COMMANDS } else { 1 };
        while batch.len() < most {
            let Ok(next) = rx.try_recv() else { break };
            if bytes.saturating_add(next.bytes) > MAX_BATCH_BYTES {
                carried = Some(next);
                break;
            }
            bytes += next.bytes;
            batch.push(next);
        }
        stats.proposal_commands.record(batch.len() as u64);
        let raft = raft.clone();
        tokio::spawn(async move {
            let work = propose(&raft, batch);
            tokio::pin!(work);
            // A proposal that hangs (a leader cut off from its quorum waits until its entry
            // is committed or truncated) gives its slot up after SLOT_HOLD: the writes behind
            // it then learn at once that this node no longer leads, instead of waiting too.
            tokio::select! {
                () = &mut work => drop(slot),
                () = tokio::time::sleep(SLOT_HOLD) => {
                    drop(slot);
                    work.await;
                }
            }
        });
    }
}

/// One entry: a lone command as itself, several as a batch whose results are handed out
/// in order.
async fn propose<C: Batching>(raft: &openraft::Raft<C>, mut batch: Vec<Pending<C>>) {
    if batch.len() == 1 {
        let Some(p) = batch.pop() else { return };
        let _ = p.reply.send(raft.client_write(p.cmd).await);
        return;
    }
    let (cmds, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    let n = cmds.len();
    match raft.client_write(C::batch(cmds)).await {
        Ok(resp) => {
            let results = match C::split(resp.data, n) {
                Ok(results) => results,
                // The state machine answers a batch with one result per command; anything
                // else would be a bug, told to every writer rather than guessed at.
                Err(why) => {
                    tracing::error!("{why}");
                    (0..n).map(|_| C::internal(why.clone())).collect()
                }
            };
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(ClientWriteResponse {
                    log_id: resp.log_id,
                    data: result,
                    membership: None,
                }));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
