//! The serving objects rendered from a [`ServingConfig`]: pure functions, unit-tested in the
//! parent module.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{PersistentVolumeClaim, PodTemplateSpec, Secret, Service, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding},
    },
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use crate::hash::Sha256Digest;

use super::*;

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

/// The server's permissions: exactly what `serve --report-status` and `serve --switches` use,
/// or none.
pub fn rules(cfg: &ServingConfig) -> Vec<PolicyRule> {
    let rule = |group: &str, resource: &str, verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![group.into()]),
        resources: Some(vec![resource.into()]),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    };
    let mut rules = Vec::new();
    if cfg.report_status {
        rules.push(rule("ztp.netops.dev", "switchprofiles/status", &["patch"]));
        rules.push(rule("events.k8s.io", "events", &["create", "patch"]));
    }
    if cfg.switches.is_some() {
        rules.push(rule("ztp.netops.dev", "switches", &["get", "list", "watch", "create", "delete"]));
        rules.push(rule("ztp.netops.dev", "switches/status", &["patch"]));
    }
    rules
}

/// Where the report key is mounted in the server (`--report-key-file`).
pub const REPORT_KEY_FILE: &str = "/etc/ztp/report-key/key";

/// The report key Secret holding `key` (created once, never applied over: see
/// [`super::ensure_report_key`]).
pub fn report_key_secret(
    cfg: &ServingConfig,
    owner: Option<&Owner>,
    key: &[u8],
) -> Result<Secret, ServingError> {
    let owner = owner.map(|o| &o.reference);
    typed(
        "Secret",
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": meta(cfg, &cfg.report_key_secret(), &cfg.namespace, owner),
            "type": "Opaque",
            "data": {"key": k8s_openapi::ByteString(key.to_vec())},
        }),
    )
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
    if let Some(discover) = cfg.switches {
        let watched = match &cfg.rbac {
            RbacScope::Namespace(ns) => Some(ns.clone()),
            RbacScope::Cluster => None,
        };
        var("ZTP_SWITCHES", &Some("true".into()));
        var("ZTP_DISCOVER", &Some(discover.as_str().into()));
        var("ZTP_SWITCH_NAMESPACE", &watched);
        var("ZTP_DISCOVER_NAMESPACE", &watched);
        var("ZTP_REPORT_KEY_FILE", &Some(REPORT_KEY_FILE.into()));
    }
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
    if cfg.switches.is_some() {
        let secret = cfg.report_key_secret();
        volumes.push(json!({"name": "report-key", "secret": {"secretName": secret, "defaultMode": 0o440, "items": [{"key": "key", "path": "key"}]}}));
        mounts.push(json!({"name": "report-key", "mountPath": "/etc/ztp/report-key", "readOnly": true}));
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
                "automountServiceAccountToken": cfg.uses_api(),
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
                "automountServiceAccountToken": cfg.uses_api(),
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
