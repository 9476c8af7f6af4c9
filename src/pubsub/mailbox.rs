//! What waits for one subscribing connection: notifications, bounded in bytes. A publish
//! never waits for a subscriber: when the mailbox is over its bound the oldest
//! notifications are dropped (and counted), so a slow subscriber loses its own backlog and
//! slows no one else.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<String>,
    bytes: usize,
}

#[derive(Debug)]
pub struct Mailbox {
    queue: Mutex<Queue>,
    waker: AtomicWaker,
    max_bytes: usize,
    /// Overflow closes the connection instead of dropping the oldest.
    disconnect: bool,
    /// Set when, with `disconnect`, a notification did not fit: the connection closes.
    pub overflowed: std::sync::atomic::AtomicBool,
    /// Notifications dropped for want of room.
    pub dropped: AtomicU64,
    /// Notifications handed to the connection.
    pub delivered: AtomicU64,
}

impl Mailbox {
    /// A mailbox of `max_bytes`; over it, the oldest notifications are dropped, or with
    /// `disconnect` the mailbox says it overflowed (and takes nothing more).
    pub fn new(max_bytes: usize, disconnect: bool) -> Mailbox {
        Mailbox {
            queue: Mutex::default(),
            waker: AtomicWaker::new(),
            max_bytes,
            disconnect,
            overflowed: std::sync::atomic::AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
        }
    }

    /// Queues `text`, dropping the oldest while over the bound (the newest always stays).
    pub fn push(&self, text: String) {
        let mut dropped = 0;
        {
            let mut q = self.queue.lock();
            if self.disconnect && q.bytes + text.len() > self.max_bytes && !q.items.is_empty() {
                self.overflowed.store(true, Ordering::Relaxed);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                drop(q);
                self.waker.wake();
                return;
            }
            q.bytes += text.len();
            q.items.push_back(text);
            while q.bytes > self.max_bytes && q.items.len() > 1 {
                if let Some(old) = q.items.pop_front() {
                    q.bytes -= old.len();
                    dropped += 1;
                }
            }
        }
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        self.waker.wake();
    }

    /// Queues `text` only if it fits without dropping anything (a backlog message: one that
    /// does not fit is not worth a live one, nor a disconnect).
    pub fn offer(&self, text: String) -> bool {
        {
            let mut q = self.queue.lock();
            if q.bytes + text.len() > self.max_bytes {
                return false;
            }
            q.bytes += text.len();
            q.items.push_back(text);
        }
        self.waker.wake();
        true
    }

    /// The bound, in bytes.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The next notification, or `Pending` (woken by the next push).
    pub fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<String> {
        self.waker.register(cx.waker());
        match self.pop() {
            Some(t) => Poll::Ready(t),
            None => Poll::Pending,
        }
    }

    pub fn pop(&self) -> Option<String> {
        let mut q = self.queue.lock();
        let t = q.items.pop_front()?;
        q.bytes -= t.len();
        drop(q);
        self.delivered.fetch_add(1, Ordering::Relaxed);
        Some(t)
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> usize {
        self.queue.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_its_bound_the_oldest_go_and_are_counted() {
        let m = Mailbox::new(10, false);
        m.push("aaaa".into());
        m.push("bbbb".into());
        m.push("cccc".into()); // 12 bytes: aaaa goes
        assert_eq!(m.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(m.bytes(), 8);
        assert_eq!(m.pop().as_deref(), Some("bbbb"));
        m.push("x".repeat(50)); // larger than the bound alone: it stays, cccc goes
        assert_eq!(m.pop(), Some("x".repeat(50)));
        assert_eq!(m.pop(), None);
        assert_eq!(m.dropped.load(Ordering::Relaxed), 2);
        assert_eq!(m.delivered.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn with_disconnect_an_overflow_is_reported_not_absorbed() {
        let m = Mailbox::new(10, true);
        m.push("aaaa".into());
        m.push("bbbb".into());
        assert!(!m.overflowed.load(Ordering::Relaxed));
        m.push("cccc".into());
        assert!(m.overflowed.load(Ordering::Relaxed));
        assert_eq!(
            m.pop().as_deref(),
            Some("aaaa"),
            "nothing queued was dropped"
        );
    }
}
