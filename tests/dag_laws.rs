//! Laws of the DAG planner and executor, over random acyclic requests:
//! every command runs exactly once, never before its dependencies, and the reply equals a
//! sequential evaluation of the same request.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mpreg::Function;
use mpreg::env::SystemClock;
use mpreg::protocol::Json;
use mpreg::protocol::{RpcCommand, RpcRequest};
use mpreg::registry::Registry;
use mpreg::rpc::plan::name_index;
use mpreg::rpc::resolve::{Budget, resolve};
use mpreg::rpc::{ExecLimits, execute, plan};
use proptest::prelude::*;
use serde_json::{Value, json};

/// How command `i` references dependency `j`.
#[derive(Debug, Clone, Copy)]
enum RefForm {
    Name,
    Path,
    Explicit,
    Kwarg,
}

#[derive(Debug, Clone)]
struct Spec {
    /// deps[i] = (j, form, delay of i in ms)
    deps: Vec<Vec<(usize, RefForm)>>,
    delays: Vec<u64>,
    /// Index permutation: command i is sent at position order[i].
    order: Vec<usize>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (1usize..14).prop_flat_map(|n| {
        let deps = (0..n)
            .map(|i| {
                prop::collection::vec(
                    (
                        0..i.max(1),
                        prop_oneof![
                            Just(RefForm::Name),
                            Just(RefForm::Path),
                            Just(RefForm::Explicit),
                            Just(RefForm::Kwarg)
                        ],
                    ),
                    0..(i.min(4) + 1),
                )
                .prop_map(move |v| if i == 0 { Vec::new() } else { v })
            })
            .collect::<Vec<_>>();
        let delays = prop::collection::vec(0u64..5, n);
        let order = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
        (deps, delays, order).prop_map(|(deps, delays, order)| Spec {
            deps,
            delays,
            order,
        })
    })
}

fn name(i: usize) -> String {
    format!("c{i}")
}

/// The commands of `spec`, in sending order.
fn commands(s: &Spec) -> Vec<RpcCommand> {
    let mut cmds: Vec<(usize, RpcCommand)> = (0..s.deps.len())
        .map(|i| {
            let mut inputs = vec![json!("literal-not-a-name")];
            let mut extra = Value::Null;
            for &(j, form) in &s.deps[i] {
                match form {
                    RefForm::Name => inputs.push(json!(name(j))),
                    RefForm::Path => inputs.push(json!(format!("{}.tag", name(j)))),
                    RefForm::Explicit => inputs.push(json!({"$ref": name(j)})),
                    RefForm::Kwarg => extra = json!([name(j), extra]),
                }
            }
            let cmd = RpcCommand::new(name(i), "node")
                .args(json!([format!("#{i}"), inputs, s.delays[i]]))
                .kwarg("extra", extra);
            (s.order[i], cmd)
        })
        .collect();
    cmds.sort_by_key(|(pos, _)| *pos);
    cmds.into_iter().map(|(_, c)| c).collect()
}

/// What `node` computes, as a pure function of its resolved arguments.
fn node_value(tag: &Value, inputs: &Value, extra: &Value) -> Value {
    json!({"tag": tag, "in": inputs, "extra": extra})
}

fn resolved(v: &Json, names: &mpreg::rpc::plan::NameIndex<'_>, results: &[Option<Json>]) -> Value {
    let mut unlimited = Budget {
        bytes_left: usize::MAX,
    };
    resolve(v, names, results, &mut unlimited, usize::MAX)
        .expect("small values")
        .to_value()
}

/// The reference: evaluate one ready command at a time, in sending order.
fn sequential(cmds: &[RpcCommand], deps: &[BTreeSet<usize>]) -> Vec<Value> {
    let names = name_index(cmds).unwrap();
    let mut results: Vec<Option<Json>> = vec![None; cmds.len()];
    while results.iter().any(Option::is_none) {
        let i = (0..cmds.len())
            .find(|&i| results[i].is_none() && deps[i].iter().all(|&d| results[d].is_some()))
            .expect("acyclic");
        let args = resolved(&cmds[i].args, &names, &results);
        let kwargs = resolved(&cmds[i].kwargs, &names, &results);
        results[i] = Some(Json::from(node_value(&args[0], &args[1], &kwargs["extra"])));
    }
    results.into_iter().map(|r| r.unwrap().to_value()).collect()
}

type Log = Arc<Mutex<Vec<(String, &'static str)>>>;

fn registry(log: Log) -> Registry {
    let mut r = Registry::default();
    r.register(
        Function::new(
            "node",
            move |tag: String, inputs: Value, delay_ms: u64, extra: Value| {
                let log = log.clone();
                async move {
                    let me = tag.trim_start_matches('#').to_owned();
                    log.lock().unwrap().push((me.clone(), "start"));
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    log.lock().unwrap().push((me, "end"));
                    Ok::<_, String>(node_value(&json!(tag), &inputs, &extra))
                }
            },
        )
        .params(["tag", "inputs", "delay_ms", "extra"]),
    )
    .unwrap();
    r
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn executor_matches_sequential_evaluation(s in spec()) {
        let cmds = commands(&s);
        let pos_of = |i: usize| s.order[i];
        // Dependencies in sending positions.
        let deps: Vec<BTreeSet<usize>> = {
            let mut d = vec![BTreeSet::new(); cmds.len()];
            for (i, ds) in s.deps.iter().enumerate() {
                d[pos_of(i)] = ds.iter().map(|&(j, _)| pos_of(j)).collect();
            }
            d
        };
        let p = plan(&cmds, 1000).unwrap();
        // The planner finds exactly the generated dependencies.
        let planned: Vec<BTreeSet<usize>> = p.deps.iter().map(|d| d.iter().copied().collect()).collect();
        prop_assert_eq!(&planned, &deps);
        // Levels partition the commands and respect dependencies.
        let mut level_of = vec![usize::MAX; cmds.len()];
        for (k, level) in p.levels.iter().enumerate() {
            for &i in level {
                prop_assert_eq!(level_of[i], usize::MAX);
                level_of[i] = k;
            }
        }
        for (i, ds) in deps.iter().enumerate() {
            for &d in ds {
                prop_assert!(level_of[d] < level_of[i]);
            }
        }

        let log: Log = Arc::default();
        let reg = registry(log.clone());
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        let reply = rt.block_on(execute(&reg, &SystemClock, ExecLimits::default(), RpcRequest::new("p", cmds.clone())));
        prop_assert!(reply.error.is_none(), "{:?}", reply.error);
        let expected = sequential(&cmds, &deps);
        let sinks: serde_json::Map<String, Value> = p.sinks.iter().map(|&i| (cmds[i].name.clone(), expected[i].clone())).collect();
        prop_assert_eq!(reply.r.unwrap(), sinks);

        let log = log.lock().unwrap().clone();
        let event = |who: &str, what: &str| log.iter().position(|(n, e)| n == who && *e == what);
        for i in 0..s.deps.len() {
            let starts = log.iter().filter(|(n, e)| *n == i.to_string() && *e == "start").count();
            prop_assert_eq!(starts, 1, "command c{} started {} times", i, starts);
            for &(j, _) in &s.deps[i] {
                prop_assert!(event(&j.to_string(), "end") < event(&i.to_string(), "start"),
                    "c{} started before its dependency c{} ended", i, j);
            }
        }
    }
}
