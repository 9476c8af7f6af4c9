//! `mpreg client dns-*`: the original's DNS verbs, with its flags. Registrations go to a
//! node's `dns_*` built-ins; `dns-resolve` asks a gateway directly; the node label verbs
//! work offline.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Subcommand;
use hickory_proto::rr::RecordType;
use serde_json::{Map, Value, json};

use crate::dns::client::{Via, answer_json, rcode_name, resolve};
use crate::dns::names::{Decoded, decode_node_label, node_label};

/// Variant names are the CLI verbs (`DnsRegister` is `dns-register`), as the original spells
/// them, so they share the prefix.
#[derive(Subcommand, Debug)]
#[allow(clippy::enum_variant_names)]
pub enum DnsCommand {
    /// Register a service for DNS discovery (replaces one with the same namespace, name,
    /// protocol and port)
    DnsRegister {
        #[command(flatten)]
        key: KeyArgs,
        /// Host names or IP addresses (repeat the flag)
        #[arg(long = "target")]
        targets: Vec<String>,
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long = "capability")]
        capabilities: Vec<String>,
        /// key=value (the value read as JSON when it is; a bare key is true)
        #[arg(long = "metadata")]
        metadata: Vec<String>,
        #[arg(long, default_value_t = 0)]
        priority: i64,
        #[arg(long, default_value_t = 0)]
        weight: i64,
        /// local, zone (cluster), region or global
        #[arg(long)]
        scope: Option<String>,
        /// Seconds a resolver may keep the answer (clamped by the gateway's bounds)
        #[arg(long = "ttl")]
        ttl: Option<f64>,
        #[command(flatten)]
        node: super::Target,
    },
    /// Remove a service registration
    DnsUnregister {
        #[command(flatten)]
        key: KeyArgs,
        #[command(flatten)]
        node: super::Target,
    },
    /// List registered services
    DnsList(ListArgs),
    /// Describe registered services (as dns-list)
    DnsDescribe(ListArgs),
    /// Ask a DNS gateway one question
    DnsResolve {
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// The gateway's port (what the node printed as MPREG_DNS_PORT)
        #[arg(long, env = "MPREG_DNS_PORT")]
        port: u16,
        #[arg(long)]
        qname: String,
        /// A, AAAA, SRV, TXT, SOA or ANY
        #[arg(long, default_value = "A")]
        qtype: String,
        /// Ask over TCP only (by default UDP, then TCP when the answer is truncated)
        #[arg(long, conflicts_with = "udp")]
        tcp: bool,
        /// Ask over UDP (the default)
        #[arg(long)]
        udp: bool,
        /// Seconds to wait for the answer
        #[arg(long, default_value_t = 2.0)]
        timeout: f64,
        /// Print {qname, qtype, rcode, answers} as JSON
        #[arg(long)]
        json: bool,
    },
    /// The DNS label of a node id (`<label>.node.<zone>`)
    DnsNodeEncode { node_id: String },
    /// The node id a DNS node label stands for
    DnsNodeDecode { label: String },
}

#[derive(clap::Args, Debug)]
pub struct KeyArgs {
    #[arg(long)]
    name: String,
    #[arg(long)]
    namespace: String,
    #[arg(long, default_value = "tcp")]
    protocol: String,
    #[arg(long)]
    port: i64,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[arg(long)]
    namespace: Option<String>,
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    protocol: Option<String>,
    #[arg(long)]
    port: Option<i64>,
    #[arg(long)]
    scope: Option<String>,
    #[arg(long = "tag")]
    tags: Vec<String>,
    #[arg(long = "capability")]
    capabilities: Vec<String>,
    #[arg(long)]
    limit: Option<u64>,
    #[arg(long)]
    page_token: Option<String>,
    #[command(flatten)]
    node: super::Target,
}

fn fail(e: &dyn std::fmt::Display) -> i32 {
    eprintln!("mpreg: {e}");
    1
}

/// `k=v` pairs: `v` as JSON when it parses, else a string; a bare `k` is `true`.
fn metadata(pairs: &[String]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), super::arg::parse_arg(v)),
            None => (p.clone(), Value::Bool(true)),
        })
        .collect()
}

/// Calls `fun` with `request` on the node and prints the reply.
async fn call(node: &super::Target, fun: &str, request: Value) -> i32 {
    let client = match node.client().await {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    match client.call(fun, json!([request])).await {
        Ok(v) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
            );
            0
        }
        Err(e) => fail(&e),
    }
}

