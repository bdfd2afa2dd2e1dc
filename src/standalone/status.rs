//! Standalone's reporters: what the shared cores observe, printed as one line per transition and
//! kept in `{data}/.status/` (`osimages.json`, and the profiles' conditions in
//! `switchprofiles.json` beside the device activity).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

use async_trait::async_trait;

use super::Error;
use crate::{
    api::{
        ConditionStatus, ConditionType, OsImage, OsImagePhase, OsImageStatus, SwitchProfile,
        SwitchProfileStatus, conditions::find_condition,
    },
    profile::{build::SwitchProblem, publish::SnapshotError, snapshot::Snapshot},
    reconcile::{
        EventType, ImageReporter, ReportError, object_name,
        profiles::{ProfileReporter, RESOLVED, SwitchNews, SwitchProblemNews},
    },
    status_file,
    store::StoreError,
};

/// Status kept in memory and in `{data}/.status/osimages.json`; one printed line per transition.
pub(super) struct StatusBook {
    file: PathBuf,
    statuses: Mutex<BTreeMap<String, OsImageStatus>>,
}

impl StatusBook {
    pub(super) fn open(data: &Path) -> Result<Self, Error> {
        let dir = data.join(".status");
        std::fs::create_dir_all(&dir).map_err(StoreError::io("create", data, &dir))?;
        let file = dir.join("osimages.json");
        let statuses =
            std::fs::read(&file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        Ok(Self { file, statuses: Mutex::new(statuses) })
    }

    pub(super) fn get(&self, key: &str) -> Option<OsImageStatus> {
        self.statuses.lock().unwrap_or_else(PoisonError::into_inner).get(key).cloned()
    }

    pub(super) fn remove(&self, key: &str) -> Result<(), ReportError> {
        self.statuses.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
        self.save(key)
    }

    /// Writes the file while holding the lock, so concurrent reconciles never interleave writes.
    fn save(&self, key: &str) -> Result<(), ReportError> {
        let statuses = self.statuses.lock().unwrap_or_else(PoisonError::into_inner);
        let bytes = serde_json::to_vec_pretty(&*statuses).expect("statuses serialise");
        let tmp = self.file.with_extension("json.tmp");
        std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &self.file)).map_err(|e| {
            // A full disk leaves part of it: not kept (the old file stays whole).
            let _ = std::fs::remove_file(&tmp);
            ReportError { object: key.to_owned(), message: format!("write {}: {e}", self.file.display()) }
        })
    }
}

fn summary(s: &OsImageStatus) -> (Option<OsImagePhase>, Option<String>) {
    (s.phase, find_condition(&s.conditions, crate::api::ConditionType::Ready).map(|c| c.reason.clone()))
}

#[async_trait]
impl ImageReporter for StatusBook {
    async fn status(&self, image: &OsImage, status: &OsImageStatus) -> Result<(), ReportError> {
        let key = object_name(&image.metadata);
        let before =
            self.statuses.lock().unwrap_or_else(PoisonError::into_inner).insert(key.clone(), status.clone());
        if before.as_ref().map(summary) != Some(summary(status)) {
            let phase = status.phase.map(|p| format!("{p:?}")).unwrap_or_default();
            println!("osimage {key}: {phase}: {}", status.message.as_deref().unwrap_or_default());
        }
        self.save(&key)
    }

    async fn event(&self, image: &OsImage, kind: EventType, reason: &str, note: &str) {
        tracing::debug!(object = %object_name(&image.metadata), ?kind, reason, note, "event");
    }
}

/// Profile statuses: the last one of each profile in memory (empty at start, so every profile
/// is printed once per run), each change printed as one line when the line changes, and the
/// changes of a rebuild written to `{data}/.status/switchprofiles.json` together at its end (the
/// `devices` there are the device activity's).
pub(super) struct ProfileBook {
    file: PathBuf,
    statuses: Mutex<BTreeMap<String, SwitchProfileStatus>>,
    /// Statuses reported since the file was last written.
    unwritten: Mutex<BTreeMap<String, SwitchProfileStatus>>,
    switch_news: SwitchProblemNews,
}

