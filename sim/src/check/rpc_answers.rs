//! Every completed call's answer is the right one for its request: the reply to a workload
//! request that succeeded equals the answer computed from the request alone (each request
//! has its own inputs, so a reply routed to the wrong request, a stale step result or a
//! wrong substitution shows). Failed requests are allowed here; the scenario test bounds
//! how many may fail.

use crate::cluster::Observations;

pub fn check(obs: &Observations) -> Result<(), String> {
    for r in &obs.rpc {
        if let Ok(answer) = &r.answer
            && *answer != r.expected
        {
            return Err(format!(
                "{} ({}): answered {answer}, expected {}",
                r.request, r.client, r.expected
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster_rpc::RpcRecord;
    use serde_json::json;

    #[test]
    fn a_wrong_answer_fails_and_a_failed_request_does_not() {
        let record = |answer| RpcRecord {
            client: "r0".into(),
            request: "r0-1".into(),
            expected: json!({"s": 3}),
            answer,
        };
        let mut obs = Observations::default();
        obs.rpc.push(record(Ok(json!({"s": 3}))));
        obs.rpc.push(record(Err((Some(1018), "lost".into()))));
        assert!(check(&obs).is_ok());
        obs.rpc.push(record(Ok(json!({"s": 4}))));
        assert!(check(&obs).is_err());
    }
}
