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
//! The server's privileges are exactly what `serve --report-status` uses (see
//! `activity/k8s.rs`): `patch` on `switchprofiles/status`, `create` and `patch` on
//! `events.k8s.io` events, nothing else (it reads no object, and never a Secret). They are a Role
//! in the watched namespace when the controller watches one, else a ClusterRole (SwitchProfiles
//! live in every namespace then), named `<name>-activity`. Without `--serving-report-status` the
//! role has no rules and the pods get no API token.
//!
//! The controller applies those RBAC objects only with `--serving-rbac`: an identity that may
//! create a Role and a binding may give anyone what it holds itself (the controller reads
//! Secrets), whatever `resourceNames` say, so by default the chart installs them and the
//! controller holds no verb on RBAC objects.

use std::{collections::BTreeMap, time::Duration};

use futures::{FutureExt, StreamExt, stream};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{
            Affinity, PersistentVolumeClaim, PodTemplateSpec, Service, ServiceAccount, Toleration,
            TopologySpreadConstraint,
        },
        rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding},
    },
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use crate::{cli::ControllerArgs, hash::Sha256Digest};

pub mod availability;

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
    #[error("read the owner Deployment {namespace}/{name}: {source}")]
    Owner {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// A claim the controller creates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewClaim {
    pub size: String,
    pub storage_class: Option<String>,
    pub access_mode: String,
}

/// Where the server finds the store: the same one the controller writes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ServingStore {
    /// A directory store: the claim, mounted at [`STORE_MOUNT`].
    Pvc { claim: String, create: Option<NewClaim> },
    /// The controller's bucket.
    S3 {
        bucket: String,
        prefix: Option<String>,
        endpoint: Option<String>,
        region: Option<String>,
        path_style: bool,
        /// Secret with keys `accessKeyId`, `secretAccessKey`.
        credentials_secret: Option<String>,
        /// ConfigMap with key `ca.crt`.
        ca_config_map: Option<String>,
    },
}

/// Where the server's permissions apply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum RbacScope {
    /// A Role + RoleBinding in this namespace (the one the controller watches).
    Namespace(String),
    /// A ClusterRole + ClusterRoleBinding (the controller watches every namespace).
    Cluster,
}

/// Where the server pods may run (the pod spec's fields of the same names).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Placement {
    pub node_selector: BTreeMap<String, String>,
    pub affinity: Option<Affinity>,
    pub tolerations: Vec<Toleration>,
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
}

/// Service settings beyond type and port.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServiceOptions {
    pub annotations: BTreeMap<String, String>,
    /// `Cluster` or `Local` (NodePort and LoadBalancer only).
    pub external_traffic_policy: Option<String>,
    pub load_balancer_ip: Option<String>,
    /// `nodePort` of the Service's port (NodePort and LoadBalancer only; default: allocated).
    pub node_port: Option<i32>,
    /// `loadBalancerSourceRanges` (CIDRs; LoadBalancer only; empty: any client).
    pub load_balancer_source_ranges: Vec<String>,
}

/// The server's connection limits (its `--header-timeout-seconds`, `--idle-timeout-seconds`,
/// `--send-timeout-seconds`, `--max-connections-per-source`); `None`: the server's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ConnectionOptions {
    pub header_timeout_seconds: Option<f64>,
    pub idle_timeout_seconds: Option<f64>,
    pub send_timeout_seconds: Option<f64>,
    pub max_connections_per_source: Option<usize>,
}

/// The controller's Deployment, owner of the serving objects in its namespace: the reference,
/// and the labels of its pods (what ReadWriteOnce co-location is an affinity to).
#[derive(Debug, Clone, PartialEq)]
pub struct Owner {
    pub reference: OwnerReference,
    pub pod_labels: BTreeMap<String, String>,
}

/// Node label of one node: the topology of ReadWriteOnce co-location.
pub const HOSTNAME_TOPOLOGY: &str = "kubernetes.io/hostname";

/// Admin credentials of the files API.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServingAuth {
    /// Secret with key `tokens`, mounted as the token file.
    pub admin_token_secret: Option<String>,
    pub oidc_issuer: Option<String>,
    pub oidc_audience: Option<String>,
    pub oidc_jwks_url: Option<String>,
    /// Anyone may list files (by default listing needs a credential).
    pub public_listing: bool,
}

