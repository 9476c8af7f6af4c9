//! The engine: a question and the facts of one moment (the catalog replica, which members
//! the failure detector holds down) in, the records of the answer out. Pure: no IO, no
//! clock; the order of shuffled answers comes from the seed given.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::names::{self, Lookup};
use super::registry::{DEFAULT_TTL_SECONDS, txt_value};
use crate::control::catalog::{Catalog, DnsService, Member, NodeId};
use crate::ids::NodeUrl;

/// The zones and TTL bounds the gateway answers with (from the `dns_*` settings).
#[derive(Debug, Clone)]
pub struct Zones {
    /// Each zone's labels, lowercase.
    pub labels: Vec<Vec<String>>,
    names: Vec<Name>,
    pub min_ttl: u32,
    pub max_ttl: u32,
    /// Names outside every zone are read as if under the first (the original's
    /// `dns_allow_external_names`), instead of REFUSED.
    pub allow_external: bool,
}

/// A zone list or TTL bound that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    #[error("dns zone {0:?} is not a domain name")]
    Zone(String),
    #[error("at least one dns zone is needed")]
    NoZone,
    #[error("dns_min_ttl_seconds ({0}) is above dns_max_ttl_seconds ({1})")]
    Ttl(u32, u32),
}

impl Zones {
    pub fn new(
        zones: &[String],
        min_ttl: u32,
        max_ttl: u32,
        allow_external: bool,
    ) -> Result<Zones, ZoneError> {
        if zones.is_empty() {
            return Err(ZoneError::NoZone);
        }
        if min_ttl > max_ttl {
            return Err(ZoneError::Ttl(min_ttl, max_ttl));
        }
        let labels: Vec<Vec<String>> = zones
            .iter()
            .map(|z| names::zone_labels(z).ok_or_else(|| ZoneError::Zone(z.clone())))
            .collect::<Result<_, _>>()?;
        let names = labels
            .iter()
            .map(|l| {
                let mut n = Name::from_labels(l.iter().map(String::as_bytes))
                    .map_err(|_| ZoneError::Zone(l.join(".")))?;
                n.set_fqdn(true);
                Ok(n)
            })
            .collect::<Result<_, ZoneError>>()?;
        Ok(Zones {
            labels,
            names,
            min_ttl,
            max_ttl,
            allow_external,
        })
    }

    /// `ttl` within the bounds (at least 1, as the original).
    pub fn ttl(&self, ttl: u32) -> u32 {
        ttl.clamp(self.min_ttl, self.max_ttl).max(1)
    }

    /// How long resolvers may cache a negative answer (the SOA's minimum and TTL): short,
    /// since a service registered a moment later should be found.
    pub fn negative_ttl(&self) -> u32 {
        self.ttl(5)
    }

    pub fn zone_name(&self, zone: usize) -> &Name {
        &self.names[zone]
    }
}

/// What the answer is made from, read at one moment.
pub struct Facts<'a> {
    pub catalog: &'a Catalog,
    /// Members the failure detector holds down: left out of answers.
    pub down: &'a BTreeSet<NodeId>,
    /// The SOA serial (the catalog's last applied log index).
    pub serial: u32,
    /// The cluster the asker is seen as, for the catalog's namespace policy (the gateway's
    /// own: a resolver's queries carry no identity).
    pub viewer: &'a str,
}

/// The sections of a reply (the header and question are the wire layer's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub rcode: ResponseCode,
    /// Authoritative (AA): every name under a zone; not REFUSED ones.
    pub authoritative: bool,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
    /// The namespace the policy hid from the asker (the answer is NXDOMAIN, as for a name
    /// that does not exist), for the access audit.
    pub denied: Option<String>,
}

impl Answer {
    fn refused() -> Answer {
        Answer {
            rcode: ResponseCode::Refused,
            authoritative: false,
            answers: vec![],
            authorities: vec![],
            additionals: vec![],
            denied: None,
        }
    }
}

/// Everything a known name has, by type; `None` for a name the catalog does not know.
#[derive(Default)]
struct Found {
    srv: Vec<Record>,
    addrs: Vec<Record>,
    txt: Vec<Record>,
    soa: Vec<Record>,
    /// Addresses of SRV targets.
    extra: Vec<Record>,
}

