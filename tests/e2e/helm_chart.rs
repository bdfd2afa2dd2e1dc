//! The Helm chart (`charts/ztp-operator`) with the real helm (built from its Go module):
//! `helm lint`; `helm template` output for directory and S3 values accepted by the real apiserver
//! (server-side dry run); and the controller running as the chart's ServiceAccount, with exactly
//! the chart's RBAC and the configuration the chart's Deployment gives it, reconciling an OsImage
//! and a SwitchProfile to Ready and applying the serving objects.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::{Secret, ServiceAccount},
    rbac::v1::{ClusterRole, Role},
};
use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams},
    discovery::{self, Scope},
};
use serde::Deserialize;
use serde_json::{Value, json};
use ztp_operator::{
    api::{ConditionType, OsImage, SwitchProfile, conditions::find_condition},
    hash::Sha256Digest,
};

use crate::support::{
    self,
    controller::{is_ready, osimage},
    controlplane::kubeconfig_yaml,
    deployment::{Controller, flat_rules, pod, server_rules, wait_obj},
    procs, random_bytes,
    source::{Behavior, SourceServer},
    tools,
};

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/ztp-operator")
}

/// Runs the real helm with its cache and configuration in a throwaway directory.
fn helm_output(args: &[&str]) -> std::process::Output {
    let home = tempfile::tempdir().expect("helm home");
    std::process::Command::new(&tools::tools().helm)
        .args(args)
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .output()
        .expect("run helm")
}

/// Runs helm, which must succeed; returns its stdout.
fn helm(args: &[&str]) -> String {
    crate::support::procs::succeeded(&format!("helm {args:?}"), helm_output(args))
}

/// `helm template` of the chart as JSON documents.
fn template(release: &str, namespace: &str, extra: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec!["template", release, chart.to_str().expect("utf-8 path"), "--namespace", namespace];
    args.extend_from_slice(extra);
    let text = helm(&args);
    yaml_serde::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn kinds(docs: &[Value]) -> Vec<&str> {
    docs.iter().filter_map(|d| d["kind"].as_str()).collect()
}

fn s3_values() -> String {
    chart().join("ci/s3-values.yaml").display().to_string()
}

/// Server-side applies every document (`dry_run`: the apiserver validates and admits, stores nothing).
async fn apply_docs(client: &Client, namespace: &str, docs: &[Value], dry_run: bool) {
    for doc in docs {
        let (api_version, kind) =
            (doc["apiVersion"].as_str().expect("apiVersion"), doc["kind"].as_str().expect("kind"));
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, caps) =
            discovery::pinned_kind(client, &gvk).await.unwrap_or_else(|e| panic!("discover {kind}: {e}"));
        let obj: DynamicObject = serde_json::from_value(doc.clone()).expect("object");
        let name = obj.metadata.name.clone().expect("name");
        let ns = obj.metadata.namespace.clone().unwrap_or_else(|| namespace.to_owned());
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => Api::namespaced_with(client.clone(), &ns, &resource),
            Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        let mut pp = PatchParams::apply("helm-e2e").force();
        pp.dry_run = dry_run;
        api.patch(&name, &pp, &Patch::Apply(&obj))
            .await
            .unwrap_or_else(|e| panic!("the apiserver refused {kind} {name} (dry run {dry_run}): {e}"));
    }
}