/// Everything the serving objects are rendered from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServingConfig {
    pub namespace: String,
    pub name: String,
    pub image: String,
    pub image_pull_policy: String,
    pub image_pull_secrets: Vec<String>,
    pub replicas: i32,
    pub service_type: String,
    pub service_port: i32,
    pub external_url: String,
    pub store: ServingStore,
    pub rbac: RbacScope,
    pub auth: ServingAuth,
    pub max_downloads: usize,
    /// Timeouts and the per-source cap of the server's connections.
    pub connections: ConnectionOptions,
    /// Networks device routes answer (CIDRs); empty: any source.
    pub device_networks: Vec<String>,
    pub report_status: bool,
    /// `cpu` / `memory` → quantity.
    pub requests: BTreeMap<String, String>,
    pub limits: BTreeMap<String, String>,
    /// Name of the controller's Deployment (owner of the namespaced objects), if any.
    pub owner_deployment: Option<String>,
    /// Apply the server's RBAC objects too (`--serving-rbac`); otherwise someone else (the
    /// chart) installs them and the controller needs no RBAC verb.
    pub apply_rbac: bool,
    pub placement: Placement,
    pub service_options: ServiceOptions,
    /// The claim is ReadWriteOnce: the server pods must run on the controller's node.
    pub colocate: bool,
    /// How long fewer server replicas than asked may be available before a Warning Event.
    pub unavailable_grace: Duration,
}

/// `text` as a `T`, refusing what `T` would silently drop (a misspelt field) and naming `flag`.
fn strict_json<T: DeserializeOwned + Serialize>(
    flag: &str,
    text: &Option<String>,
) -> Result<Option<T>, ServingError> {
    let Some(text) = text.as_deref().filter(|t| !t.trim().is_empty()) else { return Ok(None) };
    let invalid = |why: String| ServingError::Invalid(format!("{flag}: {why}"));
    let value: Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let typed: T = serde_json::from_value(value.clone()).map_err(|e| invalid(e.to_string()))?;
    let back = serde_json::to_value(&typed).map_err(|e| invalid(e.to_string()))?;
    if without_nulls(back) != without_nulls(value) {
        return Err(invalid("a field is misspelt or misplaced (it would be ignored)".into()));
    }
    Ok(Some(typed))
}

/// Drops `null` members recursively (absent and null are the same to the typed objects).
pub(crate) fn without_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, without_nulls(v))).collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(without_nulls).collect()),
        v => v,
    }
}

/// A DNS-1035 label: what a Service name must be.
fn dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

