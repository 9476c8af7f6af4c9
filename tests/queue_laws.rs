//! Laws of the queue engine (`mpreg::queue::engine`) over random command sequences, checked
//! against a model kept beside it after every command:
//!
//! * every sent message is, at every moment, exactly one of pending, in flight, dead, or
//!   gone (acknowledged or expired), and the engine's counts agree with the statuses;
//! * nothing is delivered after its ack;
//! * only a message's current receipt acks, nacks or extends it (an earlier delivery's is
//!   refused);
//! * a deduplication id names one message within its window (a repeat is `duplicate`, with
//!   the first id, and is never delivered as a second message);
//! * order: a receive's batch is best first (priority, then send order); nothing is
//!   delivered before its delay; a group has at most one message in flight, and its
//!   messages are first delivered in send order;
//! * a named consumer holds at most its `max_in_flight` messages, and only in-flight ones;
//!   a message addressed to one consumer is delivered to it alone (and still drains);
//! * a restart (the queue rebuilt from what a store keeps, `stored` then `restore`) keeps
//!   every message where it was, except that one in flight is pending again (visible at its
//!   deadline), and keeps the deduplication ids.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mpreg::queue::engine::{
    Event, Holder, Queue, QueueConfig, QueueError, QueueType, Receipt, Send, Status,
};

/// What a named consumer may hold at once.
const MAX_HELD: usize = 2;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Send {
        priority: i64,
        delay: u64,
        dedup: Option<u8>,
        group: Option<u8>,
        forget: bool,
        /// Addressed to consumer `c0` or `c1` (a broadcast's copy; never in a group).
        to: Option<u8>,
    },
    Receive {
        max: usize,
        visibility: Option<u64>,
        /// A named consumer (`c0`, `c1`), holding at most [`MAX_HELD`].
        holder: Option<u8>,
    },
    Ack(usize),
    Nack(usize, u64),
    Extend(usize, u64),
    Wait(u64),
    Redrive,
    Purge,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0i64..3, prop_oneof![3 => Just(0u64), 1 => 1u64..400], prop::option::of(0u8..4), prop::option::weighted(0.4, 0u8..2), prop::bool::weighted(0.1), prop::option::weighted(0.2, 0u8..2))
            .prop_map(|(priority, delay, dedup, group, forget, to)| Op::Send { priority, delay, dedup, group: group.filter(|_| to.is_none()), forget, to }),
        4 => (1usize..4, prop::option::of(50u64..400), prop::option::of(0u8..2)).prop_map(|(max, visibility, holder)| Op::Receive { max, visibility, holder }),
        3 => any::<usize>().prop_map(Op::Ack),
        1 => (any::<usize>(), 0u64..200).prop_map(|(r, d)| Op::Nack(r, d)),
        1 => (any::<usize>(), 0u64..400).prop_map(|(r, d)| Op::Extend(r, d)),
        3 => (0u64..300).prop_map(Op::Wait),
        1 => Just(Op::Redrive),
        1 => Just(Op::Purge),
        1 => Just(Op::Restart),
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

/// What the model knows of a sent message.
#[derive(Debug)]
struct Known {
    sent_at: u64,
    visible_at: u64,
    priority: i64,
    group: Option<u8>,
    to: Option<u8>,
    gone: bool,
}

struct Model {
    queue: Queue,
    now: u64,
    known: BTreeMap<u64, Known>,
    /// Every receipt handed out, and each message's latest.
    receipts: Vec<Receipt>,
    latest: BTreeMap<u64, Receipt>,
    /// Deduplication id → (first id, window end).
    dedup: BTreeMap<u8, (u64, u64)>,
    delivered_once: BTreeSet<u64>,
}

