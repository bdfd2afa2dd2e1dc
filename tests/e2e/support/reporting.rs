//! A `ztp-operator serve` that reports device activity (`--report-status`) or writes Switches
//! (`--switches`), and the narrow identity it runs as: a ServiceAccount allowed only what the server needs, with a token from the
//! TokenRequest API.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::ServiceAccount,
    rbac::v1::{Role, RoleBinding},
};
use kube::api::{Api, PostParams};
use serde_json::json;

use super::{KubeTest, controlplane::kubeconfig_yaml, procs, store::TestStore};

/// A running `ztp-operator serve` and its base URL.
pub struct Server {
    pub proc: procs::Proc,
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
    }
}

/// Starts the real binary serving from `store`, reporting activity every second with the
/// credentials in `kubeconfig`; returns once it has loaded a snapshot with `profiles` profiles.
pub async fn serve(store: &TestStore, kubeconfig: &Path, log: &str, profiles: usize) -> Server {
    serve_with(store, kubeconfig, log, profiles, &["--report-status"]).await
}

/// [`serve`] with `flags` (what it reports, and how) instead of `--report-status`; writes
/// every second.
pub async fn serve_with(
    store: &TestStore,
    kubeconfig: &Path,
    log: &str,
    profiles: usize,
    flags: &[&str],
) -> Server {
    let env = super::env().await;
    let port = procs::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut args = vec!["serve".to_owned()];
    args.extend(store.flags());
    args.extend([
        format!("--listen=127.0.0.1:{port}"),
        format!("--external-url={base}"),
        "--activity-flush-seconds=1".into(),
    ]);
    args.extend(flags.iter().map(|f| f.to_string()));
    // A benchmark runs the release build instead (`bench/switches.sh`).
    let program = std::env::var_os("ZTP_SERVER_BIN").map(PathBuf::from);
    let program = program.unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ztp-operator")));
    let proc = procs::spawn(
        "ztp-operator",
        &program,
        &args,
        &[("KUBECONFIG", kubeconfig.to_str().expect("utf-8 path")), ("RUST_LOG", "info")],
        env.log_dir.join(log),
    );
    let mut server = Server { proc, base };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        server.proc.assert_running();
        let metrics = match client.get(format!("{}/metrics", server.base)).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if metrics.contains(&format!("ztp_snapshot_profiles {profiles}\n")) {
            return server;
        }
        assert!(Instant::now() < deadline, "server not ready:\n{}", procs::tail(&server.proc.log, 30));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A ServiceAccount allowed only what `serve --report-status` needs in the test's namespace, and
/// a kubeconfig with a token for it from the TokenRequest API.
pub async fn narrow_identity(t: &KubeTest, dir: &Path) -> PathBuf {
    let rules = json!([
        {"apiGroups": ["ztp.netops.dev"], "resources": ["switchprofiles/status"], "verbs": ["patch"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    ]);
    identity_with(t, dir, rules).await
}

/// A ServiceAccount allowed only `rules` (a Role's) in the test's namespace, and a kubeconfig
/// with a token for it from the TokenRequest API.
pub async fn identity_with(t: &KubeTest, dir: &Path, rules: serde_json::Value) -> PathBuf {
    let name = "ztp-server";
    let pp = PostParams::default();
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}})).expect("sa");
    let sas: Api<ServiceAccount> = Api::namespaced(t.client.clone(), &t.namespace);
    sas.create(&pp, &sa).await.expect("create ServiceAccount");
    let role: Role =
        serde_json::from_value(json!({"metadata": {"name": name}, "rules": rules})).expect("role");
    Api::<Role>::namespaced(t.client.clone(), &t.namespace).create(&pp, &role).await.expect("create Role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": t.namespace}],
    }))
    .expect("binding");
    Api::<RoleBinding>::namespaced(t.client.clone(), &t.namespace)
        .create(&pp, &binding)
        .await
        .expect("create RoleBinding");
    let request = TokenRequest {
        spec: Some(TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() }),
        ..Default::default()
    };
    let token = sas.create_token_request(name, &pp, &request).await.expect("TokenRequest");
    let token = token.status.and_then(|s| s.token).expect("a token");
    let env = super::env().await;
    let path = dir.join("server.kubeconfig");
    std::fs::write(&path, kubeconfig_yaml(&env.control_plane.url, &env.control_plane.ca_pem, &token))
        .expect("write kubeconfig");
    path
}
