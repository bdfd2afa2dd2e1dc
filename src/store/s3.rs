//! S3 / Ceph RGW / MinIO backend (aws-sdk-s3).
//!
//! Objects are written with a multipart upload that is completed only after the hash matched
//! (aborted otherwise), so nothing is visible under the final key before it is verified. The
//! expected SHA-256 is stored as object metadata `sha256-checksum`, as the reference service does.
//! The manifest is swapped with a conditional PUT (`If-Match` the ETag read, or `If-None-Match: *`
//! when there is none yet), retried with backoff when another writer won.
//!
//! Every manifest write, and every placement of an object (the completion of its multipart
//! upload) with the manifest write that enters it, holds the store's write lock: a lease object
//! `.manifest.lock`, created with `If-None-Match: *` and deleted by its holder (after checking it is
//! still its own). A lock whose lease ran out (its holder died) is taken over with `If-Match` its
//! ETag, so only one writer breaks it. Under the lock the decision is made on the manifest and the
//! object as they are then; a refused placement aborts the multipart upload (nothing is left), and
//! a manifest write that fails after the completion deletes the object again. The conditional PUT
//! stays, for writers that do not take the lock (older versions, hand edits).

use std::{
    ops::Range,
    time::{Duration, Instant, SystemTime},
};

use async_trait::async_trait;
use aws_sdk_s3::{
    Client,
    config::{BehaviorVersion, Credentials, Region},
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    primitives::ByteStream,
    types::{CompletedMultipartUpload, CompletedPart},
};
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, stream::BoxStream};

use super::{
    Backend, MANIFEST_NAME, ManifestFn, ObjectInfo, PendingObject, PlaceFn, RemoveFn, Result, StoreError,
    or_abort,
};
use crate::{api::ImagePath, hash::Sha256Digest};

/// Part size of multipart uploads: 5 MiB is S3's minimum; 16 MiB keeps 2 GiB images at 128 parts.
const PART_SIZE: usize = 16 * 1024 * 1024;
/// Compare-and-swap attempts on the manifest before giving up.
const CAS_ATTEMPTS: u32 = 30;
/// Metadata key holding the SHA-256 (same as the reference service).
pub const SHA256_METADATA: &str = "sha256-checksum";
/// The store's write lock (a name no image path can have: it starts with a dot).
const LOCK_NAME: &str = ".manifest.lock";
/// How long the write lock is held at most; a lock older than this (its holder died) is broken.
/// What runs under it is short: completing a multipart upload, and the manifest's GET and PUT.
const LOCK_LEASE: Duration = Duration::from_secs(120);
/// How long a writer waits for the write lock before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(300);

/// The write lock, held: the ETag of the lock object this holder wrote.
struct S3Lock {
    etag: Option<String>,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A few milliseconds that differ between writers and attempts (spreads retries).
fn jitter_ms() -> u64 {
    u64::from(
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0) % 13,
    )
}

/// Whether a conditional write lost: 412, or 409 (a concurrent conditional write in progress).
fn precondition_failed<E: ProvideErrorMetadata, R>(
    e: &SdkError<E, aws_smithy_runtime_api::http::Response<R>>,
) -> bool {
    matches!(http_status(e), Some(412 | 409)) || e.code() == Some("PreconditionFailed")
}

/// How to reach the bucket.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    pub bucket: String,
    /// Key prefix under which the store lives (no leading or trailing `/` needed).
    pub prefix: Option<String>,
    /// Endpoint URL for Ceph RGW / MinIO.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Static credentials; otherwise the default AWS chain (env, profile, IRSA…).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub force_path_style: bool,
    /// Extra CA certificates (PEM) to trust for the endpoint.
    pub ca_bundle_pem: Option<Vec<u8>>,
}

/// Waits before the next compare-and-swap attempt on the manifest.
async fn cas_backoff(attempt: u32) {
    let jitter = u64::from(std::process::id() % 7 + attempt % 5) * 3 + jitter_ms();
    tokio::time::sleep(Duration::from_millis((5u64 << attempt.min(6)) + jitter)).await;
}

#[derive(Debug, Clone)]
pub struct S3Backend {
    client: Client,
    bucket: String,
    prefix: String,
}