impl ServingConfig {
    /// The configuration the flags ask for; `None` when `--manage-serving` is off.
    pub fn from_args(args: &ControllerArgs) -> Result<Option<Self>, ServingError> {
        let s = &args.serving;
        if !s.manage {
            return Ok(None);
        }
        let image = s.image.clone().ok_or(ServingError::Missing("--serving-image"))?;
        let external_url =
            args.images.external_url.clone().ok_or(ServingError::Missing(
                "--external-url (the base URL switches reach the Service at)",
            ))?;
        let namespace = s
            .serving_namespace
            .clone()
            .or_else(|| args.lease_namespace.clone())
            .or_else(|| args.namespace.clone())
            .unwrap_or_else(|| "default".into());
        if !dns_label(&s.name) || s.name.len() > 52 {
            return Err(ServingError::Invalid(format!(
                "--serving-name {:?} must be a DNS label (a-z, 0-9, '-') of at most 52 characters",
                s.name
            )));
        }
        if s.replicas < 0 {
            return Err(ServingError::Invalid(format!("--serving-replicas {} is negative", s.replicas)));
        }
        if !(1..=65535).contains(&s.service_port) {
            return Err(ServingError::Invalid(format!(
                "--serving-service-port {} is no port",
                s.service_port
            )));
        }
        let store = match (&args.store.store_dir, &args.store.s3_bucket) {
            (Some(_), _) => {
                let claim = s.pvc.clone().ok_or(ServingError::Missing(
                    "--serving-pvc (the claim mounted at --store-dir) with a directory store",
                ))?;
                let create = s.pvc_create.then(|| NewClaim {
                    size: s.pvc_size.clone(),
                    storage_class: s.pvc_storage_class.clone(),
                    access_mode: s.pvc_access_mode.clone(),
                });
                ServingStore::Pvc { claim, create }
            }
            (None, Some(bucket)) => {
                if args.store.s3_ca_file.is_some() && s.s3_ca_config_map.is_none() {
                    return Err(ServingError::Missing(
                        "--serving-s3-ca-configmap: the server cannot read the controller's --s3-ca-file",
                    ));
                }
                ServingStore::S3 {
                    bucket: bucket.clone(),
                    prefix: args.store.s3_prefix.clone(),
                    endpoint: args.store.s3_endpoint.clone(),
                    region: args.store.s3_region.clone(),
                    path_style: args.store.s3_path_style,
                    credentials_secret: s.s3_credentials_secret.clone(),
                    ca_config_map: s.s3_ca_config_map.clone(),
                }
            }
            (None, None) => return Err(ServingError::Missing("a store (--store-dir or --s3-bucket)")),
        };
        let colocate = matches!(store, ServingStore::Pvc { .. }) && s.pvc_access_mode == "ReadWriteOnce";
        if matches!(store, ServingStore::Pvc { .. }) && s.pvc_access_mode == "ReadWriteOncePod" {
            return Err(ServingError::Invalid(
                "a ReadWriteOncePod claim cannot be shared by the controller and the servers: use ReadWriteMany, ReadWriteOnce or S3".into(),
            ));
        }
        if colocate && s.owner_deployment.is_none() {
            return Err(ServingError::Missing(
                "--serving-owner-deployment with a ReadWriteOnce claim (the server pods are placed on its pods' node)",
            ));
        }
        let placement = Placement {
            node_selector: strict_json("--serving-node-selector", &s.node_selector)?.unwrap_or_default(),
            affinity: strict_json("--serving-affinity", &s.affinity)?,
            tolerations: strict_json("--serving-tolerations", &s.tolerations)?.unwrap_or_default(),
            topology_spread_constraints: strict_json(
                "--serving-topology-spread-constraints",
                &s.topology_spread_constraints,
            )?
            .unwrap_or_default(),
        };
        let service_options = ServiceOptions {
            annotations: strict_json("--serving-service-annotations", &s.service_annotations)?
                .unwrap_or_default(),
            external_traffic_policy: s.external_traffic_policy.clone().filter(|p| !p.is_empty()),
            load_balancer_ip: s.load_balancer_ip.clone().filter(|ip| !ip.is_empty()),
            node_port: s.node_port,
            load_balancer_source_ranges: s
                .load_balancer_source_ranges
                .iter()
                .map(ToString::to_string)
                .collect(),
        };
        if service_options.external_traffic_policy.is_some() && s.service_type == "ClusterIP" {
            return Err(ServingError::Invalid(
                "--serving-external-traffic-policy needs a NodePort or LoadBalancer Service".into(),
            ));
        }
        if service_options.load_balancer_ip.is_some() && s.service_type != "LoadBalancer" {
            return Err(ServingError::Invalid(
                "--serving-load-balancer-ip needs a LoadBalancer Service".into(),
            ));
        }
        if let Some(port) = service_options.node_port {
            if s.service_type == "ClusterIP" {
                return Err(ServingError::Invalid(
                    "--serving-node-port needs a NodePort or LoadBalancer Service".into(),
                ));
            }
            if !(1..=65535).contains(&port) {
                return Err(ServingError::Invalid(format!("--serving-node-port {port} is no port")));
            }
        }
        if !service_options.load_balancer_source_ranges.is_empty() && s.service_type != "LoadBalancer" {
            return Err(ServingError::Invalid(
                "--serving-load-balancer-source-ranges needs a LoadBalancer Service".into(),
            ));
        }
        let connections = ConnectionOptions {
            header_timeout_seconds: s.header_timeout_seconds,
            idle_timeout_seconds: s.idle_timeout_seconds,
            send_timeout_seconds: s.send_timeout_seconds,
            max_connections_per_source: s.max_connections_per_source,
        };
        for (flag, seconds) in [
            ("--serving-header-timeout-seconds", connections.header_timeout_seconds),
            ("--serving-idle-timeout-seconds", connections.idle_timeout_seconds),
            ("--serving-send-timeout-seconds", connections.send_timeout_seconds),
        ] {
            if let Some(v) = seconds.filter(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(ServingError::Invalid(format!("{flag} {v} is not a positive number of seconds")));
            }
        }
        let rbac = match &args.namespace {
            Some(ns) => RbacScope::Namespace(ns.clone()),
            None => RbacScope::Cluster,
        };
        let pairs = |cpu: &Option<String>, memory: &Option<String>| {
            [("cpu", cpu), ("memory", memory)]
                .into_iter()
                .filter_map(|(k, v)| v.as_ref().filter(|v| !v.is_empty()).map(|v| (k.to_owned(), v.clone())))
                .collect::<BTreeMap<_, _>>()
        };
        Ok(Some(Self {
            namespace,
            name: s.name.clone(),
            image,
            image_pull_policy: s.image_pull_policy.clone(),
            image_pull_secrets: s.image_pull_secrets.iter().filter(|n| !n.is_empty()).cloned().collect(),
            replicas: s.replicas,
            service_type: s.service_type.clone(),
            service_port: s.service_port,
            external_url,
            store,
            rbac,
            auth: ServingAuth {
                admin_token_secret: s.admin_token_secret.clone(),
                oidc_issuer: s.oidc_issuer.clone(),
                oidc_audience: s.oidc_audience.clone(),
                oidc_jwks_url: s.oidc_jwks_url.clone(),
                public_listing: s.public_listing && !s.protect_listing,
            },
            max_downloads: s.max_downloads,
            connections,
            device_networks: s.device_networks.iter().map(ToString::to_string).collect(),
            report_status: s.report_status,
            requests: pairs(&s.cpu_request, &s.memory_request),
            limits: pairs(&s.cpu_limit, &s.memory_limit),
            owner_deployment: s.owner_deployment.clone(),
            apply_rbac: s.rbac,
            placement,
            service_options,
            colocate,
            unavailable_grace: Duration::from_secs(s.unavailable_grace_seconds),
        }))
    }

