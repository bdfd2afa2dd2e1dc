//! Shared harness of the e2e tests: one real control plane (etcd + kube-apiserver) and one real S3
//! server (MinIO) per test binary, started on first use and shared by all tests. Each test gets
//! its own namespace and its own bucket. A test that needs neither (the standalone binary, the
//! server on a directory store) asks only for the run's directories ([`run`]) and a failure
//! guard ([`guard`]): it starts no server, so `cargo test --test e2e standalone` starts none.
//!
//! Logs of every server go to `target/e2e-logs/<run>/`. When a test fails its guard prints where
//! they are and their last lines, and the directory is kept; after an all-green run it is removed.
//!
//! The helpers the test modules share live here too: stores of either kind ([`store`]), the
//! in-process controller and OsImage helpers ([`controller`]), SwitchProfile helpers
//! ([`profiles`]), the standalone lab and each family's headers ([`lab`]), a server reporting
//! device activity as a narrow identity ([`reporting`]), the serving Deployment's readers
//! ([`deployment`]).

#![allow(dead_code)]

pub mod binaries;
pub mod controller;
pub mod controlplane;
pub mod deployment;
pub mod events;
pub mod forward;
pub mod image;
pub mod kstatus;
pub mod lab;
pub mod nautobot;
pub mod node;
pub mod pki;
pub mod procs;
pub mod profiles;
pub mod reporting;
pub mod s3server;
pub mod sonic_engine;
pub mod source;
pub mod store;
pub mod tools;

use std::{
    path::PathBuf,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

use bytes::Bytes;

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tokio::sync::OnceCell;

pub use controlplane::ControlPlane;
pub use s3server::S3Server;

pub struct Env {
    pub run_dir: PathBuf,
    pub log_dir: PathBuf,
    pub control_plane: ControlPlane,
    pub s3: S3Server,
}

/// The directories of this test binary's run: scratch space (removed at exit) and the logs
/// (kept when a test failed).
pub struct Run {
    pub run_dir: PathBuf,
    pub log_dir: PathBuf,
}

static ENV: OnceCell<Env> = OnceCell::const_new();
static FAILED: AtomicBool = AtomicBool::new(false);
static RUN: std::sync::OnceLock<Run> = std::sync::OnceLock::new();

extern "C" fn cleanup_at_exit() {
    if let Some(run) = RUN.get() {
        let _ = std::fs::remove_dir_all(&run.run_dir);
        if !FAILED.load(Ordering::SeqCst) {
            let _ = std::fs::remove_dir_all(&run.log_dir);
        }
    }
}

/// The run's directories, created on first use; no server is started.
pub fn run() -> &'static Run {
    RUN.get_or_init(|| {
        let stamp = format!("{}-{}", std::process::id(), unique());
        let run_dir = std::env::temp_dir().join(format!("ztp-e2e-{stamp}"));
        let log_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/e2e-logs").join(&stamp);
        std::fs::create_dir_all(&run_dir).expect("run dir");
        std::fs::create_dir_all(&log_dir).expect("log dir");
        // SAFETY: registering a plain extern "C" fn with no captured state.
        unsafe { libc::atexit(cleanup_at_exit) };
        Run { run_dir, log_dir }
    })
}

/// The shared environment, started on first use.
pub async fn env() -> &'static Env {
    ENV.get_or_init(|| async {
        let Run { run_dir, log_dir } = run();
        let (run_dir, log_dir) = (run_dir.clone(), log_dir.clone());
        let (control_plane, s3) =
            tokio::join!(ControlPlane::start(&run_dir, &log_dir), S3Server::start(&run_dir, &log_dir));
        eprintln!(
            "e2e: kube-apiserver {} (etcd {}), S3 server {}; logs in {}",
            control_plane.kubernetes_version,
            control_plane.etcd_version,
            s3.version,
            log_dir.display()
        );
        Env { run_dir, log_dir, control_plane, s3 }
    })
    .await
}

/// A process-unique number (time-based, so names differ across runs too).
pub fn unique() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (u64::from(nanos) << 16) ^ COUNTER.fetch_add(1, Ordering::SeqCst)
}

/// Marks the run failed and points at the logs when the test owning it panics.
pub struct FailureGuard {
    test: String,
}

impl Drop for FailureGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            FAILED.store(true, Ordering::SeqCst);
            if let Some(Run { log_dir, .. }) = RUN.get() {
                eprintln!("test {} failed; logs kept in {}", self.test, log_dir.display());
                let servers = if ENV.initialized() {
                    ["kube-apiserver.log", "etcd.log", "minio.log"].as_slice()
                } else {
                    &[]
                };
                for log in servers {
                    eprintln!("--- last lines of {log}:\n{}", procs::tail(&log_dir.join(log), 15));
                }
            }
        }
    }
}

/// The failure guard of a test that needs no server (it keeps the run's logs when the test fails).
pub fn guard(test: &str) -> FailureGuard {
    run();
    FailureGuard { test: test.to_owned() }
}

/// `n` reproducible, incompressible bytes (xorshift, no extra crate).
pub fn random_bytes(n: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    Bytes::from(out)
}

/// What a Kubernetes test works with: a client and a namespace of its own.
pub struct KubeTest {
    pub client: Client,
    pub namespace: String,
    pub guard: FailureGuard,
}

/// What an S3 test works with: a client and a fresh bucket.
pub struct S3Test {
    pub client: aws_sdk_s3::Client,
    pub bucket: String,
    pub endpoint: String,
    pub guard: FailureGuard,
}

/// A client and a fresh namespace named after the test.
pub async fn kube_test(test: &str) -> KubeTest {
    let env = env().await;
    let client = env.control_plane.client().await;
    let namespace = format!("{}-{:x}", test.replace('_', "-"), unique() & 0xffffff);
    let ns = Namespace {
        metadata: ObjectMeta { name: Some(namespace.clone()), ..Default::default() },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    KubeTest { client, namespace, guard: FailureGuard { test: test.to_owned() } }
}

/// An S3 client and a fresh bucket named after the test.
pub async fn s3_test(test: &str) -> S3Test {
    let env = env().await;
    let client = env.s3.client();
    let bucket = format!("{}-{:x}", test.replace('_', "-"), unique() & 0xffffff);
    client.create_bucket().bucket(&bucket).send().await.expect("create bucket");
    S3Test {
        client,
        bucket,
        endpoint: env.s3.endpoint.clone(),
        guard: FailureGuard { test: test.to_owned() },
    }
}