#[test]
fn helm_lint_passes_with_directory_and_s3_values() {
    let chart = chart();
    let chart = chart.to_str().expect("utf-8 path");
    helm(&["lint", "--strict", chart]);
    helm(&["lint", "--strict", chart, "-f", &s3_values()]);
    // A store type the chart does not know is refused at render time (values.schema.json).
    let out = helm_output(&["template", "x", chart, "--set", "storage.type=nfs"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/storage/type"), "the values schema says where");
}

#[tokio::test]
async fn rendered_chart_is_accepted_by_the_apiserver() {
    let t = support::kube_test("chart-dry-run").await;
    let ns = t.namespace.clone();
    let s3 = s3_values();
    let fs = template("fs", &ns, &["--include-crds"]);
    assert_eq!(
        kinds(&fs),
        [
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "ServiceAccount",
            "PersistentVolumeClaim",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment"
        ]
    );
    apply_docs(&t.client, &ns, &fs, true).await;
    // S3: no claim; the ServiceMonitor only where its API exists.
    let s3_docs = template("s3", &ns, &["-f", &s3]);
    assert!(!kinds(&s3_docs).contains(&"PersistentVolumeClaim"));
    assert!(
        !kinds(&s3_docs).contains(&"ServiceMonitor"),
        "no ServiceMonitor without monitoring.coreos.com/v1"
    );
    apply_docs(&t.client, &ns, &s3_docs, true).await;
    let with_monitor = template("s3", &ns, &["-f", &s3, "--api-versions", "monitoring.coreos.com/v1"]);
    let monitor = with_monitor.iter().find(|d| d["kind"] == "ServiceMonitor").expect("ServiceMonitor");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"],
        "s3-ztp-operator-server"
    );
    // One namespace watched: namespaced bindings only.
    let scoped = template("scoped", &ns, &["-f", &s3, "--set", &format!("controller.watchNamespace={ns}")]);
    assert_eq!(kinds(&scoped).iter().filter(|k| k.starts_with("ClusterRoleBinding")).count(), 0);
    apply_docs(&t.client, &ns, &scoped, true).await;
    // Nothing was stored.
    let roles =
        Api::<Role>::namespaced(t.client.clone(), &ns).list(&ListParams::default()).await.expect("list");
    assert!(roles.items.is_empty());
}

/// The environment the chart's controller Deployment gives its container, as this test runs it:
/// field references resolved as the kubelet would, the store directory replaced by a local one.
fn controller_env(deployment: &Value, pod: &str, namespace: &str, store: &Path) -> BTreeMap<String, String> {
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mut env = BTreeMap::new();
    for e in container["env"].as_array().expect("env") {
        let name = e["name"].as_str().expect("name").to_owned();
        let value = match (&e["value"], e["valueFrom"]["fieldRef"]["fieldPath"].as_str()) {
            (Value::String(v), _) => v.clone(),
            (_, Some("metadata.name")) => pod.to_owned(),
            (_, Some("metadata.namespace")) => namespace.to_owned(),
            other => panic!("{name}: no value the test can give ({other:?})"),
        };
        env.insert(name, value);
    }
    assert_eq!(env.get("ZTP_STORE_DIR").map(String::as_str), Some("/var/lib/ztp/store"));
    env.insert("ZTP_STORE_DIR".into(), store.display().to_string());
    // The pod's port 8080 is this machine's: a free one instead.
    assert_eq!(env.get("ZTP_METRICS_LISTEN").map(String::as_str), Some("0.0.0.0:8080"));
    env.insert("ZTP_METRICS_LISTEN".into(), format!("127.0.0.1:{}", procs::free_port()));
    env
}

/// A kubeconfig (in `dir`) and a client holding a TokenRequest token of ServiceAccount `ns/name`:
/// exactly that identity, as its pod would run.
async fn service_account_client(t: &support::KubeTest, name: &str, dir: &Path) -> (PathBuf, Client) {
    let sas: Api<ServiceAccount> = Api::namespaced(t.client.clone(), &t.namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() }),
        ..Default::default()
    };
    let token = sas.create_token_request(name, &PostParams::default(), &request).await.expect("TokenRequest");
    let token = token.status.and_then(|s| s.token).expect("a token");
    let env = support::env().await;
    let kubeconfig = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(&kubeconfig, kubeconfig_yaml(&env.control_plane.url, &env.control_plane.ca_pem, &token))
        .expect("write kubeconfig");
    let client = support::controlplane::client_from(&kubeconfig).await;
    (kubeconfig, client)
}

fn expect_forbidden<T: std::fmt::Debug>(r: Result<T, kube::Error>, what: &str) {
    match r {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what}: expected 403, got {other:?}"),
    }
}