    /// Name of the server's Role and RoleBinding (the chart uses the same names).
    pub fn role_name(&self) -> String {
        format!("{}-activity", self.name)
    }

    /// Name of the ClusterRole and ClusterRoleBinding (cluster-wide, so it names the namespace).
    pub fn cluster_role_name(&self) -> String {
        format!("{}-activity-{}", self.name, self.namespace)
    }

    /// Labels selecting the server pods (immutable in the Deployment: never add to them).
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        [
            ("app.kubernetes.io/name", "ztp-operator"),
            ("app.kubernetes.io/component", "server"),
            ("app.kubernetes.io/instance", self.name.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Labels of every serving object: the selector labels and `managed-by: ztp-operator`.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut l = self.selector_labels();
        l.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
        l
    }

    /// The label selector the drift watches use.
    pub fn label_selector(&self) -> String {
        self.labels().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
    }
}

/// Every object of one configuration, in apply order.
#[derive(Debug, Clone)]
pub struct ServingObjects {
    pub service_account: ServiceAccount,
    pub role: Option<Role>,
    pub role_binding: Option<RoleBinding>,
    pub cluster_role: Option<ClusterRole>,
    pub cluster_role_binding: Option<ClusterRoleBinding>,
    pub pvc: Option<PersistentVolumeClaim>,
    pub service: Service,
    pub deployment: Deployment,
}

/// The typed object of a JSON rendering. Tests check that nothing was lost on the way (a
/// misspelt field would be dropped silently by the typed deserializer).
fn typed<K: DeserializeOwned + Serialize>(kind: &'static str, value: Value) -> Result<K, ServingError> {
    #[cfg(test)]
    let expected = without_nulls(value.clone());
    let k: K = serde_json::from_value(value).map_err(|source| ServingError::Render { kind, source })?;
    #[cfg(test)]
    assert_eq!(serde_json::to_value(&k).ok(), Some(expected), "{kind}: a field did not survive typing");
    Ok(k)
}

/// Metadata of a namespaced serving object (with the owner when it lives in the owner's namespace).
fn meta(cfg: &ServingConfig, name: &str, namespace: &str, owner: Option<&OwnerReference>) -> Value {
    let mut m = json!({"name": name, "namespace": namespace, "labels": cfg.labels()});
    if let Some(o) = owner.filter(|_| namespace == cfg.namespace) {
        m["ownerReferences"] = json!([o]);
    }
    m
}

/// The server's permissions: exactly what `serve --report-status` uses, or none.
pub fn rules(cfg: &ServingConfig) -> Vec<PolicyRule> {
    if !cfg.report_status {
        return Vec::new();
    }
    vec![
        PolicyRule {
            api_groups: Some(vec!["ztp.netops.dev".into()]),
            resources: Some(vec!["switchprofiles/status".into()]),
            verbs: vec!["patch".into()],
            ..Default::default()
        },
        PolicyRule {
            api_groups: Some(vec!["events.k8s.io".into()]),
            resources: Some(vec!["events".into()]),
            verbs: vec!["create".into(), "patch".into()],
            ..Default::default()
        },
    ]
}

/// The `ztp-operator serve` environment: everything is configured through `ZTP_…` variables.
fn env(cfg: &ServingConfig) -> Vec<Value> {
    let mut env = vec![
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        json!({"name": "ZTP_LISTEN", "value": format!("0.0.0.0:{CONTAINER_PORT}")}),
        json!({"name": "ZTP_EXTERNAL_URL", "value": cfg.external_url}),
        json!({"name": "ZTP_MAX_DOWNLOADS", "value": cfg.max_downloads.to_string()}),
    ];
    let mut var = |name: &str, value: &Option<String>| {
        if let Some(v) = value {
            env.push(json!({"name": name, "value": v}));
        }
    };
    match &cfg.store {
        ServingStore::Pvc { .. } => var("ZTP_STORE_DIR", &Some(STORE_MOUNT.into())),
        ServingStore::S3 { bucket, prefix, endpoint, region, path_style, ca_config_map, .. } => {
            var("ZTP_S3_BUCKET", &Some(bucket.clone()));
            var("ZTP_S3_PREFIX", prefix);
            var("ZTP_S3_ENDPOINT", endpoint);
            var("ZTP_S3_REGION", region);
            var("ZTP_S3_PATH_STYLE", &path_style.then(|| "true".into()));
            var("ZTP_S3_CA_FILE", &ca_config_map.as_ref().map(|_| "/etc/ztp/s3-ca/ca.crt".into()));
        }
    }
    var(
        "ZTP_ADMIN_TOKEN_FILE",
        &cfg.auth.admin_token_secret.as_ref().map(|_| "/etc/ztp/admin/tokens".into()),
    );
    var("ZTP_OIDC_ISSUER", &cfg.auth.oidc_issuer);
    var("ZTP_OIDC_AUDIENCE", &cfg.auth.oidc_audience);
    var("ZTP_OIDC_JWKS_URL", &cfg.auth.oidc_jwks_url);
    var("ZTP_PUBLIC_LISTING", &cfg.auth.public_listing.then(|| "true".into()));
    var("ZTP_DEVICE_NETWORKS", &(!cfg.device_networks.is_empty()).then(|| cfg.device_networks.join(",")));
    var("ZTP_REPORT_STATUS", &cfg.report_status.then(|| "true".into()));
    let c = &cfg.connections;
    var("ZTP_HEADER_TIMEOUT_SECONDS", &c.header_timeout_seconds.map(|v| v.to_string()));
    var("ZTP_IDLE_TIMEOUT_SECONDS", &c.idle_timeout_seconds.map(|v| v.to_string()));
    var("ZTP_SEND_TIMEOUT_SECONDS", &c.send_timeout_seconds.map(|v| v.to_string()));
    var("ZTP_MAX_CONNECTIONS_PER_SOURCE", &c.max_connections_per_source.map(|v| v.to_string()));
    if let ServingStore::S3 { credentials_secret: Some(secret), .. } = &cfg.store {
        for (name, key) in
            [("AWS_ACCESS_KEY_ID", "accessKeyId"), ("AWS_SECRET_ACCESS_KEY", "secretAccessKey")]
        {
            env.push(json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}));
        }
    }
    env
}

