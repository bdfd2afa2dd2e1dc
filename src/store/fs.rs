//! Directory backend: the mounted PVC (NFS included).
//!
//! Objects are written to `{root}/.tmp/` (same filesystem) by a dedicated thread behind a bounded
//! channel, fsynced, and renamed to `{platform}/{version}/{filename}` only when placed, so a
//! partial file is never visible under its final name. Every manifest write holds an exclusive
//! lock on `{root}/.manifest.lock`: read, compute, write a temporary file, fsync, rename, fsync the
//! directory. A placement happens under the same lock, between the manifest's temporary file
//! (written first: the step that can run out of space) and its rename, so the object and its entry
//! change together for every other writer; a refused placement deletes its temporary file.

use std::{
    fs::File,
    io::Write,
    ops::Range,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream::BoxStream};
use tokio::{
    io::{AsyncReadExt, AsyncSeekExt},
    sync::mpsc,
};
use tokio_util::io::ReaderStream;

use super::{
    Backend, MANIFEST_NAME, ManifestFn, ObjectInfo, PendingObject, PlaceFn, RemoveFn, Result, StoreError,
    or_abort,
};
use crate::{api::ImagePath, hash::Sha256Digest};

/// Where objects are written before they are complete. Names starting with `.` are never valid
/// image path segments, so nothing here can collide with or be served as an image.
const TMP_DIR: &str = ".tmp";
const LOCK_FILE: &str = ".manifest.lock";
/// Chunks queued for the writer thread.
const QUEUE: usize = 16;
/// Read buffer size (one chunk of a read stream).
const READ_CHUNK: usize = 256 * 1024;
/// Written bytes after which the writer asks the kernel to start writing them back, so the
/// final fsync has little left to do and dirty pages do not pile up for large images.
const WRITEBACK_WINDOW: u64 = 8 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct FsBackend {
    root: PathBuf,
}

/// Temporary files older than this, not locked by a live writer and not this process's own, are
/// left-overs of a killed process and removed ([`FsBackend::sweep_temp`]).
pub const TEMP_MAX_AGE: Duration = Duration::from_secs(600);
/// How often a long-running process sweeps `.tmp/` ([`FsBackend::start_temp_sweeper`]).
pub const TEMP_SWEEP_EVERY: Duration = Duration::from_secs(300);

/// This process's owner marker in every temporary file name: its pid and a random number drawn
/// at start, so processes of different containers sharing a store (the controller and the
/// servers, each possibly pid 1) never take each other's files for their own.
fn owner() -> &'static str {
    static OWNER: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0),
        );
        format!("~{}x{:016x}~", std::process::id(), h.finish())
    });
    &OWNER
}

fn unique_suffix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}{}", owner(), N.fetch_add(1, Ordering::Relaxed))
}

/// Whether a temporary file is held by a live writer: it holds an exclusive `flock` on the file
/// for as long as it writes (NFS maps it to a lock manager lock), so a second exclusive lock fails.
fn in_use(path: &Path) -> bool {
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(f) => matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
        Err(_) => false,
    }
}

