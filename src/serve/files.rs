//! The admin files API of the reference image store (`/v1/files/…`, `/healthcheck`, `/whoami`),
//! on both storage backends. Clients written against the reference service work unchanged: the
//! same routes, query parameters, `{"detail": …}` errors and texts. Where it differs, it is
//! stricter: an upload is hashed while it streams to the store and refused (nothing stored) when
//! it does not match `checksum`, and `DELETE` exists. Device snapshots (`ztp-snapshots/`, which
//! can hold Secret content) are never listed, served or written here.
//!
//! Errors are [`ApiError`]: a request that does not match the declared parameters or body (a
//! missing field, a path segment or checksum not matching its pattern, a non-boolean flag) is
//! FastAPI's `422` with its list shape (`{"detail": [{"loc", "msg", "type"}]}`); every other
//! refusal is `{"detail": "<text>"}` with the reference's status and words.

use std::time::SystemTime;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{
        DefaultBodyLimit, Multipart, Path, Query, State,
        multipart::{MultipartError, MultipartRejection},
        rejection::QueryRejection,
    },
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use crate::{
    api::{ImagePath, SegmentError, validate_segment},
    hash::Sha256Digest,
    profile::publish::{SNAPSHOT_PLATFORM, is_snapshot},
    store::{ManifestConflict, ManifestEntry, StoreError, VerifyingWriter},
};

/// `{"detail": text}` with `status`, as the reference (FastAPI) answers errors.
pub fn detail(status: StatusCode, text: impl Into<String>) -> Response {
    ApiError::detail(status, text).into_response()
}

/// `{"detail": …}`: every refusal of the files API that is not a validation error, in the
/// reference service's words.
#[derive(Serialize, ToSchema)]
pub struct Detail {
    pub detail: String,
}

/// One reason a request does not match the API, as FastAPI (pydantic) reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ValidationError {
    /// Where: `"path"`, `"query"` or `"body"`, then the parameter or field name.
    pub loc: Vec<String>,
    /// What is wrong, for a human.
    pub msg: String,
    /// What kind of error, for a program: `missing`, `string_pattern_mismatch`,
    /// `string_too_long`, `bool_parsing`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// `422`: the request does not match the declared parameters or body (FastAPI's
/// `HTTPValidationError`).
#[derive(Serialize, ToSchema)]
#[schema(as = HTTPValidationError)]
pub struct HttpValidationError {
    pub detail: Vec<ValidationError>,
}

/// An error of the files API (and of the reference's firmware routes): one response shape per
/// kind, as the reference service answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// `{"detail": text}` with `status`: a refusal (not found, file exists, checksum mismatch,
    /// no credential, store failure, …).
    #[error("{status}: {detail}")]
    Detail { status: StatusCode, detail: String },
    /// `422 {"detail": [{loc, msg, type}, …]}`: the request does not match the API.
    #[error("422: {0:?}")]
    Invalid(Vec<ValidationError>),
}

impl ApiError {
    pub fn detail(status: StatusCode, text: impl Into<String>) -> Self {
        Self::Detail { status, detail: text.into() }
    }

    /// `name` empty: the whole `place` (a query string that does not parse).
    fn invalid(place: &str, name: &str, msg: impl Into<String>, kind: &str) -> Self {
        let loc = [place, name].into_iter().filter(|l| !l.is_empty()).map(str::to_owned).collect();
        Self::Invalid(vec![ValidationError { loc, msg: msg.into(), kind: kind.to_owned() }])
    }

    /// A required parameter or field is absent (`place` is `"query"`, `"body"`, …).
    pub fn missing(place: &str, name: &str) -> Self {
        Self::invalid(place, name, "Field required", "missing")
    }

