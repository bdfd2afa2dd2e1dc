//! The product as a user runs it, on a real node of its own: the image `scripts/build-image` makes
//! from this build's binaries, a hostPath PersistentVolume owned by 65532, image sources served by
//! a pod, `helm upgrade --install charts/ztp-operator --wait` (2 leader-elected controllers), the
//! serving Deployment the controller applies, the lab's OsImages and SwitchProfiles applied
//! server-side, and a switch in its own network namespace answered through the serving Service's
//! ClusterIP on port 80. Then what only a node shows: a rollout restart of the servers while a switch
//! downloads, the leader controller's pod deleted mid-fetch, a `helm upgrade` rolling the servers,
//! and `helm uninstall` keeping the claim.
//!
//! There is no cluster DNS on the node, so `externalURL` (the base of the URLs inside ZTP JSON and
//! scripts) is the node's address and a fixed NodePort of the same Service: a value that works
//! without DNS, as a lab without DNS would set it.

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use serde_json::Value;
use ztp_operator::{
    hash::Sha256Digest,
    profile::publish,
    store::{MANIFEST_NAME, Manifest},
};

use crate::support::{
    image::{IMAGE_REF, product_image},
    kstatus::{self, Health, Status},
    node::{Node, Switch, oci_image},
    procs,
};

const NS: &str = "ztp-system";
const LAB_NS: &str = "lab";
const RELEASE: &str = "ztp";
/// The chart's names for release `ztp` (`ztp.fullname`, `ztp.serverName`, `ztp.claimName`).
const FULL: &str = "ztp-ztp-operator";
const SERVER: &str = "ztp-ztp-operator-server";
const CLAIM: &str = "ztp-ztp-operator-store";
const SOURCES_IMAGE: &str = "localhost/ztp-e2e-sources:busybox";
const NODE_PORT: u16 = 30080;
const TOKEN_SECRET: &str = "ztp-admin-tokens";
const BIG_SERIAL: &str = "LAB-BIG-0001";
/// Size of the image a switch downloads during a rollout restart, and of the one fetched slowly.
const BIG_BYTES: usize = 48 << 20;
const SLOW_CHUNKS: usize = 160; // 64 KiB each: 10 MiB, one chunk every 50 ms

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `kubectl ARGS`, which must succeed; its stdout.
fn kubectl(node: &Node, args: &[&str]) -> String {
    procs::succeeded(&format!("kubectl {}", args.join(" ")), node.kubectl(args))
}

fn kubectl_json(node: &Node, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&kubectl(node, &all)).expect("kubectl -o json")
}

fn helm(node: &Node, args: &[&str]) -> String {
    procs::succeeded(&format!("helm {}", args.join(" ")), node.helm(args))
}

fn condition_true(object: &Value, kind: &str) -> bool {
    object["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == kind && c["status"] == "True"))
}

/// Bytes that do not compress and are the same on every run.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// The image sources: a busybox httpd pod (as 65532, read-only root) serving a hostPath directory:
/// the lab's two images, a large one, and `cgi-bin/slow` that streams `slow.bin` in 64 KiB chunks
/// 50 ms apart (a fetch that lasts long enough to delete the fetching pod in the middle).
struct Sources {
    cluster_ip: String,
    big: Vec<u8>,
    slow: Vec<u8>,
}

async fn serve_sources(node: &Node) -> Sources {
    let root = node.dir.join("sources");
    let cgi = root.join("www/cgi-bin");
    std::fs::create_dir_all(&cgi).expect("sources dir");
    for f in ["lab-nos-installer.bin", "lab-onie-updater"] {
        std::fs::copy(repo().join("examples/lab/images").join(f), root.join("www").join(f))
            .expect("lab image");
    }
    let big = pseudo_random(BIG_BYTES, 0x05ee_db16);
    std::fs::write(root.join("www/big.bin"), &big).expect("big image");
    let slow = pseudo_random(SLOW_CHUNKS << 16, 0x5eed_510e);
    std::fs::write(root.join("slow.bin"), &slow).expect("slow image");
    std::fs::write(
        cgi.join("slow"),
        format!(
            "#!/bin/busybox sh\nprintf 'Content-Type: application/octet-stream\\r\\n\\r\\n'\ni=0\n\
             while [ $i -lt {SLOW_CHUNKS} ]; do\n  /bin/busybox dd if=/data/slow.bin bs=65536 skip=$i count=1 2>/dev/null\n  \
             /bin/busybox usleep 50000\n  i=$((i+1))\ndone\n"
        ),
    )
    .expect("cgi");
    std::fs::set_permissions(cgi.join("slow"), std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let image_root = node.dir.join("images/sources-root");
    std::fs::create_dir_all(image_root.join("bin")).expect("image dir");
    std::fs::copy("/bin/busybox", image_root.join("bin/busybox")).expect("busybox (Debian's busybox-static)");
    let image = oci_image(
        SOURCES_IMAGE,
        &node.dir.join("images/sources.tar"),
        &[
            "--user",
            "65532:65532",
            "--entrypoint",
            "/bin/busybox",
            "--cmd",
            "httpd",
            "--cmd",
            "-f",
            "--cmd",
            "-p",
            "--cmd",
            "8080",
            "--cmd",
            "-h",
            "--cmd",
            "/data/www",
        ],
        &[&image_root],
    );
    node.import_image(&image);
    let manifest = format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: sources}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: sources, namespace: sources}}
