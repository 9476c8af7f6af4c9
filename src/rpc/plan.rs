//! The dependency planner: which commands depend on which, in what levels they can run.
//! Pure: commands in, plan or error out.
//!
//! A command depends on another when a string anywhere in its `args` or `kwargs` values
//! (object keys are not scanned) equals the other's name, or is `name.path…`, or when an
//! object `{"$ref": "name[.path…]"}` names it. [`super::resolve`] substitutes by the same rule.

// What `name_index` returns; callers (tests, fuzzing) name it `plan::NameIndex` too.
pub use super::names::NameIndex;
use super::names::implicit_ref;
use super::resolve::{Ref, references};
use crate::protocol::{ErrorCode, RpcCommand};

/// Why a request cannot be planned; nothing has run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("request has no commands (`cmds` is empty)")]
    Empty,
    #[error("request has {count} commands; this node accepts at most {max} per request")]
    TooMany { count: usize, max: usize },
    #[error("command name `{0}` is used by more than one command")]
    Duplicate(String),
    #[error("command `{0}` references its own result")]
    SelfReference(String),
    #[error("commands form a dependency cycle among: {0}")]
    Cycle(String),
    #[error(
        "command `{command}` has {{\"$ref\": \"{reference}\"}}, but no command is named `{head}`"
    )]
    UnknownReference {
        command: String,
        reference: String,
        head: String,
    },
}

impl PlanError {
    pub fn code(&self) -> ErrorCode {
        match self {
            PlanError::Empty => ErrorCode::EmptyRequest,
            PlanError::TooMany { .. } => ErrorCode::TooManyCommands,
            PlanError::Duplicate(_) => ErrorCode::DuplicateCommandName,
            PlanError::SelfReference(_) => ErrorCode::SelfReference,
            PlanError::Cycle(_) => ErrorCode::DependencyCycle,
            PlanError::UnknownReference { .. } => ErrorCode::UnknownReference,
        }
    }
}

/// An executable plan over command indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// For each command, the commands it needs (sorted, unique).
    pub deps: Vec<Vec<usize>>,
    /// For each command, the commands that need it (sorted, unique).
    pub dependents: Vec<Vec<usize>>,
    /// Level k holds the commands whose longest dependency chain has length k.
    pub levels: Vec<Vec<usize>>,
    /// Commands no other command depends on; their results form the reply.
    pub sinks: Vec<usize>,
}

fn head_of(reference: &str) -> &str {
    reference.split_once('.').map_or(reference, |(h, _)| h)
}

/// Adds every command the arguments of `cmd` reference to `out`.
fn scan(cmd: &RpcCommand, names: &NameIndex<'_>, out: &mut Vec<usize>) -> Result<(), PlanError> {
    for text in [&cmd.args, &cmd.kwargs] {
        for found in references(text.get()) {
            match found.reference {
                Ref::Implicit(s) => out.extend(implicit_ref(&s, names)),
                Ref::Explicit(r) => match names.get(head_of(&r)) {
                    Some(i) => out.push(i),
                    None => {
                        return Err(PlanError::UnknownReference {
                            command: cmd.name.clone(),
                            head: head_of(&r).to_owned(),
                            reference: r.into_owned(),
                        });
                    }
                },
            }
        }
    }
    Ok(())
}

/// Indexes command names, rejecting duplicates.
pub fn name_index(cmds: &[RpcCommand]) -> Result<NameIndex<'_>, PlanError> {
    if let [only] = cmds {
        return Ok(NameIndex::One(&only.name));
    }
    let names: NameIndex<'_> = cmds
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    if let NameIndex::Sorted(v) = &names
        && let Some(w) = v.windows(2).find(|w| w[0].0 == w[1].0)
    {
        return Err(PlanError::Duplicate(w[0].0.to_owned()));
    }
    Ok(names)
}

/// The rules [`plan`] checks, for a request of one command (which can only reference
/// itself), without building a plan.
pub fn check_single(cmd: &RpcCommand) -> Result<(), PlanError> {
    // A text that does not contain the name cannot reference it: the common case, found
    // without tokenizing (a text with escapes, or an explicit reference, which must name a
    // command, falls through to the full scan).
    let mentions = |t: &crate::protocol::Json| {
        let t = t.get();
        t.contains(cmd.name.as_str()) || t.contains('\\') || t.contains("$ref")
    };
    if !cmd.name.is_empty() && !mentions(&cmd.args) && !mentions(&cmd.kwargs) {
        return Ok(());
    }
    let names = NameIndex::One(&cmd.name);
    let mut refs = Vec::new();
    scan(cmd, &names, &mut refs)?;
    if refs.is_empty() {
        Ok(())
    } else {
        Err(PlanError::SelfReference(cmd.name.clone()))
    }
}