impl Model {
    fn check(&self) -> Result<(), TestCaseError> {
        let (mut live, mut flying, mut dead) = (0, 0, 0);
        for (id, k) in &self.known {
            let s = self.queue.status(*id);
            if k.gone {
                prop_assert_eq!(s, Status::Gone, "message {} was acked or expired", id);
            }
            match s {
                Status::Pending => live += 1,
                Status::InFlight => {
                    live += 1;
                    flying += 1
                }
                Status::Dead => dead += 1,
                Status::Gone => {}
            }
        }
        prop_assert_eq!(self.queue.depth() + self.queue.in_flight(), live);
        prop_assert_eq!(self.queue.in_flight(), flying);
        // A named consumer never holds more than its bound, and what consumers hold is in
        // flight (a message back at its deadline, acked or nacked is held no more).
        let held: Vec<usize> = ["c0", "c1"].iter().map(|h| self.queue.held(h)).collect();
        prop_assert!(held.iter().all(|h| *h <= MAX_HELD), "held {:?}", held);
        prop_assert!(
            held.iter().sum::<usize>() <= flying,
            "held {:?} of {}",
            held,
            flying
        );
        prop_assert_eq!(self.queue.dead_lettered(), dead);
        // At most one in flight per group.
        let mut per_group: BTreeMap<u8, usize> = BTreeMap::new();
        for (id, k) in &self.known {
            if let Some(g) = k.group
                && self.queue.status(*id) == Status::InFlight
            {
                *per_group.entry(g).or_default() += 1;
            }
        }
        prop_assert!(per_group.values().all(|n| *n <= 1), "{:?}", per_group);
        Ok(())
    }

    fn events(&mut self, events: &[Event]) {
        for e in events {
            if let Event::Expired(id) = e
                && let Some(k) = self.known.get_mut(id)
            {
                k.gone = true;
            }
        }
    }

    /// Catches up with what time did before the command at `self.now` (the engine does it
    /// inside every command; expirations are learnt here).
    fn settle(&mut self) {
        let events = self.queue.tick(self.now);
        self.events(&events);
    }

    fn receipt(&self, pick: usize) -> Option<Receipt> {
        (!self.receipts.is_empty()).then(|| self.receipts[pick % self.receipts.len()])
    }