spec:
  selector: {{matchLabels: {{app: sources}}}}
  template:
    metadata: {{labels: {{app: sources}}}}
    spec:
      automountServiceAccountToken: false
      securityContext: {{runAsNonRoot: true, seccompProfile: {{type: RuntimeDefault}}}}
      containers:
        - name: httpd
          image: {SOURCES_IMAGE}
          imagePullPolicy: Never
          ports: [{{containerPort: 8080}}]
          readinessProbe: {{httpGet: {{path: /lab-onie-updater, port: 8080}}, periodSeconds: 1}}
          securityContext: {{allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {{drop: [ALL]}}}}
          volumeMounts: [{{name: data, mountPath: /data, readOnly: true}}]
      volumes: [{{name: data, hostPath: {{path: {root}, type: Directory}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: sources, namespace: sources}}
spec:
  selector: {{app: sources}}
  ports: [{{port: 80, targetPort: 8080}}]
"#,
        root = root.display()
    );
    let file = node.dir.join("sources.yaml");
    std::fs::write(&file, manifest).expect("sources manifest");
    kubectl(node, &["apply", "--server-side", "-f", &file.display().to_string()]);
    let cluster_ip =
        kubectl(node, &["-n", "sources", "get", "svc", "sources", "-o", "jsonpath={.spec.clusterIP}"]);
    Sources { cluster_ip, big, slow }
}