impl ProfileBook {
    pub(super) fn open(data: &Path) -> Result<Self, Error> {
        let dir = data.join(".status");
        std::fs::create_dir_all(&dir).map_err(StoreError::io("create", data, &dir))?;
        Ok(Self {
            file: dir.join("switchprofiles.json"),
            statuses: Mutex::default(),
            unwritten: Mutex::default(),
            switch_news: SwitchProblemNews::default(),
        })
    }

    /// The last status reported for `key` in this run.
    pub(super) fn get(&self, key: &str) -> Option<SwitchProfileStatus> {
        self.statuses.lock().unwrap_or_else(PoisonError::into_inner).get(key).cloned()
    }
}

#[async_trait]
impl ProfileReporter for ProfileBook {
    async fn published(&self, snapshot: &Snapshot, outcome: &Result<bool, SnapshotError>) {
        match outcome {
            Ok(true) => {
                println!("snapshot {} published ({} profiles)", snapshot.version, snapshot.profiles.len())
            }
            Ok(false) => {}
            Err(e) => println!("cannot publish the device snapshot: {e}"),
        }
    }

    async fn status(&self, profile: &SwitchProfile, status: &SwitchProfileStatus) -> Result<(), ReportError> {
        let key = object_name(&profile.metadata);
        let line = status_line(status);
        let before =
            self.statuses.lock().unwrap_or_else(PoisonError::into_inner).insert(key.clone(), status.clone());
        if before.as_ref().map(status_line).as_ref() != Some(&line) {
            println!("switchprofile {key}: {line}");
        }
        self.unwritten.lock().unwrap_or_else(PoisonError::into_inner).insert(key, status.clone());
        Ok(())
    }

    async fn switch_problems(&self, problems: &BTreeMap<String, Vec<SwitchProblem>>) {
        for (key, news) in self.switch_news.news(problems) {
            match news {
                SwitchNews::Problems { line, .. } => println!("switch {key}: {line}"),
                SwitchNews::Cleared { note, .. } => println!("switch {key}: {note}"),
            }
        }
    }

    async fn rebuilt(&self) -> Result<(), ReportError> {
        let changed = std::mem::take(&mut *self.unwritten.lock().unwrap_or_else(PoisonError::into_inner));
        if changed.is_empty() {
            return Ok(());
        }
        let written = status_file::update(&self.file, |all| {
            for (key, status) in &changed {
                let kept = all.get_mut(key).and_then(|s| s.devices.take());
                all.insert(key.clone(), SwitchProfileStatus { devices: kept, ..status.clone() });
            }
        })
        .await;
        written.map_err(|e| {
            // Not written: the next rebuild tries these again (unless it has newer ones).
            let mut unwritten = self.unwritten.lock().unwrap_or_else(PoisonError::into_inner);
            for (key, status) in changed {
                unwritten.entry(key).or_insert(status);
            }
            ReportError { object: "switchprofiles".to_owned(), message: e.to_string() }
        })
    }
}

