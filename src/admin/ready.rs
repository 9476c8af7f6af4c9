//! Readiness, as a Kubernetes probe reads it: whether this node should get traffic now.

/// What readiness is decided from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// The node is shutting down (it takes no new requests).
    pub draining: bool,
    /// The node is a member of the cluster's membership (its own registration committed).
    pub member: bool,
    /// Its replica applied everything the leader had committed, confirmed within the bound
    /// (a read index round trip): `false` when it lags, or no leader answered.
    pub caught_up: bool,
}

/// Ready, or why not (the 503's body).
pub fn decide(f: Facts) -> Result<(), &'static str> {
    if f.draining {
        return Err("draining: the node is shutting down");
    }
    if !f.member {
        return Err("not yet a member of the cluster");
    }
    if !f.caught_up {
        return Err(
            "the replica has not caught up with the leader's commit (or no leader answered)",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_as_a_caught_up_member_that_is_not_draining() {
        // (draining, member, caught_up) -> ready
        let table = [
            (false, true, true, true),
            (true, true, true, false),
            (false, false, true, false),
            (false, true, false, false),
            (true, false, false, false),
        ];
        for (draining, member, caught_up, ok) in table {
            let r = decide(Facts {
                draining,
                member,
                caught_up,
            });
            assert_eq!(r.is_ok(), ok, "{draining} {member} {caught_up}: {r:?}");
        }
        assert!(
            decide(Facts {
                draining: true,
                member: false,
                caught_up: false
            })
            .unwrap_err()
            .starts_with("draining"),
            "draining is said first: it is what an operator did"
        );
    }
}
