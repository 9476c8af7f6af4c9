//! Response rate limiting for UDP, in the manner of BIND's RRL: a source address can be
//! forged, so answers to one network (a /24, or a /56 for IPv6) are counted per second,
//! by what they say (the same name and type; all NXDOMAINs of a zone together; all
//! errors together). Over the limit most are dropped and every `slip`-th goes out as an
//! empty truncated reply: a real client behind the forged flood asks again over TCP (which
//! cannot be forged), and the victim of the forgery receives small packets, less than it
//! was sent. A resolver's own traffic repeats an answer at most once per TTL, far below.
//!
//! The table is a fixed array indexed by a hash (no allocation, bounded memory whatever
//! the number of sources); two keys sharing a slot share a count, which errs on limiting.
//! Pure: the caller gives the time.

use std::net::IpAddr;

/// Slots in the table (a power of two).
const SLOTS: usize = 4096;
const WINDOW_MS: u64 = 1000;

/// What to do with one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Send an empty truncated reply instead.
    Slip,
    Drop,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    key: u64,
    window_start: u64,
    count: u32,
    over: u32,
}

/// The limiter; `per_second` 0 turns it off.
pub struct RateLimiter {
    per_second: u32,
    slip: u32,
    slots: Box<[Slot]>,
}

/// What an answer says, for counting (see the module's text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A positive answer to this name hash and type.
    Answer(u64, u16),
    /// NXDOMAIN under zone `n`.
    NxDomain(usize),
    /// Any error reply.
    Error,
}

impl RateLimiter {
    pub fn new(per_second: u32, slip: u32) -> RateLimiter {
        RateLimiter {
            per_second,
            slip,
            slots: vec![Slot::default(); if per_second == 0 { 0 } else { SLOTS }]
                .into_boxed_slice(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.per_second > 0
    }

    /// Counts one answer of `kind` to `source` at `now_ms`.
    pub fn check(&mut self, source: IpAddr, kind: Kind, now_ms: u64) -> Verdict {
        if self.per_second == 0 {
            return Verdict::Send;
        }
        let key = key(source, kind);
        let slot = &mut self.slots[(key as usize) & (SLOTS - 1)];
        if slot.key != key || now_ms.saturating_sub(slot.window_start) >= WINDOW_MS {
            *slot = Slot {
                key,
                window_start: now_ms,
                count: 0,
                over: 0,
            };
        }
        slot.count = slot.count.saturating_add(1);
        if slot.count <= self.per_second {
            return Verdict::Send;
        }
        slot.over = slot.over.wrapping_add(1);
        if self.slip > 0 && slot.over.is_multiple_of(self.slip) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

/// The network a source belongs to, with what is answered, hashed (FNV-1a).
fn key(source: IpAddr, kind: Kind) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    match source {
        IpAddr::V4(v4) => eat(&v4.octets()[..3]),
        IpAddr::V6(v6) => eat(&v6.octets()[..7]),
    }
    match kind {
        Kind::Answer(name, qtype) => {
            eat(&[1]);
            eat(&name.to_le_bytes());
            eat(&qtype.to_le_bytes());
        }
        Kind::NxDomain(zone) => {
            eat(&[2]);
            eat(&(zone as u64).to_le_bytes());
        }
        Kind::Error => eat(&[3]),
    }
    h
}

/// [`name_hash`] of a parsed name (its wire form: each label after its length).
pub fn labels_hash(name: &hickory_proto::rr::Name) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat =
        |b: u8| h = (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(0x0000_0100_0000_01b3);
    for label in name.iter() {
        eat(label.len() as u8);
        label.iter().for_each(|b| eat(*b));
    }
    eat(0);
    h
}

/// A name's hash for [`Kind::Answer`] (case-insensitive), from its wire form.
pub fn name_hash(name: &[u8]) -> u64 {
    name.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn over_the_limit_answers_are_dropped_and_some_slip() {
        let mut rl = RateLimiter::new(5, 2);
        let kind = Kind::Answer(1, 33);
        let verdicts: Vec<Verdict> = (0..11).map(|_| rl.check(ip("10.0.0.1"), kind, 0)).collect();
        assert!(verdicts[..5].iter().all(|v| *v == Verdict::Send));
        assert_eq!(
            &verdicts[5..],
            &[
                Verdict::Drop,
                Verdict::Slip,
                Verdict::Drop,
                Verdict::Slip,
                Verdict::Drop,
                Verdict::Slip
            ]
        );
        // The same /24 shares the count; the next second starts over.
        assert_eq!(rl.check(ip("10.0.0.200"), kind, 10), Verdict::Drop);
        assert_eq!(rl.check(ip("10.0.0.1"), kind, 1000), Verdict::Send);
        // Another network, or another answer, has its own count.
        assert_eq!(rl.check(ip("10.0.1.1"), kind, 10), Verdict::Send);
        assert_eq!(
            rl.check(ip("10.0.0.1"), Kind::Answer(2, 33), 10),
            Verdict::Send
        );
    }

    #[test]
    fn zero_turns_it_off_and_slip_zero_never_slips() {
        let mut off = RateLimiter::new(0, 2);
        assert!((0..10_000).all(|_| off.check(ip("::1"), Kind::Error, 0) == Verdict::Send));
        let mut strict = RateLimiter::new(1, 0);
        strict.check(ip("::1"), Kind::Error, 0);
        assert!((0..100).all(|_| strict.check(ip("::1"), Kind::Error, 0) == Verdict::Drop));
    }
}