impl FsBackend {
    /// A store rooted at `root` (created if missing).
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join(TMP_DIR)).map_err(StoreError::io(
            "create",
            &root,
            root.join(TMP_DIR),
        ))?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn object_path(&self, path: &ImagePath) -> PathBuf {
        self.root.join(path.platform()).join(path.version()).join(path.filename())
    }

    /// Takes the store's write lock: an exclusive `flock` on `.manifest.lock` (NFS maps it to a
    /// lock manager lock), released when the returned handle is dropped.
    async fn lock(&self) -> Result<File> {
        let lock_path = self.root.join(LOCK_FILE);
        let lp = lock_path.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<File> {
            let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lp)?;
            f.lock()?;
            Ok(f)
        })
        .await
        .map_err(|e| StoreError::io("lock", &self.root, &lock_path)(std::io::Error::other(e)))?
        .map_err(StoreError::io("lock", &self.root, &lock_path))
    }

    /// Writes and fsyncs new manifest bytes to a temporary file; returns its path.
    async fn write_manifest_temp(&self, new: Vec<u8>) -> Result<PathBuf> {
        let tmp = self.root.join(TMP_DIR).join(format!("{MANIFEST_NAME}.{}", unique_suffix()));
        let (t, root) = (tmp.clone(), self.root.clone());
        tokio::task::spawn_blocking(move || -> Result<PathBuf> {
            let write = || -> std::io::Result<()> {
                let mut f = File::create_new(&t)?;
                f.write_all(&new)?;
                f.sync_all()
            };
            if let Err(e) = write() {
                let _ = std::fs::remove_file(&t);
                return Err(StoreError::io("write", &root, &t)(e));
            }
            Ok(t)
        })
        .await
        .map_err(|e| StoreError::io("write", &self.root, &tmp)(std::io::Error::other(e)))?
    }

    /// Renames a temporary file from [`Self::write_manifest_temp`] over the manifest and fsyncs
    /// the directory.
    async fn install_manifest(&self, tmp: PathBuf) -> Result<()> {
        let manifest = self.root.join(MANIFEST_NAME);
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            if let Err(e) = std::fs::rename(&tmp, &manifest) {
                let _ = std::fs::remove_file(&tmp);
                return Err(StoreError::io("rename into", &root, &manifest)(e));
            }
            fsync_dir(&root, &root)
        })
        .await
        .map_err(|e| StoreError::io("write", &self.root, MANIFEST_NAME)(std::io::Error::other(e)))?
    }

    /// Removes temporary files older than `age` that a killed process left behind: not this
    /// process's own (its owner marker, see [`owner`]) and not locked by a live writer of another
    /// process (a stalled upload, the controller's fetch while a server sweeps). Returns how many
    /// were removed.
    pub fn sweep_temp(&self, age: Duration) -> Result<usize> {
        let dir = self.root.join(TMP_DIR);
        let mut removed = 0;
        for entry in std::fs::read_dir(&dir).map_err(StoreError::io("read", &self.root, &dir))?.flatten() {
            if entry.file_name().to_string_lossy().contains(owner()) {
                continue;
            }
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|elapsed| elapsed > age);
            if old && !in_use(&entry.path()) && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Sweeps `.tmp/` now and then every [`TEMP_SWEEP_EVERY`] in the background, for as long as the
    /// process runs ([`TEMP_MAX_AGE`]): what every process that writes the store calls once. A
    /// failed sweep is logged and tried again next time.
    pub fn start_temp_sweeper(&self) {
        let backend = self.clone();
        let sweep = move || match backend.sweep_temp(TEMP_MAX_AGE) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(files = n, dir = %TMP_DIR, "removed temporary files left by an interrupted process")
            }
            Err(e) => tracing::warn!(error = %e, "cannot sweep temporary files"),
        };
        sweep();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                loop {
                    tokio::time::sleep(TEMP_SWEEP_EVERY).await;
                    let sweep = sweep.clone();
                    let _ = tokio::task::spawn_blocking(sweep).await;
                }
            });
        }
    }
}

/// Fsyncs `dir`, a directory of the store rooted at `root`.
fn fsync_dir(root: &Path, dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(StoreError::io("fsync", root, dir))
}

