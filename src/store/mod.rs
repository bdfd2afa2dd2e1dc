//! The image store: `{platform}/{version}/{filename}` plus `manifest.json`, on a directory (a
//! mounted PVC, NFS included) or an S3 / Ceph bucket.
//!
//! The two backends sit behind the small [`Backend`] trait: put an object without making it
//! visible, place or abort it, stat, read, delete, and a compare-and-swap on the manifest's bytes.
//! Everything else (hashing on the way in, verification, manifest parsing and its rules) lives here
//! once, in [`Store`], for both.
//!
//! **A file and its manifest entry are one decision.** Every manifest write holds the store's
//! write lock (`flock` on `.manifest.lock` on a directory; a lease object `.manifest.lock` taken
//! with a conditional PUT on S3). A verified object is placed under its final name only while that
//! lock is held, right after the manifest change was decided on the manifest as it is then and on
//! what is stored at the path then ([`VerifyingWriter::commit_with`]); a refused change aborts the
//! object (nothing is left), and a manifest write that fails after the placement removes the
//! placed object again. Removing a file works the same way ([`Store::remove_with`]). So two
//! writers of one path (uploads, an upload and an OsImage fetch) cannot leave one's bytes under
//! the other's entry, and nothing refused stays in the store.

pub mod fs;
pub mod manifest;
pub mod s3;

use std::{fmt, ops::Range, path::PathBuf, sync::Arc};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;

pub use manifest::{FIRMWARE_TAG, MANIFEST_NAME, Manifest, ManifestConflict, ManifestEntry, ManifestError};

use crate::{
    api::{ImagePath, SegmentError},
    hash::{Sha256Digest, StreamHasher},
};

/// Everything that can go wrong in the store, with what a user needs to act on it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    InvalidName(#[from] SegmentError),
    #[error("{op} {}: {source}", shown_path(path))]
    Io {
        op: &'static str,
        /// Relative to the store's root ([`StoreError::io`]).
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("S3 {op} s3://{bucket}/{key}: {message}")]
    S3 { op: &'static str, bucket: String, key: String, message: String },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Conflict(#[from] ManifestConflict),
    #[error("sha256 mismatch: expected {expected}, got {actual}")]
    ChecksumMismatch { expected: Sha256Digest, actual: Sha256Digest },
    #[error("size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("manifest.json kept changing under us: gave up after {attempts} compare-and-swap attempts")]
    ManifestContention { attempts: u32 },
    #[error("{0} is not in the store")]
    NotFound(String),
    /// A change refused by the caller's own rule, in its words.
    #[error("{0}")]
    Refused(String),
}

/// `path` as an error shows it: it is relative to the store's root already.
fn shown_path(path: &std::path::Path) -> String {
    if path.as_os_str().is_empty() { "the store's directory".to_owned() } else { path.display().to_string() }
}

