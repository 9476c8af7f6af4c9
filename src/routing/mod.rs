//! Where a command runs: the pure choice among the nodes whose catalog entries offer its
//! function (issue 4 builds the forwarding on top).
//!
//! A command asks for a name, maybe a `function_id`, a version constraint and `locs` (the
//! resources it needs). Among the catalog entries that match, the highest version offered
//! by a node that is not down wins (as on one node, where the highest matching version
//! runs; when every node offering it is down, the next version still satisfies the
//! command's constraint); among the nodes offering that version:
//!
//! 1. nodes known to be down are never chosen, and alive ones are preferred to suspect ones;
//! 2. the local node runs it if it can (no hop);
//! 3. otherwise "power of two choices": two distinct candidates drawn with the caller's
//!    (seeded) randomness, the less loaded one wins (ties: the first drawn). This spreads load
//!    almost as well as asking everyone, without herding on one stale "least loaded" node.
//!    Load is the expected wait for one more call: (in flight + 1) × (the node's recent step
//!    latency + [`HOP_US`]), so a node whose steps run slow gets fewer of them, and a node
//!    that reported no latency yet is judged by its in-flight count.
//!
//! "Not found" is an answer about this moment's view; callers must not cache it.

/// The failure detector lives with the peer links (`fabric::liveness`).
pub use crate::fabric::liveness;

use std::collections::{BTreeMap, BTreeSet};

use semver::Version;

use crate::control::{Catalog, NodeId};
use crate::registry::Query;

pub use crate::fabric::liveness::Liveness;

/// What a command asks for.
#[derive(Debug, Clone, Copy)]
/// The cluster as the router sees it at one moment.
pub struct View<'a> {
    pub catalog: &'a Catalog,
    /// This node.
    pub local: NodeId,
    /// Nodes missing here count as alive (a new member has not been probed yet).
    pub liveness: &'a BTreeMap<NodeId, Liveness>,
    /// In-flight requests per node (missing: 0).
    pub load: &'a BTreeMap<NodeId, u64>,
    /// Recent step latency per node, µs (missing: 0, none reported yet).
    pub latency_us: &'a BTreeMap<NodeId, u64>,
}

/// What one call costs a node besides running its step (µs): the hop, both ways, on a LAN.
/// It keeps small latency differences from outweighing queue lengths.
pub const HOP_US: u64 = 200;

/// Why no node was chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoRoute {
    #[error("no node offers a function that matches")]
    NotFound,
    #[error("every node that offers it is down")]
    AllDown,
}

/// The nodes offering the highest matching version, with that version.
pub fn candidates(catalog: &Catalog, want: Query<'_>) -> Option<(Version, Vec<NodeId>)> {
    let mut best: Option<(Version, Vec<NodeId>)> = None;
    for (node, f) in catalog.functions().filter(|(_, f)| want.accepts(f.offer())) {
        match &mut best {
            Some((v, nodes)) if *v == f.version => {
                if nodes.last() != Some(&node) {
                    nodes.push(node);
                }
            }
            Some((v, _)) if *v > f.version => {}
            _ => best = Some((f.version.clone(), vec![node])),
        }
    }
    best
}

/// Where a step goes: the node, the version it offers, and whether that function may run
/// twice for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub node: NodeId,
    pub version: Version,
    pub idempotent: bool,
}

/// [`choose`], with what the chosen node offers.
pub fn route(
    view: &View<'_>,
    want: Query<'_>,
    draw: &mut impl FnMut() -> u64,
) -> Result<Route, NoRoute> {
    let node = choose(view, want, draw)?;
    // The chosen node offers the highest matching version; that is its best entry.
    let (version, idempotent) = view
        .catalog
        .functions()
        .filter(|(n, f)| *n == node && want.accepts(f.offer()))
        .map(|(_, f)| (f.version.clone(), f.idempotent))
        .max()
        .ok_or(NoRoute::NotFound)?;
    Ok(Route {
        node,
        version,
        idempotent,
    })
}