/// The store's PersistentVolume: a hostPath directory owned by 65532 (what a storage provisioner
/// would hand out), no class, so the chart's claim (no class either) binds to it.
fn store_volume(node: &Node) -> PathBuf {
    let dir = node.dir.join("pv/ztp-store");
    std::fs::create_dir_all(&dir).expect("pv dir");
    std::os::unix::fs::chown(&dir, Some(65532), Some(65532)).expect("chown pv dir");
    let manifest = format!(
        r#"apiVersion: v1
kind: PersistentVolume
metadata: {{name: ztp-store}}
spec:
  capacity: {{storage: 20Gi}}
  accessModes: [ReadWriteMany, ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  hostPath: {{path: {}, type: Directory}}
"#,
        dir.display()
    );
    let file = node.dir.join("pv.yaml");
    std::fs::write(&file, manifest).expect("pv manifest");
    kubectl(node, &["apply", "--server-side", "-f", &file.display().to_string()]);
    dir
}

/// The lab's manifests with their `file://` sources rewritten to the sources pod, plus a large
/// image and a profile that installs it (serial [`BIG_SERIAL`]).
fn lab_manifests(node: &Node, sources: &Sources) -> Vec<PathBuf> {
    let dir = node.dir.join("lab");
    std::fs::create_dir_all(&dir).expect("lab dir");
    let images = std::fs::read_to_string(repo().join("examples/lab/osimages.yaml"))
        .expect("lab osimages")
        .replace("file://./images/", &format!("http://{}/", sources.cluster_ip));
    assert!(!images.contains("url: file://"), "every lab source rewritten");
    let big = format!(
        r#"apiVersion: ztp.netops.dev/v1alpha1
kind: OsImage
metadata: {{name: lab-big}}
spec:
  platform: lab-big
  version: "1"
  source: {{url: {{url: "http://{ip}/big.bin"}}}}
  sha256: {sha}
---
apiVersion: ztp.netops.dev/v1alpha1
kind: SwitchProfile
metadata: {{name: lab-big}}
spec:
  match: {{serialNumbers: ["{BIG_SERIAL}"]}}
  onie: {{installImage: {{name: lab-big}}}}
"#,
        ip = sources.cluster_ip,
        sha = Sha256Digest::of(&sources.big)
    );
    let files = [("osimages.yaml", images), ("big.yaml", big)];
    let mut paths: Vec<PathBuf> = files
        .into_iter()
        .map(|(name, body)| {
            let p = dir.join(name);
            std::fs::write(&p, body).expect("lab manifest");
            p
        })
        .collect();
    paths.push(repo().join("examples/lab/switchprofiles.yaml"));
    paths
}

fn onie_headers(serial: &str) -> Vec<String> {
    [
        "User-Agent: onie/1.0".to_owned(),
        format!("ONIE-SERIAL-NUMBER: {serial}"),
        "ONIE-ETH-ADDR: 0c:42:a1:00:00:01".into(),
        "ONIE-MACHINE: lab_switch".into(),
        "ONIE-MACHINE-REV: 0".into(),
        "ONIE-ARCH: x86_64".into(),
        "ONIE-VENDOR-ID: 0".into(),
        "ONIE-SECURITY-KEY;".into(),
        "ONIE-OPERATION: os-install".into(),
        "ONIE-VERSION: 2024.11".into(),
    ]
    .to_vec()
}

/// `curl` from the switch with headers; (HTTP status, body).
fn get(switch: &Switch, url: &str, headers: &[String]) -> (u16, Vec<u8>) {
    let mut args: Vec<String> = vec!["-w".into(), "\n%{http_code}".into(), url.into()];
    for h in headers {
        args.extend(["-H".into(), h.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = switch.curl(&args);
    if !out.status.success() {
        return (0, out.stderr);
    }
    let body = out.stdout;
    let cut = body.iter().rposition(|&b| b == b'\n').expect("status line");
    let code = String::from_utf8_lossy(&body[cut + 1..]).trim().parse().unwrap_or(0);
    (code, body[..cut].to_vec())
}

fn urls_in(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) if s.starts_with("http://") => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| urls_in(x, out)),
        Value::Object(o) => o.values().for_each(|x| urls_in(x, out)),
        _ => {}
    }
}

fn pod_names(node: &Node, selector: &str) -> Vec<String> {
    let pods = kubectl_json(node, &["-n", NS, "get", "pods", "-l", selector]);
    let mut names: Vec<String> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

const SERVER_PODS: &str = "app.kubernetes.io/component=server";
const CONTROLLER_PODS: &str = "app.kubernetes.io/component=controller";

fn available(node: &Node, deployment: &str) -> Option<i64> {
    let d = node.kubectl(&["-n", NS, "get", "deployment", deployment, "-o", "json"]);
    if !d.status.success() {
        return None;
    }
    let d: Value = serde_json::from_slice(&d.stdout).ok()?;
    let s = &d["status"];
    // Rolled out: the newest generation observed, every replica updated and available.
    let want = d["spec"]["replicas"].as_i64()?;
    (s["observedGeneration"] == d["metadata"]["generation"]
        && s["updatedReplicas"].as_i64() == Some(want)
        && s["replicas"].as_i64() == Some(want)
        && s["availableReplicas"].as_i64() == Some(want))
    .then_some(want)
}

/// The snapshot version the controller last made current, read from the claim's manifest on the
/// host.
fn published_snapshot(store: &std::path::Path) -> Option<String> {
    let bytes = std::fs::read(store.join(MANIFEST_NAME)).ok()?;
    let manifest = Manifest::parse(MANIFEST_NAME, &bytes).ok()?;
    publish::current_entry(&manifest).map(|e| e.version.clone())
}

/// What one server pod's `/readyz` says (`ready: snapshot VERSION`), through the apiserver's pod
/// proxy: this replica alone, not whichever one the Service picks.
fn replica_readyz(node: &Node, pod: &str) -> String {
    let path = format!("/api/v1/namespaces/{NS}/pods/{pod}:8080/proxy/readyz");
    let out = node.kubectl(&["get", "--raw", &path]);
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    } else {
        format!("unanswered: {}", String::from_utf8_lossy(&out.stderr).trim())
    }
}

/// The published snapshot and what each server replica serves, for a failure's message.
fn serving_state(node: &Node, store: &std::path::Path, pods: &[String]) -> String {
    let replicas: Vec<String> = pods.iter().map(|p| format!("{p}: {}", replica_readyz(node, p))).collect();
    format!("published snapshot {:?}; replicas {replicas:?}", published_snapshot(store))
}

/// The chart's objects Flux or Argo CD would wait on: its workloads, Services, claim and RBAC
/// (the serving ones the controller applies included).
const CHART_KINDS: &str = "deployments,services,persistentvolumeclaims,serviceaccounts,roles,rolebindings";
const ZTP_KINDS: &str = "osimages,switchprofiles";

/// kstatus (Flux's library) on everything of `kinds` in `namespace` as the apiserver lists it now;
/// panics when any is Unknown, which is how GitOps tools see a status they cannot read.
async fn health(node: &Node, namespace: &str, kinds: &str) -> Vec<Health> {
    let list = kubectl(node, &["-n", namespace, "get", kinds, "-o", "json"]);
    let health = kstatus::compute_json(list.as_bytes()).await;
    for h in &health {
        assert_ne!(h.status, Status::Unknown, "kstatus cannot judge {h}");
    }
    health
}

/// Whether every object is Current; panics when one is Failed (nothing here should stall).
fn all_current(health: &[Health]) -> bool {
    for h in health {
        assert_ne!(h.status, Status::Failed, "{h}");
    }
    health.iter().all(|h| h.status == Status::Current)
}

fn health_of<'a>(health: &'a [Health], kind: &str, name: &str) -> Option<&'a Health> {
    health.iter().find(|h| h.kind == kind && h.name == name)
}

