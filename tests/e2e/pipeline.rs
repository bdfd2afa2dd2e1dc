//! The image pipeline against real servers: OsImages on a real apiserver, reconciled by the
//! controller into a directory store and into a real S3 server (MinIO), fetching from a real
//! local HTTP server. Each scenario runs on both backends.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use k8s_openapi::api::events::v1::Event;
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, PostParams},
};
use serde_json::json;
use ztp_operator::{
    api::{ConditionType, ImagePath, OsImage, OsImagePhase},
    fetch::FetchConfig,
    hash::Sha256Digest,
    reconcile::osimage::ImagePolicy,
    store::{ManifestEntry, Store, fs::FsBackend, s3::S3Backend},
};

use crate::support::{
    self,
    controller::{
        condition, fast_policy, is_ready, osimage, stalled_reason, start_controller,
        start_controller_fetching, start_controller_with, wait_for,
    },
    random_bytes,
    source::{Behavior, SourceServer},
    store::{Backend, TestStore, s3_settings},
};

/// The reasons of the Events about `name`, once every one of `wanted` is among them (Events are
/// recorded after the status write that a test waits for, so they may trail it); after 10 s,
/// whatever is there.
async fn event_reasons(client: &Client, ns: &str, name: &str, wanted: &[&str]) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let list = events.list(&ListParams::default()).await.expect("list events");
        let reasons: Vec<String> = list
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter_map(|e| e.reason)
            .collect();
        if wanted.iter().all(|w| reasons.iter().any(|r| r == w)) || std::time::Instant::now() > deadline {
            return reasons;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn path(p: &str, v: &str, f: &str) -> ImagePath {
    ImagePath::new(p, v, f).expect("path")
}

// ---------------------------------------------------------------------------------------------

async fn happy_path(backend: Backend) {
    let t = support::kube_test(&format!("img-happy-{backend:?}").to_lowercase()).await;
    let store = TestStore::new(backend, &format!("img-happy-{backend:?}").to_lowercase()).await;
    let body = random_bytes(3 * 1024 * 1024 + 17, 1);
    let sha = Sha256Digest::of(&body).to_string();
    let src = SourceServer::start(vec![("/cl/cumulus.bin", body.clone(), Behavior::Serve)]).await;
    let api: Api<OsImage> = Api::namespaced(t.client.clone(), &t.namespace);
    api.create(
        &PostParams::default(),
        &osimage("cumulus", "cumulus-linux", "5.14.0", &src.url_of("/cl/cumulus.bin"), &sha, json!({})),
    )
    .await
    .expect("create");

    let controller = start_controller(&t, &store);
    let ready = wait_for(&api, "cumulus", "Ready", is_ready).await;
    let status = ready.status.clone().expect("status");
    assert_eq!(status.phase, Some(OsImagePhase::Ready));
    assert_eq!(status.observed_generation, ready.metadata.generation);
    let artifact = status.artifact.expect("artifact");
    assert_eq!(artifact.path, "cumulus-linux/5.14.0/cumulus.bin");
    assert_eq!(artifact.sha256, sha);
    assert_eq!(artifact.size, body.len() as i64);
    assert_eq!(
        artifact.url.as_deref(),
        Some("http://ztp.example.net/images/cumulus-linux/5.14.0/cumulus.bin")
    );
    assert!(ready.metadata.finalizers.iter().flatten().any(|f| f == "ztp.netops.dev/storage"));

    let p = path("cumulus-linux", "5.14.0", "cumulus.bin");
    assert_eq!(store.bytes(&p).await.as_deref(), Some(body.as_ref()), "stored bytes are the source's");
    let manifest = store.store.manifest().await.expect("manifest");
    let entry = manifest.get(&p).expect("manifest entry");
    assert_eq!(entry.sha256.to_string(), sha);
    assert!(entry.is_firmware());
    let raw: serde_json::Value =
        serde_json::from_slice(&store.read_manifest_raw().await.expect("manifest")).expect("json");
    assert_eq!(raw["images"][0]["tags"], json!({"firmware-image": ""}));
    assert_eq!(raw["images"][0]["path"], "cumulus-linux/5.14.0/cumulus.bin");
    assert!(store.leftovers().await.is_empty());
    let reasons = event_reasons(&t.client, &t.namespace, "cumulus", &["Fetching", "Stored"]).await;
    assert!(reasons.iter().any(|r| r == "Fetching") && reasons.iter().any(|r| r == "Stored"), "{reasons:?}");

    // A restarted controller finds the file in place: no second download.
    let gets = src.requests().len();
    drop(controller);
    let _again = start_controller(&t, &store);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = api.get("cumulus").await.expect("get");
    assert!(is_ready(&after));
    assert_eq!(src.requests().len(), gets, "a restart must not refetch a verified image");
}

#[tokio::test]
async fn happy_path_fs() {
    happy_path(Backend::Fs).await;
}

#[tokio::test]
async fn happy_path_s3() {
    happy_path(Backend::S3).await;
}

async fn wrong_checksum(backend: Backend) {
    let name = format!("img-badsum-{backend:?}").to_lowercase();
    let t = support::kube_test(&name).await;
    let store = TestStore::new(backend, &name).await;
    let body = random_bytes(1024 * 1024, 2);
    let actual = Sha256Digest::of(&body).to_string();
    let wrong = Sha256Digest::of(b"something else").to_string();
    let src = SourceServer::start(vec![("/nvos.bin", body, Behavior::Serve)]).await;
    store.write_manifest_raw(b"{\"images\": []}\n").await;
    let before = store.read_manifest_raw().await;

    let api: Api<OsImage> = Api::namespaced(t.client.clone(), &t.namespace);
    api.create(
        &PostParams::default(),
        &osimage("nvos", "nvos", "25.02", &src.url_of("/nvos.bin"), &wrong, json!({})),
    )
    .await
    .expect("create");
    let _c = start_controller(&t, &store);
    let o = wait_for(&api, "nvos", "Stalled", |o| stalled_reason(o).is_some()).await;
    assert_eq!(stalled_reason(&o).as_deref(), Some("ChecksumMismatch"));
    let msg = o.status.as_ref().and_then(|s| s.message.clone()).unwrap_or_default();
    assert!(msg.contains(&format!("sha256 mismatch: expected {wrong}, got {actual}")), "{msg}");
    assert_eq!(o.status.as_ref().and_then(|s| s.phase), Some(OsImagePhase::Failed));
    assert_eq!(
        store.store.stat(&path("nvos", "25.02", "nvos.bin")).await.expect("stat"),
        None,
        "nothing under the final name"
    );
    assert_eq!(store.read_manifest_raw().await, before, "manifest unchanged");
    assert!(store.leftovers().await.is_empty(), "temporary data removed: {:?}", store.leftovers().await);
    // Stalled means stalled: no more downloads of the same wrong file.
    let gets = src.requests().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(src.requests().len(), gets);
}

#[tokio::test]
async fn wrong_checksum_fs() {
    wrong_checksum(Backend::Fs).await;
}

#[tokio::test]
async fn wrong_checksum_s3() {
    wrong_checksum(Backend::S3).await;
}

fn requests_to(src: &SourceServer, p: &str) -> usize {
    src.requests().iter().filter(|r| r.path == p).count()
}

async fn annotate_retry(api: &Api<OsImage>, name: &str, value: &str) {
    let patch = json!({"metadata": {"annotations": {"ztp.netops.dev/retry": value}}});
    api.patch(name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
        .await
        .expect("annotate");
}

/// Errors that need a human stall at once (one attempt); errors that can clear keep retrying;
/// the retry annotation makes exactly one new attempt per new value.
async fn source_errors(backend: Backend) {
    let name = format!("img-srcerr-{backend:?}").to_lowercase();
    let t = support::kube_test(&name).await;
    let store = TestStore::new(backend, &name).await;
    let sha = Sha256Digest::of(b"x").to_string();
    let src = SourceServer::start(vec![
        ("/gone.bin", Bytes::from_static(b"x"), Behavior::Status(404)),
        ("/broken.bin", Bytes::from_static(b"x"), Behavior::Status(500)),
    ])
    .await;
    let api: Api<OsImage> = Api::namespaced(t.client.clone(), &t.namespace);
    for (n, u, v) in [
        ("gone", src.url_of("/gone.bin"), "1"),
        ("broken", src.url_of("/broken.bin"), "2"),
        ("relative", "file://images/x.bin".to_owned(), "3"),
    ] {
        let o = osimage(n, "sonic", v, &u, &sha, json!({}));
        api.create(&PostParams::default(), &o).await.expect("create");
    }
    let _c = start_controller(&t, &store);

    // 404: a human problem, Stalled after one attempt, saying how to retry.
    let o = wait_for(&api, "gone", "Stalled", |o| stalled_reason(o).is_some()).await;
    assert_eq!(stalled_reason(&o).as_deref(), Some("FetchFailed"));
    let msg = o.status.as_ref().and_then(|s| s.message.clone()).unwrap_or_default();
    assert!(msg.contains(&format!("GET {}: HTTP 404 Not Found", src.url_of("/gone.bin"))), "{msg}");
    assert!(msg.contains("ztp.netops.dev/retry"), "{msg}");
    assert_eq!(o.status.as_ref().and_then(|s| s.attempts), Some(1));

    // A relative file:// URL: a bad spec, Stalled at once.
    let o = wait_for(&api, "relative", "Stalled", |o| stalled_reason(o).is_some()).await;
    assert_eq!(stalled_reason(&o).as_deref(), Some("InvalidSpec"));

    // 500: may clear, so it keeps retrying (Reconciling, never Stalled).
    // (An attempt's count is written when it starts: wait for the 4th to have failed.)
    let o = wait_for(&api, "broken", "retried", |o| {
        o.status.as_ref().and_then(|s| s.attempts) >= Some(4)
            && condition(o, ConditionType::Reconciling)
                .is_some_and(|(_, reason, _)| reason == "RetryingFetch")
    })
    .await;
    assert_eq!(stalled_reason(&o), None);
    let (status, reason, msg) = condition(&o, ConditionType::Reconciling).expect("Reconciling");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "RetryingFetch"), "{msg}");
    assert!(msg.contains("HTTP 500 Internal Server Error") && msg.contains("next attempt at"), "{msg}");
    assert!(store.store.manifest().await.expect("manifest").images.is_empty());
    let reasons = event_reasons(&t.client, &t.namespace, "gone", &["FetchFailed"]).await;
    assert!(reasons.iter().any(|r| r == "FetchFailed"), "{reasons:?}");

    // Stalled stays stalled...
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(requests_to(&src, "/gone.bin"), 1, "a stalled image is not fetched again");
    // ...until the retry annotation gets a new value: exactly one new attempt.
    annotate_retry(&api, "gone", "first").await;
    wait_for(&api, "gone", "retried once", |o| {
        o.status.as_ref().and_then(|s| s.last_retry.as_deref()) == Some("first")
            && stalled_reason(o).is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(requests_to(&src, "/gone.bin"), 2, "one retry per new annotation value");
    // The same value again (any other metadata change) does not retry.
    let patch = json!({"metadata": {"labels": {"touched": "yes"}}});
    api.patch("gone", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
        .await
        .expect("label");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(requests_to(&src, "/gone.bin"), 2, "the same annotation value does not loop");

    // Fixed source + a new retry value: Ready without a spec change.
    src.set_behavior("/gone.bin", Behavior::Serve);
    annotate_retry(&api, "gone", "second").await;
    let o = wait_for(&api, "gone", "Ready", is_ready).await;
    assert_eq!(o.status.as_ref().and_then(|s| s.attempts), Some(1), "a retry starts the count afresh");
    assert_eq!(o.metadata.generation, Some(1), "no spec change was needed");

    // A spec change (a new generation) also starts over.
    src.set_behavior("/broken.bin", Behavior::Serve);
    let patch = json!({"spec": {"filename": "broken.bin"}});
    api.patch("broken", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
        .await
        .expect("patch");
    let o = wait_for(&api, "broken", "Ready", is_ready).await;
    assert_eq!(o.status.as_ref().and_then(|s| s.attempts), Some(1), "attempts reset with the spec change");
}

/// A source trickling below the minimum rate fails the attempt (reported in the status) and is
/// retried, instead of holding a fetch slot for as long as it keeps sending a few bytes.
#[tokio::test]
async fn trickling_source_is_cut() {
    let name = "img-trickle";
    let t = support::kube_test(name).await;
    let store = TestStore::new(Backend::Fs, name).await;
    let body = random_bytes(1024 * 1024, 11);
    let sha = Sha256Digest::of(&body).to_string();
    // 2 KiB/s: a fresh byte every 100 ms, so the idle timeout never fires.
    let src = SourceServer::start(vec![("/t.bin", body, Behavior::Slow { bytes_per_sec: 2048 })]).await;
    let api: Api<OsImage> = Api::namespaced(t.client.clone(), &t.namespace);
    api.create(&PostParams::default(), &osimage("trickle", "p", "1", &src.url_of("/t.bin"), &sha, json!({})))
        .await
        .expect("create");
    let fetch = FetchConfig {
        idle_timeout: Duration::from_secs(5),
        min_rate: 64 * 1024,
        min_rate_window: Duration::from_secs(1),
        ..FetchConfig::default()
    };
    let _c = start_controller_fetching(&t, &store, fast_policy(), fetch);
    let o = wait_for(&api, "trickle", "cut for trickling", |o| {
        condition(o, ConditionType::Reconciling).is_some_and(|(_, r, _)| r == "RetryingFetch")
    })
    .await;
    let msg = o.status.as_ref().and_then(|s| s.message.clone()).unwrap_or_default();
    assert!(msg.contains("below the minimum rate of 65536 bytes/s"), "{msg}");
    assert_eq!(stalled_reason(&o), None, "a trickle can clear: retried, not stalled");
}

/// An unreachable source (a closed local port) is retried with growing gaps, for as long as it
/// takes: the controller's own status writes do not cut the wait short.
#[tokio::test]
async fn unreachable_source_backs_off() {
    let name = "img-backoff";
    let t = support::kube_test(name).await;
    let store = TestStore::new(Backend::Fs, name).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }; // closed again: connections are refused
    let url = format!("http://127.0.0.1:{port}/x.bin");
    let sha = Sha256Digest::of(b"x").to_string();
    let api: Api<OsImage> = Api::namespaced(t.client.clone(), &t.namespace);
    api.create(&PostParams::default(), &osimage("down", "p", "1", &url, &sha, json!({})))
        .await
        .expect("create");
    let policy = ImagePolicy {
        backoff_base: Duration::from_millis(300),
        backoff_max: Duration::from_millis(1200),
        ..fast_policy()
    };
    let _c = start_controller_with(&t, &store, policy);

    // When each attempt count first shows in the status, over a window of 7 s.
    let start = Instant::now();
    let mut seen: Vec<(i32, Instant)> = Vec::new();
    let mut last = None;
    while start.elapsed() < Duration::from_secs(7) {
        let o = api.get("down").await.expect("get");
        assert_eq!(stalled_reason(&o), None, "an unreachable source must not stall: {:#?}", o.status);
        assert_ne!(o.status.as_ref().and_then(|s| s.phase), Some(OsImagePhase::Failed));
        if let Some(n) = o.status.as_ref().and_then(|s| s.attempts)
            && seen.last().is_none_or(|(m, _)| *m != n)
        {
            seen.push((n, Instant::now()));
        }
        last = Some(o);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut o = last.expect("polled");
    // The window may end during an attempt (`Fetching`): wait for it to have failed.
    let settle = Instant::now() + Duration::from_secs(10);
    while condition(&o, ConditionType::Reconciling).is_some_and(|(_, reason, _)| reason != "RetryingFetch")
        && Instant::now() < settle
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        o = api.get("down").await.expect("get");
        if let Some(n) = o.status.as_ref().and_then(|s| s.attempts)
            && seen.last().is_none_or(|(m, _)| *m != n)
        {
            seen.push((n, Instant::now()));
        }
    }
    let counts: Vec<i32> = seen.iter().map(|(n, _)| *n).collect();
    // 0.3 + 0.6 + 1.2 + 1.2 … s: about 7 attempts in 7 s; a wake-up storm makes many more.
    assert!((4..=10).contains(counts.last().expect("attempts")), "attempts seen: {counts:?}");
    let gaps: Vec<f64> = seen.windows(2).map(|w| (w[1].1 - w[0].1).as_secs_f64()).collect();
    assert!(gaps.last().expect("gaps") >= &(2.0 * gaps[0]), "gaps between attempts do not grow: {gaps:?}");
    let (status, reason, msg) = condition(&o, ConditionType::Reconciling).expect("Reconciling");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "RetryingFetch"), "{msg}");
    assert!(
        msg.contains("next attempt at") && msg.contains(&format!("attempt {}", counts.last().expect("n"))),
        "{msg}"
    );
    assert!(o.status.as_ref().and_then(|s| s.next_attempt_time.as_ref()).is_some());
}

#[tokio::test]
async fn source_errors_fs() {
    source_errors(Backend::Fs).await;
}

#[tokio::test]
async fn source_errors_s3() {
    source_errors(Backend::S3).await;
}

async fn dropped_connection_resumes(backend: Backend) {
    let name = format!("img-resume-{backend:?}").to_lowercase();
    let t = support::kube_test(&name).await;
    let store = TestStore::new(backend, &name).await;
    let body = random_bytes(20 * 1024 * 1024 + 5, 3);
    let sha = Sha256Digest::of(&body).to_string();
    let cut = body.len() / 2;
    let src = SourceServer::start(vec![("/big.bin", body.clone(), Behavior::DropAfter { cut })]).await;
    let api: Api<OsImage> = Api::namespaced(t.client.clone(), &t.namespace);
    api.create(
        &PostParams::default(),
        &osimage("big", "onie", "2024.11", &src.url_of("/big.bin"), &sha, json!({})),
    )
    .await
    .expect("create");
    let _c = start_controller(&t, &store);
    let o = wait_for(&api, "big", "Ready", is_ready).await;
    assert_eq!(o.status.as_ref().and_then(|s| s.attempts), Some(1), "a resume is not a new attempt");
    assert_eq!(store.bytes(&path("onie", "2024.11", "big.bin")).await.as_deref(), Some(body.as_ref()));
    let ranges: Vec<_> = src.requests().into_iter().filter_map(|r| r.range).collect();
    assert_eq!(ranges.len(), 1, "exactly one resume");
    let start: usize =
        ranges[0].trim_start_matches("bytes=").trim_end_matches('-').parse().expect("range start");
    assert!(start > 0 && start <= cut, "resumed from byte {start} (cut at {cut})");
}

#[tokio::test]
async fn dropped_connection_resumes_fs() {
    dropped_connection_resumes(Backend::Fs).await;
}

#[tokio::test]
async fn dropped_connection_resumes_s3() {
    dropped_connection_resumes(Backend::S3).await;
}

async fn broken_manifest(backend: Backend) {
    let name = format!("img-badman-{backend:?}").to_lowercase();
    let t = support::kube_test(&name).await;
    let store = TestStore::new(backend, &name).await;
    let body = random_bytes(64 * 1024, 4);
    let sha = Sha256Digest::of(&body).to_string();
    let src = SourceServer::start(vec![("/a.bin", body, Behavior::Serve)]).await;
    let broken = b"{\n  \"images\": [\n    {\"platform\": \"nvos\",, }\n  ]\n}\n".to_vec();
    store.write_manifest_raw(&broken).await;

    let api: Api<OsImage> = Api::namespaced(t.client.clone(), &t.namespace);
    api.create(&PostParams::default(), &osimage("a", "nvos", "1", &src.url_of("/a.bin"), &sha, json!({})))
        .await
        .expect("create");
    let _c = start_controller(&t, &store);
    let o = wait_for(&api, "a", "Stalled", |o| stalled_reason(o).is_some()).await;
    assert_eq!(stalled_reason(&o).as_deref(), Some("ManifestInvalid"));
    let msg = o.status.as_ref().and_then(|s| s.message.clone()).unwrap_or_default();
    assert!(msg.contains("manifest.json") && msg.contains("not valid JSON at line 3"), "{msg}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(store.read_manifest_raw().await, Some(broken), "a broken manifest is left exactly as it was");
    assert!(src.requests().is_empty(), "nothing fetched while the manifest is broken");

    // Once a human fixes it, the image goes through.
    store.write_manifest_raw(b"{\"images\": []}").await;
    wait_for(&api, "a", "Ready", is_ready).await;
}

#[tokio::test]
async fn broken_manifest_fs() {
    broken_manifest(Backend::Fs).await;
}

#[tokio::test]
async fn broken_manifest_s3() {
    broken_manifest(Backend::S3).await;
}

async fn deletion_policies(backend: Backend) {
    let name = format!("img-delete-{backend:?}").to_lowercase();
    let t = support::kube_test(&name).await;
    let store = TestStore::new(backend, &name).await;
    let body = random_bytes(128 * 1024, 5);
    let sha = Sha256Digest::of(&body).to_string();
    let src = SourceServer::start(vec![("/img.bin", body, Behavior::Serve)]).await;
    let api: Api<OsImage> = Api::namespaced(t.client.clone(), &t.namespace);
    let url = src.url_of("/img.bin");
    api.create(
        &PostParams::default(),
        &osimage("del", "p", "1", &url, &sha, json!({"deletionPolicy": "Delete"})),
    )
    .await
    .expect("create");
    api.create(
        &PostParams::default(),
        &osimage("keep", "p", "2", &url, &sha, json!({"deletionPolicy": "Retain"})),
    )
    .await
    .expect("create");
    let _c = start_controller(&t, &store);
    wait_for(&api, "del", "Ready", is_ready).await;
    wait_for(&api, "keep", "Ready", is_ready).await;

    for n in ["del", "keep"] {
        api.delete(n, &DeleteParams::default()).await.expect("delete");
    }
    for n in ["del", "keep"] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while api.get_opt(n).await.expect("get").is_some() {
            assert!(Instant::now() < deadline, "{n} still present: the finalizer was not removed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let manifest = store.store.manifest().await.expect("manifest");
    assert!(manifest.get(&path("p", "1", "img.bin")).is_none(), "Delete removes the manifest entry");
    assert_eq!(
        store.store.stat(&path("p", "1", "img.bin")).await.expect("stat"),
        None,
        "Delete removes the file"
    );
    assert!(manifest.get(&path("p", "2", "img.bin")).is_some(), "Retain keeps the manifest entry");
    assert!(
        store.store.stat(&path("p", "2", "img.bin")).await.expect("stat").is_some(),
        "Retain keeps the file"
    );

    // Delete never removes a file whose hash differs from the OsImage's.
    let other = Bytes::from_static(b"an admin's upload");
    let other_sha = Sha256Digest::of(&other);
    let p3 = path("p", "3", "img.bin");
    let mut w = store.store.writer(&p3, other_sha).await.expect("writer");
    w.write(other.clone()).await.expect("write");
    let entry = ManifestEntry::new(&p3, other_sha, other.len() as u64, true, Some("upload".into()));
    w.commit_entry(None, entry, false).await.expect("commit");
    api.create(&PostParams::default(), &osimage("clash", "p", "3", &url, &sha, json!({})))
        .await
        .expect("create");
    let o = wait_for(&api, "clash", "Stalled", |o| stalled_reason(o).is_some()).await;
    let msg = o.status.as_ref().and_then(|s| s.message.clone()).unwrap_or_default();
    assert!(
        msg.contains(&format!("different file at p/3/img.bin (sha256 {other_sha}) (written by upload)")),
        "{msg}"
    );
    api.delete("clash", &DeleteParams::default()).await.expect("delete");
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.get_opt("clash").await.expect("get").is_some() {
        assert!(Instant::now() < deadline, "clash not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(store.bytes(&p3).await.as_deref(), Some(other.as_ref()), "someone else's file survives");
    assert!(store.store.manifest().await.expect("manifest").get(&p3).is_some());
}

#[tokio::test]
async fn deletion_policies_fs() {
    deletion_policies(Backend::Fs).await;
}

#[tokio::test]
async fn deletion_policies_s3() {
    deletion_policies(Backend::S3).await;
}

async fn conflicts(backend: Backend) {
    let name = format!("img-conflict-{backend:?}").to_lowercase();
    let t = support::kube_test(&name).await;
    let store = TestStore::new(backend, &name).await;
    let (a, b) = (random_bytes(4096, 6), random_bytes(4096, 7));
    let (sha_a, sha_b) = (Sha256Digest::of(&a).to_string(), Sha256Digest::of(&b).to_string());
    let src = SourceServer::start(vec![
        ("/a/x.bin", a, Behavior::Serve),
        ("/b/x.bin", b, Behavior::Serve),
        ("/b/y.bin", random_bytes(10, 8), Behavior::Serve),
    ])
    .await;
    let api: Api<OsImage> = Api::namespaced(t.client.clone(), &t.namespace);

    // Same path, different hashes: the newer one stalls and names the older.
    api.create(
        &PostParams::default(),
        &osimage("first", "sonic", "1", &src.url_of("/a/x.bin"), &sha_a, json!({})),
    )
    .await
    .expect("create");
    tokio::time::sleep(Duration::from_millis(1100)).await; // creationTimestamp has second resolution
    api.create(
        &PostParams::default(),
        &osimage("second", "sonic", "1", &src.url_of("/b/x.bin"), &sha_b, json!({})),
    )
    .await
    .expect("create");
    // Two firmware images in one directory.
    let y_sha = Sha256Digest::of(&random_bytes(10, 8)).to_string();
    api.create(
        &PostParams::default(),
        &osimage("third", "sonic", "1", &src.url_of("/b/y.bin"), &y_sha, json!({})),
    )
    .await
    .expect("create");
    let _c = start_controller(&t, &store);

    wait_for(&api, "first", "Ready", is_ready).await;
    let second = wait_for(&api, "second", "Stalled", |o| stalled_reason(o).is_some()).await;
    assert_eq!(stalled_reason(&second).as_deref(), Some("Conflict"));
    let msg = second.status.as_ref().and_then(|s| s.message.clone()).unwrap_or_default();
    assert!(
        msg.contains(&format!(
            "OsImage {}/first already claims sonic/1/x.bin with sha256 {sha_a}",
            t.namespace
        )),
        "{msg}"
    );

    let third = wait_for(&api, "third", "Stalled", |o| stalled_reason(o).is_some()).await;
    let msg = third.status.as_ref().and_then(|s| s.message.clone()).unwrap_or_default();
    assert!(
        msg.contains(&format!(
            "OsImage {}/first is already the firmware image of sonic/1/ (x.bin)",
            t.namespace
        )),
        "{msg}"
    );
    assert!(src.requests().iter().all(|r| r.path == "/a/x.bin"), "losers fetch nothing");

    // The manifest holds only the winner.
    let m = store.store.manifest().await.expect("manifest");
    assert_eq!(m.images.len(), 1);
    assert_eq!(m.images[0].sha256.to_string(), sha_a);
    assert!(store.bytes(&path("sonic", "1", "x.bin")).await.is_some());
}

#[tokio::test]
async fn conflicts_fs() {
    conflicts(Backend::Fs).await;
}

#[tokio::test]
async fn conflicts_s3() {
    conflicts(Backend::S3).await;
}

async fn concurrent_manifest_writers(backend: Backend) {
    let name = format!("img-cas-{backend:?}").to_lowercase();
    let store = TestStore::new(backend, &name).await;
    let _guard = support::kube_test(&name).await; // failure guard (prints logs)
    // 50 writers at once, each through its own backend instance as separate pods would be.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50u32 {
        let s = match backend {
            Backend::Fs => {
                Store::new(Arc::new(FsBackend::new(store.dir.as_ref().expect("dir").path()).expect("fs")))
            }
            Backend::S3 => {
                let endpoint = support::env().await.s3.endpoint.clone();
                Store::new(Arc::new(
                    S3Backend::new(&s3_settings(store.bucket.as_ref().expect("bucket"), &endpoint))
                        .await
                        .expect("s3"),
                ))
            }
        };
        tasks.spawn(async move {
            let p = ImagePath::new("load", &format!("{i}"), "f.bin").expect("path");
            let sha = Sha256Digest::of(format!("file {i}").as_bytes());
            s.update_manifest(|m| Ok(m.insert(ManifestEntry::new(&p, sha, 1, true, None), false)?)).await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("task").expect("manifest update");
    }
    let m = store.store.manifest().await.expect("manifest");
    assert_eq!(m.images.len(), 50, "no entry lost");
    let mut versions: Vec<u32> = m.images.iter().map(|e| e.version.parse().expect("version")).collect();
    versions.sort();
    assert_eq!(versions, (0..50).collect::<Vec<_>>());
}

#[tokio::test]
async fn concurrent_manifest_writers_fs() {
    concurrent_manifest_writers(Backend::Fs).await;
}

#[tokio::test]
async fn concurrent_manifest_writers_s3() {
    concurrent_manifest_writers(Backend::S3).await;
}

/// The real binary, killed with SIGKILL in the middle of a fetch and started again: no partial
/// file is ever visible under the final name, and the image ends Ready.
async fn sigkill_mid_fetch(backend: Backend) {
    let name = format!("img-kill-{backend:?}").to_lowercase();
    let t = support::kube_test(&name).await;
    let store = TestStore::new(backend, &name).await;
    let body = random_bytes(12 * 1024 * 1024, 9);
    let sha = Sha256Digest::of(&body).to_string();
    let src = SourceServer::start(vec![(
        "/slow.bin",
        body.clone(),
        Behavior::Slow { bytes_per_sec: 3 * 1024 * 1024 },
    )])
    .await;
    let api: Api<OsImage> = Api::namespaced(t.client.clone(), &t.namespace);
    api.create(
        &PostParams::default(),
        &osimage("slow", "nvos", "9", &src.url_of("/slow.bin"), &sha, json!({})),
    )
    .await
    .expect("create");

    let p = path("nvos", "9", "slow.bin");
    let watcher_store = store.store.clone();
    let full = body.len() as u64;
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let visibility = tokio::spawn(async move {
        let mut seen_partial = None;
        loop {
            if let Ok(Some(info)) = watcher_store.stat(&p).await
                && info.size != full
            {
                seen_partial = Some(info.size);
            }
            if stop_rx.try_recv().is_ok() {
                return seen_partial;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    let metrics = format!("127.0.0.1:{}", support::procs::free_port());
    let (ns, extra) = (&t.namespace, ["--fetch-max-attempts=3"]);
    let mut first =
        support::binaries::controller(ns, store.flags(), &metrics, &extra, &format!("{name}-1.log")).await;
    wait_for(&api, "slow", "fetching with progress", |o| {
        o.status.as_ref().and_then(|s| s.progress.as_ref()).is_some_and(|p| p.bytes_done > 1024 * 1024)
    })
    .await;
    // The controller's own listener tells the same story: ready, one fetch running, none done.
    let get = |path: &str| {
        let url = format!("http://{metrics}{path}");
        async move {
            let r = reqwest::get(&url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    assert_eq!(get("/healthz").await.0, 200);
    assert_eq!(get("/readyz").await.0, 200);
    let (code, text) = get("/metrics").await;
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("ztp_fetches_in_flight 1"), "{text}");
    assert!(!text.contains("ztp_fetch_attempts_total{result=\"stored\"}"), "{text}");
    first.child.kill().expect("SIGKILL");
    let _ = first.child.wait();
    assert_eq!(
        store.store.stat(&path("nvos", "9", "slow.bin")).await.expect("stat"),
        None,
        "nothing visible after the kill"
    );

    let mut second =
        support::binaries::controller(ns, store.flags(), &metrics, &extra, &format!("{name}-2.log")).await;
    let o = wait_for(&api, "slow", "Ready", is_ready).await;
    // The status is written before the reconcile returns: the counters follow within moments.
    let settled = |t: &str| {
        t.contains("ztp_fetch_attempts_total{result=\"stored\"} 1")
            && t.contains("ztp_fetches_in_flight 0")
            && t.contains("ztp_controller_reconciles_total{result=\"ok\"}")
    };
    let mut text = String::new();
    for _ in 0..50 {
        text = get("/metrics").await.1;
        if settled(&text) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(settled(&text), "{text}");
    second.child.kill().expect("stop");
    let _ = second.child.wait();
    stop_tx.send(()).expect("stop watcher");
    assert_eq!(visibility.await.expect("watcher"), None, "a partial file was visible under the final name");
    assert_eq!(o.status.and_then(|s| s.artifact).map(|a| a.size), Some(full as i64));
    assert_eq!(store.bytes(&path("nvos", "9", "slow.bin")).await.as_deref(), Some(body.as_ref()));
}

#[tokio::test]
async fn sigkill_mid_fetch_fs() {
    sigkill_mid_fetch(Backend::Fs).await;
}

#[tokio::test]
async fn sigkill_mid_fetch_s3() {
    sigkill_mid_fetch(Backend::S3).await;
}

/// Two controller replicas with leader election: one holds the Lease, the image is fetched once.
#[tokio::test]
async fn two_replicas_fetch_once() {
    let name = "img-leader";
    let t = support::kube_test(name).await;
    let store = TestStore::new(Backend::Fs, name).await;
    let body = random_bytes(2 * 1024 * 1024, 10);
    let sha = Sha256Digest::of(&body).to_string();
    let src =
        SourceServer::start(vec![("/x.bin", body, Behavior::Slow { bytes_per_sec: 4 * 1024 * 1024 })]).await;
    let api: Api<OsImage> = Api::namespaced(t.client.clone(), &t.namespace);
    api.create(&PostParams::default(), &osimage("x", "p", "1", &src.url_of("/x.bin"), &sha, json!({})))
        .await
        .expect("create");
    let env = support::env().await;
    let mut replicas = Vec::new();
    for i in 0..2 {
        let mut args = vec![
            "controller".to_owned(),
            format!("--namespace={}", t.namespace),
            "--metrics-listen=127.0.0.1:0".into(),
            format!("--lease-namespace={}", t.namespace),
            format!("--identity=replica-{i}"),
        ];
        args.extend(store.flags());
        replicas.push(support::procs::spawn(
            "ztp-operator",
            std::path::Path::new(env!("CARGO_BIN_EXE_ztp-operator")),
            &args,
            &[("KUBECONFIG", env.control_plane.kubeconfig.to_str().expect("utf-8"))],
            env.log_dir.join(format!("{name}-{i}.log")),
        ));
    }
    wait_for(&api, "x", "Ready", is_ready).await;
    for r in &mut replicas {
        r.assert_running();
    }
    let gets = src.requests().iter().filter(|r| r.path == "/x.bin").count();
    assert_eq!(gets, 1, "two replicas fetched the image {gets} times");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(t.client.clone(), &t.namespace);
    let lease = leases.get("ztp-operator-controller").await.expect("lease");
    let holder = lease.spec.and_then(|s| s.holder_identity).unwrap_or_default();
    assert!(holder.starts_with("replica-"), "holder {holder:?}");
    for r in &mut replicas {
        let _ = r.child.kill();
        let _ = r.child.wait();
    }
}

/// Names that are not safe path segments never reach the store or the network in standalone mode,
/// which reads plain YAML: the CRD's own rules refuse the file at load (the shared validator), and
/// the Rust-side checks behind them (`api::names`, unit-tested) never see such a name.
#[tokio::test]
async fn hostile_names_rejected_before_io() {
    let _guard = support::kube_test("img-hostile").await;
    let src = SourceServer::start(vec![("/x.bin", Bytes::from_static(b"x"), Behavior::Serve)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (manifests, data) = (dir.path().join("m"), dir.path().join("d"));
    std::fs::create_dir_all(&manifests).expect("mkdir");
    let sha = Sha256Digest::of(b"x").to_string();
    let mut yaml = String::new();
    for (n, platform, version, filename) in [
        ("up", "..", "1", "x.bin"),
        ("slash", "a", "1/../../etc", "x.bin"),
        ("dot", "a", "1", ".hidden"),
        ("nul", "a", "1", "x\u{0}.bin"),
        ("encoded", "a", "%2e%2e", "x.bin"),
    ] {
        yaml.push_str(&format!(
            "---\napiVersion: ztp.netops.dev/v1alpha1\nkind: OsImage\nmetadata: {{name: {n}}}\nspec:\n  platform: {platform:?}\n  version: {version:?}\n  filename: {filename:?}\n  firmwareImage: false\n  source: {{url: {{url: {:?}}}}}\n  sha256: {sha}\n",
            src.url_of("/x.bin")
        ));
    }
    std::fs::write(manifests.join("hostile.yaml"), yaml).expect("write");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ztp-operator"))
        .args(["standalone", "--manifests"])
        .arg(&manifests)
        .arg("--data")
        .arg(&data)
        .arg("--once")
        .output()
        .await
        .expect("run standalone");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(src.requests().is_empty(), "hostile names reached the network");
    let skipped = stdout.lines().find(|l| l.starts_with("skipping") && l.contains("hostile.yaml"));
    let skipped = skipped.unwrap_or_else(|| panic!("hostile.yaml was not refused: {stdout}"));
    assert!(skipped.contains("must be a safe path segment"), "{skipped}");
    assert!(!stdout.contains("osimage default/"), "a hostile image was reconciled: {stdout}");
    // Nothing but the store's own bookkeeping exists under the data directory.
    let names: Vec<String> = std::fs::read_dir(&data)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| n == ".status" || n == ".tmp"), "{names:?}");
}
