//! The life of one peer connection, pure: events in, actions out (the IO loop in `conn`
//! carries them out). Each side of a connection is *using* it, *done* with it (it talks to
//! the peer on another connection and sends no new request here) or has *retired* it (one of
//! its calls missed its deadline: whatever was lost on it will never arrive, so both sides
//! move to a new connection, and the peer still gets the answers to what it had sent).
//!
//! A connection carries new calls only while this side uses it and the peer has not retired
//! it; it closes once neither side uses it, after a silence with nothing left to answer (a
//! crashed peer never says `Done`), or when it breaks.

/// What one side does with the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Using,
    /// Said `Done`: it talks to the peer on another connection.
    Done,
    /// Said `Retire`: a call of its own missed its deadline here.
    Retired,
}

/// What happens to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The last handle this side's calls use was dropped (another connection won).
    HandlesGone,
    /// A call of this side's missed its deadline.
    CallMissedDeadline,
    /// The peer said `Done`.
    PeerDone,
    /// The peer said `Retire`.
    PeerRetired,
    /// Neither side used it for a while with nothing left to answer.
    Silence,
    /// The socket failed or closed, or the node stopped.
    Broken,
}

/// What the IO loop does in answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    SendDone,
    SendRetire,
    /// Fail this side's calls still waiting (their answers may never come).
    FailPending,
    Close,
}

/// The state of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifecycle {
    pub here: Use,
    pub there: Use,
    pub closed: bool,
}

impl Default for Lifecycle {
    fn default() -> Lifecycle {
        Lifecycle {
            here: Use::Using,
            there: Use::Using,
            closed: false,
        }
    }
}

impl Lifecycle {
    /// Applies `event`; returns what to do, in order.
    pub fn on(&mut self, event: Event) -> Vec<Action> {
        if self.closed {
            return Vec::new();
        }
        let mut actions = Vec::new();
        match event {
            Event::HandlesGone if self.here == Use::Using => {
                self.here = Use::Done;
                actions.push(Action::SendDone);
            }
            Event::CallMissedDeadline if self.here != Use::Retired => {
                self.here = Use::Retired;
                actions.extend([Action::FailPending, Action::SendRetire]);
            }
            Event::PeerDone if self.there == Use::Using => self.there = Use::Done,
            Event::PeerRetired => self.there = Use::Retired,
            Event::Silence if self.here != Use::Using => {
                return self.close(actions);
            }
            Event::Broken => return self.close(actions),
            _ => {}
        }
        if self.here != Use::Using && self.there != Use::Using {
            return self.close(actions);
        }
        actions
    }

    fn close(&mut self, mut actions: Vec<Action>) -> Vec<Action> {
        self.closed = true;
        if !actions.contains(&Action::FailPending) {
            actions.push(Action::FailPending);
        }
        actions.push(Action::Close);
        actions
    }

    /// New calls of this side may go on it.
    pub fn usable(&self) -> bool {
        !self.closed && self.here == Use::Using && self.there != Use::Retired
    }

    /// The peer talks to this node on another connection (or retired this one).
    pub fn peer_left(&self) -> bool {
        self.there != Use::Using
    }
}

/// How a connection ranks when two connect the same pair of nodes (crossed dials): the
/// node that dialled it (0: one that did not say, a tool or a join) and whether the peer
/// has left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rank {
    pub dialled_by: u64,
    pub peer_left: bool,
}

/// Whether both nodes should use `new` rather than `current`, two open connections between
/// the same nodes. The one the lower id dialled wins, a rule both sides apply alike; of two
/// the same node dialled, the newer wins (a node dials only when it has no working one). A
/// connection the peer has left never wins over one it may use: the two sides can rank a
/// pair differently when one of them never saw the other connection work (a dial that timed
/// out at the dialler after the peer had accepted it).
pub fn preferred(new: Rank, current: Rank) -> bool {
    let order = |r: Rank| match r.dialled_by {
        // One whose dialler did not say who it is ranks last: the peer never uses it for
        // its calls, so it must not win here either.
        0 => u64::MAX,
        id => id,
    };
    match (new.peer_left, current.peer_left) {
        (false, true) => true,
        (true, false) => false,
        _ => order(new) <= order(current),
    }
}