/// Volumes and mounts: a small `/tmp` (the root filesystem is read-only; `serve` itself writes
/// only into the store, uploads under its `.tmp/`), the store claim, the admin tokens, the S3 CA.
fn volumes(cfg: &ServingConfig) -> (Vec<Value>, Vec<Value>) {
    let mut volumes = vec![json!({"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}})];
    let mut mounts = vec![json!({"name": "tmp", "mountPath": "/tmp"})];
    match &cfg.store {
        ServingStore::Pvc { claim, .. } => {
            volumes.push(json!({"name": "store", "persistentVolumeClaim": {"claimName": claim}}));
            mounts.push(json!({"name": "store", "mountPath": STORE_MOUNT}));
        }
        ServingStore::S3 { ca_config_map: Some(cm), .. } => {
            volumes.push(json!({"name": "s3-ca", "configMap": {"name": cm, "items": [{"key": "ca.crt", "path": "ca.crt"}]}}));
            mounts.push(json!({"name": "s3-ca", "mountPath": "/etc/ztp/s3-ca", "readOnly": true}));
        }
        ServingStore::S3 { .. } => {}
    }
    if let Some(secret) = &cfg.auth.admin_token_secret {
        volumes.push(json!({"name": "admin-tokens", "secret": {"secretName": secret, "defaultMode": 0o440, "items": [{"key": "tokens", "path": "tokens"}]}}));
        mounts.push(json!({"name": "admin-tokens", "mountPath": "/etc/ztp/admin", "readOnly": true}));
    }
    (volumes, mounts)
}

/// The pod's `affinity`: the configured one, plus, with a ReadWriteOnce claim, a required pod
/// affinity to the controller's pods on one node.
fn affinity(cfg: &ServingConfig, owner: Option<&Owner>) -> Result<Value, ServingError> {
    let mut affinity = serde_json::to_value(&cfg.placement.affinity)
        .map_err(|source| ServingError::Render { kind: "affinity", source })?;
    if !cfg.colocate {
        return Ok(affinity);
    }
    let owner = owner.ok_or(ServingError::Missing(
        "the controller's Deployment (--serving-owner-deployment) with a ReadWriteOnce claim",
    ))?;
    if affinity.is_null() {
        affinity = json!({});
    }
    let term = json!({"labelSelector": {"matchLabels": owner.pod_labels}, "topologyKey": HOSTNAME_TOPOLOGY});
    let terms = &mut affinity["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
    match terms.as_array_mut() {
        Some(list) => list.push(term),
        None => *terms = json!([term]),
    }
    Ok(affinity)
}

/// The pod template without the hash annotation.
fn pod_template(cfg: &ServingConfig, owner: Option<&Owner>) -> Result<PodTemplateSpec, ServingError> {
    let (volumes, mounts) = volumes(cfg);
    let probe = |path: &str, period: i32| json!({"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "timeoutSeconds": 2, "failureThreshold": 3});
    let mut resources = json!({});
    if !cfg.requests.is_empty() {
        resources["requests"] = json!(cfg.requests);
    }
    if !cfg.limits.is_empty() {
        resources["limits"] = json!(cfg.limits);
    }
    let secrets: Vec<Value> = cfg.image_pull_secrets.iter().map(|n| json!({"name": n})).collect();
    typed(
        "pod template",
        json!({
            "metadata": {"labels": cfg.labels()},
            "spec": {
                "serviceAccountName": cfg.name,
                "automountServiceAccountToken": cfg.report_status,
                "imagePullSecrets": secrets,
                "securityContext": {
                    "runAsNonRoot": true,
                    "runAsUser": SERVER_UID,
                    "runAsGroup": SERVER_UID,
                    "fsGroup": SERVER_UID,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [{
                    "name": "server",
                    "image": cfg.image,
                    "imagePullPolicy": cfg.image_pull_policy,
                    "args": ["serve"],
                    "env": env(cfg),
                    "ports": [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
                    // Liveness: the process answers. Readiness: a device snapshot (or an empty
                    // store) is loaded, so no replica answers devices before it knows them.
                    "livenessProbe": probe("/healthcheck", 10),
                    "readinessProbe": probe("/readyz", 5),
                    "resources": resources,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "readOnlyRootFilesystem": true,
                        "allowPrivilegeEscalation": false,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": mounts,
                }],
                "volumes": volumes,
                "nodeSelector": (!cfg.placement.node_selector.is_empty()).then_some(&cfg.placement.node_selector),
                "affinity": affinity(cfg, owner)?,
                "tolerations": (!cfg.placement.tolerations.is_empty()).then_some(&cfg.placement.tolerations),
                "topologySpreadConstraints": (!cfg.placement.topology_spread_constraints.is_empty())
                    .then_some(&cfg.placement.topology_spread_constraints),
            },
        }),
    )
}

/// The hash of a rendered pod template (first 16 hex digits of its SHA-256).
pub fn config_hash(template: &PodTemplateSpec) -> Result<String, ServingError> {
    let bytes = serde_json::to_vec(template)
        .map_err(|source| ServingError::Render { kind: "pod template", source })?;
    Ok(Sha256Digest::of(&bytes).to_string()[..16].to_owned())
}

/// The server Deployment.
pub fn deployment(cfg: &ServingConfig, owner: Option<&Owner>) -> Result<Deployment, ServingError> {
    let mut template = pod_template(cfg, owner)?;
    let hash = config_hash(&template)?;
    template.metadata.get_or_insert_default().annotations =
        Some(BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_owned(), hash)]));
    let template = serde_json::to_value(&template)
        .map_err(|source| ServingError::Render { kind: "pod template", source })?;
    typed(
        "Deployment",
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta(cfg, &cfg.name, &cfg.namespace, owner.map(|o| &o.reference)),
            "spec": {
                "replicas": cfg.replicas,
                "selector": {"matchLabels": cfg.selector_labels()},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": template,
            },
        }),
    )
}

/// The Service devices reach: `service_port` (80 by default, what ONIE's name discovery uses) to
/// the container's 8080.
pub fn service(cfg: &ServingConfig, owner: Option<&OwnerReference>) -> Result<Service, ServingError> {
    let o = &cfg.service_options;
    let mut metadata = meta(cfg, &cfg.name, &cfg.namespace, owner);
    if !o.annotations.is_empty() {
        metadata["annotations"] = json!(o.annotations);
    }
    typed(
        "Service",
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata,
            "spec": {
                "type": cfg.service_type,
                "selector": cfg.selector_labels(),
                "ports": [{"name": "http", "port": cfg.service_port, "targetPort": "http", "protocol": "TCP", "nodePort": o.node_port}],
                "externalTrafficPolicy": o.external_traffic_policy,
                "loadBalancerIP": o.load_balancer_ip,
                "loadBalancerSourceRanges": (!o.load_balancer_source_ranges.is_empty()).then_some(&o.load_balancer_source_ranges),
            },
        }),
    )
}

/// Renders every object of `cfg`; `owner` (the controller's Deployment) owns those in its namespace.
pub fn objects(cfg: &ServingConfig, owner: Option<&Owner>) -> Result<ServingObjects, ServingError> {
    let deployment = deployment(cfg, owner)?;
    let owner = owner.map(|o| &o.reference);
    let subject = json!([{"kind": "ServiceAccount", "name": cfg.name, "namespace": cfg.namespace}]);
    let (role, role_binding, cluster_role, cluster_role_binding) = match &cfg.rbac {
        _ if !cfg.apply_rbac => (None, None, None, None),
        RbacScope::Namespace(ns) => (
            Some(typed(
                "Role",
                json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                    "metadata": meta(cfg, &cfg.role_name(), ns, owner), "rules": rules(cfg),
                }),
            )?),
            Some(typed(
                "RoleBinding",
                json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": meta(cfg, &cfg.role_name(), ns, owner),
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": cfg.role_name()},
                    "subjects": subject,
                }),
            )?),
            None,
            None,
        ),
        RbacScope::Cluster => {
            // Cluster-scoped objects cannot have a namespaced owner: labels only.
            let m = json!({"name": cfg.cluster_role_name(), "labels": cfg.labels()});
            (
                None,
                None,
                Some(typed(
                    "ClusterRole",
                    json!({
                        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                        "metadata": m, "rules": rules(cfg),
                    }),
                )?),
                Some(typed(
                    "ClusterRoleBinding",
                    json!({
                        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                        "metadata": m,
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cfg.cluster_role_name()},
                        "subjects": subject,
                    }),
                )?),
            )
        }
    };
    let pvc = match &cfg.store {
        // No owner: deleting the controller must never delete the images.
        ServingStore::Pvc { claim, create: Some(c) } => Some(typed(
            "PersistentVolumeClaim",
            json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": meta(cfg, claim, &cfg.namespace, None),
                "spec": {
                    "accessModes": [c.access_mode],
                    "resources": {"requests": {"storage": c.size}},
                    "storageClassName": c.storage_class,
                },
            }),
        )?),
        _ => None,
    };
    Ok(ServingObjects {
        service_account: typed(
            "ServiceAccount",
            json!({
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": meta(cfg, &cfg.name, &cfg.namespace, owner),
                "automountServiceAccountToken": cfg.report_status,
            }),
        )?,
        role,
        role_binding,
        cluster_role,
        cluster_role_binding,
        pvc,
        service: service(cfg, owner)?,
        deployment,
    })
}

