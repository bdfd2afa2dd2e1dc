//! No status storms: 500 SwitchProfiles sharing one ConfigMap, and the requests the controller
//! makes to the apiserver counted on its own client (every request goes through a counting
//! layer): none beyond its watches while idle, one status write per affected profile after a
//! change of the ConfigMap, and no ConfigMap reads at all (they come from the watch cache).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client, Config,
    api::{Patch, PatchParams, PostParams},
    client::{Body, ClientBuilder},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;
use ztp_operator::api::SwitchProfile;

use crate::support::{
    self,
    controller::start_controller_in,
    profiles::{condition, ready_is},
    store::{Backend, TestStore},
};

const PROFILES: usize = 500;

/// Requests seen, by `VERB resource` (`WATCH` for a watch, `LIST` for a GET of a collection;
/// names and queries left out).
#[derive(Clone, Default)]
struct Requests(Arc<Mutex<BTreeMap<String, usize>>>);

impl Requests {
    fn record(&self, req: &http::Request<Body>) {
        let query = req.uri().query().unwrap_or_default();
        let verb = if query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1") {
            "WATCH".to_owned()
        } else {
            req.method().to_string()
        };
        // /api/v1/namespaces/{ns}/{resource}[/{name}[/{sub}]] or /apis/{g}/{v}/...
        let parts: Vec<&str> = req.uri().path().split('/').filter(|s| !s.is_empty()).collect();
        let rest = match parts.first() {
            Some(&"api") => &parts[2.min(parts.len())..],
            _ => &parts[3.min(parts.len())..],
        };
        let rest = match rest.first() {
            Some(&"namespaces") if rest.len() > 2 => &rest[2..],
            _ => rest,
        };
        let verb = match (verb.as_str(), rest.len()) {
            ("GET", 1) => "LIST".to_owned(),
            _ => verb,
        };
        let resource = match rest {
            [r] | [r, _] => r.to_string(),
            [r, _, sub, ..] => format!("{r}/{sub}"),
            [] => "?".into(),
        };
        *self.0.lock().expect("lock").entry(format!("{verb} {resource}")).or_default() += 1;
    }

    fn take(&self) -> BTreeMap<String, usize> {
        std::mem::take(&mut *self.0.lock().expect("lock"))
    }
}

/// Everything but watches and the lists that start them.
fn non_watch(counts: &BTreeMap<String, usize>) -> usize {
    counts.iter().filter(|(k, _)| !k.starts_with("WATCH ") && !k.starts_with("LIST ")).map(|(_, n)| n).sum()
}

async fn counting_client(requests: &Requests) -> Client {
    let env = support::env().await;
    let kc = Kubeconfig::read_from(&env.control_plane.kubeconfig).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("config");
    let r = requests.clone();
    let layer = tower::util::MapRequestLayer::new(move |req: http::Request<Body>| {
        r.record(&req);
        req
    });
    ClientBuilder::try_from(config).expect("builder").with_layer(&layer).build()
}

async fn count_ready(api: &Api<SwitchProfile>, status: &str) -> usize {
    let list = api.list(&Default::default()).await.expect("list");
    list.items.iter().filter(|p| ready_is(p, status)).count()
}

async fn wait_all(api: &Api<SwitchProfile>, status: &str, reason: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = api.list(&Default::default()).await.expect("list");
        let done = list
            .items
            .iter()
            .filter(|p| {
                condition(p, ztp_operator::api::ConditionType::Ready)
                    .is_some_and(|(s, r, _)| s == status && r == reason)
            })
            .count();
        if done == PROFILES {
            return;
        }
        assert!(Instant::now() < deadline, "{done} of {PROFILES} profiles Ready={status} after 120 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn five_hundred_profiles_make_no_requests_when_idle_and_one_write_each_on_a_change() {
    let t = support::kube_test("profile-requests").await;
    let store = TestStore::new(Backend::Fs, "profile-requests").await;
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), &t.namespace);
    let cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared"}, "data": {"startup": "v1"}
    }))
    .expect("cm");
    cms.create(&PostParams::default(), &cm).await.expect("create cm");
    let profiles: Api<SwitchProfile> = Api::namespaced(t.client.clone(), &t.namespace);
    stream::iter(0..PROFILES)
        .map(|i| {
            let profiles = profiles.clone();
            async move {
                let p: SwitchProfile = serde_json::from_value(json!({
                    "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "SwitchProfile",
                    "metadata": {"name": format!("leaf{i:03}")},
                    "spec": {"match": {"serialNumbers": [format!("SN-{i:03}")]},
                             "files": {"startup": {"configMapKeyRef": {"name": "shared", "key": "startup"}}}}
                }))
                .expect("profile");
                profiles.create(&PostParams::default(), &p).await.expect("create profile");
            }
        })
        .buffer_unordered(32)
        .collect::<()>()
        .await;

    let requests = Requests::default();
    let client = counting_client(&requests).await;
    let started = Instant::now();
    let _c = start_controller_in(&client, Some(t.namespace.clone()), &store);
    wait_all(&profiles, "True", "Resolved").await;
    let startup = requests.take();
    eprintln!("until all {PROFILES} Ready ({:?}): {startup:?}", started.elapsed());

    // Idle: let whatever follows the last write settle, then count over a window.
    tokio::time::sleep(Duration::from_secs(3)).await;
    requests.take();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let idle = requests.take();
    eprintln!("idle 20 s: {idle:?}");

    // One change that affects every profile: the key they use disappears.
    let patch = json!({"data": {"startup": null, "other": "x"}});
    cms.patch("shared", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch cm");
    wait_all(&profiles, "False", "InvalidContent").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let change = requests.take();
    eprintln!("one ConfigMap change, then 5 s: {change:?}");
    assert_eq!(count_ready(&profiles, "True").await, 0);

    assert_eq!(non_watch(&idle), 0, "requests while idle: {idle:?}");
    assert_eq!(change.get("PATCH switchprofiles/status").copied().unwrap_or(0), PROFILES, "{change:?}");
    assert_eq!(non_watch(&change), PROFILES, "requests after one ConfigMap change: {change:?}");
    assert_eq!(startup.get("GET configmaps"), None, "ConfigMaps come from the watch cache: {startup:?}");
}
