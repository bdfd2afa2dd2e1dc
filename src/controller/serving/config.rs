//! The serving configuration: the `--serving-…` flags turned into one validated [`ServingConfig`].

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    api::core::v1::{Affinity, Toleration, TopologySpreadConstraint},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::cli::ControllerArgs;

use super::*;

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
    /// The servers keep Switches, discovering devices so (`None`: they do not).
    pub switches: Option<crate::switch::k8s::Discover>,
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
            switches: s.switches.then_some(s.discover),
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

    /// Name of the report key Secret (in the serving namespace), with `--serving-switches`.
    pub fn report_key_secret(&self) -> String {
        format!("{}-report-key", self.name)
    }

    /// Whether the server pods talk to the API (and so get a token).
    pub fn uses_api(&self) -> bool {
        self.report_status || self.switches.is_some()
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
