//! Command names and what a string names: the index from a request's command names to
//! their positions ([`NameIndex`]), and the rule by which a string refers to a command
//! ([`implicit_ref`]). Both the planner (`plan`) and the substitution (`resolve`) use them.

/// Command names → indices, for reference lookups: a sorted vector, one allocation per
/// request however many commands it has, and none for the common single command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameIndex<'a> {
    One(&'a str),
    Sorted(Vec<(&'a str, usize)>),
}

impl Default for NameIndex<'_> {
    fn default() -> Self {
        NameIndex::Sorted(Vec::new())
    }
}

impl<'a> NameIndex<'a> {
    pub fn get(&self, name: &str) -> Option<usize> {
        match self {
            NameIndex::One(only) => (*only == name).then_some(0),
            NameIndex::Sorted(v) => v
                .binary_search_by(|(n, _)| (*n).cmp(name))
                .ok()
                .map(|k| v[k].1),
        }
    }
}

impl<'a> FromIterator<(&'a str, usize)> for NameIndex<'a> {
    fn from_iter<T: IntoIterator<Item = (&'a str, usize)>>(iter: T) -> Self {
        let mut v: Vec<_> = iter.into_iter().collect();
        v.sort_unstable();
        NameIndex::Sorted(v)
    }
}

/// The command a string refers to: its exact name, or the head of `name.path`.
pub fn implicit_ref(s: &str, names: &NameIndex<'_>) -> Option<usize> {
    if let Some(i) = names.get(s) {
        return Some(i);
    }
    let (head, _) = s.split_once('.')?;
    names.get(head)
}