    /// A path segment that is not a safe name ([`validate_segment`], stated as
    /// [`crate::api::names::SEGMENT_PATTERN`] in the document).
    pub fn segment(e: &SegmentError) -> Self {
        let (name, kind) = match e {
            SegmentError::Empty { what } => (*what, "string_too_short"),
            SegmentError::TooLong { what, .. } => (*what, "string_too_long"),
            SegmentError::BadChar { what, .. }
            | SegmentError::LeadingDot { what, .. }
            | SegmentError::DotDot { what, .. }
            | SegmentError::Reserved { what, .. } => (*what, "string_pattern_mismatch"),
        };
        Self::invalid("path", name, e.to_string(), kind)
    }
}

impl From<super::auth::Refused> for ApiError {
    fn from(r: super::auth::Refused) -> Self {
        Self::detail(r.status, r.detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Detail { status, detail } => (status, Json(Detail { detail })).into_response(),
            Self::Invalid(detail) => {
                (StatusCode::UNPROCESSABLE_ENTITY, Json(HttpValidationError { detail })).into_response()
            }
        }
    }
}

/// `{platform}` and `{version}` of a directory: safe names, as the server checks them.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // read with `Path`; here only to document them
pub(crate) struct DirParams {
    /// Platform, e.g. `cumulus-linux`.
    #[param(pattern = r"^[A-Za-z0-9_+~@=,-](\.?[A-Za-z0-9_+~@=,-])*\.?$", min_length = 1, max_length = 128)]
    platform: String,
    /// Version, e.g. `5.14.0`.
    #[param(pattern = r"^[A-Za-z0-9_+~@=,-](\.?[A-Za-z0-9_+~@=,-])*\.?$", min_length = 1, max_length = 128)]
    version: String,
}

/// `{platform}/{version}/{filename}` of a file: safe names, as the server checks them.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct FileParams {
    /// Platform, e.g. `cumulus-linux`.
    #[param(pattern = r"^[A-Za-z0-9_+~@=,-](\.?[A-Za-z0-9_+~@=,-])*\.?$", min_length = 1, max_length = 128)]
    platform: String,
    /// Version, e.g. `5.14.0`.
    #[param(pattern = r"^[A-Za-z0-9_+~@=,-](\.?[A-Za-z0-9_+~@=,-])*\.?$", min_length = 1, max_length = 128)]
    version: String,
    /// File name, e.g. `cumulus-linux-5.14.0-mlx-amd64.bin`.
    #[param(pattern = r"^[A-Za-z0-9_+~@=,-](\.?[A-Za-z0-9_+~@=,-])*\.?$", min_length = 1, max_length = 128)]
    filename: String,
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
    /// The token's name (static tokens) or the JWT's subject.
    pub user: String,
    /// `["admin"]`: every valid credential is an admin one.
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

/// `GET /healthcheck`: `"OK"` (a JSON string), as the reference answers.
#[utoipa::path(get, path = "/healthcheck", tag = "health",
    responses((status = 200, description = "`\"OK\"`", body = String, content_type = "application/json")))]
pub(crate) async fn healthcheck() -> Json<&'static str> {
    Json("OK")
}

/// `GET /whoami`: `{user, roles}` of the caller's admin credential; 403 without a valid one (as
/// the reference, which needs an SSO identity here).
#[utoipa::path(get, path = "/whoami", tag = "files", security(("bearer" = [])),
    responses((status = 200, body = WhoAmI),
        (status = 403, body = Detail, description = "No credential (`This endpoint requires SSO authentication.`), or not a valid one"),
        (status = 503, body = Detail, description = "The OIDC issuer's keys cannot be fetched")))]
pub(crate) async fn whoami(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<WhoAmI>, ApiError> {
    let user = state.admin.check(&headers).await?;
    Ok(Json(WhoAmI { user, roles: vec!["admin".to_owned()] }))
}

/// A path of the files API, validated: `422` for a segment that is not a safe name, `404` for
/// the snapshots' platform.
fn file_path(platform: &str, version: &str, filename: &str) -> Result<ImagePath, ApiError> {
    if platform == SNAPSHOT_PLATFORM {
        return Err(ApiError::detail(StatusCode::NOT_FOUND, "File not found in S3."));
    }
    validate_segment("platform", platform).map_err(|e| ApiError::segment(&e))?;
    validate_segment("version", version).map_err(|e| ApiError::segment(&e))?;
    validate_segment("filename", filename).map_err(|e| ApiError::segment(&e))?;
    ImagePath::new(platform, version, filename).map_err(|e| ApiError::segment(&e))
}

fn seconds(t: Option<SystemTime>) -> Option<f64> {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).map(|d| d.as_secs_f64())
}

