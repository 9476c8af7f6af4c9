//! Frame → message, with a precise error for every way a frame can be wrong.
//!
//! The fast path parses straight into [`RpcRequest`]. Only when that fails is the frame parsed
//! again into a generic value to say exactly what is wrong, so well-formed traffic pays for
//! one parse.

use serde_json::Value;

use super::{CallResult, ErrorCode, RegisterRequest, Role, RpcCommand, RpcRequest};

/// A decoded client message.
#[derive(Debug)]
pub enum Incoming {
    Rpc(RpcRequest),
    /// A worker registers the functions it serves.
    Register(RegisterRequest),
    /// A worker answers a call.
    CallResult(CallResult),
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

/// Decodes one text or binary frame.
pub fn decode_frame(bytes: &[u8]) -> Result<Incoming, DecodeError> {
    match serde_json::from_slice::<RpcRequest>(bytes) {
        Ok(req) => match &req.role {
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
        },
        Err(first) => worker_message(bytes).unwrap_or_else(|| Err(diagnose(bytes, &first))),
    }
}

/// A worker's message (`register`, `call-result`), or `None` for anything else.
fn worker_message(bytes: &[u8]) -> Option<Result<Incoming, DecodeError>> {
    #[derive(serde::Deserialize)]
    struct Head {
        role: String,
        #[serde(default)]
        u: Value,
    }
    let head: Head = serde_json::from_slice(bytes).ok()?;
    let invalid = |e: serde_json::Error| DecodeError {
        u: head.u.clone(),
        code: ErrorCode::InvalidRequest,
        message: format!("`{}` message: {e}", head.role),
    };
    match head.role.as_str() {
        "register" => Some(
            serde_json::from_slice(bytes)
                .map(Incoming::Register)
                .map_err(invalid),
        ),
        "call-result" => Some(
            serde_json::from_slice(bytes)
                .map(Incoming::CallResult)
                .map_err(invalid),
        ),
        _ => None,
    }
}

fn bad_role(role: Option<&str>) -> String {
    match role {
        Some(r) => format!("Invalid RPC request role: {r}"),
        None => "Invalid RPC request role: missing `role`".to_owned(),
    }
}

/// The slow path: explain why `bytes` is not a valid request. `first` is the fast path's
/// error, the answer when no finer diagnosis applies (e.g. a key given twice).
fn diagnose(bytes: &[u8], first: &serde_json::Error) -> DecodeError {
    let malformed = |message: String| DecodeError {
        u: unknown_u(),
        code: ErrorCode::MalformedMessage,
        message,
    };
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) if e.to_string().contains("recursion limit") => {
            return malformed(
                "message nests arrays/objects too deeply (at most 127 levels); flatten the arguments"
                    .to_owned(),
            );
        }
        Err(e) => return malformed(format!("invalid JSON: {e}")),
    };
    let Value::Object(obj) = &value else {
        return malformed(format!(
            "message must be a JSON object, got {}",
            type_name(&value)
        ));
    };
    let u = match obj.get("u") {
        Some(u @ (Value::String(_) | Value::Number(_))) => u.clone(),
        _ => unknown_u(),
    };
    let invalid = |message: String| DecodeError {
        u: u.clone(),
        code: ErrorCode::InvalidRequest,
        message,
    };
    match obj.get("role") {
        Some(Value::String(r)) if r == "rpc" => {}
        Some(Value::String(r)) => {
            return DecodeError {
                u,
                code: ErrorCode::TimeoutOrBadRole,
                message: bad_role(Some(r)),
            };
        }
        Some(other) => {
            return DecodeError {
                u,
                code: ErrorCode::TimeoutOrBadRole,
                message: bad_role(Some(&other.to_string())),
            };
        }
        None => {
            return DecodeError {
                u,
                code: ErrorCode::TimeoutOrBadRole,
                message: bad_role(None),
            };
        }
    }
    match obj.get("u") {
        None => return invalid("missing field `u` (the request id)".to_owned()),
        Some(Value::String(_)) => {}
        Some(other) => {
            return invalid(format!("`u` must be a string, got {}", type_name(other)));
        }
    }
    let cmds = match obj.get("cmds") {
        None => return invalid("missing field `cmds`".to_owned()),
        Some(Value::Array(cmds)) => cmds,
        Some(other) => {
            return invalid(format!("`cmds` must be an array, got {}", type_name(other)));
        }
    };
    for (i, cmd) in cmds.iter().enumerate() {
        if let Err(e) = serde_json::from_value::<RpcCommand>(cmd.clone()) {
            return invalid(format!("cmds[{i}]: {e}"));
        }
    }
    match serde_json::from_value::<RpcRequest>(value) {
        // The generic value hides what the text showed (a duplicate key): report the text's.
        Ok(_) => invalid(first.to_string()),
        Err(e) => invalid(e.to_string()),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
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
    fn minimal_request_decodes() {
        let Ok(Incoming::Rpc(req)) = decode_frame(
            br#"{"role":"rpc","u":"r","cmds":[{"name":"e","fun":"echo","args":["hi"]}]}"#,
        ) else {
            panic!("not an rpc request");
        };
        assert_eq!(req.u, "r");
        assert_eq!(req.cmds[0].args, vec![Value::String("hi".into())]);
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
        let e = err(r#"{"role":"cache-request","u":"x"}"#);
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
        assert_eq!(e.code, ErrorCode::MalformedMessage);
        assert!(e.message.contains("127"), "{}", e.message);
        let e = err(r#"{"role":"rpc","u":"x","u":"y","cmds":[]}"#);
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.message.contains("duplicate"), "{}", e.message);
    }
}
