//! Snapshots in the store: written as immutable objects `ztp-snapshots/{version}/snapshot.json`
//! with a manifest entry tagged `ztp-snapshot`; the current one additionally carries
//! `ztp-snapshot-current`. Moving that tag is one manifest compare-and-swap, so the switch to a new
//! snapshot is atomic for every reader. The newest few are kept for rollback and debugging.

use bytes::Bytes;
use futures::TryStreamExt;

use crate::{
    api::ImagePath,
    hash::Sha256Digest,
    profile::snapshot::Snapshot,
    store::{Manifest, ManifestEntry, Store, StoreError},
};

pub use crate::api::names::SNAPSHOT_PLATFORM;
pub const SNAPSHOT_FILE: &str = "snapshot.json";
pub const SNAPSHOT_TAG: &str = "ztp-snapshot";
pub const CURRENT_TAG: &str = "ztp-snapshot-current";
/// Snapshots kept in the store (the current one included).
const KEEP: usize = 3;

/// Is this manifest entry a snapshot (never served to devices or listed as an image)?
pub fn is_snapshot(entry: &ManifestEntry) -> bool {
    entry.tags.contains_key(SNAPSHOT_TAG)
}

/// The current snapshot's entry, if any.
pub fn current_entry(manifest: &Manifest) -> Option<&ManifestEntry> {
    manifest.images.iter().find(|e| e.tags.contains_key(CURRENT_TAG))
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("snapshot {path}: {message}")]
    Invalid { path: String, message: String },
}

/// Writes `snapshot` (unless it is already current) and makes it current. Returns whether
/// anything changed.
pub async fn publish(store: &Store, snapshot: &Snapshot) -> Result<bool, SnapshotError> {
    let manifest = store.manifest().await?;
    let current = current_entry(&manifest);
    if current.is_some_and(|e| e.version == snapshot.version) {
        return Ok(false);
    }
    // No profiles and nothing published before: nothing to write (an image-only store stays
    // free of snapshots). Once a snapshot was current, an empty one must replace it.
    if snapshot.profiles.is_empty() && current.is_none() {
        return Ok(false);
    }
    let path =
        ImagePath::internal(SNAPSHOT_PLATFORM, &snapshot.version, SNAPSHOT_FILE).map_err(StoreError::from)?;
    let bytes = Bytes::from(serde_json::to_vec(snapshot).expect("a snapshot always serialises"));
    let sha = Sha256Digest::of(&bytes);
    let mut pruned = Vec::new();
    let change = |m: &mut crate::store::Manifest, pruned: &mut Vec<ManifestEntry>| {
        pruned.clear();
        let mut entry =
            ManifestEntry::new(&path, sha, bytes.len() as u64, false, Some("ztp-operator".into()));
        entry.tags.insert(SNAPSHOT_TAG.into(), String::new());
        entry.tags.insert(CURRENT_TAG.into(), String::new());
        for e in m.images.iter_mut() {
            e.tags.remove(CURRENT_TAG);
        }
        m.insert(entry, true)?;
        // Keep the newest KEEP snapshots: entries are appended, so the oldest come first.
        let snapshots: Vec<String> =
            m.images.iter().filter(|e| is_snapshot(e)).map(|e| e.path.clone()).collect();
        let excess = snapshots.len().saturating_sub(KEEP);
        for old in &snapshots[..excess] {
            if let Some(i) = m.images.iter().position(|e| &e.path == old && !e.tags.contains_key(CURRENT_TAG))
            {
                pruned.push(m.images.remove(i));
            }
        }
        Ok::<_, StoreError>(())
    };
    if store.stat(&path).await?.is_none() {
        // The snapshot and its entry together.
        let mut w = store.writer(&path, sha).await?;
        w.write(bytes.clone()).await?;
        w.commit_with(Some(bytes.len() as u64), |m, _, _| change(m, &mut pruned)).await?;
    } else {
        store.update_manifest(|m| change(m, &mut pruned)).await?;
    }
    for e in pruned {
        if let Ok(p) = e.image_path() {
            let _ = store.delete(&p).await;
        }
    }
    Ok(true)
}

/// Reads and verifies the snapshot a manifest entry points at.
pub async fn load(store: &Store, entry: &ManifestEntry) -> Result<Snapshot, SnapshotError> {
    let path = entry.image_path().map_err(StoreError::from)?;
    let invalid = |message: String| SnapshotError::Invalid { path: entry.path.clone(), message };
    let chunks: Vec<Bytes> = store.read(&path, None).await?.try_collect().await?;
    let bytes = chunks.concat();
    let sha = Sha256Digest::of(&bytes);
    if sha != entry.sha256 {
        return Err(invalid(format!("sha256 mismatch: expected {}, got {sha}", entry.sha256)));
    }
    serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))
}