/// `GET /v1/files/`: every file with size, last modified, sha256 and tags.
#[utoipa::path(get, path = "/v1/files/", tag = "files", security(("bearer" = [])),
    responses((status = 200, body = [FileInfo]),
        (status = 403, body = Detail, description = "No valid credential (listing is public only with `--public-listing`)"),
        (status = 500, body = Detail), (status = 503, body = Detail, description = "The OIDC issuer's keys cannot be fetched")))]
pub(crate) async fn list_all(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.admin.check_listing(&headers).await?;
    let (manifest, objects) = match (state.server.store.manifest().await, state.server.store.list().await) {
        (Ok(m), Ok(o)) => (m, o),
        (Err(e), _) | (_, Err(e)) => return Err(store_error(&e)),
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
    Ok(Json(files).into_response())
}

/// `GET /v1/files/{platform}/{version}/`: `[{file, last_modified, size}]`.
#[utoipa::path(get, path = "/v1/files/{platform}/{version}/", tag = "files",
    params(DirParams), security(("bearer" = [])),
    responses((status = 200, body = [DirEntry]),
        (status = 403, body = Detail, description = "No valid credential (listing is public only with `--public-listing`)"),
        (status = 404, body = Detail, description = "The snapshots' platform"),
        (status = 422, body = HttpValidationError, description = "A path segment that is not a safe name"),
        (status = 500, body = Detail), (status = 503, body = Detail, description = "The OIDC issuer's keys cannot be fetched")))]
pub(crate) async fn list_dir(
    State(state): State<AppState>,
    Path((platform, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.admin.check_listing(&headers).await?;
    file_path(&platform, &version, "x")?;
    let manifest = state.server.store.manifest().await.map_err(|e| store_error(&e))?;
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
    Ok(Json(files).into_response())
}

/// The manifest entry of a file the API may show.
async fn entry(state: &AppState, path: &ImagePath) -> Result<Option<ManifestEntry>, StoreError> {
    Ok(state.server.store.manifest().await?.get(path).filter(|e| !is_snapshot(e)).cloned())
}

/// `GET|HEAD /v1/files/{platform}/{version}/{filename}`: the bytes (Range as for devices).
#[utoipa::path(method(get, head), path = "/v1/files/{platform}/{version}/{filename}", tag = "files",
    params(FileParams),
    responses((status = 200, description = "The file (`Range` gives 206), as an attachment (`Content-Disposition`)", content_type = "application/octet-stream"),
        (status = 404, body = Detail), (status = 422, body = HttpValidationError, description = "A path segment that is not a safe name")))]
pub(crate) async fn download(
    State(state): State<AppState>,
    Path((platform, version, filename)): Path<(String, String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let path = file_path(&platform, &version, &filename)?;
    let not_found = || {
        let text =
            if method == Method::HEAD { "File not found in storage." } else { "File not found in S3." };
        ApiError::detail(StatusCode::NOT_FOUND, text)
    };
    let e = entry(&state, &path).await.map_err(|e| store_error(&e))?.ok_or_else(not_found)?;
    let size = match e.size {
        Some(size) => size,
        None => {
            state.server.store.stat(&path).await.map_err(|e| store_error(&e))?.ok_or_else(not_found)?.size
        }
    };
    Ok(state.downloads.serve(&method, &headers, &path, &e.sha256.to_string(), size).await)
}

/// `GET /v1/files/{platform}/{version}/{filename}/checksum` → `{"checksum": …}`.
#[utoipa::path(get, path = "/v1/files/{platform}/{version}/{filename}/checksum", tag = "files",
    params(FileParams),
    responses((status = 200, body = Checksum), (status = 404, body = Detail),
        (status = 422, body = HttpValidationError, description = "A path segment that is not a safe name"),
        (status = 500, body = Detail)))]
