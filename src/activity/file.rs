//! Standalone mode: Events printed as one line each, and device summaries in
//! `{data}/.status/switchprofiles.json` (beside `osimages.json`), one `{"devices": …}` status per
//! `namespace/name`, for an activity that keeps them (standalone's own keeps Events only: its
//! fleet counts each profile's Switches there). The file is read back at every flush, so a
//! restart keeps the counts; the profile pipeline writes its conditions to the same file
//! ([`crate::status_file`]).

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{DeviceEvent, ProfilePlan, Sink, SinkError, merge};
use crate::status_file::{self, StatusFileError};

impl From<StatusFileError> for SinkError {
    fn from(e: StatusFileError) -> Self {
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
            .map_err(|e| StatusFileError { path: dir.display().to_string(), message: e.to_string() })?;
        Ok(Self { path: dir.join("switchprofiles.json") })
    }

    /// Where the summaries are.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn write(&self, plans: &[ProfilePlan]) -> Vec<Result<(), SinkError>> {
        let written = status_file::update(&self.path, |all| {
            for plan in plans {
                let status = all.entry(format!("{}/{}", plan.namespace, plan.name)).or_default();
                status.devices = Some(merge(status.devices.as_ref(), plan));
            }
        })
        .await;
        match written {
            Ok(()) => plans.iter().map(|_| Ok(())).collect(),
            Err(e) => plans.iter().map(|_| Err(e.clone().into())).collect(),
        }
    }

    async fn event(&self, event: &DeviceEvent) -> Result<(), SinkError> {
        println!("switchprofile {}/{}: {}: {}", event.namespace, event.profile, event.reason, event.note);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::activity::{Activity, DeviceOutcome, Stage, flush};
    use crate::api::SwitchProfileStatus;

    fn seen(a: &Activity, serial: &str, stage: Stage) {
        let o = DeviceOutcome {
            namespace: "default".into(),
            profile: "leaf".into(),
            serial: Some(serial.to_owned().into()),
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