/// The answer to `qname`/`qtype` from `facts`; records of several of one kind in an order
/// drawn from `seed`.
pub fn answer(
    zones: &Zones,
    facts: &Facts<'_>,
    qname: &Name,
    qtype: RecordType,
    seed: u64,
) -> Answer {
    let lower = qname.to_lowercase();
    let labels: Vec<&[u8]> = lower.iter().collect();
    let (zone, lookup) = match names::classify(&labels, &zones.labels) {
        Some(hit) => (hit.zone, hit.lookup),
        None if zones.allow_external => {
            let rel: Vec<String> = labels
                .iter()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect();
            (0, names::lookup(&rel))
        }
        None => return Answer::refused(),
    };
    let ctx = Ctx {
        zones,
        zone,
        facts,
        owner: qname.clone(),
        denied: std::cell::RefCell::new(None),
    };
    let found = lookup.and_then(|l| ctx.found(&l));
    let soa = ctx.soa();
    let Some(found) = found else {
        return Answer {
            rcode: ResponseCode::NXDomain,
            authoritative: true,
            answers: vec![],
            authorities: vec![soa],
            additionals: vec![],
            denied: ctx.denied.into_inner(),
        };
    };
    let mut rng = SplitMix(seed);
    let mut answers = Vec::new();
    let mut additionals = Vec::new();
    let wants = |t: RecordType| qtype == t || qtype == RecordType::ANY;
    if wants(RecordType::SRV) {
        answers.extend(shuffled(found.srv, &mut rng));
        additionals.extend(found.extra);
    }
    if wants(RecordType::A) || wants(RecordType::AAAA) {
        let addrs = found.addrs.into_iter().filter(|r| wants(r.record_type()));
        answers.extend(shuffled(addrs.collect(), &mut rng));
    }
    if wants(RecordType::TXT) {
        answers.extend(found.txt);
    }
    if wants(RecordType::SOA) {
        answers.extend(found.soa);
    }
    let authorities = if answers.is_empty() {
        vec![soa]
    } else {
        vec![]
    };
    Answer {
        rcode: ResponseCode::NoError,
        authoritative: true,
        answers,
        authorities,
        additionals,
        denied: None,
    }
}

struct Ctx<'a> {
    zones: &'a Zones,
    zone: usize,
    facts: &'a Facts<'a>,
    /// The name asked, as asked (records are owned by it).
    owner: Name,
    /// A namespace the policy hid, once one was.
    denied: std::cell::RefCell<Option<String>>,
}

