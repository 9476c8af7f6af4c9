//! `mpreg monitor health|status|metrics|persistence|endpoints --url http://…`: reads a
//! node's admin server and prints a table (or `--json`), once or `--watch`ing.

use std::time::Duration;

use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::text::{table, text};
use crate::env::Env;

/// Largest admin response read.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Subcommand, Debug)]
pub enum MonitorCommand {
    /// Cluster health: overall status and score, members live, suspect and down
    Health(MonitorArgs),
    /// This node and the cluster: members with status, role and load
    Status(MonitorArgs),
    /// The node's Prometheus metrics, or one system's in the original's shape (--system)
    Metrics(MetricsArgs),
    /// Where the node keeps its state
    Persistence(MonitorArgs),
    /// The admin server's endpoints
    Endpoints(MonitorArgs),
    /// The DNS gateway: ports, zones and query counters
    Dns(MonitorArgs),
}

#[derive(Args, Debug)]
pub struct MonitorArgs {
    /// The admin server (what the node printed as MPREG_MONITORING_URL)
    #[arg(
        long,
        env = "MPREG_MONITORING_URL",
        default_value = "http://127.0.0.1:9090"
    )]
    pub url: String,
    /// Print the JSON the node answered instead of a table
    #[arg(long)]
    pub json: bool,
    /// Redraw every --interval seconds until interrupted
    #[arg(long)]
    pub watch: bool,
    /// Seconds between redraws with --watch
    #[arg(long, default_value_t = 2.0)]
    pub interval: f64,
    #[command(flatten)]
    pub connect: super::ConnectArgs,
}

#[derive(Args, Debug)]
pub struct MetricsArgs {
    #[command(flatten)]
    pub monitor: MonitorArgs,
    /// One system's metrics in the original's shape (`/metrics/<system>`)
    #[arg(long, value_parser = ["rpc", "queue", "cache", "transport", "unified"])]
    pub system: Option<String>,
}

