//! Version constraints in the original's syntax, with semver's own as a fallback.
//!
//! Clauses are joined by `,` (AND). Each clause is an operator (`>=`, `>`, `<=`, `<`, `=`,
//! `==`, or none) and a version `v?X[.Y[.Z]]`. With a full `X.Y.Z`, equality is exact; with a
//! partial version, equality (or no operator) matches every version with that prefix, so
//! `1.2` matches `1.2.7` but not `1.3.0`, and ordering operators pad with zeros (`>=1.2` is
//! `>=1.2.0`). Anything else is tried as a semver requirement (`^1.2`, `~1.2.3`, `*`).

use semver::{Version, VersionReq};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version constraint `{input}`: {reason}")]
pub struct ConstraintError {
    pub input: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Clause {
    op: Op,
    /// The version padded with zeros.
    version: Version,
    /// How many of major/minor/patch were written (1..=3).
    parts: usize,
}

impl Clause {
    fn matches(&self, v: &Version) -> bool {
        match self.op {
            Op::Ge => v >= &self.version,
            Op::Gt => v > &self.version,
            Op::Le => v <= &self.version,
            Op::Lt => v < &self.version,
            Op::Eq => match self.parts {
                1 => v.major == self.version.major,
                2 => v.major == self.version.major && v.minor == self.version.minor,
                _ => v == &self.version,
            },
        }
    }
}

/// A parsed `version_constraint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionConstraint(Rule);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Clauses(Vec<Clause>),
    Semver(VersionReq),
}

impl VersionConstraint {
    pub fn parse(input: &str) -> Result<VersionConstraint, ConstraintError> {
        let fail = |reason: String| ConstraintError {
            input: input.to_owned(),
            reason,
        };
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(fail("empty".to_owned()));
        }
        let clauses: Result<Vec<Clause>, String> =
            trimmed.split(',').map(|c| parse_clause(c.trim())).collect();
        match clauses {
            Ok(clauses) => Ok(VersionConstraint(Rule::Clauses(clauses))),
            Err(ours) => VersionReq::parse(trimmed)
                .map(|req| VersionConstraint(Rule::Semver(req)))
                .map_err(|_| fail(ours)),
        }
    }

    /// Matches `v` alone (build metadata aside).
    pub fn exactly(v: &Version) -> VersionConstraint {
        VersionConstraint(Rule::Semver(VersionReq {
            comparators: vec![semver::Comparator {
                op: semver::Op::Exact,
                major: v.major,
                minor: Some(v.minor),
                patch: Some(v.patch),
                pre: v.pre.clone(),
            }],
        }))
    }

    pub fn matches(&self, v: &Version) -> bool {
        match &self.0 {
            Rule::Clauses(cs) => cs.iter().all(|c| c.matches(v)),
            Rule::Semver(req) => req.matches(v),
        }
    }
}

fn parse_clause(clause: &str) -> Result<Clause, String> {
    let (op, rest) = [
        (">=", Op::Ge),
        ("<=", Op::Le),
        ("==", Op::Eq),
        (">", Op::Gt),
        ("<", Op::Lt),
        ("=", Op::Eq),
    ]
    .iter()
    .find_map(|(p, op)| clause.strip_prefix(p).map(|rest| (*op, rest)))
    .unwrap_or((Op::Eq, clause));
    let (version, parts) = parse_loose_version(rest.trim())?;
    Ok(Clause { op, version, parts })
}

/// Parses `v?X[.Y[.Z]]` (a full version may carry semver pre-release/build tags).
pub fn parse_loose_version(text: &str) -> Result<(Version, usize), String> {
    let text = text.strip_prefix('v').unwrap_or(text);
    if text.is_empty() {
        return Err("missing version".to_owned());
    }
    if let Ok(v) = Version::parse(text) {
        return Ok((v, 3));
    }
    let nums: Result<Vec<u64>, _> = text.split('.').map(str::parse::<u64>).collect();
    match nums {
        Ok(n) if (1..=3).contains(&n.len()) => Ok((
            Version::new(
                n[0],
                n.get(1).copied().unwrap_or(0),
                n.get(2).copied().unwrap_or(0),
            ),
            n.len(),
        )),
        _ => Err(format!("`{text}` is not a version (expected X[.Y[.Z]])")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(c: &str, v: &str) -> bool {
        VersionConstraint::parse(c)
            .unwrap()
            .matches(&Version::parse(v).unwrap())
    }

    #[test]
    fn original_syntax() {
        assert!(m(">=1.0.0,<2.0.0", "1.9.3"));
        assert!(!m(">=1.0.0,<2.0.0", "2.0.0"));
        assert!(m("==1.2.0", "1.2.0"));
        assert!(!m("==1.2.0", "1.2.1"));
        assert!(m("1.2", "1.2.7"));
        assert!(!m("1.2", "1.3.0"));
        assert!(m("v1", "1.9.0"));
        assert!(m(">1.2", "1.2.1"));
        assert!(m("<= 1.2.0", "1.2.0"));
        assert!(m("=2.0.0", "2.0.0"));
    }

    #[test]
    fn semver_fallback_and_errors() {
        assert!(m("^1.2", "1.9.0"));
        assert!(!m("~1.2.3", "1.3.0"));
        assert!(VersionConstraint::parse("").is_err());
        assert!(VersionConstraint::parse(">=banana").is_err());
        assert!(VersionConstraint::parse("1.2.3.4").is_err());
    }
}