/// An aws-sdk-s3 client for `settings` (shared by the store and the S3 fetch source).
pub async fn client(settings: &S3Settings) -> Result<Client> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(settings.region.clone().unwrap_or_else(|| "us-east-1".into())));
    if let (Some(id), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key) {
        loader = loader.credentials_provider(Credentials::new(id, secret, None, None, "ztp-operator"));
    }
    if let Some(pem) = &settings.ca_bundle_pem {
        use aws_smithy_http_client::tls;
        let trust = tls::TrustStore::empty().with_native_roots(true).with_pem_certificate(pem.clone());
        let ctx = tls::TlsContext::builder().with_trust_store(trust).build().map_err(|e| StoreError::S3 {
            op: "configure TLS for",
            bucket: settings.bucket.clone(),
            key: String::new(),
            message: e.to_string(),
        })?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc))
            .tls_context(ctx)
            .build_https();
        loader = loader.http_client(http);
    }
    let shared = loader.load().await;
    let mut config = aws_sdk_s3::config::Builder::from(&shared).force_path_style(settings.force_path_style);
    if let Some(endpoint) = &settings.endpoint {
        config = config.endpoint_url(endpoint);
    }
    Ok(Client::from_conf(config.build()))
}

fn sdk_message<E: std::error::Error + 'static, R: std::fmt::Debug>(e: &SdkError<E, R>) -> String {
    DisplayErrorContext(e).to_string()
}

