//! The admin files API of the reference image store (`/v1/files/…`, `/healthcheck`, `/whoami`),
//! on both storage backends. Clients written against the reference service work unchanged: the
//! same routes, query parameters, `{"detail": …}` errors and texts. Where it differs, it is
//! stricter: an upload is hashed while it streams to the store and refused (nothing stored) when
//! it does not match `checksum`, and `DELETE` exists. Device snapshots (`ztp-snapshots/`, which
//! can hold Secret content) are never listed, served or written here.

use std::time::SystemTime;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Multipart, Path, Query, State, multipart::MultipartRejection},
    http::{HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use crate::{
    api::ImagePath,
    hash::Sha256Digest,
    profile::publish::{SNAPSHOT_PLATFORM, is_snapshot},
    store::{ManifestConflict, ManifestEntry, StoreError},
};

/// `{"detail": text}` with `status`, as the reference (FastAPI) answers errors.
pub fn detail(status: StatusCode, text: impl Into<String>) -> Response {
    (status, Json(Detail { detail: text.into() })).into_response()
}

/// `{"detail": …}`: every error of the files API, in the reference service's words.
#[derive(Serialize, ToSchema)]
pub struct Detail {
    pub detail: String,
}

/// `{"checksum": …}`: the SHA-256 of a stored file, lower-case hex.
#[derive(Serialize, ToSchema)]
pub struct Checksum {
    pub checksum: String,
}

/// A file of `GET /v1/files/` (the reference lists S3 objects: `key`, `etag`, `metadata`).
#[derive(Serialize, ToSchema)]
pub struct FileInfo {
    /// `{platform}/{version}/{filename}`.
    pub key: String,
    pub size: Option<u64>,
    /// Seconds since the Unix epoch.
    pub last_modified: Option<f64>,
    /// The SHA-256 (the reference's clients compare it as the ETag).
    pub etag: String,
    pub sha256: String,
    /// `{"firmware-image": ""}` on a directory's firmware image.
    pub tags: std::collections::BTreeMap<String, String>,
    /// `{"owner": "osimage/<ns>/<name>" | "upload/<user>"}` where known.
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
}

/// A file of `GET /v1/files/{platform}/{version}/`.
#[derive(Serialize, ToSchema)]
pub struct DirEntry {
    pub file: String,
    /// Seconds since the Unix epoch.
    pub last_modified: Option<f64>,
    pub size: Option<u64>,
}

/// `GET /whoami`: who the credential sent is.
#[derive(Serialize, ToSchema)]
pub struct WhoAmI {
    /// The token's name (static tokens) or the JWT's subject; `anonymous` without a valid one.
    pub user: String,
    /// `["admin"]` for a valid admin credential, else empty.
    pub roles: Vec<String>,
}

/// The multipart body of an upload.
#[derive(ToSchema)]
#[allow(dead_code)] // read as a stream; here only to document it
pub struct UploadForm {
    /// The file's bytes.
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    file: String,
}

/// The routes; `max_upload` bytes is the largest request body an upload may have.
pub fn routes(max_upload: u64) -> Router<AppState> {
    let limit = usize::try_from(max_upload).unwrap_or(usize::MAX);
    Router::new()
        .route("/healthcheck", get(healthcheck))
        .route("/whoami", get(whoami))
        .route("/v1/files/", get(list_all))
        .route("/v1/files/{platform}/{version}/", get(list_dir))
        .route(
            "/v1/files/{platform}/{version}/{filename}",
            get(download).head(download).post(upload).delete(remove).layer(DefaultBodyLimit::max(limit)),
        )
        .route("/v1/files/{platform}/{version}/{filename}/checksum", get(checksum))
}

/// `GET /healthcheck`: `"OK"`, as the reference answers.
#[utoipa::path(get, path = "/healthcheck", tag = "health", responses((status = 200, description = "`\"OK\"`", body = String)))]
pub(crate) async fn healthcheck() -> Json<&'static str> {
    Json("OK")
}

/// `GET /whoami`: `{user, roles}` of the caller's admin credential, or anonymous.
#[utoipa::path(get, path = "/whoami", tag = "files", security((), ("bearer" = [])),
    responses((status = 200, body = WhoAmI)))]
pub(crate) async fn whoami(State(state): State<AppState>, headers: HeaderMap) -> Json<WhoAmI> {
    Json(match state.admin.check(&headers).await {
        Ok(user) => WhoAmI { user, roles: vec!["admin".to_owned()] },
        Err(_) => WhoAmI { user: "anonymous".to_owned(), roles: Vec::new() },
    })
}

