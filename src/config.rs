//! Node settings, layered: defaults < TOML file (`[mpreg]` table) < environment (`MPREG_*`)
//! < command-line flags. Each layer is a [`SettingsLayer`] of optional values; applying
//! one overrides only what it sets. Parsing is pure: the environment arrives as a list of
//! pairs, so tests need not touch the process environment.
//!
//! Every setting is declared once, in the `settings!` tables below: name, type, default,
//! doc and bounds. From that one entry come the [`Settings`] field, the [`SettingsLayer`]
//! field (the TOML key is the name), the `MPREG_<NAME>` variable and the `--<name>` flag
//! ([`SettingsFlags`], its help the doc). This module imports no room that uses settings:
//! each room turns `&Settings` into its own limits (`ExecLimits::from_settings`,
//! `MembershipPolicy::from_settings`, `Retention::from_settings`,
//! `NodeTlsFiles::from_settings`).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The default of `max_snapshot_bytes`: a catalog of some 200k functions, four times the
/// largest frame a peer may send (snapshots travel in chunks of at most 3 MiB).
pub const DEFAULT_MAX_SNAPSHOT_BYTES: usize = 64 << 20;

/// Declares a group of settings once. Each entry is
///
/// ```text
/// /// Doc: the field's, and the flag's help.
/// name: Type = default, kind[(flag builder calls)]
///     [, bounds(range[, "note"])] [, env("MPREG_A" | "MPREG_B")] [, toml(serde attributes)];
/// ```
///
/// `kind` says how the command line sets it: `flag` (`--name VALUE`), `list` (values
/// comma-separated or the flag repeated), `switch` (`--name` sets it), `switch_off("no-x",
/// "help")` (`--no-x` clears it) or `nested` (a group of its own, declared by another
/// `settings!`, whose variables and flags carry its prefixes). The builder calls adjust the
/// derived flag (`value_name("BYTES")`, `long("tls-cert")`); `env` replaces the derived
/// variable names, for names the original chose otherwise. The group's variables are its
/// `env` prefix and the name in capitals, its flags its `flags` prefix and the name in
/// kebab case.
macro_rules! settings {
    // One variable `$var` = `$value` into layer `$l`, if it names this setting.
    (@env nested, $l:ident, $var:ident, $value:ident, $prefix:expr, $name:ident, $ty:ty, []) => {
        if <<$ty as SettingValue>::Layer as Group>::knows_var($var) {
            $l.$name
                .get_or_insert_with(Default::default)
                .read_var($var, $value)?;
        }
    };
    (@env $kind:ident, $l:ident, $var:ident, $value:ident, $prefix:expr, $name:ident, $ty:ty,
        [$($names:literal),*]) => {
        if env_is($var, $prefix, stringify!($name), &[$($names),*]) {
            $l.$name = Some(<<$ty as SettingValue>::Layer as FromEnv>::from_env($var, $value)?);
        }
    };
    (@knows nested, $var:ident, $prefix:expr, $name:ident, $ty:ty, []) => {
        <<$ty as SettingValue>::Layer as Group>::knows_var($var)
    };
    (@knows $kind:ident, $var:ident, $prefix:expr, $name:ident, $ty:ty, [$($names:literal),*]) => {
        env_is($var, $prefix, stringify!($name), &[$($names),*])
    };
    // The setting's flag added to `$cmd`, its help showing the default in `$defaults`.
    (@augment flag, $cmd:ident, $defaults:ident, $prefix:expr, $name:ident, $ty:ty,
        [$($doc:literal),*], ($($m:ident($($a:expr),*)),*)) => {
        $cmd.arg(
            value_arg($prefix, stringify!($name), &[$($doc),*], $defaults.$name.shown())
                .action(clap::ArgAction::Set)
                .value_parser(clap::value_parser!(<$ty as SettingValue>::Layer))
                $(.$m($($a),*))*,
        )
    };
    (@augment list, $cmd:ident, $defaults:ident, $prefix:expr, $name:ident, $ty:ty,
        [$($doc:literal),*], ($($m:ident($($a:expr),*)),*)) => {
        $cmd.arg(
            value_arg($prefix, stringify!($name), &[$($doc),*], $defaults.$name.shown())
                .action(clap::ArgAction::Append)
                .value_delimiter(',')
                $(.$m($($a),*))*,
        )
    };
    (@augment switch, $cmd:ident, $defaults:ident, $prefix:expr, $name:ident, $ty:ty,
        [$($doc:literal),*], ()) => {
        $cmd.arg(switch_arg(
            flag_id($prefix, stringify!($name)),
            flag_id($prefix, stringify!($name)),
            flag_help(&[$($doc),*], None),
        ))
    };
    (@augment switch_off, $cmd:ident, $defaults:ident, $prefix:expr, $name:ident, $ty:ty,
        [$($doc:literal),*], ($long:literal, $help:literal)) => {
        $cmd.arg(switch_arg(
            flag_id($prefix, stringify!($name)),
            $long.to_owned(),
            $help.to_owned(),
        ))
    };
    (@augment nested, $cmd:ident, $defaults:ident, $prefix:expr, $name:ident, $ty:ty,
        [$($doc:literal),*], ()) => {
        <<$ty as SettingValue>::Layer as Group>::augment($cmd, &$defaults.$name)
    };
    // The setting's flag from `$m` into layer `$l`; whether it was given.
    (@read flag, $l:ident, $m:ident, $prefix:expr, $name:ident, $ty:ty) => {
        match $m.get_one::< <$ty as SettingValue>::Layer>(&flag_id($prefix, stringify!($name))) {
            Some(value) => {
                $l.$name = Some(value.clone());
                true
            }
            None => false,
        }
    };
    (@read list, $l:ident, $m:ident, $prefix:expr, $name:ident, $ty:ty) => {
        match $m.get_many::<String>(&flag_id($prefix, stringify!($name))) {
            Some(values) => {
                $l.$name = Some(list_items(values.map(String::as_str)).collect());
                true
            }
            None => false,
        }
    };
    (@read switch, $l:ident, $m:ident, $prefix:expr, $name:ident, $ty:ty) => {{
        let given = $m.get_flag(&flag_id($prefix, stringify!($name)));
        if given {
            $l.$name = Some(true);
        }
        given
    }};
    (@read switch_off, $l:ident, $m:ident, $prefix:expr, $name:ident, $ty:ty) => {{
        let given = $m.get_flag(&flag_id($prefix, stringify!($name)));
        if given {
            $l.$name = Some(false);
        }
        given
    }};
    (@read nested, $l:ident, $m:ident, $prefix:expr, $name:ident, $ty:ty) => {{
        // The nested layer stays unset unless one of its flags is given.
        let mut inner = $l.$name.clone().unwrap_or_default();
        let given = Group::read_flags(&mut inner, $m);
        if given {
            $l.$name = Some(inner);
        }
        given
    }};
    (
        $(#$sattr:tt)*
        pub struct $S:ident;
        $(#$lattr:tt)*
        pub struct $L:ident { $($extra:tt)* }
        env $envp:literal, flags $flagp:literal;
        $(
            $(#[doc = $doc:literal])*
            $name:ident: $ty:ty = $default:expr, $kind:ident $(($($flag:tt)*))?
                $(, bounds($range:expr $(, $note:literal)?))?
                $(, env($($env_name:literal)|+))?
                $(, toml($($serde:tt)*))?;
        )*
    ) => {
        $(#$sattr)*
        pub struct $S {
            $($(#[doc = $doc])* pub $name: $ty,)*
        }

        impl Default for $S {
            fn default() -> Self {
                $S { $($name: $default,)* }
            }
        }

        $(#$lattr)*
        pub struct $L {
            $(
                $(#[doc = $doc])*
                $(#[serde($($serde)*)])?
                pub $name: Option<<$ty as SettingValue>::Layer>,
            )*
            $($extra)*
        }

        impl $S {
            /// Overrides the values `layer` sets; the others stay.
            pub fn apply(&mut self, layer: &$L) {
                $(
                    if let Some(value) = &layer.$name {
                        self.$name.set(value);
                    }
                )*
            }
        }

        impl SettingValue for $S {
            type Layer = $L;
            fn set(&mut self, layer: &$L) {
                self.apply(layer);
            }
            fn shown(&self) -> Option<String> {
                None
            }
            fn check_bounds(&self) -> Result<(), ConfigError> {
                $(
                    $(check_bounds(stringify!($name), &self.$name, $range, None $(.or(Some($note)))?)?;)?
                    self.$name.check_bounds()?;
                )*
                Ok(())
            }
        }

        impl Group for $L {
            type Settings = $S;
            fn knows_var(var: &str) -> bool {
                false $(|| settings!(@knows $kind, var, $envp, $name, $ty, [$($($env_name),+)?]))*
            }
            fn read_var(&mut self, var: &str, value: &str) -> Result<(), ConfigError> {
                $(settings!(@env $kind, self, var, value, $envp, $name, $ty, [$($($env_name),+)?]);)*
                Ok(())
            }
            fn augment(cmd: clap::Command, defaults: &$S) -> clap::Command {
                $(
                    let cmd = settings!(@augment $kind, cmd, defaults, $flagp, $name, $ty,
                        [$($doc),*], ($($($flag)*)?));
                )*
                cmd
            }
            fn read_flags(&mut self, m: &clap::ArgMatches) -> bool {
                let mut given = false;
                $(given |= settings!(@read $kind, self, m, $flagp, $name, $ty);)*
                given
            }
        }
    };
}

settings! {
    /// Resolved node settings. Names follow the original's `MPREGSettings`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Settings;
    /// One layer of settings; `None` leaves the value below it in place.
    #[derive(Debug, Clone, Default, PartialEq, Deserialize)]
    pub struct SettingsLayer {
        /// Settings of the original that this node does not act on (yet); reported, not
        /// fatal, so the original's files load.
        #[serde(flatten)]
        pub ignored: BTreeMap<String, toml::Value>,
    }
    env "MPREG_", flags "";

    /// Interface to listen on.
    host: String = "127.0.0.1".to_owned(), flag;
    /// Port for clients and peers; 0 picks a free one.
    port: u16 = 9000, flag;
    /// Human-readable node name.
    name: String = "mpreg-node".to_owned(), flag;
    /// Nodes with the same cluster id form one cluster.
    cluster_id: String = "default-cluster".to_owned(), flag;
    /// Resources this node offers, comma-separated (e.g. cpu,gpu); every function
    /// registered on it inherits them.
    resources: BTreeSet<String> = BTreeSet::new(), list;
    /// Other nodes to join, comma-separated `ws://host:port` URLs.
    peers: Vec<String> = Vec::new(), list;
    /// `tracing` filter: a level (error, warn, info, debug, trace) or directives, e.g.
    /// `info,mpreg=debug`.
    // openraft narrates elections and membership changes at info; keep those quiet unless
    // asked for.
    log_level: String = "info,openraft=error".to_owned(), flag;
    /// How log lines are written: readable text, or one JSON object per line (json).
    log_format: LogFormat = LogFormat::Text, flag(value_name("text|json"));
    /// Largest WebSocket message accepted, in bytes.
    max_message_bytes: usize = 20 * 1024 * 1024, flag, bounds(1024..);
    /// Most commands one request may carry.
    max_commands_per_request: usize = 1000, flag, bounds(1..);
    /// Deadline of a whole request unless it asks for less, in milliseconds.
    request_timeout_ms: u64 = 30_000, flag, bounds(1..);
    /// How long shutdown waits for in-flight requests, in milliseconds.
    drain_timeout_ms: u64 = 10_000, flag;
    /// Requests one connection may have running before the node stops reading from it.
    max_inflight_per_connection: usize = 1024, flag, bounds(1..);
    /// Bytes one client connection may hold (frames of its running requests, replies not
    /// yet written) before the node stops reading from it.
    // A few maximal messages per connection, and 1 GiB for all clients: a node on a 2-core,
    // 24 GiB machine keeps most of its memory for the functions it runs.
    max_connection_bytes: usize = 64 * 1024 * 1024, flag(value_name("BYTES"));
    /// Bytes all client connections together may hold; shared fairly among them
    /// (`node::budget`).
    max_client_bytes: usize = 1024 * 1024 * 1024, flag(value_name("BYTES"));
    /// Client connections (WebSocket, workers included) the node serves at once; beyond,
    /// the upgrade is refused with 503 and counted.
    // Each connection holds a task, its socket and its WebSocket buffers (some tens of KiB
    // idle) and a file descriptor: 10k stay well inside a node's memory and a service's
    // usual descriptor limit (65536), with room for peers and files, and keep every
    // connection's fair share of max_client_bytes at 100 KiB or more.
    max_connections: usize = 10_000, flag(value_name("N")), bounds(1..);
    /// Largest control-plane snapshot a node takes from its leader or its disk, in bytes.
    max_snapshot_bytes: usize = DEFAULT_MAX_SNAPSHOT_BYTES, flag(value_name("BYTES")),
        bounds(1024..=1 << 30, "1 GiB");
    /// A client whose replies wait this long without any being written (it stopped
    /// reading) is disconnected, in milliseconds.
    reply_stall_timeout_ms: u64 = 10_000, flag(value_name("MS")), bounds(1..);
    /// Bytes of topic notifications that may wait for one subscribing connection.
    pubsub_queue_bytes: usize = 1024 * 1024, flag(value_name("BYTES"));
    /// What happens to a subscriber whose queue is full: drop_oldest (its oldest
    /// notifications go) or disconnect.
    pubsub_slow_subscriber: SlowSubscriber = SlowSubscriber::DropOldest,
        flag(value_name("POLICY"));
    // What the node keeps of the messages published on it, for late subscribers that ask
    // for a backlog: the original's retention (1000 messages per topic, an hour), bounded
    // in bytes.
    /// Messages kept per topic for late subscribers' backlogs.
    pubsub_backlog_messages: usize = 1000, flag(value_name("N"));
    /// Bytes kept per topic for backlogs.
    pubsub_backlog_bytes: usize = 1024 * 1024, flag(value_name("BYTES"));
    /// Age beyond which a kept message goes, in seconds.
    pubsub_backlog_seconds: u64 = 3600, flag(value_name("SECONDS")),
        bounds(..=7 * 24 * 3600, "a week");
    /// Bytes kept for backlogs in all; 0 keeps none.
    pubsub_backlog_total_bytes: usize = 64 * 1024 * 1024, flag(value_name("BYTES"));
    /// Where the node keeps its durable state (`[mpreg.persistence_config]`, the
    /// original's name).
    persistence: PersistenceConfig = PersistenceConfig::default(), nested,
        toml(rename = "persistence_config");
    /// URLs other nodes and clients reach this node at (`ws://host:port`); empty: derived
    /// from the bound address (0.0.0.0 becomes 127.0.0.1, so set this on multi-host
    /// clusters).
    advertised_urls: Vec<String> = Vec::new(),
        list(long("advertised-url"), value_name("URL"));
    /// Most members that vote in the control plane; the others are learners.
    voters: usize = 3, flag, bounds(1..);
    /// A voter unreachable this long is replaced by a live learner, in milliseconds.
    replace_voter_after_ms: u64 = 30_000, flag(value_name("MS"));
    /// How often the Raft leader heartbeats its followers, in milliseconds.
    raft_heartbeat_ms: u64 = 100, flag(value_name("MS"));
    /// A follower that hears no leader for this long (randomized up to twice as long)
    /// starts an election, in milliseconds. Well above the heartbeat and a loaded disk's
    /// fsync, so that a busy leader is not deposed.
    raft_election_timeout_ms: u64 = 1_000, flag(value_name("MS"));
    /// File holding the cluster secret every member proves in its peer hello
    /// (`fabric::handshake`); the same file on every node (e.g. `openssl rand -hex 32 >
    /// FILE`). Unset: peers are not authenticated (development), which a node refuses off
    /// loopback unless `insecure_peers` says so.
    cluster_secret_file: Option<PathBuf> = None, flag(value_name("FILE"));
    /// Serve peers without a cluster secret on a non-loopback interface (unsafe: anyone
    /// who reaches the port can join the cluster).
    insecure_peers: bool = false, switch;
    /// Clients must present a valid token (JWT) on the WebSocket upgrade (`Authorization:
    /// Bearer …`, or `?token=…` in the URL).
    auth_required: bool = false, switch;
    /// HS256 tokens: the file holding the secret they are signed with.
    jwt_secret_file: Option<PathBuf> = None, flag(value_name("FILE"));
    /// RS256 or EdDSA tokens: the PEM public key they are checked with.
    jwt_public_key_file: Option<PathBuf> = None, flag(value_name("FILE"));
    /// Token subjects (`sub`) that may connect, comma-separated; empty: any holder of a
    /// valid token.
    allowed_clients: BTreeSet<String> = BTreeSet::new(), list(value_name("SUB"));
    /// Tokens must carry this issuer (`iss`).
    jwt_issuer: Option<String> = None, flag(value_name("ISS"));
    /// Tokens must carry this audience (`aud`).
    jwt_audience: Option<String> = None, flag(value_name("AUD"));
    /// The role `cluster_map`, `list_peers`, `catalog_query` and `rpc_list` need when
    /// tokens are required; unset: any authenticated client may call them.
    introspection_role: Option<String> = None, flag(value_name("ROLE"));
    /// The node's TLS certificate chain (PEM); with `tls_key_file`, the port serves only
    /// TLS (`wss://`), to clients and peers alike.
    tls_cert_file: Option<PathBuf> = None, flag(long("tls-cert"), value_name("FILE"));
    /// The private key of the certificate (PEM).
    tls_key_file: Option<PathBuf> = None, flag(long("tls-key"), value_name("FILE"));
    /// Clients (and peers) must show a certificate signed by this CA (mTLS).
    tls_client_ca_file: Option<PathBuf> = None,
        flag(long("tls-client-ca"), value_name("FILE"));
    /// Peers verify each other against this CA: a dialled node's certificate, and a
    /// dialling peer's.
    tls_peer_ca_file: Option<PathBuf> = None, flag(long("tls-peer-ca"), value_name("FILE"));
    /// Serve the admin HTTP server (health, readiness, metrics, status). Off for embedded
    /// nodes; `mpreg-node` turns it on.
    monitoring_enabled: bool = false,
        switch_off("no-monitoring", "Do not serve the admin HTTP server");
    /// Interface of the admin server; unset: the node's `host`.
    monitoring_host: Option<String> = None, flag(value_name("HOST"));
    /// Port of the admin server; 0 picks a free one (printed as `MPREG_MONITORING_URL`).
    // The original allows `null` in its files (pick a port): read as 0.
    monitoring_port: u16 = 0, flag(value_name("PORT")),
        toml(default, deserialize_with = "port_or_null");
    /// Answer with `Access-Control-Allow-Origin: *` (the original's default), so a page of
    /// another origin may read the JSON endpoints.
    monitoring_enable_cors: bool = true,
        switch_off("no-monitoring-cors", "Do not send CORS headers from the admin server");
    // The DNS gateway: service discovery over DNS, answered from the catalog replica (the
    // original's `dns_*` settings, plus `dns_port` for UDP and TCP on one number).
    /// Serve DNS (also turned on by `--dns-port`).
    dns_gateway_enabled: bool = false, switch;
    /// Port of the DNS gateway, UDP and TCP alike; 0 picks a free one (printed as
    /// `MPREG_DNS_PORT`). Giving it turns the gateway on.
    dns_port: Option<u16> = None, flag(value_name("PORT"));
    /// The original's separate UDP port (when `dns_port` is unset; unset or 0: a free one).
    dns_udp_port: Option<u16> = None, flag(value_name("PORT")),
        toml(default, deserialize_with = "port_or_null");
    /// The original's separate TCP port (when `dns_port` is unset; unset or 0: the UDP one).
    dns_tcp_port: Option<u16> = None, flag(value_name("PORT")),
        toml(default, deserialize_with = "port_or_null");
    /// Interface of the DNS gateway; unset: the node's `host`.
    dns_listen_host: Option<String> = None, flag(long("dns-host"), value_name("HOST"));
    /// Zones the gateway answers for (REFUSED outside them).
    dns_zones: Vec<String> = vec!["mpreg".to_owned()],
        list(long("dns-zone"), value_name("ZONE"));
    /// Least TTL of an answer, in seconds.
    dns_min_ttl_seconds: u64 = 1, flag(value_name("SECONDS")), bounds(0..=86_400),
        toml(default, deserialize_with = "whole_seconds");
    /// Most TTL of an answer, in seconds.
    dns_max_ttl_seconds: u64 = 60, flag(value_name("SECONDS")), bounds(1..=86_400),
        toml(default, deserialize_with = "whole_seconds");
    /// Answer names outside the zones as if under the first, instead of REFUSED.
    dns_allow_external_names: bool = false, switch;
    /// UDP answers alike per second to one network (/24, /56) before rate limiting drops
    /// or slips them; 0: no limit.
    dns_rrl_responses_per_second: u64 = 100, flag(value_name("N")), bounds(0..=1_000_000);
    /// Of the answers over the limit, every this-many-th is sent truncated (the client
    /// retries over TCP) instead of dropped; 0: all are dropped.
    dns_rrl_slip: u64 = 2, flag(value_name("N")), bounds(0..=100);
    /// TCP connections the gateway serves at once.
    dns_tcp_max_connections: usize = 256, flag(value_name("N")), bounds(1..=65_536);
    /// A TCP connection idle this long is closed (ms).
    dns_tcp_idle_timeout_ms: u64 = 10_000, flag(value_name("MS")), bounds(100..=3_600_000);
    // Queues (`queue_*`): what one queue, one message and this node's queues may hold.
    // A queue's messages live in its owner's memory (and its SQLite file): these bound that
    // memory whoever sends.
    /// Largest message payload (its JSON text), in bytes; SQS's 256 KiB.
    queue_max_message_bytes: usize = 256 * 1024, flag(value_name("BYTES")),
        bounds(16..=16 * 1024 * 1024, "16 MiB");
    /// Most messages one queue holds (a queue's `max_size` at most this); a full queue
    /// refuses sends, it never drops what it holds.
    queue_max_messages: usize = 100_000, flag(value_name("N")), bounds(1..=10_000_000);
    /// Most payload bytes one queue holds.
    queue_max_bytes: usize = 256 * 1024 * 1024, flag(value_name("BYTES")),
        bounds(1024..=1 << 36, "64 GiB");
    /// Most queues this node owns.
    queue_max_queues: usize = 1000, flag(value_name("N")), bounds(1..=10_000);
    /// Most deduplication ids one queue remembers in their window.
    queue_max_dedup_ids: usize = 100_000, flag(value_name("N")), bounds(0..=10_000_000);
    /// Most messages one named consumer (`consumer_id`, and every queue subscription) may
    /// hold in flight, and the bound it gets when it names none; JetStream's
    /// `max_ack_pending` default.
    queue_max_in_flight: usize = 1000, flag(value_name("N")), bounds(1..=100_000);
    /// Receives that may wait at once on this node (long polls), all clients together.
    queue_max_waiters: usize = 10_000, flag(value_name("N")), bounds(1..=1_000_000);
    /// The role a token needs to call the queue built-ins when tokens are required; unset:
    /// any authenticated client may.
    queue_role: Option<String> = None, flag(value_name("ROLE"));
    // The cache (`cache-request` messages, cached function results): L1 in memory, L2 in
    // the data directory's `cache.sqlite` (persistence mode sqlite).
    /// Serve the cache: `cache-request` messages and cacheable functions' results (the
    /// original's switch; off, requests are refused and functions run every time).
    enable_default_cache: bool = true,
        switch_off("no-cache", "Do not serve the cache (cache-request messages, cached results)");
    /// L1's bound, in MiB: entries are weighed by their bytes plus a fixed overhead each
    /// (docs/OPERATIONS.md, "Cache"), and the least valuable go when it is full.
    cache_capacity_mb: u64 = 512, flag(value_name("MIB")), bounds(1..=1 << 20, "1 TiB");
    /// L2's bound, in MiB (the original's `persistent_cache_size_mb`): the least recently
    /// used entries go when it is full.
    persistent_cache_size_mb: u64 = 1000, flag(value_name("MIB")), bounds(1..=1 << 24, "16 TiB");
    /// Largest value one entry holds (its JSON text), in bytes.
    cache_max_value_bytes: usize = 1024 * 1024, flag(value_name("BYTES")),
        bounds(16..=64 * 1024 * 1024, "64 MiB");
    /// Longest key (`namespace:identifier:version`), in bytes.
    cache_max_key_bytes: usize = 1024, flag(value_name("BYTES")), bounds(16..=65_536);
    /// Most keys one `query` or namespace `list_keys` answers with.
    cache_max_list_entries: usize = 1000, flag(value_name("N")), bounds(1..=100_000);
    /// Longest invalidation or listing pattern, in bytes (matching costs time per key held).
    cache_max_pattern_bytes: usize = 256, flag(value_name("BYTES")), bounds(1..=4096);
    /// Most wildcards (`*`, `?`) in one pattern.
    cache_max_pattern_wildcards: usize = 8, flag(value_name("N")), bounds(0..=64);
    /// The role a token needs to send `cache-request` messages when tokens are required;
    /// unset: any authenticated client may. (Cached function results need only the role
    /// the function needs.)
    cache_role: Option<String> = None, flag(value_name("ROLE"));
}

settings! {
    /// The original's `persistence_config`. Memory for embedded nodes (tests, examples);
    /// `mpreg-node` keeps `sqlite` in `./mpreg-data` ([`SettingsLayer::daemon`]).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct PersistenceConfig;
    /// `[mpreg.persistence_config]` as a layer: unset keys keep the value below.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
    pub struct PersistenceLayer {}
    env "MPREG_PERSISTENCE_", flags "persistence-";

    /// Where durable state lives: memory or sqlite.
    mode: PersistenceMode = PersistenceMode::Memory, flag(value_name("MODE"));
    /// Directory of the SQLite data.
    data_dir: PathBuf = "mpreg-data".into(),
        flag(long("persistence-dir"), visible_alias("data-dir"), value_name("DIR")),
        env("MPREG_PERSISTENCE_DIR" | "MPREG_DATA_DIR");
    /// The SQLite database's file name in the data directory.
    sqlite_filename: String = "mpreg.sqlite".to_owned(), flag(value_name("FILE"));
}

/// What a setting's type says about layering it. A layer holds a plain setting's value
/// itself, and an optional setting's inner value (no layer unsets what one below set).
pub trait SettingValue: Clone {
    /// What a layer holds for the setting.
    type Layer: Clone;
    /// Takes the value a layer holds.
    fn set(&mut self, to: &Self::Layer);
    /// The value as a flag's help shows it (`[default: …]`); `None`: nothing worth showing.
    fn shown(&self) -> Option<String>;
    /// Checks the bounds declared inside it (a nested group's).
    fn check_bounds(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// Types settings hold as they are, and how a flag's help shows them.
macro_rules! plain_setting_values {
    ($($t:ty: |$v:ident| $shown:expr;)*) => {$(
        impl SettingValue for $t {
            type Layer = $t;
            fn set(&mut self, to: &$t) {
                self.clone_from(to);
            }
            fn shown(&self) -> Option<String> {
                let $v = self;
                $shown
            }
        }
    )*};
}

plain_setting_values! {
    String: |s| (!s.is_empty()).then(|| s.clone());
    u16: |n| Some(n.to_string());
    u64: |n| Some(n.to_string());
    usize: |n| Some(n.to_string());
    // A switch's help says what giving it does; a default of true or false adds nothing.
    bool: |_b| None;
    PathBuf: |p| Some(p.display().to_string());
    LogFormat: |f| Some(f.to_string());
    SlowSubscriber: |p| Some(p.to_string());
    PersistenceMode: |m| Some(m.to_string());
    BTreeSet<String>: |l| (!l.is_empty()).then(|| Vec::from_iter(l.iter().cloned()).join(","));
    Vec<String>: |l| (!l.is_empty()).then(|| l.join(","));
}

impl<T: Clone> SettingValue for Option<T> {
    type Layer = T;
    fn set(&mut self, to: &T) {
        *self = Some(to.clone());
    }
    /// Optional settings are unset by default: nothing to show.
    fn shown(&self) -> Option<String> {
        None
    }
}

/// A group's layer, read from variables and flags (the code `settings!` writes).
trait Group: Default {
    type Settings;
    /// Whether `var` names one of the group's settings.
    fn knows_var(var: &str) -> bool;
    /// Reads `var` if it names one of the group's settings; other variables are ignored.
    fn read_var(&mut self, var: &str, value: &str) -> Result<(), ConfigError>;
    /// Adds the group's flags, their help showing `defaults`.
    fn augment(cmd: clap::Command, defaults: &Self::Settings) -> clap::Command;
    /// Reads the group's flags; whether any was given.
    fn read_flags(&mut self, m: &clap::ArgMatches) -> bool;
}

/// A setting's value as an `MPREG_*` variable spells it; errors name the variable.
trait FromEnv: Sized {
    fn from_env(var: &str, value: &str) -> Result<Self, ConfigError>;
}

impl FromEnv for String {
    fn from_env(_: &str, value: &str) -> Result<Self, ConfigError> {
        Ok(value.to_owned())
    }
}

impl FromEnv for PathBuf {
    fn from_env(_: &str, value: &str) -> Result<Self, ConfigError> {
        Ok(value.into())
    }
}

impl FromEnv for bool {
    fn from_env(var: &str, value: &str) -> Result<Self, ConfigError> {
        match value.trim() {
            "1" | "true" | "yes" => Ok(true),
            "0" | "false" | "no" | "" => Ok(false),
            other => Err(ConfigError::Env {
                var: var.to_owned(),
                reason: format!("`{other}` is not true or false"),
            }),
        }
    }
}

/// Numbers: the error quotes the value as given.
macro_rules! from_env_number {
    ($($t:ty),*) => {$(
        impl FromEnv for $t {
            fn from_env(var: &str, value: &str) -> Result<Self, ConfigError> {
                value.trim().parse().map_err(|_| ConfigError::Env {
                    var: var.to_owned(),
                    reason: format!("`{value}` is not a valid number"),
                })
            }
        }
    )*};
}

from_env_number!(u16, u64, usize);

/// The policies, whose `FromStr` says what it expected.
macro_rules! from_env_named {
    ($($t:ty),*) => {$(
        impl FromEnv for $t {
            fn from_env(var: &str, value: &str) -> Result<Self, ConfigError> {
                value.parse().map_err(|reason| ConfigError::Env {
                    var: var.to_owned(),
                    reason,
                })
            }
        }
    )*};
}

from_env_named!(LogFormat, SlowSubscriber, PersistenceMode);

impl FromEnv for Vec<String> {
    fn from_env(_: &str, value: &str) -> Result<Self, ConfigError> {
        Ok(list_items(value.split(',')).collect())
    }
}

impl FromEnv for BTreeSet<String> {
    fn from_env(_: &str, value: &str) -> Result<Self, ConfigError> {
        Ok(list_items(value.split(',')).collect())
    }
}

/// A list's items, trimmed, empty ones dropped: `a, b,` is `a` and `b`, from a variable or
/// from flags alike.
fn list_items<'a>(items: impl Iterator<Item = &'a str>) -> impl Iterator<Item = String> {
    items
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Whether `var` names the setting `name`: one of `names` if the table gives them, else
/// `prefix` and the name in capitals (`MPREG_MAX_MESSAGE_BYTES`; `MPREG_max_message_bytes`
/// is not it).
fn env_is(var: &str, prefix: &str, name: &str, names: &[&str]) -> bool {
    if !names.is_empty() {
        return names.contains(&var);
    }
    var.strip_prefix(prefix).is_some_and(|rest| {
        rest.len() == name.len()
            && rest
                .bytes()
                .zip(name.bytes())
                .all(|(r, n)| r == n.to_ascii_uppercase())
    })
}

/// The flag of setting `name`: `prefix` and the name in kebab case (also its clap id,
/// unique because setting names are).
fn flag_id(prefix: &str, name: &str) -> String {
    format!("{prefix}{}", name.replace('_', "-"))
}

/// A setting's doc as one line of help, with the default when there is one to show.
fn flag_help(doc: &[&str], default: Option<String>) -> String {
    let text = doc.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ");
    let text = text.trim().trim_end_matches('.');
    match default {
        Some(d) => format!("{text} [default: {d}]"),
        None => text.to_owned(),
    }
}

/// `--<flag> <NAME>`, without a default of clap's: a flag not given leaves the layers below
/// in place.
fn value_arg(prefix: &str, name: &str, doc: &[&str], default: Option<String>) -> clap::Arg {
    let id = flag_id(prefix, name);
    clap::Arg::new(id.clone())
        .long(id)
        .value_name(name.to_ascii_uppercase())
        .help(flag_help(doc, default))
}

/// `--<long>`, which takes no value.
fn switch_arg(id: String, long: String, help: String) -> clap::Arg {
    clap::Arg::new(id)
        .long(long)
        .action(clap::ArgAction::SetTrue)
        .help(help)
}

/// `range` holds `value`, or the error says which bounds it does not keep
/// (`must be at least 1024 and at most 1073741824 (1 GiB)`).
fn check_bounds<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: &T,
    range: impl RangeBounds<T>,
    note: Option<&str>,
) -> Result<(), ConfigError> {
    if range.contains(value) {
        return Ok(());
    }
    let low = match range.start_bound() {
        Bound::Included(min) => Some(format!("at least {min}")),
        Bound::Excluded(min) => Some(format!("above {min}")),
        Bound::Unbounded => None,
    };
    let high = match range.end_bound() {
        Bound::Included(max) => Some(format!("at most {max}")),
        Bound::Excluded(max) => Some(format!("below {max}")),
        Bound::Unbounded => None,
    };
    let bounds: Vec<String> = low.into_iter().chain(high).collect();
    let note = note.map(|n| format!(" ({n})")).unwrap_or_default();
    Err(ConfigError::Invalid {
        key: key.to_owned(),
        reason: format!("must be {}{note}", bounds.join(" and ")),
    })
}

/// What happens to a subscriber whose notifications do not fit its queue
/// (`pubsub_queue_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlowSubscriber {
    /// The oldest waiting notifications are dropped (counted in `/metrics`).
    #[default]
    DropOldest,
    /// The connection is closed (1008, "subscriber too slow").
    Disconnect,
}

impl std::str::FromStr for SlowSubscriber {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "drop_oldest" => Ok(SlowSubscriber::DropOldest),
            "disconnect" => Ok(SlowSubscriber::Disconnect),
            other => Err(format!(
                "`{other}` is not a slow-subscriber policy (drop_oldest or disconnect)"
            )),
        }
    }
}

impl std::fmt::Display for SlowSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SlowSubscriber::DropOldest => "drop_oldest",
            SlowSubscriber::Disconnect => "disconnect",
        })
    }
}

/// How the node writes its log lines (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines (colored on a terminal).
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`, `target`, spans), for log
    /// collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("`{other}` is not a log format (text or json)")),
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// `memory`: nothing survives a restart. `sqlite`: the node's id and its Raft log (vote,
/// entries, commit index) live in `data_dir/sqlite_filename`, so a restarted node rejoins
/// as itself and catches up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PersistenceMode {
    Memory,
    Sqlite,
}

impl std::str::FromStr for PersistenceMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "memory" => Ok(PersistenceMode::Memory),
            "sqlite" => Ok(PersistenceMode::Sqlite),
            other => Err(format!(
                "`{other}` is not a persistence mode (memory or sqlite)"
            )),
        }
    }
}

impl std::fmt::Display for PersistenceMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PersistenceMode::Memory => "memory",
            PersistenceMode::Sqlite => "sqlite",
        })
    }
}

impl PersistenceConfig {
    /// The database file in `sqlite` mode.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join(&self.sqlite_filename)
    }
}

impl Settings {
    /// Applies layers in order, later ones winning.
    pub fn layered<'a>(layers: impl IntoIterator<Item = &'a SettingsLayer>) -> Settings {
        let mut s = Settings::default();
        for layer in layers {
            s.apply(layer);
        }
        s
    }

    /// `host:port` to bind.
    pub fn bind_addr(&self) -> String {
        host_port(&self.host, self.port)
    }

    /// Whether the DNS gateway runs: asked for, or given a port.
    pub fn dns_enabled(&self) -> bool {
        self.dns_gateway_enabled || self.dns_port.is_some()
    }

    /// `host:port` of the gateway's UDP socket and TCP listener (port 0: a free one; a TCP
    /// port of 0 follows the UDP one, so both share a number when they can).
    pub fn dns_addrs(&self) -> (String, Option<String>) {
        let host = self.dns_listen_host.as_deref().unwrap_or(&self.host);
        let (udp, tcp) = match self.dns_port {
            Some(p) => (p, (p != 0).then_some(p)),
            None => (
                self.dns_udp_port.unwrap_or(0),
                self.dns_tcp_port.filter(|p| *p != 0),
            ),
        };
        let tcp = tcp.map(|p| host_port(host, p));
        (host_port(host, udp), tcp)
    }

    /// `host:port` the admin server binds.
    pub fn monitoring_addr(&self) -> String {
        let host = self.monitoring_host.as_deref().unwrap_or(&self.host);
        host_port(host, self.monitoring_port)
    }

    /// Checks values no layer can be trusted to get right: each setting's declared bounds,
    /// and the settings that bound each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| {
            Err(ConfigError::Invalid {
                key: key.to_owned(),
                reason: why.to_owned(),
            })
        };
        if self.host.is_empty() {
            return bad("host", "must not be empty");
        }
        self.check_bounds()?;
        self.validate_advertised_urls()?;
        self.validate_security()?;
        if self.raft_heartbeat_ms == 0 || self.raft_election_timeout_ms <= self.raft_heartbeat_ms {
            return bad(
                "raft_election_timeout_ms",
                "must be above raft_heartbeat_ms, which must be at least 1",
            );
        }
        if self.max_connection_bytes < 1024 || self.max_client_bytes < self.max_connection_bytes {
            return bad(
                "max_connection_bytes",
                "must be at least 1024 and at most max_client_bytes",
            );
        }
        if self.pubsub_queue_bytes < 1024 || self.pubsub_queue_bytes > self.max_connection_bytes {
            return bad(
                "pubsub_queue_bytes",
                "must be at least 1024 and at most max_connection_bytes",
            );
        }
        if self.dns_min_ttl_seconds > self.dns_max_ttl_seconds {
            return bad("dns_min_ttl_seconds", "must be at most dns_max_ttl_seconds");
        }
        if self.pubsub_backlog_bytes > self.pubsub_backlog_total_bytes {
            return bad(
                "pubsub_backlog_bytes",
                "must be at most pubsub_backlog_total_bytes",
            );
        }
        Ok(())
    }

    /// Advertised URLs are node URLs (`ids::NodeUrl`) and speak what the port serves.
    fn validate_advertised_urls(&self) -> Result<(), ConfigError> {
        let tls = self.tls_enabled();
        let scheme = if tls { "wss://" } else { "ws://" };
        let wrong = |u: &String| crate::ids::NodeUrl::parse(u).map_or(true, |u| u.is_tls() != tls);
        match self.advertised_urls.iter().find(|u| wrong(u)) {
            None => Ok(()),
            Some(bad_url) => Err(ConfigError::Invalid {
                key: "advertised_urls".to_owned(),
                reason: format!(
                    "`{bad_url}` is not a {scheme}host:port URL{}",
                    if tls {
                        " (the node serves only TLS)"
                    } else {
                        " (wss:// needs tls_cert_file and tls_key_file)"
                    }
                ),
            }),
        }
    }

    /// Whether the node serves TLS (`wss://`) on its port.
    pub fn tls_enabled(&self) -> bool {
        self.tls_cert_file.is_some() && self.tls_key_file.is_some()
    }

    /// Token and TLS settings that only make sense together.
    fn validate_security(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| {
            Err(ConfigError::Invalid {
                key: key.to_owned(),
                reason: why.to_owned(),
            })
        };
        match (
            self.auth_required,
            &self.jwt_secret_file,
            &self.jwt_public_key_file,
        ) {
            (true, None, None) => {
                return bad(
                    "auth_required",
                    "needs jwt_secret_file (HS256) or jwt_public_key_file (RS256, EdDSA) to check tokens with",
                );
            }
            (_, Some(_), Some(_)) => {
                return bad(
                    "jwt_secret_file",
                    "and jwt_public_key_file are both set: tokens are checked with one key",
                );
            }
            (false, Some(_), _) | (false, _, Some(_)) => {
                return bad(
                    "auth_required",
                    "is off, but a token key is set: turn it on (--auth-required), or tokens are not checked at all",
                );
            }
            _ => {}
        }
        if !self.auth_required
            && (!self.allowed_clients.is_empty()
                || self.introspection_role.is_some()
                || self.queue_role.is_some()
                || self.cache_role.is_some()
                || self.jwt_issuer.is_some()
                || self.jwt_audience.is_some())
        {
            return bad(
                "auth_required",
                "is off, but allowed_clients, jwt_issuer, jwt_audience, introspection_role, queue_role or cache_role is set: they apply only to tokens",
            );
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return bad("tls_cert_file", "and tls_key_file go together");
        }
        if !self.tls_enabled()
            && (self.tls_client_ca_file.is_some() || self.tls_peer_ca_file.is_some())
        {
            return bad(
                "tls_client_ca_file",
                "and tls_peer_ca_file need the node's own certificate (tls_cert_file, tls_key_file)",
            );
        }
        Ok(())
    }

    /// Whether the node listens on loopback only (`host` is a loopback address or
    /// `localhost`), where only this machine's processes reach its peer endpoint.
    pub fn loopback_only(&self) -> bool {
        is_loopback_host(&self.host)
    }

    /// Refuses to serve unauthenticated peers beyond loopback unless told to: anyone who
    /// reaches the port could otherwise join, vote and write the catalog.
    pub fn check_peer_exposure(&self, has_secret: bool) -> Result<(), ConfigError> {
        if has_secret || self.insecure_peers || self.loopback_only() {
            return Ok(());
        }
        Err(ConfigError::Invalid {
            key: "cluster_secret_file".to_owned(),
            reason: format!(
                "is not set, and the node listens on `{}`, beyond loopback: anyone who \
                 reaches the port could join the cluster, vote and write its catalog. Give \
                 every node the same secret (--cluster-secret-file FILE; e.g. `openssl rand \
                 -hex 32 > FILE`), or pass --insecure-peers to run without one",
                self.host
            ),
        })
    }
}

/// Whether `host` (a name or an IP address, IPv6 optionally in brackets) is loopback: only
/// this machine's processes reach it.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A port, or the original's `null` for "pick one" (0).
fn port_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    Ok(Some(Option::<u16>::deserialize(d)?.unwrap_or(0)))
}

/// Seconds as the original writes them (`60.0`) or as a whole number, rounded down.
fn whole_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let f = f64::deserialize(d)?;
    if !f.is_finite() || f < 0.0 {
        return Err(serde::de::Error::custom(format!(
            "{f} is not a number of seconds"
        )));
    }
    Ok(Some(f as u64))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Toml { path: String, message: String },
    #[error("environment variable {var}: {reason}")]
    Env { var: String, reason: String },
    #[error("setting `{key}` {reason}")]
    Invalid { key: String, reason: String },
}

