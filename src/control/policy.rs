//! Namespace policies: which viewer may discover what, by namespace and tenant (the
//! original's `namespace_policy.py`). Pure: rules, their checks, and decisions.
//!
//! A rule covers its namespace and every namespace under it (`svc` covers `svc.a`, not
//! `svcx`); of the rules covering a namespace the longest wins (the first of equals). A
//! viewer sees a namespace when the policy is off, when no rule covers it and the default
//! allows, when the rule names no viewers, or when the rule names the viewer's tenant or
//! cluster. The reasons are the original's words, which its clients show.

use serde::{Deserialize, Serialize};

/// At most this many rules, names of at most [`MAX_TEXT`] bytes, lists of at most
/// [`MAX_LIST`]: a policy is replicated to every member and read on every discovery call.
pub const MAX_RULES: usize = 256;
pub const MAX_TEXT: usize = 253;
pub const MAX_LIST: usize = 64;
/// Cutover windows per rule.
pub const MAX_WINDOWS: usize = 16;

/// The cluster's policy: off until applied with `enabled`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespacePolicy {
    pub enabled: bool,
    /// What a namespace no rule covers gets.
    pub default_allow: bool,
    pub rules: Vec<PolicyRule>,
}

impl Default for NamespacePolicy {
    fn default() -> Self {
        NamespacePolicy {
            enabled: false,
            default_allow: true,
            rules: Vec::new(),
        }
    }
}

/// One rule, with the original's fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRule {
    pub namespace: String,
    /// Clusters that may publish into the namespace (kept for federation; not checked
    /// within one cluster).
    pub owners: Vec<String>,
    /// Viewer clusters that may see it (none and no tenants: everyone).
    pub visibility: Vec<String>,
    pub visibility_tenants: Vec<String>,
    pub export_scopes: Vec<String>,
    pub allow_summaries: bool,
    pub cutover_windows: Vec<CutoverWindow>,
    pub policy_version: Option<String>,
}

/// A time window changing a rule's summary export (kept, for federation's summary export).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutoverWindow {
    /// Milliseconds since the epoch (the original's float seconds, kept exactly to the ms).
    pub starts_at_ms: i64,
    pub ends_at_ms: Option<i64>,
    pub export_scopes: Vec<String>,
    pub allow_summaries: Option<bool>,
}

/// Whether a viewer may see a namespace, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'a> {
    pub allowed: bool,
    pub reason: &'static str,
    /// The rule that decided, if one covers the namespace.
    pub rule: Option<&'a PolicyRule>,
}

impl PolicyRule {
    /// Whether this rule covers `namespace`.
    pub fn covers(&self, namespace: &str) -> bool {
        namespace == self.namespace
            || namespace
                .strip_prefix(self.namespace.as_str())
                .is_some_and(|rest| rest.starts_with('.'))
    }
}

impl NamespacePolicy {
    /// The rule deciding `namespace`: the longest covering one, the first of equals.
    pub fn rule_for(&self, namespace: &str) -> Option<&PolicyRule> {
        let mut best: Option<&PolicyRule> = None;
        for r in self.rules.iter().filter(|r| r.covers(namespace)) {
            if best.is_none_or(|b| r.namespace.len() > b.namespace.len()) {
                best = Some(r);
            }
        }
        best
    }

    /// Whether a viewer of cluster `cluster` (and tenant `tenant`) may see `namespace`.
    pub fn decide(&self, namespace: &str, cluster: &str, tenant: Option<&str>) -> Decision<'_> {
        let decision = |allowed, reason, rule| Decision {
            allowed,
            reason,
            rule,
        };
        if !self.enabled {
            return decision(true, "policy_disabled", None);
        }
        let Some(rule) = self.rule_for(namespace) else {
            return decision(self.default_allow, "no_policy", None);
        };
        if rule.visibility.is_empty() && rule.visibility_tenants.is_empty() {
            return decision(true, "visibility_unrestricted", Some(rule));
        }
        if tenant.is_some_and(|t| rule.visibility_tenants.iter().any(|v| v == t)) {
            return decision(true, "tenant_allowed", Some(rule));
        }
        if rule.visibility.iter().any(|v| v == cluster) {
            return decision(true, "viewer_allowed", Some(rule));
        }
        decision(false, "viewer_denied", Some(rule))
    }

    /// Shorthand: may the viewer see `namespace`? (An empty namespace is everyone's.)
    pub fn allows(&self, namespace: &str, cluster: &str, tenant: Option<&str>) -> bool {
        namespace.is_empty() || self.decide(namespace, cluster, tenant).allowed
    }
}