/// Server-side applies one object (forced: the controller owns these fields).
async fn apply<K>(api: Api<K>, obj: &K) -> Result<(), ServingError>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let name = obj.name_any();
    api.patch(&name, &PatchParams::apply(SERVING_FIELD_MANAGER).force(), &Patch::Apply(obj))
        .await
        .map(|_| ())
        .map_err(|source| ServingError::Apply {
            kind: K::kind(&Default::default()).into_owned(),
            name,
            source,
        })
}

fn ns_api<K>(client: &Client, obj: &K) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    Api::namespaced(client.clone(), obj.meta().namespace.as_deref().unwrap_or("default"))
}

/// Applies every object of `objects`, in order (identity and RBAC before the pods that use them).
pub async fn apply_all(client: &Client, objects: &ServingObjects) -> Result<(), ServingError> {
    apply(ns_api(client, &objects.service_account), &objects.service_account).await?;
    if let Some(r) = &objects.role {
        apply(ns_api(client, r), r).await?;
    }
    if let Some(b) = &objects.role_binding {
        apply(ns_api(client, b), b).await?;
    }
    if let Some(r) = &objects.cluster_role {
        apply(Api::all(client.clone()), r).await?;
    }
    if let Some(b) = &objects.cluster_role_binding {
        apply(Api::all(client.clone()), b).await?;
    }
    if let Some(p) = &objects.pvc {
        apply(ns_api(client, p), p).await?;
    }
    apply(ns_api(client, &objects.service), &objects.service).await?;
    apply(ns_api(client, &objects.deployment), &objects.deployment).await
}

