//! Production implementations: tokio sockets and the system clock.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)] // this file is the seam

use std::io;
use std::net::SocketAddr;

use async_trait::async_trait;

use super::{BoxStream, Clock, Datagram, Listener, Net};

/// Real TCP/UDP through tokio. Accepted and connected streams have Nagle disabled: RPC
/// replies are small and latency-bound.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioNet;

struct TokioListener(tokio::net::TcpListener);

#[async_trait]
impl Listener for TokioListener {
    async fn accept(&mut self) -> io::Result<(BoxStream, SocketAddr)> {
        let (stream, peer) = self.0.accept().await?;
        stream.set_nodelay(true)?;
        Ok((Box::new(stream), peer))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

struct TokioUdp(tokio::net::UdpSocket);

#[async_trait]
impl Datagram for TokioUdp {
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
impl Net for TokioNet {
    async fn listen(&self, addr: &str) -> io::Result<Box<dyn Listener>> {
        Ok(Box::new(TokioListener(
            tokio::net::TcpListener::bind(addr).await?,
        )))
    }

    async fn connect(&self, addr: &str) -> io::Result<BoxStream> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Box::new(stream))
    }

    async fn bind_udp(&self, addr: &str) -> io::Result<Box<dyn Datagram>> {
        Ok(Box::new(TokioUdp(tokio::net::UdpSocket::bind(addr).await?)))
    }
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn wall_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}