pub(crate) async fn checksum(
    State(state): State<AppState>,
    Path((platform, version, filename)): Path<(String, String, String)>,
) -> Result<Json<Checksum>, ApiError> {
    let path = file_path(&platform, &version, &filename)?;
    match entry(&state, &path).await {
        Ok(Some(e)) => Ok(Json(Checksum { checksum: e.sha256.to_string() })),
        Ok(None) => {
            Err(ApiError::detail(StatusCode::NOT_FOUND, format!("Checksum data not found for {path}.")))
        }
        Err(e) => Err(store_error(&e)),
    }
}

/// Query parameters of an upload (booleans as FastAPI reads them: true/false, 1/0, yes/no, on/off).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UploadQuery {
    /// SHA-256 of the file (64 hex digits), required: the upload is refused when the bytes
    /// received hash differently.
    #[param(required = true, value_type = String, pattern = r"^[0-9A-Fa-f]{64}$")]
    checksum: Option<String>,
    /// Tag the file `firmware-image` (at most one per `{platform}/{version}/`).
    #[param(value_type = Option<bool>, default = false)]
    firmware_image: Option<String>,
    /// Replace a file of the same path.
    #[param(value_type = Option<bool>, default = false)]
    overwrite: Option<String>,
}

/// A boolean query parameter, read as FastAPI reads one; else its `422`.
fn flag(name: &str, value: Option<&str>) -> Result<bool, ApiError> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None => Ok(false),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(_) => Err(ApiError::invalid(
            "query",
            name,
            "Input should be a valid boolean, unable to interpret input",
            "bool_parsing",
        )),
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
) -> Result<(String, ImagePath), ApiError> {
    let user = state.admin.check(headers).await?;
    Ok((user, file_path(platform, version, filename)?))
}

/// `POST /v1/files/{platform}/{version}/{filename}?checksum=&firmware_image=&overwrite=` with a
/// multipart `file` part, streamed to the store while it is hashed.
#[utoipa::path(post, path = "/v1/files/{platform}/{version}/{filename}", tag = "files",
    params(FileParams, UploadQuery),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    security(("bearer" = [])),
    responses((status = 200, description = "Stored, verified, in the manifest: `\"OK\"`", body = String, content_type = "application/json"),
        (status = 400, body = Detail, description = "Checksum mismatch, file exists, another firmware image, a file an OsImage manages"),
        (status = 403, body = Detail, description = "No valid admin credential"),
        (status = 404, body = Detail, description = "The snapshots' platform"),
        (status = 413, body = Detail, description = "Larger than the server accepts; nothing stored"),
        (status = 422, body = HttpValidationError, description = "A path segment or `checksum` not matching its pattern, a flag that is not a boolean, no `file` part"),
        (status = 500, body = Detail), (status = 503, body = Detail, description = "The OIDC issuer's keys cannot be fetched"),
        (status = 507, body = Detail, description = "The store is full; nothing stored")))]
