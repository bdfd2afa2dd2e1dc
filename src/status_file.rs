//! Standalone's status file of SwitchProfiles, `{data}/.status/switchprofiles.json`: one
//! status per `namespace/name`. Two writers share it, each changing its own fields: the device
//! activity (`devices`, [`crate::activity::file`]), the profile pipeline (conditions,
//! match summary, [`crate::standalone`]) and the fleet's counts (`switches`,
//! [`crate::switch::fleet`]). Each change is a read-modify-write under one lock of
//! the process, so neither writer loses what the other wrote.

use std::{collections::BTreeMap, path::Path};

use tokio::sync::Mutex;

use crate::api::SwitchProfileStatus;

/// Every status of the file, by `namespace/name`.
pub type Statuses = BTreeMap<String, SwitchProfileStatus>;

/// Held from the read to the rename of every change.
static CHANGING: Mutex<()> = Mutex::const_new(());

/// The file could not be written.
#[derive(Clone, Debug, thiserror::Error)]
#[error("write {path}: {message}")]
pub struct StatusFileError {
    pub path: String,
    pub message: String,
}

/// Applies `change` to the statuses in `path` (none when the file is missing; a file that does
/// not parse is started again, with a warning) and writes them back through a temporary file
/// and a rename, so a reader never sees half a file.
pub async fn update(path: &Path, change: impl FnOnce(&mut Statuses)) -> Result<(), StatusFileError> {
    update_if(path, |all| {
        change(all);
        true
    })
    .await
}

/// [`update`], written only when `change` says it changed something.
pub async fn update_if(
    path: &Path,
    change: impl FnOnce(&mut Statuses) -> bool,
) -> Result<(), StatusFileError> {
    let _changing = CHANGING.lock().await;
    let mut all = read(path).await;
    if !change(&mut all) {
        return Ok(());
    }
    let err = |message: String| StatusFileError { path: path.display().to_string(), message };
    let bytes = serde_json::to_vec_pretty(&all).map_err(|e| err(e.to_string()))?;
    write_atomic(path, &bytes).await.map_err(|e| err(e.to_string()))
}

/// Writes `bytes` to `path` through a temporary file beside it (`*.tmp`) and a rename: a reader
/// sees the old file or the new one, never half of one.
pub async fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let written = async {
        tokio::fs::write(&tmp, bytes).await?;
        tokio::fs::rename(&tmp, path).await
    }
    .await;
    if written.is_err() {
        // A full disk leaves part of it: not kept (the old file stays whole).
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    written
}

async fn read(path: &Path) -> Statuses {
    match tokio::fs::read(path).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "unreadable status file; starting it again");
            Statuses::new()
        }),
        Err(_) => Statuses::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DeviceSummary;

    /// A write that fails leaves no temporary file beside the status file.
    #[tokio::test]
    async fn a_failed_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A directory where the file should be: the rename fails.
        let path = dir.path().join("switchprofiles.json");
        std::fs::create_dir_all(path.join("in-the-way")).expect("mkdir");
        let err = update(&path, |all| {
            all.entry("default/leaf".into()).or_default();
        })
        .await
        .expect_err("a directory is in the way");
        assert!(err.to_string().starts_with(&format!("write {}: ", path.display())), "{err}");
        let names: Vec<_> =
            std::fs::read_dir(dir.path()).expect("dir").flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("switchprofiles.json")]);
    }

    /// Two writers changing their own fields at once: each keeps what the other wrote.
    #[tokio::test]
    async fn concurrent_writers_keep_each_others_fields() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("switchprofiles.json");
        let devices = async {
            for seen in 1..=50 {
                update(&path, |all| {
                    let s = all.entry("default/leaf".into()).or_default();
                    s.devices = Some(DeviceSummary { seen, ..Default::default() });
                })
                .await
                .expect("devices written");
                tokio::task::yield_now().await;
            }
        };
        let generations = async {
            for g in 1..=50 {
                update(&path, |all| {
                    let s = all.entry("default/leaf".into()).or_default();
                    s.observed_generation = Some(g);
                })
                .await
                .expect("status written");
                tokio::task::yield_now().await;
            }
        };
        tokio::join!(devices, generations);
        let all: Statuses = serde_json::from_slice(&std::fs::read(&path).expect("file")).expect("json");
        let s = &all["default/leaf"];
        assert_eq!((s.devices.as_ref().map(|d| d.seen), s.observed_generation), (Some(50), Some(50)));
    }
}
