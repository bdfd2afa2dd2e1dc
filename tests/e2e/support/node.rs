//! A real one-node Kubernetes for the tests that need pods: etcd, kube-apiserver (Node,RBAC,
//! ServiceAccount admission), kube-controller-manager, kube-scheduler, containerd v2, kubelet and
//! kube-proxy, all in a network namespace of their own, as recorded when the project first ran its chart on a node.
//!
//! Layout of one node (`<id>` = `ztp-node-<pid>-<n>`; nothing global that two runs could share):
//! - network namespace `<id>`: the node's address on its `lo`, the CNI bridge, kube-proxy's
//!   iptables rules, every daemon (started with `nsenter --net`, not `ip netns exec`, so the kubelet's
//!   mounts are visible to containerd and runc);
//! - state in `$TMPDIR/<id>/` (etcd, certificates, containerd root/state/socket, runc root, pod
//!   network namespaces, kubelet root, pod logs, CNI config and IPAM), logs in
//!   `target/e2e-logs/<id>/`, the kubelet's cgroup root `/<id>` in every cgroup hierarchy;
//! - host side: one veth and one /32 route, numbered by a slot held with `flock` on
//!   `/run/ztp-e2e-node/slot-<k>.lock` for the node's lifetime, so concurrent runs pick different
//!   addresses (`10.77.<k>.1` for the node, `10.79.<k>.0/30` for the veth).
//!
//! Teardown ([`Node::teardown`], also on drop, at exit for the shared node, and for the leftovers of
//! a killed run whose pid is gone) kills every process in the node's network namespaces, deletes
//! the runc containers, unmounts everything under the state directory, deletes the namespaces and
//! the cgroup directories, and removes the state directory.
//!
//! Needs root and the binaries `scripts/build-test-tools` builds; fails loudly without them.

use std::{
    collections::BTreeSet,
    fs::File,
    net::Ipv4Addr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Node as KubeNode;
use kube::{Api, Client};
use tokio::sync::OnceCell;

use super::{
    controlplane,
    pki::{Pki, Token},
    procs::{self, must, output as run},
    tools,
};

/// The node's name in the API.
pub const NODE_NAME: &str = "ztp-node";
/// The pause image the sandbox uses (containerd's default tag, so nothing is ever pulled).
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10.2";
const POD_CIDR: &str = "10.244.0.0/24";
const SERVICE_CIDR: &str = "10.0.0.0/24";
const ADMIN_TOKEN: &str = "ztp-node-admin-token";
const CGROUP_FS: &str = "/sys/fs/cgroup";
const SLOT_DIR: &str = "/run/ztp-e2e-node";

/// The binaries the node runs: the tools directory of `scripts/build-test-tools` plus Debian's.
struct NodeTools {
    dir: PathBuf,
}

impl NodeTools {
    fn get() -> Self {
        let dir = tools::tools().etcd.parent().expect("tools directory").to_path_buf();
        let t = Self { dir };
        for b in [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubelet",
            "kube-proxy",
            "containerd",
            "containerd-shim-runc-v2",
            "ctr",
            "pause",
        ] {
            let p = t.bin(b);
            assert!(
                p.exists(),
                "the real node needs {} (built by scripts/build-test-tools); it is missing",
                p.display()
            );
        }
        for p in ["/usr/sbin/runc", "/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/loopback"]
        {
            assert!(
                Path::new(p).exists(),
                "the real node needs {p} (Debian packages runc, containernetworking-plugins; \
                 scripts/build-test-tools installs them)"
            );
        }
        for cmd in ["ip", "nsenter", "iptables", "kubectl", "curl"] {
            assert!(which(cmd).is_some(), "the real node needs `{cmd}` on PATH");
        }
        t
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(cmd)).find(|p| p.exists())
}

/// Everything a node owns outside its own processes, named from the node id alone so that the
/// leftovers of a run killed before its teardown can be found and removed by the next one.
#[derive(Clone, Debug)]
struct Names {
    id: String,
    dir: PathBuf,
}

impl Names {
    fn new(id: String) -> Self {
        let dir = std::env::temp_dir().join(&id);
        Self { id, dir }
    }
    fn netns(&self) -> String {
        self.id.clone()
    }
    fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.id)
    }
    fn switch_prefix(&self) -> String {
        format!("{}-sw", self.id)
    }
    fn runc_root(&self) -> PathBuf {
        self.dir.join("runc-root")
    }
    fn pod_logs(&self) -> PathBuf {
        self.dir.join("pod-logs")
    }
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(CGROUP_FS) else { return Vec::new() };
        let mut v: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path().join(&self.id))
            .filter(|p| p.parent().is_some_and(|d| d.is_dir()))
            .collect();
        v.sort();
        v
    }
}