#[tokio::test]
async fn helm_install_on_a_real_node_answers_switches_through_the_service() {
    let test_start = Instant::now();
    let image = product_image();
    let node = Node::start().await;
    let _guard = node.failure_guard("helm_install_on_a_real_node_answers_switches_through_the_service");
    let node_ready = node.start_to_ready;
    node.import_image(&image.archive);
    let store = store_volume(&node);
    let sources = serve_sources(&node).await;

    // The admin token the files API accepts: a Secret the chart's value names.
    let bearer = "chart-e2e-token-0123456789abcdef";
    kubectl(&node, &["create", "namespace", NS]);
    kubectl(&node, &["create", "namespace", LAB_NS]);
    kubectl(
        &node,
        &[
            "-n",
            NS,
            "create",
            "secret",
            "generic",
            TOKEN_SECRET,
            &format!("--from-literal=tokens=ci:{bearer}"),
        ],
    );

    let external = format!("http://{}:{NODE_PORT}", node.ip);
    let (repository, tag) = IMAGE_REF.rsplit_once(':').expect("image name:tag");
    let chart = repo().join("charts/ztp-operator");
    let install_args = |extra: &[String]| -> Vec<String> {
        let mut a: Vec<String> = [
            "upgrade",
            "--install",
            RELEASE,
            &chart.display().to_string(),
            "-n",
            NS,
            "--wait",
            "--timeout",
            "180s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for set in [
            format!("image.repository={repository}"),
            format!("image.tag={tag}"),
            "image.pullPolicy=Never".into(),
            "controller.replicas=2".into(),
            format!("externalURL={external}"),
            "server.service.type=NodePort".into(),
            format!("server.service.nodePort={NODE_PORT}"),
            format!("server.auth.adminTokenSecret={TOKEN_SECRET}"),
        ]
        .into_iter()
        .chain(extra.iter().cloned())
        {
            a.extend(["--set".into(), set]);
        }
        a
    };
    let install_start = Instant::now();
    let args = install_args(&[]);
    helm(&node, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let helm_done = install_start.elapsed();
    assert_eq!(pod_names(&node, CONTROLLER_PODS).len(), 2, "two controller replicas");
    let pvc = kubectl_json(&node, &["-n", NS, "get", "pvc", CLAIM]);
    assert_eq!(pvc["status"]["phase"], "Bound", "the chart's claim binds to the hostPath volume: {pvc}");

    // The controller (the leader) applies the serving Deployment and Service; the servers run.
    // kstatus follows it as Flux would: never Unknown or Failed, InProgress until the servers are
    // available, then every object of the chart Current.
    let mut rolling = Vec::new();
    node.wait_for(
        "the serving Deployment rolled out, the chart's objects Current",
        Duration::from_secs(180),
        async || {
            let now = health(&node, NS, CHART_KINDS).await;
            rolling.extend(
                health_of(&now, "Deployment", SERVER).filter(|h| h.status != Status::Current).cloned(),
            );
            (all_current(&now)
                && health_of(&now, "Deployment", SERVER).is_some()
                && available(&node, SERVER).is_some())
            .then_some(())
        },
    )
    .await;
    for h in &rolling {
        assert_eq!(h.status, Status::InProgress, "the serving Deployment while it rolls out: {h}");
    }
    let server_pods = pod_names(&node, SERVER_PODS);
    assert_eq!(server_pods.len(), 2, "two server replicas: {server_pods:?}");
    let svc = kubectl_json(&node, &["-n", NS, "get", "svc", SERVER]);
    let cluster_ip = svc["spec"]["clusterIP"].as_str().expect("ClusterIP").to_owned();
    assert_eq!(svc["spec"]["ports"][0]["port"], 80, "the serving Service listens on 80: {svc}");
    for pod in &server_pods {
        let p = kubectl_json(&node, &["-n", NS, "get", "pod", pod]);
        assert_eq!(p["spec"]["serviceAccountName"], SERVER, "server pods run as their own ServiceAccount");
    }

    // The lab, applied as kubectl does it (server-side apply).
    let mut apply = vec!["apply".to_owned(), "--server-side".into(), "-n".into(), LAB_NS.into()];
    for f in lab_manifests(&node, &sources) {
        apply.extend(["-f".into(), f.display().to_string()]);
    }
    kubectl(&node, &apply.iter().map(String::as_str).collect::<Vec<_>>());
    let profiles =
        kubectl_json(&node, &["-n", LAB_NS, "get", "switchprofiles"])["items"].as_array().map_or(0, Vec::len);
    node.wait_for("every OsImage Ready, every lab object Current", Duration::from_secs(180), async || {
        let list = kubectl_json(&node, &["-n", LAB_NS, "get", "osimages"]);
        let items = list["items"].as_array()?.clone();
        let ready = items.len() == 3 && items.iter().all(|i| condition_true(i, "Ready"));
        let lab = health(&node, LAB_NS, ZTP_KINDS).await;
        (ready && lab.len() == 3 + profiles && all_current(&lab)).then_some(())
    })
    .await;
    stalled_image_fails(&node, &sources).await;

    // Every server replica serves the snapshot the controller published (each polls the store
    // every second), before a switch asks: a profile Ready on the cluster is one each replica
    // answers for (without this wait a replica was seen answering 404 for a Ready profile).
    let catching_up = Instant::now();
    node.wait_for(
        "each server replica serving the published snapshot",
        Duration::from_secs(30),
        async || {
            let version = published_snapshot(&store)?;
            let want = format!("ready: snapshot {version}");
            server_pods.iter().all(|pod| replica_readyz(&node, pod) == want).then_some(())
        },
    )
    .await;
    eprintln!("e2e: both server replicas served the published snapshot {:?} after", catching_up.elapsed());

    let switch = node.switch_netns();
    let base = format!("http://{cluster_ip}");
    let installer =
        std::fs::read(repo().join("examples/lab/images/lab-nos-installer.bin")).expect("lab image");

    // ONIE: the installer by headers, through the ClusterIP on port 80, its bytes checked.
    let onie = onie_headers("LAB-ONIE-0001");
    let body = node
        .wait_for("the first answer to a switch", Duration::from_secs(120), async || {
            let (code, body) = get(&switch, &format!("{base}/onie-installer-x86_64-lab_switch-r0"), &onie);
            (code == 200).then_some(body)
        })
        .await;
    let first_answer = install_start.elapsed();
    assert_eq!(Sha256Digest::of(&body), Sha256Digest::of(&installer), "ONIE got the lab installer's bytes");

    // NVOS: the ZTP JSON, and its image section's URL (on externalURL) answering the same headers.
    let nvos: Vec<String> = [
        "User-Agent: NVOS-ZTP/0.1",
        "SERIAL-NUMBER: LAB-NVOS-0001",
        "PRODUCT-NAME: LAB-SWITCH",
        "BASE-MAC-ADDRESS: 0C:42:A1:00:00:02",
        "NVOS-VERSION: nvos-25.02.2002",
    ]
    .map(String::from)
    .to_vec();
    let (code, body) = get(&switch, &format!("{base}/nvos/ztp.json"), &nvos);
    assert_eq!(
        code,
        200,
        "NVOS ZTP JSON: {} ({})",
        String::from_utf8_lossy(&body),
        serving_state(&node, &store, &server_pods)
    );
    let json: Value = serde_json::from_slice(&body).expect("NVOS ZTP JSON");
    let mut urls = Vec::new();
    urls_in(&json, &mut urls);
    assert!(!urls.is_empty(), "the NVOS ZTP JSON has section URLs: {json}");
    for url in &urls {
        assert!(url.starts_with(&external), "section URL {url} is on externalURL {external}");
    }
    // Through the NodePort of externalURL: kube-proxy may program it a moment after the ClusterIP.
    let mut attempts = Vec::new();
    let image_url = node
        .wait_for("an NVOS section URL serving the lab installer", Duration::from_secs(60), async || {
            urls.iter()
                .find(|u| {
                    let (code, body) = get(&switch, u, &nvos);
                    if code != 200 {
                        attempts.push(format!("{u}: {code} {}", String::from_utf8_lossy(&body).trim()));
                    }
                    body == installer
                })
                .cloned()
        })
        .await;
    if !attempts.is_empty() {
        eprintln!("e2e: NVOS section URLs failed before answering: {attempts:?}");
    }
    eprintln!("e2e: NVOS image section {image_url} served the installer");

    // Cumulus: the script, rendered for the device.
    let cumulus: Vec<String> = [
        "User-Agent: CumulusLinux-AutoProvision/0.4",
        "CUMULUS-SERIAL: LAB-CUMULUS-0001",
        "CUMULUS-BASE-MAC: 0C:42:A1:00:00:04",
        "CUMULUS-PRODUCTNAME: LAB-SWITCH",
        "CUMULUS-ARCH: x86_64",
        "CUMULUS-VERSION: 5.14.0",
    ]
    .map(String::from)
    .to_vec();
    let (code, body) = get(&switch, &format!("{base}/cumulus/ztp.sh"), &cumulus);
    let script = String::from_utf8_lossy(&body);
    assert_eq!(code, 200, "Cumulus script: {script} ({})", serving_state(&node, &store, &server_pods));
    assert!(script.contains("CUMULUS-AUTOPROVISIONING") && script.contains("lab-cumulus01"), "{script}");

    // RtBrick: a config file rendered from the ConfigMap.
    let rtbrick: Vec<String> = [
        "ONIE-SERIAL-NUMBER: LAB-RTBRICK-0001",
        "CONTAINER-NAME: rtbrick",
        "ELEMENT-NAME: lab-rtbrick01",
        "HOST-NAME: lab-rtbrick01",
    ]
    .map(String::from)
    .to_vec();
    let (code, body) = get(&switch, &format!("{base}/ztp/config/startup"), &rtbrick);
    let startup = String::from_utf8_lossy(&body);
    assert_eq!(code, 200, "RtBrick startup: {startup} ({})", serving_state(&node, &store, &server_pods));
    assert!(startup.contains(r#""hostname": "lab-rtbrick01""#), "{startup}");

    // The files API: an upload with the token read back from the Secret the chart was given; the
    // file lands on the claim, owned by the pods' user.
    let tokens = kubectl(&node, &["-n", NS, "get", "secret", TOKEN_SECRET, "-o", "jsonpath={.data.tokens}"]);
    let tokens = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, tokens.trim()).expect("base64"),
    )
    .expect("utf-8");
    let token =
        tokens.lines().find_map(|l| l.split_once(':')).map(|(_, t)| t.to_owned()).expect("name:token");
    let upload = pseudo_random(300_000, 7);
    let upload_file = node.dir.join("upload.bin");
    std::fs::write(&upload_file, &upload).expect("upload file");
    let out = switch.curl(&[
        "-f",
        "-H",
        &format!("Authorization: Bearer {token}"),
        "-F",
        &format!("file=@{}", upload_file.display()),
        &format!("{base}/v1/files/ci-upload/1/upload.bin?checksum={}", Sha256Digest::of(&upload)),
    ]);
    assert!(out.status.success(), "upload through the Service: {}", procs::printed(&out));
    let stored = store.join("ci-upload/1/upload.bin");
    assert_eq!(std::fs::read(&stored).ok().as_deref(), Some(upload.as_slice()), "uploaded file on the claim");
    assert_eq!(std::fs::metadata(&stored).expect("stored").uid(), 65532, "written by the pods' user");
    let (code, _) = get(&switch, &format!("{base}/v1/files/"), &[]);
    assert_eq!(code, 403, "listing without a token is refused (as the reference store answers)");

    // The device's Switch, written by the server pods under their own ServiceAccount, counted
    // on its profile by the controller.
    let profile = node
        .wait_for("lab-onie status.switches", Duration::from_secs(60), async || {
            let p = kubectl_json(&node, &["-n", LAB_NS, "get", "switchprofile", "lab-onie"]);
            (p["status"]["switches"]["total"].as_i64() >= Some(1)).then_some(p)
        })
        .await;
    assert!(
        profile["status"]["devices"].is_null(),
        "servers with Switches write none: {}",
        profile["status"]
    );
    let switches = kubectl_json(&node, &["-n", LAB_NS, "get", "switches"]);
    assert!(switches.to_string().contains("LAB-ONIE-0001"), "the device's Switch: {switches}");
    let events = node
        .wait_for("the servers' Events", Duration::from_secs(60), async || {
            let list = kubectl_json(&node, &["-n", LAB_NS, "get", "events.events.k8s.io"]);
            let mine: Vec<Value> = list["items"]
                .as_array()?
                .iter()
                .filter(|e| e["reportingController"] == "ztp-operator-server")
                .cloned()
                .collect();
            (!mine.is_empty()).then_some(mine)
        })
        .await;
    for e in &events {
        let instance = e["reportingInstance"].as_str().unwrap_or_default();
        assert!(server_pods.iter().any(|p| p == instance), "Event reported by a server pod: {e}");
    }
    // Nothing restarted: no probe failed, no container was OOM-killed, nothing crashed.
    let pods = kubectl_json(&node, &["-n", NS, "get", "pods"]);
    for p in pods["items"].as_array().expect("pods") {
        for c in p["status"]["containerStatuses"].as_array().into_iter().flatten() {
            assert_eq!(c["restartCount"], 0, "container restarted in {}: {c}", p["metadata"]["name"]);
        }
    }
    eprintln!(
        "e2e: chart on a real node: node Ready {:.1} s; helm install --wait {:.1} s; install to first switch answer {:.1} s",
        node_ready.as_secs_f64(),
        helm_done.as_secs_f64(),
        first_answer.as_secs_f64()
    );

    rollout_restart_during_a_download(&node, &switch, &base, &sources.big).await;
    leader_deleted_mid_fetch(&node, &store, &sources).await;
    let upgrade = install_args(&["server.maxDownloads=300".to_owned()]);
    upgrade_rolls_the_servers(&node, &upgrade.iter().map(String::as_str).collect::<Vec<_>>()).await;
    // After it all, as a GitOps tool would see the release and the lab: everything Current.
    assert!(all_current(&health(&node, NS, CHART_KINDS).await), "the chart's objects Current at the end");
    let lab = health(&node, LAB_NS, ZTP_KINDS).await;
    assert!(all_current(&lab), "every OsImage and SwitchProfile Current at the end: {lab:?}");
    uninstall_keeps_the_claim(&node, &store).await;

    drop(switch);
    let (id, dir) = (node.id.clone(), node.dir.clone());
    let left = node.teardown();
    assert!(left.is_empty(), "real node {id} left after teardown: {left:?}");
    assert!(!dir.exists(), "state directory {} removed", dir.display());
    eprintln!("e2e: chart test total {:.1} s", test_start.elapsed().as_secs_f64());
}

/// The pod's `deletionTimestamp`: the moment the kubelet kills what has not stopped on SIGTERM
/// (deletion time + grace period); with its grace period.
fn kill_deadline(node: &Node, pod: &str) -> Option<(Timestamp, i64)> {
    let out = node.kubectl(&["-n", NS, "get", "pod", pod, "-o", "json"]);
    let p: Value = serde_json::from_slice(&out.stdout).ok()?;
    let t = serde_json::from_value::<Time>(p["metadata"]["deletionTimestamp"].clone()).ok()?;
    Some((t.0, p["metadata"]["deletionGracePeriodSeconds"].as_i64().unwrap_or(0)))
}

/// Waits until `pod` is gone. Returns how long after its deletion it went, and whether it went
/// before its kill deadline ([`kill_deadline`]): whether the process stopped by itself on SIGTERM.
/// A pod never seen terminating (it went between two looks) stopped at once.
async fn gone(node: &Node, pod: &str, mut deadline: Option<(Timestamp, i64)>) -> (Duration, bool) {
    node.wait_for(&format!("pod {pod} gone"), Duration::from_secs(120), async || {
        if !node.kubectl(&["-n", NS, "get", "pod", pod, "-o", "name"]).status.success() {
            return Some(());
        }
        deadline = deadline.or_else(|| kill_deadline(node, pod));
        None
    })
    .await;
    let Some((deadline, grace)) = deadline else { return (Duration::ZERO, true) };
    let now = Timestamp::now();
    let after_deletion = grace as f64 + now.duration_since(deadline).as_secs_f64();
    (Duration::from_secs_f64(after_deletion.max(0.0)), now < deadline)
}

/// `kubectl rollout restart` of the serving Deployment while a switch downloads a large image
/// (`curl -C -` with retries, as a resuming client does): the download completes with the right
/// bytes, with at most one retry, and the old pods stop before the kubelet has to kill them.
async fn rollout_restart_during_a_download(node: &Node, switch: &Switch, base: &str, big: &[u8]) {
    let old = pod_names(node, SERVER_PODS);
    let file = node.dir.join("big-download.bin");
    let mut cmd = switch.command("curl");
    cmd.args([
        "--no-progress-meter",
        "--fail",
        "--max-time",
        "300",
        "--speed-limit",
        "1",
        "--speed-time",
        "15",
        "--retry",
        "3",
        "--retry-all-errors",
        "--retry-delay",
        "1",
        "-C",
        "-",
        "--limit-rate",
        "3M",
        "-o",
    ])
    .arg(&file);
    for h in onie_headers(BIG_SERIAL) {
        cmd.args(["-H", &h]);
    }
    cmd.arg(format!("{base}/onie-installer"));
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn curl");
    let size = || std::fs::metadata(&file).map(|m| m.len() as usize).unwrap_or(0);
    node.wait_for("the switch's download under way", Duration::from_secs(60), async || {
        (size() > 4 << 20).then_some(())
    })
    .await;
    kubectl(node, &["-n", NS, "rollout", "restart", &format!("deployment/{SERVER}")]);
    let at_restart = size();
    assert!(at_restart < big.len(), "the restart came while the download was under way ({at_restart} bytes)");
    let restart = Instant::now();
    let mut stopped = Vec::new();
    for pod in &old {
        stopped.push((pod, gone(node, pod, None).await));
    }
    node.wait_for("the restarted servers available", Duration::from_secs(120), async || {
        available(node, SERVER)
    })
    .await;
    let out =
        tokio::task::spawn_blocking(move || child.wait_with_output()).await.expect("join").expect("curl");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "the switch's download across the restart: {stderr}");
    let got = std::fs::read(&file).expect("downloaded file");
    assert_eq!(got.len(), big.len(), "downloaded size; curl said: {stderr}");
    assert!(
        Sha256Digest::of(&got) == Sha256Digest::of(big),
        "downloaded bytes (sha256); curl said: {stderr}"
    );
    let retries = stderr.matches("Will retry").count();
    assert!(retries <= 1, "at most one retry across the restart, got {retries}: {stderr}");
    // A retry may come from a connection that reached a stopping pod; never from a stalled one
    // (a pod gone with the download's last bytes unsent: the client waits for nothing).
    assert!(!stderr.contains("too slow"), "the download stalled across the restart: {stderr}");
    eprintln!(
        "e2e: rollout restart during a download: {retries} retries ({}); rollout and download {:.1} s; old servers stopped {:?}",
        stderr.trim(),
        restart.elapsed().as_secs_f64(),
        stopped
            .iter()
            .map(|(p, (t, _))| format!("{p} {:.1} s after deletion", t.as_secs_f64()))
            .collect::<Vec<_>>()
    );
    for (pod, (_, before)) in &stopped {
        assert!(before, "server pod {pod} stopped on SIGTERM, before the kubelet's kill deadline");
    }
    let _ = std::fs::remove_file(&file);
}