/// A path of the files API, validated; the error is the `400` to send.
#[allow(clippy::result_large_err)]
fn file_path(platform: &str, version: &str, filename: &str) -> Result<ImagePath, Response> {
    if platform == SNAPSHOT_PLATFORM {
        return Err(detail(StatusCode::NOT_FOUND, "File not found in S3."));
    }
    ImagePath::new(platform, version, filename).map_err(|e| detail(StatusCode::BAD_REQUEST, e.to_string()))
}

fn seconds(t: Option<SystemTime>) -> Option<f64> {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).map(|d| d.as_secs_f64())
}

/// `GET /v1/files/`: every file with size, last modified, sha256 and tags.
#[utoipa::path(get, path = "/v1/files/", tag = "files", security((), ("bearer" = [])),
    responses((status = 200, body = [FileInfo]), (status = 401, body = Detail, description = "With `--protect-listing`"),
        (status = 403, body = Detail, description = "With `--protect-listing`"), (status = 500, body = Detail)))]
pub(crate) async fn list_all(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(refused) = state.admin.check_listing(&headers).await {
        return detail(refused.status, refused.detail);
    }
    let (manifest, objects) = match (state.server.store.manifest().await, state.server.store.list().await) {
        (Ok(m), Ok(o)) => (m, o),
        (Err(e), _) | (_, Err(e)) => return store_failed(&e),
    };
    let objects: std::collections::HashMap<_, _> = objects.into_iter().collect();
    let files: Vec<_> = manifest
        .images
        .iter()
        .filter(|e| !is_snapshot(e))
        .map(|e| {
            let info = objects.get(&e.path);
            FileInfo {
                key: e.path.clone(),
                size: info.map(|i| i.size).or(e.size),
                last_modified: seconds(info.and_then(|i| i.modified)),
                etag: e.sha256.to_string(),
                sha256: e.sha256.to_string(),
                tags: e.tags.clone(),
                metadata: e.owner.as_ref().map(|o| [("owner".to_owned(), o.clone())].into()),
            }
        })
        .collect();
    Json(files).into_response()
}

/// `GET /v1/files/{platform}/{version}/`: `[{file, last_modified, size}]`.
#[utoipa::path(get, path = "/v1/files/{platform}/{version}/", tag = "files",
    params(("platform" = String, Path), ("version" = String, Path)), security((), ("bearer" = [])),
    responses((status = 200, body = [DirEntry]), (status = 400, body = Detail),
        (status = 401, body = Detail, description = "With `--protect-listing`"),
        (status = 403, body = Detail, description = "With `--protect-listing`")))]
pub(crate) async fn list_dir(
    State(state): State<AppState>,
    Path((platform, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = state.admin.check_listing(&headers).await {
        return detail(refused.status, refused.detail);
    }
    if let Err(r) = file_path(&platform, &version, "x") {
        return r;
    }
    let manifest = match state.server.store.manifest().await {
        Ok(m) => m,
        Err(e) => return store_failed(&e),
    };
    let mut files = Vec::new();
    for e in
        manifest.images.iter().filter(|e| e.platform == platform && e.version == version && !is_snapshot(e))
    {
        let Ok(path) = e.image_path() else { continue };
        let info = state.server.store.stat(&path).await.ok().flatten();
        files.push(DirEntry {
            file: e.filename.clone(),
            last_modified: seconds(info.as_ref().and_then(|i| i.modified)),
            size: info.map(|i| i.size).or(e.size),
        });
    }
    Json(files).into_response()
}

/// The manifest entry of a file the API may show.
async fn entry(state: &AppState, path: &ImagePath) -> Result<Option<ManifestEntry>, StoreError> {
    Ok(state.server.store.manifest().await?.get(path).filter(|e| !is_snapshot(e)).cloned())
}

/// `GET|HEAD /v1/files/{platform}/{version}/{filename}`: the bytes (Range as for devices).
#[utoipa::path(method(get, head), path = "/v1/files/{platform}/{version}/{filename}", tag = "files",
    params(("platform" = String, Path), ("version" = String, Path), ("filename" = String, Path)),
    responses((status = 200, description = "The file (`Range` gives 206)", content_type = "application/octet-stream"),
        (status = 400, body = Detail), (status = 404, body = Detail)))]