/// The `[mpreg]` table of a settings file.
#[derive(Deserialize)]
struct TomlFile {
    #[serde(default)]
    mpreg: Option<SettingsLayer>,
}

impl SettingsLayer {
    /// What `mpreg-node` runs with above the embedded defaults: its state on disk, and the
    /// admin server (embedded nodes, tests and examples keep memory and no admin port).
    pub fn daemon() -> SettingsLayer {
        SettingsLayer {
            persistence: Some(PersistenceLayer {
                mode: Some(PersistenceMode::Sqlite),
                ..PersistenceLayer::default()
            }),
            monitoring_enabled: Some(true),
            ..SettingsLayer::default()
        }
    }

    /// Parses the `[mpreg]` table of a TOML document; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<SettingsLayer, ConfigError> {
        let file: TomlFile = toml::from_str(text).map_err(|e| ConfigError::Toml {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        file.mpreg.ok_or_else(|| ConfigError::Toml {
            path: origin.to_owned(),
            message: "no [mpreg] table".to_owned(),
        })
    }

    pub fn from_toml_file(path: &Path) -> Result<SettingsLayer, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: origin.clone(),
            source,
        })?;
        SettingsLayer::from_toml_str(&text, &origin)
    }

    /// Reads the variables of `vars` that name settings; others are ignored. A setting's
    /// variable is `MPREG_` and its name in capitals (`MPREG_MAX_MESSAGE_BYTES`), a
    /// persistence setting's `MPREG_PERSISTENCE_` and its (`MPREG_PERSISTENCE_MODE`; the
    /// directory is `MPREG_PERSISTENCE_DIR`, alias `MPREG_DATA_DIR`). Lists are
    /// comma-separated; switches take true/false, yes/no or 1/0.
    pub fn from_env<I, K, V>(vars: I) -> Result<SettingsLayer, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut layer = SettingsLayer::default();
        for (var, value) in vars {
            layer.read_var(var.as_ref(), value.as_ref())?;
        }
        Ok(layer)
    }
}

