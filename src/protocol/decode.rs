//! Frame → message, with a precise error for every way a frame can be wrong.
//!
//! Every frame is first checked by [`jscan::check`] (one linear pass: nesting, duplicated
//! keys, integers beyond 64 bits), then parsed straight into [`RpcRequest`], whose
//! arguments stay JSON text. Only when that fails is the frame read again, as its
//! top-level fields' text (no tree), to say exactly what is wrong. Any refusal carries the
//! frame's top-level `u` when it has one ([`jscan::find_u`]).

use serde::Deserialize;
use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::jscan::{self, Defect};
use super::{
    CallResult, ErrorCode, Kind, RegisterRequest, Role, RpcCommand, RpcRequest, plain_error,
};

/// A decoded client message.
#[derive(Debug)]
pub enum Incoming {
    Rpc(RpcRequest),
    /// A worker registers the functions it serves.
    Register(RegisterRequest),
    /// A worker answers a call.
    CallResult(CallResult),
    /// A client subscribes to topics (`protocol::pubsub`).
    Subscribe(super::pubsub::SubscribeRequest),
    Unsubscribe(super::pubsub::UnsubscribeRequest),
    Publish(super::pubsub::PublishRequest),
    /// A `cache-request` (the original's cache messages): its text, checked JSON, for the
    /// cache to read (`cache::request`).
    Cache(Box<str>),
}

/// Why a frame was rejected; answered with an error reply carrying `u` when it could be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecodeError {
    pub u: Value,
    pub code: ErrorCode,
    pub message: String,
}

fn unknown_u() -> Value {
    Value::String("unknown".to_owned())
}

/// Decodes one binary frame (text frames, already checked to be UTF-8, go to
/// [`decode_text`]).
pub fn decode_frame(bytes: &[u8]) -> Result<Incoming, DecodeError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => decode_text(text),
        Err(e) => Err(DecodeError {
            u: jscan::find_u(bytes).map_or_else(unknown_u, Value::String),
            code: ErrorCode::MalformedMessage,
            message: format!("frame is not UTF-8: {e}"),
        }),
    }
}

/// Decodes one frame's text.
pub fn decode_text(text: &str) -> Result<Incoming, DecodeError> {
    let refused = |defect: Defect, u: Value| {
        let code = match defect {
            Defect::DuplicateKey { .. } => ErrorCode::InvalidRequest,
            Defect::Syntax(_) | Defect::TooDeep | Defect::NumberOutOfRange { .. } => {
                ErrorCode::MalformedMessage
            }
        };
        let message = match defect {
            // serde_json words syntax errors better ("EOF while parsing a list at …").
            Defect::Syntax(_) => match serde_json::from_str::<IgnoredAny>(text) {
                Err(e) => format!("invalid JSON: {e}"),
                Ok(_) => defect.to_string(),
            },
            _ => defect.to_string(),
        };
        DecodeError { u, code, message }
    };
    if let Some(publish) = fast_publish(text) {
        return Ok(Incoming::Publish(publish));
    }
    // A cache request that says so first goes to the cache's own decoder (serde, whose
    // nesting limit bounds it; a value is stored as its text, so duplicate keys in it are
    // kept as sent, never resolved one way here and another elsewhere).
    if text.starts_with(r#"{"role":"cache-request""#) {
        return Ok(Incoming::Cache(text.into()));
    }
    match serde_json::from_str::<RpcRequest>(text) {
        Ok(req) => {
            // serde read every field but the arguments, which it only delimited (and
            // refused duplicated fields); check those.
            for (i, c) in req.cmds.iter().enumerate() {
                for (name, part) in [("args", &c.args), ("kwargs", &c.kwargs)] {
                    if let Err(d) = jscan::check_within(part.get(), ARGUMENT_DEPTH) {
                        let d = d.under(&format!("cmds[{i}].{name}"));
                        return Err(refused(d, Value::String(req.u)));
                    }
                }
            }
            match &req.role {
                Some(Role::Rpc) => Ok(Incoming::Rpc(req)),
                Some(Role::Other(r)) => Err(DecodeError {
                    code: ErrorCode::TimeoutOrBadRole,
                    message: bad_role(Some(r)),
                    u: Value::String(req.u),
                }),
                None => Err(DecodeError {
                    u: Value::String(req.u),
                    code: ErrorCode::TimeoutOrBadRole,
                    message: bad_role(None),
                }),
            }
        }
        Err(first) => {
            if let Err(defect) = jscan::check(text) {
                let u = jscan::find_u(text.as_bytes()).map_or_else(unknown_u, Value::String);
                return Err(refused(defect, u));
            }
            diagnose(text, &first)
        }
    }
}

