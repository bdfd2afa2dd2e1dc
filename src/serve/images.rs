//! Image downloads by path (`/images/{platform}/{version}/{filename}`, the URL inside ZTP JSON),
//! and the reference service's firmware routes (`/v1/firmware/{platform}/{version}` and
//! `/checksum`). Only files in the manifest are served, never snapshots.

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, Method},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{
    AppState,
    choose::{ImageRequest, firmware_entry},
};

/// `GET|HEAD /images/{platform}/{version}/{filename}`.
pub async fn by_path(
    State(state): State<AppState>,
    Path((platform, version, filename)): Path<(String, String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    state.answer_image(&method, &headers, &ImageRequest::ByPath { platform, version, filename }).await
}

/// `GET|HEAD /v1/firmware/{platform}/{version}`: the directory's firmware image.
pub async fn firmware_image(
    State(state): State<AppState>,
    Path((platform, version)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    state.answer_image(&method, &headers, &ImageRequest::Firmware { platform, version }).await
}

/// `GET /v1/firmware/{platform}/{version}/checksum` → `{"checksum": "<sha256>"}`.
pub async fn firmware_checksum(
    State(state): State<AppState>,
    Path((platform, version)): Path<(String, String)>,
) -> Response {
    match firmware_entry(&state, &platform, &version) {
        Some(e) => Json(json!({"checksum": e.sha256.to_string()})).into_response(),
        None => {
            (axum::http::StatusCode::NOT_FOUND, Json(json!({"detail": "Firmware not found"}))).into_response()
        }
    }
}
