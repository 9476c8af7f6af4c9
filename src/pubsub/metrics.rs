//! Pub/sub's figures for `/metrics`: what was published, delivered, dropped and forwarded
//! here, the subscriptions held, and what the backlog keeps.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::exchange::Exchange;
use crate::metrics::{counter, gauge, int};

/// Read at scrape time from the node's exchange.
#[derive(Debug)]
pub(crate) struct PubSubMetrics(pub(crate) Arc<Exchange>);

impl Collector for PubSubMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut e;
        let ps = self.0.stats();
        counter(
            e,
            "mpreg_pubsub_published",
            "Messages published on this node",
            ps.published,
        )?;
        counter(
            e,
            "mpreg_pubsub_delivered",
            "Notifications handed to subscribers' connections here",
            ps.delivered,
        )?;
        counter(
            e,
            "mpreg_pubsub_dropped",
            "Notifications dropped because a subscriber's queue was full (drop_oldest)",
            ps.dropped,
        )?;
        counter(
            e,
            "mpreg_pubsub_forwarded",
            "Messages published here and queued for a peer whose clients subscribe to them",
            self.0.forwarded.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "mpreg_pubsub_forward_dropped",
            "Messages published here not sent to a peer because its queue was full",
            self.0.forward_dropped.load(Ordering::Relaxed),
        )?;
        gauge(
            e,
            "mpreg_pubsub_subscriptions",
            "Topic subscriptions held by clients of this node",
            int(ps.subscriptions),
        )?;
        gauge(
            e,
            "mpreg_pubsub_waiting_bytes",
            "Bytes of notifications waiting for subscribers here",
            int(ps.waiting_bytes),
        )?;
        gauge(
            e,
            "mpreg_pubsub_backlog_messages",
            "Messages published here kept for subscribers that ask for a backlog",
            int(ps.backlog_messages),
        )?;
        gauge(
            e,
            "mpreg_pubsub_backlog_bytes",
            "Bytes kept for backlogs (pubsub_backlog_total_bytes bounds them)",
            int(ps.backlog_bytes),
        )?;
        counter(
            e,
            "mpreg_pubsub_backlog_evicted",
            "Kept messages let go of for the backlog's bounds (count, bytes, age)",
            ps.backlog_evicted,
        )?;
        counter(
            e,
            "mpreg_pubsub_backlog_delivered",
            "Backlog messages delivered to subscriptions here",
            ps.backlog_delivered,
        )
    }
}