/// The command line's layer: a flag per setting, `--<name>` in kebab case
/// (`--persistence-<name>` for the persistence settings), its help the setting's doc with
/// the default `mpreg-node` runs with. A flag not given sets nothing.
#[derive(Debug, Clone, Default)]
pub struct SettingsFlags(pub SettingsLayer);

impl clap::FromArgMatches for SettingsFlags {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = SettingsFlags::default();
        flags.update_from_arg_matches(m)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        self.0.read_flags(m);
        Ok(())
    }
}

impl clap::Args for SettingsFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        SettingsLayer::augment(cmd, &Settings::layered([&SettingsLayer::daemon()]))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// `host:port` for binding, with an IPv6 literal in brackets (`[::1]:8600`), as socket
/// address parsers want it.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_TOML: &str = r#"
[mpreg]
host = "127.0.0.1"
port = 0
name = "mpreg-node"
cluster_id = "cluster-a"
resources = ["cache", "queue"]
monitoring_enabled = false
enable_default_cache = true

[mpreg.persistence_config]
mode = "sqlite"
data_dir = "/var/lib/mpreg"
"#;

    #[test]
    fn ipv6_hosts_are_bracketed_for_binding() {
        let mut s = Settings {
            host: "::1".into(),
            port: 6666,
            dns_port: Some(8600),
            ..Settings::default()
        };
        assert_eq!(s.bind_addr(), "[::1]:6666");
        assert_eq!(
            s.dns_addrs(),
            ("[::1]:8600".to_owned(), Some("[::1]:8600".to_owned()))
        );
        s.dns_listen_host = Some("127.0.0.1".into());
        assert_eq!(s.dns_addrs().0, "127.0.0.1:8600");
        assert!(s.dns_addrs().0.parse::<std::net::SocketAddr>().is_ok());
    }

    #[test]
    fn the_seed_file_loads_and_reports_what_it_ignores() {
        let l = SettingsLayer::from_toml_str(SEED_TOML, "seed").unwrap();
        assert_eq!(l.port, Some(0));
        assert_eq!(l.cluster_id.as_deref(), Some("cluster-a"));
        let ignored: Vec<&str> = l.ignored.keys().map(String::as_str).collect();
        assert!(ignored.is_empty(), "{ignored:?}");
        assert_eq!(l.enable_default_cache, Some(true));
        assert_eq!(l.monitoring_enabled, Some(false));
        let s = Settings::layered([&l]);
        assert_eq!(s.persistence.mode, PersistenceMode::Sqlite);
        assert_eq!(
            s.persistence.sqlite_path(),
            std::path::Path::new("/var/lib/mpreg/mpreg.sqlite")
        );
    }

    #[test]
    fn later_layers_win_and_unset_values_fall_through() {
        let file = SettingsLayer::from_toml_str(SEED_TOML, "seed").unwrap();
        let env = SettingsLayer::from_env([
            ("MPREG_PORT", "9100"),
            ("MPREG_RESOURCES", "gpu, cpu"),
            ("HOME", "/x"),
        ])
        .unwrap();
        let flags = SettingsLayer {
            port: Some(9200),
            ..SettingsLayer::default()
        };
        let s = Settings::layered([&file, &env, &flags]);
        assert_eq!(s.port, 9200);
        assert_eq!(s.cluster_id, "cluster-a");
        assert_eq!(s.resources, ["cpu", "gpu"].map(String::from).into());
        assert_eq!(s.request_timeout_ms, Settings::default().request_timeout_ms);
        let s = Settings::layered([&file, &env]);
        assert_eq!(s.port, 9100);
    }

    #[test]
    fn bad_values_are_reported_with_their_source() {
        let e = SettingsLayer::from_env([("MPREG_PORT", "ninety")]).unwrap_err();
        assert!(e.to_string().contains("MPREG_PORT"));
        let e = SettingsLayer::from_toml_str("[mpreg]\nport = \"x\"\n", "f.toml").unwrap_err();
        assert!(e.to_string().starts_with("f.toml"));
        assert!(SettingsLayer::from_toml_str("[other]\n", "f.toml").is_err());
        let s = Settings {
            max_commands_per_request: 0,
            ..Settings::default()
        };
        assert!(s.validate().is_err());
    }

    #[test]
    fn token_and_tls_settings_must_fit_together() {
        let with = |f: &dyn Fn(&mut Settings)| {
            let mut s = Settings::default();
            f(&mut s);
            s.validate()
        };
        assert!(with(&|_| {}).is_ok());
        let e = with(&|s| s.auth_required = true).unwrap_err();
        assert!(e.to_string().contains("jwt_secret_file"), "{e}");
        assert!(
            with(&|s| {
                s.auth_required = true;
                s.jwt_secret_file = Some("jwt.secret".into());
            })
            .is_ok()
        );
        // (what is set) -> refused
        let refused: [&dyn Fn(&mut Settings); 6] = [
            &|s| s.jwt_secret_file = Some("jwt.secret".into()), // key without auth_required
            &|s| {
                s.auth_required = true;
                s.jwt_secret_file = Some("a".into());
                s.jwt_public_key_file = Some("b".into());
            },
            &|s| s.allowed_clients = ["svc".to_owned()].into(),
            &|s| s.tls_cert_file = Some("node.pem".into()),
            &|s| s.tls_peer_ca_file = Some("ca.pem".into()),
            &|s| s.advertised_urls = vec!["wss://h:1".into()],
        ];
        for (i, f) in refused.into_iter().enumerate() {
            assert!(with(f).is_err(), "case {i}");
        }
        let tls = |s: &mut Settings| {
            s.tls_cert_file = Some("node.pem".into());
            s.tls_key_file = Some("node.key".into());
        };
        assert!(with(&|s| tls(s)).is_ok());
        assert!(
            with(&|s| {
                tls(s);
                s.advertised_urls = vec!["ws://h:1".into()];
            })
            .is_err(),
            "a TLS node is not reached at ws://"
        );
        let l = SettingsLayer::from_env([
            ("MPREG_AUTH_REQUIRED", "true"),
            ("MPREG_JWT_SECRET_FILE", "/etc/mpreg/jwt.secret"),
            ("MPREG_ALLOWED_CLIENTS", "svc-a, svc-b"),
            ("MPREG_INTROSPECTION_ROLE", "admin"),
            ("MPREG_TLS_CERT_FILE", "n.pem"),
            ("MPREG_TLS_KEY_FILE", "n.key"),
            ("MPREG_TLS_PEER_CA_FILE", "ca.pem"),
        ])
        .unwrap();
        let s = Settings::layered([&l]);
        assert!(s.auth_required && s.tls_enabled());
        assert_eq!(s.allowed_clients.len(), 2);
        assert_eq!(s.introspection_role.as_deref(), Some("admin"));
        assert!(s.validate().is_ok());
        let toml = "[mpreg]\nauth_required = true\njwt_public_key_file = \"k.pem\"\n";
        let s = Settings::layered([&SettingsLayer::from_toml_str(toml, "f").unwrap()]);
        assert!(s.auth_required && s.jwt_public_key_file.is_some() && s.validate().is_ok());
    }

    #[test]
    fn unauthenticated_peers_are_served_on_loopback_only_unless_told() {
        let on = |host: &str, insecure: bool| Settings {
            host: host.to_owned(),
            insecure_peers: insecure,
            ..Settings::default()
        };
        // (host, --insecure-peers, has a secret) -> may start
        let table = [
            ("127.0.0.1", false, false, true),
            ("127.0.0.2", false, false, true),
            ("::1", false, false, true),
            ("[::1]", false, false, true),
            ("localhost", false, false, true),
            ("0.0.0.0", false, false, false),
            ("10.0.0.5", false, false, false),
            ("node1.example", false, false, false),
            ("0.0.0.0", true, false, true),
            ("0.0.0.0", false, true, true),
        ];
        for (host, insecure, secret, ok) in table {
            let r = on(host, insecure).check_peer_exposure(secret);
            assert_eq!(
                r.is_ok(),
                ok,
                "{host} insecure={insecure} secret={secret}: {r:?}"
            );
        }
        let l = SettingsLayer::from_env([
            ("MPREG_INSECURE_PEERS", "true"),
            ("MPREG_CLUSTER_SECRET_FILE", "/etc/mpreg/cluster.secret"),
        ])
        .unwrap();
        let s = Settings::layered([&l]);
        assert!(s.insecure_peers);
        assert_eq!(
            s.cluster_secret_file.as_deref(),
            Some(Path::new("/etc/mpreg/cluster.secret"))
        );
        assert!(SettingsLayer::from_env([("MPREG_INSECURE_PEERS", "maybe")]).is_err());
        let toml = "[mpreg]\ncluster_secret_file = \"s.secret\"\ninsecure_peers = true\n";
        let s = Settings::layered([&SettingsLayer::from_toml_str(toml, "f").unwrap()]);
        assert!(s.insecure_peers && s.cluster_secret_file.is_some());
    }

    /// The flags `mpreg-node` would parse from `args`, as a layer.
    fn flags(args: &[&str]) -> Result<SettingsLayer, clap::Error> {
        use clap::{Args, FromArgMatches};
        let cmd = SettingsFlags::augment_args(clap::Command::new("mpreg-node"));
        let m =
            cmd.try_get_matches_from(std::iter::once("mpreg-node").chain(args.iter().copied()))?;
        Ok(SettingsFlags::from_arg_matches(&m)?.0)
    }

    #[test]
    fn each_setting_has_its_variable_derived_from_its_name() {
        let l = SettingsLayer::from_env([
            ("MPREG_MAX_SNAPSHOT_BYTES", "2048"),
            ("MPREG_RAFT_HEARTBEAT_MS", "50"),
            ("MPREG_LOG_FORMAT", "json"),
            ("MPREG_PUBSUB_SLOW_SUBSCRIBER", "disconnect"),
            ("MPREG_ADVERTISED_URLS", "ws://a:1, ,ws://b:2"),
            ("MPREG_MONITORING_ENABLE_CORS", "no"),
            ("MPREG_PERSISTENCE_MODE", "sqlite"),
            ("MPREG_DATA_DIR", "/d"),
            // Not a setting's variable: ignored, as other variables are.
            ("MPREG_max_connections", "x"),
            ("MPREG_", "x"),
        ])
        .unwrap();
        let s = Settings::layered([&l]);
        assert_eq!(s.max_snapshot_bytes, 2048);
        assert_eq!(s.raft_heartbeat_ms, 50);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.pubsub_slow_subscriber, SlowSubscriber::Disconnect);
        assert_eq!(s.advertised_urls, ["ws://a:1", "ws://b:2"]);
        assert!(!s.monitoring_enable_cors);
        assert_eq!(s.persistence.mode, PersistenceMode::Sqlite);
        assert_eq!(s.persistence.data_dir, Path::new("/d"));
        assert_eq!(s.persistence.sqlite_filename, "mpreg.sqlite");
        let only_dir = SettingsLayer::from_env([("MPREG_PERSISTENCE_DIR", "/e")]).unwrap();
        assert_eq!(only_dir.persistence.unwrap().mode, None);
        assert!(SettingsLayer::from_env([("HOME", "/x")]).unwrap() == SettingsLayer::default());
        let e = SettingsLayer::from_env([("MPREG_LOG_FORMAT", "xml")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "environment variable MPREG_LOG_FORMAT: `xml` is not a log format (text or json)"
        );
        let e = SettingsLayer::from_env([("MPREG_PERSISTENCE_MODE", "disk")]).unwrap_err();
        assert!(e.to_string().contains("MPREG_PERSISTENCE_MODE"), "{e}");
    }

    #[test]
    fn each_setting_has_its_flag_derived_from_its_name() {
        let l = flags(&[
            "--port",
            "9100",
            "--max-snapshot-bytes",
            "2048",
            "--resources",
            "gpu, cpu",
            "--advertised-url",
            "ws://a:1",
            "--advertised-url",
            "ws://b:2",
            "--tls-cert",
            "n.pem",
            "--insecure-peers",
            "--no-monitoring",
            "--data-dir",
            "/d",
            "--persistence-mode",
            "memory",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(l.port, Some(9100));
        assert_eq!(l.max_snapshot_bytes, Some(2048));
        assert_eq!(l.resources, Some(["cpu", "gpu"].map(String::from).into()));
        assert_eq!(
            l.advertised_urls.as_deref(),
            Some(&["ws://a:1".to_owned(), "ws://b:2".to_owned()][..])
        );
        assert_eq!(l.tls_cert_file.as_deref(), Some(Path::new("n.pem")));
        assert_eq!(l.insecure_peers, Some(true));
        assert_eq!(l.monitoring_enabled, Some(false));
        assert_eq!(l.log_format, Some(LogFormat::Json));
        let p = l.persistence.unwrap();
        assert_eq!(p.mode, Some(PersistenceMode::Memory));
        assert_eq!(p.data_dir.as_deref(), Some(Path::new("/d")));
        // Flags not given set nothing, so the layers below them stay.
        let none = flags(&[]).unwrap();
        assert_eq!(none, SettingsLayer::default());
        assert!(flags(&["--port", "ninety"]).is_err());
        assert!(flags(&["--log-format", "xml"]).is_err());
        assert!(flags(&["--no-such-flag"]).is_err());
    }

    #[test]
    fn flag_help_is_the_doc_with_the_daemons_default() {
        use clap::Args;
        let cmd = SettingsFlags::augment_args(clap::Command::new("mpreg-node"));
        let help = |long: &str| {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(long))
                .unwrap_or_else(|| panic!("--{long}"));
            arg.get_help().map(ToString::to_string).unwrap_or_default()
        };
        assert_eq!(
            help("max-message-bytes"),
            "Largest WebSocket message accepted, in bytes [default: 20971520]"
        );
        assert!(help("persistence-mode").ends_with("[default: sqlite]"));
        assert_eq!(help("no-monitoring"), "Do not serve the admin HTTP server");
        assert!(!help("tls-cert").contains("default"));
    }

    #[test]
    fn declared_bounds_are_checked_with_their_messages() {
        let invalid = |f: &dyn Fn(&mut Settings)| {
            let mut s = Settings::default();
            f(&mut s);
            s.validate().unwrap_err().to_string()
        };
        assert_eq!(
            invalid(&|s| s.max_message_bytes = 1023),
            "setting `max_message_bytes` must be at least 1024"
        );
        assert_eq!(
            invalid(&|s| s.voters = 0),
            "setting `voters` must be at least 1"
        );
        assert_eq!(
            invalid(&|s| s.max_snapshot_bytes = (1 << 30) + 1),
            "setting `max_snapshot_bytes` must be at least 1024 and at most 1073741824 (1 GiB)"
        );
        assert_eq!(
            invalid(&|s| s.pubsub_backlog_seconds = 7 * 24 * 3600 + 1),
            "setting `pubsub_backlog_seconds` must be at most 604800 (a week)"
        );
        assert_eq!(
            invalid(&|s| s.host.clear()),
            "setting `host` must not be empty"
        );
    }
}
