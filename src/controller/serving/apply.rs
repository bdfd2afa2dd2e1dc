//! Applying the serving objects by server-side apply, and keeping them applied (watch, resync).

use futures::{FutureExt, StreamExt, stream};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Secret, Service, ServiceAccount},
    },
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use serde::{Serialize, de::DeserializeOwned};

use super::*;
use crate::switch::token::ReportKey;

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
            ServingError::Read {
                kind: "the owner Deployment",
                object: format!("{}/{name}", cfg.namespace),
                source,
            }
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

/// With `--serving-switches`: creates the report key Secret when it does not exist (a new random
/// key), before the pods that mount it. One that exists is never changed: its key is what every
/// device's token is derived from (a user may bring their own, `ztp-operator report-key`).
pub async fn ensure_report_key(
    client: &Client,
    cfg: &ServingConfig,
    owner: Option<&Owner>,
) -> Result<(), ServingError> {
    if cfg.switches.is_none() {
        return Ok(());
    }
    let name = cfg.report_key_secret();
    let api: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
    let read =
        |source| ServingError::Read { kind: "Secret", object: format!("{}/{name}", cfg.namespace), source };
    match api.get_opt(&name).await.map_err(read)? {
        Some(s) if s.data.as_ref().is_some_and(|d| d.contains_key("key")) => return Ok(()),
        Some(_) => {
            return Err(ServingError::Invalid(format!(
                "Secret {}/{name} has no key `key` (the report key; delete the Secret to have one generated)",
                cfg.namespace
            )));
        }
        None => {}
    }
    let key =
        ReportKey::generate().map_err(|e| ServingError::Invalid(format!("generate a report key: {e}")))?;
    let secret = report_key_secret(cfg, owner, key.as_bytes())?;
    // Server-side apply (authorized by the Secret's name, as the chart's Role allows), not
    // forced: a Secret made meanwhile by someone else (a user, another leader) is a conflict and
    // stays as it is.
    match api.patch(&name, &PatchParams::apply(SERVING_FIELD_MANAGER), &Patch::Apply(&secret)).await {
        Ok(_) => {
            tracing::info!(secret = %format!("{}/{name}", cfg.namespace), "report key generated");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(source) => Err(ServingError::Apply { kind: "Secret".into(), name, source }),
    }
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
    let owner = owner_ref.as_ref().and_then(Option::as_ref);
    ensure_report_key(client, cfg, owner).await?;
    let objects = objects(cfg, owner)?;
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
