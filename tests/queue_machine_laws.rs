//! Laws of a queue as a replicated state machine (`mpreg::queue::machine`), over random
//! entry sequences in which the leaders' clocks also go back (a new leader behind the old):
//!
//! * replicas that apply the same entries answer the same and end in the same state
//!   (state-machine safety rests on it: Raft gives them the same entries);
//! * a replica restored from a snapshot taken after any entry answers the rest exactly as
//!   one that applied everything, and ends in the same state: in-flight messages, receipts
//!   and holders included (the owner's store view, `Queue::stored`, would not);
//! * the engine's time never goes back, whatever the entries carry.

use std::sync::Arc;

use mpreg::queue::engine::{QueueConfig, QueueType, Receipt, Send};
use mpreg::queue::machine::{QueueCommand, QueueMachine, QueueOp, QueueOutput};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Step {
    Send {
        priority: i64,
        delay: u64,
        dedup: Option<u8>,
        group: Option<u8>,
        forget: bool,
        to: Option<u8>,
    },
    SendBatch(u8),
    Receive {
        max: u32,
        visibility: Option<u64>,
        holder: Option<u8>,
    },
    Ack(usize),
    Nack(usize, u64),
    Extend(usize, u64),
    Tick,
    Redrive,
    Purge,
    /// New settings (taken only before the first send).
    Configure(u32),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0i64..3, prop_oneof![3 => Just(0u64), 1 => 1u64..400], prop::option::of(0u8..4), prop::option::weighted(0.4, 0u8..2), prop::bool::weighted(0.1), prop::option::weighted(0.2, 0u8..2))
            .prop_map(|(priority, delay, dedup, group, forget, to)| Step::Send { priority, delay, dedup, group: group.filter(|_| to.is_none()), forget, to }),
        1 => (1u8..4).prop_map(Step::SendBatch),
        4 => (1u32..4, prop::option::of(50u64..400), prop::option::of(0u8..2)).prop_map(|(max, visibility, holder)| Step::Receive { max, visibility, holder }),
        3 => any::<usize>().prop_map(Step::Ack),
        1 => (any::<usize>(), 0u64..200).prop_map(|(r, d)| Step::Nack(r, d)),
        1 => (any::<usize>(), 0u64..400).prop_map(|(r, d)| Step::Extend(r, d)),
        2 => Just(Step::Tick),
        1 => Just(Step::Redrive),
        1 => Just(Step::Purge),
        1 => (1u32..4).prop_map(Step::Configure),
    ]
}

fn config() -> impl Strategy<Value = QueueConfig> {
    (
        prop_oneof![Just(QueueType::Fifo), Just(QueueType::Priority)],
        1u32..4,
        prop_oneof![Just(0u64), Just(500u64)],
        prop_oneof![Just(0u64), Just(700u64)],
    )
        .prop_map(
            |(queue_type, max_receives, dedup_window_ms, message_ttl_ms)| QueueConfig {
                queue_type,
                max_size: 12,
                max_bytes: 1 << 20,
                visibility_timeout_ms: 200,
                max_receives,
                dedup_window_ms,
                max_dedup_ids: 100,
                message_ttl_ms,
            },
        )
}

fn send(n: u64, step: &Step) -> Send {
    let Step::Send {
        priority,
        delay,
        dedup,
        group,
        forget,
        to,
    } = step
    else {
        return Send {
            payload: Arc::from(format!("m{n}").into_bytes()),
            ..Send::default()
        };
    };
    Send {
        payload: Arc::from(format!("m{n}").into_bytes()),
        meta: None,
        priority: *priority,
        delay_ms: *delay,
        dedup_id: dedup.map(|d| format!("d{d}")),
        group: group.map(|g| format!("g{g}")),
        fire_and_forget: *forget,
        to: to.map(|c| Arc::from(format!("c{c}"))),
    }
}

