//! SwitchProfile helpers the tests share: a profile claiming a serial, its conditions, waiting for
//! one.

use std::time::{Duration, Instant};

use kube::Api;
use serde_json::json;
use ztp_operator::api::{ConditionType, SwitchProfile, conditions::find_condition};

/// A profile claiming `serial`, whose `startup` file says who it is.
pub fn claiming(name: &str, serial: &str) -> SwitchProfile {
    serde_json::from_value(json!({
        "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "SwitchProfile",
        "metadata": {"name": name},
        "spec": {"match": {"serialNumbers": [serial]}, "files": {"startup": {"inline": format!("from {name}")}}}
    }))
    .expect("profile")
}

/// `(status, reason, message)` of a condition.
pub fn condition(p: &SwitchProfile, t: ConditionType) -> Option<(String, String, String)> {
    let c = find_condition(&p.status.as_ref()?.conditions, t)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Polls a profile until `cond` holds; panics with its status after 60 s.
pub async fn wait_profile(
    api: &Api<SwitchProfile>,
    name: &str,
    what: &str,
    cond: impl Fn(&SwitchProfile) -> bool,
) -> SwitchProfile {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(p)) = api.get_opt(name).await
            && cond(&p)
        {
            return p;
        }
        if Instant::now() > deadline {
            let last = api.get_opt(name).await.ok().flatten().map(|p| p.status);
            panic!("{name}: not {what} within 60 s; status: {last:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn ready_is(p: &SwitchProfile, status: &str) -> bool {
    condition(p, ConditionType::Ready).is_some_and(|(s, _, _)| s == status)
}