impl Ctx<'_> {
    fn zone(&self) -> &Name {
        self.zones.zone_name(self.zone)
    }

    fn soa(&self) -> Record {
        let zone = self.zone().clone();
        let sub = |l: &str| zone.prepend_label(l).unwrap_or_else(|_| zone.clone());
        let neg = self.zones.negative_ttl();
        let soa = SOA::new(
            sub("ns"),
            sub("hostmaster"),
            self.facts.serial,
            60,
            10,
            600,
            neg,
        );
        Record::from_rdata(zone.clone(), neg, RData::SOA(soa))
    }

    /// Whether the policy lets the asker see `namespace` (a denial is remembered).
    fn visible(&self, namespace: &str) -> bool {
        let ok = self
            .facts
            .catalog
            .policy()
            .allows(namespace, self.facts.viewer, None);
        if !ok {
            self.denied
                .borrow_mut()
                .get_or_insert_with(|| namespace.to_owned());
        }
        ok
    }

    fn found(&self, lookup: &Lookup) -> Option<Found> {
        match lookup {
            Lookup::Apex => Some(Found {
                soa: vec![self.soa()],
                ..Found::default()
            }),
            Lookup::Service { namespace, .. } | Lookup::Plain { namespace, .. }
                if !self.visible(namespace) =>
            {
                None
            }
            Lookup::Service {
                proto,
                name,
                namespace,
            } => {
                let services: Vec<&DnsService> = self
                    .services(name, namespace)
                    .filter(|s| names::protocol_matches(proto, &s.key.protocol))
                    .collect();
                self.services_found(&services, true)
            }
            Lookup::Plain { name, namespace } => {
                let services: Vec<&DnsService> = self.services(name, namespace).collect();
                self.services_found(&services, false)
            }
            Lookup::Function { proto, names } => names.iter().find_map(|n| {
                let nodes: BTreeSet<NodeId> = self
                    .facts
                    .catalog
                    .functions()
                    .filter(|(_, f)| &f.name == n)
                    .map(|(node, _)| node)
                    .collect();
                // A function's namespace for the policy is its whole name (the original's).
                if nodes.is_empty() || !self.visible(n) {
                    return None;
                }
                self.nodes_found(&nodes, proto, n)
            }),
            Lookup::Queue { proto, names } => names.iter().find_map(|n| {
                let nodes: BTreeSet<NodeId> = self
                    .facts
                    .catalog
                    .queues()
                    .filter(|q| &q.name == n)
                    .map(|q| q.owner)
                    .collect();
                if nodes.is_empty() || !self.visible(n) {
                    return None;
                }
                self.nodes_found(&nodes, proto, n)
            }),
            Lookup::Node { label } => self.node_found(label),
            Lookup::Addr(ip) => Some(Found {
                addrs: vec![self.address(self.owner.clone(), *ip, DEFAULT_TTL_SECONDS)],
                ..Found::default()
            }),
        }
    }

    fn services<'c>(
        &'c self,
        name: &'c str,
        namespace: &'c str,
    ) -> impl Iterator<Item = &'c DnsService> + 'c {
        self.facts
            .catalog
            .services()
            .filter(move |s| s.key.name == name && s.key.namespace == namespace)
    }

    /// Records of `services` (none of them known: `None`); those of members held down are
    /// left out.
    fn services_found(&self, services: &[&DnsService], srv: bool) -> Option<Found> {
        if services.is_empty() {
            return None;
        }
        let mut found = Found::default();
        let mut txt = BTreeSet::new();
        let mut extra = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for s in services
            .iter()
            .filter(|s| !self.facts.down.contains(&s.registered_by))
        {
            let ttl = self.zones.ttl(s.ttl_seconds);
            for t in &s.targets {
                let ip = t.parse::<IpAddr>().ok();
                if srv {
                    let target = match ip {
                        Some(ip) => {
                            let name = self.addr_name(ip);
                            extra.insert(name.clone(), self.address(name.clone(), ip, ttl));
                            name
                        }
                        None => host_name(t),
                    };
                    let rdata = SRV::new(s.priority, s.weight, s.key.port, target);
                    found.srv.push(Record::from_rdata(
                        self.owner.clone(),
                        ttl,
                        RData::SRV(rdata),
                    ));
                }
                if let Some(ip) = ip
                    && seen.insert(ip)
                {
                    found.addrs.push(self.address(self.owner.clone(), ip, ttl));
                }
            }
            txt.extend(service_txt(
                s,
                &self.facts.catalog.node_id_of(s.registered_by),
            ));
        }
        let ttl = services
            .iter()
            .map(|s| self.zones.ttl(s.ttl_seconds))
            .min()
            .unwrap_or(1);
        found.txt = self.txt(txt, ttl);
        found.extra = extra.into_values().collect();
        Some(found)
    }

    /// SRV to each node's client port (of the URLs whose transport `proto` matches), with
    /// their addresses; `None` if no node serves it (down ones count as serving).
    fn nodes_found(&self, nodes: &BTreeSet<NodeId>, proto: &str, what: &str) -> Option<Found> {
        if nodes.is_empty() {
            return None;
        }
        let ttl = self.zones.ttl(DEFAULT_TTL_SECONDS);
        let mut found = Found::default();
        let mut txt = BTreeSet::new();
        let mut extra = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for m in nodes
            .iter()
            .filter(|n| !self.facts.down.contains(n))
            .filter_map(|n| self.facts.catalog.member_by_id(*n))
        {
            for url in m
                .advertised_urls
                .iter()
                .filter_map(|u| NodeUrl::parse(u).ok())
            {
                if !names::protocol_matches(proto, url.scheme()) {
                    continue;
                }
                let (target, ips) = self.node_target(m, &url);
                for ip in &ips {
                    if seen.insert(*ip) {
                        found.addrs.push(self.address(self.owner.clone(), *ip, ttl));
                    }
                    extra.insert(
                        (target.clone(), *ip),
                        self.address(target.clone(), *ip, ttl),
                    );
                }
                let rdata = SRV::new(0, 0, url.port(), target);
                found.srv.push(Record::from_rdata(
                    self.owner.clone(),
                    ttl,
                    RData::SRV(rdata),
                ));
            }
            txt.extend(node_txt(m, &self.facts.catalog.node_id_of(m.id)));
        }
        txt.insert(format!("function={what}"));
        found.txt = self.txt(txt, ttl);
        found.extra = extra.into_values().collect();
        Some(found)
    }

    fn node_found(&self, label: &str) -> Option<Found> {
        let m = self.facts.catalog.members().find(|m| {
            names::node_label(&self.facts.catalog.node_id_of(m.id)) == label
                || m.advertised_urls
                    .iter()
                    .any(|u| names::node_label(u) == label)
        })?;
        let mut found = Found::default();
        if self.facts.down.contains(&m.id) {
            return Some(found);
        }
        let ttl = self.zones.ttl(DEFAULT_TTL_SECONDS);
        for url in m
            .advertised_urls
            .iter()
            .filter_map(|u| NodeUrl::parse(u).ok())
        {
            for ip in host_ips(url.host()) {
                if !found.addrs.iter().any(|r| r.data == ip.into()) {
                    found.addrs.push(self.address(self.owner.clone(), ip, ttl));
                }
            }
        }
        found.txt = self.txt(node_txt(m, &self.facts.catalog.node_id_of(m.id)), ttl);
        Some(found)
    }

    /// Where an SRV for node `m` at `url` points: `<label>.node.<zone>` with its addresses
    /// when the URL's host is an address (or `localhost`), else the host's own name.
    fn node_target(&self, m: &Member, url: &NodeUrl) -> (Name, Vec<IpAddr>) {
        let ips = host_ips(url.host());
        if ips.is_empty() {
            return (host_name(url.host()), ips);
        }
        let label = names::node_label(&self.facts.catalog.node_id_of(m.id));
        let name = self
            .zone()
            .prepend_label("node")
            .and_then(|n| n.prepend_label(label.as_str()))
            .unwrap_or_else(|_| self.zone().clone());
        (name, ips)
    }

    fn addr_name(&self, ip: IpAddr) -> Name {
        self.zone()
            .prepend_label("addr")
            .and_then(|n| n.prepend_label(names::addr_label(ip).as_str()))
            .unwrap_or_else(|_| self.zone().clone())
    }

    fn address(&self, owner: Name, ip: IpAddr, ttl: u32) -> Record {
        let rdata = match ip {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        Record::from_rdata(owner, self.zones.ttl(ttl), rdata)
    }

    /// One TXT record per item, as the original.
    fn txt(&self, items: BTreeSet<String>, ttl: u32) -> Vec<Record> {
        items
            .into_iter()
            .map(|item| {
                let rdata = TXT::new(chunks(&item));
                Record::from_rdata(self.owner.clone(), ttl, RData::TXT(rdata))
            })
            .collect()
    }
}

