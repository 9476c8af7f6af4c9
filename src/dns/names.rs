//! What a DNS name asks for: the original's five name forms under one of the node's zones,
//! node labels that are legal DNS labels for any node URL, and names synthesized for
//! service targets given as IP addresses. Pure: no catalog, no IO.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sha2::Digest;

/// The longest label DNS allows (RFC 1035 §2.3.4).
pub const MAX_LABEL: usize = 63;

/// What a name under a zone asks for. Labels are lowercase (DNS names are
/// case-insensitive; the original matches them so).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The zone itself (its SOA).
    Apex,
    /// `_svc._<proto>.<name>.<ns…>`: the services registered as `name` in `ns`.
    Service {
        proto: String,
        name: String,
        namespace: String,
    },
    /// `<name>.<ns…>`: the same services, any protocol (addresses and TXT; no SRV).
    Plain { name: String, namespace: String },
    /// `_mpreg._<proto>.<fn>.<ns…>`: the nodes serving a function. `names` are the
    /// function names it may mean, most likely first: the original's `<ns>.<fn>`, then the
    /// labels as written (`_mpreg._tcp.math.add` for `math.add`).
    Function { proto: String, names: Vec<String> },
    /// `_queue._<proto>.<queue>.<ns…>`: queues (none are served before the queues issue).
    Queue { proto: String, names: Vec<String> },
    /// `<label>.node`: a member, by its [`node_label`].
    Node { label: String },
    /// `<ip4-…|ip6-…>.addr`: the name given to a service target that is an IP address.
    Addr(IpAddr),
}

/// A name relative to the zone it fell in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InZone {
    /// Index of the zone in the node's zone list.
    pub zone: usize,
    pub lookup: Option<Lookup>,
}

/// Where a query name falls: in one of the zones (with what it asks for, `None` when no
/// form matches, an NXDOMAIN), or outside all of them (REFUSED).
pub fn classify(labels: &[&[u8]], zones: &[Vec<String>]) -> Option<InZone> {
    // The longest zone suffix wins, as in the original.
    let (zone, depth) = zones
        .iter()
        .enumerate()
        .filter(|(_, z)| {
            z.len() <= labels.len()
                && z.iter()
                    .rev()
                    .zip(labels.iter().rev())
                    .all(|(a, b)| a.as_bytes().eq_ignore_ascii_case(b))
        })
        .max_by_key(|(_, z)| z.len())
        .map(|(i, z)| (i, z.len()))?;
    let rel: Vec<String> = labels[..labels.len() - depth]
        .iter()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect();
    Some(InZone {
        zone,
        lookup: lookup(&rel),
    })
}

/// The form of a name relative to its zone (labels lowercase).
pub fn lookup(rel: &[String]) -> Option<Lookup> {
    let r: Vec<&str> = rel.iter().map(String::as_str).collect();
    match r.as_slice() {
        [] => Some(Lookup::Apex),
        [label, "node"] => Some(Lookup::Node {
            label: (*label).to_owned(),
        }),
        [label, "addr"] => addr_of_label(label).map(Lookup::Addr),
        ["_svc", proto, name, ns @ ..] => Some(Lookup::Service {
            proto: under(proto)?,
            name: (*name).to_owned(),
            namespace: ns.join("."),
        }),
        ["_mpreg", proto, named @ ..] if !named.is_empty() => Some(Lookup::Function {
            proto: under(proto)?,
            names: readings(named),
        }),
        ["_queue", proto, named @ ..] if !named.is_empty() => Some(Lookup::Queue {
            proto: under(proto)?,
            names: readings(named),
        }),
        [name, ns @ ..] if !name.starts_with('_') => Some(Lookup::Plain {
            name: (*name).to_owned(),
            namespace: ns.join("."),
        }),
        _ => None,
    }
}

/// `_tcp` → `tcp`.
fn under(label: &str) -> Option<String> {
    label
        .strip_prefix('_')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
}

