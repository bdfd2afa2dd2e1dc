//! The controller run in the test's own runtime, and the OsImage helpers the tests share: build
//! one, wait for a condition, read its conditions.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use kube::{Api, Client};
use serde_json::json;
use tokio::sync::Semaphore;
use ztp_operator::{
    api::{ConditionType, OsImage, conditions::find_condition},
    fetch::{FetchConfig, Fetcher},
    reconcile::osimage::{ImageContext, ImagePolicy},
};

use super::{KubeTest, store::TestStore};

pub fn fast_policy() -> ImagePolicy {
    ImagePolicy {
        max_attempts: None,
        backoff_base: Duration::from_millis(200),
        backoff_max: Duration::from_secs(1),
        progress_interval: Duration::from_millis(200),
        resync: Duration::from_secs(600),
        manifest_recheck: Duration::from_millis(500),
    }
}

/// The controller running in this test's runtime, watching only the test's namespace.
pub struct RunningController(tokio::task::JoinHandle<()>);

impl Drop for RunningController {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub fn start_controller(t: &KubeTest, store: &TestStore) -> RunningController {
    start_controller_with(t, store, fast_policy())
}

pub fn start_controller_with(t: &KubeTest, store: &TestStore, policy: ImagePolicy) -> RunningController {
    start_controller_fetching(t, store, policy, test_fetch_config())
}

/// The controller running in this test's runtime with `client`, watching `namespace` (or all).
pub fn start_controller_in(
    client: &Client,
    namespace: Option<String>,
    store: &TestStore,
) -> RunningController {
    start_controller_core(client, namespace, store, fast_policy(), test_fetch_config())
}

fn test_fetch_config() -> FetchConfig {
    FetchConfig { idle_timeout: Duration::from_secs(5), ..FetchConfig::default() }
}

pub fn start_controller_fetching(
    t: &KubeTest,
    store: &TestStore,
    policy: ImagePolicy,
    fetch: FetchConfig,
) -> RunningController {
    start_controller_core(&t.client, Some(t.namespace.clone()), store, policy, fetch)
}

fn start_controller_core(
    client: &Client,
    namespace: Option<String>,
    store: &TestStore,
    policy: ImagePolicy,
    fetch: FetchConfig,
) -> RunningController {
    let core = ImageContext {
        store: store.store.clone(),
        fetcher: Fetcher::new(fetch).expect("fetcher"),
        fetch_slots: Arc::new(Semaphore::new(2)),
        policy,
        external_url: Some("http://ztp.example.net".into()),
        metrics: Default::default(),
        in_flight: Default::default(),
    };
    let client = client.clone();
    RunningController(tokio::spawn(async move {
        if let Err(e) = ztp_operator::controller::run_controller(client, core, namespace).await {
            panic!("controller failed: {e}");
        }
    }))
}

pub fn osimage(
    name: &str,
    platform: &str,
    version: &str,
    url: &str,
    sha: &str,
    extra: serde_json::Value,
) -> OsImage {
    let mut spec =
        json!({"platform": platform, "version": version, "source": {"url": {"url": url}}, "sha256": sha});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({"apiVersion": "ztp.netops.dev/v1alpha1", "kind": "OsImage", "metadata": {"name": name}, "spec": spec}))
        .expect("OsImage")
}

/// Polls until `cond` holds for the object, or fails with its last status.
pub async fn wait_for<K>(api: &Api<K>, name: &str, what: &str, cond: impl Fn(&K) -> bool) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(o)) = api.get_opt(name).await
            && cond(&o)
        {
            return o;
        }
        if Instant::now() > deadline {
            let last = api.get_opt(name).await.ok().flatten();
            panic!("{name}: not {what} within 60 s; last: {last:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn condition(o: &OsImage, t: ConditionType) -> Option<(String, String, String)> {
    let c = find_condition(&o.status.as_ref()?.conditions, t)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

pub fn is_ready(o: &OsImage) -> bool {
    condition(o, ConditionType::Ready).is_some_and(|(s, _, _)| s == "True")
}

pub fn stalled_reason(o: &OsImage) -> Option<String> {
    condition(o, ConditionType::Stalled).filter(|(s, _, _)| s == "True").map(|(_, r, _)| r)
}

/// What the device-facing tests start from: the OsImage `nos` (`nos/1/nos.bin`, `size`
/// reproducible random bytes from `seed`) served by its own source and Ready under a running
/// controller, and `profile` (a SwitchProfile as JSON) created, in the test's namespace.
pub struct ImageLab {
    /// The image's bytes.
    pub body: bytes::Bytes,
    pub images: Api<OsImage>,
    pub controller: RunningController,
    _source: super::source::SourceServer,
}

pub async fn image_lab(
    t: &KubeTest,
    store: &TestStore,
    size: usize,
    seed: u64,
    profile: serde_json::Value,
) -> ImageLab {
    use super::source::{Behavior, SourceServer};
    use kube::api::PostParams;
    use ztp_operator::{api::SwitchProfile, hash::Sha256Digest};

    let body = super::random_bytes(size, seed);
    let source = SourceServer::start(vec![("/nos.bin", body.clone(), Behavior::Serve)]).await;
    let images: Api<OsImage> = Api::namespaced(t.client.clone(), &t.namespace);
    let sha = Sha256Digest::of(&body).to_string();
    let image = osimage("nos", "nos", "1", &source.url_of("/nos.bin"), &sha, json!({}));
    images.create(&PostParams::default(), &image).await.expect("create image");
    let profile: SwitchProfile = serde_json::from_value(profile).expect("profile");
    let profiles: Api<SwitchProfile> = Api::namespaced(t.client.clone(), &t.namespace);
    profiles.create(&PostParams::default(), &profile).await.expect("create profile");
    let controller = start_controller(t, store);
    wait_for(&images, "nos", "Ready", is_ready).await;
    ImageLab { body, images, controller, _source: source }
}
