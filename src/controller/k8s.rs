//! The Kubernetes implementations of the core's traits: status via server-side apply on the
//! status subresource, Events via the Recorder, ConfigMaps and Secrets via the API.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Mutex, PoisonError},
};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Secret};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        events::{Event, EventType as KubeEventType, Recorder, Reporter},
        reflector::{self, ObjectRef},
    },
};
use serde_json::json;

use super::FIELD_MANAGER;
use crate::{
    api::{OsImage, OsImageStatus, Switch, SwitchProfile, SwitchProfileStatus},
    lookup::{Data, Kind, LookupError, ObjectLookup, config_map_data, secret_data},
    profile::{build::SwitchProblem, publish::SnapshotError, snapshot::Snapshot},
    reconcile::{
        EventType, ImageReporter, ReportError, object_name,
        profiles::{CONFLICT, ProfileReporter, SwitchNews, SwitchProblemNews, current_status, newly_lost},
    },
};

pub struct KubeReporter {
    client: Client,
    recorder: Recorder,
}

impl KubeReporter {
    pub fn new(client: Client) -> Self {
        let instance = std::env::var("POD_NAME").ok();
        let recorder = Recorder::new(client.clone(), Reporter { controller: FIELD_MANAGER.into(), instance });
        Self { client, recorder }
    }
}

#[async_trait]
impl ImageReporter for KubeReporter {
    async fn status(&self, image: &OsImage, status: &OsImageStatus) -> Result<(), ReportError> {
        let ns = image.metadata.namespace.as_deref().unwrap_or("default");
        let name = image.metadata.name.as_deref().unwrap_or_default();
        let api: Api<OsImage> = Api::namespaced(self.client.clone(), ns);
        let patch = json!({"apiVersion": "ztp.netops.dev/v1alpha1", "kind": "OsImage", "status": status});
        api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
            .map(|_| ())
            .map_err(|e| ReportError { object: object_name(&image.metadata), message: e.to_string() })
    }

    async fn event(&self, image: &OsImage, kind: EventType, reason: &str, note: &str) {
        self.publish(&image.object_ref(&()), kind, reason, note).await;
    }
}

impl KubeReporter {
    /// Records an Event about a SwitchProfile.
    pub async fn profile_event(&self, profile: &SwitchProfile, kind: EventType, reason: &str, note: &str) {
        self.publish(&profile.object_ref(&()), kind, reason, note).await;
    }

    /// Records an Event about a Switch.
    pub async fn switch_event(&self, switch: &Switch, kind: EventType, reason: &str, note: &str) {
        self.publish(&switch.object_ref(&()), kind, reason, note).await;
    }

    async fn publish(&self, object: &ObjectReference, kind: EventType, reason: &str, note: &str) {
        let ev = Event {
            type_: match kind {
                EventType::Normal => KubeEventType::Normal,
                EventType::Warning => KubeEventType::Warning,
            },
            reason: reason.into(),
            note: Some(note.chars().take(1024).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, object).await {
            let name = format!(
                "{}/{}",
                object.namespace.as_deref().unwrap_or_default(),
                object.name.as_deref().unwrap_or_default()
            );
            tracing::warn!(object = %name, error = %e, "cannot record event");
        }
    }
}

/// SwitchProfile status by server-side apply (the controller's fields only), with a Warning Event
/// when a profile newly loses a key to an older one. A status is not applied again while the
/// watch cache has not shown the last write, nor to a profile gone or being deleted since the
/// rebuild began (the write would only be refused).
pub struct KubeProfileReporter {
    client: Client,
    events: KubeReporter,
    profiles: reflector::Store<SwitchProfile>,
    switches: reflector::Store<Switch>,
    /// The status last written to each profile, by uid. Cleared at each resync.
    written: Mutex<HashMap<String, SwitchProfileStatus>>,
    switch_news: SwitchProblemNews,
}

impl KubeProfileReporter {
    /// The reporter writing through `client`; `profiles` and `switches` are the snapshot loop's
    /// watch caches.
    pub fn new(
        client: Client,
        profiles: reflector::Store<SwitchProfile>,
        switches: reflector::Store<Switch>,
    ) -> Self {
        let events = KubeReporter::new(client.clone());
        Self {
            client,
            events,
            profiles,
            switches,
            written: Mutex::default(),
            switch_news: Default::default(),
        }
    }

