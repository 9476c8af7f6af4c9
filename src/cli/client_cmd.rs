//! `mpreg client …`: one call or one request file, printed as JSON; topic subscribe and
//! publish.

use std::path::PathBuf;
use std::time::Duration;

use super::arg::parse_arg;
use clap::Subcommand;
use serde_json::Value;

use crate::client::{Client, ClientError};
use crate::protocol::RpcCommand;

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Call one function: ARGS are JSON values, or plain strings when not valid JSON
    Call {
        /// Function name
        fun: String,
        /// Positional arguments
        args: Vec<String>,
        /// Node URL
        #[arg(long, env = "MPREG_URL", default_value = "ws://127.0.0.1:9000")]
        url: String,
        /// Required resources, comma-separated
        #[arg(long, value_delimiter = ',')]
        locs: Vec<String>,
        /// Required function_id
        #[arg(long)]
        function_id: Option<String>,
        /// Version constraint, e.g. ">=1.0.0,<2.0.0"
        #[arg(long = "version", value_name = "CONSTRAINT")]
        version_constraint: Option<String>,
        /// Deadline in milliseconds
        #[arg(long)]
        timeout_ms: Option<u64>,
        #[command(flatten)]
        connect: super::ConnectArgs,
    },
    /// Send a request from a JSON file: an array of commands, or an object with `cmds`
    Request {
        #[arg(long)]
        file: PathBuf,
        /// Node URL
        #[arg(long, env = "MPREG_URL", default_value = "ws://127.0.0.1:9000")]
        url: String,
        /// Deadline in milliseconds
        #[arg(long)]
        timeout_ms: Option<u64>,
        #[command(flatten)]
        connect: super::ConnectArgs,
    },
    /// Subscribe to topic patterns (`*` one word, `#` any number) and print each message
    /// as one JSON line, until interrupted (or --count messages)
    Subscribe {
        /// Patterns, e.g. 'orders.#' 'users.*.login'
        #[arg(required = true)]
        patterns: Vec<String>,
        /// Node URL
        #[arg(long, env = "MPREG_URL", default_value = "ws://127.0.0.1:9000")]
        url: String,
        /// Stop after this many messages
        #[arg(long)]
        count: Option<u64>,
        #[command(flatten)]
        connect: super::ConnectArgs,
    },
    /// Publish one message: PAYLOAD is JSON, or a plain string when not valid JSON
    Publish {
        topic: String,
        payload: String,
        /// Node URL
        #[arg(long, env = "MPREG_URL", default_value = "ws://127.0.0.1:9000")]
        url: String,
        #[command(flatten)]
        connect: super::ConnectArgs,
    },
    #[command(flatten)]
    Dns(super::dns_cmd::DnsCommand),
}

fn fail(e: &dyn std::fmt::Display) -> i32 {
    eprintln!("mpreg: {e}");
    1
}

fn print_json(v: &Value) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => {
            use std::io::Write;
            // A closed pipe (`| head`) is the reader's choice, not an error worth a panic.
            let _ = writeln!(std::io::stdout().lock(), "{s}");
        }
        Err(e) => eprintln!("mpreg: cannot print result: {e}"),
    }
}

/// Reads commands from a request file.
fn read_commands(path: &PathBuf) -> Result<Vec<RpcCommand>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{}: invalid JSON: {e}", path.display()))?;
    let cmds = match value {
        Value::Object(mut o) => o
            .remove("cmds")
            .ok_or_else(|| format!("{}: object has no `cmds`", path.display()))?,
        other => other,
    };
    serde_json::from_value(cmds).map_err(|e| format!("{}: {e}", path.display()))
}

/// A client of `url`, presenting the token and TLS options given.
async fn connected(url: &str, connect: &super::ConnectArgs) -> Result<Client, ClientError> {
    let options = connect.options(url)?;
    Client::connect_with_options(&crate::env::Env::production(), url, &options).await
}

pub async fn run(cmd: ClientCommand) -> i32 {
    match cmd {
        ClientCommand::Dns(cmd) => super::dns_cmd::run(cmd).await,
        ClientCommand::Call {
            fun,
            args,
            url,
            locs,
            function_id,
            version_constraint,
            timeout_ms,
            connect,
        } => {
            let client = match connected(&url, &connect).await {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            let args = Value::Array(args.iter().map(|a| parse_arg(a)).collect());
            let mut call = client.call(fun, args).locs(locs);
            if let Some(id) = function_id {
                call = call.function_id(id);
            }
            if let Some(c) = version_constraint {
                call = call.version_constraint(c);
            }
            if let Some(t) = timeout_ms {
                call = call.timeout(Duration::from_millis(t));
            }
            report(call.await)
        }
        ClientCommand::Request {
            file,
            url,
            timeout_ms,
            connect,
        } => {
            let cmds = match read_commands(&file) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            let client = match connected(&url, &connect).await {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            let req = crate::protocol::RpcRequest::new(String::new(), cmds);
            let reply = client
                .send(req, timeout_ms.map(Duration::from_millis))
                .await;
            report(reply.map(|r| Value::Object(r.r.unwrap_or_default())))
        }
        ClientCommand::Subscribe {
            patterns,
            url,
            count,
            connect,
        } => {
            let client = match connected(&url, &connect).await {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            let mut sub = match client.subscribe(patterns.clone()).await {
                Ok(s) => s,
                Err(e) => return fail(&e),
            };
            eprintln!("mpreg: subscribed to {} on {url}", patterns.join(" "));
            let mut seen = 0;
            while count.is_none_or(|c| seen < c) {
                let Some(n) = futures_util::StreamExt::next(&mut sub).await else {
                    return fail(&"the connection closed");
                };
                let line = serde_json::json!({"topic": n.topic, "payload": n.payload,
                    "message_id": n.message_id, "publisher": n.publisher});
                use std::io::Write;
                if writeln!(std::io::stdout().lock(), "{line}").is_err() {
                    return 0; // the reader went away (`| head`)
                }
                seen += 1;
            }
            0
        }
        ClientCommand::Publish {
            topic,
            payload,
            url,
            connect,
        } => {
            let client = match connected(&url, &connect).await {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            match client.publish(&topic, parse_arg(&payload)).await {
                Ok(()) => {
                    eprintln!("mpreg: published on {topic} (accepted by the node)");
                    0
                }
                Err(e) => fail(&e),
            }
        }
    }
}

fn report(result: Result<Value, ClientError>) -> i32 {
    match result {
        Ok(v) => {
            print_json(&v);
            0
        }
        Err(e) => fail(&e),
    }
}
