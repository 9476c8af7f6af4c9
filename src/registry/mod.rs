//! Registered functions: name, `function_id`, semver version, resources and handler, and the
//! original's matching rule for choosing one.

mod handler;
pub mod meter;
mod query;
pub mod signature;
pub mod stats;
mod version;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use crate::protocol::Json;
use semver::Version;
use serde::Serialize;

pub use handler::{BoxFuture, CallArgs, CallError, Handler, IntoHandler};
pub use query::{Mismatch, Offer, Query};
pub use version::{ConstraintError, VersionConstraint, parse_loose_version};

/// A function ready to be registered: built with [`Function::new`] and its setters.
pub struct Function {
    name: String,
    function_id: Option<String>,
    version: String,
    resources: BTreeSet<String>,
    idempotent: bool,
    /// Roles a caller needs one of (none: anyone may call it).
    roles: BTreeSet<String>,
    params: Option<Vec<String>>,
    /// `None` for raw handlers, which take any number of arguments.
    arity: Option<usize>,
    /// The Rust parameter types' names (typed functions).
    types: Vec<&'static str>,
    /// Parameters declared rather than read from the Rust signature (workers'; raw
    /// functions' through [`Function::declare_params`]).
    declared: Option<Vec<signature::Param>>,
    /// One line on what it does, for `rpc_describe`.
    doc: Option<String>,
    /// How long its results are kept for identical calls (none: every call runs it).
    cache_ttl: Option<std::time::Duration>,
    make: MakeHandler,
}

/// Builds the handler once the parameter names are final.
type MakeHandler = Box<dyn FnOnce(Arc<[String]>) -> Arc<dyn Handler> + Send>;

impl Function {
    /// A typed async function; its parameters decode from the JSON arguments.
    ///
    /// ```
    /// use mpreg::Function;
    /// let add = Function::new("add", |a: i64, b: i64| async move { Ok::<_, String>(a + b) })
    ///     .params(["a", "b"])
    ///     .function_id("math.add")
    ///     .version("1.2.0")
    ///     .resources(["cpu"]);
    /// ```
    pub fn new<M, F: IntoHandler<M>>(name: impl Into<String>, f: F) -> Function {
        Function {
            name: name.into(),
            function_id: None,
            version: "1.0.0".to_owned(),
            resources: BTreeSet::new(),
            idempotent: false,
            roles: BTreeSet::new(),
            params: None,
            arity: Some(F::arity()),
            types: F::param_types(),
            declared: None,
            doc: None,
            cache_ttl: None,
            make: Box::new(move |params| f.into_handler(params)),
        }
    }

    /// A function over the raw argument lists (variadic).
    pub fn raw<F, Fut>(name: impl Into<String>, f: F) -> Function
    where
        F: Fn(CallArgs) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Json, CallError>> + Send + 'static,
    {
        Function {
            name: name.into(),
            function_id: None,
            version: "1.0.0".to_owned(),
            resources: BTreeSet::new(),
            idempotent: false,
            roles: BTreeSet::new(),
            params: None,
            arity: None,
            types: Vec::new(),
            declared: None,
            doc: None,
            cache_ttl: None,
            make: Box::new(move |_| Arc::new(handler::Raw(f))),
        }
    }

    /// Like [`Function::raw`], for a function served by another process (a worker
    /// connection) that may go away mid-call.
    pub(crate) fn hosted<F, Fut>(name: impl Into<String>, f: F) -> Function
    where
        F: Fn(CallArgs) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Json, CallError>> + Send + 'static,
    {
        Function {
            make: Box::new(move |_| Arc::new(handler::Hosted(handler::Raw(f)))),
            ..Function::raw(name, |_| async { Ok(Json::null()) })
        }
    }

    /// Defaults to the function's name.
    pub fn function_id(mut self, id: impl Into<String>) -> Function {
        self.function_id = Some(id.into());
        self
    }

    /// A semver version (`X.Y.Z`, or the loose `X[.Y]`); defaults to `1.0.0`.
    pub fn version(mut self, version: impl Into<String>) -> Function {
        self.version = version.into();
        self
    }

    /// Resources this function offers; a command's `locs` must be a subset.
    /// Marks the function safe to run more than once for one request: when its node fails
    /// mid-call, the step is retried on another node instead of failing the request.
    pub fn idempotent(mut self, idempotent: bool) -> Function {
        self.idempotent = idempotent;
        self
    }

    /// A role a caller must hold to call this function, on a node that requires tokens
    /// (`auth_required`). Called more than once, a holder of any one of the roles may call
    /// it; others get 1021 (forbidden). Without tokens, anyone may call it, as before.
    pub fn requires_role(mut self, role: impl Into<String>) -> Function {
        self.roles.insert(role.into());
        self
    }