    /// Forgets what was written, so the next rebuild compares with the watch cache only.
    pub fn forget_written(&self) {
        self.written.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }
}

#[async_trait]
impl ProfileReporter for KubeProfileReporter {
    async fn published(&self, snapshot: &Snapshot, outcome: &Result<bool, SnapshotError>) {
        match outcome {
            Ok(true) => {
                tracing::info!(version = %snapshot.version, profiles = snapshot.profiles.len(), "snapshot published")
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot publish the snapshot"),
        }
    }

    async fn status(&self, p: &SwitchProfile, status: &SwitchProfileStatus) -> Result<(), ReportError> {
        let key = object_name(&p.metadata);
        let uid = p.uid().unwrap_or_default();
        if self.written.lock().unwrap_or_else(PoisonError::into_inner).get(&uid) == Some(status) {
            return Ok(());
        }
        let now = self.profiles.get(&ObjectRef::from_obj(p));
        if now.is_none_or(|n| n.uid() != p.uid() || n.metadata.deletion_timestamp.is_some()) {
            return Ok(());
        }
        if let Some(note) = newly_lost(current_status(p).as_ref(), status) {
            self.events.profile_event(p, EventType::Warning, CONFLICT, &note).await;
        }
        let ns = p.metadata.namespace.as_deref().unwrap_or("default");
        let api: Api<SwitchProfile> = Api::namespaced(self.client.clone(), ns);
        let patch =
            json!({"apiVersion": "ztp.netops.dev/v1alpha1", "kind": "SwitchProfile", "status": status});
        let name = p.metadata.name.as_deref().unwrap_or_default();
        match api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await
        {
            Ok(_) => {
                self.written.lock().unwrap_or_else(PoisonError::into_inner).insert(uid, status.clone());
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {
                tracing::debug!(profile = %key, "profile deleted before its status was written");
                Ok(())
            }
            Err(e) => Err(ReportError { object: key, message: e.to_string() }),
        }
    }

    /// A Warning Event on each Switch with new problems (`TemplateError`: its values fail its
    /// profile's trial render; `WaitingForReference`: its `osImage` does not exist; one
    /// being fetched or failed is its OsImage's news), a Normal one when they clear.
    async fn switch_problems(&self, problems: &BTreeMap<String, Vec<SwitchProblem>>) {
        for (key, news) in self.switch_news.news(problems) {
            let Some((ns, name)) = key.split_once('/') else { continue };
            let Some(switch) = self.switches.get(&ObjectRef::new(name).within(ns)) else { continue };
            match news {
                SwitchNews::Problems { reason, line } => {
                    self.events.switch_event(&switch, EventType::Warning, reason, &line).await
                }
                SwitchNews::Cleared { reason, note } => {
                    self.events.switch_event(&switch, EventType::Normal, reason, note).await
                }
            }
        }
    }
}

/// ConfigMaps and Secrets read from the API server, in the object's namespace (the OsImage
/// sources' credentials).
pub struct KubeLookup(pub Client);

/// ConfigMaps and Secrets read from the snapshot loop's watch caches: no request per rebuild.
pub struct CacheLookup {
    pub config_maps: reflector::Store<ConfigMap>,
    pub secrets: reflector::Store<Secret>,
}

#[async_trait]
impl ObjectLookup for CacheLookup {
    async fn config_map(&self, namespace: &str, name: &str) -> Result<Option<Data>, LookupError> {
        let cm = self.config_maps.get(&ObjectRef::new(name).within(namespace));
        Ok(cm.map(|cm| config_map_data(cm.as_ref().clone())))
    }

    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Data>, LookupError> {
        let s = self.secrets.get(&ObjectRef::new(name).within(namespace));
        Ok(s.map(|s| secret_data(s.as_ref().clone())))
    }
}

/// A 404 is no such object; any other error is the API server's.
fn found_or(e: kube::Error, kind: Kind, namespace: &str, name: &str) -> Result<Option<Data>, LookupError> {
    match e {
        kube::Error::Api(s) if s.code == 404 => Ok(None),
        e => Err(LookupError::Backend {
            kind,
            namespace: namespace.into(),
            name: name.into(),
            message: e.to_string(),
        }),
    }
}

#[async_trait]
impl ObjectLookup for KubeLookup {
    async fn config_map(&self, namespace: &str, name: &str) -> Result<Option<Data>, LookupError> {
        match Api::<ConfigMap>::namespaced(self.0.clone(), namespace).get(name).await {
            Ok(cm) => Ok(Some(config_map_data(cm))),
            Err(e) => found_or(e, Kind::ConfigMap, namespace, name),
        }
    }

    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Data>, LookupError> {
        match Api::<Secret>::namespaced(self.0.clone(), namespace).get(name).await {
            Ok(s) => Ok(Some(secret_data(s))),
            Err(e) => found_or(e, Kind::Secret, namespace, name),
        }
    }
}
