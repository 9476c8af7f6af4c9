//! The built-in functions every node serves, grouped by what they serve: what the cluster
//! looks like (`introspection`), the original's discovery calls (`discovery`), and the
//! catalog's changes as a topic (`catalog_watch`), the DNS registry (`dns`), and the
//! summaries and resolver calls (`summary`). Each group is installed by one call.

mod args;
pub mod catalog_watch;
pub mod discovery;
pub mod dns;
pub mod introspection;
pub mod policy;
pub mod queue;
pub mod summary;

use crate::registry::Function;
use crate::registry::signature::Param;
use crate::view::NodeView;

/// What the cluster looks like is for holders of `introspection_role`, when tokens are
/// required and it is set.
fn guarded(view: &NodeView, f: Function) -> Function {
    match &view.introspection_role {
        Some(role) => f.requires_role(role.clone()),
        None => f,
    }
}

/// A request's `version_constraint`, parsed (a bad one is the caller's error).
fn version_constraint(
    text: Option<&str>,
) -> Result<Option<crate::registry::VersionConstraint>, crate::registry::CallError> {
    text.map(crate::registry::VersionConstraint::parse)
        .transpose()
        .map_err(|e| crate::registry::CallError::InvalidArguments(e.to_string()))
}

/// How long a built-in that commits to the catalog (a DNS registration, a namespace policy)
/// waits for the commit (then 1017).
const COMMIT_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// A catalog commit's failure as a call error: refused (the caller's input), or not
/// committed in time (1017); `what` names what was proposed.
fn commit_error(what: &str, e: crate::control::replica::CommitError) -> crate::registry::CallError {
    use crate::control::replica::CommitError;
    use crate::registry::CallError;
    match e {
        CommitError::Refused(why) => CallError::InvalidArguments(why.to_string()),
        CommitError::Unavailable(why) => {
            CallError::Unavailable(format!("the catalog could not commit the {what}: {why}"))
        }
    }
}

/// What `rpc_describe` says of a built-in taking the one optional request object most take.
fn takes_request(f: Function, doc: &str) -> Function {
    f.declare_params(vec![Param::optional("request", "object")])
        .doc(doc)
}

/// What `rpc_describe` says of a built-in taking no arguments.
fn takes_nothing(f: Function, doc: &str) -> Function {
    f.declare_params(vec![]).doc(doc)
}
