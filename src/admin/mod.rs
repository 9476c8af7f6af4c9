//! The admin HTTP server: health, readiness, Prometheus metrics and status, on its own port
//! (`monitoring_host`:`monitoring_port`), for operators, probes and scrapers.
//!
//! The server ([`server`]) is axum's router on hyper's HTTP/1 connections, accepted from
//! the node's own listener (`Env`) and TLS, so the same bounds apply as on the node's port.
//! What it reports is decided by pure functions ([`ready`], [`health`], [`window`]) over what
//! the node exposes.

pub mod dashboard;
pub mod health;
pub mod ready;
pub mod routes;
pub mod server;
pub mod status;
pub mod window;