/// Per-node host resources that must be released: the slot lock.
struct Slot {
    index: u8,
    _lock: File,
}

fn take_slot() -> Slot {
    std::fs::create_dir_all(SLOT_DIR).unwrap_or_else(|e| panic!("create {SLOT_DIR}: {e}"));
    let start = (std::process::id() % 250) as u8;
    for i in 0..250u16 {
        let index = ((u16::from(start) + i) % 250 + 1) as u8;
        let path = Path::new(SLOT_DIR).join(format!("slot-{index}.lock"));
        let file = File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor we own; released when the file is closed or we die.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Slot { index, _lock: file };
        }
    }
    panic!("all 250 real-node slots in {SLOT_DIR} are taken by running test processes");
}

/// A running node. The shared one is [`node`]; a test that wants its own (to tear it down and
/// check what is left) uses [`Node::start`].
pub struct Node {
    pub id: String,
    pub dir: PathBuf,
    pub log_dir: PathBuf,
    /// The node's address (apiserver `https://<ip>:6443`, kubelet, NodePorts), routed from the host.
    pub ip: Ipv4Addr,
    pub url: String,
    /// Kubeconfig of the admin identity (`system:masters`).
    pub kubeconfig: PathBuf,
    pub ca_pem: String,
    /// From the first daemon started to the Node Ready with a fresh heartbeat.
    pub start_to_ready: Duration,
    pub kubernetes_version: String,
    names: Names,
    tools: NodeTools,
    procs: Mutex<Vec<procs::Proc>>,
    switches: AtomicU32,
    slot: Mutex<Option<Slot>>,
    torn_down: AtomicBool,
}

static NODE: OnceCell<Node> = OnceCell::const_new();
static NODE_START_FAILED: AtomicBool = AtomicBool::new(false);
static FAILED: AtomicBool = AtomicBool::new(false);
static SEQ: AtomicU32 = AtomicU32::new(0);
/// Every node of this process not yet torn down, for the exit handler.
static LIVE: Mutex<Vec<Names>> = Mutex::new(Vec::new());

extern "C" fn teardown_at_exit() {
    // The shared node through its own teardown, which also reaps its daemons (no zombies).
    if let Some(node) = NODE.get() {
        let left = node.teardown();
        if !left.is_empty() {
            eprintln!("e2e node {}: left after teardown: {left:?}", node.id);
        }
    }
    let names: Vec<Names> = LIVE.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
    for n in names {
        let left = teardown(&n);
        if !left.is_empty() {
            eprintln!("e2e node {}: left after teardown: {left:?}", n.id);
        }
    }
    if let Some(node) = NODE.get()
        && !FAILED.load(Ordering::SeqCst)
    {
        let _ = std::fs::remove_dir_all(&node.log_dir);
    }
}

/// The node shared by the tests of this binary, started on first use, torn down at exit.
pub async fn node() -> &'static Node {
    assert!(
        !NODE_START_FAILED.load(Ordering::SeqCst),
        "the shared real node failed to start earlier in this run (see the first failure)"
    );
    NODE.get_or_init(|| async {
        NODE_START_FAILED.store(true, Ordering::SeqCst);
        let node = Node::start().await;
        NODE_START_FAILED.store(false, Ordering::SeqCst);
        node
    })
    .await
}

/// A test on the real node: the node, an admin client and a failure guard that keeps the node's
/// logs and prints their last lines when the test panics.
pub struct NodeTest {
    pub node: &'static Node,
    pub client: Client,
    pub guard: NodeFailureGuard,
}

pub async fn node_test(test: &str) -> NodeTest {
    let node = node().await;
    NodeTest { node, client: node.client().await, guard: node.failure_guard(test) }
}

pub struct NodeFailureGuard {
    test: String,
    log_dir: PathBuf,
    /// The pods' container logs (under the node's directory, removed with it): copied beside the
    /// node's logs when the test fails.
    pod_logs: PathBuf,
}

impl Drop for NodeFailureGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            FAILED.store(true, Ordering::SeqCst);
            eprintln!("test {} failed; node logs kept in {}", self.test, self.log_dir.display());
            let copied = Command::new("cp").arg("-a").arg(&self.pod_logs).arg(&self.log_dir).status();
            if !copied.as_ref().is_ok_and(|s| s.success()) {
                eprintln!("the pods' logs in {} could not be kept: {copied:?}", self.pod_logs.display());
            }
            for log in ["kubelet.log", "containerd.log", "kube-apiserver.log", "kube-controller-manager.log"]
            {
                eprintln!("--- last lines of {log}:\n{}", procs::tail(&self.log_dir.join(log), 12));
            }
        }
    }
}

