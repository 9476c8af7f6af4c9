//! A scenario: the cluster, the workload and the fault schedule of one simulated run, as
//! written in `scenarios/*.toml` (see docs/SIMULATION.md for the format).

use std::path::Path;

use serde::{Deserialize, Serialize};

/// One scenario file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Nodes started at time 0: `n1` bootstraps, the others join through `n1`.
    #[serde(default = "defaults::nodes")]
    pub nodes: usize,
    /// The nodes' `voters` setting.
    #[serde(default = "defaults::voters")]
    pub voters: usize,
    /// The nodes' `replace_voter_after_ms` setting.
    #[serde(default = "defaults::replace_voter_after_ms")]
    pub replace_voter_after_ms: u64,
    /// Client hosts; client `i` talks to node `n{i % nodes + 1}` first.
    #[serde(default = "defaults::clients")]
    pub clients: usize,
    #[serde(default = "defaults::writes_per_client")]
    pub writes_per_client: usize,
    /// Pause between one client's writes.
    #[serde(default = "defaults::write_every_ms")]
    pub write_every_ms: u64,
    /// A linearizable read after every this many writes (0: no reads).
    #[serde(default = "defaults::read_every")]
    pub read_every: usize,
    /// Client hosts `r0`, `r1`, … sending RPCs and DAGs through a `ClusterClient`; with
    /// any, the nodes serve the RPC workload's functions (see `cluster_rpc`).
    #[serde(default)]
    pub rpc_clients: usize,
    #[serde(default = "defaults::rpc_requests_per_client")]
    pub rpc_requests_per_client: usize,
    /// Pause between one RPC client's requests.
    #[serde(default = "defaults::rpc_every_ms")]
    pub rpc_every_ms: u64,
    /// Subscriber hosts `s0`, `s1`, … and publisher clients `q0`, … of the pub/sub
    /// workload (`cluster::pubsub`); none: no pub/sub workload.
    #[serde(default)]
    pub pubsub_subscribers: usize,
    #[serde(default = "defaults::pubsub_publishers")]
    pub pubsub_publishers: usize,
    #[serde(default = "defaults::pubsub_messages_per_publisher")]
    pub pubsub_messages_per_publisher: usize,
    /// Pause between one publisher's messages.
    #[serde(default = "defaults::pubsub_every_ms")]
    pub pubsub_every_ms: u64,
    /// Services registered for DNS by host `d0` while the faults happen, then looked up
    /// at every node's DNS gateway after healing (`cluster::dns`); none: no DNS workload
    /// (and the gateways stay off).
    #[serde(default)]
    pub dns_services: usize,
    /// Messages sent to queue `simq` (owned by `n1`) by host `qp` while the faults happen,
    /// received and acknowledged by `queue_consumers` consumers and drained after healing
    /// (`cluster::queue`); none: no queue workload.
    #[serde(default)]
    pub queue_messages: usize,
    #[serde(default = "defaults::queue_consumers")]
    pub queue_consumers: usize,
    /// Pause between the producer's sends.
    #[serde(default = "defaults::queue_every_ms")]
    pub queue_every_ms: u64,
    /// The queue's `replicas` (3 or 5: a Raft group; unset: the cluster's default, 3 once
    /// three nodes are members and connected, else 1, kept by its owner).
    #[serde(default)]
    pub queue_replicas: Option<u32>,
    /// After the workload ends and every fault is healed, the replicas must agree within
    /// this much simulated time.
    #[serde(default = "defaults::settle_ms")]
    pub settle_ms: u64,
    /// Seeds run by `cargo test`: 0..seeds (`MPREG_SIM_SEEDS` / `MPREG_SIM_SEED` override).
    #[serde(default = "defaults::seeds")]
    pub seeds: u64,
    /// Run exactly this seed (a scenario written by the shrinker replays its failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default)]
    pub faults: Vec<FaultEvent>,
}

mod defaults {
    pub fn nodes() -> usize {
        3
    }
    pub fn voters() -> usize {
        3
    }
    pub fn replace_voter_after_ms() -> u64 {
        30_000
    }
    pub fn clients() -> usize {
        3
    }
    pub fn writes_per_client() -> usize {
        12
    }
    pub fn write_every_ms() -> u64 {
        250
    }
    pub fn read_every() -> usize {
        3
    }
    pub fn rpc_requests_per_client() -> usize {
        16
    }
    pub fn rpc_every_ms() -> u64 {
        200
    }
    pub fn pubsub_publishers() -> usize {
        2
    }
    pub fn pubsub_messages_per_publisher() -> usize {
        30
    }
    pub fn pubsub_every_ms() -> u64 {
        120
    }
    pub fn queue_consumers() -> usize {
        2
    }
    pub fn queue_every_ms() -> u64 {
        60
    }
    pub fn settle_ms() -> u64 {
        30_000
    }
    pub fn seeds() -> u64 {
        16
    }
}