/// Every regular file under `dir`, with its size.
fn files_under(dir: &std::path::Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        match e.metadata() {
            Ok(m) if m.is_dir() => out.extend(files_under(&p)),
            Ok(m) => out.push((p, m.len())),
            Err(_) => {}
        }
    }
    out
}

/// Applies (server-side) OsImage `name` in the lab namespace, platform `name`, version `1`, from
/// `source` with checksum `sha256`.
fn apply_osimage(node: &Node, name: &str, source: &str, sha256: &Sha256Digest) {
    let manifest = format!(
        r#"apiVersion: ztp.netops.dev/v1alpha1
kind: OsImage
metadata: {{name: {name}, namespace: {LAB_NS}}}
spec:
  platform: {name}
  version: "1"
  source: {{url: {{url: "{source}"}}}}
  sha256: {sha256}
"#
    );
    let file = node.dir.join(format!("lab/{name}.yaml"));
    std::fs::write(&file, manifest).expect("OsImage manifest");
    kubectl(node, &["apply", "--server-side", "-f", &file.display().to_string()]);
}

/// An OsImage whose source does not match its sha256 stalls: kstatus says Failed (as Flux reports
/// a failed Kustomization), with the controller's reason; it is then removed.
async fn stalled_image_fails(node: &Node, sources: &Sources) {
    let source = format!("http://{}/lab-nos-installer.bin", sources.cluster_ip);
    apply_osimage(node, "lab-wrong", &source, &Sha256Digest::of(b"not the installer"));
    let failed = node
        .wait_for("kstatus Failed for an image with a wrong checksum", Duration::from_secs(60), async || {
            let images = health(node, LAB_NS, "osimages").await;
            let wrong = health_of(&images, "OsImage", "lab-wrong")?.clone();
            assert_ne!(
                wrong.status,
                Status::Current,
                "an image whose bytes do not match is never Current: {wrong}"
            );
            (wrong.status == Status::Failed).then_some(wrong)
        })
        .await;
    assert!(failed.message.contains("sha256 mismatch"), "kstatus shows the controller's message: {failed}");
    kubectl(node, &["-n", LAB_NS, "delete", "osimage", "lab-wrong", "--wait=true"]);
}