pub(crate) async fn download(
    State(state): State<AppState>,
    Path((platform, version, filename)): Path<(String, String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let path = match file_path(&platform, &version, &filename) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let not_found =
        if method == Method::HEAD { "File not found in storage." } else { "File not found in S3." };
    match entry(&state, &path).await {
        Ok(Some(e)) => match e.size {
            Some(size) => state.downloads.serve(&method, &headers, &path, &e.sha256.to_string(), size).await,
            None => match state.server.store.stat(&path).await {
                Ok(Some(info)) => {
                    state.downloads.serve(&method, &headers, &path, &e.sha256.to_string(), info.size).await
                }
                Ok(None) => detail(StatusCode::NOT_FOUND, not_found),
                Err(e) => store_failed(&e),
            },
        },
        Ok(None) => detail(StatusCode::NOT_FOUND, not_found),
        Err(e) => store_failed(&e),
    }
}

/// `GET /v1/files/{platform}/{version}/{filename}/checksum` → `{"checksum": …}`.
#[utoipa::path(get, path = "/v1/files/{platform}/{version}/{filename}/checksum", tag = "files",
    params(("platform" = String, Path), ("version" = String, Path), ("filename" = String, Path)),
    responses((status = 200, body = Checksum), (status = 400, body = Detail), (status = 404, body = Detail)))]
pub(crate) async fn checksum(
    State(state): State<AppState>,
    Path((platform, version, filename)): Path<(String, String, String)>,
) -> Response {
    let path = match file_path(&platform, &version, &filename) {
        Ok(p) => p,
        Err(r) => return r,
    };
    match entry(&state, &path).await {
        Ok(Some(e)) => Json(Checksum { checksum: e.sha256.to_string() }).into_response(),
        Ok(None) => detail(StatusCode::NOT_FOUND, format!("Checksum data not found for {path}.")),
        Err(e) => store_failed(&e),
    }
}

/// Query parameters of an upload (booleans as FastAPI reads them: true/false, 1/0, yes/no, on/off).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UploadQuery {
    /// SHA-256 of the file (64 hex digits), required: the upload is refused when the bytes
    /// received hash differently.
    #[param(required = true)]
    checksum: Option<String>,
    /// Tag the file `firmware-image` (at most one per `{platform}/{version}/`).
    firmware_image: Option<String>,
    /// Replace a file of the same path.
    overwrite: Option<String>,
}

fn flag(name: &str, value: Option<&str>) -> Result<bool, String> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None => Ok(false),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(other) => Err(format!("{name}: {other:?} is not a valid boolean")),
    }
}

/// Why a manifest change is refused, in the reference's words.
fn conflict_text(path: &ImagePath, conflict: &ManifestConflict) -> String {
    match conflict {
        ManifestConflict::DifferentFile { .. } | ManifestConflict::Untracked { .. } => {
            format!("File already exists: {path}")
        }
        ManifestConflict::OtherFirmware { dir, other, .. } => format!(
            "A different firmware image already exists in {dir}/: '{other}'. Remove it first or upload with the same filename."
        ),
    }
}

/// Why the file at `path` may not be uploaded over: managed by an OsImage, or (without
/// `overwrite`) taken. Checked before any byte is read, and again, under the store's write lock,
/// when the file is placed.
fn refuse(existing: Option<&ManifestEntry>, path: &ImagePath, overwrite: bool) -> Option<String> {
    let existing = existing?;
    if let Some(owner) = existing.owner.as_deref().filter(|o| o.starts_with("osimage/")) {
        return Some(format!(
            "{path} is managed by {owner}; change that OsImage instead of uploading over it."
        ));
    }
    (!overwrite).then(|| format!("File already exists: {path}"))
}

/// The caller of an admin route (403 without credentials) and the file path it names (400).
async fn admin_path(
    state: &AppState,
    headers: &HeaderMap,
    platform: &str,
    version: &str,
    filename: &str,
) -> Result<(String, ImagePath), Response> {
    let user = state.admin.check(headers).await.map_err(|refused| detail(refused.status, refused.detail))?;
    Ok((user, file_path(platform, version, filename)?))
}