impl StoreError {
    /// An I/O error on `path` in the directory store rooted at `root`, naming the path relative
    /// to the root (`.tmp/a.bin.….part`, `lab/1/a.bin`): store errors reach users (the files API,
    /// an OsImage's status), and the server's own directory layout is none of their business. A
    /// path outside the root is named as it is.
    pub(crate) fn io(
        op: &'static str,
        root: &std::path::Path,
        path: impl AsRef<std::path::Path>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.as_ref();
        let path = path.strip_prefix(root).unwrap_or(path).to_owned();
        move |source| Self::Io { op, path, source }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Size and age of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    pub modified: Option<std::time::SystemTime>,
}

/// An object being written: invisible under its final name until [`PendingObject::place`].
#[async_trait]
pub trait PendingObject: Send {
    /// Appends a chunk.
    async fn write(&mut self, chunk: Bytes) -> Result<()>;
    /// Finishes writing (the last bytes, fsync, the last part), so that [`PendingObject::place`]
    /// is quick: it runs under the store's write lock. On an error, call `abort`.
    async fn finish(&mut self) -> Result<()>;
    /// Makes the object visible under its final name (rename / complete the multipart upload).
    /// Called by the backend only, in [`Backend::place`], under the store's write lock, after
    /// `finish`. On an error nothing is left behind.
    async fn place(self: Box<Self>) -> Result<()>;
    /// Discards everything written.
    async fn abort(self: Box<Self>);
}

/// A placement's step before the object is placed: its value and `pending` again, or its error
/// with `pending` aborted, so that a placement that cannot go on leaves no partial object behind.
/// Both backends' [`Backend::place`] take every such step through here.
pub(super) async fn or_abort<T>(
    step: Result<T>,
    pending: Box<dyn PendingObject>,
) -> Result<(T, Box<dyn PendingObject>)> {
    match step {
        Ok(value) => Ok((value, pending)),
        Err(e) => {
            pending.abort().await;
            Err(e)
        }
    }
}

/// Manifest update function for [`Backend::swap_manifest`]: given the current bytes (None when
/// there is no manifest yet), returns the bytes to write, or None to leave it as it is.
pub type ManifestFn<'a> = dyn FnMut(Option<&[u8]>) -> Result<Option<Vec<u8>>> + Send + 'a;

/// Decision function of [`Backend::place`]: given the manifest's current bytes and what is stored
/// at the path now (None: nothing), returns the manifest bytes to write (None: leave it), or an
/// error to refuse the placement.
pub type PlaceFn<'a> = dyn FnMut(Option<&[u8]>, Option<&ObjectInfo>) -> Result<Option<Vec<u8>>> + Send + 'a;

/// Decision function of [`Backend::remove`]: given the manifest's current bytes, returns the
/// bytes to write (None: leave it) and whether to delete the object.
pub type RemoveFn<'a> = dyn FnMut(Option<&[u8]>) -> Result<(Option<Vec<u8>>, bool)> + Send + 'a;

/// What a storage backend provides. Paths are validated before they reach it.
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug {
    /// Where this store is, for messages: `directory /data` or `s3://bucket/prefix`.
    fn describe(&self) -> String;
    /// Starts writing `path`, whose content must hash to `sha256` (recorded where the backend
    /// keeps object metadata; the commit happens only if it matches).
    async fn begin(&self, path: &ImagePath, sha256: &Sha256Digest) -> Result<Box<dyn PendingObject>>;
    /// Size of the object at `path`, if there is one.
    async fn stat(&self, path: &ImagePath) -> Result<Option<ObjectInfo>>;
    /// The object's bytes, in order: all of them (`range` None), or those in the half-open byte
    /// range `range`, clipped at the object's end (a range starting at or past the end, or an
    /// empty or reversed one, yields no bytes). A missing object is [`StoreError::NotFound`].
    async fn read(
        &self,
        path: &ImagePath,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes>>>;
    /// Where the object lives on a local filesystem, for backends that keep objects as plain
    /// files (so a server can open it directly, e.g. for sendfile). None by default.
    fn filesystem_path(&self, _path: &ImagePath) -> Option<PathBuf> {
        None
    }
    /// Removes the object; true if it existed. Bypasses the manifest: for objects that are no
    /// longer in it (use [`Backend::remove`] otherwise).
    async fn delete(&self, path: &ImagePath) -> Result<bool>;
    /// Every object key under the root (for listings), as `{platform}/{version}/{filename}`.
    async fn list(&self) -> Result<Vec<(String, ObjectInfo)>>;
    /// Under the store's write lock: reads the manifest's bytes, lets `f` compute the new ones,
    /// and writes them (on S3 also only if nobody wrote in between: a conditional PUT, retried).
    async fn swap_manifest(&self, f: &mut ManifestFn<'_>) -> Result<()>;
    /// Under the store's write lock, as one step for every other writer: reads the manifest and
    /// stats `path`, lets `f` decide, then places `pending` (finished) at `path` and writes the
    /// manifest `f` returned. When `f` refuses, `pending` is aborted and nothing changes; when
    /// the manifest cannot be written after the placement, the placed object is deleted.
    async fn place(
        &self,
        path: &ImagePath,
        pending: Box<dyn PendingObject>,
        f: &mut PlaceFn<'_>,
    ) -> Result<()>;
    /// Under the store's write lock: swaps the manifest with `f`, then deletes the object at
    /// `path` if `f` said so. Returns whether an object was deleted.
    async fn remove(&self, path: &ImagePath, f: &mut RemoveFn<'_>) -> Result<bool>;
    /// The manifest's current bytes.
    async fn read_manifest(&self) -> Result<Option<Vec<u8>>>;
}

/// The store: a backend plus the rules both backends share.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

/// A verified, committed object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub sha256: Sha256Digest,
    pub size: u64,
}

impl Store {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self { backend }
    }

    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// Starts writing `path`, which must hash to `expected`; every byte is hashed on the way in.
    /// Nothing is visible until [`VerifyingWriter::commit_with`] enters it in the manifest.
    pub async fn writer(&self, path: &ImagePath, expected: Sha256Digest) -> Result<VerifyingWriter> {
        Ok(VerifyingWriter {
            store: self.clone(),
            path: path.clone(),
            pending: Some(self.backend.begin(path, &expected).await?),
            hasher: Some(StreamHasher::new()),
            expected,
            written: 0,
            batch: BytesMut::new(),
        })
    }

    pub async fn stat(&self, path: &ImagePath) -> Result<Option<ObjectInfo>> {
        self.backend.stat(path).await
    }

    /// The object's bytes: all of them (`range` None) or those in the half-open byte range
    /// `range`, clipped at the object's end. See [`Backend::read`].
    pub async fn read(
        &self,
        path: &ImagePath,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        self.backend.read(path, range).await
    }

    /// The object's path on a local filesystem when the backend keeps plain files (the directory
    /// backend), for a server that wants to open it directly; None for S3. The path is where the
    /// object would be: it need not exist.
    pub fn filesystem_path(&self, path: &ImagePath) -> Option<PathBuf> {
        self.backend.filesystem_path(path)
    }

    /// Deletes an object that is not (or no longer) in the manifest. To remove a file with its
    /// entry, use [`Store::remove_with`].
    pub async fn delete(&self, path: &ImagePath) -> Result<bool> {
        self.backend.delete(path).await
    }

    /// Removes a file and its entry as one decision: under the store's write lock, `change` edits
    /// the manifest and returns whether to delete the object at `path`, which is deleted before
    /// the lock is released (so no writer can place a new file there in between). Returns
    /// whether an object was deleted. `change` may run more than once; it must be a pure
    /// function of the manifest.
    pub async fn remove_with<F>(&self, path: &ImagePath, mut change: F) -> Result<bool>
    where
        F: FnMut(&mut Manifest) -> Result<bool> + Send,
    {
        let name = self.manifest_name();
        self.backend
            .remove(path, &mut |current: Option<&[u8]>| {
                let before = parse_or_empty(&name, current)?;
                let mut after = before.clone();
                let delete = change(&mut after)?;
                Ok(((after != before).then(|| after.to_bytes()), delete))
            })
            .await
    }

    pub async fn list(&self) -> Result<Vec<(String, ObjectInfo)>> {
        self.backend.list().await
    }

    /// Hashes the stored bytes of `path` (to adopt a file whose manifest entry is missing).
    pub async fn hash_of(&self, path: &ImagePath) -> Result<Committed> {
        use futures::TryStreamExt;
        let mut stream = self.backend.read(path, None).await?;
        let mut hasher = StreamHasher::new();
        while let Some(chunk) = stream.try_next().await? {
            hasher.update(chunk).await;
        }
        let (sha256, size) = hasher.finish().await;
        Ok(Committed { sha256, size })
    }

    /// The manifest; an absent one is empty. A malformed one is an error (and stays untouched).
    pub async fn manifest(&self) -> Result<Manifest> {
        match self.backend.read_manifest().await? {
            None => Ok(Manifest::default()),
            Some(bytes) => Ok(Manifest::parse(&self.manifest_name(), &bytes)?),
        }
    }

    fn manifest_name(&self) -> String {
        format!("{MANIFEST_NAME} in {}", self.backend.describe())
    }

    /// Applies `change` to the manifest atomically (compare-and-swap). `change` may run more than
    /// once when another writer got there first; it must be a pure function of the manifest.
    /// Nothing is written when it fails or leaves the manifest as it was, or when the current
    /// manifest is malformed.
    pub async fn update_manifest<F>(&self, mut change: F) -> Result<Manifest>
    where
        F: FnMut(&mut Manifest) -> Result<()> + Send,
    {
        let name = self.manifest_name();
        let mut result = None;
        self.backend
            .swap_manifest(&mut |current: Option<&[u8]>| {
                let before = parse_or_empty(&name, current)?;
                let mut after = before.clone();
                change(&mut after)?;
                let write = (after != before || current.is_none()).then(|| after.to_bytes());
                result = Some(after);
                Ok(write)
            })
            .await?;
        Ok(result.unwrap_or_default())
    }
}

fn parse_or_empty(name: &str, current: Option<&[u8]>) -> Result<Manifest> {
    match current {
        None => Ok(Manifest::default()),
        Some(bytes) => Ok(Manifest::parse(name, bytes)?),
    }
}

/// Pieces smaller than this are gathered before they go to the hashing and writing threads: an
/// upload's multipart body arrives in pieces of a few KiB, and two queue hand-offs per piece cost
/// more than copying them together. (Each queue holds 16 batches: at most 8 MiB in flight.)
const BATCH: usize = 512 * 1024;

/// Writes an object while hashing it; commits only when the hash (and size) match, together with
/// its manifest entry.
pub struct VerifyingWriter {
    store: Store,
    path: ImagePath,
    pending: Option<Box<dyn PendingObject>>,
    hasher: Option<StreamHasher>,
    expected: Sha256Digest,
    written: u64,
    /// Bytes accepted but not yet handed on (less than [`BATCH`]).
    batch: BytesMut,
}

impl VerifyingWriter {
    pub async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.written += chunk.len() as u64;
        if self.batch.is_empty() && chunk.len() >= BATCH {
            return self.hand_on(chunk).await;
        }
        if self.batch.capacity() == 0 {
            self.batch.reserve(BATCH);
        }
        self.batch.extend_from_slice(&chunk);
        if self.batch.len() >= BATCH {
            let full = self.batch.split().freeze();
            self.hand_on(full).await?;
        }
        Ok(())
    }

    /// Hands `chunk` to the hashing thread and the backend's writer.
    async fn hand_on(&mut self, chunk: Bytes) -> Result<()> {
        let (Some(pending), Some(hasher)) = (self.pending.as_mut(), self.hasher.as_mut()) else {
            unreachable!("write after commit or abort");
        };
        hasher.update(chunk.clone()).await;
        pending.write(chunk).await
    }

    /// Bytes written so far (where a resumed download continues).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Verifies and, if everything matches, makes the object visible together with its manifest
    /// entry, as one decision: under the store's write lock, `change` edits the manifest as it is
    /// then, knowing the verified object and what is stored at the path at that moment (None:
    /// nothing; a file without an entry is a copy by hand or a crash's leftover). If `change`
    /// succeeds the object is placed and the manifest written; if it fails (a conflict: nothing
    /// changes) or the manifest cannot be written, the object is discarded. On a mismatch the
    /// written data is discarded and the error says `sha256 mismatch: expected …, got …`.
    /// `change` may run more than once; it must be a pure function of its arguments.
    pub async fn commit_with<F>(mut self, expected_size: Option<u64>, mut change: F) -> Result<Committed>
    where
        F: FnMut(&mut Manifest, &Committed, Option<&ObjectInfo>) -> Result<()> + Send,
    {
        if !self.batch.is_empty() {
            let rest = self.batch.split().freeze();
            if let Err(e) = self.hand_on(rest).await {
                // Now, not from Drop on a detached task: the caller's next step (a status
                // written to the same full disk, say) must find the space given back.
                self.abort().await;
                return Err(e);
            }
        }
        let mut pending = self.pending.take().expect("pending object");
        let (sha256, size) = self.hasher.take().expect("hasher").finish().await;
        if let Some(expected_size) = expected_size
            && expected_size != size
        {
            pending.abort().await;
            return Err(StoreError::SizeMismatch { expected: expected_size, actual: size });
        }
        if sha256 != self.expected {
            pending.abort().await;
            return Err(StoreError::ChecksumMismatch { expected: self.expected, actual: sha256 });
        }
        if let Err(e) = pending.finish().await {
            pending.abort().await;
            return Err(e);
        }
        let committed = Committed { sha256, size };
        let name = self.store.manifest_name();
        self.store
            .backend
            .place(&self.path, pending, &mut |current: Option<&[u8]>, stored: Option<&ObjectInfo>| {
                let before = parse_or_empty(&name, current)?;
                let mut after = before.clone();
                change(&mut after, &committed, stored)?;
                Ok((after != before || current.is_none()).then(|| after.to_bytes()))
            })
            .await?;
        Ok(committed)
    }

    /// [`Self::commit_with`] the usual rule: `entry` (its size set to the bytes written) goes into
    /// the manifest; a different file at the path, in the manifest or only stored, is replaced
    /// only when `replace` allows it.
    pub async fn commit_entry(
        self,
        expected_size: Option<u64>,
        entry: ManifestEntry,
        replace: bool,
    ) -> Result<Committed> {
        self.commit_with(expected_size, |m, committed, stored| {
            let entry = ManifestEntry { size: Some(committed.size), ..entry.clone() };
            Ok(m.place(entry, replace, stored.is_some())?)
        })
        .await
    }

    /// Discards everything written.
    pub async fn abort(mut self) {
        if let Some(p) = self.pending.take() {
            p.abort().await;
        }
    }
}

impl Drop for VerifyingWriter {
    fn drop(&mut self) {
        // A writer dropped without commit/abort (a cancelled task) must not leave data behind:
        // abort on a detached task when a runtime is there to run it.
        if let Some(p) = self.pending.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(p.abort());
        }
    }
}