/// Plans `cmds`, checking every rule before anything runs.
pub fn plan(cmds: &[RpcCommand], max_commands: usize) -> Result<Plan, PlanError> {
    if cmds.is_empty() {
        return Err(PlanError::Empty);
    }
    if cmds.len() > max_commands {
        return Err(PlanError::TooMany {
            count: cmds.len(),
            max: max_commands,
        });
    }
    let names = name_index(cmds)?;
    let n = cmds.len();
    let mut deps = Vec::with_capacity(n);
    for (i, c) in cmds.iter().enumerate() {
        let mut d = Vec::new();
        scan(c, &names, &mut d)?;
        d.sort_unstable();
        d.dedup();
        if d.binary_search(&i).is_ok() {
            return Err(PlanError::SelfReference(c.name.clone()));
        }
        deps.push(d);
    }
    let mut dependents = vec![Vec::new(); n];
    for (i, d) in deps.iter().enumerate() {
        for &j in d {
            dependents[j].push(i);
        }
    }
    let levels = levels(&deps, &dependents).ok_or_else(|| {
        let stuck: Vec<&str> = cycle_members(&deps, &dependents)
            .into_iter()
            .take(8)
            .map(|i| cmds[i].name.as_str())
            .collect();
        PlanError::Cycle(stuck.join(", "))
    })?;
    let sinks = (0..n).filter(|&i| dependents[i].is_empty()).collect();
    Ok(Plan {
        deps,
        dependents,
        levels,
        sinks,
    })
}

/// Kahn's algorithm by layers; `None` when a cycle leaves commands unplaced.
fn levels(deps: &[Vec<usize>], dependents: &[Vec<usize>]) -> Option<Vec<Vec<usize>>> {
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut current: Vec<usize> = (0..deps.len()).filter(|&i| waiting[i] == 0).collect();
    let mut levels = Vec::new();
    let mut placed = 0;
    while !current.is_empty() {
        placed += current.len();
        let mut next = Vec::new();
        for &i in &current {
            for &d in &dependents[i] {
                waiting[d] -= 1;
                if waiting[d] == 0 {
                    next.push(d);
                }
            }
        }
        next.sort_unstable();
        levels.push(std::mem::replace(&mut current, next));
    }
    (placed == deps.len()).then_some(levels)
}

/// Commands left unplaced by Kahn's algorithm (on or behind a cycle).
fn cycle_members(deps: &[Vec<usize>], dependents: &[Vec<usize>]) -> Vec<usize> {
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut stack: Vec<usize> = (0..deps.len()).filter(|&i| waiting[i] == 0).collect();
    while let Some(i) = stack.pop() {
        for &d in &dependents[i] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                stack.push(d);
            }
        }
    }
    (0..deps.len()).filter(|&i| waiting[i] > 0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn cmd(name: &str, args: Value) -> RpcCommand {
        RpcCommand::new(name, "f").args(args)
    }

    #[test]
    fn levels_and_sinks() {
        let cmds = vec![
            cmd("a", json!([1])),
            cmd("b", json!(["a", 10])),
            cmd("c", json!([{"x": ["a", "b"]}])),
            cmd("d", json!(["a.field", "not-a-ref"])),
        ];
        let p = plan(&cmds, 100).unwrap();
        assert_eq!(p.levels, vec![vec![0], vec![1, 3], vec![2]]);
        assert_eq!(p.sinks, vec![2, 3]);
        assert_eq!(p.deps[2], vec![0, 1]);
    }

    #[test]
    fn kwargs_and_explicit_refs_are_edges() {
        let cmds = vec![
            cmd("a", json!([])),
            RpcCommand::new("b", "f").kwarg("x", json!("a")),
            cmd("c", json!([{"$ref": "b.y"}])),
        ];
        let p = plan(&cmds, 100).unwrap();
        assert_eq!(p.levels, vec![vec![0], vec![1], vec![2]]);
    }

    #[test]
    fn rejections() {
        assert_eq!(plan(&[], 10), Err(PlanError::Empty));
        let many: Vec<_> = (0..11).map(|i| cmd(&format!("c{i}"), json!([]))).collect();
        assert_eq!(
            plan(&many, 10).unwrap_err().code(),
            ErrorCode::TooManyCommands
        );
        let dup = vec![cmd("a", json!([])), cmd("a", json!([]))];
        assert_eq!(plan(&dup, 10), Err(PlanError::Duplicate("a".into())));
        let selfref = vec![cmd("a", json!([{"k": "a"}]))];
        assert_eq!(
            plan(&selfref, 10),
            Err(PlanError::SelfReference("a".into()))
        );
        let cyc = vec![
            cmd("a", json!(["b"])),
            cmd("b", json!(["a"])),
            cmd("c", json!([])),
        ];
        assert_eq!(plan(&cyc, 10), Err(PlanError::Cycle("a, b".into())));
        let unknown = vec![cmd("a", json!([{"$ref": "zz.q"}]))];
        assert_eq!(
            plan(&unknown, 10).unwrap_err().code(),
            ErrorCode::UnknownReference
        );
    }
}
