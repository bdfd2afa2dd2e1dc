//! Health the way GitOps tools judge it: Flux's own kstatus library (`sigs.k8s.io/cli-utils`,
//! `status.Compute`, through `support::kstatus`) run on every version of the OsImages and
//! SwitchProfiles the apiserver sent while the real controller reconciled them, from before the
//! controller's first status write to the end: an image fetched from a slow source is
//! `InProgress`, `Current` once Ready; a 404 and a wrong checksum are `Failed`; a 503 retried is
//! `InProgress` (never `Failed`), `Current` once the source answers; a profile waiting for its
//! image is `InProgress`, then `Current`; a missing ConfigMap key is `Failed`; a ConfigMap not
//! applied yet is `InProgress`, `Current` once it exists. Never `Unknown`, never `Current` before
//! the controller has said so, and every version agrees with the README's table ("Argo CD and
//! Flux"). The serving Deployment the controller applies is judged by the same library (no
//! kubelet here: `InProgress` until its status says the replicas are available, then `Current`).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::ConfigMap};
use kube::{
    Api, Resource,
    api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams},
    runtime::watcher,
};
use serde_json::{Value, json};
use ztp_operator::{
    api::{OsImage, SwitchProfile},
    hash::Sha256Digest,
};

use crate::support::{
    self,
    controller::{osimage, start_controller},
    deployment::{Controller, wait_obj},
    kstatus::{self, Health, Status},
    random_bytes,
    source::{Behavior, SourceServer},
    store::{Backend, TestStore},
};

/// Every version of every object `api` sends from now on (watch events, as JSON), until dropped.
struct Observed {
    versions: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Observed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Observed {
    /// Starts watching; returns once the watch is established (its initial list done), so nothing
    /// created afterwards is missed.
    async fn start(api: Api<DynamicObject>) -> Self {
        let versions = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let sink = versions.clone();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut events = watcher(api, watcher::Config::default()).boxed();
            while let Some(event) = events.try_next().await.expect("watch") {
                match event {
                    watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                        sink.lock().expect("lock").push(serde_json::to_value(&o).expect("json"));
                    }
                    watcher::Event::InitDone => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    watcher::Event::Init | watcher::Event::Delete(_) => {}
                }
            }
        });
        ready_rx.await.expect("the watch starts");
        Observed { versions, task }
    }

    fn versions(&self) -> Vec<Value> {
        self.versions.lock().expect("lock").clone()
    }
}

fn dynamic<K: Resource<DynamicType = ()>>(t: &support::KubeTest) -> Api<DynamicObject> {
    Api::namespaced_with(t.client.clone(), &t.namespace, &ApiResource::erase::<K>(&()))
}

async fn get_json(api: &Api<DynamicObject>, name: &str) -> Value {
    serde_json::to_value(api.get(name).await.expect("get")).expect("json")
}

/// Polls until `name` is in a state `also` accepts and kstatus says `want` for it (60 s), failing
/// with its last verdict and object.
async fn wait_kstatus(
    api: &Api<DynamicObject>,
    name: &str,
    want: Status,
    also: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let obj = get_json(api, name).await;
        let health = kstatus::compute(&obj).await;
        if health.status == want && also(&obj) {
            return obj;
        }
        assert!(Instant::now() < deadline, "{name}: kstatus not {want} within 60 s: {health}\n{obj:#}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `(status, reason)` of condition `t` in a JSON object.
fn condition<'a>(obj: &'a Value, t: &str) -> Option<(&'a str, &'a str)> {
    let c = obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == t)?;
    Some((c["status"].as_str().unwrap_or_default(), c["reason"].as_str().unwrap_or_default()))
}

fn is_true(obj: &Value, t: &str) -> bool {
    condition(obj, t).is_some_and(|(s, _)| s == "True")
}