/// The chart installed for every namespace (the default), its RBAC for real: the controller's
/// own token can neither create a role nor bind anything to anyone (`default/default` included),
/// and a SubjectAccessReview finds no write, `bind` or `escalate` verb on any RBAC resource; yet
/// it applies the serving objects it is there for (and is refused the server's RBAC objects,
/// which the chart installs, bound to the server's ServiceAccount only).
#[tokio::test]
async fn the_controllers_identity_cannot_grant_anything() {
    use k8s_openapi::api::{
        authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
        rbac::v1::{ClusterRoleBinding, RoleBinding},
    };
    let t = support::kube_test("chart-grant").await;
    let ns = t.namespace.clone();
    let docs = template("ztp", &ns, &["--set", "externalURL=http://ztp.example.net"]);
    apply_docs(&t.client, &ns, &docs, false).await;
    let fullname = "ztp-ztp-operator";
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, sa) = service_account_client(&t, fullname, dir.path()).await;
    let controller_role = format!("{fullname}-{ns}");

    // Binding default/default to the controller's own ClusterRole (which reads every Secret):
    // cluster-wide, and in another namespace.
    let steal: ClusterRoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("{ns}-steal")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": controller_role},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}],
    }))
    .expect("binding");
    expect_forbidden(
        Api::<ClusterRoleBinding>::all(sa.clone()).create(&PostParams::default(), &steal).await,
        "binding default/default cluster-wide",
    );
    let mut steal_here: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": format!("{ns}-steal")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": controller_role},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}],
    }))
    .expect("binding");
    for namespace in ["default", ns.as_str()] {
        steal_here.metadata.namespace = Some(namespace.to_owned());
        expect_forbidden(
            Api::<RoleBinding>::namespaced(sa.clone(), namespace)
                .create(&PostParams::default(), &steal_here)
                .await,
            &format!("binding default/default in {namespace}"),
        );
    }
    // Widening the server's own binding (the chart's) to another subject.
    let server_binding = format!("{fullname}-server-activity-{ns}");
    let crbs: Api<ClusterRoleBinding> = Api::all(t.client.clone());
    let chart_binding = crbs.get(&server_binding).await.expect("the chart's binding of the server");
    let subjects = chart_binding.subjects.clone().unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!(
        (subjects[0].kind.as_str(), subjects[0].name.as_str(), subjects[0].namespace.as_deref()),
        ("ServiceAccount", "ztp-ztp-operator-server", Some(ns.as_str()))
    );
    let widened = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": server_binding},
        "roleRef": chart_binding.role_ref,
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}],
    });
    expect_forbidden(
        Api::<ClusterRoleBinding>::all(sa.clone())
            .patch(&server_binding, &PatchParams::apply("intruder").force(), &Patch::Apply(&widened))
            .await,
        "rebinding the server's role",
    );
    // Creating roles.
    let wide: ClusterRole = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": format!("{ns}-wide")},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
    }))
    .expect("cluster role");
    expect_forbidden(
        Api::<ClusterRole>::all(sa.clone()).create(&PostParams::default(), &wide).await,
        "a ClusterRole",
    );
    let role: Role = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "wide", "namespace": ns},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
    }))
    .expect("role");
    expect_forbidden(
        Api::<Role>::namespaced(sa.clone(), &ns).create(&PostParams::default(), &role).await,
        "a Role",
    );
    // Nor pods as any identity of its namespace: a Deployment under another name is refused.
    let other: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "anything-else"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"serviceAccountName": fullname, "containers": [{"name": "c", "image": "x"}]}}},
    }))
    .expect("deployment");
    expect_forbidden(
        Api::<Deployment>::namespaced(sa.clone(), &ns).create(&PostParams::default(), &other).await,
        "another Deployment",
    );

    // `kubectl auth can-i`, exhaustively: no verb that writes RBAC, here or cluster-wide.
    let user = format!("system:serviceaccount:{ns}:{fullname}");
    let reviews: Api<SubjectAccessReview> = Api::all(t.client.clone());
    let mut allowed = Vec::new();
    for resource in ["roles", "rolebindings", "clusterroles", "clusterrolebindings"] {
        for verb in
            ["create", "update", "patch", "delete", "deletecollection", "bind", "escalate", "impersonate"]
        {
            for namespace in [Some(ns.clone()), Some("default".to_owned()), None] {
                let review = SubjectAccessReview {
                    spec: SubjectAccessReviewSpec {
                        user: Some(user.clone()),
                        groups: Some(vec![
                            "system:serviceaccounts".into(),
                            format!("system:serviceaccounts:{ns}"),
                            "system:authenticated".into(),
                        ]),
                        resource_attributes: Some(ResourceAttributes {
                            group: Some("rbac.authorization.k8s.io".into()),
                            resource: Some(resource.into()),
                            verb: Some(verb.into()),
                            namespace: namespace.clone(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                let answer = reviews.create(&PostParams::default(), &review).await.expect("review");
                if answer.status.is_some_and(|s| s.allowed) {
                    allowed.push(format!("{verb} {resource} in {namespace:?}"));
                }
            }
        }
    }
    assert!(allowed.is_empty(), "the controller may write RBAC: {allowed:?}");

    // What it is there for still works with that token: the serving objects (the server's
    // Deployment, Service, ServiceAccount), as `--manage-serving` applies them for every namespace.
    let mut cfg = cluster_config(&ns, "ztp-ztp-operator-server");
    let objects = ztp_operator::controller::serving::objects(&cfg, None).expect("render");
    ztp_operator::controller::serving::apply_all(&sa, &objects)
        .await
        .expect("the controller applies the server");
    Api::<Deployment>::namespaced(t.client.clone(), &ns)
        .get("ztp-ztp-operator-server")
        .await
        .expect("applied");
    // And is refused the server's RBAC objects, had it been configured to apply them.
    cfg.apply_rbac = true;
    let objects = ztp_operator::controller::serving::objects(&cfg, None).expect("render");
    let err = ztp_operator::controller::serving::apply_all(&sa, &objects).await.expect_err("RBAC refused");
    assert!(err.to_string().contains("ClusterRole"), "{err}");

    for doc in docs.iter().filter(|d| d["metadata"]["namespace"].is_null()) {
        let name = doc["metadata"]["name"].as_str().expect("name");
        match doc["kind"].as_str() {
            Some("ClusterRole") => {
                drop(Api::<ClusterRole>::all(t.client.clone()).delete(name, &DeleteParams::default()).await)
            }
            Some("ClusterRoleBinding") => drop(crbs.delete(name, &DeleteParams::default()).await),
            _ => {}
        }
    }
}

/// The serving configuration the chart's controller gets when it watches every namespace.
fn cluster_config(namespace: &str, name: &str) -> ztp_operator::controller::serving::ServingConfig {
    use ztp_operator::controller::serving::{RbacScope, ServingConfig, ServingStore};
    ServingConfig {
        namespace: namespace.into(),
        name: name.into(),
        image: "registry.example.net/ztp-operator:e2e".into(),
        image_pull_policy: "IfNotPresent".into(),
        image_pull_secrets: vec![],
        replicas: 2,
        service_type: "ClusterIP".into(),
        service_port: 80,
        external_url: "http://ztp.example.net".into(),
        store: ServingStore::Pvc { claim: "ztp-ztp-operator-store".into(), create: None },
        rbac: RbacScope::Cluster,
        auth: Default::default(),
        max_downloads: 512,
        connections: Default::default(),
        device_networks: vec![],
        report_status: true,
        switches: Some(ztp_operator::switch::k8s::Discover::Matched),
        requests: Default::default(),
        limits: Default::default(),
        owner_deployment: None,
        placement: Default::default(),
        service_options: Default::default(),
        colocate: false,
        unavailable_grace: std::time::Duration::from_secs(180),
        apply_rbac: false,
    }
}

const PLACEMENT_VALUES: &str = r#"
storage:
  pvc: {accessMode: ReadWriteOnce}
server:
  nodeSelector: {ztp.example.net/role: edge}
  tolerations: [{key: dedicated, operator: Equal, value: ztp, effect: NoSchedule}]
  topologySpreadConstraints:
    - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway,
       labelSelector: {matchLabels: {app.kubernetes.io/component: server}}}
  affinity:
    nodeAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 10
          preference: {matchExpressions: [{key: zone, operator: In, values: [a]}]}
  service:
    type: LoadBalancer
    externalTrafficPolicy: Local
    loadBalancerIP: 192.0.2.10
    nodePort: 31742
    loadBalancerSourceRanges: [192.0.2.0/24, "2001:db8::/32"]
    annotations: {metallb.universe.tf/address-pool: mgmt}
  connections: {headerTimeoutSeconds: 7.5, idleTimeoutSeconds: 20, sendTimeoutSeconds: 45, maxPerSource: 64}
"#;

/// The server Deployment and Service carry [`PLACEMENT_VALUES`]; with the ReadWriteOnce claim the
/// server pods must share a node with the chart's controller pods.
async fn check_placement(client: &Client, ns: &str, server: &Deployment) {
    let p = pod(server);
    // The connection limits reach `serve` (its environment is its configuration).
    let env: BTreeMap<String, Option<String>> =
        p.containers[0].env.iter().flatten().map(|e| (e.name.clone(), e.value.clone())).collect();
    for (name, value) in [
        ("ZTP_HEADER_TIMEOUT_SECONDS", "7.5"),
        ("ZTP_IDLE_TIMEOUT_SECONDS", "20"),
        ("ZTP_SEND_TIMEOUT_SECONDS", "45"),
        ("ZTP_MAX_CONNECTIONS_PER_SOURCE", "64"),
    ] {
        assert_eq!(env.get(name), Some(&Some(value.to_owned())), "{name} of the server: {env:?}");
    }
    assert_eq!(
        p.node_selector.as_ref().and_then(|n| n.get("ztp.example.net/role")).map(String::as_str),
        Some("edge")
    );
    let tolerations = p.tolerations.clone().unwrap_or_default();
    assert_eq!(tolerations.len(), 1);
    assert_eq!(
        (tolerations[0].key.as_deref(), tolerations[0].effect.as_deref()),
        (Some("dedicated"), Some("NoSchedule"))
    );
    let spread = p.topology_spread_constraints.clone().unwrap_or_default();
    assert_eq!(spread.len(), 1);
    assert_eq!(spread[0].topology_key, "topology.kubernetes.io/zone");
    let affinity = p.affinity.clone().expect("affinity");
    assert!(affinity.node_affinity.is_some(), "the configured affinity is kept");
    let terms = affinity
        .pod_affinity
        .and_then(|a| a.required_during_scheduling_ignored_during_execution)
        .expect("ReadWriteOnce: a required pod affinity");
    assert_eq!(terms.len(), 1);
    assert_eq!(terms[0].topology_key, "kubernetes.io/hostname");
    let controller =
        Api::<Deployment>::namespaced(client.clone(), ns).get("ztp-ztp-operator").await.expect("get");
    let controller_pods = controller.spec.and_then(|s| s.selector.match_labels).expect("selector");
    assert_eq!(
        terms[0].label_selector.as_ref().and_then(|l| l.match_labels.clone()),
        Some(controller_pods),
        "beside the controller's pods"
    );
    let svc = Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), ns)
        .get("ztp-ztp-operator-server")
        .await
        .expect("server Service");
    let annotations = svc.metadata.annotations.unwrap_or_default();
    assert_eq!(annotations.get("metallb.universe.tf/address-pool").map(String::as_str), Some("mgmt"));
    let spec = svc.spec.expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
    assert_eq!(spec.load_balancer_ip.as_deref(), Some("192.0.2.10"));
    assert_eq!(spec.ports.as_ref().map(|p| p[0].node_port), Some(Some(31742)), "the chart's nodePort");
    assert_eq!(
        spec.load_balancer_source_ranges,
        Some(vec!["192.0.2.0/24".to_owned(), "2001:db8::/32".to_owned()])
    );
}

/// The chart's connection values default to `serve`'s own defaults (read from its flags), and
/// reach the controller as its `--serving-…` variables.
#[test]
fn the_charts_connection_defaults_are_the_servers() {
    use clap::Parser;
    let cli = ztp_operator::cli::Cli::try_parse_from([
        "ztp-operator",
        "serve",
        "--store-dir=/nonexistent",
        "--external-url=http://ztp.example.net",
    ])
    .expect("serve flags");
    let ztp_operator::cli::Command::Serve(serve) = cli.command else { panic!("not serve") };
    let l = &serve.listen;
    let docs = template("ztp", "ztp-system", &[]);
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").expect("controller Deployment");
    let env = |name: &str| {
        deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("{name} not set"))
            .to_owned()
    };
    let seconds = |name: &str| env(name).parse::<f64>().expect("seconds");
    assert_eq!(seconds("ZTP_SERVING_HEADER_TIMEOUT_SECONDS"), l.header_timeout_seconds);
    assert_eq!(seconds("ZTP_SERVING_IDLE_TIMEOUT_SECONDS"), l.idle_timeout_seconds);
    assert_eq!(seconds("ZTP_SERVING_SEND_TIMEOUT_SECONDS"), l.send_timeout_seconds);
    assert_eq!(env("ZTP_SERVING_MAX_CONNECTIONS_PER_SOURCE"), l.max_connections_per_source.to_string());
    assert_eq!(env("ZTP_SERVING_MAX_DOWNLOADS"), l.max_downloads.to_string());
    // No node port or source ranges unless asked.
    assert!(
        deployment.to_string().find("ZTP_SERVING_NODE_PORT").is_none()
            && deployment.to_string().find("ZTP_SERVING_LOAD_BALANCER_SOURCE_RANGES").is_none()
    );
}