/// The leader controller's pod deleted while it fetches a slow image: the other replica takes the
/// lease and finishes; the image's place in the store never holds a partial file.
async fn leader_deleted_mid_fetch(node: &Node, store: &std::path::Path, sources: &Sources) {
    let holder = || kubectl(node, &["-n", NS, "get", "lease", FULL, "-o", "jsonpath={.spec.holderIdentity}"]);
    let leader = holder();
    let controllers = pod_names(node, CONTROLLER_PODS);
    assert!(
        controllers.contains(&leader),
        "the lease is held by a controller pod: {leader} of {controllers:?}"
    );
    let source = format!("http://{}/cgi-bin/slow", sources.cluster_ip);
    apply_osimage(node, "lab-slow", &source, &Sha256Digest::of(&sources.slow));
    let tmp = store.join(".tmp");
    node.wait_for("the leader's fetch under way", Duration::from_secs(60), async || {
        files_under(&tmp).iter().any(|(_, len)| *len > 0).then_some(())
    })
    .await;
    let fetching = health(node, LAB_NS, "osimages").await;
    let slow = health_of(&fetching, "OsImage", "lab-slow").expect("lab-slow judged");
    assert_eq!(slow.status, Status::InProgress, "an image being fetched: {slow}");
    kubectl(node, &["-n", NS, "delete", "pod", &leader, "--wait=false"]);
    let deadline = kill_deadline(node, &leader);
    let deleted = Instant::now();
    let image_dir = store.join("lab-slow");
    let full = sources.slow.len() as u64;
    node.wait_for(
        "lab-slow Ready after the leader's pod was deleted",
        Duration::from_secs(180),
        async || {
            for (path, len) in files_under(&image_dir) {
                assert_eq!(len, full, "a partial file is visible in the store: {}", path.display());
            }
            let image = kubectl_json(node, &["-n", LAB_NS, "get", "osimage", "lab-slow"]);
            condition_true(&image, "Ready").then_some(())
        },
    )
    .await;
    let took = deleted.elapsed();
    let done = health(node, LAB_NS, "osimages").await;
    let slow = health_of(&done, "OsImage", "lab-slow").expect("lab-slow judged");
    assert_eq!(slow.status, Status::Current, "the image Ready: {slow}");
    let new_leader = holder();
    assert_ne!(new_leader, leader, "another replica took the lease");
    let stored = files_under(&image_dir);
    assert_eq!(stored.len(), 1, "one file for lab-slow: {stored:?}");
    let bytes = std::fs::read(&stored[0].0).expect("stored slow image");
    assert!(Sha256Digest::of(&bytes) == Sha256Digest::of(&sources.slow), "stored bytes (sha256)");
    let (old_gone, before) = gone(node, &leader, deadline).await;
    eprintln!(
        "e2e: leader {leader} deleted mid-fetch: {new_leader} finished the image {:.1} s later; the old pod stopped {:.1} s after deletion",
        took.as_secs_f64(),
        old_gone.as_secs_f64()
    );
    assert!(before, "the leader's pod stopped on SIGTERM, before the kubelet's kill deadline");
}

