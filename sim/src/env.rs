//! The simulated [`Env`]: turmoil's network, turmoil's clock, a RNG from the run's seed.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use mpreg::env::{BoxStream, Clock, Datagram, Env, Listener, Net, SharedRng};
use mpreg::fabric::ClusterSecret;

/// The secret every simulated node and tool proves in its peer hellos: the simulator runs
/// the authenticated handshake, as production does.
pub fn sim_secret() -> ClusterSecret {
    ClusterSecret::from_bytes(b"mpreg simulator cluster secret").expect("long enough")
}

/// turmoil's simulated TCP and UDP.
#[derive(Debug, Default, Clone, Copy)]
pub struct SimNet;

struct SimListener(turmoil::net::TcpListener);

#[async_trait]
impl Listener for SimListener {
    async fn accept(&mut self) -> io::Result<(BoxStream, SocketAddr)> {
        let (stream, peer) = self.0.accept().await?;
        Ok((Box::new(stream), peer))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

struct SimUdp(turmoil::net::UdpSocket);

#[async_trait]
impl Datagram for SimUdp {
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        self.0.send_to(buf, target).await
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.0.recv_from(buf).await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

#[async_trait]
impl Net for SimNet {
    async fn listen(&self, addr: &str) -> io::Result<Box<dyn Listener>> {
        Ok(Box::new(SimListener(
            turmoil::net::TcpListener::bind(addr).await?,
        )))
    }

    async fn connect(&self, addr: &str) -> io::Result<BoxStream> {
        Ok(Box::new(turmoil::net::TcpStream::connect(addr).await?))
    }

    async fn bind_udp(&self, addr: &str) -> io::Result<Box<dyn Datagram>> {
        Ok(Box::new(SimUdp(turmoil::net::UdpSocket::bind(addr).await?)))
    }
}

/// Wall time is the simulation's: its fixed epoch plus simulated elapsed time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SimClock;

impl Clock for SimClock {
    fn wall_ms(&self) -> u64 {
        turmoil::since_epoch().map_or(0, |d| d.as_millis() as u64)
    }
}

/// The environment of simulated host `host` in the run seeded with `seed`: each host gets
/// its own RNG stream derived from both, so adding a host does not shift the others.
pub fn sim_env(seed: u64, host: &str) -> Env {
    Env::new(
        Arc::new(SimNet),
        Arc::new(SimClock),
        SharedRng::seeded(mix(seed, host)),
    )
}

/// FNV-1a of the host name folded into the seed.
fn mix(seed: u64, host: &str) -> u64 {
    host.bytes().fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
