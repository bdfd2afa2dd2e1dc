//! The real node itself (`support::node`): a node of its own started from nothing to Ready, a
//! locally built image run as a 2-replica Deployment (kstatus InProgress, then Current) behind a
//! ClusterIP Service on port 80, a switch namespace answered through that ClusterIP by both
//! replicas, and a teardown that leaves nothing behind (namespaces, mounts, cgroups, processes,
//! state directory).

use std::{
    collections::BTreeSet,
    os::unix::fs::PermissionsExt,
    path::Path,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Namespace, Pod, Service},
};
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use serde_json::json;

use crate::support::{
    kstatus,
    node::{Node, oci_image},
};

const WEB_IMAGE: &str = "localhost/ztp-e2e-web:busybox";
const NS: &str = "smoke";

/// `FROM scratch` + Debian's static busybox: `httpd` on 8080 serving a page and a CGI that
/// prints the pod's hostname (its name), as 65532.
fn web_image(dir: &Path) -> std::path::PathBuf {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists()
            && std::process::Command::new("dpkg")
                .args(["-s", "busybox-static"])
                .output()
                .is_ok_and(|o| o.status.success()),
        "the real-node smoke test needs Debian's busybox-static (scripts/build-test-tools installs it)"
    );
    let root = dir.join("web-root");
    let cgi = root.join("www/cgi-bin");
    std::fs::create_dir_all(root.join("bin")).expect("image dirs");
    std::fs::create_dir_all(&cgi).expect("image dirs");
    std::fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
    std::fs::write(root.join("www/index.html"), "hello from the real node\n").expect("index");
    std::fs::write(
        cgi.join("pod"),
        "#!/bin/busybox sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\n/bin/busybox hostname\n",
    )
    .expect("cgi");
    std::fs::set_permissions(cgi.join("pod"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    oci_image(
        WEB_IMAGE,
        &dir.join("web.tar"),
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
            "/www",
        ],
        &[&root],
    )
}

async fn deploy_web(client: &Client) -> String {
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}})).expect("ns"),
        )
        .await
        .expect("create namespace");
    let labels = json!({"app": "web"});
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": false,
                    "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "web",
                        "image": WEB_IMAGE,
                        "imagePullPolicy": "Never",
                        "ports": [{"containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]}
                        }
                    }]
                }
            }
        }
    }))
    .expect("deployment");
    Api::<Deployment>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .expect("service");
    let service = Api::<Service>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &service)
        .await
        .expect("create service");
    service.spec.and_then(|s| s.cluster_ip).expect("ClusterIP allocated")
}

#[tokio::test]
async fn real_node_runs_a_deployment_a_switch_reaches_through_its_cluster_ip() {
    let test_start = Instant::now();
    let node = Node::start().await;
    let _guard = node.failure_guard("real_node_runs_a_deployment_a_switch_reaches_through_its_cluster_ip");
    let node_ready = node.start_to_ready;

    let image = web_image(&node.dir.join("images"));
    node.import_image(&image);
    let client = node.client().await;
    let cluster_ip = deploy_web(&client).await;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    // Judged by kstatus as Flux judges workloads: rolling out, then Current once both replicas
    // are available (and the deployment controller says the rollout is complete).
    let rolling = kstatus::compute(&deployments.get("web").await.expect("get web")).await;
    assert_eq!(rolling.status, kstatus::Status::InProgress, "{rolling}");
    node.wait_for("2 web replicas available, kstatus Current", Duration::from_secs(120), async || {
        let d = deployments.get("web").await.ok()?;
        let current = kstatus::compute(&d).await.status == kstatus::Status::Current;
        (d.status?.available_replicas? == 2 && current).then_some(())
    })
    .await;
    let pods: BTreeSet<String> = Api::<Pod>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(pods.len(), 2, "two web pods: {pods:?}");

    // kubectl through the helper, as the next tests will use it.
    let out = node.kubectl(&["-n", NS, "get", "pods", "-o", "name"]);
    assert!(out.status.success(), "kubectl get pods: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);

    let switch = node.switch_netns();
    let page = node
        .wait_for("the ClusterIP answering the switch", Duration::from_secs(60), async || {
            let out = switch.curl(&[&format!("http://{cluster_ip}/")]);
            out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        })
        .await;
    assert_eq!(page, "hello from the real node\n");
    // kube-proxy balances the Service over both replicas: every pod answers. Not at once: the
    // second replica's endpoint can reach kube-proxy's rules a moment after the Deployment counts
    // it available (the EndpointSlice controller retries while its informer catches up, as CI
    // once saw), so requests go on, 10 a round, until both have answered or a minute has passed.
    let mut seen = BTreeSet::new();
    node.wait_for(
        "both pods answering the switch through the ClusterIP",
        Duration::from_secs(60),
        async || {
            for _ in 0..10 {
                let out = switch.curl(&[&format!("http://{cluster_ip}/cgi-bin/pod")]);
                assert!(
                    out.status.success(),
                    "GET /cgi-bin/pod from the switch: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                seen.insert(String::from_utf8_lossy(&out.stdout).trim().to_owned());
            }
            assert!(seen.is_subset(&pods), "only the Deployment's pods answer: {seen:?} of {pods:?}");
            (seen == pods).then_some(())
        },
    )
    .await;

    drop(switch);
    let (id, dir) = (node.id.clone(), node.dir.clone());
    let left = node.teardown();
    assert!(left.is_empty(), "real node {id} left after teardown: {left:?}");
    assert!(!dir.exists(), "state directory {} removed", dir.display());
    eprintln!(
        "e2e: real node Ready in {:.1} s; smoke test total {:.1} s",
        node_ready.as_secs_f64(),
        test_start.elapsed().as_secs_f64()
    );
}