/// Chooses the node for one command; `draw` is the caller's seeded randomness.
pub fn choose(
    view: &View<'_>,
    want: Query<'_>,
    draw: &mut impl FnMut() -> u64,
) -> Result<NodeId, NoRoute> {
    let liveness = |n: &NodeId| {
        if *n == view.local {
            Liveness::Alive
        } else {
            view.liveness.get(n).copied().unwrap_or(Liveness::Alive)
        }
    };
    let mut by_version: BTreeMap<&Version, BTreeSet<NodeId>> = BTreeMap::new();
    for (node, f) in view
        .catalog
        .functions()
        .filter(|(_, f)| want.accepts(f.offer()))
    {
        by_version.entry(&f.version).or_default().insert(node);
    }
    if by_version.is_empty() {
        return Err(NoRoute::NotFound);
    }
    // The highest version with a node that is not down, and the best liveness among its nodes.
    let (best, nodes) = by_version
        .into_values()
        .rev()
        .find_map(|nodes| {
            let best = nodes
                .iter()
                .map(liveness)
                .filter(|l| *l != Liveness::Down)
                .min()?;
            Some((best, nodes))
        })
        .ok_or(NoRoute::AllDown)?;
    let eligible: Vec<NodeId> = nodes.into_iter().filter(|n| liveness(n) == best).collect();
    if eligible.contains(&view.local) {
        return Ok(view.local);
    }
    let load = |n: NodeId| {
        let inflight = view.load.get(&n).copied().unwrap_or(0);
        let latency = view.latency_us.get(&n).copied().unwrap_or(0);
        inflight
            .saturating_add(1)
            .saturating_mul(latency.saturating_add(HOP_US))
    };
    match eligible.len() {
        0 => Err(NoRoute::AllDown),
        1 => Ok(eligible[0]),
        len => {
            let i = (draw() % len as u64) as usize;
            // A second, different index: offset by 1..len.
            let j = (i + 1 + (draw() % (len as u64 - 1)) as usize) % len;
            let (a, b) = (eligible[i], eligible[j]);
            Ok(match load(a).cmp(&load(b)) {
                std::cmp::Ordering::Less => a,
                std::cmp::Ordering::Greater => b,
                // The first draw: ties (an idle cluster) spread at random too.
                std::cmp::Ordering::Equal => a,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{CatalogCommand, FunctionEntry, Member, Role};

    fn member(id: u64) -> CatalogCommand {
        CatalogCommand::UpsertMember(Member {
            id: NodeId(id),
            name: format!("n{id}"),
            cluster_id: "c".into(),
            advertised_urls: vec![],
            resources: BTreeSet::new(),
            role: Role::Voter,
        })
    }

    fn offer(node: u64, version: &str, resources: &[&str]) -> CatalogCommand {
        CatalogCommand::RegisterFunctions {
            node: NodeId(node),
            functions: vec![FunctionEntry {
                name: "f".into(),
                function_id: "f".into(),
                version: Version::parse(version).unwrap(),
                resources: resources.iter().map(|r| r.to_string()).collect(),
                idempotent: false,
                roles: Default::default(),
            }],
        }
    }

    fn catalog(cmds: Vec<CatalogCommand>) -> Catalog {
        let mut c = Catalog::default();
        for cmd in cmds {
            c.apply(cmd).unwrap();
        }
        c
    }

    fn want<'a>(locs: &'a [String]) -> Query<'a> {
        Query::call("f", None, None, locs)
    }

    /// A deterministic draw for tests.
    fn counter() -> impl FnMut() -> u64 {
        let mut x = 0u64;
        move || {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            x >> 11
        }
    }

    #[test]
    fn the_highest_version_anywhere_wins_and_locs_filter() {
        let c = catalog(vec![
            member(1),
            member(2),
            member(3),
            offer(1, "1.0.0", &["cpu"]),
            offer(2, "2.0.0", &["gpu"]),
            offer(3, "2.0.0", &["cpu"]),
        ]);
        assert_eq!(
            candidates(&c, want(&[])),
            Some((Version::new(2, 0, 0), vec![NodeId(2), NodeId(3)]))
        );
        let cpu = ["cpu".to_string()];
        assert_eq!(
            candidates(&c, want(&cpu)),
            Some((Version::new(2, 0, 0), vec![NodeId(3)]))
        );
        let tpu = ["tpu".to_string()];
        assert_eq!(candidates(&c, want(&tpu)), None);
    }

    #[test]
    fn local_first_down_never_suspect_last() {
        let c = catalog(vec![
            member(1),
            member(2),
            member(3),
            offer(1, "1.0.0", &[]),
            offer(2, "1.0.0", &[]),
            offer(3, "1.0.0", &[]),
        ]);
        let load = BTreeMap::new();
        let mut live = BTreeMap::new();
        let view = |local, live: &BTreeMap<NodeId, Liveness>| {
            choose(
                &View {
                    catalog: &c,
                    local,
                    liveness: live,
                    load: &load,
                    latency_us: &BTreeMap::new(),
                },
                want(&[]),
                &mut counter(),
            )
        };
        assert_eq!(view(NodeId(2), &live), Ok(NodeId(2)));
        live.insert(NodeId(2), Liveness::Down);
        live.insert(NodeId(3), Liveness::Suspect);
        assert_eq!(view(NodeId(9), &live), Ok(NodeId(1)), "alive beats suspect");
        live.insert(NodeId(1), Liveness::Down);
        assert_eq!(view(NodeId(9), &live), Ok(NodeId(3)), "suspect beats down");
        live.insert(NodeId(3), Liveness::Down);
        assert_eq!(view(NodeId(9), &live), Err(NoRoute::AllDown));
    }

    #[test]
    fn a_lower_version_serves_when_every_node_of_the_highest_is_down() {
        let c = catalog(vec![
            member(1),
            member(2),
            offer(1, "2.0.0", &[]),
            offer(2, "1.0.0", &[]),
        ]);
        let load = BTreeMap::new();
        let mut live = BTreeMap::new();
        let pick = |live: &BTreeMap<NodeId, Liveness>| {
            let view = View {
                catalog: &c,
                local: NodeId(9),
                liveness: live,
                load: &load,
                latency_us: &BTreeMap::new(),
            };
            route(&view, want(&[]), &mut counter()).map(|r| (r.node, r.version))
        };
        assert_eq!(pick(&live), Ok((NodeId(1), Version::new(2, 0, 0))));
        live.insert(NodeId(1), Liveness::Suspect);
        assert_eq!(
            pick(&live),
            Ok((NodeId(1), Version::new(2, 0, 0))),
            "suspect still serves"
        );
        live.insert(NodeId(1), Liveness::Down);
        assert_eq!(pick(&live), Ok((NodeId(2), Version::new(1, 0, 0))));
        live.insert(NodeId(2), Liveness::Down);
        assert_eq!(pick(&live), Err(NoRoute::AllDown));
    }

    #[test]
    fn two_choices_take_the_less_loaded() {
        let c = catalog(vec![
            member(1),
            member(2),
            offer(1, "1.0.0", &[]),
            offer(2, "1.0.0", &[]),
        ]);
        let live = BTreeMap::new();
        let load = BTreeMap::from([(NodeId(1), 10), (NodeId(2), 3)]);
        let v = View {
            catalog: &c,
            local: NodeId(9),
            liveness: &live,
            load: &load,
            latency_us: &BTreeMap::new(),
        };
        let mut draw = counter();
        for _ in 0..20 {
            assert_eq!(choose(&v, want(&[]), &mut draw), Ok(NodeId(2)));
        }
    }

    #[test]
    fn slow_steps_count_as_load() {
        let c = catalog(vec![
            member(1),
            member(2),
            offer(1, "1.0.0", &[]),
            offer(2, "1.0.0", &[]),
        ]);
        let live = BTreeMap::new();
        let pick = |load: &BTreeMap<NodeId, u64>, latency_us: &BTreeMap<NodeId, u64>| {
            let v = View {
                catalog: &c,
                local: NodeId(9),
                liveness: &live,
                load,
                latency_us,
            };
            let mut draw = counter();
            (0..20)
                .map(|_| choose(&v, want(&[]), &mut draw).unwrap())
                .collect::<BTreeSet<_>>()
        };
        let idle = BTreeMap::new();
        // Node 2's steps take 5 ms: idle, node 1 wins every time.
        let latency = BTreeMap::from([(NodeId(1), 100), (NodeId(2), 5_000)]);
        assert_eq!(pick(&idle, &latency), BTreeSet::from([NodeId(1)]));
        // Ten calls queued on node 1 (11 × 300 µs) still beat one more on node 2 (5.2 ms).
        let busy = BTreeMap::from([(NodeId(1), 10)]);
        assert_eq!(pick(&busy, &latency), BTreeSet::from([NodeId(1)]));
        // Thirty do not (31 × 300 µs > 5.2 ms).
        let busier = BTreeMap::from([(NodeId(1), 30)]);
        assert_eq!(pick(&busier, &latency), BTreeSet::from([NodeId(2)]));
    }

    #[test]
    fn equal_loads_spread_over_every_candidate() {
        let c = catalog(vec![
            member(1),
            member(2),
            member(3),
            member(4),
            offer(1, "1.0.0", &[]),
            offer(2, "1.0.0", &[]),
            offer(3, "1.0.0", &[]),
            offer(4, "1.0.0", &[]),
        ]);
        let live = BTreeMap::new();
        let mut load = BTreeMap::new();
        let mut draw = counter();
        let mut chosen = BTreeMap::new();
        for _ in 0..400 {
            let n = choose(
                &View {
                    catalog: &c,
                    local: NodeId(9),
                    liveness: &live,
                    load: &load,
                    latency_us: &BTreeMap::new(),
                },
                want(&[]),
                &mut draw,
            )
            .unwrap();
            // The chosen node gets busier, as a forwarded call would make it.
            *load.entry(n).or_insert(0) += 1;
            *chosen.entry(n).or_insert(0u32) += 1;
        }
        assert_eq!(chosen.len(), 4, "{chosen:?}");
        let (min, max) = (chosen.values().min(), chosen.values().max());
        assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 10), "{chosen:?}");
    }

    proptest::proptest! {
        /// Whatever the catalog, liveness and load: a chosen node offers a matching entry of
        /// the highest matching version that a node not down offers, and is not down; the
        /// local node wins when it is among the best-liveness candidates of that version;
        /// "all down" only when every offer is down.
        #[test]
        fn choices_obey_the_rules(
            offers in proptest::collection::vec((1u64..6, 0u64..3, proptest::bool::ANY), 0..12),
            down in proptest::collection::btree_set(1u64..6, 0..6),
            suspect in proptest::collection::btree_set(1u64..6, 0..6),
            loads in proptest::collection::btree_map(1u64..6, 0u64..5, 0..6),
            local in 1u64..7,
            seed in proptest::num::u64::ANY,
        ) {
            let mut cmds: Vec<CatalogCommand> = (1..6).map(member).collect();
            for (node, minor, gpu) in &offers {
                let res: &[&str] = if *gpu { &["gpu"] } else { &[] };
                cmds.push(offer(*node, &format!("1.{minor}.0"), res));
            }
            let c = catalog(cmds);
            let mut live = BTreeMap::new();
            for n in &suspect { live.insert(NodeId(*n), Liveness::Suspect); }
            for n in &down { live.insert(NodeId(*n), Liveness::Down); }
            let gpu = ["gpu".to_string()];
            for locs in [&[][..], &gpu[..]] {
                let w = want(locs);
                let mut x = seed;
                let mut draw = move || { x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1); x >> 11 };
                let local = NodeId(local);
                let loads: BTreeMap<NodeId, u64> = loads.iter().map(|(n, l)| (NodeId(*n), *l)).collect();
                let v = View { catalog: &c, local, liveness: &live, load: &loads, latency_us: &BTreeMap::new() };
                let up = |m: &NodeId| *m == local || live.get(m) != Some(&Liveness::Down);
                // The highest matching version some node not down offers, with its nodes.
                let offers: Vec<(NodeId, Version)> = c.functions().filter(|(_, f)| w.accepts(f.offer())).map(|(m, f)| (m, f.version.clone())).collect();
                let version = offers.iter().filter(|(m, _)| up(m)).map(|(_, v)| v.clone()).max();
                let nodes: BTreeSet<NodeId> = offers.iter().filter(|(_, v)| Some(v) == version.as_ref()).map(|(m, _)| *m).collect();
                match (choose(&v, w, &mut draw), &version) {
                    (Ok(n), Some(_)) => {
                        proptest::prop_assert!(nodes.contains(&n));
                        proptest::prop_assert!(up(&n));
                        // The local node counts as alive, so it is always among the best.
                        if nodes.contains(&local) {
                            proptest::prop_assert_eq!(n, local);
                        }
                    }
                    (Err(NoRoute::NotFound), None) => proptest::prop_assert!(offers.is_empty()),
                    (Err(NoRoute::AllDown), None) => proptest::prop_assert!(!offers.is_empty()),
                    (got, version) => proptest::prop_assert!(false, "{got:?} for {version:?} of {offers:?}"),
                }
            }
        }
    }
}