/// A publish, the frame a publisher sends most, read in one pass when it says so first: its
/// fields by serde (which refuses a duplicated one), its payload and headers checked as a
/// command's arguments are. Anything else (`None`) takes the general path, which reports
/// what is wrong.
fn fast_publish(text: &str) -> Option<super::pubsub::PublishRequest> {
    #[derive(Deserialize)]
    struct Frame<'a> {
        #[serde(borrow)]
        role: std::borrow::Cow<'a, str>,
        u: String,
        message: super::pubsub::PubSubMessage,
    }
    if !text.starts_with(r#"{"role":"pubsub-publish""#) {
        return None;
    }
    let f: Frame<'_> = serde_json::from_str(text).ok()?;
    let m = &f.message;
    let within = |part: &str| jscan::check_within(part, MESSAGE_PART_DEPTH).is_ok();
    let ok = f.role == "pubsub-publish" && within(m.payload.get()) && within(m.headers.get());
    ok.then_some(super::pubsub::PublishRequest {
        u: f.u,
        message: f.message,
    })
}

/// How deeply a published message's payload or headers may nest: the message's limit less
/// the two levels around them (the frame, `message`).
const MESSAGE_PART_DEPTH: usize = jscan::MAX_DEPTH - 2;

/// How deeply a command's `args` or `kwargs` may nest, itself included: the message's
/// limit less the three levels around them (message, `cmds`, the command).
const ARGUMENT_DEPTH: usize = jscan::MAX_DEPTH - 3;

fn bad_role(role: Option<&str>) -> String {
    match role {
        Some(r) => format!("Invalid RPC request role: {r}"),
        None => "Invalid RPC request role: missing `role`".to_owned(),
    }
}

/// The top-level fields of a message, as text.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    role: Option<&'a RawValue>,
    #[serde(borrow, default)]
    u: Option<&'a RawValue>,
    #[serde(borrow, default)]
    cmds: Option<&'a RawValue>,
    /// The original's documented (never served) queue frames carry a `type` instead.
    #[serde(borrow, default, rename = "type")]
    kind: Option<&'a RawValue>,
}

/// The built-in that does what one of the original's documented `{"type": …}` queue frames
/// would (they were answered 1004 there too, and still are: the refusal names the call).
fn queue_frame(kind: Option<&RawValue>) -> Option<&'static str> {
    let kind: String = serde_json::from_str(kind?.get()).ok()?;
    Some(match kind.as_str() {
        "create_queue" => "queue_create",
        "send_message" => "queue_send",
        "subscribe_queue" => "queue_subscribe",
        "acknowledge_message" => "queue_ack",
        _ => return None,
    })
}

