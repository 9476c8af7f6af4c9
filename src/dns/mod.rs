//! Service discovery over DNS: the original's DNS gateway, answered from this node's
//! replica of the catalog (Consul's model: any member answers, during an election too).
//!
//! In the shape of a system (docs/ARCHITECTURE.md):
//! * the engine, pure: [`names`] (what a name asks for, node labels), [`registry`]
//!   (registrations checked under bounds, the original's reply shapes), [`answer`] (a
//!   question and the catalog in, records out), [`wire`] (bytes to a question and an
//!   answer to bytes within the transport's size), [`cache`] (encoded answers by
//!   question) and [`rrl`] (response rate limiting);
//! * the service at the IO edge: [`service`] (UDP and TCP on `Env`);
//! * its built-ins: `builtins::dns` (`dns_register`, `dns_unregister`, `dns_list`,
//!   `dns_describe`);
//! * its settings: the `dns_*` keys (`DnsLimits::from_settings`,
//!   `service::zones_from_settings`);
//! * its metrics: [`metrics`].

pub mod answer;
pub mod cache;
pub mod client;
pub mod metrics;
pub mod names;
pub mod registry;
pub mod rrl;
pub mod service;
pub mod wire;