/// What README's "Argo CD and Flux" section says kstatus makes of a status: a status that is
/// not of the current generation (none yet included) is in progress; then `Stalled` is Failed,
/// `Reconciling` InProgress, `Ready` Current; not Ready and neither is still in progress.
fn readme_says(obj: &Value) -> Status {
    if obj["status"]["observedGeneration"] != obj["metadata"]["generation"] {
        Status::InProgress
    } else if is_true(obj, "Stalled") {
        Status::Failed
    } else if is_true(obj, "Reconciling") {
        Status::InProgress
    } else if is_true(obj, "Ready") {
        Status::Current
    } else {
        Status::InProgress
    }
}

fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or_default()
}

/// The kstatus of each observed version of `name`, in order, with the version.
fn history<'a>(versions: &'a [Value], verdicts: &'a [Health], name: &str) -> Vec<(&'a Value, &'a Health)> {
    versions.iter().zip(verdicts).filter(|(v, _)| name_of(v) == name).collect()
}

#[tokio::test]
async fn kstatus_follows_images_and_profiles_through_their_lifecycle_and_is_never_unknown() {
    let t = support::kube_test("kstatus").await;
    let store = TestStore::new(Backend::Fs, "kstatus").await;
    // 600 kB at 100 kB/s: about six seconds of fetching.
    let body = random_bytes(600_000, 91);
    let src = SourceServer::start(vec![
        ("/slow.bin", body.clone(), Behavior::Slow { bytes_per_sec: 100_000 }),
        ("/good.bin", body.clone(), Behavior::Serve),
        ("/gone.bin", body.clone(), Behavior::Status(404)),
        ("/busy.bin", body.clone(), Behavior::Status(503)),
    ])
    .await;
    let sha = Sha256Digest::of(&body).to_string();
    let wrong = Sha256Digest::of(b"something else").to_string();
    let (dyn_images, dyn_profiles) = (dynamic::<OsImage>(&t), dynamic::<SwitchProfile>(&t));
    let watched_images = Observed::start(dyn_images.clone()).await;
    let watched_profiles = Observed::start(dyn_profiles.clone()).await;

    let images: Api<OsImage> = Api::namespaced(t.client.clone(), &t.namespace);
    for (name, path, sum) in [
        ("slow", "/slow.bin", &sha),
        ("good", "/good.bin", &sha),
        ("gone", "/gone.bin", &sha),
        ("bad-sum", "/good.bin", &wrong),
        ("busy", "/busy.bin", &sha),
    ] {
        let image = osimage(name, name, "1", &src.url_of(path), sum, json!({}));
        images.create(&PostParams::default(), &image).await.expect("create image");
    }
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), &t.namespace);
    let cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ctrld"}, "data": {"other": "x"}
    }))
    .expect("cm");
    cms.create(&PostParams::default(), &cm).await.expect("create cm");
    let profiles: Api<SwitchProfile> = Api::namespaced(t.client.clone(), &t.namespace);
    for (name, serial, spec) in [
        ("waits", "SN-W", json!({"onie": {"installImage": {"name": "slow"}}})),
        ("ready", "SN-R", json!({"onie": {"installImage": {"name": "good"}}})),
        (
            "no-key",
            "SN-K",
            json!({"files": {"ctrld": {"configMapKeyRef": {"name": "ctrld", "key": "ctrld.json"}}}}),
        ),
        (
            "no-cm",
            "SN-C",
            json!({"files": {"ctrld": {"configMapKeyRef": {"name": "later", "key": "ctrld.json"}}}}),
        ),
    ] {
        let mut spec = spec;
        spec["match"] = json!({"serialNumbers": [serial]});
        let p: SwitchProfile = serde_json::from_value(json!({
            "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "SwitchProfile", "metadata": {"name": name},
            "spec": spec,
        }))
        .expect("profile");
        profiles.create(&PostParams::default(), &p).await.expect("create profile");
    }

    // No controller has seen them yet: a GitOps tool must wait, not call them healthy.
    for (api, name) in [(&dyn_images, "slow"), (&dyn_images, "gone"), (&dyn_profiles, "ready")] {
        let obj = get_json(api, name).await;
        let health = kstatus::compute(&obj).await;
        assert_eq!(health.status, Status::InProgress, "{name} before the controller: {health}\n{obj:#}");
    }

    let _c = start_controller(&t, &store);

    // A transient error (503) is retried: in progress, never Failed; then served, Current.
    let retrying = wait_kstatus(&dyn_images, "busy", Status::InProgress, |o| {
        condition(o, "Reconciling") == Some(("True", "RetryingFetch"))
            && o["status"]["attempts"].as_u64() >= Some(2)
    })
    .await;
    assert!(!is_true(&retrying, "Stalled"), "{retrying:#}");
    src.set_behavior("/busy.bin", Behavior::Serve);

    // A ConfigMap not applied yet (a sync applies objects in no set order): in progress; Current
    // once it exists.
    wait_kstatus(&dyn_profiles, "no-cm", Status::InProgress, |o| {
        condition(o, "Reconciling") == Some(("True", "WaitingForReference"))
    })
    .await;
    let later: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "later"}, "data": {"ctrld.json": "{}"}
    }))
    .expect("cm");
    cms.create(&PostParams::default(), &later).await.expect("create the late cm");

    // Final verdicts, waited for as `flux … --wait` / kstatus's poller would.
    for (name, want) in [
        ("good", Status::Current),
        ("gone", Status::Failed),
        ("bad-sum", Status::Failed),
        ("slow", Status::Current),
        ("busy", Status::Current),
    ] {
        wait_kstatus(&dyn_images, name, want, |_| true).await;
    }
    for (name, want) in [
        ("ready", Status::Current),
        ("no-key", Status::Failed),
        ("waits", Status::Current),
        ("no-cm", Status::Current),
    ] {
        wait_kstatus(&dyn_profiles, name, want, |_| true).await;
    }
    // The Stalled reasons behind the Failed verdicts.
    for (api, name, reason) in [
        (&dyn_images, "gone", "FetchFailed"),
        (&dyn_images, "bad-sum", "ChecksumMismatch"),
        (&dyn_profiles, "no-key", "InvalidContent"),
    ] {
        let obj = get_json(api, name).await;
        assert_eq!(condition(&obj, "Stalled"), Some(("True", reason)), "{obj:#}");
    }

    // The List the apiserver serves (`kubectl get osimages -o json`), items without their kind.
    let list = t
        .client
        .request_text(
            http::Request::get(format!("/apis/ztp.netops.dev/v1alpha1/namespaces/{}/osimages", t.namespace))
                .body(Vec::new())
                .expect("request"),
        )
        .await
        .expect("list OsImages");
    let mut listed: Vec<(String, Status)> = kstatus::compute_json(list.as_bytes())
        .await
        .into_iter()
        .inspect(|h| assert_eq!(h.kind, "OsImage", "{h}"))
        .map(|h| (h.name, h.status))
        .collect();
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    let want = [
        ("bad-sum", Status::Failed),
        ("busy", Status::Current),
        ("gone", Status::Failed),
        ("good", Status::Current),
        ("slow", Status::Current),
    ];
    assert_eq!(listed, want.map(|(n, s)| (n.to_owned(), s)));

    // Every version the apiserver sent, judged by kstatus.
    let mut versions = watched_images.versions();
    versions.extend(watched_profiles.versions());
    let verdicts = kstatus::compute_all(&versions).await;
    assert_eq!(verdicts.len(), versions.len());
    eprintln!("kstatus: {} versions of 9 objects observed", versions.len());
    for (v, h) in versions.iter().zip(&verdicts) {
        assert_ne!(h.status, Status::Unknown, "{h}\n{v:#}");
        assert_eq!(h.status, readme_says(v), "kstatus and README's table disagree: {h}\n{v:#}");
    }
    for name in ["slow", "good", "gone", "bad-sum", "busy", "waits", "ready", "no-key", "no-cm"] {
        let seen = history(&versions, &verdicts, name);
        assert!(!seen.is_empty(), "{name}: never observed");
        // As created (no status yet): InProgress, not Current.
        let (first, h) = seen[0];
        assert!(first.get("status").is_none_or(|s| s.get("conditions").is_none()), "{first:#}");
        assert_eq!(h.status, Status::InProgress, "{name} as created: {h}");
    }
    // Mid-way states, each seen by kstatus at least once: the slow image fetching (with its
    // progress), the profile waiting for it.
    let fetching = history(&versions, &verdicts, "slow").into_iter().find(|(v, _)| {
        condition(v, "Reconciling") == Some(("True", "Fetching")) && v["status"]["progressText"].is_string()
    });
    let (_, h) = fetching.expect("a version of the slow image fetching, with its progress");
    assert_eq!(h.status, Status::InProgress, "{h}");
    let waiting = history(&versions, &verdicts, "waits")
        .into_iter()
        .find(|(v, _)| condition(v, "Reconciling") == Some(("True", "WaitingForImage")));
    let (_, h) = waiting.unwrap_or_else(|| {
        let seen: Vec<String> = history(&versions, &verdicts, "waits")
            .into_iter()
            .map(|(v, h)| format!("{} {:?}", h.status, v["status"]["conditions"]))
            .collect();
        let slow: Vec<String> = history(&versions, &verdicts, "slow")
            .into_iter()
            .map(|(v, h)| format!("{} {:?}", h.status, v["status"]["conditions"]))
            .collect();
        panic!("no version of the profile waiting for its image: {seen:#?}\nthe image's: {slow:#?}")
    });
    assert_eq!(h.status, Status::InProgress, "{h}");
    assert!(h.message.contains("slow"), "kstatus shows the condition's message: {h}");
}

