//! The serving Deployment the controller applies (`--manage-serving`), on the real apiserver.
//! There is no kubelet, so the pods never run: the tests assert on the applied objects (volumes,
//! env, securityContext, Service ports, RBAC), on a configuration change rolling the pod template,
//! on hand edits being undone within seconds, and on the claim being created only when asked.

use std::time::{Duration, Instant};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{PersistentVolumeClaim, Secret, Service, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::json;
use ztp_operator::controller::serving::{
    self, MANAGED_BY, MANAGED_BY_LABEL, RbacScope, SERVING_FIELD_MANAGER, ServingConfig,
};

use crate::support::{
    self, KubeTest,
    deployment::{Controller, container, env_of, flat_rules, hash, pod, server_rules, wait_obj},
    store::{Backend, TestStore},
};

/// Starts the real binary as the admin user, watching only the test's namespace, serving objects
/// in that namespace too.
async fn controller(t: &KubeTest, store: &TestStore, extra: &[&str], log: &str) -> Controller {
    let mut args = vec![
        "controller".to_owned(),
        format!("--namespace={}", t.namespace),
        "--leader-elect=false".into(),
        "--metrics-listen=127.0.0.1:0".into(),
        "--external-url=http://ztp.example.net".into(),
        "--manage-serving=true".into(),
        format!("--serving-namespace={}", t.namespace),
        "--serving-image=registry.example.net/ztp-operator:e2e".into(),
        "--serving-rbac=true".into(),
    ];
    args.extend(store.flags());
    args.extend(extra.iter().map(|s| s.to_string()));
    Controller(support::binaries::with_cluster(&args, log).await)
}

fn replicas(d: &Deployment) -> Option<i32> {
    d.spec.as_ref().and_then(|s| s.replicas)
}

fn image(d: &Deployment) -> &str {
    container(d).image.as_deref().unwrap_or_default()
}

#[tokio::test]
async fn fs_serving_objects_follow_the_configuration_and_edits_are_undone() {
    let t = support::kube_test("serving-fs").await;
    let store = TestStore::new(Backend::Fs, "serving-fs").await;
    let ns = t.namespace.clone();
    let deployments: Api<Deployment> = Api::namespaced(t.client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(t.client.clone(), &ns);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(t.client.clone(), &ns);
    let mut c = controller(&t, &store, &["--serving-pvc=ztp-store"], "serving-fs-1.log").await;

    let d = wait_obj(&deployments, "ztp-server", "applied", &mut c, |_| true).await;
    assert_eq!(replicas(&d), Some(2));
    assert_eq!(image(&d), "registry.example.net/ztp-operator:e2e");
    assert_eq!(
        d.metadata.labels.as_ref().and_then(|l| l.get(MANAGED_BY_LABEL)).map(String::as_str),
        Some(MANAGED_BY)
    );
    let managers: Vec<String> =
        d.metadata.managed_fields.iter().flatten().filter_map(|m| m.manager.clone()).collect();
    assert_eq!(managers, [SERVING_FIELD_MANAGER], "server-side applied by the controller only");
    let p = pod(&d);
    let claim =
        p.volumes.iter().flatten().find_map(|v| v.persistent_volume_claim.clone()).expect("claim volume");
    assert_eq!(claim.claim_name, "ztp-store");
    assert!(p.volumes.iter().flatten().any(|v| v.name == "tmp" && v.empty_dir.is_some()));
    assert_eq!(env_of(&d, "ZTP_STORE_DIR").as_deref(), Some(serving::STORE_MOUNT));
    assert_eq!(env_of(&d, "ZTP_EXTERNAL_URL").as_deref(), Some("http://ztp.example.net"));
    assert_eq!(env_of(&d, "ZTP_REPORT_STATUS").as_deref(), Some("true"));
    // Switches: the servers keep them in the watched namespace, with the report key the
    // controller generated once into a Secret (a random key, kept across restarts).
    assert_eq!(env_of(&d, "ZTP_SWITCHES").as_deref(), Some("true"));
    assert_eq!(env_of(&d, "ZTP_SWITCH_NAMESPACE").as_deref(), Some(ns.as_str()));
    assert_eq!(env_of(&d, "ZTP_REPORT_KEY_FILE").as_deref(), Some(serving::REPORT_KEY_FILE));
    let secrets: Api<Secret> = Api::namespaced(t.client.clone(), &ns);
    let key = secrets.get("ztp-server-report-key").await.expect("the report key Secret");
    let key = key.data.and_then(|d| d.get("key").cloned()).expect("key").0;
    assert!(ztp_operator::switch::token::ReportKey::from_bytes("the Secret", &key).is_ok(), "{key:?}");
    let mounted =
        p.volumes.iter().flatten().find_map(|v| v.secret.clone().filter(|_| v.name == "report-key"));
    assert_eq!(mounted.and_then(|s| s.secret_name).as_deref(), Some("ztp-server-report-key"));
    let psc = p.security_context.clone().expect("pod securityContext");
    assert_eq!((psc.run_as_non_root, psc.run_as_user), (Some(true), Some(65532)));
    let sc = container(&d).security_context.clone().expect("securityContext");
    assert_eq!((sc.read_only_root_filesystem, sc.allow_privilege_escalation), (Some(true), Some(false)));
    assert_eq!(sc.capabilities.and_then(|c| c.drop), Some(vec!["ALL".to_owned()]));
    assert_eq!(p.service_account_name.as_deref(), Some("ztp-server"));

    let svc = services.get("ztp-server").await.expect("service");
    let spec = svc.spec.expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    let port = &spec.ports.expect("ports")[0];
    assert_eq!(port.port, 80);
    assert_eq!(
        port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("http".into()))
    );
    assert_eq!(spec.selector, d.spec.as_ref().and_then(|s| s.selector.match_labels.clone()));
    Api::<ServiceAccount>::namespaced(t.client.clone(), &ns)
        .get("ztp-server")
        .await
        .expect("service account");
    let role = Api::<Role>::namespaced(t.client.clone(), &ns).get("ztp-server-activity").await.expect("role");
    assert_eq!(flat_rules(&role.rules.unwrap_or_default()), server_rules(), "no Secrets, nothing to read");
    let rb = Api::<RoleBinding>::namespaced(t.client.clone(), &ns)
        .get("ztp-server-activity")
        .await
        .expect("binding");
    assert_eq!(rb.role_ref.name, "ztp-server-activity");
    assert!(claims.get_opt("ztp-store").await.expect("get claim").is_none(), "no claim unless asked");

    // A no-op re-apply writes nothing: the watch does not feed itself.
    let rv = d.metadata.resource_version.clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(deployments.get("ztp-server").await.expect("get").metadata.resource_version, rv);

    // Hand edits (another field manager) are undone within seconds.
    let edit = PatchParams { field_manager: Some("kubectl-edit".into()), ..Default::default() };
    let patch = json!({"spec": {"replicas": 7, "template": {"spec": {"containers": [{"name": "server", "image": "evil:1"}]}}}});
    let edited = deployments.patch("ztp-server", &edit, &Patch::Strategic(&patch)).await.expect("edit");
    assert_eq!((replicas(&edited), image(&edited)), (Some(7), "evil:1"));
    let started = Instant::now();
    let d = wait_obj(&deployments, "ztp-server", "corrected", &mut c, |d| {
        replicas(d) == Some(2) && image(d) == "registry.example.net/ztp-operator:e2e"
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(10), "corrected after {:?}", started.elapsed());
    let first_hash = hash(&d);
    assert_eq!(first_hash.len(), 16);
    // A deleted Service comes back.
    services.delete("ztp-server", &DeleteParams::default()).await.expect("delete service");
    wait_obj(&services, "ztp-server", "recreated", &mut c, |_| true).await;

    // Restarted with other flags: the pod template (and its hash) changes; the claim is created.
    drop(c);
    let mut c = controller(
        &t,
        &store,
        &[
            "--serving-pvc=ztp-store",
            "--serving-max-downloads=64",
            "--serving-pvc-create=true",
            "--serving-pvc-size=2Gi",
            "--serving-pvc-storage-class=fast-rwx",
        ],
        "serving-fs-2.log",
    )
    .await;
    let d = wait_obj(&deployments, "ztp-server", "re-rendered", &mut c, |d| hash(d) != first_hash).await;
    assert_eq!(env_of(&d, "ZTP_MAX_DOWNLOADS").as_deref(), Some("64"));
    // The report key survives the restart (every device's token depends on it).
    let again = secrets.get("ztp-server-report-key").await.expect("the report key Secret");
    assert_eq!(again.data.and_then(|d| d.get("key").cloned()).map(|k| k.0), Some(key));
    let pvc = wait_obj(&claims, "ztp-store", "created", &mut c, |_| true).await;
    let spec = pvc.spec.expect("claim spec");
    assert_eq!(spec.storage_class_name.as_deref(), Some("fast-rwx"));
    assert_eq!(spec.access_modes, Some(vec!["ReadWriteMany".to_owned()]));
    let size = spec.resources.and_then(|r| r.requests).and_then(|r| r.get("storage").cloned());
    assert_eq!(size.map(|q| q.0), Some("2Gi".to_owned()));
}

#[tokio::test]
async fn s3_serving_objects_carry_the_bucket_credentials_and_auth() {
    let t = support::kube_test("serving-s3").await;
    let store = TestStore::new(Backend::S3, "serving-s3").await;
    let ns = t.namespace.clone();
    let deployments: Api<Deployment> = Api::namespaced(t.client.clone(), &ns);
    let mut c = controller(
        &t,
        &store,
        &[
            "--s3-region=us-east-1",
            "--serving-name=edge-ztp",
            "--serving-replicas=3",
            "--serving-service-type=NodePort",
            "--serving-s3-credentials-secret=s3-creds",
            "--serving-admin-token-secret=ztp-admins",
            "--serving-oidc-issuer=https://idp.example.net",
            "--serving-oidc-audience=ztp",
            "--serving-report-status=false",
            "--serving-switches=false",
        ],
        "serving-s3.log",
    )
    .await;
    let d = wait_obj(&deployments, "edge-ztp", "applied", &mut c, |_| true).await;
    assert_eq!(replicas(&d), Some(3));
    let bucket = store.bucket.clone().expect("bucket");
    let endpoint = support::env().await.s3.endpoint.clone();
    for (k, v) in [
        ("ZTP_S3_BUCKET", bucket.as_str()),
        ("ZTP_S3_ENDPOINT", endpoint.as_str()),
        ("ZTP_S3_REGION", "us-east-1"),
        ("ZTP_S3_PATH_STYLE", "true"),
        ("ZTP_ADMIN_TOKEN_FILE", "/etc/ztp/admin/tokens"),
        ("ZTP_OIDC_ISSUER", "https://idp.example.net"),
        ("ZTP_OIDC_AUDIENCE", "ztp"),
    ] {
        assert_eq!(env_of(&d, k).as_deref(), Some(v), "{k}");
    }
    assert_eq!(env_of(&d, "ZTP_STORE_DIR"), None);
    assert_eq!(env_of(&d, "ZTP_REPORT_STATUS"), None);
    let refs: Vec<(String, String, String)> = container(&d)
        .env
        .iter()
        .flatten()
        .filter_map(|e| {
            let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
            Some((e.name.clone(), r.name.clone(), r.key.clone()))
        })
        .collect();
    assert_eq!(
        refs,
        [
            ("AWS_ACCESS_KEY_ID".to_owned(), "s3-creds".to_owned(), "accessKeyId".to_owned()),
            ("AWS_SECRET_ACCESS_KEY".to_owned(), "s3-creds".to_owned(), "secretAccessKey".to_owned()),
        ]
    );
    let p = pod(&d);
    assert!(p.volumes.iter().flatten().all(|v| v.persistent_volume_claim.is_none()));
    let secret = p.volumes.iter().flatten().find_map(|v| v.secret.clone()).expect("token volume");
    assert_eq!(secret.secret_name.as_deref(), Some("ztp-admins"));
    assert_eq!(p.automount_service_account_token, Some(false), "no API token without --report-status");
    let svc = Api::<Service>::namespaced(t.client.clone(), &ns).get("edge-ztp").await.expect("service");
    let spec = svc.spec.expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("NodePort"));
    assert_eq!(spec.ports.expect("ports")[0].port, 80);
    let role = Api::<Role>::namespaced(t.client.clone(), &ns).get("edge-ztp-activity").await.expect("role");
    assert!(role.rules.unwrap_or_default().is_empty(), "no permissions without --report-status");
    drop(c);

    // Watching every namespace puts the server's permissions in a ClusterRole. (A controller
    // watching everything would reconcile the other tests' objects: applied in-process here.)
    let cluster = ServingConfig {
        namespace: ns.clone(),
        name: "edge-ztp".into(),
        image: "registry.example.net/ztp-operator:e2e".into(),
        image_pull_policy: "IfNotPresent".into(),
        image_pull_secrets: vec![],
        replicas: 1,
        service_type: "LoadBalancer".into(),
        service_port: 80,
        external_url: "http://ztp.example.net".into(),
        store: serving::ServingStore::S3 {
            bucket,
            prefix: None,
            endpoint: Some(endpoint),
            region: None,
            path_style: true,
            credentials_secret: None,
            ca_config_map: None,
        },
        rbac: RbacScope::Cluster,
        auth: Default::default(),
        max_downloads: 10,
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
        apply_rbac: true,
    };
    let objects = serving::objects(&cluster, None).expect("render");
    serving::apply_all(&t.client, &objects).await.expect("apply cluster-scoped serving objects");
    let name = cluster.cluster_role_name();
    let cr = Api::<ClusterRole>::all(t.client.clone()).get(&name).await.expect("cluster role");
    assert_eq!(flat_rules(&cr.rules.unwrap_or_default()), server_rules());
    let crbs: Api<ClusterRoleBinding> = Api::all(t.client.clone());
    let crb = crbs.get(&name).await.expect("cluster role binding");
    assert_eq!(crb.subjects.expect("subjects")[0].namespace.as_deref(), Some(ns.as_str()));
    crbs.delete(&name, &DeleteParams::default()).await.expect("cleanup");
    Api::<ClusterRole>::all(t.client.clone()).delete(&name, &DeleteParams::default()).await.expect("cleanup");
}

/// The server Deployment's readiness reaches the controller's own Deployment as Events: a
/// Warning `ServersUnavailable` once fewer replicas than asked are available past the grace (no
/// kubelet here, so none ever is), a Normal `ServersAvailable` once its status says they are.
#[tokio::test]
async fn unavailable_servers_are_told_on_the_controllers_deployment() {
    use k8s_openapi::api::events::v1::Event;
    let t = support::kube_test("serving-ready").await;
    let store = TestStore::new(Backend::Fs, "serving-ready").await;
    let ns = t.namespace.clone();
    let deployments: Api<Deployment> = Api::namespaced(t.client.clone(), &ns);
    let owner: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "ztp-controller"},
        "spec": {"selector": {"matchLabels": {"app": "ztp-controller"}}, "template": {"metadata": {"labels": {"app": "ztp-controller"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}},
    }))
    .expect("owner");
    deployments.create(&Default::default(), &owner).await.expect("owner Deployment");
    let mut c = controller(
        &t,
        &store,
        &[
            "--serving-pvc=ztp-store",
            "--serving-owner-deployment=ztp-controller",
            "--serving-unavailable-grace-seconds=1",
        ],
        "serving-ready.log",
    )
    .await;
    let events: Api<Event> = Api::namespaced(t.client.clone(), &ns);
    let wait_event = |reason: &'static str| {
        let events = events.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let list = events.list(&Default::default()).await.expect("events");
                if let Some(e) = list.items.into_iter().find(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("ztp-controller")
                }) {
                    return e;
                }
                assert!(Instant::now() < deadline, "no {reason} Event within 30 s");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let d = wait_obj(&deployments, "ztp-server", "applied", &mut c, |_| true).await;
    let warning = wait_event("ServersUnavailable").await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    let note = warning.note.unwrap_or_default();
    assert!(note.contains("0 of 2 replicas available"), "{note}");
    // The Deployment's status, as the deployment controller would write it once pods run.
    let status = json!({"status": {"observedGeneration": d.metadata.generation, "replicas": 2, "readyReplicas": 2, "availableReplicas": 2, "updatedReplicas": 2}});
    deployments
        .patch_status("ztp-server", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("write status");
    let normal = wait_event("ServersAvailable").await;
    assert_eq!(normal.type_.as_deref(), Some("Normal"));
    assert!(normal.note.unwrap_or_default().contains("2 of 2"));
    c.0.assert_running();
}
