//! Standalone mode: device activity in `{data}/.status/switchprofiles.json` (beside
//! `osimages.json`), one `{"devices": …}` status per `namespace/name`, and Events printed as one
//! line each. The file is read back at every flush, so a restart keeps the counts.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use async_trait::async_trait;

use super::{DeviceEvent, ProfilePlan, Sink, SinkError, merge};
use crate::api::SwitchProfileStatus;

/// The status file cannot be written (or its directory created).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FileSinkError {
    pub path: PathBuf,
    pub message: String,
}

impl From<FileSinkError> for SinkError {
    fn from(e: FileSinkError) -> Self {
        SinkError::Failed(Box::new(e))
    }
}

/// Writes activity to `{data}/.status/switchprofiles.json`.
pub struct FileSink {
    path: PathBuf,
}

impl FileSink {
    /// The sink for the data directory `data` (creates `.status/`).
    pub fn new(data: &Path) -> Result<Self, SinkError> {
        let dir = data.join(".status");
        std::fs::create_dir_all(&dir)
            .map_err(|e| FileSinkError { path: dir.clone(), message: e.to_string() })?;
        Ok(Self { path: dir.join("switchprofiles.json") })
    }

    /// Where the summaries are.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn read(&self) -> BTreeMap<String, SwitchProfileStatus> {
        match tokio::fs::read(&self.path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %self.path.display(), error = %e, "unreadable device activity; starting it again");
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        }
    }

    async fn save(&self, all: &BTreeMap<String, SwitchProfileStatus>) -> Result<(), SinkError> {
        let err = |message: String| SinkError::from(FileSinkError { path: self.path.clone(), message });
        let bytes = serde_json::to_vec_pretty(all).map_err(|e| err(e.to_string()))?;
        let tmp = self.path.with_extension("json.tmp");
        tokio::fs::write(&tmp, bytes).await.map_err(|e| err(e.to_string()))?;
        tokio::fs::rename(&tmp, &self.path).await.map_err(|e| err(e.to_string()))
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn write(&self, plans: &[ProfilePlan]) -> Vec<Result<(), SinkError>> {
        let mut all = self.read().await;
        for plan in plans {
            let status = all.entry(format!("{}/{}", plan.namespace, plan.name)).or_default();
            status.devices = Some(merge(status.devices.as_ref(), plan));
        }
        match self.save(&all).await {
            Ok(()) => plans.iter().map(|_| Ok(())).collect(),
            Err(e) => {
                let message = e.to_string();
                plans
                    .iter()
                    .map(|_| Err(FileSinkError { path: self.path.clone(), message: message.clone() }.into()))
                    .collect()
            }
        }
    }

    async fn event(&self, event: &DeviceEvent) -> Result<(), SinkError> {
        println!("switchprofile {}/{}: {}: {}", event.namespace, event.profile, event.reason, event.note);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activity::{Activity, DeviceOutcome, Stage, flush};

    fn seen(a: &Activity, serial: &str, stage: Stage) {
        let o = DeviceOutcome {
            namespace: "default".into(),
            profile: "leaf".into(),
            serial: Some(serial.into()),
            mac: None,
            stage,
        };
        a.record(&o, Some("192.0.2.1".parse().expect("ip")));
    }

    #[tokio::test]
    async fn summaries_survive_a_restart_without_counting_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = FileSink::new(dir.path()).expect("sink");
        let first = Activity::new();
        seen(&first, "SN-1", Stage::ConfigServed);
        flush(&first, &sink).await;
        // A restarted server: SN-1 again (not counted again), then its image, and SN-2.
        let second = Activity::new();
        seen(&second, "SN-1", Stage::ConfigServed);
        seen(&second, "SN-1", Stage::ImageServed);
        seen(&second, "SN-2", Stage::ConfigServed);
        flush(&second, &sink).await;
        let all: BTreeMap<String, SwitchProfileStatus> =
            serde_json::from_slice(&std::fs::read(sink.path()).expect("file")).expect("json");
        let d = all["default/leaf"].devices.clone().expect("devices");
        assert_eq!((d.seen, d.config_served, d.image_served, d.provisioned), (2, 2, 1, 0));
        assert_eq!(d.recent.len(), 2);
    }
}