/// One fault, applied when simulated time reaches `at_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultEvent {
    pub at_ms: u64,
    #[serde(flatten)]
    pub action: Action,
}

/// What happens to the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Cuts `target` off from every other node (clients still reach it).
    Isolate { target: Target },
    /// Splits the live nodes in two halves, the smaller one with the leader or without it;
    /// no link crosses.
    Split { leader_in_minority: bool },
    /// Repairs every cut link.
    Heal,
    /// Kills `target`: its tasks and connections vanish, its disk keeps what was synced.
    Crash { target: Target },
    /// Starts crashed nodes again on their disks (`target` = `crashed`: all of them).
    Restart { target: Target },
    /// A new node joins through the initial nodes.
    Join,
    /// `target` shuts down gracefully, leaving the membership.
    Leave { target: Target },
    /// Every link between nodes drops messages at `fail_rate` (0–1, each message) and
    /// delays them up to `max_latency_ms`.
    Links { fail_rate: f64, max_latency_ms: u64 },
    /// Links back to normal (no loss, 1–5 ms latency).
    Calm,
    /// `target` restarts (as a crash and an immediate restart on its disk) into the next
    /// build, which speaks a newer peer protocol (`NodeBuilder::speak_next_protocol`): a
    /// rolling upgrade, one node at a time.
    Upgrade { target: Target },
    /// A rogue host holding the cluster secret campaigns as `target` (a member that left:
    /// its Raft id): every `every_ms`, `rounds` times, it asks every live node for its vote
    /// at an ever higher term, claiming a log longer than anyone's (Raft §6).
    Campaign {
        target: Target,
        rounds: u32,
        every_ms: u64,
    },
}

/// Which node a fault hits, resolved when it fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The current leader (the live node leading in the highest term).
    Leader,
    /// The lowest-named live voter that is not the leader.
    Follower,
    /// A live node that is not the leader, chosen by the run's seed.
    Random,
    /// Every crashed node (for `restart`).
    Crashed,
    /// A node by name, e.g. `n2`.
    #[serde(untagged)]
    Node(String),
}

impl Scenario {
    pub fn from_toml(text: &str) -> Result<Scenario, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn load(path: &Path) -> Result<Scenario, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Scenario::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot encode: {e}"))
    }

    /// The seeds `cargo test` runs for this scenario.
    pub fn seeds(&self) -> Vec<u64> {
        match self.seed {
            Some(s) if std::env::var_os("MPREG_SIM_SEED").is_none() => vec![s],
            _ => crate::seeds(self.seeds),
        }
    }

    /// When the workload's last write is due (without retries), in simulated ms.
    pub fn workload_ms(&self) -> u64 {
        let rpc = if self.rpc_clients > 0 {
            self.rpc_requests_per_client as u64 * self.rpc_every_ms
        } else {
            0
        };
        // The DNS workload: its registrations, every fourth unregistered, one replacement.
        let dns = if self.dns_services > 0 {
            (self.dns_services + self.dns_services / 4 + 1) as u64 * self.write_every_ms
        } else {
            0
        };
        (self.writes_per_client as u64 * self.write_every_ms)
            .max(rpc)
            .max(dns)
            .max(self.pubsub_ms())
            .max(self.queue_messages as u64 * self.queue_every_ms)
    }

    /// When the pub/sub workload's last publish is due, in simulated ms.
    pub fn pubsub_ms(&self) -> u64 {
        if self.pubsub_subscribers == 0 {
            return 0;
        }
        self.pubsub_messages_per_publisher as u64 * self.pubsub_every_ms
    }
}

/// The scenario files shipped in `scenarios/`, sorted by name.
pub fn shipped() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_round_trips_through_toml() {
        let s = Scenario::from_toml(
            r#"
            name = "x"
            nodes = 5
            [[faults]]
            at_ms = 1000
            action = "isolate"
            target = "leader"
            [[faults]]
            at_ms = 2000
            action = "crash"
            target = "n2"
            [[faults]]
            at_ms = 3000
            action = "links"
            fail_rate = 0.1
            max_latency_ms = 50
            [[faults]]
            at_ms = 4000
            action = "heal"
            "#,
        )
        .unwrap();
        assert_eq!(s.nodes, 5);
        assert_eq!(
            s.faults[1].action,
            Action::Crash {
                target: Target::Node("n2".into())
            }
        );
        let again = Scenario::from_toml(&s.to_toml()).unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn unknown_actions_are_refused() {
        let e = Scenario::from_toml("name = \"x\"\n[[faults]]\nat_ms = 1\naction = \"explode\"\n")
            .unwrap_err();
        assert!(e.contains("explode"), "{e}");
    }
}