/// The owner reference to the controller's Deployment, when one is configured.
async fn owner(client: &Client, cfg: &ServingConfig) -> Result<Option<Owner>, ServingError> {
    let Some(name) = &cfg.owner_deployment else { return Ok(None) };
    let d =
        Api::<Deployment>::namespaced(client.clone(), &cfg.namespace).get(name).await.map_err(|source| {
            ServingError::Owner { namespace: cfg.namespace.clone(), name: name.clone(), source }
        })?;
    let pod_labels = d.spec.and_then(|s| s.selector.match_labels).unwrap_or_default();
    Ok(Some(Owner {
        reference: OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: name.clone(),
            uid: d.metadata.uid.unwrap_or_default(),
            ..Default::default()
        },
        pod_labels,
    }))
}

/// One apply pass: resolve the owner (once), render, apply.
async fn pass(
    client: &Client,
    cfg: &ServingConfig,
    owner_ref: &mut Option<Option<Owner>>,
) -> Result<(), ServingError> {
    if owner_ref.is_none() {
        *owner_ref = Some(owner(client, cfg).await?);
    }
    let objects = objects(cfg, owner_ref.as_ref().and_then(Option::as_ref))?;
    apply_all(client, &objects).await
}

/// Applies the serving objects now, then again on every change to them and every [`RESYNC`];
/// meanwhile tells when the servers are not available ([`availability`]). Never returns: apply
/// errors are logged and retried after a few seconds.
pub async fn run(client: Client, cfg: ServingConfig) {
    let watch = availability::watch(
        client.clone(),
        cfg.namespace.clone(),
        cfg.name.clone(),
        cfg.owner_deployment.clone(),
        cfg.unavailable_grace,
    );
    futures::future::join(keep_applied(client, cfg), watch).await;
}

