//! The checkers: each takes a run's [`Observations`] and says which property it broke.
//! One file per property, each citing it. Determinism (the fifth property) is checked by
//! running a seed twice and comparing trace hashes (see `tests/scenarios.rs`).

mod at_most_once;
mod callable_everywhere;
mod convergence;
mod dns_after_heal;
mod election_safety;
mod linearizable_reads;
mod no_disruption;
mod no_lost_ack;
mod one_connection_per_pair;
mod planted;
mod pubsub_after_heal;
mod pubsub_backlog;
mod pubsub_matching;
mod pubsub_once;
mod pubsub_order;
mod queue_after_heal;
mod queue_dedup;
mod queue_exclusive;
mod queue_group_order;
mod queue_no_loss;
mod rpc_answers;
mod state_machine_safety;
mod upgrade_mixes_builds;

use crate::cluster::Observations;

pub use planted::leader_never_changes;
pub use pubsub_backlog::checked as backlog_checked;

/// A checker: `Err` names the broken property and the evidence.
pub type Checker = fn(&Observations) -> Result<(), String>;

/// The checkers every scenario must pass.
pub const ALL: [(&str, Checker); 22] = [
    ("election safety", election_safety::check),
    ("state-machine safety", state_machine_safety::check),
    ("acknowledged writes are never lost", no_lost_ack::check),
    ("convergence after healing", convergence::check),
    ("linearizable reads", linearizable_reads::check),
    ("RPC answers are right", rpc_answers::check),
    ("non-idempotent steps run at most once", at_most_once::check),
    (
        "every function callable everywhere after healing",
        callable_everywhere::check,
    ),
    (
        "one peer connection per node pair after healing",
        one_connection_per_pair::check,
    ),
    (
        "a removed member's campaign disrupts nothing",
        no_disruption::check,
    ),
    (
        "a rolling upgrade runs both builds side by side",
        upgrade_mixes_builds::check,
    ),
    (
        "a notification reaches only matching subscriptions",
        pubsub_matching::check,
    ),
    ("no subscriber hears a message twice", pubsub_once::check),
    (
        "each publisher connection's order holds",
        pubsub_order::check,
    ),
    (
        "after healing every publish reaches every matching subscriber",
        pubsub_after_heal::check,
    ),
    (
        "a late subscriber hears the backlog kept for it",
        pubsub_backlog::check,
    ),
    (
        "after healing every node's DNS answers are the catalog's",
        dns_after_heal::check,
    ),
    (
        "every acknowledged queue send is delivered",
        queue_no_loss::check,
    ),
    (
        "no queue message is held by two consumers within its visibility timeout",
        queue_exclusive::check,
    ),
    (
        "a deduplication id is delivered at most once in its window",
        queue_dedup::check,
    ),
    ("per-group queue order holds", queue_group_order::check),
    (
        "after healing every queue takes sends again within a bound",
        queue_after_heal::check,
    ),
];

/// Runs `checkers` in order; the first failure is reported with its property's name.
pub fn run_all(obs: &Observations, checkers: &[(&str, Checker)]) -> Result<(), String> {
    for (name, check) in checkers {
        check(obs).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}

/// Replicas built by hand for the checkers' self-tests.
#[cfg(test)]
pub(crate) mod testing {
    use mpreg::control::raft::{
        AppliedRun, CatalogStateMachine, DEFAULT_MAX_SNAPSHOT_BYTES, Disk, LogStore, TypeConfig,
    };
    use openraft::storage::RaftStateMachine;

    use crate::cluster::Boot;
    use mpreg::control::{CatalogCommand, Member, QueueEntry, QueueSpec, Role};
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    /// Member 1 joins (queues need an owning member).
    pub fn member() -> CatalogCommand {
        CatalogCommand::UpsertMember(Member {
            id: mpreg::ids::NodeId(1),
            name: "n1".into(),
            cluster_id: "sim".into(),
            advertised_urls: vec!["ws://n1:9000".into()],
            resources: Default::default(),
            role: Role::Voter,
        })
    }

    /// Creates queue `name`, owned by member 1.
    pub fn queue(name: &str) -> CatalogCommand {
        CatalogCommand::CreateQueue(QueueEntry {
            name: name.into(),
            owner: mpreg::ids::NodeId(1),
            incarnation: 1,
            created_ms: 0,
            replicas: Vec::new(),
            spec: QueueSpec {
                visibility_timeout_ms: 30_000,
                max_receives: 0,
                dedup_window_ms: 0,
                ..QueueSpec::default()
            },
        })
    }

    /// Boot `boot` of `host`, whose catalog applied `entries` (as [`replica`] takes them).
    pub fn boot(host: &str, boot: usize, entries: Vec<(u64, u64, Option<CatalogCommand>)>) -> Boot {
        let machine = CatalogStateMachine::default();
        let mut applying = machine.clone();
        // `apply` awaits nothing: any executor will do.
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(applying.apply(entries_of(entries)))
            .expect("applied");
        Boot {
            host: host.into(),
            boot,
            machine,
        }
    }

    fn entries_of(
        entries: Vec<(u64, u64, Option<CatalogCommand>)>,
    ) -> Vec<openraft::Entry<TypeConfig>> {
        entries
            .into_iter()
            .map(|(index, term, cmd)| openraft::Entry {
                log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
                payload: cmd.map_or(EntryPayload::Blank, EntryPayload::Normal),
            })
            .collect()
    }

    /// A run of group `group` on `host` that applied `entries`: (index, term, command; no
    /// command: a blank entry), in the order given, through the catalog's state machine on
    /// a recording disk, as the nodes run it. (The group's id only labels the run here.)
    pub fn replica(
        host: &str,
        group: i64,
        entries: Vec<(u64, u64, Option<CatalogCommand>)>,
    ) -> (String, AppliedRun) {
        let disk = LogStore::default();
        disk.record_applied();
        let entries = entries_of(entries);
        // `open` and `apply` await nothing: any executor will do.
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(async {
                let mut machine = CatalogStateMachine::open(
                    Disk::Memory(disk.clone()),
                    DEFAULT_MAX_SNAPSHOT_BYTES,
                )
                .await
                .expect("opened");
                machine.apply(entries).await.expect("applied");
            });
        let mut run = disk
            .applied_log()
            .and_then(|l| l.runs().pop())
            .expect("the disk records");
        run.group = group;
        (host.into(), run)
    }
}