/// `helm upgrade` with a changed server value: the controller re-applies the serving Deployment
/// and its pods are replaced with the new setting.
async fn upgrade_rolls_the_servers(node: &Node, args: &[&str]) {
    let old = pod_names(node, SERVER_PODS);
    helm(node, args);
    let env_of = |d: &Value| -> Option<String> {
        d["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()?
            .iter()
            .find(|e| e["name"] == "ZTP_MAX_DOWNLOADS")?["value"]
            .as_str()
            .map(str::to_owned)
    };
    node.wait_for("the servers rolled with maxDownloads=300", Duration::from_secs(180), async || {
        let d = kubectl_json(node, &["-n", NS, "get", "deployment", SERVER]);
        let now = pod_names(node, SERVER_PODS);
        (env_of(&d).as_deref() == Some("300")
            && available(node, SERVER).is_some()
            && now.len() == 2
            && now.iter().all(|p| !old.contains(p)))
        .then_some(())
    })
    .await;
}

/// `helm uninstall`: the claim (and its files) stays; the release's objects and the serving
/// objects the controller applied (owned by the controller's Deployment) go.
async fn uninstall_keeps_the_claim(node: &Node, store: &std::path::Path) {
    helm(node, &["uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "120s"]);
    let pvc = kubectl_json(node, &["-n", NS, "get", "pvc", CLAIM]);
    assert_eq!(pvc["status"]["phase"], "Bound", "the claim stays after uninstall: {pvc}");
    assert!(store.join("lab-nos/1.0.0/lab-nos-installer.bin").exists(), "the store's files stay");
    node.wait_for("the release's and the serving objects gone", Duration::from_secs(120), async || {
        let left = kubectl(
            node,
            &["-n", NS, "get", "deployments,services,serviceaccounts,roles,rolebindings,pods", "-o", "name"],
        );
        let left: Vec<&str> = left.lines().filter(|l| l.contains(FULL)).collect();
        left.is_empty().then_some(())
    })
    .await;
    let cluster = kubectl(node, &["get", "clusterroles,clusterrolebindings", "-o", "name"]);
    assert!(!cluster.contains(FULL), "cluster-wide RBAC removed: {cluster}");
}