/// The slow path: a worker's message, or why `text` (checked JSON) is not a valid request.
/// `first` is the fast path's error, the answer when no finer diagnosis applies.
fn diagnose(text: &str, first: &serde_json::Error) -> Result<Incoming, DecodeError> {
    let kind = Kind::of(text);
    if kind != Kind::Object {
        return Err(DecodeError {
            u: unknown_u(),
            code: ErrorCode::MalformedMessage,
            message: format!("message must be a JSON object, got {}", kind.described()),
        });
    }
    let fields: Fields<'_> = serde_json::from_str(text).map_err(|e| DecodeError {
        u: unknown_u(),
        code: ErrorCode::MalformedMessage,
        message: e.to_string(),
    })?;
    let u = match fields.u.map(|u| (Kind::of(u.get()), u)) {
        Some((Kind::String | Kind::Number, u)) => {
            serde_json::from_str(u.get()).unwrap_or_else(|_| unknown_u())
        }
        _ => unknown_u(),
    };
    let fail = |code: ErrorCode, message: String| {
        Err(DecodeError {
            u: u.clone(),
            code,
            message,
        })
    };
    let role: Option<String> = match fields.role {
        None => None,
        Some(r) if Kind::of(r.get()) == Kind::String => serde_json::from_str(r.get()).ok(),
        Some(r) => Some(r.get().to_owned()),
    };
    let worker = |e: serde_json::Error| DecodeError {
        u: u.clone(),
        code: ErrorCode::InvalidRequest,
        message: format!(
            "`{}` message: {}",
            role.as_deref().unwrap_or_default(),
            plain_error(&e)
        ),
    };
    match role.as_deref() {
        Some("rpc") => {}
        Some("register") => {
            return serde_json::from_str(text)
                .map(Incoming::Register)
                .map_err(worker);
        }
        Some("call-result") => {
            return serde_json::from_str(text)
                .map(Incoming::CallResult)
                .map_err(worker);
        }
        Some("pubsub-subscribe") => {
            return serde_json::from_str(text)
                .map(Incoming::Subscribe)
                .map_err(worker);
        }
        Some("pubsub-unsubscribe") => {
            return serde_json::from_str(text)
                .map(Incoming::Unsubscribe)
                .map_err(worker);
        }
        Some("pubsub-publish") => {
            return serde_json::from_str(text)
                .map(Incoming::Publish)
                .map_err(worker);
        }
        Some("cache-request") => return Ok(Incoming::Cache(text.into())),
        None if let Some(builtin) = queue_frame(fields.kind) => {
            return fail(
                ErrorCode::TimeoutOrBadRole,
                format!(
                    "{}: `type` frames are not served; call the `{builtin}` built-in in an \
                     `rpc` request (docs/PROTOCOL.md, Queues)",
                    bad_role(None)
                ),
            );
        }
        other => return fail(ErrorCode::TimeoutOrBadRole, bad_role(other)),
    }
    let invalid = |message: String| fail(ErrorCode::InvalidRequest, message);
    match fields.u.map(|u| Kind::of(u.get())) {
        None => return invalid("missing field `u` (the request id)".to_owned()),
        Some(Kind::String) => {}
        Some(other) => {
            return invalid(format!("`u` must be a string, got {}", other.described()));
        }
    }
    let cmds = match fields.cmds {
        None => return invalid("missing field `cmds`".to_owned()),
        Some(c) if Kind::of(c.get()) == Kind::Array => c,
        Some(other) => {
            return invalid(format!(
                "`cmds` must be an array, got {}",
                Kind::of(other.get()).described()
            ));
        }
    };
    let mut de = serde_json::Deserializer::from_str(cmds.get());
    match serde::Deserializer::deserialize_seq(&mut de, FirstBadCommand) {
        Ok(Some((i, e))) => invalid(format!("cmds[{i}]: {e}")),
        _ => invalid(plain_error(first)),
    }
}

/// Reads commands one at a time (never all at once) and reports the first that does not
/// parse.
struct FirstBadCommand;

