//! The companion serving Deployment: `ztp-operator serve` replicas the controller applies from
//! its own configuration (`--manage-serving`, the `--serving-…` flags), and keeps in shape.
//!
//! - [`ServingConfig::from_args`] turns the flags into one validated configuration.
//! - [`objects`] renders every object from it (pure functions, unit-tested): ServiceAccount, the
//!   server's RBAC only with `--serving-rbac`, the PersistentVolumeClaim when asked to create one,
//!   Service and Deployment.
//!   The pod template carries [`CONFIG_HASH_ANNOTATION`], a hash of the rendered pod spec, so any
//!   configuration change rolls the pods.
//! - [`run`] server-side applies them (field manager [`SERVING_FIELD_MANAGER`], forced) at start,
//!   whenever a watched Deployment, Service or ServiceAccount carrying the serving labels changes
//!   or disappears (someone edited it: the edit is undone), and every [`RESYNC`] (which also
//!   covers the RBAC objects and the claim). Only the leader runs it.
//!
//! The server's privileges are exactly what `serve --report-status` (see `activity/k8s.rs`) and
//! `serve --switches` (see `switch/k8s.rs`) use: `patch` on `switchprofiles/status`, `create`
//! and `patch` on `events.k8s.io` events; `get`, `list`, `watch`, `create`, `delete` on
//! `switches` and `patch` on `switches/status`; nothing else (never a Secret: the report key is
//! mounted). They are a Role in the watched namespace when the controller watches one, else a
//! ClusterRole (SwitchProfiles live in every namespace then), named `<name>-activity`. Without
//! `--serving-report-status` and `--serving-switches` the role has no rules and the pods get no
//! API token.
//!
//! With `--serving-switches` the controller creates the report key Secret `<name>-report-key`
//! once ([`ensure_report_key`]: a random key, never replaced) and mounts it into the servers.
//!
//! The controller applies those RBAC objects only with `--serving-rbac`: an identity that may
//! create a Role and a binding may give anyone what it holds itself (the controller reads
//! Secrets), whatever `resourceNames` say, so by default the chart installs them and the
//! controller holds no verb on RBAC objects.

use std::time::Duration;

mod apply;
pub mod availability;
mod config;
mod objects;

pub use apply::*;
pub use config::*;
pub use objects::*;