    /// Adds every role of `roles` (see [`Function::requires_role`]).
    pub fn requires_roles<I, S>(mut self, roles: I) -> Function
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.roles.extend(roles.into_iter().map(Into::into));
        self
    }

    pub fn resources<I, S>(mut self, resources: I) -> Function
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.resources = resources.into_iter().map(Into::into).collect();
        self
    }

    /// Adds resources to those already set.
    pub fn add_resources<I, S>(mut self, resources: I) -> Function
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.resources.extend(resources.into_iter().map(Into::into));
        self
    }

    /// Marks the function's results cacheable for `ttl`: the node that runs it keeps a
    /// successful result under (function_id, version, canonical arguments), and identical
    /// calls within `ttl`, from any client, get it without running the function; identical
    /// calls that arrive while it runs wait for that run (errors are not kept). For pure
    /// functions only. A zero `ttl` turns caching off.
    pub fn cache(mut self, ttl: std::time::Duration) -> Function {
        self.cache_ttl = (!ttl.is_zero()).then_some(ttl);
        self
    }

    /// One line on what the function does, as `rpc_describe` reports it.
    pub fn doc(mut self, doc: impl Into<String>) -> Function {
        self.doc = Some(doc.into());
        self
    }

    /// Describes a raw function's parameters (names, JSON types), for `rpc_describe`:
    /// a typed function's come from its Rust signature.
    pub fn declare_params(mut self, params: Vec<signature::Param>) -> Function {
        self.declared = Some(params);
        self
    }

    /// Parameter names, for keyword arguments and error messages; default `arg0`, `arg1`, ….
    pub fn params<I, S>(mut self, params: I) -> Function
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.params = Some(params.into_iter().map(Into::into).collect());
        self
    }
}

/// What the catalog knows of a function (no handler).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct FunctionSpec {
    pub name: String,
    pub function_id: String,
    pub version: Version,
    pub resources: BTreeSet<String>,
    pub idempotent: bool,
    /// Roles a caller needs one of, where tokens are required (`auth::Access::may_call`).
    pub roles: BTreeSet<String>,
}

impl FunctionSpec {
    /// This function as a [`Query`] sees it.
    pub fn offer(&self) -> Offer<'_> {
        Offer {
            name: &self.name,
            function_id: &self.function_id,
            version: &self.version,
            resources: &self.resources,
        }
    }
}

/// A registered function: its spec, parameter names and handler.
pub struct RegisteredFunction {
    pub spec: FunctionSpec,
    pub params: Arc<[String]>,
    /// Its parameters' names and JSON types, for `rpc_describe`.
    pub signature: signature::Signature,
    pub doc: Option<String>,
    pub handler: Arc<dyn Handler>,
    /// What its calls here did (`/metrics`).
    pub stats: stats::CallStats,
    /// How long its results are kept ([`Function::cache`]).
    pub cache_ttl: Option<std::time::Duration>,
}

/// Where a node keeps the results of functions registered with [`Function::cache`] (the
/// cache room implements it; rooms below it call through this).
pub trait ResultCache: Send + Sync {
    /// `f`'s result for `args`: kept from an earlier call, or `compute`'s (kept for
    /// `f.cache_ttl` when it succeeds). Identical calls that arrive while one computes
    /// wait for its result. The flag is true when the result came without running
    /// `compute` for this call.
    fn call<'a>(
        &'a self,
        f: &'a RegisteredFunction,
        args: CallArgs,
        compute: Box<dyn FnOnce(CallArgs) -> CallFuture<'a> + Send + 'a>,
    ) -> CallFuture<'a, (Result<Json, CallError>, bool)>;
}

/// A call's future, borrowing what it runs against.
pub type CallFuture<'a, T = Result<Json, CallError>> =
    std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl std::fmt::Debug for RegisteredFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisteredFunction")
            .field("spec", &self.spec)
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("a function needs a non-empty name")]
    EmptyName,
    #[error("function `{name}`: invalid version `{version}`: {reason}")]
    InvalidVersion {
        name: String,
        version: String,
        reason: String,
    },
    #[error("function `{name}` takes {arity} parameter(s) but {given} name(s) were given")]
    ParamCount {
        name: String,
        arity: usize,
        given: usize,
    },
    #[error("function `{name}` version {version} is already registered")]
    Duplicate { name: String, version: Version },
    #[error("function `{name}` is registered with function_id `{existing}`, not `{given}`")]
    FunctionIdConflict {
        name: String,
        existing: String,
        given: String,
    },
    #[error(
        "function name `{0}` is reserved for the node (built-ins, and names beginning with \
         `mpreg.` or `_`)"
    )]
    Reserved(String),
}

