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

use super::{AppState, activity, common::not_for_you};
use crate::{
    api::ImagePath,
    profile::{publish::is_snapshot, snapshot::ImageRef},
    store::ManifestEntry,
};

/// `GET|HEAD /images/{platform}/{version}/{filename}`.
pub async fn by_path(
    State(state): State<AppState>,
    Path((platform, version, filename)): Path<(String, String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let Ok(path) = ImagePath::new(&platform, &version, &filename) else {
        return not_for_you("not a valid image path");
    };
    let manifest = state.server.manifest();
    let Some(entry) = manifest.get(&path).filter(|e| !is_snapshot(e)) else {
        return not_for_you("no such image");
    };
    match image_ref(&state, entry).await {
        Some(img) => served(&state, &method, &headers, &img).await,
        None => not_for_you("no such image"),
    }
}

/// Streams `img`, recorded as the device's image when its headers match a profile.
async fn served(state: &AppState, method: &Method, headers: &HeaderMap, img: &ImageRef) -> Response {
    let response = state.serve_image(method, headers, img).await;
    match activity::identify(state, headers) {
        Some(device) => activity::image_served(response, &device, method),
        None => response,
    }
}

/// What devices download for a manifest entry; hand-edited entries without a size are stat'ed.
async fn image_ref(state: &AppState, entry: &ManifestEntry) -> Option<ImageRef> {
    let size = match entry.size {
        Some(s) => s,
        None => state.server.store.stat(&entry.image_path().ok()?).await.ok()??.size,
    };
    Some(ImageRef { path: entry.path.clone(), sha256: entry.sha256.to_string(), size })
}

fn firmware(state: &AppState, platform: &str, version: &str) -> Option<ManifestEntry> {
    ImagePath::new(platform, version, "x").ok()?;
    state.server.manifest().firmware_of(platform, version).cloned()
}

/// `GET|HEAD /v1/firmware/{platform}/{version}`: the directory's firmware image.
pub async fn firmware_image(
    State(state): State<AppState>,
    Path((platform, version)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let Some(entry) = firmware(&state, &platform, &version) else { return not_for_you("Firmware not found") };
    match image_ref(&state, &entry).await {
        Some(img) => served(&state, &method, &headers, &img).await,
        None => not_for_you("Firmware not found"),
    }
}

/// `GET /v1/firmware/{platform}/{version}/checksum` → `{"checksum": "<sha256>"}`.
pub async fn firmware_checksum(
    State(state): State<AppState>,
    Path((platform, version)): Path<(String, String)>,
) -> Response {
    match firmware(&state, &platform, &version) {
        Some(e) => Json(json!({"checksum": e.sha256.to_string()})).into_response(),
        None => {
            (axum::http::StatusCode::NOT_FOUND, Json(json!({"detail": "Firmware not found"}))).into_response()
        }
    }
}