/// `POST /v1/files/{platform}/{version}/{filename}?checksum=&firmware_image=&overwrite=` with a
/// multipart `file` part, streamed to the store while it is hashed.
#[utoipa::path(post, path = "/v1/files/{platform}/{version}/{filename}", tag = "files",
    params(("platform" = String, Path), ("version" = String, Path), ("filename" = String, Path), UploadQuery),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    security(("bearer" = [])),
    responses((status = 200, description = "Stored, verified, in the manifest: `\"OK\"`", body = String),
        (status = 400, body = Detail, description = "Checksum mismatch, file exists, another firmware image, bad path"),
        (status = 401, body = Detail), (status = 403, body = Detail),
        (status = 413, body = Detail, description = "Larger than the server accepts; nothing stored"),
        (status = 422, body = Detail), (status = 507, body = Detail, description = "The store is full; nothing stored")))]
pub(crate) async fn upload(
    State(state): State<AppState>,
    Path((platform, version, filename)): Path<(String, String, String)>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let (user, path) = match admin_path(&state, &headers, &platform, &version, &filename).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    let Some(checksum) = query.checksum.as_deref() else {
        return detail(StatusCode::UNPROCESSABLE_ENTITY, "checksum: field required");
    };
    let Ok(expected) = checksum.trim().to_ascii_lowercase().parse::<Sha256Digest>() else {
        return detail(StatusCode::BAD_REQUEST, "checksum must be a SHA-256: 64 hexadecimal characters");
    };
    let (firmware, overwrite) = match (
        flag("firmware_image", query.firmware_image.as_deref()),
        flag("overwrite", query.overwrite.as_deref()),
    ) {
        (Ok(f), Ok(o)) => (f, o),
        (Err(e), _) | (_, Err(e)) => return detail(StatusCode::UNPROCESSABLE_ENTITY, e),
    };
    let mut multipart = match multipart {
        Ok(m) => m,
        Err(e) => {
            return detail(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("file: a multipart/form-data body is required ({e})"),
            );
        }
    };

    // Refuse what the manifest would refuse before reading the body (checked again when the
    // file is placed: another upload may get there first).
    let manifest = match state.server.store.manifest().await {
        Ok(m) => m,
        Err(e) => return store_failed(&e),
    };
    if let Some(why) = refuse(manifest.get(&path), &path, overwrite) {
        return detail(StatusCode::BAD_REQUEST, why);
    }
    let new_entry = ManifestEntry::new(&path, expected, 0, firmware, Some(format!("upload/{user}")));
    if let Err(c @ ManifestConflict::OtherFirmware { .. }) = manifest.check_insert(&new_entry, true) {
        return detail(StatusCode::BAD_REQUEST, conflict_text(&path, &c));
    }
    if !overwrite && manifest.get(&path).is_none() {
        // A file without a manifest entry (copied by hand) is taken too.
        match state.server.store.stat(&path).await {
            Ok(Some(_)) => return detail(StatusCode::BAD_REQUEST, format!("File already exists: {path}")),
            Ok(None) => {}
            Err(e) => return store_failed(&e),
        }
    }

    // Find the `file` part and stream it into the store.
    let mut field = loop {
        match multipart.next_field().await {
            Ok(Some(f)) if f.name() == Some("file") => break f,
            Ok(Some(_)) => continue,
            Ok(None) => return detail(StatusCode::UNPROCESSABLE_ENTITY, "file: field required"),
            Err(e) => return detail(e.status(), format!("upload failed: {}", e.body_text())),
        }
    };
    let mut writer = match state.server.store.writer(&path, expected).await {
        Ok(w) => w,
        Err(e) => return store_failed(&e),
    };
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) => {
                if let Err(e) = writer.write(chunk).await {
                    writer.abort().await;
                    return store_failed(&e);
                }
            }
            Ok(None) => break,
            Err(e) => {
                writer.abort().await;
                let status = e.status();
                let text = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    format!(
                        "File too large: this server accepts uploads of at most {} bytes. Nothing was stored.",
                        state.max_upload
                    )
                } else {
                    format!("upload interrupted: {}. Nothing was stored.", e.body_text())
                };
                tracing::warn!(%path, user, error = %e, "upload failed");
                return detail(status, text);
            }
        }
    }
    // The file and its entry, as one decision on the manifest as it is now.
    let committed = writer
        .commit_with(None, |m, committed, stored| {
            if let Some(why) = refuse(m.get(&path), &path, overwrite) {
                return Err(StoreError::Refused(why));
            }
            let entry = ManifestEntry { size: Some(committed.size), ..new_entry.clone() };
            Ok(m.place(entry, overwrite, stored.is_some())?)
        })
        .await;
    match committed {
        Ok(committed) => {
            tracing::info!(%path, user, sha256 = %committed.sha256, size = committed.size, firmware, "file uploaded");
            Json("OK").into_response()
        }
        Err(StoreError::ChecksumMismatch { expected, actual }) => detail(
            StatusCode::BAD_REQUEST,
            format!(
                "Checksum mismatch: the uploaded file hashes to {actual}, but checksum is {expected}. Nothing was stored."
            ),
        ),
        Err(StoreError::Refused(why)) => detail(StatusCode::BAD_REQUEST, why),
        Err(StoreError::Conflict(c)) => detail(StatusCode::BAD_REQUEST, conflict_text(&path, &c)),
        Err(e) => store_failed(&e),
    }
}