fn http_status<E, R>(e: &SdkError<E, aws_smithy_runtime_api::http::Response<R>>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

impl S3Backend {
    pub async fn new(settings: &S3Settings) -> Result<Self> {
        let prefix = settings.prefix.as_deref().unwrap_or("").trim_matches('/');
        Ok(Self {
            client: client(settings).await?,
            bucket: settings.bucket.clone(),
            prefix: if prefix.is_empty() { String::new() } else { format!("{prefix}/") },
        })
    }

    fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }

    fn err(&self, op: &'static str, key: &str, message: String) -> StoreError {
        StoreError::S3 { op, bucket: self.bucket.clone(), key: key.to_owned(), message }
    }

    /// Takes the store's write lock (see the module documentation), waiting for its holder.
    async fn lock(&self) -> Result<S3Lock> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let key = self.key(LOCK_NAME);
        let holder = format!(
            "{}/{}/{}",
            std::env::var("HOSTNAME").unwrap_or_default(),
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let started = Instant::now();
        let mut stale: Option<String> = None;
        let mut attempt = 0u32;
        loop {
            let body = format!("{holder} {}\n", unix_now() + LOCK_LEASE.as_secs());
            let put = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .body(ByteStream::from(body.into_bytes()));
            // Free: create it. Its lease ran out: take it over, if nobody else did.
            let put = match stale.take() {
                Some(etag) => put.if_match(etag),
                None => put.if_none_match("*"),
            };
            match put.send().await {
                Ok(out) => return Ok(S3Lock { etag: out.e_tag().map(str::to_owned) }),
                Err(e) if precondition_failed(&e) => {}
                Err(e) => return Err(self.err("lock", &key, sdk_message(&e))),
            }
            let held_by = match self.client.get_object().bucket(&self.bucket).key(&key).send().await {
                Ok(out) => {
                    let etag = out.e_tag().map(str::to_owned);
                    let body = out.body.collect().await.map(|b| b.into_bytes()).unwrap_or_default();
                    let text = String::from_utf8_lossy(&body).trim().to_owned();
                    let expires = text.rsplit_once(' ').and_then(|(_, t)| t.parse::<u64>().ok()).unwrap_or(0);
                    if expires < unix_now() {
                        tracing::warn!(lock = %key, held_by = %text, "breaking the store's write lock: its lease ran out");
                        stale = etag;
                        continue;
                    }
                    text
                }
                // Released in between: try again at once.
                Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => continue,
                Err(e) => return Err(self.err("lock", &key, sdk_message(&e))),
            };
            if started.elapsed() > LOCK_WAIT {
                let message = format!("the store's write lock is held by {held_by} (holder, lease end)");
                return Err(self.err("lock", &key, message));
            }
            tokio::time::sleep(Duration::from_millis((4u64 << attempt.min(5)) + jitter_ms())).await;
            attempt += 1;
        }
    }

    /// Releases the write lock, if it is still this holder's (one that outlived its lease may
    /// have lost it to another writer). Failures are left to the lease.
    async fn unlock(&self, lock: S3Lock) {
        let key = self.key(LOCK_NAME);
        let current = self.client.head_object().bucket(&self.bucket).key(&key).send().await;
        if current.is_ok_and(|out| out.e_tag().map(str::to_owned) == lock.etag)
            && let Err(e) = self.client.delete_object().bucket(&self.bucket).key(&key).send().await
        {
            tracing::warn!(lock = %key, error = %sdk_message(&e), "could not release the store's write lock");
        }
    }

    /// Writes the manifest if its ETag is still `etag` (None: if there is none). False when
    /// another writer got there first.
    async fn put_manifest(&self, new: Vec<u8>, etag: Option<String>) -> Result<bool> {
        let key = self.key(MANIFEST_NAME);
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/json")
            .body(ByteStream::from(new));
        let put = match etag {
            Some(etag) => put.if_match(etag),
            None => put.if_none_match("*"),
        };
        match put.send().await {
            Ok(_) => Ok(true),
            Err(e) if precondition_failed(&e) => Ok(false),
            Err(e) => Err(self.err("put", &key, sdk_message(&e))),
        }
    }

    /// Read, compute, conditional write, retried when a writer that does not take the lock
    /// got there first. Call with the lock held.
    async fn swap_locked(&self, f: &mut ManifestFn<'_>) -> Result<()> {
        for attempt in 0..CAS_ATTEMPTS {
            let current = self.get_manifest().await?;
            let Some(new) = f(current.as_ref().map(|(b, _)| b.as_slice()))? else { return Ok(()) };
            if self.put_manifest(new, current.and_then(|(_, etag)| etag)).await? {
                return Ok(());
            }
            cas_backoff(attempt).await;
        }
        Err(StoreError::ManifestContention { attempts: CAS_ATTEMPTS })
    }

    /// [`Backend::place`] with the lock held: decide, complete the upload, write the manifest;
    /// refused: abort; the manifest write failed after the completion: delete the object.
    async fn place_locked(
        &self,
        path: &ImagePath,
        pending: Box<dyn PendingObject>,
        f: &mut PlaceFn<'_>,
    ) -> Result<()> {
        // What was there before this placement (a retry must not see its own object).
        let (stored, pending) = or_abort(self.stat(path).await, pending).await?;
        let mut pending = Some(pending);
        for attempt in 0..CAS_ATTEMPTS {
            let decided = async {
                let current = self.get_manifest().await?;
                let new = f(current.as_ref().map(|(b, _)| b.as_slice()), stored.as_ref())?;
                Ok::<_, StoreError>((current.and_then(|(_, etag)| etag), new))
            }
            .await;
            let (etag, new) = match decided {
                Ok(d) => d,
                Err(e) => {
                    self.undo_placement(path, pending.take()).await;
                    return Err(e);
                }
            };
            if let Some(p) = pending.take() {
                p.place().await?; // on failure the upload is aborted: nothing was placed
            }
            let Some(new) = new else { return Ok(()) };
            match self.put_manifest(new, etag).await {
                Ok(true) => return Ok(()),
                Ok(false) => cas_backoff(attempt).await,
                Err(e) => {
                    self.undo_placement(path, None).await;
                    return Err(e);
                }
            }
        }
        self.undo_placement(path, None).await;
        Err(StoreError::ManifestContention { attempts: CAS_ATTEMPTS })
    }

    /// Undoes a placement that was refused: aborts the upload, or deletes the object when it was
    /// already completed.
    async fn undo_placement(&self, path: &ImagePath, pending: Option<Box<dyn PendingObject>>) {
        match pending {
            Some(p) => p.abort().await,
            None => {
                if let Err(e) = self.delete(path).await {
                    tracing::warn!(%path, error = %e, "could not delete a refused object");
                }
            }
        }
    }

    async fn get_manifest(&self) -> Result<Option<(Vec<u8>, Option<String>)>> {
        let key = self.key(MANIFEST_NAME);
        match self.client.get_object().bucket(&self.bucket).key(&key).send().await {
            Ok(out) => {
                let etag = out.e_tag().map(str::to_owned);
                let body = out.body.collect().await.map_err(|e| self.err("read", &key, e.to_string()))?;
                Ok(Some((body.into_bytes().to_vec(), etag)))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(self.err("get", &key, sdk_message(&e))),
        }
    }
}

struct S3Pending {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    buffer: BytesMut,
    parts: Vec<CompletedPart>,
    /// The part being uploaded while the next one fills.
    in_flight: Option<tokio::task::JoinHandle<Result<CompletedPart>>>,
    total: u64,
}

impl S3Pending {
    fn err(&self, op: &'static str, message: String) -> StoreError {
        StoreError::S3 { op, bucket: self.bucket.clone(), key: self.key.clone(), message }
    }

    async fn wait_in_flight(&mut self) -> Result<()> {
        if let Some(task) = self.in_flight.take() {
            let part = task.await.map_err(|e| self.err("upload part of", e.to_string()))??;
            self.parts.push(part);
        }
        Ok(())
    }

    async fn send_part(&mut self, data: Bytes) -> Result<()> {
        self.wait_in_flight().await?;
        let number = i32::try_from(self.parts.len() + 1)
            .map_err(|_| self.err("upload part of", "too many parts".into()))?;
        let (client, bucket, key, upload_id) =
            (self.client.clone(), self.bucket.clone(), self.key.clone(), self.upload_id.clone());
        self.in_flight = Some(tokio::spawn(async move {
            let out = client
                .upload_part()
                .bucket(&bucket)
                .key(&key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(data))
                .send()
                .await
                .map_err(|e| StoreError::S3 {
                    op: "upload part of",
                    bucket,
                    key,
                    message: sdk_message(&e),
                })?;
            Ok(CompletedPart::builder().part_number(number).set_e_tag(out.e_tag().map(str::to_owned)).build())
        }));
        Ok(())
    }

    async fn abort_upload(&mut self) {
        if let Some(t) = self.in_flight.take() {
            t.abort();
        }
        let _ = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .send()
            .await;
    }
}

#[async_trait]
impl PendingObject for S3Pending {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.total += chunk.len() as u64;
        self.buffer.extend_from_slice(&chunk);
        if self.buffer.len() >= PART_SIZE {
            let part = self.buffer.split().freeze();
            self.send_part(part).await?;
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        // S3 needs at least one part; an empty object is one empty part.
        if !self.buffer.is_empty() || (self.parts.is_empty() && self.in_flight.is_none()) {
            let last = self.buffer.split().freeze();
            self.send_part(last).await?;
        }
        self.wait_in_flight().await
    }

    async fn place(mut self: Box<Self>) -> Result<()> {
        let result = async {
            self.finish().await?;
            let upload = CompletedMultipartUpload::builder().set_parts(Some(self.parts.clone())).build();
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(&self.upload_id)
                .multipart_upload(upload)
                .send()
                .await
                .map_err(|e| self.err("complete upload of", sdk_message(&e)))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            self.abort_upload().await;
        }
        result
    }

    async fn abort(mut self: Box<Self>) {
        self.abort_upload().await;
    }
}

/// A GetObject body being read: skips `skip` bytes, then yields at most `remaining` more.
struct BodyWindow {
    body: ByteStream,
    bucket: String,
    key: String,
    skip: u64,
    remaining: u64,
}

impl BodyWindow {
    async fn next(mut self) -> Result<Option<(Bytes, Self)>> {
        while self.remaining > 0 {
            let mut chunk = match self.body.try_next().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    return Err(StoreError::S3 {
                        op: "read",
                        bucket: self.bucket,
                        key: self.key,
                        message: e.to_string(),
                    });
                }
            };
            if self.skip > 0 {
                let n = usize::try_from(self.skip).unwrap_or(usize::MAX).min(chunk.len());
                let _ = chunk.split_to(n);
                self.skip -= n as u64;
            }
            if let Ok(max) = usize::try_from(self.remaining) {
                chunk.truncate(max);
            }
            if chunk.is_empty() {
                continue;
            }
            self.remaining -= chunk.len() as u64;
            return Ok(Some((chunk, self)));
        }
        Ok(None)
    }
}