/// The controller container's probes, metrics port and listen address, and the ServiceMonitor
/// scraping it, as rendered (the endpoints are the binary's `--metrics-listen`).
#[test]
fn the_controller_has_probes_a_metrics_port_and_a_monitor() {
    for (port, extra) in [(8080, None), (9090, Some("controller.metrics.port=9090"))] {
        let mut args = vec![
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--api-versions",
            "monitoring.coreos.com/v1",
        ];
        args.extend(extra.iter().flat_map(|e| ["--set", *e]));
        let docs = template("ztp", "ztp-system", &args);
        let deployment = docs.iter().find(|d| d["kind"] == "Deployment").expect("controller Deployment");
        let c = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["ports"], json!([{"name": "metrics", "containerPort": port, "protocol": "TCP"}]));
        assert_eq!(c["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": "metrics"}));
        assert_eq!(c["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "metrics"}));
        let listen = c["env"].as_array().expect("env").iter().find(|e| e["name"] == "ZTP_METRICS_LISTEN");
        assert_eq!(listen.map(|e| e["value"].clone()), Some(json!(format!("0.0.0.0:{port}"))));
        let service = docs
            .iter()
            .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == "ztp-ztp-operator-metrics")
            .expect("metrics Service");
        assert_eq!(service["spec"]["ports"][0]["port"], port);
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
        assert_eq!(service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"]);
        let monitor = docs
            .iter()
            .find(|d| d["kind"] == "ServiceMonitor" && d["metadata"]["name"] == "ztp-ztp-operator-controller")
            .expect("the controller's ServiceMonitor");
        assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
        assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
        let labels = service["metadata"]["labels"].as_object().expect("labels");
        for (k, v) in monitor["spec"]["selector"]["matchLabels"].as_object().expect("selector") {
            assert_eq!(labels.get(k), Some(v), "the monitor selects the metrics Service ({k})");
        }
    }
    // Without the server managed, the controller is still scraped.
    let docs = template(
        "ztp",
        "ztp-system",
        &[
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "server.manage=false",
            "--api-versions",
            "monitoring.coreos.com/v1",
        ],
    );
    let monitors: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "ServiceMonitor").collect();
    assert_eq!(monitors.len(), 1);
    assert_eq!(monitors[0]["metadata"]["name"], "ztp-ztp-operator-controller");
    // Off by default: no metrics Service, no monitor; the probes stay.
    let plain = template("ztp", "ztp-system", &[]);
    assert!(!kinds(&plain).contains(&"Service") && !kinds(&plain).contains(&"ServiceMonitor"));
}