/// `[fn, ns…]` read as the original does (`ns….fn`), then as written (`fn.ns…`).
fn readings(named: &[&str]) -> Vec<String> {
    let (first, rest) = (named[0], &named[1..]);
    let original = if rest.is_empty() {
        first.to_owned()
    } else {
        format!("{}.{first}", rest.join("."))
    };
    let written = named.join(".");
    if written == original {
        vec![original]
    } else {
        vec![original, written]
    }
}

/// Whether a service registered as `registered` answers `_<asked>`: `_tcp` matches tcp,
/// tcps, ws and wss; `_udp` matches udp; anything else only itself.
pub fn protocol_matches(asked: &str, registered: &str) -> bool {
    let registered = registered.to_ascii_lowercase();
    match asked {
        "tcp" => matches!(registered.as_str(), "tcp" | "tcps" | "ws" | "wss"),
        other => registered == other,
    }
}

/// A node's label: the node id itself when it already is one (`[a-z0-9-]+`, at most 63
/// bytes), else `b32-` and its base32 (the original's form) when that fits in a label,
/// else `h-` and 24 hex digits of its SHA-256 (URLs over 36 bytes, whose base32 would be
/// an illegal label in the original). Every result is a legal label.
pub fn node_label(node_id: &str) -> String {
    let plain = node_id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if plain && !node_id.is_empty() && node_id.len() <= MAX_LABEL {
        return node_id.to_owned();
    }
    let b32 = format!(
        "b32-{}",
        data_encoding::BASE32_NOPAD
            .encode(node_id.as_bytes())
            .to_ascii_lowercase()
    );
    if b32.len() <= MAX_LABEL {
        return b32;
    }
    let digest = sha2::Sha256::digest(node_id.as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("h-{hex}")
}

/// What a node label says of its node id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// The node id, read back.
    NodeId(String),
    /// A digest: the node is found by comparing [`node_label`] of each member's id.
    Hashed,
}

/// Reverses [`node_label`] where the label holds the id; `None` for a label that no node
/// id produces.
pub fn decode_node_label(label: &str) -> Option<Decoded> {
    let label = label.to_ascii_lowercase();
    if let Some(b32) = label.strip_prefix("b32-") {
        let bytes = data_encoding::BASE32_NOPAD
            .decode(b32.to_ascii_uppercase().as_bytes())
            .ok()?;
        return String::from_utf8(bytes).ok().map(Decoded::NodeId);
    }
    if let Some(hex) = label.strip_prefix("h-") {
        return (hex.len() == 24 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then_some(Decoded::Hashed);
    }
    let plain = !label.is_empty()
        && label.len() <= MAX_LABEL
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    plain.then_some(Decoded::NodeId(label))
}

/// The label of the name given to an IP target: `ip4-10-0-0-7`, `ip6-` and the eight
/// groups in full (`ip6-2001-0db8-0000-…-0001`), so that it parses back exactly.
pub fn addr_label(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("ip4-{a}-{b}-{c}-{d}")
        }
        IpAddr::V6(v6) => {
            let groups: Vec<String> = v6.segments().iter().map(|g| format!("{g:04x}")).collect();
            format!("ip6-{}", groups.join("-"))
        }
    }
}

/// Reverses [`addr_label`].
pub fn addr_of_label(label: &str) -> Option<IpAddr> {
    if let Some(v4) = label.strip_prefix("ip4-") {
        let parts: Vec<u8> = v4
            .split('-')
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        let [a, b, c, d] = parts.as_slice() else {
            return None;
        };
        return Some(IpAddr::V4(Ipv4Addr::new(*a, *b, *c, *d)));
    }
    let v6 = label.strip_prefix("ip6-")?;
    let groups: Vec<u16> = v6
        .split('-')
        .map(|g| {
            (g.len() == 4)
                .then(|| u16::from_str_radix(g, 16).ok())
                .flatten()
        })
        .collect::<Option<_>>()?;
    let g: [u16; 8] = groups.try_into().ok()?;
    Some(IpAddr::V6(Ipv6Addr::new(
        g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7],
    )))
}