/// Field manager of the serving objects.
pub const SERVING_FIELD_MANAGER: &str = "ztp-operator-controller";
/// Pod-template annotation: hash of the rendered pod spec (a change rolls the Deployment).
pub const CONFIG_HASH_ANNOTATION: &str = "ztp.netops.dev/config-hash";
/// Label every serving object carries.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "ztp-operator";
/// User and group the server runs as (distroless `nonroot`).
pub const SERVER_UID: i64 = 65532;
/// Port the server container listens on (the Service maps its port, 80 by default, there).
pub const CONTAINER_PORT: i32 = 8080;
/// Where the directory store is mounted in the server.
pub const STORE_MOUNT: &str = "/var/lib/ztp/store";
/// Re-apply period even without a watch event.
pub const RESYNC: Duration = Duration::from_secs(60);
/// Wait after a failed apply before trying again.
const RETRY: Duration = Duration::from_secs(5);
/// Watch events within this window are folded into one apply.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// What can go wrong configuring or applying the serving objects.
#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    #[error("--manage-serving needs {0}")]
    Missing(&'static str),
    #[error("invalid serving configuration: {0}")]
    Invalid(String),
    #[error("render {kind}: {source}")]
    Render {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("apply {kind} {name}: {source}")]
    Apply {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("read {kind} {object}: {source}")]
    Read {
        kind: &'static str,
        /// `namespace/name`.
        object: String,
        #[source]
        source: kube::Error,
    },
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use clap::Parser;
    use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;
    use crate::cli::{Cli, Command};

    fn config(flags: &[&str]) -> Result<Option<ServingConfig>, ServingError> {
        let mut argv = vec!["ztp-operator", "controller", "--external-url=http://ztp.example.net"];
        argv.extend_from_slice(flags);
        let cli = Cli::try_parse_from(argv).expect("flags parse");
        let Command::Controller(args) = cli.command else { panic!("not the controller") };
        ServingConfig::from_args(&args)
    }

    fn fs_flags() -> Vec<&'static str> {
        vec![
            "--store-dir=/var/lib/ztp/store",
            "--namespace=fabric",
            "--manage-serving=true",
            "--serving-namespace=ztp-system",
            "--serving-name=ztp-server",
            "--serving-image=registry.example.net/ztp-operator:1.2.3",
            "--serving-pvc=ztp-store",
            "--serving-rbac=true",
        ]
    }

    fn s3_flags() -> Vec<&'static str> {
        vec![
            "--s3-bucket=images",
            "--s3-endpoint=https://rgw.example.net",
            "--s3-prefix=ztp",
            "--s3-region=eu-1",
            "--s3-path-style",
            "--manage-serving=true",
            "--serving-namespace=ztp-system",
            "--serving-image=registry.example.net/ztp-operator:1.2.3",
            "--serving-s3-credentials-secret=s3-creds",
            "--serving-admin-token-secret=admin-tokens",
            "--serving-oidc-issuer=https://idp.example.net",
            "--serving-oidc-audience=ztp",
            "--serving-public-listing",
            "--serving-device-networks=10.0.0.0/8,fd00::/8",
            "--serving-rbac=true",
        ]
    }

    /// `fs_flags()` with `flag` replacing the one of the same name.
    fn fs_with(flag: &'static str) -> Vec<&'static str> {
        let name = flag.split('=').next().unwrap_or(flag);
        let mut flags: Vec<&str> =
            fs_flags().into_iter().filter(|f| f.split('=').next() != Some(name)).collect();
        flags.push(flag);
        flags
    }

    fn render(flags: &[&str]) -> ServingObjects {
        let cfg = config(flags).expect("valid").expect("managed");
        objects(&cfg, None).expect("render")
    }

    fn pod(o: &ServingObjects) -> &PodSpec {
        o.deployment.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("pod spec")
    }

    fn container(o: &ServingObjects) -> &Container {
        &pod(o).containers[0]
    }

    fn env_value<'a>(c: &'a Container, name: &str) -> Option<&'a EnvVar> {
        c.env.iter().flatten().find(|e| e.name == name)
    }

    fn plain(c: &Container, name: &str) -> Option<String> {
        env_value(c, name).and_then(|e| e.value.clone())
    }

    fn hash(o: &ServingObjects) -> String {
        let meta = o.deployment.spec.as_ref().and_then(|s| s.template.metadata.as_ref()).expect("meta");
        meta.annotations.as_ref().and_then(|a| a.get(CONFIG_HASH_ANNOTATION)).cloned().expect("hash")
    }

    #[test]
    fn off_by_default() {
        assert!(config(&["--store-dir=/x"]).expect("valid").is_none());
    }

    #[test]
    fn fs_store_mounts_the_claim_and_runs_locked_down() {
        let o = render(&fs_flags());
        let c = container(&o);
        assert_eq!(c.image.as_deref(), Some("registry.example.net/ztp-operator:1.2.3"));
        assert_eq!(c.args, Some(vec!["serve".to_owned()]));
        assert_eq!(plain(c, "ZTP_STORE_DIR").as_deref(), Some(STORE_MOUNT));
        assert_eq!(plain(c, "ZTP_EXTERNAL_URL").as_deref(), Some("http://ztp.example.net"));
        assert_eq!(plain(c, "ZTP_LISTEN").as_deref(), Some("0.0.0.0:8080"));
        assert_eq!(plain(c, "ZTP_MAX_DOWNLOADS").as_deref(), Some("512"));
        assert_eq!(plain(c, "ZTP_REPORT_STATUS").as_deref(), Some("true"));
        assert!(env_value(c, "ZTP_S3_BUCKET").is_none() && env_value(c, "AWS_ACCESS_KEY_ID").is_none());
        let p = pod(&o);
        let claim =
            p.volumes.iter().flatten().find_map(|v| v.persistent_volume_claim.as_ref()).expect("claim");
        assert_eq!(claim.claim_name, "ztp-store");
        let mounts: Vec<(&str, &str)> =
            c.volume_mounts.iter().flatten().map(|m| (m.name.as_str(), m.mount_path.as_str())).collect();
        assert_eq!(mounts, [("tmp", "/tmp"), ("store", STORE_MOUNT), ("report-key", "/etc/ztp/report-key")]);
        let psc = p.security_context.as_ref().expect("pod securityContext");
        assert_eq!(
            (psc.run_as_non_root, psc.run_as_user, psc.fs_group),
            (Some(true), Some(65532), Some(65532))
        );
        assert_eq!(psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()), Some("RuntimeDefault"));
        let sc = c.security_context.as_ref().expect("container securityContext");
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.as_ref().and_then(|c| c.drop.clone()), Some(vec!["ALL".to_owned()]));
        let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
            p.as_ref().and_then(|p| p.http_get.as_ref()).and_then(|h| h.path.clone())
        };
        assert_eq!(path(&c.liveness_probe).as_deref(), Some("/healthcheck"));
        assert_eq!(path(&c.readiness_probe).as_deref(), Some("/readyz"));
        assert_eq!(p.service_account_name.as_deref(), Some("ztp-server"));
        assert_eq!(p.automount_service_account_token, Some(true));
        // Service: port 80 to the container's named port 8080.
        let ports = o.service.spec.as_ref().and_then(|s| s.ports.clone()).expect("ports");
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].port, 80);
        assert_eq!(
            ports[0].target_port,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("http".into()))
        );
        assert_eq!(c.ports.as_ref().map(|p| p[0].container_port), Some(8080));
        // The watched namespace holds the Role; nothing cluster-wide; no claim created.
        let role = o.role.as_ref().expect("role");
        assert_eq!(role.metadata.namespace.as_deref(), Some("fabric"));
        assert_eq!(o.role_binding.as_ref().and_then(|b| b.metadata.namespace.as_deref()), Some("fabric"));
        let subject = &o.role_binding.as_ref().and_then(|b| b.subjects.clone()).expect("subjects")[0];
        assert_eq!((subject.name.as_str(), subject.namespace.as_deref()), ("ztp-server", Some("ztp-system")));
        assert!(o.cluster_role.is_none() && o.cluster_role_binding.is_none() && o.pvc.is_none());
        assert_eq!(o.deployment.metadata.namespace.as_deref(), Some("ztp-system"));
        assert_eq!(
            o.deployment.metadata.labels.as_ref().and_then(|l| l.get(MANAGED_BY_LABEL)).map(String::as_str),
            Some(MANAGED_BY)
        );
    }

    #[test]
    fn the_role_is_exactly_what_the_server_uses() {
        let o = render(&fs_flags());
        let rules = o.role.as_ref().and_then(|r| r.rules.clone()).expect("rules");
        let flat: Vec<(Vec<String>, Vec<String>, Vec<String>)> = rules
            .into_iter()
            .map(|r| (r.api_groups.unwrap_or_default(), r.resources.unwrap_or_default(), r.verbs))
            .collect();
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            flat,
            [
                (s(&["ztp.netops.dev"]), s(&["switchprofiles/status"]), s(&["patch"])),
                (s(&["events.k8s.io"]), s(&["events"]), s(&["create", "patch"])),
                (s(&["ztp.netops.dev"]), s(&["switches"]), s(&["get", "list", "watch", "create", "delete"])),
                (s(&["ztp.netops.dev"]), s(&["switches/status"]), s(&["patch"])),
            ]
        );
        let mut quiet = fs_flags();
        quiet.extend(["--serving-report-status=false", "--serving-switches=false"]);
        let o = render(&quiet);
        assert_eq!(o.role.as_ref().and_then(|r| r.rules.clone()), Some(vec![]));
        assert_eq!(pod(&o).automount_service_account_token, Some(false));
        for var in ["ZTP_REPORT_STATUS", "ZTP_SWITCHES", "ZTP_REPORT_KEY_FILE"] {
            assert!(env_value(container(&o), var).is_none(), "{var}");
        }
        assert!(pod(&o).volumes.iter().flatten().all(|v| v.name != "report-key"));
    }

    #[test]
    fn switches_get_their_flags_scope_and_the_report_key() {
        let o = render(&fs_flags());
        let c = container(&o);
        assert_eq!(plain(c, "ZTP_SWITCHES").as_deref(), Some("true"));
        assert_eq!(plain(c, "ZTP_DISCOVER").as_deref(), Some("matched"));
        // The controller watches one namespace: the servers follow and discover there.
        assert_eq!(plain(c, "ZTP_SWITCH_NAMESPACE").as_deref(), Some("fabric"));
        assert_eq!(plain(c, "ZTP_DISCOVER_NAMESPACE").as_deref(), Some("fabric"));
        assert_eq!(plain(c, "ZTP_REPORT_KEY_FILE").as_deref(), Some(REPORT_KEY_FILE));
        let secret = pod(&o)
            .volumes
            .iter()
            .flatten()
            .find_map(|v| v.secret.as_ref().filter(|_| v.name == "report-key"))
            .expect("the report key volume");
        assert_eq!(secret.secret_name.as_deref(), Some("ztp-server-report-key"));
        let cfg = config(&fs_flags()).expect("valid").expect("managed");
        let made = report_key_secret(&cfg, None, b"0123456789abcdef0123456789abcdef").expect("secret");
        assert_eq!(made.metadata.name.as_deref(), Some("ztp-server-report-key"));
        assert_eq!(made.metadata.namespace.as_deref(), Some("ztp-system"));
        let key = made.data.as_ref().and_then(|d| d.get("key")).map(|b| b.0.clone());
        assert_eq!(key.as_deref(), Some(&b"0123456789abcdef0123456789abcdef"[..]));
        // Every namespace: no scope flags; discovery as asked.
        let all: Vec<&str> = fs_flags().into_iter().filter(|f| !f.starts_with("--namespace=")).collect();
        let o = render(&[&all[..], &["--serving-discover=all"]].concat());
        let c = container(&o);
        assert_eq!(plain(c, "ZTP_DISCOVER").as_deref(), Some("all"));
        assert!(
            env_value(c, "ZTP_SWITCH_NAMESPACE").is_none()
                && env_value(c, "ZTP_DISCOVER_NAMESPACE").is_none()
        );
    }

    #[test]
    fn s3_store_passes_the_bucket_and_credentials_and_auth() {
        let o = render(&s3_flags());
        let c = container(&o);
        for (k, v) in [
            ("ZTP_S3_BUCKET", "images"),
            ("ZTP_S3_ENDPOINT", "https://rgw.example.net"),
            ("ZTP_S3_PREFIX", "ztp"),
            ("ZTP_S3_REGION", "eu-1"),
            ("ZTP_S3_PATH_STYLE", "true"),
            ("ZTP_ADMIN_TOKEN_FILE", "/etc/ztp/admin/tokens"),
            ("ZTP_OIDC_ISSUER", "https://idp.example.net"),
            ("ZTP_OIDC_AUDIENCE", "ztp"),
            ("ZTP_PUBLIC_LISTING", "true"),
            ("ZTP_DEVICE_NETWORKS", "10.0.0.0/8,fd00::/8"),
        ] {
            assert_eq!(plain(c, k).as_deref(), Some(v), "{k}");
        }
        assert!(env_value(c, "ZTP_STORE_DIR").is_none());
        let fs = render(&fs_flags());
        for absent in ["ZTP_PUBLIC_LISTING", "ZTP_DEVICE_NETWORKS"] {
            assert!(env_value(container(&fs), absent).is_none(), "{absent} only when set");
        }
        for (name, key) in
            [("AWS_ACCESS_KEY_ID", "accessKeyId"), ("AWS_SECRET_ACCESS_KEY", "secretAccessKey")]
        {
            let r = env_value(c, name)
                .and_then(|e| e.value_from.as_ref())
                .and_then(|v| v.secret_key_ref.as_ref());
            assert_eq!(r.map(|r| (r.name.as_str(), r.key.as_str())), Some(("s3-creds", key)), "{name}");
        }
        let p = pod(&o);
        assert!(p.volumes.iter().flatten().all(|v| v.persistent_volume_claim.is_none()));
        let tokens = p.volumes.iter().flatten().find_map(|v| v.secret.as_ref()).expect("token volume");
        assert_eq!(tokens.secret_name.as_deref(), Some("admin-tokens"));
        // Watching every namespace: the server's permissions are cluster-wide.
        assert!(o.role.is_none() && o.role_binding.is_none());
        let cr = o.cluster_role.as_ref().expect("cluster role");
        assert_eq!(cr.metadata.name.as_deref(), Some("ztp-server-activity-ztp-system"));
        assert_eq!(cr.rules.as_ref().map(Vec::len), Some(4));
        let crb = o.cluster_role_binding.as_ref().expect("binding");
        assert_eq!(crb.role_ref.name, "ztp-server-activity-ztp-system");
    }

    #[test]
    fn no_rbac_object_unless_asked() {
        for flags in [fs_flags(), s3_flags()] {
            let flags: Vec<&str> = flags.into_iter().filter(|f| !f.starts_with("--serving-rbac")).collect();
            let o = render(&flags);
            assert!(o.role.is_none() && o.role_binding.is_none());
            assert!(o.cluster_role.is_none() && o.cluster_role_binding.is_none());
            // The pods still run as the server's ServiceAccount, which the chart's RBAC names.
            assert_eq!(
                pod(&o).service_account_name.as_deref(),
                Some(o.service_account.metadata.name.as_deref().unwrap_or_default())
            );
        }
    }

    #[test]
    fn the_hash_follows_the_pod_and_only_the_pod() {
        let base = hash(&render(&fs_flags()));
        assert_eq!(base, hash(&render(&fs_flags())), "stable");
        assert_ne!(base, hash(&render(&fs_with("--serving-max-downloads=64"))));
        assert_ne!(base, hash(&render(&fs_with("--serving-image=registry.example.net/ztp-operator:1.2.4"))));
        let o = render(&fs_with("--serving-replicas=5"));
        assert_eq!(base, hash(&o), "scaling does not restart pods");
        assert_eq!(o.deployment.spec.as_ref().and_then(|s| s.replicas), Some(5));
    }

    #[test]
    fn a_claim_is_created_only_when_asked_and_never_owned() {
        let mut flags = fs_flags();
        flags.extend([
            "--serving-pvc-create=true",
            "--serving-pvc-size=50Gi",
            "--serving-pvc-storage-class=cephfs",
        ]);
        let cfg = config(&flags).expect("valid").expect("managed");
        let owner = OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "ztp-operator".into(),
            uid: "0000-1111".into(),
            ..Default::default()
        };
        let o = objects(&cfg, Some(&Owner { reference: owner.clone(), pod_labels: BTreeMap::new() }))
            .expect("render");
        let pvc = o.pvc.as_ref().expect("pvc");
        assert_eq!(pvc.metadata.name.as_deref(), Some("ztp-store"));
        assert!(pvc.metadata.owner_references.is_none(), "deleting the controller must keep the images");
        let spec = pvc.spec.as_ref().expect("spec");
        assert_eq!(spec.storage_class_name.as_deref(), Some("cephfs"));
        assert_eq!(spec.access_modes, Some(vec!["ReadWriteMany".to_owned()]));
        let size = spec.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get("storage"));
        assert_eq!(size.map(|q| q.0.as_str()), Some("50Gi"));
        // Owned: the objects in the owner's namespace; not the Role in the watched namespace.
        assert_eq!(o.deployment.metadata.owner_references, Some(vec![owner.clone()]));
        assert_eq!(o.service.metadata.owner_references, Some(vec![owner.clone()]));
        assert_eq!(o.service_account.metadata.owner_references, Some(vec![owner]));
        assert!(o.role.as_ref().and_then(|r| r.metadata.owner_references.as_ref()).is_none());
    }

    fn controller_pods() -> Owner {
        Owner {
            reference: OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "ztp-operator".into(),
                uid: "0000-1111".into(),
                ..Default::default()
            },
            pod_labels: BTreeMap::from([("app.kubernetes.io/component".into(), "controller".into())]),
        }
    }

    #[test]
    fn placement_and_service_options_reach_the_objects() {
        let mut flags = fs_with("--serving-service-type=LoadBalancer");
        flags.extend([
            r#"--serving-node-selector={"ztp.example.net/role":"edge"}"#,
            r#"--serving-tolerations=[{"key":"dedicated","operator":"Equal","value":"ztp","effect":"NoSchedule"}]"#,
            r#"--serving-affinity={"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"zone","operator":"In","values":["a"]}]}]}}}"#,
            r#"--serving-topology-spread-constraints=[{"maxSkew":1,"topologyKey":"zone","whenUnsatisfiable":"ScheduleAnyway","labelSelector":{"matchLabels":{"app.kubernetes.io/component":"server"}}}]"#,
            r#"--serving-service-annotations={"metallb.universe.tf/address-pool":"mgmt"}"#,
            "--serving-external-traffic-policy=Local",
            "--serving-load-balancer-ip=192.0.2.10",
            "--serving-node-port=30080",
            "--serving-load-balancer-source-ranges=192.0.2.0/24,2001:db8::/32",
        ]);
        let o = render(&flags);
        let p = pod(&o);
        assert_eq!(
            p.node_selector.as_ref().and_then(|n| n.get("ztp.example.net/role")).map(String::as_str),
            Some("edge")
        );
        assert_eq!(p.tolerations.as_ref().map(|t| t[0].key.as_deref()), Some(Some("dedicated")));
        let affinity = p.affinity.as_ref().expect("affinity");
        assert!(
            affinity.node_affinity.is_some() && affinity.pod_affinity.is_none(),
            "no co-location with RWX"
        );
        assert_eq!(p.topology_spread_constraints.as_ref().map(|t| t[0].topology_key.as_str()), Some("zone"));
        let spec = o.service.spec.as_ref().expect("spec");
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
        assert_eq!(spec.load_balancer_ip.as_deref(), Some("192.0.2.10"));
        assert_eq!(spec.ports.as_ref().map(|p| p[0].node_port), Some(Some(30080)));
        assert_eq!(
            spec.load_balancer_source_ranges,
            Some(vec!["192.0.2.0/24".to_owned(), "2001:db8::/32".to_owned()])
        );
        let annotations = o.service.metadata.annotations.as_ref().expect("annotations");
        assert_eq!(annotations.get("metallb.universe.tf/address-pool").map(String::as_str), Some("mgmt"));
        // None set: none rendered.
        let plain = render(&fs_flags());
        let p = pod(&plain);
        assert!(p.node_selector.is_none() && p.affinity.is_none() && p.tolerations.is_none());
        assert!(plain.service.metadata.annotations.is_none());
        assert!(plain.service.spec.as_ref().is_some_and(|s| s.external_traffic_policy.is_none()
            && s.load_balancer_source_ranges.is_none()
            && s.ports.as_ref().is_some_and(|p| p[0].node_port.is_none())));
    }

    #[test]
    fn connection_limits_reach_the_server_only_when_set() {
        let mut flags = fs_flags();
        flags.extend([
            "--serving-header-timeout-seconds=2.5",
            "--serving-idle-timeout-seconds=20",
            "--serving-send-timeout-seconds=45",
            "--serving-max-connections-per-source=0",
        ]);
        let o = render(&flags);
        let c = container(&o);
        for (name, value) in [
            ("ZTP_HEADER_TIMEOUT_SECONDS", "2.5"),
            ("ZTP_IDLE_TIMEOUT_SECONDS", "20"),
            ("ZTP_SEND_TIMEOUT_SECONDS", "45"),
            ("ZTP_MAX_CONNECTIONS_PER_SOURCE", "0"),
        ] {
            assert_eq!(plain(c, name).as_deref(), Some(value), "{name}");
        }
        // Not set: the server's own defaults (no variable).
        let o = render(&fs_flags());
        let c = container(&o);
        for name in [
            "ZTP_HEADER_TIMEOUT_SECONDS",
            "ZTP_IDLE_TIMEOUT_SECONDS",
            "ZTP_SEND_TIMEOUT_SECONDS",
            "ZTP_MAX_CONNECTIONS_PER_SOURCE",
        ] {
            assert!(env_value(c, name).is_none(), "{name}");
        }
    }

    #[test]
    fn wrong_placement_and_service_options_are_refused() {
        for (flags, needle) in [
            (fs_with(r#"--serving-affinity={"nodeAfinity":{}}"#), "--serving-affinity"),
            (fs_with(r#"--serving-tolerations={"key":"x"}"#), "--serving-tolerations"),
            (fs_with("--serving-node-selector=zone=a"), "--serving-node-selector"),
            (fs_with("--serving-external-traffic-policy=Local"), "NodePort or LoadBalancer"),
            (fs_with("--serving-load-balancer-ip=192.0.2.1"), "LoadBalancer"),
            (fs_with("--serving-node-port=30080"), "--serving-node-port needs a NodePort or LoadBalancer"),
            (
                {
                    let mut f = fs_with("--serving-service-type=NodePort");
                    f.push("--serving-load-balancer-source-ranges=192.0.2.0/24");
                    f
                },
                "--serving-load-balancer-source-ranges needs a LoadBalancer",
            ),
            (
                {
                    let mut f = fs_with("--serving-service-type=NodePort");
                    f.push("--serving-node-port=0");
                    f
                },
                "--serving-node-port 0 is no port",
            ),
            (
                fs_with("--serving-header-timeout-seconds=0"),
                "--serving-header-timeout-seconds 0 is not a positive",
            ),
            (fs_with("--serving-send-timeout-seconds=NaN"), "--serving-send-timeout-seconds NaN"),
            (fs_with("--serving-pvc-access-mode=ReadWriteOncePod"), "ReadWriteOncePod"),
        ] {
            let err = config(&flags).expect_err("refused").to_string();
            assert!(err.contains(needle), "{flags:?}: {err}");
        }
    }

    #[test]
    fn a_read_write_once_claim_puts_the_servers_beside_the_controller() {
        let mut flags = fs_with("--serving-pvc-access-mode=ReadWriteOnce");
        let err = config(&flags).expect_err("no owner").to_string();
        assert!(err.contains("--serving-owner-deployment"), "{err}");
        flags.push("--serving-owner-deployment=ztp-operator");
        flags.push(r#"--serving-affinity={"podAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":[{"labelSelector":{"matchLabels":{"x":"y"}},"topologyKey":"zone"}]}}"#);
        let cfg = config(&flags).expect("valid").expect("managed");
        assert!(objects(&cfg, None).is_err(), "co-location needs the owner's pods");
        let o = objects(&cfg, Some(&controller_pods())).expect("render");
        let terms = pod(&o)
            .affinity
            .as_ref()
            .and_then(|a| a.pod_affinity.as_ref())
            .and_then(|p| p.required_during_scheduling_ignored_during_execution.clone())
            .expect("required pod affinity");
        assert_eq!(terms.len(), 2, "the configured term kept, co-location added");
        assert_eq!(terms[1].topology_key, HOSTNAME_TOPOLOGY);
        let labels = terms[1].label_selector.as_ref().and_then(|l| l.match_labels.clone());
        assert_eq!(labels, Some(controller_pods().pod_labels));
    }

    #[test]
    fn missing_pieces_are_named() {
        let without = |drop: &str| -> Vec<&'static str> {
            fs_flags().into_iter().filter(|f| !f.starts_with(drop)).collect()
        };
        let err = config(&without("--serving-image")).expect_err("no image").to_string();
        assert!(err.contains("--serving-image"), "{err}");
        let err = config(&without("--serving-pvc")).expect_err("no claim").to_string();
        assert!(err.contains("--serving-pvc"), "{err}");
        assert!(config(&fs_with("--serving-name=Not_A_Label")).is_err());
        let cli = Cli::try_parse_from([
            "ztp-operator",
            "controller",
            "--store-dir=/x",
            "--manage-serving=true",
            "--serving-image=i",
            "--serving-pvc=c",
        ])
        .expect("parse");
        let Command::Controller(args) = cli.command else { panic!("not the controller") };
        let err = ServingConfig::from_args(&args).expect_err("no url").to_string();
        assert!(err.contains("--external-url"), "{err}");
    }
}