/// Entries the access and policy audits keep (the original's default); the oldest go.
pub const MAX_AUDIT: usize = 500;

/// A bounded log, oldest first: the discovery access audit (every denial) and the policy
/// audit (every validate and apply).
#[derive(Debug)]
pub struct AuditLog<T> {
    entries: parking_lot::Mutex<std::collections::VecDeque<T>>,
}

impl<T> Default for AuditLog<T> {
    fn default() -> Self {
        AuditLog {
            entries: parking_lot::Mutex::default(),
        }
    }
}

impl<T: Clone> AuditLog<T> {
    pub fn record(&self, entry: T) {
        let mut e = self.entries.lock();
        if e.len() >= MAX_AUDIT {
            e.pop_front();
        }
        e.push_back(entry);
    }

    /// The newest `limit` entries, oldest first (none, zero or negative: all, as the
    /// original reads its `limit`).
    pub fn newest(&self, limit: Option<i64>) -> Vec<T> {
        let e = self.entries.lock();
        let n = match limit {
            Some(l) if l > 0 => usize::try_from(l).unwrap_or(usize::MAX).min(e.len()),
            _ => e.len(),
        };
        e.iter().skip(e.len() - n).cloned().collect()
    }
}

/// A discovery denial, with the original's fields.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessDenial {
    /// The call (or `dns_query` for the DNS gateway).
    pub event: String,
    pub timestamp: f64,
    pub viewer_cluster_id: String,
    pub viewer_tenant_id: Option<String>,
    pub namespace: String,
    pub reason: &'static str,
}

/// A `namespace_policy_validate` or `namespace_policy_apply`, with the original's fields.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyChange {
    pub event: &'static str,
    pub timestamp: f64,
    pub actor: Option<String>,
    pub valid: bool,
    pub rule_count: usize,
    pub errors: Vec<String>,
}

