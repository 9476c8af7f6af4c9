//! The words for a node that every room shares: its [`NodeId`] and its [`NodeUrl`].

use std::fmt;

/// A node's id in the cluster: its Raft id (nonzero, drawn once and kept with its data).
/// Shown as 16 hex digits wherever it is shown: logs, metric labels, `node_id`s, errors.
///
/// On the wire and on disk it is the bare number (`serde(transparent)`), as it was when it
/// was a `u64`; openraft and the fabric's failure detector keep a bare `u64` (`.0`).
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<u64> for NodeId {
    fn from(id: u64) -> NodeId {
        NodeId(id)
    }
}

/// A node's `node_id` as clients see it: its name and its [`NodeId`] (`name-0123456789abcdef`).
pub fn node_id(name: &str, id: NodeId) -> String {
    format!("{name}-{id}")
}

/// A node's URL, parsed once: `ws://host:port[/path][?query]` or `wss://…` (http's URI
/// parser; the scheme is checked here and nowhere else). A peer list may also name a node
/// by its bare `host:port`, which reads as `ws://` ([`NodeUrl::peer`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeUrl {
    tls: bool,
    host: String,
    port: u16,
}

/// Why a text is not a node's URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeUrlError {
    #[error("not a URL ({0})")]
    Invalid(String),
    #[error("only ws:// and wss:// URLs are supported")]
    Scheme,
    #[error("expected ws://host:port or wss://host:port")]
    NoPort,
}

impl NodeUrl {
    pub fn parse(text: &str) -> Result<NodeUrl, NodeUrlError> {
        let uri: http::Uri = text
            .parse()
            .map_err(|e: http::uri::InvalidUri| NodeUrlError::Invalid(e.to_string()))?;
        let tls = match uri.scheme_str() {
            Some("wss") => true,
            Some("ws") => false,
            _ => return Err(NodeUrlError::Scheme),
        };
        let authority = uri.authority().ok_or(NodeUrlError::NoPort)?;
        let port = authority.port_u16().ok_or(NodeUrlError::NoPort)?;
        if authority.host().is_empty() {
            return Err(NodeUrlError::NoPort);
        }
        Ok(NodeUrl {
            tls,
            host: authority.host().to_owned(),
            port,
        })
    }

    /// A node named in a peer list: its URL, or its bare `host:port`.
    pub fn peer(text: &str) -> Result<NodeUrl, NodeUrlError> {
        if text.contains("://") {
            NodeUrl::parse(text)
        } else {
            NodeUrl::parse(&format!("ws://{text}"))
        }
    }

    /// `host:port`, where peers and clients connect (an IPv6 host in brackets).
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The host, without an IPv6 address's brackets.
    pub fn host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `wss://`: the node is reached over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// `ws` or `wss`.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "wss" } else { "ws" }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_show_as_sixteen_hex_digits() {
        assert_eq!(NodeId(0xab).to_string(), "00000000000000ab");
        assert_eq!(node_id("alpha", NodeId(1)), "alpha-0000000000000001");
    }

    #[test]
    fn node_urls_keep_host_and_port_and_refuse_other_schemes() {
        let u = NodeUrl::parse("wss://node:9000/any/path?token=t").unwrap();
        assert_eq!((u.authority(), u.is_tls()), ("node:9000".to_owned(), true));
        let v6 = NodeUrl::parse("ws://[::1]:9000?token=a").unwrap();
        assert_eq!((v6.authority().as_str(), v6.host()), ("[::1]:9000", "::1"));
        assert_eq!(NodeUrl::peer("h:1").unwrap().authority(), "h:1");
        assert_eq!(NodeUrl::parse("http://a:1"), Err(NodeUrlError::Scheme));
        assert_eq!(NodeUrl::parse("ws://nohost"), Err(NodeUrlError::NoPort));
        assert!(NodeUrl::parse("ws://").is_err());
        assert!(NodeUrl::parse("not a url").is_err());
    }
}
