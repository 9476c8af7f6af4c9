//! openraft's async runtime with one change: the RNG it draws election timeouts from is a
//! ChaCha8 seeded by us, not the OS. Under turmoil every host runs on one thread, so one
//! thread-local generator reseeded per run makes elections reproducible (rust-stack.md §1).

use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::{AsyncRuntime, OptionalSend, TokioRuntime};
use rand_chacha03::ChaCha8Rng;
use rand08::{RngCore, SeedableRng};

/// Seeds threads whose generator is created after this call; each thread derives its own
/// stream from it (production threads need distinct streams, not reproducible ones).
static BASE_SEED: AtomicU64 = AtomicU64::new(0x6d70_7265_6772_6166);
static THREADS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static RNG: RefCell<ChaCha8Rng> = RefCell::new(ChaCha8Rng::seed_from_u64(
        BASE_SEED.load(Ordering::Relaxed) ^ THREADS.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9e37_79b9_7f4a_7c15),
    ));
}

/// Sets the seed for new threads and reseeds this thread's generator. The simulator calls it
/// before each run; a node calls it once at start with a value from its `Env` RNG.
pub fn seed_raft_rng(seed: u64) {
    BASE_SEED.store(seed, Ordering::Relaxed);
    RNG.with(|r| *r.borrow_mut() = ChaCha8Rng::seed_from_u64(seed));
}

/// Seeds openraft's generator from `env` (each node calls it at start): in production the
/// environment's generator is seeded from the OS, so every process draws its own election
/// timeouts (Raft §5.2 rests on them differing); in the simulator it is seeded from the
/// run's seed, so runs still replay exactly.
pub fn seed_raft_rng_from(env: &crate::env::Env) {
    seed_raft_rng(env.rng.next_u64());
}

/// The handle openraft draws from; it forwards to this thread's generator.
#[derive(Debug, Default, Clone, Copy)]
pub struct RaftRng;

impl RngCore for RaftRng {
    fn next_u32(&mut self) -> u32 {
        RNG.with(|r| r.borrow_mut().next_u32())
    }

    fn next_u64(&mut self) -> u64 {
        RNG.with(|r| r.borrow_mut().next_u64())
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        RNG.with(|r| r.borrow_mut().fill_bytes(dest))
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand08::Error> {
        RNG.with(|r| r.borrow_mut().try_fill_bytes(dest))
    }
}

/// [`TokioRuntime`] in everything but the RNG.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SeededRuntime;

impl AsyncRuntime for SeededRuntime {
    type JoinError = <TokioRuntime as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <TokioRuntime as AsyncRuntime>::Sleep;
    type Instant = <TokioRuntime as AsyncRuntime>::Instant;
    type TimeoutError = <TokioRuntime as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> =
        <TokioRuntime as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = RaftRng;
    type OneshotSender<T: OptionalSend> = <TokioRuntime as AsyncRuntime>::OneshotSender<T>;
    type OneshotReceiverError = <TokioRuntime as AsyncRuntime>::OneshotReceiverError;
    type OneshotReceiver<T: OptionalSend> = <TokioRuntime as AsyncRuntime>::OneshotReceiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        TokioRuntime::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        TokioRuntime::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        TokioRuntime::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        TokioRuntime::is_panic(join_error)
    }

    // openraft's name for its RNG hook: it returns our seeded generator, not rand's.
    fn thread_rng() -> Self::ThreadLocalRng {
        RaftRng
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        TokioRuntime::oneshot()
    }
}
