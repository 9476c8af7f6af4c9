//! The node's view of the outside world.
//!
//! Node code reaches the network, clocks and randomness only through an [`Env`], so the very
//! same code runs on real sockets in production and on turmoil's simulated network in the
//! `sim` crate, where one seed reproduces a run exactly. This module and its production
//! implementation are the only places allowed to touch `tokio::net`, `SystemTime::now` or an
//! OS-seeded RNG (enforced by `clippy.toml`).

pub mod log_engine;
mod rng;
pub mod sqlite;
mod tokio_env;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

pub use rng::SharedRng;
pub use tokio_env::{SystemClock, TokioNet};

/// A connected, ordered byte stream (a TCP connection in production).
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static> ByteStream for T {}

/// An owned byte stream of any implementation.
pub type BoxStream = Box<dyn ByteStream>;

/// A bound TCP listener.
#[async_trait]
pub trait Listener: Send {
    /// Waits for the next inbound connection.
    async fn accept(&mut self) -> io::Result<(BoxStream, SocketAddr)>;
    /// The address actually bound (resolves port 0).
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A bound UDP socket.
#[async_trait]
pub trait Datagram: Send + Sync {
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize>;
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// Network access: TCP listen/connect and UDP bind. Addresses are `host:port` strings so
/// that simulated host names resolve inside the simulator.
#[async_trait]
pub trait Net: Send + Sync {
    async fn listen(&self, addr: &str) -> io::Result<Box<dyn Listener>>;
    async fn connect(&self, addr: &str) -> io::Result<BoxStream>;
    async fn bind_udp(&self, addr: &str) -> io::Result<Box<dyn Datagram>>;
}

/// Time. Monotonic time is `tokio::time::Instant`, which turmoil drives in simulation, so
/// only the wall clock needs an implementation.
pub trait Clock: Send + Sync {
    /// Monotonic now, for deadlines and latency measurement.
    fn now(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }
    /// Milliseconds since the Unix epoch, for timestamps shown to users.
    fn wall_ms(&self) -> u64;
}

/// Everything a node or client needs from the outside world.
#[derive(Clone)]
pub struct Env {
    pub net: Arc<dyn Net>,
    pub clock: Arc<dyn Clock>,
    pub rng: SharedRng,
}

impl Env {
    /// Real sockets, the system clock and an OS-seeded RNG.
    pub fn production() -> Env {
        Env {
            net: Arc::new(TokioNet),
            clock: Arc::new(SystemClock),
            rng: SharedRng::from_os(),
        }
    }

    /// Builds an environment from parts (the simulator's entry point).
    pub fn new(net: Arc<dyn Net>, clock: Arc<dyn Clock>, rng: SharedRng) -> Env {
        Env { net, clock, rng }
    }

    /// Wall-clock seconds since the Unix epoch as a float, the original's timestamp format.
    pub fn wall_seconds(&self) -> f64 {
        self.clock.wall_ms() as f64 / 1000.0
    }
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env").finish_non_exhaustive()
    }
}
