//! One node's health score, the `overall_health_score` of its transport endpoint: a number
//! from 0 (do not send it traffic) to 1, from signals the node measures. Pure.
//!
//! score = 0 when the node is not ready (draining, not a member, or behind its leader);
//! otherwise 1 − 0.4·(error rate over the last hour) − 0.3·(share of peers down)
//! − 0.3·min(1, apply lag / 1000 entries).

/// Committed entries not yet applied at which the lag term is at its full weight.
pub const LAG_FULL: u64 = 1000;

/// What the score is computed from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Signals {
    /// `/readyz` would say 200.
    pub ready: bool,
    /// Other members, and how many of them the failure detector holds down.
    pub peers: usize,
    pub peers_down: usize,
    /// Calls over the last hour, and how many failed.
    pub calls: u64,
    pub failures: u64,
    /// Raft log entries this replica has but has not applied.
    pub apply_lag: u64,
}

/// The score, in 0..=1.
pub fn score(s: Signals) -> f64 {
    if !s.ready {
        return 0.0;
    }
    let share = |part: f64, whole: f64| {
        if whole > 0.0 {
            (part / whole).min(1.0)
        } else {
            0.0
        }
    };
    let errors = share(s.failures as f64, s.calls as f64);
    let down = share(s.peers_down as f64, s.peers as f64);
    let lag = share(s.apply_lag as f64, LAG_FULL as f64);
    (1.0 - 0.4 * errors - 0.3 * down - 0.3 * lag).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WELL: Signals = Signals {
        ready: true,
        peers: 2,
        peers_down: 0,
        calls: 100,
        failures: 0,
        apply_lag: 0,
    };

    #[test]
    fn each_signal_moves_the_score() {
        assert_eq!(score(WELL), 1.0);
        let s = |f: fn(&mut Signals)| {
            let mut x = WELL;
            f(&mut x);
            score(x)
        };
        assert_eq!(s(|x| x.ready = false), 0.0);
        assert!((s(|x| x.failures = 50) - 0.8).abs() < 1e-9);
        assert!((s(|x| x.peers_down = 1) - 0.85).abs() < 1e-9);
        assert!((s(|x| x.apply_lag = 500) - 0.85).abs() < 1e-9);
        assert!((s(|x| x.apply_lag = 1_000_000) - 0.7).abs() < 1e-9);
        // All at once, the score stays in range; a lone node with no calls is well.
        let worst = s(|x| {
            x.failures = 100;
            x.peers_down = 2;
            x.apply_lag = u64::MAX;
        });
        assert!((0.0..0.01).contains(&worst), "{worst}");
        assert_eq!(
            s(|x| {
                x.peers = 0;
                x.calls = 0;
            }),
            1.0
        );
    }
}