pub(crate) async fn upload(
    state: State<AppState>,
    path: Path<(String, String, String)>,
    query: Result<Query<UploadQuery>, QueryRejection>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    match store_upload(state, path, query, headers, multipart).await {
        Ok(response) => response,
        // A refusal may leave the body unread, and hyper then closes the connection after the
        // answer: saying so keeps a client from sending its next request on it.
        Err(e) => {
            let mut response = e.into_response();
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

async fn store_upload(
    State(state): State<AppState>,
    Path((platform, version, filename)): Path<(String, String, String)>,
    query: Result<Query<UploadQuery>, QueryRejection>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let (user, path) = admin_path(&state, &headers, &platform, &version, &filename).await?;
    let Query(query) = query.map_err(|e| ApiError::invalid("query", "", e.body_text(), "query_parsing"))?;
    let checksum = query.checksum.as_deref().ok_or_else(|| ApiError::missing("query", "checksum"))?;
    let expected = checksum
        .to_ascii_lowercase()
        .parse::<Sha256Digest>()
        .map_err(|_| ApiError::invalid("query", "checksum", CHECKSUM_MSG, "string_pattern_mismatch"))?;
    // Both flags are read before either is refused: the first bad one (in this order) is named.
    let (firmware, overwrite) = (
        flag("firmware_image", query.firmware_image.as_deref()),
        flag("overwrite", query.overwrite.as_deref()),
    );
    let (firmware, overwrite) = (firmware?, overwrite?);
    let mut multipart = multipart.map_err(|e| {
        let msg = format!("Field required: a multipart/form-data body with a `file` part ({e})");
        ApiError::invalid("body", "file", msg, "missing")
    })?;

    // Refuse what the manifest would refuse before reading the body (checked again when the
    // file is placed: another upload may get there first).
    let manifest = state.server.store.manifest().await.map_err(|e| store_error(&e))?;
    if let Some(why) = refuse(manifest.get(&path), &path, overwrite) {
        return Err(ApiError::detail(StatusCode::BAD_REQUEST, why));
    }
    let new_entry = ManifestEntry::new(&path, expected, 0, firmware, Some(format!("upload/{user}")));
    if let Err(c @ ManifestConflict::OtherFirmware { .. }) = manifest.check_insert(&new_entry, true) {
        return Err(ApiError::detail(StatusCode::BAD_REQUEST, conflict_text(&path, &c)));
    }
    // A file without a manifest entry (copied by hand) is taken too.
    if !overwrite
        && manifest.get(&path).is_none()
        && state.server.store.stat(&path).await.map_err(|e| store_error(&e))?.is_some()
    {
        return Err(ApiError::detail(StatusCode::BAD_REQUEST, format!("File already exists: {path}")));
    }

    // Find the `file` part and stream it into the store.
    let store = &state.server.store;
    let writer = match copy_file_part(
        &mut multipart,
        async || store.writer(&path, expected).await,
        async |w: &mut VerifyingWriter, chunk| w.write(chunk).await,
    )
    .await
    {
        FilePart::Copied(w) => w,
        FilePart::Missing => return Err(ApiError::missing("body", "file")),
        FilePart::Unreadable(e) => {
            return Err(ApiError::detail(e.status(), format!("upload failed: {}", e.body_text())));
        }
        FilePart::NotOpened(e) => return Err(store_error(&e)),
        FilePart::NotWritten(w, e) => {
            w.abort().await;
            return Err(store_error(&e));
        }
        FilePart::BrokenOff(w, e) => {
            w.abort().await;
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
            return Err(ApiError::detail(status, text));
        }
    };
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
    let committed = committed.map_err(|e| match e {
        StoreError::ChecksumMismatch { expected, actual } => ApiError::detail(
            StatusCode::BAD_REQUEST,
            format!(
                "Checksum mismatch: the uploaded file hashes to {actual}, but checksum is {expected}. Nothing was stored."
            ),
        ),
        StoreError::Refused(why) => ApiError::detail(StatusCode::BAD_REQUEST, why),
        StoreError::Conflict(c) => ApiError::detail(StatusCode::BAD_REQUEST, conflict_text(&path, &c)),
        e => store_error(&e),
    })?;
    tracing::info!(%path, user, sha256 = %committed.sha256, size = committed.size, firmware, "file uploaded");
    Ok(Json("OK").into_response())
}

/// How copying an upload's `file` part into a sink ended.
pub(crate) enum FilePart<W, E> {
    /// Every chunk of the part went into the sink, in order.
    Copied(W),
    /// The body has no `file` part.
    Missing,
    /// The body could not be read as multipart before the `file` part began.
    Unreadable(MultipartError),
    /// The sink could not be opened.
    NotOpened(E),
    /// A chunk could not be written: the sink, to abort, and why.
    NotWritten(W, E),
    /// The part broke off (too large, interrupted): the sink, to abort, and why.
    BrokenOff(W, MultipartError),
}

/// Finds the `file` part of an upload's multipart body (other parts are skipped), opens the sink
/// with `open` only then, and writes each chunk of the part into it with `write`. The one
/// reading of an upload: the files API streams into the store with it, and the fuzz target
/// (`fuzzing::multipart`) runs it as it is.
pub(crate) async fn copy_file_part<W, E>(
    multipart: &mut Multipart,
    open: impl AsyncFnOnce() -> Result<W, E>,
    mut write: impl AsyncFnMut(&mut W, Bytes) -> Result<(), E>,
) -> FilePart<W, E> {
    let mut field = loop {
        match multipart.next_field().await {
            Ok(Some(f)) if f.name() == Some("file") => break f,
            Ok(Some(_)) => continue,
            Ok(None) => return FilePart::Missing,
            Err(e) => return FilePart::Unreadable(e),
        }
    };
    let mut sink = match open().await {
        Ok(w) => w,
        Err(e) => return FilePart::NotOpened(e),
    };
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) => {
                if let Err(e) = write(&mut sink, chunk).await {
                    return FilePart::NotWritten(sink, e);
                }
            }
            Ok(None) => return FilePart::Copied(sink),
            Err(e) => return FilePart::BrokenOff(sink, e),
        }
    }
}