#[async_trait]
impl Backend for S3Backend {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    async fn begin(&self, path: &ImagePath, sha256: &Sha256Digest) -> Result<Box<dyn PendingObject>> {
        let key = self.key(&path.to_string());
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .metadata(SHA256_METADATA, sha256.to_string())
            .send()
            .await
            .map_err(|e| self.err("start upload of", &key, sdk_message(&e)))?;
        let upload_id =
            out.upload_id().ok_or_else(|| self.err("start upload of", &key, "no upload id".into()))?;
        Ok(Box::new(S3Pending {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key,
            upload_id: upload_id.to_owned(),
            buffer: BytesMut::with_capacity(PART_SIZE),
            parts: Vec::new(),
            in_flight: None,
            total: 0,
        }))
    }

    async fn stat(&self, path: &ImagePath) -> Result<Option<ObjectInfo>> {
        let key = self.key(&path.to_string());
        match self.client.head_object().bucket(&self.bucket).key(&key).send().await {
            Ok(out) => Ok(Some(ObjectInfo {
                size: out.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
                modified: out.last_modified().and_then(|t| std::time::SystemTime::try_from(*t).ok()),
            })),
            Err(e) if http_status(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.err("head", &key, sdk_message(&e))),
        }
    }

    async fn read(
        &self,
        path: &ImagePath,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        let key = self.key(&path.to_string());
        let header = match &range {
            None => None,
            Some(r) if r.end > r.start => Some(format!("bytes={}-{}", r.start, r.end - 1)),
            // An empty range has no `Range` form: no bytes, but a missing object is still an error.
            Some(_) => {
                return match self.stat(path).await? {
                    Some(_) => Ok(futures::stream::empty().boxed()),
                    None => Err(StoreError::NotFound(path.to_string())),
                };
            }
        };
        let request = self.client.get_object().bucket(&self.bucket).key(&key).set_range(header);
        let out = match request.send().await {
            Ok(out) => out,
            Err(e)
                if e.as_service_error().is_some_and(|s| s.is_no_such_key())
                    || http_status(&e) == Some(404) =>
            {
                return Err(StoreError::NotFound(path.to_string()));
            }
            // 416: the range starts at or past the end (the object exists): no bytes, as on a directory.
            Err(e) if http_status(&e) == Some(416) || e.code() == Some("InvalidRange") => {
                return Ok(futures::stream::empty().boxed());
            }
            Err(e) => return Err(self.err("get", &key, sdk_message(&e))),
        };
        // A server that ignored `Range` (no `Content-Range` in the answer) sent the whole object:
        // cut the range out of it here.
        let (skip, remaining) = match &range {
            None => (0, u64::MAX),
            Some(r) if out.content_range().is_some() => (0, r.end - r.start),
            Some(r) => (r.start, r.end - r.start),
        };
        let state = BodyWindow { body: out.body, bucket: self.bucket.clone(), key, skip, remaining };
        Ok(futures::stream::try_unfold(state, BodyWindow::next).boxed())
    }

