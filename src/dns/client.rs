//! A small resolver for one server (`mpreg client dns-resolve`, tests): a query over UDP,
//! asked again over TCP when the answer comes back truncated, as a stub resolver does; or
//! over TCP only. Every read is bounded in bytes and time.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::wire::{UDP_PAYLOAD, query};
use crate::env::Env;

/// Why a lookup has no answer.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{0:?} is not a domain name: {1}")]
    Name(String, String),
    #[error("no answer from {server} within {seconds:.1} s")]
    Timeout { server: SocketAddr, seconds: f64 },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the answer does not parse: {0}")]
    Malformed(String),
    #[error("the answer is for another query (id {got}, asked {asked})")]
    Mismatch { got: u16, asked: u16 },
}

/// How to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// UDP, then TCP if the answer is truncated.
    Udp,
    Tcp,
}

/// What came back, and whether it took the TCP retry.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub message: Message,
    pub retried_over_tcp: bool,
}

impl Resolved {
    pub fn rcode(&self) -> ResponseCode {
        self.message.response_code
    }
}

/// Asks `server` for `qname`/`qtype`.
pub async fn resolve(
    env: &Env,
    server: SocketAddr,
    qname: &str,
    qtype: RecordType,
    via: Via,
    timeout: Duration,
) -> Result<Resolved, ResolveError> {
    let mut name =
        Name::from_ascii(qname).map_err(|e| ResolveError::Name(qname.into(), e.to_string()))?;
    name.set_fqdn(true);
    let id = (env.rng.next_u64() & 0xffff) as u16;
    let packet = query(id, &name, qtype, Some(UDP_PAYLOAD));
    let late = || ResolveError::Timeout {
        server,
        seconds: timeout.as_secs_f64(),
    };
    if via == Via::Udp {
        let message = tokio::time::timeout(timeout, udp(env, server, &packet, id))
            .await
            .map_err(|_| late())??;
        if !message.truncation {
            return Ok(Resolved {
                message,
                retried_over_tcp: false,
            });
        }
    }
    let message = tokio::time::timeout(timeout, tcp(env, server, &packet, id))
        .await
        .map_err(|_| late())??;
    Ok(Resolved {
        message,
        retried_over_tcp: via == Via::Udp,
    })
}

fn parse(bytes: &[u8], id: u16) -> Result<Message, ResolveError> {
    let m = Message::from_vec(bytes).map_err(|e| ResolveError::Malformed(e.to_string()))?;
    if m.id != id {
        return Err(ResolveError::Mismatch {
            got: m.id,
            asked: id,
        });
    }
    Ok(m)
}

async fn udp(
    env: &Env,
    server: SocketAddr,
    packet: &[u8],
    id: u16,
) -> Result<Message, ResolveError> {
    let local = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = env.net.bind_udp(local).await?;
    socket.send_to(packet, server).await?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, from) = socket.recv_from(&mut buf).await?;
        // Only the server's answer to this id counts; anything else is ignored.
        if from == server
            && let Ok(m) = parse(&buf[..n], id)
        {
            return Ok(m);
        }
    }
}

async fn tcp(
    env: &Env,
    server: SocketAddr,
    packet: &[u8],
    id: u16,
) -> Result<Message, ResolveError> {
    let mut stream = env.net.connect(&server.to_string()).await?;
    let len = u16::try_from(packet.len()).map_err(std::io::Error::other)?;
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(packet);
    stream.write_all(&frame).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await?;
    parse(&buf, id)
}

/// One answer record as the original's `dns-resolve --json` prints it.
pub fn answer_json(r: &hickory_proto::rr::Record) -> serde_json::Value {
    let name = r.name.to_string();
    serde_json::json!({
        "name": name.trim_end_matches('.'),
        "rtype": r.record_type().to_string(),
        "ttl": r.ttl,
        "rdata": r.data.to_string(),
    })
}

/// An rcode as dnslib names it (`NOERROR`, `NXDOMAIN`, …).
pub fn rcode_name(r: ResponseCode) -> String {
    match r {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => other.to_string().to_ascii_uppercase(),
    }
}