fn ip(args: &[&str]) -> String {
    must(Command::new("ip").args(args))
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// CA, apiserver serving certificate, apiserver→kubelet client certificate, service-account keys
/// and the static token file of the node's identities.
fn make_pki(dir: &Path, node_ip: Ipv4Addr) -> Pki {
    let pki = Pki::new(dir, "ztp-node-ca");
    pki.apiserver(
        &[
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
        &[Ipv4Addr::LOCALHOST, Ipv4Addr::new(10, 0, 0, 1), node_ip],
    );
    pki.client("kubelet-client", "kube-apiserver-kubelet-client", "system:masters");
    let kubelet_user = format!("system:node:{NODE_NAME}");
    let token = |token, user, uid, group| Token { token, user, uid, group };
    pki.tokens(&[
        token(ADMIN_TOKEN, "ztp-node-admin", "admin", "system:masters"),
        token("kubelet-token", &kubelet_user, "kubelet", "system:nodes"),
        token("kcm-token", "system:kube-controller-manager", "kcm", ""),
        token("sched-token", "system:kube-scheduler", "sched", ""),
        token("proxy-token", "system:kube-proxy", "proxy", ""),
    ]);
    pki
}

/// A control-plane component's flags: its kubeconfig for the apiserver and for delegated
/// authentication and authorization, then `rest`.
fn with_kubeconfig(kubeconfig: &str, rest: impl IntoIterator<Item = String>) -> Vec<String> {
    ["--kubeconfig", "--authentication-kubeconfig", "--authorization-kubeconfig"]
        .map(|flag| format!("{flag}={kubeconfig}"))
        .into_iter()
        .chain(rest)
        .collect()
}

impl Node {
    /// Starts a node of its own (torn down when dropped). Most tests want the shared [`node`].
    pub async fn start() -> Self {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "the real-node tests need root (network namespaces, mounts, cgroups, iptables, runc)"
        );
        static AT_EXIT: std::sync::Once = std::sync::Once::new();
        // SAFETY: registering a plain extern "C" fn with no captured state.
        AT_EXIT.call_once(|| unsafe {
            libc::atexit(teardown_at_exit);
        });
        sweep_dead_runs();
        let tools = NodeTools::get();
        let id = format!("ztp-node-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst));
        let names = Names::new(id.clone());
        // A failed earlier start of this very id (same pid and sequence cannot recur, but be sure).
        teardown(&names);
        LIVE.lock().expect("live nodes").push(names.clone());
        let slot = take_slot();
        let k = slot.index;
        let node_ip = Ipv4Addr::new(10, 77, k, 1);
        let log_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/e2e-logs").join(&id);
        let dir = names.dir.clone();
        for d in ["pki", "conf", "cni/net.d", "cni/ipam", "run", "kubelet", "pod-logs", "runc-root"] {
            std::fs::create_dir_all(dir.join(d)).expect("node dirs");
        }
        std::fs::create_dir_all(&log_dir).expect("node log dir");
        let began = Instant::now();

        // Network: the node namespace, its address on lo, a veth to the host.
        let ns = names.netns();
        let host_if = format!("ztpnode{k}");
        let _ = run(Command::new("ip").args(["link", "delete", &host_if])); // a killed run's, same slot
        ip(&["netns", "add", &ns]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&["-n", &ns, "addr", "add", &format!("{node_ip}/32"), "dev", "lo"]);
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", "host0", "netns", &ns]);
        ip(&["addr", "add", &format!("10.79.{k}.1/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&["-n", &ns, "addr", "add", &format!("10.79.{k}.2/30"), "dev", "host0"]);
        ip(&["-n", &ns, "link", "set", "host0", "up"]);
        ip(&["route", "add", &format!("{node_ip}/32"), "via", &format!("10.79.{k}.2")]);
        must(Command::new("nsenter").arg(format!("--net={}", names.netns_path().display())).args([
            "--",
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]));
        for c in names.cgroup_dirs() {
            std::fs::create_dir_all(&c).unwrap_or_else(|e| panic!("create cgroup {}: {e}", c.display()));
        }

        let pki_dir = dir.join("pki");
        let pki = make_pki(&pki_dir, node_ip);
        let url = format!("https://{node_ip}:6443");
        let p = |name: &str| pki.path(name);
        for (file, token) in [
            ("admin", ADMIN_TOKEN),
            ("kubelet", "kubelet-token"),
            ("kcm", "kcm-token"),
            ("sched", "sched-token"),
            ("proxy", "proxy-token"),
        ] {
            write(
                &pki_dir.join(format!("{file}.kubeconfig")),
                &controlplane::kubeconfig_yaml(&url, &pki.ca_pem, token),
            );
        }
        let kubeconfig = pki_dir.join("admin.kubeconfig");

        let node = Node {
            id: id.clone(),
            dir: dir.clone(),
            log_dir: log_dir.clone(),
            ip: node_ip,
            url: url.clone(),
            kubeconfig: kubeconfig.clone(),
            ca_pem: pki.ca_pem.clone(),
            start_to_ready: Duration::ZERO,
            kubernetes_version: String::new(),
            names: names.clone(),
            tools,
            procs: Mutex::new(Vec::new()),
            switches: AtomicU32::new(0),
            slot: Mutex::new(Some(slot)),
            torn_down: AtomicBool::new(false),
        };
        // From here on a panic drops `node`, which tears everything down.
        let mut node = node;

        node.spawn(
            "etcd",
            "etcd",
            vec![
                "--name=node".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
                "--listen-client-urls=http://127.0.0.1:2379".into(),
                "--advertise-client-urls=http://127.0.0.1:2379".into(),
                "--listen-peer-urls=http://127.0.0.1:2380".into(),
                "--initial-advertise-peer-urls=http://127.0.0.1:2380".into(),
                "--initial-cluster=node=http://127.0.0.1:2380".into(),
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
            &[],
        );
        node.spawn(
            "kube-apiserver",
            "kube-apiserver",
            vec![
                "--etcd-servers=http://127.0.0.1:2379".into(),
                format!("--cert-dir={}", dir.join("apiserver-certs").display()),
                format!("--tls-cert-file={}", p("apiserver.crt")),
                format!("--tls-private-key-file={}", p("apiserver.key")),
                "--secure-port=6443".into(),
                "--bind-address=0.0.0.0".into(),
                format!("--advertise-address={node_ip}"),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--allow-privileged=true".into(),
                "--authorization-mode=Node,RBAC".into(),
                "--enable-admission-plugins=NodeRestriction".into(),
                format!("--token-auth-file={}", p("tokens.csv")),
                format!("--client-ca-file={}", p("ca.crt")),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                format!("--service-account-key-file={}", p("sa.pub")),
                format!("--service-account-signing-key-file={}", p("sa.key")),
                format!("--kubelet-client-certificate={}", p("kubelet-client.crt")),
                format!("--kubelet-client-key={}", p("kubelet-client.key")),
                "--kubelet-preferred-address-types=InternalIP".into(),
                "--v=1".into(),
            ],
            &[],
        );

        // containerd, configured before the kubelet needs it; images imported before any pod.
        write(&dir.join("conf/containerd.toml"), &containerd_config(&dir));
        write(&dir.join("cni/net.d/10-ztp-bridge.conflist"), &cni_config(&dir));
        let path = format!("{}:{}", node.tools.dir.display(), std::env::var("PATH").unwrap_or_default());
        node.spawn(
            "containerd",
            "containerd",
            vec![format!("--config={}", dir.join("conf/containerd.toml").display())],
            &[("PATH", &path)],
        );

        let client = controlplane::client_from(&kubeconfig).await;
        node.wait("kube-apiserver", Duration::from_secs(120), async || {
            let req = http::Request::get("/readyz").body(Vec::new()).expect("request");
            matches!(client.request_text(req).await.as_deref(), Ok("ok"))
        })
        .await;
        node.kubernetes_version = client.apiserver_version().await.expect("apiserver /version").git_version;

        node.spawn(
            "kube-controller-manager",
            "kube-controller-manager",
            with_kubeconfig(
                &p("kcm.kubeconfig"),
                [
                    "--use-service-account-credentials=true".into(),
                    format!("--service-account-private-key-file={}", p("sa.key")),
                    format!("--root-ca-file={}", p("ca.crt")),
                    "--leader-elect=false".into(),
                    "--bind-address=127.0.0.1".into(),
                ],
            ),
            &[],
        );
        node.spawn(
            "kube-scheduler",
            "kube-scheduler",
            with_kubeconfig(
                &p("sched.kubeconfig"),
                ["--leader-elect=false".into(), "--bind-address=127.0.0.1".into()],
            ),
            &[],
        );

        let sock = dir.join("run/containerd.sock");
        node.wait("containerd", Duration::from_secs(60), async || node.ctr(&["version"]).status.success())
            .await;
        let pause = build_pause_image(&node.tools, &dir);
        node.import_image(&pause);

        write(&dir.join("conf/kubelet.yaml"), &kubelet_config(&dir, &sock, node_ip, &pki_dir, &names.id));
        node.spawn(
            "kubelet",
            "kubelet",
            vec![
                format!("--config={}", dir.join("conf/kubelet.yaml").display()),
                format!("--kubeconfig={}", p("kubelet.kubeconfig")),
                format!("--root-dir={}", dir.join("kubelet").display()),
                format!("--cert-dir={}", dir.join("kubelet/pki").display()),
                format!("--hostname-override={NODE_NAME}"),
                format!("--node-ip={node_ip}"),
            ],
            &[],
        );
        write(&dir.join("conf/kube-proxy.yaml"), &kube_proxy_config(&pki_dir, node_ip));
        node.spawn(
            "kube-proxy",
            "kube-proxy",
            vec![format!("--config={}", dir.join("conf/kube-proxy.yaml").display())],
            &[],
        );

        // Ready with a heartbeat from this run, and the kubelet still alive (a kubelet that exits
        // at once leaves no Ready status behind only because etcd is fresh per run).
        let nodes: Api<KubeNode> = Api::all(client.clone());
        let since = k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(1);
        node.wait("node Ready", Duration::from_secs(120), async || {
            let Ok(Some(n)) = nodes.get_opt(NODE_NAME).await else { return false };
            n.status.and_then(|s| s.conditions).unwrap_or_default().iter().any(|c| {
                c.type_ == "Ready"
                    && c.status == "True"
                    && c.last_heartbeat_time.as_ref().is_some_and(|t| t.0 >= since)
            })
        })
        .await;
        node.start_to_ready = began.elapsed();
        eprintln!(
            "e2e: real node {} ({}, {node_ip}) Ready in {:.1} s; state in {}, logs in {}",
            node.id,
            node.kubernetes_version,
            node.start_to_ready.as_secs_f64(),
            dir.display(),
            log_dir.display()
        );
        node
    }

    fn spawn(&mut self, name: &'static str, bin: &str, args: Vec<String>, envs: &[(&str, &str)]) {
        let mut full = vec![format!("--net={}", self.names.netns_path().display()), "--".into()];
        full.push(self.tools.bin(bin).display().to_string());
        full.extend(args);
        let proc = procs::spawn(
            name,
            Path::new("/usr/bin/nsenter"),
            &full,
            envs,
            self.log_dir.join(format!("{name}.log")),
        );
        self.procs.lock().expect("procs").push(proc);
    }

    /// Panics with the tail of its log if a daemon of the node has exited.
    pub fn assert_running(&self) {
        for p in self.procs.lock().expect("procs").iter_mut() {
            p.assert_running();
        }
    }

    async fn wait(&self, what: &str, limit: Duration, mut probe: impl AsyncFnMut() -> bool) {
        self.wait_for(what, limit, async || probe().await.then_some(())).await
    }

    /// Polls `probe` until it gives a value, checking that the node's processes still run;
    /// panics after `limit` with the pods, the Events and the kubelet's last lines.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        limit: Duration,
        mut probe: impl AsyncFnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            self.assert_running();
            if let Some(v) = probe().await {
                return v;
            }
            if Instant::now() >= deadline {
                let cluster = |what: &[&str]| {
                    procs::printed(&self.kubectl(&[&["--request-timeout=5s", "get"], what].concat()))
                };
                panic!(
                    "{what} not reached within {} s; logs in {}\npods:\n{}\nevents:\n{}\nkubelet log:\n{}",
                    limit.as_secs(),
                    self.log_dir.display(),
                    cluster(&["pods", "-A", "-o", "wide"]),
                    cluster(&["events", "-A"]),
                    procs::tail(&self.log_dir.join("kubelet.log"), 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A new client for the admin identity.
    pub async fn client(&self) -> Client {
        controlplane::client_from(&self.kubeconfig).await
    }

    pub fn failure_guard(&self, test: &str) -> NodeFailureGuard {
        NodeFailureGuard {
            test: test.to_owned(),
            log_dir: self.log_dir.clone(),
            pod_logs: self.names.pod_logs(),
        }
    }

    /// A command run inside the node's network namespace (`nsenter --net`, same mounts as the host).
    pub fn in_netns(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.names.netns_path().display())).arg("--").arg(program);
        cmd
    }

    /// `kubectl --kubeconfig <admin> ARGS` in the node's namespace.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        run(self.in_netns("kubectl").arg(format!("--kubeconfig={}", self.kubeconfig.display())).args(args))
    }

    /// `helm --kubeconfig <admin> ARGS` in the node's namespace (helm's caches under the node's dir).
    pub fn helm(&self, args: &[&str]) -> Output {
        let home = self.dir.join("helm");
        run(self
            .in_netns(&tools::tools().helm)
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data")))
    }

    /// `ctr` against the node's containerd, namespace `k8s.io` (the one the kubelet uses).
    pub fn ctr(&self, args: &[&str]) -> Output {
        run(Command::new(self.tools.bin("ctr"))
            .arg(format!("--address={}", self.dir.join("run/containerd.sock").display()))
            .args(["--namespace", "k8s.io"])
            .args(args))
    }

    /// Imports an OCI archive (`scripts/oci-image`'s output) so pods can use it with
    /// `imagePullPolicy: Never`; the archive must carry its full name (`localhost/x:tag`).
    pub fn import_image(&self, archive: &Path) {
        let archive = archive.display().to_string();
        procs::succeeded(&format!("ctr images import {archive}"), self.ctr(&["images", "import", &archive]));
    }

    /// A new switch: a network namespace with a veth into the node's namespace and a default
    /// route through it, so `ip netns exec <name> curl http://<ClusterIP>/…` reaches Services.
    /// Deleted when dropped (and with the node).
    pub fn switch_netns(&self) -> Switch {
        let n = self.switches.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(n < 250, "at most 249 switches per node");
        let name = format!("{}{n}", self.names.switch_prefix());
        let ns = self.names.netns();
        let up = format!("sw{n}-up");
        ip(&["netns", "add", &name]);
        ip(&["link", "add", &up, "netns", &ns, "type", "veth", "peer", "name", "eth0", "netns", &name]);
        ip(&["-n", &ns, "addr", "add", &format!("10.78.{n}.1/24"), "dev", &up]);
        ip(&["-n", &ns, "link", "set", &up, "up"]);
        let addr = Ipv4Addr::new(10, 78, n as u8, 2);
        ip(&["-n", &name, "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        ip(&["-n", &name, "link", "set", "eth0", "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        ip(&["-n", &name, "route", "add", "default", "via", &format!("10.78.{n}.1")]);
        Switch { name, addr }
    }

    /// Stops everything and removes every trace; returns what could not be removed (empty when
    /// clean). Idempotent.
    pub fn teardown(&self) -> Vec<String> {
        if self.torn_down.swap(true, Ordering::SeqCst) {
            return leftovers(&self.names);
        }
        let left = teardown(&self.names);
        // The daemons are our children: reap them (killed above with the rest of the namespace).
        for p in self.procs.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default() {
            let mut child = p.child;
            let _ = child.kill();
            let _ = child.wait();
        }
        LIVE.lock().map(|mut v| v.retain(|n| n.id != self.id)).ok();
        if let Ok(mut s) = self.slot.lock() {
            s.take();
        }
        left
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            FAILED.store(true, Ordering::SeqCst);
            eprintln!("real node {}: logs kept in {}", self.id, self.log_dir.display());
        }
        let left = self.teardown();
        if !left.is_empty() {
            eprintln!("real node {}: left after teardown: {left:?}", self.id);
        } else if !FAILED.load(Ordering::SeqCst) {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        }
    }
}

/// A simulated switch: its own network namespace, routed through the node.
pub struct Switch {
    pub name: String,
    pub addr: Ipv4Addr,
}

impl Switch {
    /// A command run in the switch's namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// `curl -sS --max-time 10 ARGS…` from the switch.
    pub fn curl(&self, args: &[&str]) -> Output {
        run(self.command("curl").args(["-sS", "--max-time", "10"]).args(args))
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        kill_netns_processes(&Path::new("/run/netns").join(&self.name));
        let _ = run(Command::new("ip").args(["netns", "delete", &self.name]));
    }
}

fn containerd_config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 3
root = "{d}/containerd/root"
state = "{d}/containerd/state"
[grpc]
  address = "{d}/run/containerd.sock"
[plugins.'io.containerd.internal.v1.opt']
  path = "{d}/containerd/opt"
[plugins.'io.containerd.nri.v1.nri']
  disable = true
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '{PAUSE_IMAGE}'
[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '/usr/sbin/runc'
        SystemdCgroup = false
        Root = '{d}/runc-root'
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['/usr/lib/cni']
    conf_dir = '{d}/cni/net.d'
"#
    )
}

fn cni_config(dir: &Path) -> String {
    format!(
        r#"{{"cniVersion": "0.4.0", "name": "ztp-pods", "plugins": [
  {{"type": "bridge", "bridge": "ztpbr0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "{POD_CIDR}"}}]], "routes": [{{"dst": "0.0.0.0/0"}}],
            "dataDir": "{}/cni/ipam"}}}},
  {{"type": "portmap", "capabilities": {{"portMappings": true}}}},
  {{"type": "loopback"}}]}}
"#,
        dir.display()
    )
}

fn kubelet_config(dir: &Path, sock: &Path, node_ip: Ipv4Addr, pki: &Path, cgroup_root: &str) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /{cgroup_root}
podLogsDir: {logs}
containerRuntimeEndpoint: unix://{sock}
address: {node_ip}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication: {{anonymous: {{enabled: false}}, webhook: {{enabled: true}}, x509: {{clientCAFile: {ca}}}}}
authorization: {{mode: Webhook}}
clusterDomain: cluster.local
failSwapOn: false
registerNode: true
serializeImagePulls: false
evictionHard: {{"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
resolvConf: /etc/resolv.conf
"#,
        logs = dir.join("pod-logs").display(),
        sock = sock.display(),
        ca = pki.join("ca.crt").display(),
    )
}

fn kube_proxy_config(pki: &Path, node_ip: Ipv4Addr) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {{kubeconfig: {kc}}}
mode: iptables
clusterCIDR: {POD_CIDR}
hostnameOverride: {NODE_NAME}
bindAddress: {node_ip}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {{maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s, udpTimeout: 0s, udpStreamTimeout: 0s}}
"#,
        kc = pki.join("proxy.kubeconfig").display()
    )
}