#[cfg(test)]
mod tests {
    use super::Action::*;
    use super::Event::*;
    use super::*;

    fn run(events: &[Event]) -> (Lifecycle, Vec<Action>) {
        let mut l = Lifecycle::default();
        let actions = events.iter().flat_map(|e| l.on(*e)).collect();
        (l, actions)
    }

    #[test]
    fn a_connection_lives_and_ends_as_its_events_say() {
        // events -> (actions, usable for new calls, closed)
        let table: &[(&[Event], &[Action], bool, bool)] = &[
            (&[], &[], true, false),
            // Crossed dials: this side's handles go (the other connection won): Done, and
            // it stays open for the peer until the peer is done too.
            (&[HandlesGone], &[SendDone], false, false),
            (
                &[HandlesGone, PeerDone],
                &[SendDone, FailPending, Close],
                false,
                true,
            ),
            (
                &[PeerDone, HandlesGone],
                &[SendDone, FailPending, Close],
                false,
                true,
            ),
            // The peer left it: this side may still call on it (the link decides), but the
            // peer's own calls go elsewhere.
            (&[PeerDone], &[], true, false),
            // A missed deadline retires it: waiting calls fail, the peer is told, no new
            // calls; it closes once the peer has moved too.
            (
                &[CallMissedDeadline],
                &[FailPending, SendRetire],
                false,
                false,
            ),
            (
                &[CallMissedDeadline, CallMissedDeadline],
                &[FailPending, SendRetire],
                false,
                false,
            ),
            (
                &[CallMissedDeadline, PeerDone],
                &[FailPending, SendRetire, FailPending, Close],
                false,
                true,
            ),
            // The peer retired it: no new calls here either, answers still come.
            (&[PeerRetired], &[], false, false),
            (
                &[PeerRetired, HandlesGone],
                &[SendDone, FailPending, Close],
                false,
                true,
            ),
            // A crashed peer never says Done: silence closes what this side is done with.
            (&[Silence], &[], true, false),
            (
                &[HandlesGone, Silence],
                &[SendDone, FailPending, Close],
                false,
                true,
            ),
            // Broken at any time: everything waiting fails, and nothing happens after.
            (&[Broken], &[FailPending, Close], false, true),
            (
                &[Broken, HandlesGone, PeerDone],
                &[FailPending, Close],
                false,
                true,
            ),
        ];
        for (i, (events, want, usable, closed)) in table.iter().enumerate() {
            let (l, got) = run(events);
            assert_eq!(&got, want, "row {i}: {events:?}");
            assert_eq!(l.usable(), *usable, "row {i} usable");
            assert_eq!(l.closed, *closed, "row {i} closed");
        }
    }

    #[test]
    fn crossed_dials_settle_on_the_one_the_lower_id_dialled() {
        let r = |dialled_by, peer_left| Rank {
            dialled_by,
            peer_left,
        };
        // (new, current) -> new wins?
        let table = [
            (r(1, false), r(2, false), true),
            (r(2, false), r(1, false), false),
            (r(1, false), r(1, false), true), // the same dialler: the newer
            (r(0, false), r(5, false), false), // a tool's never wins
            (r(5, false), r(0, false), true),
            (r(9, false), r(1, true), true), // one the peer left never wins...
            (r(1, true), r(9, false), false), // ...over one it may use
            (r(1, true), r(2, true), true),
        ];
        for (i, (new, current, want)) in table.into_iter().enumerate() {
            assert_eq!(preferred(new, current), want, "row {i}");
            if new != current && new.peer_left == current.peer_left {
                // Both sides apply the same rule to the same pair, from either end.
                assert_eq!(preferred(current, new), !want, "row {i} is antisymmetric");
            }
        }
    }
}