/// What is wrong with `rules`, in the original's words (`rules[i]…`), plus this build's
/// bounds; empty: they may be applied.
pub fn validate(rules: &[PolicyRule]) -> Vec<String> {
    let mut errors = Vec::new();
    if rules.len() > MAX_RULES {
        errors.push(format!("at most {MAX_RULES} rules (got {})", rules.len()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, r) in rules.iter().enumerate() {
        let ns = r.namespace.trim();
        if ns.is_empty() {
            errors.push(format!("rules[{i}].namespace is empty"));
            continue;
        }
        if !seen.insert(ns) {
            errors.push(format!("rules[{i}].namespace duplicate: {ns}"));
        }
        if ns != r.namespace {
            errors.push(format!(
                "rules[{i}].namespace has surrounding spaces: {:?}",
                r.namespace
            ));
        }
        let texts = std::iter::once(&r.namespace)
            .chain(&r.owners)
            .chain(&r.visibility)
            .chain(&r.visibility_tenants)
            .chain(&r.export_scopes)
            .chain(&r.policy_version);
        if texts.into_iter().any(|t| t.len() > MAX_TEXT) {
            errors.push(format!("rules[{i}]: a name longer than {MAX_TEXT} bytes"));
        }
        let lists = [
            &r.owners,
            &r.visibility,
            &r.visibility_tenants,
            &r.export_scopes,
        ];
        if lists.iter().any(|l| l.len() > MAX_LIST) || r.cutover_windows.len() > MAX_WINDOWS {
            errors.push(format!(
                "rules[{i}]: at most {MAX_LIST} names per list and {MAX_WINDOWS} cutover windows"
            ));
        }
        for (w, win) in r.cutover_windows.iter().enumerate() {
            if win.starts_at_ms <= 0 {
                errors.push(format!("rules[{i}].cutover_windows[{w}].starts_at invalid"));
            } else if win.ends_at_ms.is_some_and(|e| e <= win.starts_at_ms) {
                errors.push(format!(
                    "rules[{i}].cutover_windows[{w}].ends_at before starts_at"
                ));
            }
            if win.export_scopes.len() > MAX_LIST
                || win.export_scopes.iter().any(|s| s.len() > MAX_TEXT)
            {
                errors.push(format!(
                    "rules[{i}].cutover_windows[{w}]: at most {MAX_LIST} scopes of {MAX_TEXT} bytes"
                ));
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(ns: &str, visibility: &[&str], tenants: &[&str]) -> PolicyRule {
        PolicyRule {
            namespace: ns.into(),
            visibility: visibility.iter().map(|s| (*s).to_owned()).collect(),
            visibility_tenants: tenants.iter().map(|s| (*s).to_owned()).collect(),
            ..PolicyRule::default()
        }
    }

    #[test]
    fn the_longest_covering_rule_decides_with_the_originals_reasons() {
        let mut p = NamespacePolicy {
            enabled: true,
            default_allow: false,
            rules: vec![
                rule("svc", &[], &[]),
                rule("svc.secret", &["secure"], &["tenant-a"]),
            ],
        };
        let reason = |p: &NamespacePolicy, ns, c, t| {
            let d = p.decide(ns, c, t);
            (d.allowed, d.reason)
        };
        assert_eq!(
            reason(&p, "svc.public", "c", None),
            (true, "visibility_unrestricted")
        );
        assert_eq!(
            reason(&p, "svc.secret.x", "c", None),
            (false, "viewer_denied")
        );
        assert_eq!(
            reason(&p, "svc.secret", "secure", None),
            (true, "viewer_allowed")
        );
        assert_eq!(
            reason(&p, "svc.secret", "c", Some("tenant-a")),
            (true, "tenant_allowed")
        );
        assert_eq!(reason(&p, "svcx", "c", None), (false, "no_policy"));
        assert_eq!(
            p.rule_for("svc.secret.deep").map(|r| r.namespace.as_str()),
            Some("svc.secret")
        );
        assert!(p.allows("", "c", None), "an empty namespace is everyone's");
        p.default_allow = true;
        assert_eq!(reason(&p, "other", "c", None), (true, "no_policy"));
        p.enabled = false;
        assert_eq!(
            reason(&p, "svc.secret", "c", None),
            (true, "policy_disabled")
        );
    }

    #[test]
    fn audits_keep_the_newest_500_oldest_first() {
        let log = AuditLog::default();
        for i in 0..(MAX_AUDIT as i64 + 20) {
            log.record(i);
        }
        let all = log.newest(None);
        assert_eq!(all.len(), MAX_AUDIT);
        assert_eq!((all[0], all[MAX_AUDIT - 1]), (20, MAX_AUDIT as i64 + 19));
        assert_eq!(
            log.newest(Some(2)),
            [MAX_AUDIT as i64 + 18, MAX_AUDIT as i64 + 19]
        );
        assert_eq!(log.newest(Some(0)).len(), MAX_AUDIT);
        assert_eq!(log.newest(Some(-3)).len(), MAX_AUDIT);
    }

    #[test]
    fn bad_rules_are_named_in_the_originals_words() {
        let window = |s, e| CutoverWindow {
            starts_at_ms: s,
            ends_at_ms: e,
            ..CutoverWindow::default()
        };
        let mut dup = rule("a", &[], &[]);
        dup.cutover_windows = vec![window(0, None), window(10, Some(5))];
        let rules = vec![rule(" ", &[], &[]), rule("a", &[], &[]), dup];
        assert_eq!(
            validate(&rules),
            [
                "rules[0].namespace is empty",
                "rules[2].namespace duplicate: a",
                "rules[2].cutover_windows[0].starts_at invalid",
                "rules[2].cutover_windows[1].ends_at before starts_at",
            ]
        );
        assert!(validate(&[rule("a", &["x"], &[])]).is_empty());
        let big = vec![rule("a", &[], &[]); MAX_RULES + 1];
        assert!(validate(&big)[0].starts_with("at most 256 rules"));
        let long = rule(&"n".repeat(MAX_TEXT + 1), &[], &[]);
        assert_eq!(validate(&[long]).len(), 1);
    }
}