/// Writes an OCI image archive with `scripts/oci-image` (one layer per directory).
pub fn oci_image(reference: &str, out: &Path, options: &[&str], dirs: &[&Path]) -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/oci-image");
    let tools = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/image-tools");
    must(Command::new("bash").arg(&tools));
    must(
        Command::new("bash")
            .arg(&script)
            .args(["--ref", reference, "--out"])
            .arg(out)
            .args(options)
            .args(dirs),
    );
    out.to_path_buf()
}

/// The sandbox image: the `pause` binary `scripts/build-test-tools` compiled, as `PAUSE_IMAGE`.
fn build_pause_image(tools: &NodeTools, dir: &Path) -> PathBuf {
    let root = dir.join("images/pause-root");
    std::fs::create_dir_all(&root).expect("pause root");
    std::fs::copy(tools.bin("pause"), root.join("pause")).expect("copy pause");
    oci_image(
        PAUSE_IMAGE,
        &dir.join("images/pause.tar"),
        &["--entrypoint", "/pause", "--user", "65535:65535"],
        &[&root],
    )
}

/// The network namespaces a node id owns: its own and its switches'.
fn owned_netns(names: &Names) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/run/netns") else { return Vec::new() };
    let sw = names.switch_prefix();
    let mut v: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| *n == names.id || n.strip_prefix(&sw).is_some_and(|r| r.parse::<u32>().is_ok()))
        .collect();
    v.sort();
    v
}

