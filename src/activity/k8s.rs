//! `ztp-operator serve --report-status`: device activity into each SwitchProfile's
//! `status.devices`, and Events on the profile.
//!
//! The server's only permissions are `patch` on `switchprofiles/status` and `create` (`patch`)
//! on `events.k8s.io` events; it reads no object through the API. It learns the stored status from
//! the answers to its own patches: an empty merge patch (a no-op that returns the object) when it
//! knows nothing yet, and the object each write returns.
//!
//! Each write is a server-side apply of `status.devices` only, with its own field manager
//! ([`SERVER_FIELD_MANAGER`], so the controller's `ztp-operator` fields — conditions, match
//! summary — and this one never clobber each other) and the `resourceVersion` it merged from as a
//! precondition: when another replica (or the controller) wrote in between, the apiserver answers
//! 409, the server re-reads and merges again (see [`super::merge`] for what merging means).

use std::{collections::HashMap, sync::Mutex};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Api, Client, Resource,
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use serde_json::json;

use crate::watch::status_code;

use super::{DeviceEvent, ProfilePlan, Sink, SinkError, merge};
use crate::api::{DeviceSummary, SwitchProfile};

/// Field manager of the server's status writes (and reporting controller of its Events).
pub const SERVER_FIELD_MANAGER: &str = "ztp-operator-server";
/// Writes of one profile per flush before giving up until the next flush.
const ATTEMPTS: usize = 5;

/// Why a write to the apiserver failed (other than the profile being gone).
#[derive(Debug, thiserror::Error)]
pub enum KubeSinkError {
    #[error("SwitchProfile {profile}: {source}")]
    Kube {
        profile: String,
        #[source]
        source: kube::Error,
    },
    #[error("SwitchProfile {profile}: status changed under us {attempts} times in a row")]
    Contended { profile: String, attempts: usize },
}

impl From<KubeSinkError> for SinkError {
    fn from(e: KubeSinkError) -> Self {
        SinkError::Failed(Box::new(e))
    }
}

/// A failed call about `profile`: [`SinkError::Gone`] on 404.
fn failed(profile: &str, source: kube::Error) -> SinkError {
    match status_code(&source) {
        Some(404) => SinkError::Gone(profile.to_owned()),
        _ => KubeSinkError::Kube { profile: profile.to_owned(), source }.into(),
    }
}

/// What the server last learnt of a profile from the apiserver.
#[derive(Clone)]
struct Known {
    resource_version: String,
    devices: Option<DeviceSummary>,
    reference: ObjectReference,
}

impl Known {
    fn of(p: &SwitchProfile) -> Self {
        Self {
            resource_version: p.metadata.resource_version.clone().unwrap_or_default(),
            devices: p.status.as_ref().and_then(|s| s.devices.clone()),
            reference: p.object_ref(&()),
        }
    }
}

/// Writes activity into SwitchProfile status and Events.
pub struct KubeSink {
    client: Client,
    reporter: Reporter,
    known: Mutex<HashMap<(String, String), Known>>,
}

impl KubeSink {
    /// A sink using `client`; Events name `instance` (the pod) as the reporting instance.
    pub fn new(client: Client, instance: Option<String>) -> Self {
        Self {
            client,
            reporter: Reporter { controller: SERVER_FIELD_MANAGER.into(), instance },
            known: Mutex::default(),
        }
    }

    fn known(&self, key: &(String, String)) -> Option<Known> {
        self.known.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    fn remember(&self, key: (String, String), k: Option<Known>) {
        let mut map = self.known.lock().unwrap_or_else(|p| p.into_inner());
        match k {
            Some(k) => map.insert(key, k),
            None => map.remove(&key),
        };
    }

    /// What the apiserver holds now, learnt with a no-op patch (the answer is the object, and
    /// `patch` is all the server may do).
    async fn probe(&self, api: &Api<SwitchProfile>, name: &str) -> Result<Known, kube::Error> {
        let p = api.patch_status(name, &PatchParams::default(), &Patch::Merge(json!({}))).await?;
        Ok(Known::of(&p))
    }

    async fn write_one(&self, plan: &ProfilePlan) -> Result<(), SinkError> {
        let key = (plan.namespace.clone(), plan.name.clone());
        let profile = format!("{}/{}", plan.namespace, plan.name);
        let api: Api<SwitchProfile> = Api::namespaced(self.client.clone(), &plan.namespace);
        let fail = |source: kube::Error| failed(&profile, source);
        for _ in 0..ATTEMPTS {
            let known = match self.known(&key) {
                Some(k) => k,
                None => self.probe(&api, &plan.name).await.map_err(fail)?,
            };
            let devices = merge(known.devices.as_ref(), plan);
            let body = json!({
                "apiVersion": "ztp.netops.dev/v1alpha1",
                "kind": "SwitchProfile",
                "metadata": {"name": plan.name, "resourceVersion": known.resource_version},
                "status": {"devices": devices},
            });
            match api
                .patch_status(
                    &plan.name,
                    &PatchParams::apply(SERVER_FIELD_MANAGER).force(),
                    &Patch::Apply(&body),
                )
                .await
            {
                Ok(p) => {
                    self.remember(key, Some(Known::of(&p)));
                    return Ok(());
                }
                Err(e) if status_code(&e) == Some(409) => {
                    tracing::debug!(profile = %profile, "status changed since it was read; merging again");
                    self.remember(key.clone(), None);
                }
                Err(e) => {
                    self.remember(key, None);
                    return Err(fail(e));
                }
            }
        }
        Err(KubeSinkError::Contended { profile, attempts: ATTEMPTS }.into())
    }
}

#[async_trait]
impl Sink for KubeSink {
    async fn write(&self, plans: &[ProfilePlan]) -> Vec<Result<(), SinkError>> {
        let mut out = Vec::with_capacity(plans.len());
        for plan in plans {
            out.push(self.write_one(plan).await);
        }
        out
    }

    async fn event(&self, event: &DeviceEvent) -> Result<(), SinkError> {
        let key = (event.namespace.clone(), event.profile.clone());
        let profile = format!("{}/{}", event.namespace, event.profile);
        let fail = |source: kube::Error| failed(&profile, source);
        // The reference carries the profile's uid (`kubectl describe` selects Events by it).
        let reference: ObjectReference = match self.known(&key) {
            Some(k) => k.reference,
            None => {
                let api: Api<SwitchProfile> = Api::namespaced(self.client.clone(), &event.namespace);
                let known = self.probe(&api, &event.profile).await.map_err(fail)?;
                self.remember(key, Some(known.clone()));
                known.reference
            }
        };
        let ev = Event {
            type_: if event.warning { EventType::Warning } else { EventType::Normal },
            reason: event.reason.into(),
            note: Some(event.note.chars().take(1024).collect()),
            action: match event.reason {
                "DeviceProvisioned" => "Callback",
                "RenderFailed" => "Render",
                _ => "Serve",
            }
            .into(),
            secondary: None,
        };
        // A fresh Recorder per Event: its cache folds Events with the same reason into one
        // series (keeping the first note), and each device must keep its own message.
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        recorder.publish(&ev, &reference).await.map_err(fail)
    }
}