impl<'de> Visitor<'de> for FirstBadCommand {
    type Value = Option<(usize, String)>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of commands")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut i = 0;
        while let Some(cmd) = seq.next_element::<&'de RawValue>()? {
            if let Err(e) = serde_json::from_str::<RpcCommand>(cmd.get()) {
                // Read the rest without keeping it, so the array parses to its end.
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                return Ok(Some((i, plain_error(&e))));
            }
            i += 1;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(frame: &str) -> DecodeError {
        match decode_frame(frame.as_bytes()) {
            Ok(_) => panic!("{frame} decoded"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_publish_decodes_alike_on_either_path_and_its_defects_are_refused() {
        let m = r#""message":{"topic":"t.a","payload":{"v":[1]},"timestamp":0,"message_id":"m","publisher":"p","headers":{}}"#;
        let first = format!(r#"{{"role":"pubsub-publish","u":"p1",{m}}}"#);
        let later = format!(r#"{{"u":"p1",{m},"role":"pubsub-publish"}}"#);
        let (Ok(Incoming::Publish(a)), Ok(Incoming::Publish(b))) =
            (decode_text(&first), decode_text(&later))
        else {
            panic!("not publishes");
        };
        assert_eq!(a, b);
        assert!(fast_publish(&first).is_some() && fast_publish(&later).is_none());
        // Too deep a payload, a duplicated field, a missing one: refused as before.
        let deep = first.replace(
            r#"{"v":[1]}"#,
            &format!("{}1{}", "[".repeat(130), "]".repeat(130)),
        );
        assert_eq!(err(&deep).code, ErrorCode::MalformedMessage);
        let twice = first.replace(r#""u":"p1","#, r#""u":"p1","u":"p2","#);
        assert!(fast_publish(&twice).is_none());
        assert!(decode_text(&twice).is_err());
        let missing = first.replace(r#""publisher":"p","#, "");
        assert_eq!(err(&missing).code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn minimal_request_decodes() {
        let Ok(Incoming::Rpc(req)) = decode_frame(
            br#"{"role":"rpc","u":"r","cmds":[{"name":"e","fun":"echo","args":["hi"]}]}"#,
        ) else {
            panic!("not an rpc request");
        };
        assert_eq!(req.u, "r");
        assert_eq!(req.cmds[0].args.get(), r#"["hi"]"#);
    }

    #[test]
    fn worker_messages_decode_and_their_defects_are_1006() {
        let Ok(Incoming::Register(reg)) = decode_frame(
            br#"{"role":"register","u":"r1","functions":[{"name":"f","resources":["gpu"]}]}"#,
        ) else {
            panic!("not a registration");
        };
        assert_eq!(
            (reg.u.as_str(), reg.functions[0].version.as_str()),
            ("r1", "1.0.0")
        );
        let Ok(Incoming::CallResult(res)) =
            decode_frame(br#"{"role":"call-result","u":"c1","error":{"message":"no"}}"#)
        else {
            panic!("not a call result");
        };
        assert_eq!(res.failure().as_deref(), Some("no"));
        let e = err(r#"{"role":"register","u":"r2","functions":[{"version":"1"}]}"#);
        assert_eq!(
            (e.code, e.u),
            (ErrorCode::InvalidRequest, Value::from("r2"))
        );
    }

    #[test]
    fn each_defect_has_its_code() {
        assert_eq!(err("{nope").code, ErrorCode::MalformedMessage);
        assert_eq!(err("[1,2]").code, ErrorCode::MalformedMessage);
        let e = err(r#"{"role":"cache-sync","u":"x"}"#);
        assert_eq!(
            (e.code, e.u),
            (ErrorCode::TimeoutOrBadRole, Value::from("x"))
        );
        assert_eq!(
            err(r#"{"u":"x","cmds":[]}"#).code,
            ErrorCode::TimeoutOrBadRole
        );
        assert_eq!(
            err(r#"{"role":"rpc","cmds":[]}"#).code,
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            err(r#"{"role":"rpc","u":"x"}"#).code,
            ErrorCode::InvalidRequest
        );
        let e = err(r#"{"role":"rpc","u":"x","cmds":[{"name":"a","fun":"f","locs":"gpu"}]}"#);
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.message.starts_with("cmds[0]:"), "{}", e.message);
        let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        let e = err(&format!(
            r#"{{"role":"rpc","u":"x","cmds":[{{"name":"a","fun":"echo","args":[{deep}]}}]}}"#
        ));
        assert_eq!(
            (e.code, e.u),
            (ErrorCode::MalformedMessage, Value::from("x"))
        );
        assert!(e.message.contains("127"), "{}", e.message);
        let e = err(r#"{"role":"rpc","u":"x","u":"y","cmds":[]}"#);
        assert_eq!((e.code, e.u), (ErrorCode::InvalidRequest, Value::from("x")));
        assert!(e.message.contains("more than once"), "{}", e.message);
        let e = err(r#"{"role":"rpc","role":"rpc","u":"x","cmds":[]}"#);
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        let e = err(
            r#"{"role":"rpc","u":"x","cmds":[{"name":"a","fun":"echo","args":[{"k":1,"k":2}]}]}"#,
        );
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.message.contains("cmds[0].args[0]"), "{}", e.message);
        let e = err(
            r#"{"role":"rpc","u":"x","cmds":[{"name":"a","fun":"echo","args":[1180591620717411303424]}]}"#,
        );
        assert_eq!(
            (e.code, e.u),
            (ErrorCode::MalformedMessage, Value::from("x"))
        );
        assert!(e.message.contains("cmds[0].args[0]"), "{}", e.message);
    }
}
