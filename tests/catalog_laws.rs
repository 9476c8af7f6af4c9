//! Laws of the catalog state machine over random command sequences: invariants hold after
//! every command, a rejected command changes nothing, and a replica restored from a snapshot
//! taken anywhere ends in the same state as one that applied the whole log.

use mpreg::ids::NodeId;
use std::collections::BTreeSet;

use mpreg::control::{
    Catalog, CatalogCommand, CatalogError, CatalogResponse, DnsService, FunctionEntry, Member,
    QueueEntry, QueueSpec, Role, ServiceKey,
};
use proptest::prelude::*;
use semver::Version;

fn member(id: u64, port: u16) -> Member {
    Member {
        id: NodeId(id),
        name: format!("n{id}"),
        cluster_id: "c".into(),
        advertised_urls: vec![format!("ws://127.0.0.1:{port}")],
        resources: BTreeSet::from([format!("r{}", id % 2)]),
        role: if id <= 3 { Role::Voter } else { Role::Learner },
    }
}

fn function(name: u8, id: u8, minor: u64) -> FunctionEntry {
    protected(name, id, minor, &[])
}

fn protected(name: u8, id: u8, minor: u64, roles: &[&str]) -> FunctionEntry {
    FunctionEntry {
        name: format!("f{name}"),
        function_id: format!("id{id}"),
        version: Version::new(1, minor, 0),
        resources: BTreeSet::new(),
        idempotent: minor.is_multiple_of(2),
        roles: roles.iter().map(|r| r.to_string()).collect(),
    }
}

fn service(name: u8, by: u64) -> DnsService {
    DnsService {
        key: ServiceKey {
            namespace: "market".into(),
            name: format!("s{name}"),
            protocol: "tcp".into(),
            port: 9000,
        },
        targets: vec!["10.0.0.1".into()],
        tags: BTreeSet::new(),
        capabilities: BTreeSet::new(),
        metadata: Default::default(),
        priority: 10,
        weight: 5,
        scope: "zone".into(),
        ttl_seconds: 30,
        registered_by: NodeId(by),
        cluster_id: "c".into(),
        registration_id: format!("r{name}"),
        registered_at_ms: 1,
    }
}