/// A TXT item longer than a character-string (255 bytes) spread over several, which
/// readers concatenate (RFC 7208 §3.3).
fn chunks(item: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = item;
    while rest.len() > 255 {
        let mut cut = 255;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push(rest[..cut].to_owned());
        rest = &rest[cut..];
    }
    out.push(rest.to_owned());
    out
}

/// The original's TXT items of a service.
fn service_txt(s: &DnsService, node_id: &str) -> Vec<String> {
    let mut items = vec![
        format!("namespace={}", s.key.namespace),
        format!("cluster_id={}", s.cluster_id),
        format!("node_id={node_id}"),
    ];
    if !s.tags.is_empty() {
        items.push(format!("tags={}", join(&s.tags)));
    }
    if !s.capabilities.is_empty() {
        items.push(format!("capabilities={}", join(&s.capabilities)));
    }
    items.extend(
        s.metadata
            .iter()
            .map(|(k, v)| format!("{k}={}", txt_value(v))),
    );
    items
}

fn node_txt(m: &Member, node_id: &str) -> BTreeSet<String> {
    let mut items = BTreeSet::from([
        format!("cluster_id={}", m.cluster_id),
        format!("node_id={node_id}"),
    ]);
    if !m.resources.is_empty() {
        items.insert(format!("tags={}", join(&m.resources)));
    }
    items.extend(m.advertised_urls.iter().map(|u| format!("url={u}")));
    items
}

fn join(set: &BTreeSet<String>) -> String {
    set.iter().map(String::as_str).collect::<Vec<_>>().join(",")
}

/// Addresses a URL host stands for without a lookup: an IP, or `localhost`.
fn host_ips(host: &str) -> Vec<IpAddr> {
    match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) if host.eq_ignore_ascii_case("localhost") => {
            vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
        }
        Err(_) => vec![],
    }
}

/// A host name as an absolute DNS name (checked when it was registered).
fn host_name(host: &str) -> Name {
    let mut n = Name::from_ascii(host).unwrap_or_else(|_| Name::root());
    n.set_fqdn(true);
    n
}

