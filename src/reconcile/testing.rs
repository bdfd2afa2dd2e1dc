//! Test doubles for the reconcile core: a reporter that records, a resolver that reads a local
//! file, and an [`ImageContext`] over a directory store in a temporary directory. No apiserver,
//! no network.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use tokio::sync::Semaphore;

use super::{
    EventType, ImageReporter, ReportError, ResolveError, SourceResolver,
    osimage::{ImageContext, ImagePolicy},
};
use crate::{
    api::{OsImage, OsImageStatus},
    fetch::{FetchConfig, Fetcher, Source},
    hash::Sha256Digest,
    store::{Store, fs::FsBackend},
};

/// Every status and Event reported, in order.
#[derive(Default)]
pub struct RecordingReporter {
    pub statuses: Mutex<Vec<OsImageStatus>>,
    pub events: Mutex<Vec<(EventType, String, String)>>,
}

#[async_trait]
impl ImageReporter for RecordingReporter {
    async fn status(&self, _image: &OsImage, status: &OsImageStatus) -> Result<(), ReportError> {
        self.statuses.lock().expect("lock").push(status.clone());
        Ok(())
    }

    async fn event(&self, _image: &OsImage, kind: EventType, reason: &str, note: &str) {
        self.events.lock().expect("lock").push((kind, reason.to_owned(), note.to_owned()));
    }
}

impl RecordingReporter {
    /// The last status reported.
    pub fn last(&self) -> OsImageStatus {
        self.statuses.lock().expect("lock").last().cloned().expect("a status was reported")
    }

    /// The reasons of the Events reported, in order.
    pub fn event_reasons(&self) -> Vec<String> {
        self.events.lock().expect("lock").iter().map(|(_, reason, _)| reason.clone()).collect()
    }

    /// The phases of the statuses reported, in order.
    pub fn phases(&self) -> Vec<String> {
        let statuses = self.statuses.lock().expect("lock");
        statuses.iter().map(|s| s.phase.map(|p| format!("{p:?}")).unwrap_or_default()).collect()
    }
}

/// Every image's source is this file (or, with `None`, cannot be resolved yet).
pub struct FileResolver(pub Option<PathBuf>);

#[async_trait]
impl SourceResolver for FileResolver {
    async fn resolve(&self, _image: &OsImage) -> Result<Source, ResolveError> {
        match &self.0 {
            Some(path) => Ok(Source::File { path: path.clone() }),
            None => Err(ResolveError::Missing("Secret default/creds not found".into())),
        }
    }
}

/// A core over a directory store at `dir/store`, fetching `file://` from anywhere, with
/// backoff starting at 5 s.
pub fn context(dir: &Path) -> ImageContext {
    let backend = FsBackend::new(dir.join("store")).expect("store");
    ImageContext {
        store: Store::new(Arc::new(backend)),
        fetcher: Fetcher::new(FetchConfig { file_roots: None, ..FetchConfig::default() }).expect("fetcher"),
        fetch_slots: Arc::new(Semaphore::new(2)),
        policy: ImagePolicy { backoff_base: Duration::from_secs(5), ..ImagePolicy::default() },
        external_url: Some("http://ztp.test".into()),
        metrics: Default::default(),
        in_flight: Default::default(),
    }
}

/// OsImage `default/{name}` of platform `lab`, version `version`, file `nos.bin`, with the sha256
/// of `bytes`, created `age` seconds after the epoch (older wins conflicts), generation 1.
pub fn image(name: &str, version: &str, bytes: &[u8], age: i64) -> OsImage {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "OsImage",
        "metadata": {
            "name": name, "namespace": "default", "generation": 1,
            "creationTimestamp": format!("2026-01-01T00:00:{age:02}Z"),
        },
        "spec": {
            "platform": "lab", "version": version, "filename": "nos.bin",
            "source": {"url": {"url": "file:///not/read/by/tests"}},
            "sha256": Sha256Digest::of(bytes).to_string(),
        }
    }))
    .expect("image")
}

/// `image` with `status`, as the next reconcile sees it.
pub fn with_status(image: &OsImage, status: OsImageStatus) -> OsImage {
    OsImage { status: Some(status), ..image.clone() }
}