/// Mount points at or under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut v: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect();
    v.sort();
    v.dedup();
    v.reverse();
    v
}

/// Pids whose network namespace is the one bound at `ns_path`.
fn netns_pids(ns_path: &Path) -> Vec<i32> {
    let Ok(target) = std::fs::metadata(ns_path) else { return Vec::new() };
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| m.ino() == target.ino() && m.dev() == target.dev())
        })
        .collect()
}

fn kill_netns_processes(ns_path: &Path) {
    for _ in 0..50 {
        let pids = netns_pids(ns_path);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            // SAFETY: sending a signal has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Directories the kubelet and containerd create outside their configured ones, removed at
/// teardown when empty: shim sockets, device-plugin socket, container log symlinks.
const GLOBAL_DIRS: [&str; 5] = [
    "/run/containerd/s",
    "/run/containerd",
    "/var/lib/kubelet/device-plugins",
    "/var/lib/kubelet",
    "/var/log/containers",
];

/// Filesystem paths of the unix sockets bound in the network namespace at `ns_path` (read from
/// `/proc/<pid>/net/unix` of a process in it, which lists that namespace's sockets).
fn bound_sockets(ns_path: &Path) -> BTreeSet<PathBuf> {
    let Some(pid) = netns_pids(ns_path).into_iter().next() else { return BTreeSet::new() };
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(7))
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}

/// Tears down whatever the node `names` left (processes, containers, mounts, namespaces, cgroups, files, in that order); returns what is left.
fn teardown(names: &Names) -> Vec<String> {
    // 1. every process in the node's and its switches' namespaces: the daemons, the shims,
    //    host-network containers.
    //    First note the sockets they bound outside the state directory (hard-coded global paths:
    //    the shims' `/run/containerd/s/<hash>`, the kubelet's device-plugin socket): a killed
    //    process leaves its socket file behind.
    let mut global_sockets = BTreeSet::new();
    for ns in owned_netns(names) {
        let ns = Path::new("/run/netns").join(ns);
        global_sockets.extend(bound_sockets(&ns).into_iter().filter(|p| !p.starts_with(&names.dir)));
        kill_netns_processes(&ns);
    }
    for s in &global_sockets {
        let _ = std::fs::remove_file(s);
    }
    // 2. the containers (pod network namespaces): runc kills and deletes them and their cgroups.
    let root = names.runc_root().join("k8s.io");
    if root.is_dir() {
        let out = Command::new("runc").arg("--root").arg(&root).args(["list", "-q"]).output();
        if let Ok(out) = out {
            for id in String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()) {
                let _ = Command::new("runc").arg("--root").arg(&root).args(["delete", "-f", id]).output();
            }
        }
    }
    // Anything still in a pod network namespace under the state directory.
    for m in mounts_under(&names.dir) {
        if std::fs::read_link(&m).is_err() && m.components().any(|c| c.as_os_str() == "netns") {
            kill_netns_processes(&m);
        }
    }
    // 3. mounts (kubelet's bind mounts and tmpfs, overlay rootfs, shm, pod netns), deepest first.
    //    Several passes: a path can be mounted over more than once (the kubelet's root dir).
    for _ in 0..5 {
        let mounts = mounts_under(&names.dir);
        if mounts.is_empty() {
            break;
        }
        for m in mounts {
            let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) else { continue };
            // SAFETY: umount2 on a NUL-terminated path we own.
            if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
                // SAFETY: as above.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
    // 4. the namespaces (the host veth and the switches' veths go with them).
    for ns in owned_netns(names) {
        let _ = Command::new("ip").args(["netns", "delete", &ns]).output();
    }
    // 5. cgroups, leaves first (retried: killed tasks leave their cgroup a moment later).
    for _ in 0..30 {
        let mut busy = false;
        for c in names.cgroup_dirs().into_iter().filter(|c| c.exists()) {
            busy |= !rmdir_tree(&c);
        }
        if !busy {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // 6. the kubelet's symlinks in the global /var/log/containers that point into our pod logs.
    if let Ok(entries) = std::fs::read_dir("/var/log/containers") {
        for e in entries.flatten() {
            if std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with(names.pod_logs())) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    // 7. the global directories the sockets and links were in, when nothing else uses them
    //    (rmdir only removes empty ones).
    for d in GLOBAL_DIRS {
        let _ = std::fs::remove_dir(d);
    }
    // 8. the state directory, only once nothing is mounted under it.
    if names.dir.exists() && mounts_under(&names.dir).is_empty() {
        let _ = std::fs::remove_dir_all(&names.dir);
    }
    leftovers(names)
}

/// Removes a cgroup directory tree, deepest first; false when some directory is still busy.
fn rmdir_tree(dir: &Path) -> bool {
    let mut ok = true;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                ok &= rmdir_tree(&e.path());
            }
        }
    }
    ok && std::fs::remove_dir(dir).is_ok()
}

/// What of the node `names` still exists: network namespaces, mounts, cgroup directories,
/// processes, the state directory.
fn leftovers(names: &Names) -> Vec<String> {
    let mut left: Vec<String> = owned_netns(names).into_iter().map(|n| format!("netns {n}")).collect();
    left.extend(mounts_under(&names.dir).into_iter().map(|m| format!("mount {}", m.display())));
    left.extend(
        names.cgroup_dirs().into_iter().filter(|c| c.exists()).map(|c| format!("cgroup {}", c.display())),
    );
    left.extend(processes_mentioning(&names.dir).into_iter().map(|p| format!("process {p}")));
    if names.dir.exists() {
        left.push(format!("directory {}", names.dir.display()));
    }
    left
}

/// Processes whose command line mentions `dir` (every daemon and shim of a node does).
fn processes_mentioning(dir: &Path) -> BTreeSet<String> {
    let needle = dir.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else { return BTreeSet::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(&needle).then(|| format!("{pid} {}", cmd.trim()))
        })
        .collect()
}