    /// Whether `r` is the message's current delivery and it is in flight.
    fn current(&self, r: Receipt) -> bool {
        self.latest.get(&r.id) == Some(&r) && self.queue.status(r.id) == Status::InFlight
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        self.settle();
        match op {
            Op::Send {
                priority,
                delay,
                dedup,
                group,
                forget,
                to,
            } => {
                let window = self.queue.config().dedup_window_ms;
                let repeat = dedup
                    .filter(|_| window > 0)
                    .and_then(|d| self.dedup.get(&d).copied())
                    .filter(|(_, until)| self.now < *until);
                let r = self.queue.send(
                    self.now,
                    Send {
                        payload: Arc::from(&b"m"[..]),
                        priority,
                        delay_ms: delay,
                        dedup_id: dedup.map(|d| format!("d{d}")),
                        group: group.map(|g| format!("g{g}")),
                        fire_and_forget: forget,
                        meta: None,
                        to: to.map(|t| Arc::from(format!("c{t}"))),
                    },
                );
                match (r, repeat) {
                    (Ok(s), Some((first, _))) => {
                        prop_assert!(s.duplicate, "a dedup id within its window");
                        prop_assert_eq!(s.id, first);
                    }
                    (Ok(s), None) => {
                        prop_assert!(!s.duplicate, "no dedup id in its window");
                        prop_assert!(!self.known.contains_key(&s.id), "ids are new");
                        if let Some(d) = dedup.filter(|_| window > 0) {
                            self.dedup.insert(d, (s.id, self.now + window));
                        }
                        self.known.insert(
                            s.id,
                            Known {
                                sent_at: self.now,
                                visible_at: self.now + delay,
                                priority,
                                group,
                                to,
                                gone: false,
                            },
                        );
                    }
                    (Err(QueueError::Full(_)), None) => {
                        prop_assert!(self.queue.depth() + self.queue.in_flight() >= 12);
                    }
                    (Err(e), _) => prop_assert!(false, "send refused: {e}"),
                }
            }
            Op::Receive {
                max,
                visibility,
                holder,
            } => {
                let holder = holder.map(|h| Holder {
                    id: Arc::from(format!("c{h}")),
                    max_in_flight: MAX_HELD,
                });
                let got = self
                    .queue
                    .receive_as(self.now, max, visibility, holder.as_ref());
                prop_assert!(got.len() <= max);
                let priority_queue = self.queue.config().queue_type == QueueType::Priority;
                for pair in got.windows(2) {
                    let (a, b) = (&pair[0], &pair[1]);
                    if a.group.is_some() && a.group == b.group {
                        // A group's next message becomes ready only when the one before it
                        // leaves (here: delivered at most once, gone mid-batch).
                        continue;
                    }
                    if priority_queue {
                        prop_assert!(
                            a.priority > b.priority
                                || (a.priority == b.priority && a.receipt.id < b.receipt.id),
                            "best first: {:?} then {:?}",
                            a,
                            b
                        );
                    } else {
                        prop_assert!(a.receipt.id < b.receipt.id, "send order");
                    }
                }
                for d in got {
                    let id = d.receipt.id;
                    let k = self.known.get(&id).ok_or_else(|| {
                        TestCaseError::fail(format!("delivered {id}, never sent"))
                    })?;
                    prop_assert!(!k.gone, "{} delivered after its ack or expiry", id);
                    prop_assert!(
                        self.now >= k.visible_at,
                        "{} delivered before its delay",
                        id
                    );
                    prop_assert!(self.now >= k.sent_at);
                    prop_assert_eq!(d.priority, k.priority);
                    if let Some(t) = k.to {
                        let named = holder.as_ref().map(|h| h.id.to_string());
                        prop_assert_eq!(
                            named,
                            Some(format!("c{}", t)),
                            "{} is addressed to c{} alone",
                            id,
                            t
                        );
                    }
                    if let Some(g) = k.group
                        && self.delivered_once.insert(id)
                    {
                        // A group's messages are first delivered in send order: none
                        // earlier is still waiting.
                        for (other, ok) in self.known.range(..id) {
                            if ok.group == Some(g) {
                                let s = self.queue.status(*other);
                                prop_assert!(
                                    s != Status::Pending,
                                    "{} of group {} delivered before {} ({:?})",
                                    id,
                                    g,
                                    other,
                                    s
                                );
                            }
                        }
                    }
                    self.delivered_once.insert(id);
                    if let Some(prev) = self.latest.get(&id) {
                        prop_assert!(d.receipt.delivery > prev.delivery);
                    }
                    self.latest.insert(id, d.receipt);
                    self.receipts.push(d.receipt);
                    if self.queue.status(id) == Status::Gone {
                        // At most once: gone on delivery.
                        if let Some(k) = self.known.get_mut(&id) {
                            k.gone = true;
                        }
                    } else {
                        prop_assert_eq!(self.queue.status(id), Status::InFlight);
                    }
                }
            }
            Op::Ack(pick) => {
                let Some(r) = self.receipt(pick) else {
                    return Ok(());
                };
                let current = self.current(r);
                let result = self.queue.ack(self.now, r);
                prop_assert_eq!(result.is_ok(), current, "ack with {:?}: {:?}", r, result);
                if current && let Some(k) = self.known.get_mut(&r.id) {
                    k.gone = true;
                }
            }
            Op::Nack(pick, delay) => {
                let Some(r) = self.receipt(pick) else {
                    return Ok(());
                };
                let current = self.current(r);
                let result = self.queue.nack(self.now, r, delay);
                prop_assert_eq!(result.is_ok(), current, "nack with {:?}", r);
                if let Ok(events) = result {
                    self.events(&events);
                    if self.queue.status(r.id) == Status::Pending
                        && let Some(k) = self.known.get_mut(&r.id)
                    {
                        k.visible_at = self.now + delay;
                    }
                }
            }
            Op::Extend(pick, ms) => {
                let Some(r) = self.receipt(pick) else {
                    return Ok(());
                };
                let current = self.current(r);
                let result = self.queue.change_visibility(self.now, r, ms);
                prop_assert_eq!(result.is_ok(), current, "extend with {:?}", r);
            }
            Op::Wait(ms) => {
                self.now += ms;
                self.settle();
            }
            Op::Redrive => {
                let dead: Vec<u64> = self
                    .known
                    .keys()
                    .copied()
                    .filter(|id| self.queue.status(*id) == Status::Dead)
                    .collect();
                let moved = self.queue.redrive(self.now);
                prop_assert!(moved.len() <= dead.len());
                for id in &moved {
                    prop_assert!(dead.contains(id), "redrove {} that was not dead", id);
                    prop_assert_eq!(self.queue.status(*id), Status::Pending);
                }
                for id in dead {
                    if self.queue.status(id) == Status::Pending {
                        // Redriven: visible now.
                        if let Some(k) = self.known.get_mut(&id) {
                            k.visible_at = self.now;
                        }
                    }
                }
            }
            Op::Restart => {
                let before: BTreeMap<u64, Status> = self
                    .known
                    .keys()
                    .map(|id| (*id, self.queue.status(*id)))
                    .collect();
                let dedup = self.queue.dedup_ids();
                let mut again = Queue::new(self.queue.config().clone());
                for m in self.queue.stored() {
                    again.restore(self.now, m);
                }
                for (d, id, until) in dedup.clone() {
                    again.restore_dedup(d, id, until);
                }
                again.restore_next_id(self.queue.next_id());
                prop_assert_eq!(again.dedup_ids(), dedup);
                self.queue = again;
                for (id, was) in before {
                    let want = match was {
                        Status::InFlight => Status::Pending,
                        other => other,
                    };
                    prop_assert_eq!(self.queue.status(id), want, "message {} after restart", id);
                }
            }
            Op::Purge => {
                let before: Vec<u64> = self
                    .known
                    .keys()
                    .copied()
                    .filter(|id| self.queue.status(*id) == Status::Pending)
                    .collect();
                let purged = self.queue.purge(self.now);
                prop_assert_eq!(&purged, &before);
                for id in before {
                    prop_assert_eq!(self.queue.status(id), Status::Gone);
                    if let Some(k) = self.known.get_mut(&id) {
                        k.gone = true;
                    }
                }
            }
        }
        self.check()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_queue_laws_hold(config in config(), ops in prop::collection::vec(op(), 1..120)) {
        let mut m = Model {
            queue: Queue::new(config),
            now: 1_000_000,
            known: BTreeMap::new(),
            receipts: Vec::new(),
            latest: BTreeMap::new(),
            dedup: BTreeMap::new(),
            delivered_once: BTreeSet::new(),
        };
        for op in ops {
            m.apply(op)?;
        }
        // Everything left drains: after the longest delay, receive and ack until empty.
        for _ in 0..200 {
            m.now += 1_000;
            // Anyone's, then what is addressed to each consumer.
            for holder in [None, Some("c0"), Some("c1")] {
                let holder = holder.map(|h| Holder { id: Arc::from(h), max_in_flight: 100 });
                let got = m.queue.receive_as(m.now, 16, None, holder.as_ref());
                for d in got {
                    let _ = m.queue.ack(m.now, d.receipt);
                }
            }
            if m.queue.depth() + m.queue.in_flight() == 0 {
                break;
            }
        }
        prop_assert_eq!(m.queue.depth() + m.queue.in_flight(), 0, "the queue drains: {:?}", m.queue);
    }
}

/// Dead letters: after `max_receives` deliveries a message that comes back is dead, listed,
/// and redriven with its deliveries reset; nothing is dead-lettered merely for waiting.
#[test]
fn out_of_receives_goes_to_the_dead_letters_and_redrives() {
    let mut q = Queue::new(QueueConfig {
        max_receives: 2,
        visibility_timeout_ms: 100,
        ..QueueConfig::default()
    });
    let sent = q
        .send(
            0,
            Send {
                payload: Arc::from(&b"x"[..]),
                ..Send::default()
            },
        )
        .unwrap();
    assert!(q.tick(1_000_000).is_empty(), "waiting never dead-letters");
    let mut now = 1_000_000;
    for delivery in 1..=2 {
        let got = q.receive(now, 1, None);
        assert_eq!(got[0].receive_count, delivery);
        now += 100;
        let events = q.tick(now);
        if delivery < 2 {
            assert_eq!(events, [Event::Redelivering(sent.id)]);
        } else {
            assert_eq!(events, [Event::DeadLettered(sent.id)]);
        }
    }
    assert_eq!(q.status(sent.id), Status::Dead);
    assert_eq!(q.dead_letters(10)[0].id, sent.id);
    assert!(q.receive(now, 1, None).is_empty());
    assert_eq!(q.redrive(now), [sent.id]);
    let again = q.receive(now, 1, None);
    assert_eq!((again[0].receipt.id, again[0].receive_count), (sent.id, 1));
    // The delivery before the dead letter cannot ack this one.
    assert!(
        q.ack(
            now,
            Receipt {
                id: sent.id,
                delivery: 2
            }
        )
        .is_err()
    );
    q.ack(now, again[0].receipt).unwrap();
    assert_eq!(q.status(sent.id), Status::Gone);
}
