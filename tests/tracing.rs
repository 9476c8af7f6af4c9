//! Trace ids across nodes: the client's `trace_id` (or one the entry node makes) reaches
//! every node a request runs on and every log line about it there, and
//! `execution_summary` names the node that ran each step, with its timing.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{code_of, raw_connect, raw_roundtrip, start_node, test_settings, wait_routable};
use mpreg::{Function, Settings};
use serde_json::{Value, json};

/// Every log line of this test binary, JSON, one per line.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// The log lines (as JSON) that mention `trace_id`.
    fn lines_of(&self, trace_id: &str) -> Vec<Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("a JSON log line"))
            .filter(|l| l["fields"]["trace_id"] == trace_id)
            .collect()
    }
}

fn messages(lines: &[Value]) -> Vec<&str> {
    lines
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_ids_cross_nodes_and_summaries_name_where_steps_ran() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter("mpreg=debug")
        .with_writer(move || writer.clone())
        .init();
    let a = start_node(
        Settings {
            name: "a".into(),
            ..test_settings()
        },
        vec![
            Function::new("far", |x: i64| async move { Ok::<_, String>(x * 10) }).params(["x"]),
            Function::new("broken", || async { Err::<i64, _>("it broke") }),
        ],
    )
    .await;
    let b = start_node(
        Settings {
            name: "b".into(),
            peers: vec![a.url().to_owned()],
            ..test_settings()
        },
        vec![Function::new("near", || async { Ok::<_, String>(4) })],
    )
    .await;
    wait_routable(&[&b], "far", 1).await;
    wait_routable(&[&b], "broken", 1).await;
    let mut ws = raw_connect(b.url()).await;

    // near runs on b, far (given near's result) on a.
    let reply = raw_roundtrip(
        &mut ws,
        &json!({"role": "rpc", "u": "r1", "trace_id": "trace-42", "include_execution_summary": true,
                "cmds": [{"name": "n", "fun": "near", "args": []},
                         {"name": "f", "fun": "far", "args": ["n"]}]})
        .to_string(),
    )
    .await;
    assert_eq!(reply["r"]["f"], 40, "{reply}");
    let summary = &reply["execution_summary"];
    assert_eq!(summary["trace_id"], "trace-42");
    assert_eq!(summary["request_id"], "r1");
    let steps = summary["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2, "{summary}");
    assert_eq!(
        (
            &steps[0]["name"],
            &steps[0]["node_id"],
            &steps[0]["forwarded"],
            &steps[0]["level"]
        ),
        (&json!("n"), &json!(b.node_id()), &json!(false), &json!(0))
    );
    assert_eq!(
        (
            &steps[1]["name"],
            &steps[1]["node_id"],
            &steps[1]["forwarded"],
            &steps[1]["level"]
        ),
        (&json!("f"), &json!(a.node_id()), &json!(true), &json!(1))
    );
    let (n_end, f_start) = (
        steps[0]["started_ms"].as_f64().unwrap() + steps[0]["duration_ms"].as_f64().unwrap(),
        steps[1]["started_ms"].as_f64().unwrap(),
    );
    assert!(f_start >= n_end - 1e-6, "f starts after n ends: {summary}");
    assert!(
        steps[1]["duration_ms"].as_f64().unwrap()
            <= summary["total_execution_time_ms"].as_f64().unwrap()
    );
    // a logged the step it ran under the client's trace id.
    assert_eq!(
        messages(&logs.lines_of("trace-42")),
        ["ran a step forwarded here"],
        "on a"
    );

    // A failure on a: both nodes' lines about it carry the id.
    let reply = raw_roundtrip(
        &mut ws,
        &json!({"role": "rpc", "u": "r2", "trace_id": "trace-43",
                "cmds": [{"name": "x", "fun": "broken", "args": []}]})
        .to_string(),
    )
    .await;
    assert_eq!(code_of(&reply), 1003, "{reply}");
    let lines = logs.lines_of("trace-43");
    let said = messages(&lines);
    assert!(
        said.contains(&"a step forwarded here did not succeed"),
        "a: {said:?}"
    );
    assert!(said.contains(&"request failed"), "b: {said:?}");

    // Without one, the entry node makes one: its id, the connection, the request's place.
    let reply = raw_roundtrip(
        &mut ws,
        &json!({"role": "rpc", "u": "r3", "include_execution_summary": true,
                "cmds": [{"name": "f", "fun": "far", "args": [1]}]})
        .to_string(),
    )
    .await;
    let made = reply["execution_summary"]["trace_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        made.starts_with(&format!("{:016x}-", b.raft_id())),
        "{made}"
    );
    assert_eq!(
        messages(&logs.lines_of(&made)),
        ["ran a step forwarded here"]
    );

    // A trace id that is not plain, or too long, is refused.
    for bad in [json!("has space"), json!("x".repeat(129)), json!("")] {
        let reply = raw_roundtrip(
            &mut ws,
            &json!({"role": "rpc", "u": "r4", "trace_id": bad,
                    "cmds": [{"name": "n", "fun": "near", "args": []}]})
            .to_string(),
        )
        .await;
        assert_eq!(code_of(&reply), 1006, "{reply}");
    }
}
