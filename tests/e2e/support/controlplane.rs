//! A real control plane for the tests: etcd + kube-apiserver on 127.0.0.1 with envtest's flags
//! (no kubelet, scheduler or controller-manager), a throwaway CA, a static admin token and a
//! service-account signing key, and the CRDs of this crate installed.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client, Config, ResourceExt,
    api::{Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::wait::{await_condition, conditions},
};

use super::{
    pki::{Pki, Token},
    procs, tools,
};

pub const ADMIN_TOKEN: &str = "ztp-e2e-admin-token";

pub struct ControlPlane {
    pub url: String,
    pub kubeconfig: PathBuf,
    pub ca_pem: String,
    pub kubernetes_version: String,
    pub etcd_version: String,
    _etcd: procs::Proc,
    _apiserver: procs::Proc,
}

impl ControlPlane {
    /// The process ids of its kube-apiserver and etcd (a benchmark reads their CPU from /proc).
    pub fn pids(&self) -> [u32; 2] {
        [self._apiserver.child.id(), self._etcd.child.id()]
    }
}

/// A control plane a test started for itself stops with it (the shared one lives in a static).
impl Drop for ControlPlane {
    fn drop(&mut self) {
        for p in [&mut self._apiserver, &mut self._etcd] {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// CA, serving certificate (IP SAN 127.0.0.1, DNS localhost), the service-account key and the
/// admin's static token.
fn make_pki(dir: &Path) -> Pki {
    let pki = Pki::new(dir, "ztp-e2e-ca");
    pki.apiserver(&["localhost", "kubernetes.default.svc"], &[Ipv4Addr::LOCALHOST]);
    pki.tokens(&[Token {
        token: ADMIN_TOKEN,
        user: "ztp-e2e-admin",
        uid: "ztp-e2e-admin",
        group: "system:masters",
    }]);
    pki
}

async fn wait_http_ok(what: &str, proc: &mut procs::Proc, mut probe: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        proc.assert_running();
        if probe().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not ready after 90 s; log:\n{}",
            procs::tail(&proc.log, 40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A plain-HTTP GET on 127.0.0.1 returning the status code (for health probes of etcd and MinIO).
pub async fn http_status(port: u16, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = vec![0u8; 64];
    let n = s.read(&mut buf).await.ok()?;
    let head = std::str::from_utf8(&buf[..n]).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

impl ControlPlane {
    pub async fn start(dir: &Path, logs: &Path) -> Self {
        let tools = tools::tools();
        let pki_dir = dir.join("pki");
        std::fs::create_dir_all(&pki_dir).expect("pki dir");
        let pki = make_pki(&pki_dir);

        let etcd_port = procs::free_port();
        let peer_port = procs::free_port();
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = procs::spawn(
            "etcd",
            &tools.etcd,
            &[
                "--name=e2e".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=e2e={peer_url}"),
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
            &[],
            logs.join("etcd.log"),
        );
        wait_http_ok("etcd", &mut etcd, async || http_status(etcd_port, "/health").await == Some(200)).await;

        let port = procs::free_port();
        let url = format!("https://127.0.0.1:{port}");
        let p = |name: &str| pki.path(name);
        let mut apiserver = procs::spawn(
            "kube-apiserver",
            &tools.kube_apiserver,
            &[
                format!("--etcd-servers={etcd_url}"),
                format!("--cert-dir={}", dir.join("apiserver-certs").display()),
                format!("--tls-cert-file={}", p("apiserver.crt")),
                format!("--tls-private-key-file={}", p("apiserver.key")),
                format!("--secure-port={port}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--allow-privileged=true".into(),
                "--disable-admission-plugins=ServiceAccount".into(),
                "--authorization-mode=RBAC".into(),
                format!("--token-auth-file={}", p("tokens.csv")),
                format!("--client-ca-file={}", p("ca.crt")),
                format!("--service-account-issuer={url}/"),
                format!("--service-account-key-file={}", p("sa.pub")),
                format!("--service-account-signing-key-file={}", p("sa.key")),
                "--v=1".into(),
            ],
            &[],
            logs.join("kube-apiserver.log"),
        );

        let kubeconfig = dir.join("kubeconfig");
        write(&kubeconfig, &kubeconfig_yaml(&url, &pki.ca_pem, ADMIN_TOKEN));
        let client = client_from(&kubeconfig).await;
        wait_http_ok("kube-apiserver", &mut apiserver, async || {
            let req = http::Request::get("/readyz").body(Vec::new()).expect("request");
            matches!(client.request_text(req).await.as_deref(), Ok("ok"))
        })
        .await;
        let version = client.apiserver_version().await.expect("apiserver /version");
        install_crds(&client).await;

        Self {
            url,
            kubeconfig,
            ca_pem: pki.ca_pem,
            kubernetes_version: version.git_version,
            etcd_version: tools::built_version(&tools.etcd),
            _etcd: etcd,
            _apiserver: apiserver,
        }
    }

    /// A new client for the admin user (clients are cheap; each test's runtime gets its own).
    pub async fn client(&self) -> Client {
        client_from(&self.kubeconfig).await
    }
}

/// A kubeconfig for `user` authenticating with a bearer token, trusting the throwaway CA.
pub fn kubeconfig_yaml(url: &str, ca_pem: &str, token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\n\
         users:\n- name: e2e\n  user:\n    token: {token}\ncontexts:\n- name: e2e\n  context:\n    cluster: e2e\n    user: e2e\n\
         current-context: e2e\n"
    )
}

pub async fn client_from(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("kubeconfig");
    Client::try_from(config).expect("client")
}

/// Server-side applies this crate's CRDs and waits until each is Established.
async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in ztp_operator::api::crds() {
        let name = crd.name_any();
        crds.patch(&name, &PatchParams::apply("ztp-e2e").force(), &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| panic!("apply CRD {name}: {e}"));
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not Established within 30 s"))
        .expect("watch CRD");
    }
}