/// Drops null and empty fields, as the original's client does.
fn compact(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| match v {
                    Value::Null => false,
                    Value::Array(a) => !a.is_empty(),
                    Value::String(s) => !s.is_empty(),
                    _ => true,
                })
                .collect(),
        ),
        other => other,
    }
}

pub async fn run(cmd: DnsCommand) -> i32 {
    match cmd {
        DnsCommand::DnsRegister {
            key,
            targets,
            tags,
            capabilities,
            metadata: meta,
            priority,
            weight,
            scope,
            ttl,
            node,
        } => {
            let mut req = compact(json!({
                "name": key.name, "namespace": key.namespace, "protocol": key.protocol,
                "port": key.port, "targets": targets, "tags": tags,
                "capabilities": capabilities, "scope": scope, "ttl_seconds": ttl,
                "priority": priority, "weight": weight,
            }));
            req["metadata"] = Value::Object(metadata(&meta));
            call(&node, "dns_register", req).await
        }
        DnsCommand::DnsUnregister { key, node } => {
            let req = json!({"name": key.name, "namespace": key.namespace,
                "protocol": key.protocol, "port": key.port});
            call(&node, "dns_unregister", req).await
        }
        DnsCommand::DnsList(a) => list(a, "dns_list").await,
        DnsCommand::DnsDescribe(a) => list(a, "dns_describe").await,
        DnsCommand::DnsResolve {
            host,
            port,
            qname,
            qtype,
            tcp,
            udp: _,
            timeout,
            json,
        } => dns_resolve(&host, port, &qname, &qtype, tcp, timeout, json).await,
        DnsCommand::DnsNodeEncode { node_id } => {
            println!("{}", node_label(&node_id));
            0
        }
        DnsCommand::DnsNodeDecode { label } => match decode_node_label(&label) {
            Some(Decoded::NodeId(id)) => {
                println!("{id}");
                0
            }
            Some(Decoded::Hashed) => fail(&format!(
                "{label} is a digest of a long node id: ask the gateway for \
                 {label}.node.<zone> TXT, whose node_id= record names it"
            )),
            None => fail(&format!("{label:?} is not a node label")),
        },
    }
}

async fn list(a: ListArgs, fun: &str) -> i32 {
    let req = compact(json!({
        "namespace": a.namespace, "name": a.name, "protocol": a.protocol, "port": a.port,
        "scope": a.scope, "tags": a.tags, "capabilities": a.capabilities, "limit": a.limit,
        "page_token": a.page_token,
    }));
    call(&a.node, fun, req).await
}

async fn dns_resolve(
    host: &str,
    port: u16,
    qname: &str,
    qtype: &str,
    tcp: bool,
    timeout: f64,
    as_json: bool,
) -> i32 {
    let rtype: RecordType = match qtype.to_ascii_uppercase().parse() {
        Ok(t) => t,
        Err(_) => return fail(&format!("unknown query type {qtype:?}")),
    };
    let server: SocketAddr = match format!("{host}:{port}").parse() {
        Ok(s) => s,
        // The CLI, not node code: it resolves the host name its user typed with the
        // system's resolver, as `dig @host` does (nothing here runs under the simulator).
        Err(_) => match tokio::net::lookup_host((host, port))
            .await
            .map(|mut a| a.next())
        {
            Ok(Some(s)) => s,
            _ => return fail(&format!("cannot resolve host {host:?}")),
        },
    };
    let via = if tcp { Via::Tcp } else { Via::Udp };
    let timeout = Duration::from_secs_f64(timeout.clamp(0.01, 3600.0));
    let env = crate::env::Env::production();
    let resolved = match resolve(&env, server, qname, rtype, via, timeout).await {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let rcode = rcode_name(resolved.rcode());
    let answers: Vec<Value> = resolved.message.answers.iter().map(answer_json).collect();
    if as_json {
        let out = json!({"qname": qname, "qtype": rtype.to_string(), "rcode": rcode,
            "answers": answers});
        println!("{out}");
        return 0;
    }
    if resolved.retried_over_tcp {
        eprintln!("mpreg: the UDP answer was truncated; asked again over TCP");
    }
    if answers.is_empty() {
        println!("No answers (rcode={rcode})");
        return 0;
    }
    let rows: Vec<[String; 4]> = answers
        .iter()
        .map(|a| {
            let s = |k: &str| match &a[k] {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            [s("name"), s("rtype"), s("ttl"), s("rdata")]
        })
        .collect();
    println!(
        "{}",
        super::text::table(
            &["name", "type", "ttl", "data"],
            rows.into_iter().map(Vec::from)
        )
    );
    0
}