struct FsPending {
    /// The store's root, which errors name paths relative to.
    root: PathBuf,
    tmp: PathBuf,
    dest: PathBuf,
    tx: Option<mpsc::Sender<Bytes>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl FsPending {
    /// Closes the queue and waits for the writer thread (which fsyncs on a clean close).
    async fn finish_thread(&mut self) -> std::io::Result<()> {
        drop(self.tx.take());
        match self.thread.take() {
            Some(t) => tokio::task::spawn_blocking(move || t.join())
                .await
                .map_err(std::io::Error::other)?
                .unwrap_or_else(|_| Err(std::io::Error::other("writer thread panicked"))),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl PendingObject for FsPending {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let sent = match &self.tx {
            Some(tx) => tx.send(chunk).await.is_ok(),
            None => false,
        };
        if !sent {
            // The thread stopped: it failed. Report its error.
            let err =
                self.finish_thread().await.err().unwrap_or_else(|| std::io::Error::other("writer stopped"));
            return Err(StoreError::io("write", &self.root, &self.tmp)(err));
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        let tmp = self.tmp.clone();
        self.finish_thread().await.map_err(StoreError::io("write", &self.root, tmp))
    }

    async fn place(mut self: Box<Self>) -> Result<()> {
        if let Err(e) = self.finish_thread().await {
            let _ = tokio::fs::remove_file(&self.tmp).await;
            return Err(StoreError::io("write", &self.root, &self.tmp)(e));
        }
        let parent = self.dest.parent().expect("object paths have a parent").to_owned();
        let result = async {
            tokio::fs::create_dir_all(&parent)
                .await
                .map_err(StoreError::io("create", &self.root, &parent))?;
            tokio::fs::rename(&self.tmp, &self.dest).await.map_err(StoreError::io(
                "rename into",
                &self.root,
                &self.dest,
            ))?;
            let root = self.root.clone();
            tokio::task::spawn_blocking(move || fsync_dir(&root, &parent))
                .await
                .map_err(|e| StoreError::io("fsync", &self.root, &self.dest)(std::io::Error::other(e)))?
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&self.tmp).await;
        }
        result
    }

    async fn abort(mut self: Box<Self>) {
        let _ = self.finish_thread().await;
        let _ = tokio::fs::remove_file(&self.tmp).await;
    }
}

#[async_trait]
impl Backend for FsBackend {
    fn describe(&self) -> String {
        format!("directory {}", self.root.display())
    }

    async fn begin(&self, path: &ImagePath, _sha256: &Sha256Digest) -> Result<Box<dyn PendingObject>> {
        let tmp = self.root.join(TMP_DIR).join(format!("{}.{}.part", path.filename(), unique_suffix()));
        let file = File::create_new(&tmp).map_err(StoreError::io("create", &self.root, &tmp))?;
        // Held while the file is open: tells other processes' sweeps that it is being written.
        // Best effort: a filesystem without locks still has the age rule.
        let _ = file.try_lock();
        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("store-write".into())
            .spawn(move || -> std::io::Result<()> {
                let mut file = file;
                let (mut written, mut flushed) = (0u64, 0u64);
                while let Some(chunk) = rx.blocking_recv() {
                    file.write_all(&chunk)?;
                    written += chunk.len() as u64;
                    if written - flushed >= WRITEBACK_WINDOW {
                        crate::sys::start_writeback(
                            std::os::fd::AsFd::as_fd(&file),
                            flushed,
                            written - flushed,
                        );
                        flushed = written;
                    }
                }
                file.sync_all()
            })
            .map_err(StoreError::io("spawn writer for", &self.root, &tmp))?;
        Ok(Box::new(FsPending {
            root: self.root.clone(),
            tmp,
            dest: self.object_path(path),
            tx: Some(tx),
            thread: Some(thread),
        }))
    }

    async fn stat(&self, path: &ImagePath) -> Result<Option<ObjectInfo>> {
        let p = self.object_path(path);
        match tokio::fs::metadata(&p).await {
            Ok(m) if m.is_file() => Ok(Some(ObjectInfo { size: m.len(), modified: m.modified().ok() })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("stat", &self.root, &p)(e)),
        }
    }

    async fn read(
        &self,
        path: &ImagePath,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        let (root, p) = (self.root.clone(), self.object_path(path));
        let mut file = match tokio::fs::File::open(&p).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(path.to_string()));
            }
            Err(e) => return Err(StoreError::io("open", &root, &p)(e)),
        };
        let Some(range) = range else {
            let stream = ReaderStream::with_capacity(file, READ_CHUNK)
                .map_err(move |e| StoreError::io("read", &root, &p)(e));
            return Ok(stream.boxed());
        };
        let len = range.end.saturating_sub(range.start);
        if len > 0 {
            // Seeking past the end is allowed; reads there return end of file.
            file.seek(std::io::SeekFrom::Start(range.start))
                .await
                .map_err(StoreError::io("seek", &root, &p))?;
        }
        let capacity = usize::try_from(len).unwrap_or(usize::MAX).clamp(1, READ_CHUNK);
        let stream = ReaderStream::with_capacity(file.take(len), capacity)
            .map_err(move |e| StoreError::io("read", &root, &p)(e));
        Ok(stream.boxed())
    }

    fn filesystem_path(&self, path: &ImagePath) -> Option<PathBuf> {
        Some(self.object_path(path))
    }

