//! The controller binary with `--manage-serving`, and readers of the Deployment and the RBAC it
//! applies, for the tests of the serving objects (the chart's too).

use std::time::{Duration, Instant};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Container, PodSpec},
};
use kube::Api;
use ztp_operator::controller::serving::CONFIG_HASH_ANNOTATION;

use super::procs;

/// A running `ztp-operator controller` (killed on drop).
pub struct Controller(pub procs::Proc);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.child.kill();
        let _ = self.0.child.wait();
    }
}

/// Polls `api` for `name` until `cond` holds (30 s), failing with the controller's log.
pub async fn wait_obj<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    c: &mut Controller,
    cond: impl Fn(&K) -> bool,
) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        c.0.assert_running();
        if let Ok(Some(o)) = api.get_opt(name).await
            && cond(&o)
        {
            return o;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: not {what} within 30 s; log:\n{}",
            procs::tail(&c.0.log, 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn pod(d: &Deployment) -> &PodSpec {
    d.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("pod spec")
}

pub fn container(d: &Deployment) -> &Container {
    &pod(d).containers[0]
}

pub fn env_of(d: &Deployment, name: &str) -> Option<String> {
    container(d).env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.clone())
}

pub fn hash(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(CONFIG_HASH_ANNOTATION))
        .cloned()
        .unwrap_or_default()
}

/// The rules of a Role as (groups, resources, verbs), for exact comparison.
pub fn flat_rules(rules: &[k8s_openapi::api::rbac::v1::PolicyRule]) -> Vec<(String, String, String)> {
    rules
        .iter()
        .map(|r| {
            (
                r.api_groups.clone().unwrap_or_default().join(","),
                r.resources.clone().unwrap_or_default().join(","),
                r.verbs.join(","),
            )
        })
        .collect()
}

pub fn server_rules() -> Vec<(String, String, String)> {
    [
        ("ztp.netops.dev", "switchprofiles/status", "patch"),
        ("events.k8s.io", "events", "create,patch"),
        ("ztp.netops.dev", "switches", "get,list,watch,create,delete"),
        ("ztp.netops.dev", "switches/status", "patch"),
    ]
    .into_iter()
    .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
    .collect()
}
