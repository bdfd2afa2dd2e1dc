//! A running fetch stops when its OsImage is deleted or its spec changes, on the real binary:
//! the source sees the connection closed before the end of the file, nothing partial stays in
//! the store, and the outcome shows in the metrics, the Events and the log (one line per
//! transition).

use std::time::{Duration, Instant};

use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use ztp_operator::{
    api::{ImagePath, OsImage},
    hash::Sha256Digest,
};

use crate::support::{
    self, KubeTest,
    controller::{is_ready, osimage, wait_for},
    procs::Proc,
    random_bytes,
    source::{Behavior, SourceServer},
    store::{Backend, TestStore},
};

/// 32 MiB at 2 MiB/s: 16 s for the whole file, far longer than a cancelled fetch takes.
const BIG: usize = 32 * 1024 * 1024;
const RATE: u64 = 2 * 1024 * 1024;

struct Binary {
    proc: Proc,
    metrics: String,
    log: std::path::PathBuf,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
    }
}

async fn start_binary(t: &KubeTest, store: &TestStore, log: &str) -> Binary {
    let metrics = format!("127.0.0.1:{}", support::procs::free_port());
    let proc = support::binaries::controller(&t.namespace, store.flags(), &metrics, &[], log).await;
    let log = support::env().await.log_dir.join(log);
    Binary { proc, metrics, log }
}

