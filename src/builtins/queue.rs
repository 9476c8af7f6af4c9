//! The queue built-ins (`queue_create`, `queue_send`, `queue_receive`, `queue_ack`, …), each
//! taking one object with the original's field names (`queue::request`). Any node answers:
//! `queue::service` runs the call on the queue's owner, here or through the data plane.
//! With tokens required and `queue_role` set, every one needs that role.

use std::sync::Arc;

use serde_json::Value;

use super::args::request;
use crate::protocol::json::Json;
use crate::queue::service::{Op, QueueFail};
use crate::registry::{CallArgs, CallError, Function};
use crate::view::NodeView;

/// This group's built-ins.
pub(crate) fn functions(view: &Arc<NodeView>) -> Vec<Function> {
    use super::takes_request;
    let mut fs = vec![
        (
            create(view.clone()),
            "Creates a queue owned by this node (the same settings again: the existing queue)",
        ),
        (
            list(view.clone()),
            "Every queue in the cluster and its owner",
        ),
    ];
    for op in Op::ALL {
        fs.push((routed(view.clone(), op), doc(op)));
    }
    for (name, d) in [
        (
            SUBSCRIBE,
            "Feeds this connection a queue's messages as notifications (the single command \
             of its request)",
        ),
        (UNSUBSCRIBE, "Ends a queue subscription of this connection"),
    ] {
        fs.push((connection_only(name), d));
    }
    fs.into_iter()
        .map(|(f, d)| {
            let f = takes_request(f, d);
            match &view.queue_role {
                Some(role) => f.requires_role(role.clone()),
                None => f,
            }
        })
        .collect()
}

fn doc(op: Op) -> &'static str {
    match op {
        Op::Delete => "Deletes a queue and its messages",
        Op::Stats => "A queue's depth, in-flight and dead-lettered counts and totals",
        Op::Send => "Sends a message; answers once it is stored (fsynced in sqlite mode)",
        Op::SendBatch => "Sends up to 100 messages; answers once they are stored",
        Op::Receive => "Receives up to 10 messages, waiting up to 20 s for the first",
        Op::Ack => "Acknowledges a delivery by its receipt handle: the message is done",
        Op::Nack => "Gives a delivery back, visible again after an optional delay",
        Op::ChangeVisibility => "Moves a delivery's visibility deadline",
        Op::Purge => "Drops every pending message (in-flight ones finish, dead letters stay)",
        Op::Dlq => "Lists a queue's dead-lettered messages",
        Op::Redrive => "Moves a queue's dead-lettered messages back to pending",
    }
}

/// A queue failure as the client sees it: bad input 1007, the queue's refusals 1003, an
/// owner out of reach 1017; the message starts with the failure's stable name.
fn call_error(e: QueueFail) -> CallError {
    let message = e.to_string();
    match e {
        QueueFail::Invalid(_) => CallError::InvalidArguments(message),
        QueueFail::NotFound(_) | QueueFail::Exists(_) | QueueFail::Refused { .. } => {
            CallError::Failed(message)
        }
        QueueFail::Unavailable { .. } => CallError::Unavailable(message),
    }
}

fn create(view: Arc<NodeView>) -> Function {
    Function::raw("queue_create", move |call: CallArgs| {
        let view = view.clone();
        async move {
            let req: crate::queue::request::CreateRequest = request("queue_create", &call)?;
            let reply = view.queues.create(&req).await.map_err(call_error)?;
            Ok(Json::from(reply))
        }
    })
}

fn list(view: Arc<NodeView>) -> Function {
    Function::raw("queue_list", move |_call: CallArgs| {
        let view = view.clone();
        async move { Ok(Json::from(view.queues.list())) }
    })
}

fn routed(view: Arc<NodeView>, op: Op) -> Function {
    Function::raw(op.name(), move |call: CallArgs| {
        let view = view.clone();
        async move {
            let req: Value = request(op.name(), &call)?;
            let reply = view.queues.call(op, req).await.map_err(call_error)?;
            Ok(Json::from(reply))
        }
    })
}

pub(crate) const SUBSCRIBE: &str = "queue_subscribe";
pub(crate) const UNSUBSCRIBE: &str = "queue_unsubscribe";

/// Whether `req` is a queue subscription call, which the connection answers itself (it is
/// the connection that the subscription feeds).
pub(crate) fn is_subscription_call(req: &crate::protocol::RpcRequest) -> bool {
    matches!(&req.cmds[..], [c] if c.fun == SUBSCRIBE || c.fun == UNSUBSCRIBE)
}

/// A queue subscription call, read.
pub(crate) enum SubscriptionCall {
    Subscribe(crate::queue::feed::SubscribeRequest),
    Unsubscribe(String),
}

/// The command's name and what it asks (its one object, or its keywords).
pub(crate) fn subscription_call(
    req: &crate::protocol::RpcRequest,
) -> Result<(String, SubscriptionCall), crate::protocol::WireError> {
    use crate::protocol::{ErrorCode, WireError};
    let [cmd] = &req.cmds[..] else {
        return Err(WireError::new(
            ErrorCode::InvalidRequest,
            "a queue subscription call is the single command of its request",
        ));
    };
    let call = CallArgs {
        args: cmd.args.clone(),
        kwargs: cmd.kwargs.clone(),
    };
    let bad = |e: CallError| WireError::new(ErrorCode::InvalidArguments, e.to_string());
    let asked = if cmd.fun == SUBSCRIBE {
        SubscriptionCall::Subscribe(request(SUBSCRIBE, &call).map_err(bad)?)
    } else {
        let r: crate::queue::feed::UnsubscribeRequest = request(UNSUBSCRIBE, &call).map_err(bad)?;
        SubscriptionCall::Unsubscribe(r.subscription_id)
    };
    Ok((cmd.name.clone(), asked))
}

/// `queue_subscribe` and `queue_unsubscribe` as functions: listed with the others, but a
/// subscription feeds the connection it was asked on, so only the connection answers them
/// (the single command of a request); inside a larger request they are refused.
fn connection_only(name: &'static str) -> Function {
    Function::raw(name, move |_call: CallArgs| async move {
        Err::<Json, _>(CallError::InvalidArguments(format!(
            "{name} must be the single command of its request: it feeds (or stops feeding) \
             the connection it is sent on"
        )))
    })
}
