//! The operator's own binary, started as the e2e tests run it: one place for its arguments and
//! environment.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use reqwest::{Client, StatusCode};

use super::{
    env,
    procs::{self, Proc},
    s3server::{ACCESS_KEY, SECRET_KEY},
};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ztp-operator"))
}

/// `ztp-operator controller` for `namespace`, without leader election, storing through
/// `store_flags`, serving `/metrics` on `metrics`, retrying and reporting progress every 0.2 s,
/// plus `extra` flags; as [`with_cluster`] runs it.
pub async fn controller(
    namespace: &str,
    store_flags: Vec<String>,
    metrics: &str,
    extra: &[&str],
    log: &str,
) -> Proc {
    let mut args = vec![
        "controller".to_owned(),
        format!("--namespace={namespace}"),
        "--leader-elect=false".into(),
        format!("--metrics-listen={metrics}"),
        "--fetch-backoff-seconds=0.2".into(),
        "--progress-interval-seconds=0.2".into(),
    ];
    args.extend(store_flags);
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    with_cluster(&args, log).await
}

/// `ztp-operator args…` against the test control plane (its kubeconfig), with the S3
/// credentials in its environment; its log (at info) goes to `log` in the run's log directory.
pub async fn with_cluster(args: &[String], log: &str) -> Proc {
    with_cluster_as(binary(), args, "info", log).await
}

/// [`with_cluster`] with another build of the binary (a benchmark runs the release one) and
/// another `RUST_LOG`.
pub async fn with_cluster_as(program: &Path, args: &[String], rust_log: &str, log: &str) -> Proc {
    let env = env().await;
    procs::spawn(
        "ztp-operator",
        program,
        args,
        &[
            ("KUBECONFIG", env.control_plane.kubeconfig.to_str().expect("utf-8 path")),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("RUST_LOG", rust_log),
        ],
        env.log_dir.join(log),
    )
}

/// `ztp-operator standalone` over the folder `manifests`, storing in `data`, reading the folder
/// again every 0.2 s, plus `extra` flags (listen address, external URL); its output goes to `log`.
pub fn standalone(manifests: &Path, data: &Path, extra: &[String], log: PathBuf) -> Proc {
    let mut args = vec![
        "standalone".to_owned(),
        format!("--manifests={}", manifests.display()),
        format!("--data={}", data.display()),
        "--poll-seconds=0.2".into(),
    ];
    args.extend_from_slice(extra);
    procs::spawn("ztp-operator", binary(), &args, &[], log)
}

/// `ztp-operator serve` on `store_flags`, ready (a snapshot loaded) when this returns. Starts no
/// other server: the S3 credentials are in its environment in case `store_flags` name MinIO.
pub async fn serve(test: &str, store_flags: &[String], extra: &[&str]) -> (Proc, String) {
    let log_dir = &super::run().log_dir;
    let port = procs::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut args =
        vec!["serve".to_owned(), format!("--listen=127.0.0.1:{port}"), format!("--external-url={base}")];
    args.extend(store_flags.iter().cloned());
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut proc = procs::spawn(
        "ztp-operator",
        binary(),
        &args,
        &[("AWS_ACCESS_KEY_ID", ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY), ("RUST_LOG", "info")],
        log_dir.join(format!("{test}.log")),
    );
    let c = Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        proc.assert_running();
        let r = c.get(format!("{base}/readyz")).send().await;
        if r.is_ok_and(|r| r.status() == StatusCode::OK) {
            return (proc, base);
        }
        assert!(Instant::now() < deadline, "serve not ready:\n{}", procs::tail(&proc.log, 30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
