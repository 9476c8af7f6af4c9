//! The Python worker example (`examples/python_worker.py`) against real nodes: it registers
//! over its connection to one node, and its functions are called from another.
//!
//! Needs `python3` with the `websockets` package (`scripts/test.sh` installs it); without them the
//! test fails saying so (a test that passed without running would prove nothing).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use mpreg::{Client, ErrorCode, Settings};
use serde_json::{Value, json};

fn python_with_websockets() -> bool {
    Command::new("python3")
        .args(["-c", "import websockets"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn catalog_count(client: &Client, fun: &str) -> usize {
    let found = client
        .call("catalog_query", json!([{"name": fun}]))
        .await
        .unwrap();
    found["functions"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_worker_serves_the_cluster() {
    assert!(
        python_with_websockets(),
        "this test needs python3 with the `websockets` package (pip install websockets; \
         scripts/test.sh installs it)"
    );
    let a = start_node(
        Settings {
            name: "a".into(),
            ..test_settings()
        },
        vec![],
    )
    .await;
    let b = start_node(
        Settings {
            name: "b".into(),
            peers: vec![a.url().to_owned()],
            ..test_settings()
        },
        vec![],
    )
    .await;
    assert!(b.registered().await);
    let dir = std::env::temp_dir().join(format!("mpreg-pyworker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ready = dir.join("ready");
    let _ = std::fs::remove_file(&ready);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python_worker.py");
    let mut worker = Killed(
        Command::new("python3")
            .arg(script)
            .arg("--url")
            .arg(b.url())
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::null())
            .spawn()
            .expect("start python3"),
    );

    let client = Client::connect(a.url()).await.unwrap();
    // The worker writes the ready file when its `register` is answered, and the answer
    // comes once the catalog has committed its functions: every node can route to them.
    let mut polls = 0;
    while !ready.exists() {
        polls += 1;
        if let Ok(Some(status)) = worker.0.try_wait() {
            panic!("the Python worker exited: {status}");
        }
        assert!(
            polls < 400,
            "the Python worker's registration was never answered"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        catalog_count(&client, "word_count").await,
        1,
        "acknowledged before the catalog on the leader had it"
    );

    let counts = client
        .call("word_count", json!(["the cat and the hat"]))
        .locs(["python"])
        .await
        .unwrap();
    assert_eq!(counts, json!({"the": 2, "cat": 1, "and": 1, "hat": 1}));
    let r = client
        .request(vec![
            mpreg::RpcCommand::new("s", "shout")
                .args(json!(["hi"]))
                .kwarg("times", json!(2)),
            mpreg::RpcCommand::new("c", "word_count").args(json!(["s"])),
        ])
        .await
        .unwrap();
    assert_eq!(Value::Object(r), json!({"c": {"HI": 2}}));
    let err = client.call("shout", json!([1])).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ExecutionFailed), "{err}");
    assert!(err.to_string().contains("AttributeError"), "{err}");

    drop(worker);
    let mut polls = 0;
    while catalog_count(&client, "word_count").await != 0 {
        polls += 1;
        assert!(polls < 400, "the worker's functions stayed after it exited");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    b.shutdown().await;
    a.shutdown().await;
}