/// Whether `s` is one legal DNS label of letters, digits, hyphens and underscores (what a
/// service or namespace part may be: it becomes a label of the names above).
pub fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LABEL
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A zone setting (`mpreg`, `svc.example.com.`) as lowercase labels; `None` if a part is
/// not a label.
pub fn zone_labels(zone: &str) -> Option<Vec<String>> {
    let zone = zone.trim().trim_end_matches('.');
    if zone.is_empty() {
        return None;
    }
    zone.split('.')
        .map(|l| is_label(l).then(|| l.to_ascii_lowercase()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(name: &str) -> Vec<Vec<u8>> {
        name.split('.').map(|l| l.as_bytes().to_vec()).collect()
    }

    fn classify_str(name: &str, zones: &[&str]) -> Option<InZone> {
        let owned = labels(name);
        let refs: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        let zones: Vec<Vec<String>> = zones.iter().map(|z| zone_labels(z).unwrap()).collect();
        classify(&refs, &zones)
    }

    #[test]
    fn the_original_name_forms() {
        let z = ["mpreg"];
        let svc = classify_str("_svc._tcp.web.shop.mpreg", &z).unwrap();
        assert_eq!(
            svc.lookup,
            Some(Lookup::Service {
                proto: "tcp".into(),
                name: "web".into(),
                namespace: "shop".into()
            })
        );
        let plain = classify_str("Web.Shop.MPREG", &z).unwrap();
        assert_eq!(
            plain.lookup,
            Some(Lookup::Plain {
                name: "web".into(),
                namespace: "shop".into()
            })
        );
        let f = classify_str("_mpreg._tcp.add.math.mpreg", &z).unwrap();
        assert_eq!(
            f.lookup,
            Some(Lookup::Function {
                proto: "tcp".into(),
                names: vec!["math.add".into(), "add.math".into()]
            })
        );
        let echo = classify_str("_mpreg._tcp.echo.mpreg", &z).unwrap();
        assert_eq!(
            echo.lookup,
            Some(Lookup::Function {
                proto: "tcp".into(),
                names: vec!["echo".into()]
            })
        );
        assert_eq!(
            classify_str("abc.node.mpreg", &z).unwrap().lookup,
            Some(Lookup::Node {
                label: "abc".into()
            })
        );
        assert_eq!(
            classify_str("mpreg", &z).unwrap().lookup,
            Some(Lookup::Apex)
        );
        assert_eq!(classify_str("_x.mpreg", &z).unwrap().lookup, None);
        assert!(classify_str("example.com", &z).is_none());
    }

    #[test]
    fn the_longest_zone_wins() {
        let hit = classify_str("web.shop.svc.example", &["example", "svc.example"]).unwrap();
        assert_eq!(hit.zone, 1);
    }

    #[test]
    fn node_labels_are_legal_and_reversible() {
        for id in [
            "node-1",
            "ws://127.0.0.1:9000",
            "ws://my-long-hostname.example.com:10000",
            &"x".repeat(300),
        ] {
            let label = node_label(id);
            assert!(label.len() <= MAX_LABEL, "{label}");
            assert!(is_label(&label), "{label}");
            match decode_node_label(&label).unwrap() {
                Decoded::NodeId(back) => assert_eq!(back, id),
                Decoded::Hashed => assert!(id.len() > 36, "only long ids are hashed"),
            }
        }
        assert_eq!(
            node_label("ws://127.0.0.1:9000"),
            "b32-o5ztulzpgezdolrqfyyc4mj2heydama"
        );
    }

    #[test]
    fn addr_labels_round_trip() {
        for ip in ["10.0.0.7", "::1", "2001:db8::ff00:42:8329"] {
            let ip: IpAddr = ip.parse().unwrap();
            let label = addr_label(ip);
            assert!(is_label(&label), "{label}");
            assert_eq!(addr_of_label(&label), Some(ip));
        }
        assert_eq!(addr_of_label("ip4-1-2-3"), None);
        assert_eq!(addr_of_label("ip4-1-2-3-256"), None);
    }

    #[test]
    fn protocols_as_the_original_matches_them() {
        assert!(protocol_matches("tcp", "wss"));
        assert!(protocol_matches("tcp", "TCP"));
        assert!(!protocol_matches("udp", "tcp"));
        assert!(protocol_matches("http", "http"));
    }
}
