//! The control plane's figures for `/metrics`: this replica's Raft state, what its storage
//! did, and the catalog's size.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::replica::Control;
use crate::metrics::{counter, gauge, histogram, int};

/// Read at scrape time from the node's replica.
pub(crate) struct ControlMetrics(pub(crate) Arc<Control>);

impl std::fmt::Debug for ControlMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlMetrics")
    }
}

impl Collector for ControlMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        self.raft(&mut e)?;
        self.storage(&mut e)?;
        self.catalog(&mut e)
    }
}

impl ControlMetrics {
    fn raft(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let m = self.0.raft.metrics().borrow().clone();
        gauge(
            e,
            "mpreg_raft_term",
            "Current Raft term",
            int(m.current_term),
        )?;
        gauge(
            e,
            "mpreg_raft_is_leader",
            "1 when this node leads",
            i64::from(m.current_leader == Some(self.0.id.0)),
        )?;
        gauge(
            e,
            "mpreg_raft_leader_known",
            "1 when this node knows a leader",
            i64::from(m.current_leader.is_some()),
        )?;
        gauge(
            e,
            "mpreg_raft_last_log_index",
            "Index of the last log entry",
            int(m.last_log_index.unwrap_or(0)),
        )?;
        gauge(
            e,
            "mpreg_raft_applied_index",
            "Index of the last applied entry",
            int(m.last_applied.map_or(0, |l| l.index)),
        )?;
        gauge(
            e,
            "mpreg_raft_snapshot_index",
            "Index of the last snapshot",
            int(m.snapshot.map_or(0, |l| l.index)),
        )
    }

    fn storage(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let store = &self.0.store_stats;
        gauge(
            e,
            "mpreg_raft_committed_index",
            "Index of the last entry this node knows committed",
            int(store.committed_index()),
        )?;
        counter(
            e,
            "mpreg_raft_snapshots_built",
            "Snapshots this node built of its catalog",
            store.snapshots_built.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "mpreg_raft_snapshots_installed",
            "Snapshots this node installed from a leader",
            store.snapshots_installed.load(Ordering::Relaxed),
        )?;
        histogram(
            e,
            "mpreg_raft_append_duration_seconds",
            "Raft log appends, from handing the batch to SQLite to its fsync (none in memory mode)",
            &store.append_duration.snapshot(),
        )?;
        histogram(
            e,
            "mpreg_raft_append_entries",
            "Entries per Raft log append",
            &store.append_entries.snapshot(),
        )?;
        histogram(
            e,
            "mpreg_raft_proposal_commands",
            "Catalog commands per proposed log entry (concurrent writes share one)",
            &store.proposal_commands.snapshot(),
        )?;
        if let Some(engine) = &store.log_engine {
            counter(
                e,
                "mpreg_raft_log_commits",
                "Transactions the Raft log engine committed, each one fsync",
                engine.commits.load(Ordering::Relaxed),
            )?;
            counter(
                e,
                "mpreg_raft_log_writes",
                "Writes (appends, votes, truncations) those transactions carried",
                engine.writes.load(Ordering::Relaxed),
            )?;
        }
        Ok(())
    }

    fn catalog(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let (members, functions, queues) = self.0.catalog.read(|s| {
            (
                s.catalog.members().count(),
                s.catalog.functions().count(),
                s.catalog.queues().count(),
            )
        });
        gauge(
            e,
            "mpreg_catalog_members",
            "Members in the catalog",
            int(members),
        )?;
        gauge(
            e,
            "mpreg_catalog_functions",
            "Function versions offered in the catalog",
            int(functions),
        )?;
        gauge(
            e,
            "mpreg_catalog_queues",
            "Queues in the catalog",
            int(queues),
        )
    }
}