/// Turns steps into entries, learning receipts from a replica as it goes (the entries
/// name receipts that exist, as clients' would), and returns the entries with that
/// replica's answers.
fn entries(
    config: &QueueConfig,
    steps: &[(Step, i64)],
) -> (Vec<QueueCommand>, Vec<QueueOutput>, QueueMachine) {
    let mut m = QueueMachine::new(config.clone());
    let mut clock = 1_000_000i64;
    let mut receipts: Vec<Receipt> = Vec::new();
    let pick = |r: &Vec<Receipt>, i: usize| {
        r.get(i % r.len().max(1))
            .copied()
            .unwrap_or(Receipt { id: 1, delivery: 1 })
    };
    let (mut cmds, mut outs) = (Vec::new(), Vec::new());
    for (n, (step, dt)) in steps.iter().enumerate() {
        // Mostly forward; a negative step is a new leader whose clock is behind.
        clock = (clock + dt).max(0);
        let op = match step {
            Step::Send { .. } => QueueOp::Send(send(n as u64, step)),
            Step::SendBatch(k) => QueueOp::SendBatch(
                (0..*k)
                    .map(|i| send(n as u64 * 10 + u64::from(i), step))
                    .collect(),
            ),
            Step::Receive {
                max,
                visibility,
                holder,
            } => QueueOp::Receive {
                max: *max,
                visibility_ms: *visibility,
                holder: holder.map(|h| (Arc::from(format!("c{h}")), 2)),
            },
            Step::Ack(i) => QueueOp::Ack(pick(&receipts, *i)),
            Step::Nack(i, d) => QueueOp::Nack {
                receipt: pick(&receipts, *i),
                delay_ms: *d,
            },
            Step::Extend(i, ms) => QueueOp::ChangeVisibility {
                receipt: pick(&receipts, *i),
                visibility_ms: *ms,
            },
            Step::Tick => QueueOp::Tick,
            Step::Redrive => QueueOp::Redrive,
            Step::Purge => QueueOp::Purge,
            Step::Configure(r) => QueueOp::Configure(QueueConfig {
                max_receives: *r,
                ..config.clone()
            }),
        };
        let cmd = QueueCommand {
            at_ms: clock as u64,
            op,
        };
        let before = m.now_ms();
        let out = m.apply(cmd.clone());
        assert!(m.now_ms() >= before, "time went back");
        assert!(m.now_ms() >= cmd.at_ms);
        if let QueueOutput::Received(ds) = &out {
            receipts.extend(ds.iter().map(|d| d.receipt));
        }
        cmds.push(cmd);
        outs.push(out);
    }
    (cmds, outs, m)
}

