//! Image downloads by path (`/images/{platform}/{version}/{filename}`, the URL inside ZTP JSON),
//! and the reference service's firmware routes (`/v1/firmware/{platform}/{version}` and
//! `/checksum`). Only files in the manifest are served, never snapshots.

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, Method},
    response::{IntoResponse, Response},
};

use super::{
    AppState,
    choose::{ImageRequest, firmware_entry},
    files::Checksum,
    reply::Refusal,
};

/// `GET|HEAD /images/{platform}/{version}/{filename}`.
#[utoipa::path(method(get, head), path = "/images/{platform}/{version}/{filename}", tag = "images",
    params(("platform" = String, Path), ("version" = String, Path), ("filename" = String, Path)),
    responses((status = 200, description = "The image (`ETag` is its sha256; `Range` gives 206, an unsatisfiable one 416)", content_type = "application/octet-stream"),
        (status = 404, description = "No such file in the manifest"),
        (status = 503, description = "Too many downloads at once (`Retry-After`)")))]
pub async fn by_path(
    State(state): State<AppState>,
    Path((platform, version, filename)): Path<(String, String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    state.answer_image(&method, &headers, None, &ImageRequest::ByPath { platform, version, filename }).await
}

/// `GET|HEAD /v1/firmware/{platform}/{version}`: the directory's firmware image.
#[utoipa::path(method(get, head), path = "/v1/firmware/{platform}/{version}", tag = "images",
    params(("platform" = String, Path), ("version" = String, Path)),
    responses((status = 200, description = "The directory's image tagged `firmware-image`, as an attachment (`Content-Disposition`; `Range` gives 206)", content_type = "application/octet-stream"),
        (status = 404, description = "No firmware image in this directory: `Firmware image not found in S3.`", body = super::files::Detail),
        (status = 503, description = "Too many downloads at once (`Retry-After`)")))]
pub async fn firmware_image(
    State(state): State<AppState>,
    Path((platform, version)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    state.answer_image(&method, &headers, None, &ImageRequest::Firmware { platform, version }).await
}

/// `GET /v1/firmware/{platform}/{version}/checksum` → `{"checksum": "<sha256>"}`.
#[utoipa::path(get, path = "/v1/firmware/{platform}/{version}/checksum", tag = "images",
    params(("platform" = String, Path), ("version" = String, Path)),
    responses((status = 200, description = "SHA-256 of the directory's firmware image", body = super::files::Checksum),
        (status = 404, description = "No firmware image in this directory: `Firmware image not found in S3.`", body = super::files::Detail)))]
pub async fn firmware_checksum(
    State(state): State<AppState>,
    Path((platform, version)): Path<(String, String)>,
) -> Result<Response, Refusal> {
    let entry = firmware_entry(&state, &platform, &version).ok_or(Refusal::FirmwareNotFound)?;
    Ok(Json(Checksum { checksum: entry.sha256.to_string() }).into_response())
}