/// `DELETE /v1/files/{platform}/{version}/{filename}`: the file and its manifest entry.
#[utoipa::path(delete, path = "/v1/files/{platform}/{version}/{filename}", tag = "files",
    params(FileParams),
    security(("bearer" = [])),
    responses((status = 200, description = "`\"OK\"`", body = String, content_type = "application/json"),
        (status = 400, body = Detail, description = "A file an OsImage manages"),
        (status = 403, body = Detail, description = "No valid admin credential"), (status = 404, body = Detail),
        (status = 422, body = HttpValidationError, description = "A path segment that is not a safe name"),
        (status = 500, body = Detail), (status = 503, body = Detail, description = "The OIDC issuer's keys cannot be fetched")))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    Path((platform, version, filename)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (user, path) = admin_path(&state, &headers, &platform, &version, &filename).await?;
    let e = entry(&state, &path).await.map_err(|e| store_error(&e))?;
    let e = e.ok_or_else(|| ApiError::detail(StatusCode::NOT_FOUND, "File not found in S3."))?;
    if let Some(owner) = e.owner.as_deref().filter(|o| o.starts_with("osimage/")) {
        let why = format!("{path} is managed by {owner}; delete that OsImage instead.");
        return Err(ApiError::detail(StatusCode::BAD_REQUEST, why));
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
    removed.await.map_err(|e| store_error(&e))?;
    tracing::info!(%path, user, "file deleted");
    Ok(Json("OK").into_response())
}

/// What `422` says of a `checksum` that is not a SHA-256.
const CHECKSUM_MSG: &str =
    "String should match pattern '^[0-9A-Fa-f]{64}$': a SHA-256, 64 hexadecimal characters";

/// A store failure: `507` for a full disk, `500` otherwise, with the store's own words.
fn store_error(e: &StoreError) -> ApiError {
    tracing::warn!(error = %e, "files API: store failed");
    let full = matches!(e, StoreError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC));
    let status = if full { StatusCode::INSUFFICIENT_STORAGE } else { StatusCode::INTERNAL_SERVER_ERROR };
    ApiError::detail(status, format!("{e}. Nothing was stored."))
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
        let Err(ApiError::Invalid(errors)) = flag("overwrite", Some("maybe")) else { panic!("not a 422") };
        assert_eq!(errors[0].loc, ["query", "overwrite"]);
        assert_eq!(errors[0].kind, "bool_parsing");
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