#[test]
fn values_schema_refuses_typos_and_wrong_types() {
    let chart = chart();
    let chart = chart.to_str().expect("utf-8 path");
    for (set, needle) in [
        ("server.replicas=two", "/server/replicas"),
        ("server.servce.type=LoadBalancer", "servce"),
        ("server.service.type=Loadbalancer", "/server/service/type"),
        ("server.service.externalTrafficPolicy=local", "/server/service/externalTrafficPolicy"),
        ("storage.pvc.accessMode=ReadWriteOncePod", "/storage/pvc/accessMode"),
        ("controller.maxConcurentFetches=4", "maxConcurentFetches"),
        ("server.affinity.nodeAfinity.x=y", "nodeAfinity"),
        ("controller.metrics.port=http", "/controller/metrics/port"),
        ("server.connections.headerTimeoutSeconds=0", "/server/connections/headerTimeoutSeconds"),
        ("server.connections.sendTimeoutSeconds=soon", "/server/connections/sendTimeoutSeconds"),
        ("server.connections.maxPerSource=-1", "/server/connections/maxPerSource"),
        ("server.connections.idleTimeout=5", "idleTimeout"),
        ("server.service.nodePort=70000", "/server/service/nodePort"),
        ("server.service.loadBalancerSourceRanges={10.0.0.0}", "/server/service/loadBalancerSourceRanges/0"),
        ("server.deviceNetworks={mgmt}", "/server/deviceNetworks/0"),
    ] {
        let out = helm_output(&["template", "x", chart, "--set", set]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{set}: accepted");
        assert!(err.contains(needle), "{set}: {err}");
    }
    let out = helm_output(&[
        "template",
        "x",
        chart,
        "--set",
        "storage.pvc.accessMode=ReadWriteOnce",
        "--set",
        "controller.replicas=2",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("controller.replicas=1"));
    // What is right still renders.
    helm(&[
        "template",
        "x",
        chart,
        "--set",
        "server.service.type=NodePort",
        "--set",
        "server.service.externalTrafficPolicy=Local",
        "--set",
        "server.service.nodePort=30080",
        "--set",
        "server.connections.maxPerSource=0",
        "--set-json",
        "server.connections.headerTimeoutSeconds=2.5",
    ]);
}

#[tokio::test]
async fn the_controller_runs_with_the_charts_service_account_and_rbac() {
    let t = support::kube_test("chart-rbac").await;
    let ns = t.namespace.clone();
    // With placement, Service options and a ReadWriteOnce claim: they reach the server's objects.
    let values_dir = tempfile::tempdir().expect("values dir");
    let values = values_dir.path().join("placement.yaml");
    std::fs::write(&values, PLACEMENT_VALUES).expect("write values");
    let docs = template(
        "ztp",
        &ns,
        &[
            "--set",
            &format!("controller.watchNamespace={ns}"),
            "--set",
            "externalURL=http://ztp.example.net",
            "-f",
            values.to_str().expect("utf-8 path"),
        ],
    );
    // Everything the chart installs exists for real (no kubelet: the Deployment's pods never run;
    // this test runs the controller process itself, with that Deployment's configuration).
    apply_docs(&t.client, &ns, &docs, false).await;
    let fullname = "ztp-ztp-operator";
    let controller_deployment =
        docs.iter().find(|d| d["kind"] == "Deployment").expect("controller Deployment");
    assert_eq!(controller_deployment["spec"]["template"]["spec"]["serviceAccountName"], fullname);

    // A token of the chart's ServiceAccount (TokenRequest), in a kubeconfig.
    let env = support::env().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (kubeconfig, narrow) = service_account_client(&t, fullname, dir.path()).await;
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).expect("store dir");

    let body = random_bytes(200_000, 61);
    let src = SourceServer::start(vec![("/nos.bin", body.clone(), Behavior::Serve)]).await;
    let images: Api<OsImage> = Api::namespaced(t.client.clone(), &ns);
    let image =
        osimage("nos", "nos", "1", &src.url_of("/nos.bin"), &Sha256Digest::of(&body).to_string(), json!({}));
    images.create(&PostParams::default(), &image).await.expect("create image");
    let profile: SwitchProfile = serde_json::from_value(json!({
        "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "SwitchProfile", "metadata": {"name": "leaf"},
        "spec": {"match": {"serialNumbers": ["SN-1"]}, "onie": {"installImage": {"name": "nos"}}},
    }))
    .expect("profile");
    let profiles: Api<SwitchProfile> = Api::namespaced(t.client.clone(), &ns);
    profiles.create(&PostParams::default(), &profile).await.expect("create profile");

    // And the shipped examples (everything but the offline lab), as a user applies them: their
    // OsImages point at vendor URLs, so each source is swapped for this test's server with bytes
    // of the same file name and their digest; ConfigMaps, Secrets and profiles are applied as
    // they are.
    let mut examples: Vec<Value> = Vec::new();
    let mut served: Vec<(String, bytes::Bytes)> = Vec::new();
    for (i, doc) in crate::crds::example_documents().into_iter().enumerate() {
        if doc.file.components().any(|c| c.as_os_str() == "lab") {
            continue;
        }
        let mut value = doc.value;
        if value["kind"] == "OsImage" {
            let name = value["metadata"]["name"].as_str().expect("name").to_owned();
            let source = &value["spec"]["source"];
            let original = source["url"]["url"].as_str().or(source["s3"]["key"].as_str()).unwrap_or(&name);
            let without_query = original.split('?').next().unwrap_or(original);
            let file = without_query.rsplit('/').next().unwrap_or(&name).to_owned();
            let bytes = random_bytes(64 * 1024, 1000 + i as u64);
            let path = format!("/{name}/{file}");
            value["spec"]["sha256"] = json!(Sha256Digest::of(&bytes).to_string());
            value["spec"]["source"] = json!({"url": {"url": src.url_of(&path)}});
            served.push((path, bytes));
        }
        examples.push(value);
    }
    assert!(served.len() >= 4, "the examples have OsImages for every family: {served:?}");
    for (path, bytes) in &served {
        src.set_file(path, bytes.clone());
    }
    apply_docs(&t.client, &ns, &examples, false).await;

    let mut vars = controller_env(controller_deployment, "ztp-controller-0", &ns, &store);
    vars.insert("KUBECONFIG".into(), kubeconfig.display().to_string());
    vars.insert("RUST_LOG".into(), "info".into());
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut c = Controller(procs::spawn(
        "ztp-operator",
        Path::new(env!("CARGO_BIN_EXE_ztp-operator")),
        &["controller".to_owned()],
        &vars,
        env.log_dir.join("chart-rbac-controller.log"),
    ));

    // Every OsImage and SwitchProfile, the test's own ("nos", "leaf") and every shipped example,
    // reaches Ready under the chart's RBAC.
    let profile_ready = |p: &SwitchProfile| {
        let ready = p.status.as_ref().and_then(|s| find_condition(&s.conditions, ConditionType::Ready));
        ready.is_some_and(|c| c.status == "True")
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut waiting: Vec<String> = Vec::new();
        for i in images.list(&ListParams::default()).await.expect("list images").items {
            if !is_ready(&i) {
                waiting.push(format!("OsImage {}: {:?}", i.metadata.name.unwrap_or_default(), i.status));
            }
        }
        for p in profiles.list(&ListParams::default()).await.expect("list profiles").items {
            if !profile_ready(&p) {
                waiting.push(format!(
                    "SwitchProfile {}: {:?}",
                    p.metadata.name.unwrap_or_default(),
                    p.status
                ));
            }
        }
        if waiting.is_empty() {
            break;
        }
        c.0.assert_running();
        assert!(
            Instant::now() < deadline,
            "examples not Ready:\n{}\n{}",
            waiting.join("\n"),
            procs::tail(&c.0.log, 30)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let n_profiles = profiles.list(&ListParams::default()).await.expect("list").items.len();
    assert!(n_profiles >= 10, "the examples' profiles were applied: {n_profiles}");

    // The serving objects, owned by the chart's controller Deployment, the server's Role exact.
    let deployments: Api<Deployment> = Api::namespaced(t.client.clone(), &ns);
    let owner_uid = deployments.get(fullname).await.expect("controller Deployment").metadata.uid;
    let server = wait_obj(&deployments, "ztp-ztp-operator-server", "applied", &mut c, |_| true).await;
    let owners = server.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1);
    assert_eq!((owners[0].kind.as_str(), owners[0].name.as_str()), ("Deployment", fullname));
    assert_eq!(Some(owners[0].uid.clone()), owner_uid);
    // The server's Role is the chart's, bound to the server's ServiceAccount only.
    let role = Api::<Role>::namespaced(t.client.clone(), &ns)
        .get("ztp-ztp-operator-server-activity")
        .await
        .expect("server Role");
    assert_eq!(flat_rules(&role.rules.unwrap_or_default()), server_rules(), "the server gets no Secrets");
    assert!(
        role.metadata.managed_fields.iter().flatten().all(|m| m.manager.as_deref() == Some("helm-e2e")),
        "installed by the chart, not the controller"
    );
    let binding = Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(t.client.clone(), &ns)
        .get("ztp-ztp-operator-server-activity")
        .await
        .expect("server RoleBinding");
    let subjects = binding.subjects.unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].name, "ztp-ztp-operator-server");
    assert_eq!(pod(&server).service_account_name.as_deref(), Some("ztp-ztp-operator-server"));
    let claim =
        pod(&server).volumes.iter().flatten().find_map(|v| v.persistent_volume_claim.clone()).expect("claim");
    assert_eq!(claim.claim_name, "ztp-ztp-operator-store", "the chart's claim");
    check_placement(&t.client, &ns, &server).await;
    let log = std::fs::read_to_string(&c.0.log).unwrap_or_default();
    assert!(!log.contains("Forbidden") && !log.contains("forbidden"), "a request was refused:\n{log}");

    // And not more than that: the chart's identity cannot reach beyond its job.
    let forbidden = |r: Result<(), kube::Error>, what: &str| expect_forbidden(r, what);
    forbidden(
        Api::<Secret>::namespaced(narrow.clone(), "default").list(&ListParams::default()).await.map(|_| ()),
        "Secrets outside the watched namespace",
    );
    forbidden(
        Api::<Deployment>::namespaced(narrow.clone(), &ns)
            .delete("ztp-ztp-operator-server", &DeleteParams::default())
            .await
            .map(|_| ()),
        "deleting the server",
    );
    let other: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "anything-else"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}},
    }))
    .expect("deployment");
    forbidden(
        Api::<Deployment>::namespaced(narrow.clone(), &ns)
            .patch("anything-else", &PatchParams::apply("intruder"), &Patch::Apply(&other))
            .await
            .map(|_| ()),
        "another Deployment",
    );
    let wide: ClusterRole = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": format!("{ns}-wide")},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
    }))
    .expect("cluster role");
    forbidden(
        Api::<ClusterRole>::all(narrow.clone())
            .patch(&format!("{ns}-wide"), &PatchParams::apply("intruder"), &Patch::Apply(&wide))
            .await
            .map(|_| ()),
        "a ClusterRole",
    );
}