    async fn delete(&self, path: &ImagePath) -> Result<bool> {
        let p = self.object_path(path);
        match tokio::fs::remove_file(&p).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io("delete", &self.root, &p)(e)),
        }
    }

    async fn list(&self) -> Result<Vec<(String, ObjectInfo)>> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let visible = |e: &std::fs::DirEntry| !e.file_name().to_string_lossy().starts_with('.');
            for platform in std::fs::read_dir(&root)
                .map_err(StoreError::io("read", &root, &root))?
                .flatten()
                .filter(visible)
            {
                let Ok(versions) = std::fs::read_dir(platform.path()) else { continue };
                for version in versions.flatten().filter(visible) {
                    let Ok(files) = std::fs::read_dir(version.path()) else { continue };
                    for file in files.flatten().filter(visible) {
                        let Ok(meta) = file.metadata() else { continue };
                        if !meta.is_file() {
                            continue;
                        }
                        let key = format!(
                            "{}/{}/{}",
                            platform.file_name().to_string_lossy(),
                            version.file_name().to_string_lossy(),
                            file.file_name().to_string_lossy()
                        );
                        out.push((key, ObjectInfo { size: meta.len(), modified: meta.modified().ok() }));
                    }
                }
            }
            out.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::io("list", &self.root, &self.root)(std::io::Error::other(e)))?
    }

    async fn swap_manifest(&self, f: &mut ManifestFn<'_>) -> Result<()> {
        let _lock = self.lock().await?;
        let Some(new) = f(self.read_manifest().await?.as_deref())? else { return Ok(()) };
        let tmp = self.write_manifest_temp(new).await?;
        self.install_manifest(tmp).await
    }

    async fn place(
        &self,
        path: &ImagePath,
        pending: Box<dyn PendingObject>,
        f: &mut PlaceFn<'_>,
    ) -> Result<()> {
        // The manifest's temporary file first (the write that can fail for want of space), then
        // the object, then the manifest: two renames, under the lock.
        let (_lock, pending) = or_abort(self.lock().await, pending).await?;
        let prepared = async {
            let current = self.read_manifest().await?;
            let stored = self.stat(path).await?;
            let tmp = match f(current.as_deref(), stored.as_ref())? {
                Some(bytes) => Some(self.write_manifest_temp(bytes).await?),
                None => None,
            };
            Ok::<_, StoreError>(tmp)
        }
        .await;
        let (tmp, pending) = or_abort(prepared, pending).await?;
        if let Err(e) = pending.place().await {
            if let Some(tmp) = tmp {
                let _ = tokio::fs::remove_file(tmp).await;
            }
            return Err(e);
        }
        if let Some(tmp) = tmp
            && let Err(e) = self.install_manifest(tmp).await
        {
            let _ = self.delete(path).await;
            return Err(e);
        }
        Ok(())
    }

    async fn remove(&self, path: &ImagePath, f: &mut RemoveFn<'_>) -> Result<bool> {
        let _lock = self.lock().await?;
        let (new, delete) = f(self.read_manifest().await?.as_deref())?;
        if let Some(new) = new {
            let tmp = self.write_manifest_temp(new).await?;
            self.install_manifest(tmp).await?;
        }
        if delete { self.delete(path).await } else { Ok(false) }
    }

    async fn read_manifest(&self) -> Result<Option<Vec<u8>>> {
        let p = self.root.join(MANIFEST_NAME);
        match tokio::fs::read(&p).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("read", &self.root, &p)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::TryStreamExt;

    use super::*;
    use crate::store::Store;

    async fn store_with(data: &[u8]) -> (tempfile::TempDir, Store, ImagePath) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(Arc::new(FsBackend::new(dir.path()).expect("store")));
        let path = ImagePath::new("lab-nos", "1.0.0", "image.bin").expect("path");
        let mut w = store.writer(&path, Sha256Digest::of(data)).await.expect("writer");
        w.write(Bytes::copy_from_slice(data)).await.expect("write");
        let entry = crate::store::ManifestEntry::new(&path, Sha256Digest::of(data), 0, false, None);
        w.commit_entry(None, entry, false).await.expect("commit");
        (dir, store, path)
    }

    #[test]
    fn errors_name_paths_relative_to_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let inside =
            StoreError::io("create", root, root.join("lab/1"))(std::io::Error::other("Not a directory"));
        assert_eq!(inside.to_string(), "create lab/1: Not a directory");
        let itself = StoreError::io("read", root, root)(std::io::Error::other("gone"));
        assert_eq!(itself.to_string(), "read the store's directory: gone");
        let outside = StoreError::io("read", root, "/elsewhere/x")(std::io::Error::other("gone"));
        assert_eq!(outside.to_string(), "read /elsewhere/x: gone");
    }

    #[test]
    fn the_sweep_removes_only_stale_unlocked_files_of_other_processes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = FsBackend::new(dir.path()).expect("store");
        let tmp = dir.path().join(TMP_DIR);
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let make = |name: &str, old: bool| {
            let f = File::create(tmp.join(name)).expect("create");
            if old {
                f.set_modified(hour_ago).expect("mtime");
            }
            f
        };
        make("image.bin.~1x00~7.part", true);
        make("manifest.json.1-2-3", true);
        let writer = make("live.bin.~1x01~1.part", true);
        writer.try_lock().expect("lock");
        make("fresh.bin.~1x02~1.part", false);
        make(&format!("mine.bin.{}.part", unique_suffix()), true);

        assert_eq!(backend.sweep_temp(TEMP_MAX_AGE).expect("sweep"), 2);
        let mut left: Vec<String> = std::fs::read_dir(&tmp)
            .expect("tmp")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left.len(), 3, "{left:?}");
        assert!(left.contains(&"live.bin.~1x01~1.part".to_owned()), "{left:?}");
        assert!(left.contains(&"fresh.bin.~1x02~1.part".to_owned()), "{left:?}");
        drop(writer);
        assert_eq!(backend.sweep_temp(TEMP_MAX_AGE).expect("sweep"), 1, "the writer is gone");
    }

    async fn read(store: &Store, path: &ImagePath, range: Option<Range<u64>>) -> Result<Vec<u8>> {
        let chunks: Vec<Bytes> = store.read(path, range).await?.try_collect().await?;
        Ok(chunks.concat())
    }

    #[tokio::test]
    async fn reads_whole_objects_and_ranges() {
        let data: Vec<u8> = (0..(READ_CHUNK * 2 + 1000)).map(|i| (i % 251) as u8).collect();
        let (_dir, store, path) = store_with(&data).await;
        let len = data.len() as u64;
        assert_eq!(read(&store, &path, None).await.expect("whole"), data);
        assert_eq!(read(&store, &path, Some(10..20)).await.expect("range"), &data[10..20]);
        // Across chunk boundaries.
        let (a, b) = (READ_CHUNK - 7, 2 * READ_CHUNK + 3);
        assert_eq!(read(&store, &path, Some(a as u64..b as u64)).await.expect("range"), &data[a..b]);
        assert_eq!(read(&store, &path, Some(0..len)).await.expect("all"), data);
        // Clipped at the end; empty, reversed and past-the-end ranges yield nothing.
        assert_eq!(
            read(&store, &path, Some(len - 5..len + 100)).await.expect("tail"),
            &data[data.len() - 5..]
        );
        assert!(read(&store, &path, Some(7..7)).await.expect("empty").is_empty());
        let reversed = Range { start: 9, end: 3 };
        assert!(read(&store, &path, Some(reversed)).await.expect("reversed").is_empty());
        assert!(read(&store, &path, Some(len + 1..len + 10)).await.expect("past end").is_empty());
        // The whole-object hash goes through the same read.
        let committed = store.hash_of(&path).await.expect("hash");
        assert_eq!((committed.sha256, committed.size), (Sha256Digest::of(&data), len));
    }

    #[tokio::test]
    async fn missing_objects_are_not_found_and_paths_are_local() {
        let (dir, store, path) = store_with(b"hello").await;
        let missing = ImagePath::new("lab-nos", "1.0.0", "missing.bin").expect("path");
        assert!(matches!(store.read(&missing, None).await.err(), Some(StoreError::NotFound(_))));
        assert!(matches!(store.read(&missing, Some(0..3)).await.err(), Some(StoreError::NotFound(_))));
        let local = store.filesystem_path(&path).expect("a directory store has local paths");
        assert_eq!(local, dir.path().join("lab-nos/1.0.0/image.bin"));
        assert_eq!(std::fs::read(local).expect("read"), b"hello");
    }

    /// Every file under the root but the manifest, its lock and the hidden directories.
    fn stored_files(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for p in std::fs::read_dir(root).expect("root").flatten() {
            let name = p.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name == MANIFEST_NAME {
                continue;
            }
            for v in std::fs::read_dir(p.path()).expect("platform").flatten() {
                for f in std::fs::read_dir(v.path()).expect("version").flatten() {
                    let (v, f) = (v.file_name(), f.file_name());
                    out.push(format!("{name}/{}/{}", v.to_string_lossy(), f.to_string_lossy()));
                }
            }
        }
        out
    }

    async fn racing_writers(replace: bool) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(Arc::new(FsBackend::new(dir.path()).expect("store")));
        let path = ImagePath::new("lab-nos", "1.0.0", "image.bin").expect("path");
        let bodies: Vec<Vec<u8>> = (0..12u8).map(|i| vec![i; 100_000 + usize::from(i)]).collect();
        let tasks = bodies.iter().enumerate().map(|(i, body)| {
            let (store, path) = (store.clone(), path.clone());
            let body = body.clone();
            tokio::spawn(async move {
                let sha = Sha256Digest::of(&body);
                let mut w = store.writer(&path, sha).await.expect("writer");
                w.write(Bytes::from(body)).await.expect("write");
                // Half of them as an OsImage, half as uploads; all firmware images.
                let owner = if i % 2 == 0 { "osimage/ns/img" } else { "upload/ci" };
                let entry = crate::store::ManifestEntry::new(&path, sha, 0, true, Some(owner.into()));
                w.commit_entry(None, entry, replace).await
            })
        });
        let results: Vec<_> =
            futures::future::join_all(tasks).await.into_iter().map(|r| r.expect("task")).collect();
        let won = results.iter().filter(|r| r.is_ok()).count();
        if replace {
            assert_eq!(won, bodies.len(), "{results:?}");
        } else {
            assert_eq!(won, 1, "exactly one may win: {results:?}");
            assert!(results.iter().all(|r| r.is_ok() || matches!(r, Err(StoreError::Conflict(_)))));
        }
        let manifest = store.manifest().await.expect("manifest");
        let entry = manifest.get(&path).expect("entry");
        let stored = read(&store, &path, None).await.expect("read");
        assert_eq!(Sha256Digest::of(&stored), entry.sha256, "bytes and manifest disagree");
        assert_eq!(entry.size, Some(stored.len() as u64));
        assert_eq!(stored_files(dir.path()), vec![path.to_string()]);
        let tmp: Vec<_> = std::fs::read_dir(dir.path().join(TMP_DIR)).expect("tmp").flatten().collect();
        assert!(tmp.is_empty(), "left in .tmp: {tmp:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_writers_of_one_path_keep_file_and_entry_together() {
        for _ in 0..3 {
            racing_writers(false).await;
            racing_writers(true).await;
        }
    }

    #[tokio::test]
    async fn refused_placements_leave_nothing_and_untracked_files_are_taken() {
        let (dir, store, path) = store_with(b"first").await;
        // A second firmware image in the directory: refused, nothing left.
        let other = ImagePath::new("lab-nos", "1.0.0", "other.bin").expect("path");
        let sha = Sha256Digest::of(b"other");
        let mut w = store.writer(&other, sha).await.expect("writer");
        w.write(Bytes::from_static(b"other")).await.expect("write");
        let fw = crate::store::ManifestEntry::new(&other, sha, 0, true, None);
        let first = crate::store::ManifestEntry::new(&path, Sha256Digest::of(b"first"), 0, true, None);
        store.update_manifest(|m| Ok(m.insert(first.clone(), true)?)).await.expect("tag first");
        assert!(matches!(w.commit_entry(None, fw, false).await, Err(StoreError::Conflict(_))));
        assert_eq!(stored_files(dir.path()), vec![path.to_string()]);
        assert_eq!(std::fs::read_dir(dir.path().join(TMP_DIR)).expect("tmp").count(), 0);

        // A file copied by hand (no entry) is taken: replaced only with `replace`.
        let hand = ImagePath::new("lab-nos", "2.0.0", "hand.bin").expect("path");
        std::fs::create_dir_all(dir.path().join("lab-nos/2.0.0")).expect("mkdir");
        std::fs::write(dir.path().join("lab-nos/2.0.0/hand.bin"), b"by hand").expect("write");
        let sha = Sha256Digest::of(b"upload");
        for replace in [false, true] {
            let mut w = store.writer(&hand, sha).await.expect("writer");
            w.write(Bytes::from_static(b"upload")).await.expect("write");
            let entry = crate::store::ManifestEntry::new(&hand, sha, 0, false, None);
            let result = w.commit_entry(None, entry, replace).await;
            let expected: &[u8] = if replace { b"upload" } else { b"by hand" };
            assert_eq!(read(&store, &hand, None).await.expect("read"), expected);
            assert_eq!(result.is_ok(), replace, "{result:?}");
            if !replace {
                assert!(matches!(
                    result,
                    Err(StoreError::Conflict(crate::store::ManifestConflict::Untracked { .. }))
                ));
                assert!(store.manifest().await.expect("manifest").get(&hand).is_none());
            }
        }
        assert_eq!(std::fs::read_dir(dir.path().join(TMP_DIR)).expect("tmp").count(), 0);

        // Removing takes the entry and the file together.
        assert!(store.remove_with(&hand, |m| Ok(m.remove(&hand).is_some())).await.expect("remove"));
        assert_eq!(store.stat(&hand).await.expect("stat"), None);
        assert!(store.manifest().await.expect("manifest").get(&hand).is_none());
    }

    /// The real pending file behind a writer whose writes fail after `ok_writes` (a disk that
    /// fills up): everything else goes to the file, abort included.
    struct FillsUp {
        inner: Box<dyn PendingObject>,
        ok_writes: usize,
    }

    #[async_trait]
    impl PendingObject for FillsUp {
        async fn write(&mut self, chunk: Bytes) -> Result<()> {
            if self.ok_writes == 0 {
                let source = std::io::Error::from_raw_os_error(libc::ENOSPC);
                return Err(StoreError::Io { op: "write", path: "x.part".into(), source });
            }
            self.ok_writes -= 1;
            self.inner.write(chunk).await
        }
        async fn finish(&mut self) -> Result<()> {
            self.inner.finish().await
        }
        async fn place(self: Box<Self>) -> Result<()> {
            self.inner.place().await
        }
        async fn abort(self: Box<Self>) {
            self.inner.abort().await
        }
    }

    /// The disk fills up with the last bytes still gathered: the commit's own hand-off fails, and
    /// the partial file is gone when the commit returns, not later from a detached task (CI once
    /// saw the status written next refused for want of the space that file still held).
    #[tokio::test]
    async fn a_commit_that_cannot_write_its_last_bytes_gives_the_space_back_before_it_returns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(Arc::new(FsBackend::new(dir.path()).expect("store")));
        let path = ImagePath::new("lab-nos", "1.0.0", "image.bin").expect("path");
        let body = vec![7u8; crate::store::BATCH + 10];
        let mut w = store.writer(&path, Sha256Digest::of(&body)).await.expect("writer");
        let inner = w.pending.take().expect("pending");
        w.pending = Some(Box::new(FillsUp { inner, ok_writes: 1 }));
        w.write(Bytes::from(body[..crate::store::BATCH].to_vec())).await.expect("the first batch fits");
        w.write(Bytes::from(body[crate::store::BATCH..].to_vec())).await.expect("gathered, not written yet");
        assert_eq!(std::fs::read_dir(dir.path().join(TMP_DIR)).expect("tmp").count(), 1, "the partial file");
        let entry = crate::store::ManifestEntry::new(&path, Sha256Digest::of(&body), 0, false, None);
        let err = w.commit_entry(None, entry, false).await.expect_err("the last bytes do not fit");
        assert!(err.to_string().contains("No space left on device"), "{err}");
        // No await between the commit's end and this look: a detached abort would not have run.
        let left: Vec<_> = std::fs::read_dir(dir.path().join(TMP_DIR)).expect("tmp").flatten().collect();
        assert!(left.is_empty(), "left in .tmp when the commit returned: {left:?}");
        assert!(store.manifest().await.expect("manifest").get(&path).is_none());
    }
}