fn command() -> impl Strategy<Value = CatalogCommand> {
    let node = 1u64..6;
    prop_oneof![
        (node.clone(), 9000u16..9003)
            .prop_map(|(id, port)| CatalogCommand::UpsertMember(member(id, port))),
        node.clone()
            .prop_map(|n| CatalogCommand::RemoveMember(NodeId(n))),
        (node.clone(), any::<bool>()).prop_map(|(id, v)| CatalogCommand::SetRole {
            id: NodeId(id),
            role: if v { Role::Voter } else { Role::Learner }
        }),
        (
            node.clone(),
            prop::collection::vec((0u8..3, 0u8..2, 0u64..3, 0usize..3), 1..4)
        )
            .prop_map(|(node, fs)| {
                // Role sets that nest (none, a, a+b), so that some registrations lack roles
                // an earlier entry of their name requires and are refused.
                const ROLES: [&[&str]; 3] = [&[], &["a"], &["a", "b"]];
                CatalogCommand::RegisterFunctions {
                    node: NodeId(node),
                    functions: fs
                        .into_iter()
                        .map(|(n, i, v, r)| protected(n, i, v, ROLES[r]))
                        .collect(),
                }
            }),
        (node.clone(), 0u8..3, prop::option::of(0u64..3)).prop_map(|(node, n, v)| {
            CatalogCommand::UnregisterFunctions {
                node: NodeId(node),
                functions: vec![(format!("f{n}"), v.map(|m| Version::new(1, m, 0)))],
            }
        }),
        (0u8..3, node.clone(), 0u32..2, any::<bool>()).prop_map(|(q, owner, r, replicated)| {
            CatalogCommand::CreateQueue(QueueEntry {
                name: format!("q{q}"),
                owner: NodeId(owner),
                incarnation: 1,
                created_ms: 0,
                replicas: if replicated {
                    vec![NodeId(owner), NodeId(owner + 1), NodeId(owner + 2)]
                } else {
                    Vec::new()
                },
                spec: QueueSpec {
                    visibility_timeout_ms: 30_000,
                    max_receives: r,
                    dedup_window_ms: 0,
                    ..QueueSpec::default()
                },
            })
        }),
        (0u8..3, node.clone()).prop_map(|(q, first)| CatalogCommand::SetQueueReplicas {
            name: format!("q{q}"),
            incarnation: 1,
            replicas: vec![NodeId(first), NodeId(first + 1), NodeId(first + 2)],
        }),
        (0u8..3).prop_map(|q| CatalogCommand::DeleteQueue {
            name: format!("q{q}")
        }),
        (0u8..3, node.clone()).prop_map(|(s, by)| CatalogCommand::RegisterService(service(s, by))),
        (0u8..3).prop_map(|s| CatalogCommand::UnregisterService(service(s, 1).key)),
        // Policies, some invalid (an empty namespace): refused, changing nothing.
        (0u8..3, any::<bool>(), any::<bool>()).prop_map(|(ns, enabled, empty)| {
            CatalogCommand::SetNamespacePolicy(mpreg::control::policy::NamespacePolicy {
                enabled,
                default_allow: !enabled,
                rules: vec![mpreg::control::policy::PolicyRule {
                    namespace: if empty { " ".into() } else { format!("ns{ns}") },
                    visibility: vec!["c".into()],
                    ..Default::default()
                }],
            })
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_and_rejections_change_nothing(cmds in prop::collection::vec(command(), 0..60)) {
        let mut c = Catalog::default();
        for cmd in cmds {
            let before = c.clone();
            let removed = match &cmd {
                CatalogCommand::RemoveMember(id) => Some(*id),
                _ => None,
            };
            match c.apply(cmd) {
                Ok(()) => {
                    if let Some(id) = removed {
                        prop_assert!(c.functions().all(|(n, _)| n != id));
                        prop_assert!(c.services().all(|s| s.registered_by != id));
                        prop_assert!(c.member_by_id(id).is_none());
                    }
                }
                Err(_) => prop_assert_eq!(&c, &before),
            }
            if let Err(e) = c.check_invariants() {
                prop_assert!(false, "invariant broken: {}", e);
            }
        }
    }

    #[test]
    fn a_replica_restored_from_any_snapshot_converges(
        cmds in prop::collection::vec(command(), 0..60),
        cut in 0usize..60,
    ) {
        let cut = cut.min(cmds.len());
        let mut whole = Catalog::default();
        let outcomes: Vec<_> = cmds.iter().cloned().map(|c| whole.apply(c)).collect();
        let mut early = Catalog::default();
        for c in &cmds[..cut] {
            let _ = early.apply(c.clone());
        }
        let bytes = early.to_snapshot().unwrap();
        let mut restored = Catalog::from_snapshot(&bytes).unwrap();
        prop_assert_eq!(&restored, &early);
        let mut rest = Vec::new();
        for c in &cmds[cut..] {
            rest.push(restored.apply(c.clone()));
        }
        prop_assert_eq!(&restored, &whole);
        // The same responses too: replicas answer clients identically.
        prop_assert_eq!(&rest[..], &outcomes[cut..]);
    }
}

#[test]
fn function_ids_are_unique_per_name_across_the_cluster() {
    let mut c = Catalog::default();
    c.apply(CatalogCommand::UpsertMember(member(1, 9000)))
        .unwrap();
    c.apply(CatalogCommand::UpsertMember(member(2, 9001)))
        .unwrap();
    c.apply(CatalogCommand::RegisterFunctions {
        node: NodeId(1),
        functions: vec![function(0, 0, 0)],
    })
    .unwrap();
    let err = c
        .apply(CatalogCommand::RegisterFunctions {
            node: NodeId(2),
            functions: vec![function(0, 1, 1)],
        })
        .unwrap_err();
    assert!(err.to_string().contains("function_id"), "{err}");
    // The same id elsewhere is fine, and so is re-registering one's own entry.
    c.apply(CatalogCommand::RegisterFunctions {
        node: NodeId(2),
        functions: vec![function(0, 0, 1)],
    })
    .unwrap();
    c.apply(CatalogCommand::RegisterFunctions {
        node: NodeId(1),
        functions: vec![function(0, 0, 0)],
    })
    .unwrap();
    assert_eq!(c.functions().count(), 2);
    assert!(Catalog::from_snapshot(&[1, 2, 3]).is_err());
}

/// Issue 23, point 3: a function's roles travel with it. Once any entry of a name requires
/// roles, a registration of that name anywhere (another node, a higher version, the same
/// node's other version) must require them too, or it is refused and changes nothing; with
/// them (or more) it is accepted. Re-registering one's own entry replaces it.
#[test]
fn roles_travel_with_the_function_across_the_cluster() {
    let mut c = Catalog::default();
    for id in [1, 2] {
        c.apply(CatalogCommand::UpsertMember(member(id, 9000 + id as u16)))
            .unwrap();
    }
    c.apply(CatalogCommand::RegisterFunctions {
        node: NodeId(1),
        functions: vec![protected(0, 0, 0, &["admin"])],
    })
    .unwrap();
    let before = c.clone();
    for (node, minor, roles) in [(2, 5, &[][..]), (2, 0, &["ops"][..]), (1, 1, &[][..])] {
        let err = c
            .apply(CatalogCommand::RegisterFunctions {
                node: NodeId(node),
                functions: vec![protected(0, 0, minor, roles)],
            })
            .unwrap_err();
        assert!(
            matches!(&err, mpreg::control::CatalogError::RolesMissing { missing, .. } if missing == &["admin"]),
            "{err}"
        );
        assert_eq!(c, before, "a refusal changes nothing");
    }
    // A batch is refused whole if one of its entries lacks a role another requires.
    let err = c.apply(CatalogCommand::RegisterFunctions {
        node: NodeId(2),
        functions: vec![protected(1, 0, 0, &["x"]), protected(1, 0, 1, &[])],
    });
    assert!(err.is_err());
    assert_eq!(c, before);
    // With the roles (or more), anywhere: accepted. The owner may re-register its entry.
    c.apply(CatalogCommand::RegisterFunctions {
        node: NodeId(2),
        functions: vec![protected(0, 0, 5, &["admin", "ops"])],
    })
    .unwrap();
    // Node 2's entry now requires `ops` too: so must node 1's, when it registers again.
    let again = |roles: &[&str]| CatalogCommand::RegisterFunctions {
        node: NodeId(1),
        functions: vec![protected(0, 0, 0, roles)],
    };
    assert!(c.apply(again(&["admin"])).is_err());
    c.apply(again(&["admin", "ops"])).unwrap();
    assert_eq!(c.functions().count(), 2);
    assert!(
        c.check_registration(NodeId(2), &[protected(0, 0, 9, &[])])
            .is_err()
    );
    // Once every protected entry is gone, the name is free again.
    for node in [1, 2] {
        c.apply(CatalogCommand::UnregisterFunctions {
            node: NodeId(node),
            functions: vec![("f0".into(), None)],
        })
        .unwrap();
    }
    assert!(
        c.check_registration(NodeId(2), &[protected(0, 0, 9, &[])])
            .is_ok()
    );
}

/// The registrations' bounds: per accepting node, then in all; a replacement (same key)
/// always fits; a refusal changes nothing.
#[test]
fn service_registrations_are_bounded_per_node_and_in_all() {
    use mpreg::control::catalog::{MAX_SERVICES, MAX_SERVICES_PER_NODE};
    let mut c = Catalog::default();
    let nodes = MAX_SERVICES / MAX_SERVICES_PER_NODE + 1;
    for n in 1..=nodes as u64 {
        c.apply(CatalogCommand::UpsertMember(member(n, 9000)))
            .unwrap();
    }
    let numbered = |i: usize, by: u64| {
        let mut s = service(0, by);
        s.key.name = format!("s{i}");
        s
    };
    for i in 0..MAX_SERVICES_PER_NODE {
        c.apply(CatalogCommand::RegisterService(numbered(i, 1)))
            .unwrap();
    }
    let over = CatalogCommand::RegisterService(numbered(MAX_SERVICES_PER_NODE, 1));
    let before = c.clone();
    assert!(matches!(
        c.apply(over),
        Err(mpreg::control::CatalogError::TooManyServicesOfNode(NodeId(
            1
        )))
    ));
    assert_eq!(c, before, "a refusal changes nothing");
    let mut again = numbered(0, 1);
    again.targets = vec!["10.9.9.9".into()];
    c.apply(CatalogCommand::RegisterService(again)).unwrap();
    // The other nodes fill the catalog to its bound.
    let mut i = MAX_SERVICES_PER_NODE;
    'fill: for n in 2..=nodes as u64 {
        for _ in 0..MAX_SERVICES_PER_NODE {
            if c.services().count() == MAX_SERVICES {
                break 'fill;
            }
            c.apply(CatalogCommand::RegisterService(numbered(i, n)))
                .unwrap();
            i += 1;
        }
    }
    assert_eq!(c.services().count(), MAX_SERVICES);
    assert_eq!(
        c.apply(CatalogCommand::RegisterService(numbered(i, nodes as u64))),
        Err(mpreg::control::CatalogError::TooManyServices)
    );
    // Unregistering one makes room again.
    c.apply(CatalogCommand::UnregisterService(numbered(0, 1).key))
        .unwrap();
    c.apply(CatalogCommand::RegisterService(numbered(i, nodes as u64)))
        .unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The proposer's batches change nothing but the number of log entries: the commands
    /// cut into batches anywhere leave the catalog as applying them one by one does, and
    /// each command gets the answer it would have got alone.
    #[test]
    fn a_batch_applies_as_its_commands_one_by_one(
        cmds in prop::collection::vec(command(), 0..60),
        cuts in prop::collection::vec(1usize..8, 0..20),
    ) {
        let mut alone = Catalog::default();
        let expected: Vec<_> = cmds.iter().cloned().map(|c| alone.apply(c)).collect();
        let mut batched = Catalog::default();
        let mut got = Vec::new();
        let mut rest = &cmds[..];
        let mut sizes = cuts.into_iter().chain(std::iter::repeat(3));
        while !rest.is_empty() {
            let n = sizes.next().unwrap_or(1).min(rest.len());
            let (batch, tail) = rest.split_at(n);
            rest = tail;
            match batched.apply_entry(CatalogCommand::Batch(batch.to_vec())) {
                CatalogResponse::Batch(results) => {
                    prop_assert_eq!(results.len(), n);
                    got.extend(results);
                }
                other => prop_assert!(false, "a batch answered {:?}", other),
            }
        }
        prop_assert_eq!(&batched, &alone);
        prop_assert_eq!(got, expected);
    }
}

/// A batch inside a batch is refused, alone: its neighbours apply.
#[test]
fn a_nested_batch_is_refused_alone() {
    let mut c = Catalog::default();
    let answer = c.apply_entry(CatalogCommand::Batch(vec![
        CatalogCommand::UpsertMember(member(1, 9000)),
        CatalogCommand::Batch(vec![CatalogCommand::UpsertMember(member(2, 9001))]),
    ]));
    assert_eq!(
        answer,
        CatalogResponse::Batch(vec![Ok(()), Err(CatalogError::NestedBatch)])
    );
    assert!(c.member_by_id(NodeId(1)).is_some());
    assert!(c.member_by_id(NodeId(2)).is_none());
}

/// A single command's answer is encoded as the `Result` it replaced, in the peer codec
/// (MessagePack, what travels) and in bincode, so a node built before batches reads the
/// answers to the writes it forwards.
#[test]
fn a_single_answer_encodes_as_the_result_it_replaced() {
    use mpreg::fabric::codec;
    let cfg = bincode::config::standard();
    let pairs: Vec<(CatalogResponse, Result<(), CatalogError>)> = vec![
        (CatalogResponse::Ok(()), Ok(())),
        (
            CatalogResponse::Err(CatalogError::QueueExists("q".into())),
            Err(CatalogError::QueueExists("q".into())),
        ),
    ];
    for (new, old) in pairs {
        let wire = codec::encode(&new).unwrap();
        assert_eq!(wire, codec::encode(&old).unwrap());
        let read: Result<(), CatalogError> = codec::decode(&wire, 1 << 20).unwrap();
        assert_eq!(read, old);
        let bytes = bincode::serde::encode_to_vec(&new, cfg).unwrap();
        assert_eq!(bytes, bincode::serde::encode_to_vec(&old, cfg).unwrap());
        let (read, _): (Result<(), CatalogError>, usize) =
            bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
        assert_eq!(read, old);
    }
}