impl Binary {
    async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.metrics);
        let r = reqwest::get(&url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        r.text().await.unwrap_or_default()
    }

    /// Polls `/metrics` until `cond` holds (counters follow the status write within moments).
    async fn metrics_until(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.metrics().await;
            if cond(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "metrics never showed {what}:\n{text}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The log lines of `object` (lines are written out in batches: wait until every one of
    /// `wanted` is there).
    async fn log_lines(&self, object: &str, wanted: &[&str]) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<String> = text
                .lines()
                .filter(|l| l.contains(&format!("name=\"{object}\"")))
                .map(str::to_owned)
                .collect();
            if wanted.iter().all(|w| lines.iter().any(|l| l.contains(w))) {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "log lines of {object} lack one of {wanted:?}:\n{}",
                lines.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn count(lines: &[String], what: &str) -> usize {
    lines.iter().filter(|l| l.contains(what)).count()
}

/// Waits until more than 1 MiB arrived; checks the `Progress` column's text on the way.
async fn fetching(api: &Api<OsImage>, name: &str) {
    let o = wait_for(api, name, "fetching with progress", |o| {
        o.status.as_ref().and_then(|s| s.progress.as_ref()).is_some_and(|p| p.bytes_done > 1024 * 1024)
    })
    .await;
    let text = o.status.and_then(|s| s.progress_text).unwrap_or_default();
    assert!(text.contains(" / 32 MiB (") && text.ends_with("%)"), "{text}");
    let percent: u64 =
        text.rsplit('(').next().and_then(|p| p.trim_end_matches("%)").parse().ok()).expect(&text);
    assert!(percent < 100, "{text}");
}

#[tokio::test]
async fn deleting_an_osimage_cancels_its_fetch() {
    let name = "img-cancel-delete";
    let t = support::kube_test(name).await;
    let store = TestStore::new(Backend::Fs, name).await;
    let body = random_bytes(BIG, 21);
    let sha = Sha256Digest::of(&body).to_string();
    let src = SourceServer::start(vec![("/big.bin", body, Behavior::Slow { bytes_per_sec: RATE })]).await;
    let api: Api<OsImage> = Api::namespaced(t.client.clone(), &t.namespace);
    api.create(
        &PostParams::default(),
        &osimage("big", "nvos", "1", &src.url_of("/big.bin"), &sha, json!({})),
    )
    .await
    .expect("create");
    let controller = start_binary(&t, &store, &format!("{name}.log")).await;
    fetching(&api, "big").await;

    api.delete("big", &DeleteParams::default()).await.expect("delete");
    let asked = Instant::now();
    // Generous against a loaded machine, and still well short of the rest of the download
    // (about 15 s more): the old controller finished the download, then deleted.
    while api.get_opt("big").await.expect("get").is_some() {
        assert!(
            asked.elapsed() < Duration::from_secs(8),
            "the OsImage is still there: the fetch was not cancelled ({} of {BIG} bytes sent)",
            src.sent("/big.bin")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone_after = asked.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = src.sent("/big.bin");
    eprintln!("deleted mid-fetch: gone after {gone_after:?}, {sent} of {BIG} bytes sent");
    assert_eq!(src.unfinished("/big.bin"), 1, "the source saw its one transfer cut short");
    assert!(sent < BIG as u64, "the whole file was sent ({sent} bytes)");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(src.sent("/big.bin"), sent, "nothing more was sent after the deletion");
    assert_eq!(src.requests().len(), 1, "no new request");
    let p = ImagePath::new("nvos", "1", "big.bin").expect("path");
    assert_eq!(store.store.stat(&p).await.expect("stat"), None, "nothing stored");
    assert!(store.store.manifest().await.expect("manifest").get(&p).is_none());
    assert_eq!(store.leftovers().await, Vec::<String>::new(), "nothing partial left in .tmp");

    let text = controller
        .metrics_until("one cancelled attempt", |t| {
            t.contains("ztp_fetch_attempts_total{result=\"cancelled\"} 1")
        })
        .await;
    assert!(!text.contains("result=\"stored\""), "{text}");
    assert!(text.contains("ztp_fetches_in_flight 0"), "{text}");

    // One line per transition: started, cancelled, deleted; none per progress write.
    let lines = controller
        .log_lines("big", &["OsImage fetch started", "OsImage fetch cancelled", "OsImage deleted"])
        .await;
    assert_eq!(count(&lines, "OsImage fetch started"), 1, "{lines:#?}");
    assert_eq!(count(&lines, "OsImage fetch cancelled"), 1, "{lines:#?}");
    assert_eq!(count(&lines, "OsImage deleted"), 1, "{lines:#?}");
    let cancelled = lines.iter().find(|l| l.contains("OsImage fetch cancelled")).expect("line");
    for field in [&format!("namespace=\"{}\"", t.namespace), "generation=1", "being deleted"] {
        assert!(cancelled.contains(field), "{field} missing: {cancelled}");
    }
    assert!(lines.len() <= 6, "more lines than transitions: {lines:#?}");
}

#[tokio::test]
async fn a_spec_change_restarts_the_fetch_with_the_new_spec() {
    let name = "img-cancel-spec";
    let t = support::kube_test(name).await;
    let store = TestStore::new(Backend::Fs, name).await;
    let old = random_bytes(BIG, 22);
    let new = random_bytes(256 * 1024, 23);
    let (old_sha, new_sha) = (Sha256Digest::of(&old).to_string(), Sha256Digest::of(&new).to_string());
    let src = SourceServer::start(vec![
        ("/old.bin", old, Behavior::Slow { bytes_per_sec: RATE }),
        ("/new.bin", new.clone(), Behavior::Serve),
    ])
    .await;
    let api: Api<OsImage> = Api::namespaced(t.client.clone(), &t.namespace);
    api.create(
        &PostParams::default(),
        &osimage("img", "nvos", "1", &src.url_of("/old.bin"), &old_sha, json!({})),
    )
    .await
    .expect("create");
    let controller = start_binary(&t, &store, &format!("{name}.log")).await;
    fetching(&api, "img").await;

    let patch = json!({"spec": {"version": "2", "source": {"url": {"url": src.url_of("/new.bin")}}, "sha256": new_sha}});
    api.patch("img", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch");
    let o = wait_for(&api, "img", "Ready with the new spec", |o| {
        is_ready(o) && o.status.as_ref().and_then(|s| s.observed_generation) == Some(2)
    })
    .await;
    let status = o.status.as_ref().expect("status");
    assert_eq!(status.artifact.as_ref().map(|a| a.path.as_str()), Some("nvos/2/new.bin"));
    assert_eq!(status.progress_text.as_deref(), Some("256 KiB"), "the Progress column shows the size");
    let sent = src.sent("/old.bin");
    assert_eq!(src.unfinished("/old.bin"), 1, "the old transfer was cut short");
    assert!(sent < BIG as u64, "the whole old file was sent ({sent} bytes)");
    assert_eq!(
        src.requests().iter().filter(|r| r.path == "/old.bin").count(),
        1,
        "the old file was not asked again"
    );

    let new_path = ImagePath::new("nvos", "2", "new.bin").expect("path");
    let old_path = ImagePath::new("nvos", "1", "old.bin").expect("path");
    assert_eq!(store.bytes(&new_path).await.as_deref(), Some(new.as_ref()), "the new spec's file is stored");
    assert_eq!(store.store.stat(&old_path).await.expect("stat"), None, "the old file is not stored");
    assert_eq!(store.leftovers().await, Vec::<String>::new(), "nothing partial left in .tmp");

    controller
        .metrics_until("one cancelled and one stored attempt", |t| {
            t.contains("ztp_fetch_attempts_total{result=\"cancelled\"} 1")
                && t.contains("ztp_fetch_attempts_total{result=\"stored\"} 1")
        })
        .await;
    let lines =
        controller.log_lines("img", &["OsImage fetch cancelled", "OsImage stored and verified"]).await;
    assert_eq!(count(&lines, "OsImage fetch started"), 2, "{lines:#?}");
    let cancelled = lines.iter().find(|l| l.contains("OsImage fetch cancelled")).expect("line");
    assert!(
        cancelled.contains("generation=1") && cancelled.contains("spec changed (generation 2)"),
        "{cancelled}"
    );
    let stored = lines.iter().find(|l| l.contains("OsImage stored and verified")).expect("line");
    for field in ["generation=2", "bytes=262144", "seconds=", "bytes_per_second="] {
        assert!(stored.contains(field), "{field} missing: {stored}");
    }
}