#[tokio::test]
async fn kstatus_judges_the_serving_deployment_the_controller_applies() {
    let t = support::kube_test("kstatus-serving").await;
    let store = TestStore::new(Backend::Fs, "kstatus-serving").await;
    let args = vec![
        "controller".to_owned(),
        format!("--namespace={}", t.namespace),
        "--leader-elect=false".into(),
        "--metrics-listen=127.0.0.1:0".into(),
        "--external-url=http://ztp.example.net".into(),
        "--manage-serving=true".into(),
        format!("--serving-namespace={}", t.namespace),
        "--serving-image=registry.example.net/ztp-operator:e2e".into(),
        "--serving-pvc=ztp-store".into(),
    ]
    .into_iter()
    .chain(store.flags())
    .collect::<Vec<_>>();
    let mut c = Controller(support::binaries::with_cluster(&args, "kstatus-serving.log").await);
    let deployments: Api<Deployment> = Api::namespaced(t.client.clone(), &t.namespace);
    let d = wait_obj(&deployments, "ztp-server", "applied", &mut c, |_| true).await;

    // As applied: no pod runs on this control plane, so the rollout is in progress.
    let health = kstatus::compute(&d).await;
    assert_eq!(health.status, Status::InProgress, "{health}");
    assert_eq!((health.kind.as_str(), health.name.as_str()), ("Deployment", "ztp-server"));

    // The status the deployment controller writes once both replicas are available.
    let generation = d.metadata.generation;
    let status = json!({"status": {
        "observedGeneration": generation, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2,
        "availableReplicas": 2,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "ok"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "message": "ok"},
        ],
    }});
    deployments
        .patch_status("ztp-server", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("write status");
    let d = deployments.get("ztp-server").await.expect("get");
    let health = kstatus::compute(&d).await;
    assert_eq!(health.status, Status::Current, "{health}");
    c.0.assert_running();
}