/// `DELETE /v1/files/{platform}/{version}/{filename}`: the file and its manifest entry.
#[utoipa::path(delete, path = "/v1/files/{platform}/{version}/{filename}", tag = "files",
    params(("platform" = String, Path), ("version" = String, Path), ("filename" = String, Path)),
    security(("bearer" = [])),
    responses((status = 200, description = "`\"OK\"`", body = String), (status = 400, body = Detail),
        (status = 401, body = Detail), (status = 403, body = Detail), (status = 404, body = Detail)))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    Path((platform, version, filename)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let (user, path) = match admin_path(&state, &headers, &platform, &version, &filename).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    match entry(&state, &path).await {
        Ok(Some(e)) => {
            if let Some(owner) = e.owner.as_deref().filter(|o| o.starts_with("osimage/")) {
                let why = format!("{path} is managed by {owner}; delete that OsImage instead.");
                return detail(StatusCode::BAD_REQUEST, why);
            }
        }
        Ok(None) => return detail(StatusCode::NOT_FOUND, "File not found in S3."),
        Err(e) => return store_failed(&e),
    }
    // The entry and the file together, under the store's write lock (an upload cannot place a
    // new file between the two), and only if it is still the file checked above.
    let removed = state.server.store.remove_with(&path, |m| {
        if m.get(&path).is_some_and(|e| !e.owner.as_deref().is_some_and(|o| o.starts_with("osimage/"))) {
            m.remove(&path);
            return Ok(true);
        }
        Ok(false)
    });
    if let Err(e) = removed.await {
        return store_failed(&e);
    }
    tracing::info!(%path, user, "file deleted");
    Json("OK").into_response()
}

/// A store failure: `507` for a full disk, `500` otherwise, with the store's own words.
fn store_failed(e: &StoreError) -> Response {
    tracing::warn!(error = %e, "files API: store failed");
    let full = matches!(e, StoreError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC));
    let status = if full { StatusCode::INSUFFICIENT_STORAGE } else { StatusCode::INTERNAL_SERVER_ERROR };
    detail(status, format!("{e}. Nothing was stored."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_as_fastapi_reads_them() {
        for t in ["true", "True", "1", "yes", "on"] {
            assert_eq!(flag("x", Some(t)), Ok(true), "{t}");
        }
        for f in ["false", "0", "no", "OFF"] {
            assert_eq!(flag("x", Some(f)), Ok(false), "{f}");
        }
        assert_eq!(flag("x", None), Ok(false));
        assert!(flag("overwrite", Some("maybe")).is_err_and(|e| e.contains("overwrite")));
    }

    #[test]
    fn refusals_use_the_reference_texts() {
        let path = ImagePath::new("cumulus-linux", "5.14.0", "a.bin").expect("path");
        let sha = Sha256Digest::of(b"a");
        let uploaded = ManifestEntry::new(&path, sha, 1, true, Some("upload/ci".into()));
        assert_eq!(refuse(None, &path, false), None);
        assert_eq!(
            refuse(Some(&uploaded), &path, false).as_deref(),
            Some("File already exists: cumulus-linux/5.14.0/a.bin")
        );
        assert_eq!(refuse(Some(&uploaded), &path, true), None);
        let managed = ManifestEntry { owner: Some("osimage/ztp/cl".into()), ..uploaded };
        assert!(refuse(Some(&managed), &path, true).is_some_and(|w| w.contains("managed by osimage/ztp/cl")));
        let other = ManifestConflict::OtherFirmware {
            dir: "cumulus-linux/5.14.0".into(),
            other: "b.bin".into(),
            owner: None,
        };
        assert_eq!(
            conflict_text(&path, &other),
            "A different firmware image already exists in cumulus-linux/5.14.0/: 'b.bin'. Remove it first or upload with the same filename."
        );
    }
}
