//! The `mpreg-node` binary as a child process, for tests of the real binary.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const NODE: &str = env!("CARGO_BIN_EXE_mpreg-node");

/// A node process that is killed if the test fails before it is stopped.
pub struct NodeProcess {
    pub child: Child,
    pub url: String,
    /// The rest of its stdout (after `MPREG_URL=`).
    stdout: BufReader<std::process::ChildStdout>,
}

/// The value of the next line of `out`, which must start with `key`.
fn next_value(out: &mut impl BufRead, key: &str) -> String {
    let mut line = String::new();
    out.read_line(&mut line).expect("read the node's stdout");
    line.trim()
        .strip_prefix(key)
        .unwrap_or_else(|| panic!("expected {key}…, got `{line}`"))
        .to_owned()
}

impl NodeProcess {
    /// `mpreg-node --port 0 --persistence-mode memory` plus `args` and `envs`; returns once
    /// it has printed its URL.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> NodeProcess {
        NodeProcess::spawn(&["--port", "0", "--persistence-mode", "memory"], args, envs)
    }

    /// `mpreg-node` on `port` keeping its state in `data_dir` (sqlite), plus `args`: the
    /// same port and directory again restart it as it was.
    #[allow(dead_code)]
    pub fn start_sqlite(port: u16, data_dir: &std::path::Path, args: &[&str]) -> NodeProcess {
        let port = port.to_string();
        let dir = data_dir.to_str().expect("a UTF-8 path");
        let base = [
            "--port",
            &port,
            "--persistence-mode",
            "sqlite",
            "--data-dir",
            dir,
        ];
        NodeProcess::spawn(&base, args, &[])
    }

    /// SIGKILL: no drain, no leave; what it had not fsynced is lost.
    #[allow(dead_code)]
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn spawn(base: &[&str], args: &[&str], envs: &[(&str, &str)]) -> NodeProcess {
        let mut cmd = Command::new(NODE);
        cmd.args(base)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("mpreg-node starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut stdout = BufReader::new(stdout);
        let url = next_value(&mut stdout, "MPREG_URL=");
        NodeProcess { child, url, stdout }
    }

    /// The admin server's URL, the line after `MPREG_URL=` (blocks until the node prints
    /// it: only for a node that serves its admin port).
    pub fn monitoring_url(&mut self) -> String {
        next_value(&mut self.stdout, "MPREG_MONITORING_URL=")
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        self.child.wait().expect("node exits")
    }

    /// (VmRSS, VmHWM) in bytes, from /proc.
    pub fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the node is running");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{name} in /proc status"))
                * 1024
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