/// What standalone prints about a profile, read from the conditions the controller would set:
/// `Ready` (with the Ready message when it says more than [`RESOLVED`], and the claims it kept
/// when another profile claims one of its keys), or `not ready (<Stalled|Reconciling>, <reason>):
/// <the Ready message>`; a key lost to an older profile is `not ready (Stalled, Conflict): …`.
pub(super) fn status_line(s: &SwitchProfileStatus) -> String {
    let is_true = |t: ConditionType| {
        find_condition(&s.conditions, t).filter(|c| c.status == ConditionStatus::True.as_str())
    };
    let Some(ready) = find_condition(&s.conditions, ConditionType::Ready) else {
        return "not ready (no Ready condition)".to_owned();
    };
    if ready.status == ConditionStatus::True.as_str() {
        let mut line = "Ready".to_owned();
        if let Some(more) = ready.message.strip_prefix(RESOLVED).filter(|m| !m.is_empty()) {
            line.push_str(&format!(" ({})", more.trim_start_matches("; ")));
        }
        if let Some(c) = is_true(ConditionType::Conflict) {
            line.push_str(&format!(" (conflict: {})", c.message));
        }
        return line;
    }
    let condition = if is_true(ConditionType::Stalled).is_some() { "Stalled" } else { "Reconciling" };
    format!("not ready ({condition}, {}): {}", ready.reason, ready.message)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

    use super::*;
    use crate::api::conditions::set_condition;

    fn status(conditions: &[(ConditionType, ConditionStatus, &str, &str)]) -> SwitchProfileStatus {
        let mut s = SwitchProfileStatus::default();
        for (t, v, reason, message) in conditions {
            set_condition(&mut s.conditions, *t, *v, reason, message, Some(1), Time(Timestamp::now()));
        }
        s
    }

    #[test]
    fn the_printed_line_says_what_the_conditions_say() {
        use ConditionStatus::{False, True};
        use ConditionType::{Conflict, Ready, Reconciling, Stalled};
        assert_eq!(status_line(&status(&[(Ready, True, "Resolved", RESOLVED)])), "Ready");
        let crlf = format!("{RESOLVED}; the script had CRLF");
        assert_eq!(status_line(&status(&[(Ready, True, "Resolved", &crlf)])), "Ready (the script had CRLF)");
        let kept =
            status(&[(Ready, True, "Resolved", RESOLVED), (Conflict, True, "DuplicateMatch", "SN1 also b")]);
        assert_eq!(status_line(&kept), "Ready (conflict: SN1 also b)");
        let lost = status(&[
            (Ready, False, "Conflict", "SN1 lost to a"),
            (Stalled, True, "Conflict", "SN1 lost to a"),
            (Conflict, True, "DuplicateMatch", "SN1 lost to a"),
        ]);
        assert_eq!(status_line(&lost), "not ready (Stalled, Conflict): SN1 lost to a");
        let waits = status(&[
            (Ready, False, "WaitingForImage", "x: y"),
            (Reconciling, True, "WaitingForImage", "x: y"),
        ]);
        assert_eq!(status_line(&waits), "not ready (Reconciling, WaitingForImage): x: y");
    }

    fn profile(name: &str) -> SwitchProfile {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "SwitchProfile",
            "metadata": {"name": name, "namespace": "net", "generation": 1},
            "spec": {"match": {"serialNumbers": [name]}}
        }))
        .expect("profile")
    }

    /// A rebuild's statuses reach the file together at its end (one write, not one per profile),
    /// beside the device activity already there, which they keep.
    #[tokio::test]
    async fn a_rebuild_s_statuses_are_written_once_at_its_end_keeping_device_activity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let book = ProfileBook::open(dir.path()).expect("book");
        let devices = crate::api::DeviceSummary { seen: 3, ..Default::default() };
        let activity = SwitchProfileStatus { devices: Some(devices), ..Default::default() };
        status_file::update(&book.file, |all| {
            all.insert("net/a".into(), activity);
        })
        .await
        .expect("device activity");
        let ready = status(&[(ConditionType::Ready, ConditionStatus::True, "Resolved", RESOLVED)]);
        for name in ["a", "b", "c"] {
            book.status(&profile(name), &ready).await.expect("status");
        }
        let read = || -> status_file::Statuses {
            serde_json::from_slice(&std::fs::read(&book.file).expect("file")).expect("json")
        };
        assert_eq!(read().len(), 1, "nothing written before the rebuild ends");
        book.rebuilt().await.expect("written");
        let all = read();
        assert_eq!(all.keys().collect::<Vec<_>>(), ["net/a", "net/b", "net/c"]);
        assert!(all.values().all(|s| status_line(s) == "Ready"), "{all:?}");
        assert_eq!(all["net/a"].devices.as_ref().map(|d| d.seen), Some(3), "device activity kept");
        std::fs::remove_file(&book.file).expect("remove");
        book.rebuilt().await.expect("nothing to write");
        assert!(!book.file.exists(), "a rebuild without changes writes nothing");
    }
}
