//! Who a client is, and what it may do.
//!
//! A node with `auth_required` takes a client connection only with a valid token (a JWT,
//! `token.rs`), presented on the WebSocket upgrade (`upgrade.rs`); the token's `sub` and
//! `roles` become the connection's [`Access`]. Every call checks it against the roles the
//! function names ([`Access::may_call`]), on the node that runs it: a forwarded step carries
//! the caller's [`Identity`] (peers are authenticated by the cluster secret, so the identity
//! they carry is the entry node's word).

pub mod token;
pub mod upgrade;

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use token::{AuthError, Claims, TokenIssuer, TokenVerifier};

/// The role a client needs to register a worker's functions.
pub const WORKER_ROLE: &str = "worker";

/// Longest `sub` a token may carry.
pub const MAX_SUBJECT_BYTES: usize = 256;
/// Most roles a token may carry, and the longest role name.
pub const MAX_ROLES: usize = 64;
pub const MAX_ROLE_BYTES: usize = 128;

/// A caller as a verified token describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The token's `sub`: who the client is.
    pub sub: String,
    /// The token's `roles`.
    pub roles: BTreeSet<String>,
}

impl Identity {
    /// A caller with no token (a step forwarded by a node that does not require one).
    pub fn anonymous() -> Identity {
        Identity {
            sub: String::new(),
            roles: BTreeSet::new(),
        }
    }

    /// Whether this identity fits the bounds a token's claims have ([`MAX_SUBJECT_BYTES`],
    /// [`MAX_ROLES`], [`MAX_ROLE_BYTES`]); a forwarded identity beyond them is refused.
    pub fn within_bounds(&self) -> bool {
        self.sub.len() <= MAX_SUBJECT_BYTES
            && self.roles.len() <= MAX_ROLES
            && self.roles.iter().all(|r| r.len() <= MAX_ROLE_BYTES)
    }
}

/// What the calls of one connection (or one forwarded step) are allowed.
#[derive(Debug, Clone, Default)]
pub enum Access {
    /// The node does not require tokens: everything is allowed, as before authentication.
    #[default]
    Open,
    /// A verified caller: a function that names roles needs one of them.
    Verified(Arc<Identity>),
}

impl Access {
    /// Whether this caller may call a function that names `roles` (none: anyone may).
    /// A function that names several roles may be called by a holder of any one of them.
    pub fn may_call(&self, roles: &BTreeSet<String>) -> bool {
        match self {
            Access::Open => true,
            Access::Verified(who) => {
                roles.is_empty() || roles.iter().any(|r| who.roles.contains(r))
            }
        }
    }

    /// Whether this caller holds `role` (always, when the node does not require tokens).
    pub fn has_role(&self, role: &str) -> bool {
        match self {
            Access::Open => true,
            Access::Verified(who) => who.roles.contains(role),
        }
    }

    /// The identity a forwarded step carries (`None` when tokens are not required here).
    pub fn identity(&self) -> Option<&Identity> {
        match self {
            Access::Open => None,
            Access::Verified(who) => Some(who),
        }
    }

    /// The access a step forwarded from another node runs with. A node that requires
    /// tokens treats a step that carries no identity as anonymous (its entry node did not
    /// require one): it may call only functions that name no roles.
    pub fn of_step(auth_required: bool, caller: Option<Identity>) -> Access {
        if !auth_required {
            return Access::Open;
        }
        let who = caller
            .filter(Identity::within_bounds)
            .unwrap_or_else(Identity::anonymous);
        Access::Verified(Arc::new(who))
    }

    /// Who is calling, for messages ("client `svc-a`").
    pub fn describe(&self) -> String {
        match self {
            Access::Open => "an unauthenticated caller".to_owned(),
            Access::Verified(who) if who.sub.is_empty() => "an anonymous caller".to_owned(),
            Access::Verified(who) => format!("client `{}`", who.sub),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(r: &[&str]) -> BTreeSet<String> {
        r.iter().map(|s| (*s).to_owned()).collect()
    }

    fn verified(r: &[&str]) -> Access {
        Access::Verified(Arc::new(Identity {
            sub: "svc".into(),
            roles: roles(r),
        }))
    }

    #[test]
    fn a_function_that_names_roles_needs_one_of_them() {
        // (caller's roles, function's roles) -> may call
        let table: [(&[&str], &[&str], bool); 6] = [
            (&[], &[], true),
            (&["caller"], &[], true),
            (&[], &["caller"], false),
            (&["caller"], &["caller"], true),
            (&["worker"], &["caller", "admin"], false),
            (&["admin", "x"], &["caller", "admin"], true),
        ];
        for (have, need, ok) in table {
            assert_eq!(
                verified(have).may_call(&roles(need)),
                ok,
                "{have:?} {need:?}"
            );
        }
        assert!(
            Access::Open.may_call(&roles(&["admin"])),
            "no tokens: as before"
        );
        assert!(Access::Open.has_role(WORKER_ROLE));
        assert!(!verified(&["caller"]).has_role(WORKER_ROLE));
    }

    #[test]
    fn a_forwarded_step_without_identity_is_anonymous_where_tokens_are_required() {
        let a = Access::of_step(true, None);
        assert!(!a.may_call(&roles(&["caller"])));
        assert!(a.may_call(&roles(&[])));
        assert!(Access::of_step(false, None).may_call(&roles(&["caller"])));
        let carried = Identity {
            sub: "svc".into(),
            roles: roles(&["caller"]),
        };
        assert!(Access::of_step(true, Some(carried.clone())).may_call(&roles(&["caller"])));
        let oversized = Identity {
            sub: "s".repeat(MAX_SUBJECT_BYTES + 1),
            ..carried
        };
        assert!(
            !Access::of_step(true, Some(oversized)).may_call(&roles(&["caller"])),
            "an identity beyond a token's bounds is not taken"
        );
    }
}
