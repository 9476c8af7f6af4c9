//! Which registered function a call may use: the one rule, shared by the registry (a call
//! run here), routing (a call run elsewhere, from the catalog), and the built-ins that list
//! or describe functions.

use std::collections::BTreeSet;

use semver::Version;

use super::VersionConstraint;

/// A function as a query sees it: a registration here or a catalog entry.
#[derive(Debug, Clone, Copy)]
pub struct Offer<'a> {
    pub name: &'a str,
    pub function_id: &'a str,
    pub version: &'a Version,
    pub resources: &'a BTreeSet<String>,
}

/// What a command (or a listing's filter) asks for; each part left out accepts anything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<'a> {
    pub name: Option<&'a str>,
    pub function_id: Option<&'a str>,
    pub version: Option<&'a VersionConstraint>,
    /// Resources the function must offer (all of them).
    pub locs: &'a [String],
}

/// The first condition of a [`Query`] an offer fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch<'a> {
    Name,
    FunctionId(&'a str),
    Version,
    /// A resource in `locs` it does not offer.
    Resource(&'a str),
}

impl<'a> Query<'a> {
    /// What a command asks for: its function's name and the rest.
    pub fn call(
        name: &'a str,
        function_id: Option<&'a str>,
        version: Option<&'a VersionConstraint>,
        locs: &'a [String],
    ) -> Query<'a> {
        Query {
            name: Some(name),
            function_id,
            version,
            locs,
        }
    }

    /// Which condition `f` fails first, in the order name, `function_id`, version,
    /// resources (`None`: it is accepted).
    pub fn mismatch(&self, f: Offer<'_>) -> Option<Mismatch<'a>> {
        if self.name.is_some_and(|n| n != f.name) {
            return Some(Mismatch::Name);
        }
        if let Some(id) = self.function_id
            && id != f.function_id
        {
            return Some(Mismatch::FunctionId(id));
        }
        if self.version.is_some_and(|c| !c.matches(f.version)) {
            return Some(Mismatch::Version);
        }
        self.locs
            .iter()
            .find(|l| !f.resources.contains(*l))
            .map(|l| Mismatch::Resource(l))
    }

    /// Whether a call may use `f`.
    pub fn accepts(&self, f: Offer<'_>) -> bool {
        self.mismatch(f).is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_part_left_out_accepts_anything_and_each_given_part_must_hold() {
        let v = Version::new(1, 2, 0);
        let resources: BTreeSet<String> = ["cpu".to_owned()].into();
        let f = Offer {
            name: "f",
            function_id: "f-1",
            version: &v,
            resources: &resources,
        };
        assert!(Query::default().accepts(f));
        let cpu = ["cpu".to_owned()];
        let tpu = ["tpu".to_owned()];
        let old = VersionConstraint::parse("<1.0.0").unwrap();
        assert!(Query::call("f", Some("f-1"), None, &cpu).accepts(f));
        assert_eq!(
            Query::call("g", None, None, &[]).mismatch(f),
            Some(Mismatch::Name)
        );
        assert_eq!(
            Query::call("f", Some("f-2"), None, &[]).mismatch(f),
            Some(Mismatch::FunctionId("f-2"))
        );
        assert_eq!(
            Query::call("f", None, Some(&old), &[]).mismatch(f),
            Some(Mismatch::Version)
        );
        assert_eq!(
            Query::call("f", None, None, &tpu).mismatch(f),
            Some(Mismatch::Resource("tpu"))
        );
    }
}
