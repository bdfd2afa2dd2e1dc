//! `GET /v1/switches` and `GET /v1/switches/{serial}`: the Switches this server knows, as of its
//! last flush ([`crate::switch::roster`]), for `ztpctl switches --server` / `ztpctl switch`.
//! Admin routes (a Switch shows serials, addresses and history): an admin credential, or none with
//! `--public-listing`, as the files API's listings. A server without Switches answers 404.

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};

use super::{
    AppState,
    files::{ApiError, Detail},
};
use crate::{api::Switch, switch::roster::Listed};

/// The answer of a server that keeps no Switches.
pub const NO_SWITCHES: &str = "this server keeps no Switches (it runs without --switches)";

/// `GET /v1/switches`: every Switch, sorted by namespace and name (a JSON list of Switch
/// objects, as `{data}/.status/switches.json` holds them).
#[utoipa::path(get, path = "/v1/switches", tag = "switches", security(("bearer" = [])),
    responses((status = 200, description = "Every Switch this server knows, as of its last flush: a JSON list of Switch objects", content_type = "application/json"),
        (status = 403, body = Detail, description = "No valid credential (listing is public only with `--public-listing`)"),
        (status = 404, body = Detail, description = "The server keeps no Switches"),
        (status = 503, body = Detail, description = "The OIDC issuer's keys cannot be fetched")))]
pub(crate) async fn list(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let all = listed(&state, &headers).await?;
    Ok(Json(all.iter().map(|s| &**s).collect::<Vec<&Switch>>()).into_response())
}

/// `GET /v1/switches/{serial}`: the Switch of one serial number.
#[utoipa::path(get, path = "/v1/switches/{serial}", tag = "switches", security(("bearer" = [])),
    params(("serial" = String, Path, description = "Serial number of the switch")),
    responses((status = 200, description = "The Switch object of this serial number", content_type = "application/json"),
        (status = 403, body = Detail, description = "No valid credential (listing is public only with `--public-listing`)"),
        (status = 404, body = Detail, description = "No Switch has this serial number, or the server keeps no Switches"),
        (status = 503, body = Detail, description = "The OIDC issuer's keys cannot be fetched")))]
pub(crate) async fn one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(serial): Path<String>,
) -> Result<Response, ApiError> {
    let all = listed(&state, &headers).await?;
    match all.iter().find(|s| s.spec.serial_number == serial) {
        Some(s) => Ok(Json(&**s).into_response()),
        None => {
            Err(ApiError::detail(StatusCode::NOT_FOUND, format!("no Switch has serial number {serial:?}")))
        }
    }
}

/// The Switches, to a caller allowed to list them; 404 on a server without Switches.
async fn listed(state: &AppState, headers: &HeaderMap) -> Result<Listed, ApiError> {
    state.admin.check_listing(headers).await?;
    state.switches.roster.list().ok_or_else(|| ApiError::detail(StatusCode::NOT_FOUND, NO_SWITCHES))
}