/// The node's built-in functions. No one else may register these names, under any version:
/// whoever could would receive every other client's calls to them.
pub const BUILTIN_NAMES: [&str; 25] = [
    "echo",
    "echos",
    "list_peers",
    "cluster_map",
    "catalog_query",
    "rpc_list",
    "cluster_map_v2",
    "rpc_describe",
    "rpc_describe_local",
    "rpc_report",
    "catalog_watch",
    "dns_register",
    "dns_unregister",
    "dns_list",
    "dns_describe",
    "summary_query",
    "summary_watch",
    "resolver_cache_stats",
    "resolver_resync",
    "namespace_status",
    "namespace_policy_validate",
    "namespace_policy_apply",
    "namespace_policy_export",
    "namespace_policy_audit",
    "discovery_access_audit",
];

/// Whether `name` is the node's: a built-in, or in the `mpreg.` or `_` namespaces kept for
/// later ones.
pub fn is_reserved(name: &str) -> bool {
    BUILTIN_NAMES.contains(&name) || name.starts_with("mpreg.") || name.starts_with('_')
}

/// No registered function satisfies a query; the text says which condition failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Command not found: {0}")]
pub struct NotFound(pub String);

/// All functions of one node, several versions per name.
#[derive(Default, Clone)]
pub struct Registry {
    /// Per name, versions in descending order so the first match is the highest.
    by_name: BTreeMap<String, Vec<Arc<RegisteredFunction>>>,
    /// Where cacheable functions' results are kept (none: they run every time).
    results: Option<Arc<dyn ResultCache>>,
}

impl Registry {
    /// Keeps cacheable functions' results in `cache` from now on.
    pub fn set_result_cache(&mut self, cache: Arc<dyn ResultCache>) {
        self.results = Some(cache);
    }

    /// Where cacheable functions' results are kept.
    pub fn result_cache(&self) -> Option<&dyn ResultCache> {
        self.results.as_deref()
    }

    /// Registers a user's function; reserved names are refused ([`is_reserved`]).
    pub fn register(&mut self, f: Function) -> Result<Arc<RegisteredFunction>, RegisterError> {
        if is_reserved(&f.name) {
            return Err(RegisterError::Reserved(f.name));
        }
        self.register_any(f)
    }

    /// Registers one of the node's own functions.
    pub(crate) fn register_builtin(
        &mut self,
        f: Function,
    ) -> Result<Arc<RegisteredFunction>, RegisterError> {
        self.register_any(f)
    }

    fn register_any(&mut self, f: Function) -> Result<Arc<RegisteredFunction>, RegisterError> {
        if f.name.is_empty() {
            return Err(RegisterError::EmptyName);
        }
        let (version, _) =
            parse_loose_version(&f.version).map_err(|reason| RegisterError::InvalidVersion {
                name: f.name.clone(),
                version: f.version.clone(),
                reason,
            })?;
        let params: Vec<String> = match (f.params, f.arity) {
            (Some(p), Some(arity)) if p.len() != arity => {
                return Err(RegisterError::ParamCount {
                    name: f.name,
                    arity,
                    given: p.len(),
                });
            }
            (Some(p), _) => p,
            (None, Some(arity)) => (0..arity).map(|i| format!("arg{i}")).collect(),
            (None, None) => Vec::new(),
        };
        let function_id = f.function_id.unwrap_or_else(|| f.name.clone());
        let versions = self.by_name.entry(f.name.clone()).or_default();
        if let Some(existing) = versions.first()
            && existing.spec.function_id != function_id
        {
            return Err(RegisterError::FunctionIdConflict {
                name: f.name,
                existing: existing.spec.function_id.clone(),
                given: function_id,
            });
        }
        if versions.iter().any(|r| r.spec.version == version) {
            return Err(RegisterError::Duplicate {
                name: f.name,
                version,
            });
        }
        let signature = match f.declared {
            Some(params) => signature::Signature {
                params,
                variadic: false,
            },
            None if f.arity.is_none() => signature::Signature {
                params: Vec::new(),
                variadic: true,
            },
            None => signature::Signature::from_rust(&params, &f.types),
        };
        let params: Arc<[String]> = params.into();
        let registered = Arc::new(RegisteredFunction {
            signature,
            doc: f.doc,
            spec: FunctionSpec {
                name: f.name,
                function_id,
                version,
                resources: f.resources,
                idempotent: f.idempotent,
                roles: f.roles,
            },
            handler: (f.make)(params.clone()),
            params,
            stats: stats::CallStats::default(),
            cache_ttl: f.cache_ttl,
        });
        versions.push(registered.clone());
        versions.sort_by(|a, b| b.spec.version.cmp(&a.spec.version));
        Ok(registered)
    }