/// The apply loop of [`run`].
async fn keep_applied(client: Client, cfg: ServingConfig) {
    let watched = watcher::Config::default().labels(&cfg.label_selector());
    let mut triggers = stream::select_all([
        watcher(Api::<Deployment>::namespaced(client.clone(), &cfg.namespace), watched.clone())
            .default_backoff()
            .touched_objects()
            .map(|_| ())
            .boxed(),
        watcher(Api::<Service>::namespaced(client.clone(), &cfg.namespace), watched.clone())
            .default_backoff()
            .touched_objects()
            .map(|_| ())
            .boxed(),
        watcher(Api::<ServiceAccount>::namespaced(client.clone(), &cfg.namespace), watched)
            .default_backoff()
            .touched_objects()
            .map(|_| ())
            .boxed(),
    ]);
    tracing::info!(namespace = %cfg.namespace, name = %cfg.name, "managing the serving Deployment");
    if cfg.report_status && !cfg.apply_rbac {
        let expected = match &cfg.rbac {
            RbacScope::Namespace(ns) => format!("Role and RoleBinding {ns}/{}", cfg.role_name()),
            RbacScope::Cluster => format!("ClusterRole and ClusterRoleBinding {}", cfg.cluster_role_name()),
        };
        tracing::info!(%expected, "the server's RBAC is not applied here (no --serving-rbac): it must be installed (the chart does)");
    }
    let mut owner_ref = None;
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            t = triggers.next() => {
                if t.is_none() {
                    // Every watch ended (it never should): fall back to the periodic resync.
                    triggers = stream::select_all(Vec::new());
                    tokio::time::sleep_until(next).await;
                } else {
                    tokio::time::sleep(DEBOUNCE).await;
                    while let Some(Some(())) = triggers.next().now_or_never() {}
                }
            }
        }
        match pass(&client, &cfg, &mut owner_ref).await {
            Ok(()) => {
                tracing::debug!(namespace = %cfg.namespace, name = %cfg.name, "serving objects applied");
                next = tokio::time::Instant::now() + RESYNC;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot apply the serving objects; retrying");
                next = tokio::time::Instant::now() + RETRY;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec};

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
        assert_eq!(mounts, [("tmp", "/tmp"), ("store", STORE_MOUNT)]);
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
            ]
        );
        let mut quiet = fs_flags();
        quiet.push("--serving-report-status=false");
        let o = render(&quiet);
        assert_eq!(o.role.as_ref().and_then(|r| r.rules.clone()), Some(vec![]));
        assert_eq!(pod(&o).automount_service_account_token, Some(false));
        assert!(env_value(container(&o), "ZTP_REPORT_STATUS").is_none());
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
        assert_eq!(cr.rules.as_ref().map(Vec::len), Some(2));
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
