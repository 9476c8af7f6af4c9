//! The dashboard in a real browser: three `mpreg-node` processes form a cluster, headless
//! Chromium (Debian's, driven by playwright-core: `tests/browser/`) opens the first one's
//! dashboard and sees the three nodes live and a queue's depth; one is killed with SIGKILL,
//! and the page, fed by server-sent events, shows it down. A screenshot is saved in the
//! target directory.
//! `scripts/test.sh` installs Chromium and playwright-core; without them this test fails.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::process::NodeProcess;

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

#[test]
fn the_dashboard_shows_the_cluster_live_and_a_killed_node_down() {
    assert!(
        browser_dir().join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: npm ci --prefix tests/browser (scripts/test.sh does)"
    );
    let mut a = NodeProcess::start(&["--name", "alpha"], &[]);
    let dashboard = format!("{}/", a.monitoring_url());
    let b = NodeProcess::start(&["--name", "beta", "--peers", &a.url], &[]);
    let mut c = NodeProcess::start(&["--name", "gamma", "--peers", &a.url], &[]);
    // A queue on alpha with two messages: its panel shows them.
    let cli = env!("CARGO_BIN_EXE_mpreg");
    let queue = |args: &[&str]| {
        Command::new(cli)
            .arg("queue")
            .args(args)
            .args(["--url", &a.url])
            .output()
            .expect("mpreg runs")
    };
    let mut tries = 0;
    while !queue(&["create", "jobs"]).status.success() {
        // The node elects itself and registers a moment after it listens.
        tries += 1;
        assert!(tries < 400, "queue_create never succeeded");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for n in 0..2 {
        assert!(queue(&["send", "jobs", &n.to_string()]).status.success());
    }
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let mut browser = Command::new("node")
        .arg(browser_dir().join("dashboard.mjs"))
        .arg(&dashboard)
        .arg(&shot)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node (Node.js) runs");
    let mut said = BufReader::new(browser.stdout.take().expect("stdout")).lines();
    let first = said.next().expect("a line").expect("readable");
    assert_eq!(first, "three", "the page never showed three live nodes");
    let _ = c.child.kill(); // SIGKILL: no leave, the others only stop hearing it
    let _ = c.child.wait();
    let second = said.next().expect("a line").expect("readable");
    assert_eq!(second, "down gamma down", "the killed node is shown down");
    assert!(browser.wait().expect("the browser script ends").success());
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    drop((b, a));
}