    async fn delete(&self, path: &ImagePath) -> Result<bool> {
        let existed = self.stat(path).await?.is_some();
        let key = self.key(&path.to_string());
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| self.err("delete", &key, sdk_message(&e)))?;
        Ok(existed)
    }

    async fn list(&self) -> Result<Vec<(String, ObjectInfo)>> {
        let mut out = Vec::new();
        let mut pages =
            self.client.list_objects_v2().bucket(&self.bucket).prefix(&self.prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("list", &self.prefix, sdk_message(&e)))?;
            for obj in page.contents() {
                let Some(rel) = obj.key().and_then(|k| k.strip_prefix(&self.prefix)) else { continue };
                let segments: Vec<&str> = rel.split('/').collect();
                if segments.len() != 3 || segments.iter().any(|s| s.starts_with('.')) {
                    continue;
                }
                out.push((
                    rel.to_owned(),
                    ObjectInfo {
                        size: obj.size().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
                        modified: obj.last_modified().and_then(|t| std::time::SystemTime::try_from(*t).ok()),
                    },
                ));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn swap_manifest(&self, f: &mut ManifestFn<'_>) -> Result<()> {
        let lock = self.lock().await?;
        let result = self.swap_locked(f).await;
        self.unlock(lock).await;
        result
    }

    async fn place(
        &self,
        path: &ImagePath,
        pending: Box<dyn PendingObject>,
        f: &mut PlaceFn<'_>,
    ) -> Result<()> {
        let (lock, pending) = or_abort(self.lock().await, pending).await?;
        let result = self.place_locked(path, pending, f).await;
        self.unlock(lock).await;
        result
    }

    async fn remove(&self, path: &ImagePath, f: &mut RemoveFn<'_>) -> Result<bool> {
        let lock = self.lock().await?;
        let result = async {
            let mut delete = false;
            self.swap_locked(&mut |current: Option<&[u8]>| {
                let (new, d) = f(current)?;
                delete = d;
                Ok(new)
            })
            .await?;
            if delete { self.delete(path).await } else { Ok(false) }
        }
        .await;
        self.unlock(lock).await;
        result
    }

    async fn read_manifest(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.get_manifest().await?.map(|(b, _)| b))
    }
}