fn time_step() -> impl Strategy<Value = i64> {
    prop_oneof![8 => 0i64..300, 1 => -400i64..0]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn replicas_of_the_same_entries_agree(
        config in config(),
        steps in prop::collection::vec((step(), time_step()), 1..120),
    ) {
        let (cmds, outs, a) = entries(&config, &steps);
        let mut b = QueueMachine::new(config);
        let again: Vec<_> = cmds.iter().cloned().map(|c| b.apply(c)).collect();
        prop_assert_eq!(again, outs);
        prop_assert_eq!(b.snapshot().unwrap(), a.snapshot().unwrap());
    }

    /// The leader's proposer puts concurrent calls in one entry: a run of entries cut into
    /// batches (each at its latest command's time, as `Batching::batch` does) answers each
    /// command as the entries one by one would at the same times, and ends in the same
    /// state; a batch inside a batch does nothing.
    #[test]
    fn batched_entries_answer_as_the_entries_alone(
        config in config(),
        steps in prop::collection::vec((step(), 0i64..300), 1..120),
        cuts in prop::collection::vec(1usize..8, 1..40),
    ) {
        let (cmds, _, _) = entries(&config, &steps);
        let mut batched = QueueMachine::new(config.clone());
        let mut alone = QueueMachine::new(config);
        let mut at = 0;
        for n in cuts.iter().cycle() {
            if at >= cmds.len() {
                break;
            }
            let group = &cmds[at..(at + n).min(cmds.len())];
            at += group.len();
            let t = group.iter().map(|c| c.at_ms).max().unwrap_or(0);
            let mut ops: Vec<QueueOp> = group.iter().map(|c| c.op.clone()).collect();
            ops.push(QueueOp::Batch(vec![QueueOp::Purge]));
            let QueueOutput::Batch(outs) = batched.apply(QueueCommand { at_ms: t, op: QueueOp::Batch(ops) }) else {
                panic!("a batch answers a batch");
            };
            prop_assert_eq!(outs.len(), group.len() + 1);
            prop_assert_eq!(outs.last(), Some(&QueueOutput::Noop));
            for (c, out) in group.iter().zip(&outs) {
                let one = alone.apply(QueueCommand { at_ms: t, op: c.op.clone() });
                prop_assert_eq!(&one, out);
            }
        }
        prop_assert_eq!(batched.snapshot().unwrap(), alone.snapshot().unwrap());
    }

    #[test]
    fn a_replica_restored_from_any_snapshot_answers_as_the_rest(
        config in config(),
        steps in prop::collection::vec((step(), time_step()), 1..120),
        cut in 0usize..120,
    ) {
        let (cmds, outs, whole) = entries(&config, &steps);
        let cut = cut.min(cmds.len());
        let mut early = QueueMachine::new(config);
        for c in &cmds[..cut] {
            early.apply(c.clone());
        }
        let bytes = early.snapshot().unwrap();
        let mut restored = QueueMachine::restore(&bytes, bytes.len()).unwrap();
        prop_assert_eq!(restored.snapshot().unwrap(), bytes);
        let rest: Vec<_> = cmds[cut..].iter().cloned().map(|c| restored.apply(c)).collect();
        prop_assert_eq!(&rest[..], &outs[cut..]);
        prop_assert_eq!(restored.snapshot().unwrap(), whole.snapshot().unwrap());
    }
}

/// A snapshot is read under the caller's limit, and bytes that are not one are refused.
#[test]
fn snapshots_are_bounded_and_checked() {
    let mut m = QueueMachine::new(QueueConfig::default());
    m.apply(QueueCommand {
        at_ms: 5,
        op: QueueOp::Send(Send {
            payload: Arc::from(&b"hello"[..]),
            ..Send::default()
        }),
    });
    let bytes = m.snapshot().unwrap();
    assert!(QueueMachine::restore(&bytes, bytes.len() - 1).is_err());
    assert!(QueueMachine::restore(&bytes[..bytes.len() - 1], bytes.len()).is_err());
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(QueueMachine::restore(&longer, longer.len()).is_err());
    let back = QueueMachine::restore(&bytes, bytes.len()).unwrap();
    assert_eq!(back.queue().depth(), 1);
    assert_eq!(back.now_ms(), 5);
}

/// Settings come from the group's log: taken before the first message, refused after.
#[test]
fn settings_are_taken_only_before_the_first_message() {
    let mut m = QueueMachine::new(QueueConfig::default());
    let tight = QueueConfig {
        max_size: 1,
        ..QueueConfig::default()
    };
    let at = |op| QueueCommand { at_ms: 10, op };
    assert_eq!(
        m.apply(at(QueueOp::Configure(tight.clone()))),
        QueueOutput::Configured(true)
    );
    assert_eq!(m.queue().config(), &tight);
    let send = || {
        QueueOp::Send(Send {
            payload: Arc::from(&b"x"[..]),
            ..Send::default()
        })
    };
    assert!(matches!(m.apply(at(send())), QueueOutput::Sent(Ok(_))));
    // max_size 1: the second is refused, as the settings taken say.
    assert!(matches!(m.apply(at(send())), QueueOutput::Sent(Err(_))));
    assert_eq!(
        m.apply(at(QueueOp::Configure(QueueConfig::default()))),
        QueueOutput::Configured(false)
    );
    assert_eq!(m.queue().config(), &tight);
}