/// `GET url` (http:// or https://), the body as text, or why not.
async fn get(env: &Env, url: &str, connect: &super::ConnectArgs) -> Result<(u16, String), String> {
    let (tls, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        _ => return Err(format!("`{url}` is not an http:// or https:// URL")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = env
        .net
        .connect(authority)
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    if tls {
        let files = crate::tls::ClientTlsFiles {
            ca: connect.ca.clone(),
            cert: connect.cert.clone(),
            key: connect.key.clone(),
        };
        let client = crate::tls::ClientTls::from_files(&files).map_err(|e| e.to_string())?;
        stream = client
            .connect(stream, authority)
            .await
            .map_err(|e| format!("TLS with {url}: {e}"))?;
    }
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    tokio::spawn(conn);
    let mut req = hyper::Request::get(path).header("host", authority);
    if let Some(t) = &connect.token {
        req = req.header("authorization", format!("Bearer {}", t.trim()));
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("{url}: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

pub async fn run(cmd: MonitorCommand) -> i32 {
    let system;
    let (args, path) = match &cmd {
        MonitorCommand::Health(a) => (a, "/health/summary"),
        MonitorCommand::Status(a) => (a, "/status"),
        MonitorCommand::Metrics(MetricsArgs {
            monitor,
            system: Some(name),
        }) => {
            system = format!("/metrics/{name}");
            (monitor, system.as_str())
        }
        MonitorCommand::Metrics(a) => (&a.monitor, "/metrics"),
        MonitorCommand::Persistence(a) => (a, "/metrics/persistence"),
        MonitorCommand::Endpoints(a) => (a, "/endpoints"),
        MonitorCommand::Dns(a) => (a, "/dns/metrics"),
    };
    if !(args.interval.is_finite() && args.interval > 0.0) {
        eprintln!("mpreg monitor: --interval must be a positive number of seconds");
        return 2;
    }
    let env = Env::production();
    let url = format!("{}{path}", args.url.trim_end_matches('/'));
    loop {
        let fetched = tokio::time::timeout(REQUEST_TIMEOUT, get(&env, &url, &args.connect))
            .await
            .unwrap_or_else(|_| Err(format!("{url}: no answer within {REQUEST_TIMEOUT:?}")));
        let shown = fetched.and_then(|(status, body)| render(&cmd, args.json, status, &body));
        if args.watch {
            // Redraw in place: home, clear, the new frame.
            print!("\x1b[H\x1b[2J");
        }
        match shown {
            Ok(text) => println!("{text}"),
            Err(e) if args.watch => println!("mpreg monitor: {e}"),
            Err(e) => {
                eprintln!("mpreg monitor: {e}");
                return 1;
            }
        }
        if !args.watch {
            return 0;
        }
        tokio::time::sleep(Duration::from_secs_f64(args.interval)).await;
    }
}

/// What to print for a response.
fn render(cmd: &MonitorCommand, json: bool, status: u16, body: &str) -> Result<String, String> {
    if status != 200 {
        let why = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| body.trim().to_owned());
        return Err(format!("HTTP {status}: {why}"));
    }
    if let MonitorCommand::Metrics(MetricsArgs { system: None, .. }) = cmd {
        let samples = samples(body);
        return Ok(if json {
            let map: serde_json::Map<String, Value> = samples
                .into_iter()
                .map(|(k, v)| (k, Value::from(v)))
                .collect();
            Value::Object(map).to_string()
        } else {
            table(
                &["metric", "value"],
                samples.iter().map(|(k, v)| vec![k.clone(), v.to_string()]),
            )
        });
    }
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    if json {
        return serde_json::to_string_pretty(&v).map_err(|e| e.to_string());
    }
    Ok(match cmd {
        MonitorCommand::Health(_) => health_table(&v),
        MonitorCommand::Status(_) => status_table(&v),
        MonitorCommand::Persistence(_) => persistence_table(&v),
        MonitorCommand::Endpoints(_) => table(
            &["path", "description"],
            v["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| vec![text(&e["path"]), text(&e["description"])]),
        ),
        MonitorCommand::Dns(_) => dns_table(&v["dns_gateway"]),
        MonitorCommand::Metrics(_) => system_table(&v),
    })
}

/// `/metrics/<system>`: its figures as two columns, nested ones by dotted name.
fn system_table(v: &Value) -> String {
    fn flatten(prefix: &str, v: &Value, rows: &mut Vec<Vec<String>>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&name, x, rows);
                }
            }
            other => rows.push(vec![prefix.to_owned(), text(other)]),
        }
    }
    let mut rows = Vec::new();
    let metrics = v.get("metrics").unwrap_or(v);
    flatten("", metrics, &mut rows);
    table(&[&text(&v["system"]), "value"], rows)
}

/// The samples of a Prometheus text exposition, in order (`name{labels}`, value).
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// `/dns/metrics` as two columns.
fn dns_table(g: &Value) -> String {
    if g["enabled"] != Value::Bool(true) {
        return "DNS gateway: disabled (start the node with --dns-port)".to_owned();
    }
    let zones: Vec<String> = g["zones"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    let mut rows = vec![
        vec!["status".to_owned(), text(&g["status"])],
        vec!["udp_port".to_owned(), text(&g["udp_port"])],
        vec!["tcp_port".to_owned(), text(&g["tcp_port"])],
        vec!["zones".to_owned(), zones.join(", ")],
    ];
    if let Some(m) = g["metrics"].as_object() {
        rows.extend(m.iter().map(|(k, v)| vec![k.clone(), text(v)]));
    }
    table(&["DNS gateway", "value"], rows)
}

fn health_table(v: &Value) -> String {
    let s = &v["health_summary"];
    let rows = [
        vec!["status".to_owned(), text(&s["overall"]["status"])],
        vec![
            "health score".to_owned(),
            text(&s["overall"]["health_score"]),
        ],
        vec!["members".to_owned(), text(&s["connections"]["total"])],
        vec!["members live".to_owned(), text(&s["connections"]["active"])],
    ];
    table(&["cluster", "value"], rows)
}

fn status_table(v: &Value) -> String {
    let raft = &v["raft"];
    let mut out = format!(
        "node {} ({}) in {}: raft {} term {} leader {} applied {}\n\n",
        text(&v["node"]["name"]),
        text(&v["node"]["url"]),
        text(&v["node"]["cluster_id"]),
        text(&raft["state"]),
        text(&raft["term"]),
        raft["leader"]
            .as_u64()
            .map_or("-".to_owned(), |l| crate::ids::NodeId(l).to_string()),
        text(&raft["last_applied_index"]),
    );
    let nodes = v["cluster"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    out.push_str(&table(
        &[
            "node",
            "status",
            "role",
            "leader",
            "url",
            "in flight",
            "functions",
        ],
        nodes.iter().map(|n| {
            vec![
                text(&n["name"]),
                text(&n["status"]),
                text(&n["raft_role"]),
                if n["is_leader"] == true { "yes" } else { "" }.to_owned(),
                n["advertised_urls"][0].as_str().unwrap_or("-").to_owned(),
                text(&n["load"]["inflight_requests"]),
                n["functions"].as_array().map_or(0, Vec::len).to_string(),
            ]
        }),
    ));
    out
}

fn persistence_table(v: &Value) -> String {
    let p = &v["persistence_snapshots"];
    let mut rows = vec![
        vec!["enabled".to_owned(), text(&p["enabled"])],
        vec!["mode".to_owned(), text(&p["mode"])],
    ];
    if p["enabled"] == true {
        rows.push(vec!["data dir".to_owned(), text(&p["data_dir"])]);
        rows.push(vec!["sqlite".to_owned(), text(&p["sqlite_path"])]);
        let entries = &p["fabric"]["catalog_entries"];
        for k in ["nodes", "functions", "queues"] {
            rows.push(vec![format!("catalog {k}"), text(&entries[k])]);
        }
    }
    table(&["persistence", "value"], rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_skip_comments() {
        let s = samples("# HELP x\n# TYPE x gauge\nx 1\ny{a=\"b c\"} 2.5\n\n");
        assert_eq!(s, [("x".to_owned(), 1.0), ("y{a=\"b c\"}".to_owned(), 2.5)]);
    }
}
