//! A set of futures that finish in any order: `FuturesUnordered` without its spurious
//! wake-ups.
//!
//! `FuturesUnordered` wakes its own task whenever one `poll_next` has polled every future in
//! the set and none was ready (a yield, futures-rs #2333). With one request in flight that
//! is every poll that starts one: the task is queued again at once, and tokio, seeing a
//! queued task, wakes a second worker thread to steal it. On this project's 2-core machine
//! that futex round trip (two `futex` calls per forwarded call under `strace`) cost more
//! than the forwarding itself. A sentinel that is never ready keeps "every future polled"
//! from happening: it is polled once, when the set is made, and never woken again.

use std::future::{Future, Pending};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::Either;
use futures_util::stream::{FusedStream, FuturesUnordered, Stream, StreamExt};

pub(crate) struct Unordered<F: Future> {
    set: FuturesUnordered<Either<F, Pending<F::Output>>>,
}

impl<F: Future> Unordered<F> {
    pub(crate) fn new() -> Self {
        let mut set = FuturesUnordered::new();
        set.push(Either::Right(std::future::pending()));
        // Its one poll, now: later polls find it idle. (Every poll_next registers its own
        // caller's waker first, so the no-op one does not linger.)
        let waker = futures_util::task::noop_waker();
        let _ = set.poll_next_unpin(&mut Context::from_waker(&waker));
        Unordered { set }
    }

    pub(crate) fn push(&mut self, future: F) {
        self.set.push(Either::Left(future));
    }

    /// Futures not yet finished.
    pub(crate) fn len(&self) -> usize {
        self.set.len() - 1 // the sentinel
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<F: Future> Stream for Unordered<F> {
    type Item = F::Output;

    /// The next finished future's output; `None` once the set is empty.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        if self.is_empty() {
            return Poll::Ready(None);
        }
        // Never `None`: the sentinel stays.
        self.set.poll_next_unpin(cx)
    }
}

impl<F: Future> FusedStream for Unordered<F> {
    fn is_terminated(&self) -> bool {
        false // pushing more revives it, as with `FuturesUnordered`
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    struct CountWakes(AtomicUsize);
    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_pending_future_does_not_wake_the_task_and_outputs_come_out_in_finishing_order() {
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let (tx_a, rx_a) = tokio::sync::oneshot::channel::<u8>();
        let (tx_b, rx_b) = tokio::sync::oneshot::channel::<u8>();
        let mut set = Unordered::new();
        set.push(rx_a);
        set.push(rx_b);
        assert_eq!(set.len(), 2);
        // Every future polled, none ready: FuturesUnordered alone would wake the task here.
        assert!(set.poll_next_unpin(&mut cx).is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        tx_b.send(7).unwrap();
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "the finished future wakes it"
        );
        assert!(matches!(
            set.poll_next_unpin(&mut cx),
            Poll::Ready(Some(Ok(7)))
        ));
        drop(tx_a);
        assert!(matches!(
            set.poll_next_unpin(&mut cx),
            Poll::Ready(Some(Err(_)))
        ));
        assert!(set.is_empty());
        assert!(matches!(set.poll_next_unpin(&mut cx), Poll::Ready(None)));
    }
}