fn shuffled(mut v: Vec<Record>, rng: &mut SplitMix) -> Vec<Record> {
    for i in (1..v.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// SplitMix64: a few lines of well-mixed numbers from one seed, for shuffling.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::catalog::{CatalogCommand, Role, ServiceKey};
    use std::str::FromStr;

    fn member(id: u64, url: &str) -> Member {
        Member {
            id: NodeId(id),
            name: format!("n{id}"),
            cluster_id: "c".into(),
            advertised_urls: vec![url.into()],
            resources: Default::default(),
            role: Role::Voter,
        }
    }

    fn service(name: &str, by: u64, targets: &[&str]) -> DnsService {
        DnsService {
            key: ServiceKey {
                namespace: "shop".into(),
                name: name.into(),
                protocol: "tcp".into(),
                port: 80,
            },
            targets: targets.iter().map(|t| t.to_string()).collect(),
            scope: "zone".into(),
            tags: Default::default(),
            capabilities: Default::default(),
            metadata: Default::default(),
            priority: 1,
            weight: 2,
            ttl_seconds: 300,
            registered_by: NodeId(by),
            cluster_id: "c".into(),
            registration_id: "r".into(),
            registered_at_ms: 0,
        }
    }

    fn catalog() -> Catalog {
        let mut c = Catalog::default();
        for cmd in [
            CatalogCommand::UpsertMember(member(1, "ws://127.0.0.1:9001")),
            CatalogCommand::UpsertMember(member(2, "ws://10.0.0.2:9002")),
            CatalogCommand::RegisterService(service("web", 1, &["10.0.0.7", "10.0.0.8"])),
            CatalogCommand::RegisterService(service("api", 2, &["10.0.0.9"])),
        ] {
            c.apply(cmd).unwrap();
        }
        c
    }

    fn ask(c: &Catalog, down: &[u64], name: &str, t: RecordType, seed: u64) -> Answer {
        let zones = Zones::new(&["mpreg".into()], 1, 60, false).unwrap();
        let down: BTreeSet<NodeId> = down.iter().map(|d| NodeId(*d)).collect();
        let facts = Facts {
            catalog: c,
            down: &down,
            serial: 7,
            viewer: "c",
        };
        answer(&zones, &facts, &Name::from_str(name).unwrap(), t, seed)
    }

    fn data(a: &Answer) -> Vec<String> {
        a.answers.iter().map(|r| r.data.to_string()).collect()
    }

    #[test]
    fn services_of_members_held_down_are_left_out() {
        let c = catalog();
        let up = ask(&c, &[], "_svc._tcp.api.shop.mpreg.", RecordType::SRV, 1);
        assert_eq!(data(&up), vec!["1 2 80 ip4-10-0-0-9.addr.mpreg."]);
        let down = ask(&c, &[2], "_svc._tcp.api.shop.mpreg.", RecordType::SRV, 1);
        assert_eq!(down.rcode, ResponseCode::NoError, "still a known name");
        assert!(down.answers.is_empty());
        assert_eq!(down.authorities[0].record_type(), RecordType::SOA);
        // TTLs are clamped to the maximum.
        assert!(up.answers.iter().all(|r| r.ttl == 60));
    }

    #[test]
    fn answers_are_shuffled_by_the_seed_and_complete() {
        let c = catalog();
        let orders: BTreeSet<Vec<String>> = (0..32)
            .map(|seed| data(&ask(&c, &[], "web.shop.mpreg.", RecordType::A, seed)))
            .collect();
        assert_eq!(
            orders.len(),
            2,
            "both orders of two records appear: {orders:?}"
        );
        for o in &orders {
            let mut sorted = o.clone();
            sorted.sort();
            assert_eq!(sorted, vec!["10.0.0.7", "10.0.0.8"]);
        }
        let same = |seed| data(&ask(&c, &[], "web.shop.mpreg.", RecordType::A, seed));
        assert_eq!(same(5), same(5), "one seed, one order");
    }

    #[test]
    fn an_address_is_answered_once_whatever_registers_it() {
        let mut c = catalog();
        let mut udp = service("web", 1, &["10.0.0.7"]);
        udp.key.protocol = "udp".into();
        c.apply(CatalogCommand::RegisterService(udp)).unwrap();
        let mut a = data(&ask(&c, &[], "web.shop.mpreg.", RecordType::A, 3));
        a.sort();
        assert_eq!(a, vec!["10.0.0.7", "10.0.0.8"]);
        let srv = ask(&c, &[], "_svc._udp.web.shop.mpreg.", RecordType::SRV, 3);
        assert_eq!(data(&srv), vec!["1 2 80 ip4-10-0-0-7.addr.mpreg."]);
    }

    #[test]
    fn the_soa_serial_is_the_catalog_generation_and_outside_is_refused() {
        let c = catalog();
        let apex = ask(&c, &[], "mpreg.", RecordType::SOA, 0);
        assert!(data(&apex)[0].contains(" 7 "), "{:?}", data(&apex));
        let out = ask(&c, &[], "example.org.", RecordType::A, 0);
        assert_eq!(out.rcode, ResponseCode::Refused);
        assert!(!out.authoritative);
    }
}