/// Tears down the nodes of runs that died without their teardown (their pid is gone).
fn sweep_dead_runs() {
    let mut ids = BTreeSet::new();
    let mut collect = |name: &str| {
        let Some(rest) = name.strip_prefix("ztp-node-") else { return };
        let mut parts = rest.splitn(3, '-');
        let (Some(pid), Some(seq)) = (parts.next(), parts.next()) else { return };
        let seq = seq.trim_end_matches(|c: char| !c.is_ascii_digit());
        let (Ok(pid), Ok(seq)) = (pid.parse::<u32>(), seq.parse::<u32>()) else { return };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            ids.insert(format!("ztp-node-{pid}-{seq}"));
        }
    };
    for d in ["/run/netns", &std::env::temp_dir().display().to_string()] {
        if let Ok(entries) = std::fs::read_dir(d) {
            for e in entries.flatten() {
                collect(&e.file_name().to_string_lossy());
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(Path::new(CGROUP_FS).join("memory")) {
        for e in entries.flatten() {
            collect(&e.file_name().to_string_lossy());
        }
    }
    for id in ids {
        let left = teardown(&Names::new(id.clone()));
        eprintln!(
            "e2e: removed the leftovers of dead run {id}{}",
            if left.is_empty() { String::new() } else { format!(" (still left: {left:?})") }
        );
    }
}