    /// Removes one version (or every version when `version` is `None`); returns how many.
    pub fn unregister(&mut self, name: &str, version: Option<&Version>) -> usize {
        let Some(versions) = self.by_name.get_mut(name) else {
            return 0;
        };
        let before = versions.len();
        versions.retain(|r| version.is_some_and(|v| &r.spec.version != v));
        let removed = before - versions.len();
        if versions.is_empty() {
            self.by_name.remove(name);
        }
        removed
    }

    /// The highest version matching name, function_id, constraint and `locs ⊆ resources`.
    pub fn find(&self, q: Query<'_>) -> Result<&Arc<RegisteredFunction>, NotFound> {
        let name = q.name.unwrap_or_default();
        let versions = self
            .by_name
            .get(name)
            .ok_or_else(|| NotFound(name.to_owned()))?;
        // The reason the first version was passed over is the one reported.
        let mut reason = None;
        for f in versions {
            match q.mismatch(f.spec.offer()) {
                None => return Ok(f),
                Some(why) => {
                    reason.get_or_insert(why);
                }
            }
        }
        Err(NotFound(match reason {
            Some(Mismatch::FunctionId(id)) => format!("{name} (function_id `{id}` not registered)"),
            Some(Mismatch::Version) => format!("{name} (no version matches)"),
            Some(Mismatch::Resource(missing)) => {
                format!("{name} (no version offers resource `{missing}`)")
            }
            Some(Mismatch::Name) | None => name.to_owned(),
        }))
    }

    /// Every registered function, by name then descending version.
    pub fn functions(&self) -> impl Iterator<Item = &Arc<RegisteredFunction>> {
        self.by_name.values().flatten()
    }

    /// Every registered function's spec, by name then descending version.
    pub fn specs(&self) -> impl Iterator<Item = &FunctionSpec> {
        self.by_name.values().flatten().map(|f| &f.spec)
    }

    /// The union of all functions' resources.
    pub fn resources(&self) -> BTreeSet<String> {
        self.specs()
            .flat_map(|s| s.resources.iter().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, version: &str, res: &[&str]) -> Function {
        let v = version.to_owned();
        Function::new(name, move || {
            let v = v.clone();
            async move { Ok::<_, String>(v) }
        })
        .version(version)
        .resources(res.iter().copied())
    }

    fn q<'a>(name: &'a str, locs: &'a [String], c: Option<&'a VersionConstraint>) -> Query<'a> {
        Query::call(name, None, c, locs)
    }

    #[test]
    fn highest_matching_version_wins() {
        let mut r = Registry::default();
        r.register(f("g", "1.0.0", &["cpu"])).unwrap();
        r.register(f("g", "1.5.0", &["cpu"])).unwrap();
        r.register(f("g", "2.0.0", &["gpu"])).unwrap();
        let none: Vec<String> = vec![];
        assert_eq!(
            r.find(q("g", &none, None))
                .unwrap()
                .spec
                .version
                .to_string(),
            "2.0.0"
        );
        let c = VersionConstraint::parse(">=1.0.0,<2.0.0").unwrap();
        assert_eq!(
            r.find(q("g", &none, Some(&c)))
                .unwrap()
                .spec
                .version
                .to_string(),
            "1.5.0"
        );
        let cpu = vec!["cpu".to_owned()];
        assert_eq!(
            r.find(q("g", &cpu, None)).unwrap().spec.version.to_string(),
            "1.5.0"
        );
        let tpu = vec!["tpu".to_owned()];
        assert!(r.find(q("g", &tpu, None)).unwrap_err().0.contains("tpu"));
        assert!(r.find(q("h", &none, None)).is_err());
    }

    #[test]
    fn registration_rules() {
        let mut r = Registry::default();
        r.register(f("g", "1.0.0", &[])).unwrap();
        assert!(matches!(
            r.register(f("g", "1.0.0", &[])),
            Err(RegisterError::Duplicate { .. })
        ));
        assert!(matches!(
            r.register(f("g", "1.1.0", &[]).function_id("other")),
            Err(RegisterError::FunctionIdConflict { .. })
        ));
        assert!(matches!(
            r.register(f("g", "one", &[])),
            Err(RegisterError::InvalidVersion { .. })
        ));
        assert!(matches!(
            r.register(f("k", "1.0.0", &[]).params(["x"])),
            Err(RegisterError::ParamCount { .. })
        ));
        let none: Vec<String> = vec![];
        let mut query = q("g", &none, None);
        query.function_id = Some("g");
        assert!(r.find(query).is_ok());
        query.function_id = Some("math.g");
        assert!(r.find(query).is_err());
        assert_eq!(r.unregister("g", None), 1);
        assert!(r.find(q("g", &none, None)).is_err());
    }
}
