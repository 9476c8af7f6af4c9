//! The peer hello's challenge-response, pure.
//!
//! ```text
//! dialler  ── Hello { .., nonce_d } ──────────────────────►  acceptor
//!          ◄─ Challenge { nonce_a, prove(Acceptor, hello, nonce_a) }
//!          ── Proof(prove(Dialler, hello, nonce_a)) ──────►
//!          ◄─ Welcome(Ok) | Welcome(Err(why)) ─────────────
//! ```
//!
//! Each proof is HMAC-SHA256 under the cluster secret over a label naming the side, the
//! exact bytes of the hello (which carry the dialler's fresh nonce and every field it
//! claims) and the acceptor's fresh nonce. So:
//! * the secret never crosses the wire, and each side learns the other holds it;
//! * a recorded hello and proof are worthless on another connection (the acceptor's nonce
//!   is new each time), and the acceptor's proof never serves as a dialler's (the labels);
//! * nothing the hello claims (cluster, target node, who dials) can be changed in flight
//!   without the proof failing.
//!
//! What it does not do: the frames after the hello are not authenticated one by one, so an
//! attacker on the path between two nodes can still inject into an established connection.
//! TLS on the node's port closes that (docs/SECURITY.md).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::Sha256;

use super::ClusterSecret;
use crate::env::SharedRng;

/// Bytes of a nonce; each side draws a fresh one per connection.
pub const NONCE_BYTES: usize = 32;
pub type Nonce = [u8; NONCE_BYTES];
/// An HMAC-SHA256 tag.
pub type Proof = [u8; 32];

/// Which side of the hello computes a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Acceptor,
    Dialler,
}

impl Side {
    fn label(self) -> &'static [u8] {
        match self {
            Side::Acceptor => b"mpreg peer hello v1: acceptor",
            Side::Dialler => b"mpreg peer hello v1: dialler",
        }
    }
}

fn keyed(secret: &ClusterSecret, side: Side, hello: &[u8], nonce: &Nonce) -> Hmac<Sha256> {
    // HMAC takes keys of every length (longer ones are hashed first): this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.key())
        .expect("HMAC-SHA256 accepts keys of every length");
    mac.update(side.label());
    // Length-prefixed, so that no two (hello, nonce) pairs feed the MAC the same bytes.
    for part in [hello, nonce.as_slice()] {
        mac.update(&(part.len() as u64).to_le_bytes());
        mac.update(part);
    }
    mac
}

/// `side`'s proof that it holds `secret`, bound to this connection's `hello` bytes and the
/// acceptor's `nonce`.
pub fn prove(secret: &ClusterSecret, side: Side, hello: &[u8], nonce: &Nonce) -> Proof {
    keyed(secret, side, hello, nonce)
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `proof` is `side`'s proof for `hello` and `nonce` (compared in constant time).
pub fn verify(
    secret: &ClusterSecret,
    side: Side,
    hello: &[u8],
    nonce: &Nonce,
    proof: &[u8],
) -> bool {
    keyed(secret, side, hello, nonce)
        .verify_slice(proof)
        .is_ok()
}

/// A fresh nonce from the node's generator (seeded from the OS in production, from the
/// run's seed in the simulator).
pub fn nonce(rng: &SharedRng) -> Nonce {
    let mut n = [0u8; NONCE_BYTES];
    for chunk in n.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    n
}

/// How often a refused peer is logged: a flood of bad hellos costs one line per interval.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// One log line per [`REFUSAL_LOG_EVERY`] for refused hellos, saying how many were not
/// logged in between.
pub struct RefusalLog {
    /// What was refused, for the log line ("peer connection").
    subject: &'static str,
    last: Mutex<Option<tokio::time::Instant>>,
    suppressed: AtomicU64,
}

impl Default for RefusalLog {
    fn default() -> Self {
        RefusalLog::new("peer connection")
    }
}

impl RefusalLog {
    /// A log of refused `subject`s.
    pub fn new(subject: &'static str) -> RefusalLog {
        RefusalLog {
            subject,
            last: Mutex::default(),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Logs that `peer` was refused for `why`, unless a line went out recently.
    pub fn refused(&self, now: tokio::time::Instant, peer: &str, why: &str) {
        let mut last = self.last.lock();
        if last.is_some_and(|t| now.duration_since(t) < REFUSAL_LOG_EVERY) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(now);
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::warn!(%peer, %why, suppressed, "refused a {}", self.subject);
    }

    /// Refusals not logged since the last line.
    pub fn suppressed(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> ClusterSecret {
        ClusterSecret::from_bytes(s.as_bytes()).unwrap()
    }

    #[test]
    fn proofs_verify_only_for_the_same_secret_side_hello_and_nonce() {
        let k = secret("the cluster secret, 32 bytes....");
        let other = secret("another cluster's secret........");
        let hello = b"hello bytes with the dialler's nonce";
        let rng = SharedRng::seeded(1);
        let (n, n2) = (nonce(&rng), nonce(&rng));
        assert_ne!(n, n2);
        let p = prove(&k, Side::Dialler, hello, &n);
        // (secret, side, hello, nonce) -> verifies?
        let table: [(&ClusterSecret, Side, &[u8], &Nonce, bool); 7] = [
            (&k, Side::Dialler, hello, &n, true),
            (&other, Side::Dialler, hello, &n, false), // wrong secret
            (&ClusterSecret::none(), Side::Dialler, hello, &n, false), // no secret
            (&k, Side::Acceptor, hello, &n, false),    // reflected to the other side
            (
                &k,
                Side::Dialler,
                b"hello bytes with another nonce",
                &n,
                false,
            ), // altered hello
            (&k, Side::Dialler, hello, &n2, false),    // replayed on a new connection
            (&k, Side::Dialler, &hello[..10], &n, false),
        ];
        for (i, (s, side, h, nn, ok)) in table.into_iter().enumerate() {
            assert_eq!(verify(s, side, h, nn, &p), ok, "row {i}");
        }
        assert!(
            !verify(&k, Side::Dialler, hello, &n, &p[..31]),
            "a truncated proof"
        );
    }

    #[test]
    fn nodes_without_a_secret_prove_the_empty_one() {
        let none = ClusterSecret::none();
        let n = [7u8; NONCE_BYTES];
        let p = prove(&none, Side::Acceptor, b"h", &n);
        assert!(verify(&none, Side::Acceptor, b"h", &n, &p));
        assert!(!verify(
            &secret("0123456789abcdef"),
            Side::Acceptor,
            b"h",
            &n,
            &p
        ));
    }

    #[test]
    fn refusals_are_logged_once_per_interval() {
        let log = RefusalLog::default();
        let t0 = tokio::time::Instant::now();
        log.refused(t0, "a", "bad proof");
        log.refused(t0 + Duration::from_secs(1), "a", "bad proof");
        log.refused(t0 + Duration::from_secs(2), "b", "bad proof");
        assert_eq!(log.suppressed(), 2);
        log.refused(t0 + REFUSAL_LOG_EVERY, "a", "bad proof");
        assert_eq!(log.suppressed(), 0);
    }
}
