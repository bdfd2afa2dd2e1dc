//! The server's OpenAPI document (`/openapi.json`) and Swagger UI (`/docs`, assets compiled into
//! the binary: nothing is downloaded at build or run time).
//!
//! Each route documents itself where its handler is (`#[utoipa::path]`); this module lists them,
//! and holds what several routes share: the headers each switch family sends (docs/protocols.md),
//! the JSON bodies of the files API, and the admin bearer credential.

use axum::Router;
use utoipa::{
    IntoParams, Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use utoipa_swagger_ui::SwaggerUi;

use super::{AppState, activity, cumulus, files, images, onie, rtbrick, ztp_json};

/// Where the document is served.
pub const SPEC_PATH: &str = "/openapi.json";
/// Where Swagger UI is served.
pub const DOCS_PATH: &str = "/docs";

/// The whole server, as OpenAPI 3.1.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "ztp-operator server",
        description = "Zero-touch provisioning for data-centre switches: the routes switches call \
            (ONIE, NVIDIA NVOS / SONiC, Cumulus Linux, RtBrick) and the admin files API of the \
            image store. Device routes and downloads are anonymous; writing routes, listings and \
            `/whoami` take an admin bearer token (a static token or an OIDC access token; \
            listings are anonymous on a server started with `--public-listing`). A request that \
            does not match the declared parameters or body is answered 422 with FastAPI's \
            `{\"detail\": [{\"loc\", \"msg\", \"type\"}]}`; other refusals are `{\"detail\": \"…\"}`."
    ),
    paths(
        onie::fixed,
        onie::waterfall,
        ztp_json::by_headers,
        ztp_json::by_serial,
        ztp_json::section,
        ztp_json::sonic_part,
        cumulus::by_headers,
        cumulus::by_serial,
        rtbrick::image,
        rtbrick::image_file,
        rtbrick::config,
        rtbrick::message,
        images::by_path,
        images::firmware_image,
        images::firmware_checksum,
        activity::provisioned,
        files::healthcheck,
        files::whoami,
        files::list_all,
        files::list_dir,
        files::download,
        files::checksum,
        files::upload,
        files::remove,
        super::healthz,
        super::readyz,
        super::metrics_page,
    ),
    modifiers(&AdminBearer),
    tags(
        (name = "onie", description = "ONIE image discovery: NOS installers and ONIE updaters"),
        (name = "nvos-sonic", description = "NVIDIA NVOS and SONiC ZTP JSON and its sections"),
        (name = "cumulus", description = "Cumulus Linux ZTP scripts"),
        (name = "rtbrick", description = "RtBrick CTRLD: images and configuration files"),
        (name = "images", description = "Image downloads by path, and the firmware routes"),
        (name = "devices", description = "Device callbacks"),
        (name = "files", description = "Admin files API of the image store"),
        (name = "health", description = "Probes and metrics"),
    )
)]
pub struct ApiDoc;

/// The security scheme named `bearer` that admin routes require.
struct AdminBearer;

impl Modify for AdminBearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An admin token from the server's token file, or an OIDC access token (JWT) \
                         of the configured issuer and audience.",
                    ))
                    .build(),
            ),
        );
    }
}

/// `/openapi.json` and Swagger UI at `/docs`.
pub fn routes() -> Router<AppState> {
    Router::new().merge(SwaggerUi::new(DOCS_PATH).url(SPEC_PATH, ApiDoc::openapi()))
}

/// The headers ONIE sends with every discovery request (docs/protocols.md §1); RtBrick's CTRLD sends
/// the serial number too.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // read from the HeaderMap; here only to document them
pub struct OnieHeaders {
    /// Serial number of the switch (matches `spec.match.serialNumbers`).
    #[param(rename = "ONIE-SERIAL-NUMBER")]
    serial_number: Option<String>,
    /// Base MAC address (matches `spec.match.macAddresses`).
    #[param(rename = "ONIE-ETH-ADDR")]
    eth_addr: Option<String>,
    /// Platform name, e.g. `accton_as7712_32x` (matches `spec.match.models`).
    #[param(rename = "ONIE-MACHINE")]
    machine: Option<String>,
    /// Machine revision.
    #[param(rename = "ONIE-MACHINE-REV")]
    machine_rev: Option<String>,
    /// CPU architecture, e.g. `x86_64`.
    #[param(rename = "ONIE-ARCH")]
    arch: Option<String>,
    /// IANA enterprise number of the vendor.
    #[param(rename = "ONIE-VENDOR-ID")]
    vendor_id: Option<String>,
    /// `os-install` (the NOS installer) or `onie-update` (the ONIE updater).
    #[param(rename = "ONIE-OPERATION")]
    operation: Option<String>,
}

/// The headers NVOS and SONiC ZTP send (docs/protocols.md §3.2, §3.4).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct ZtpHeaders {
    /// Serial number of the switch.
    #[param(rename = "SERIAL-NUMBER")]
    serial_number: Option<String>,
    /// Base MAC address.
    #[param(rename = "BASE-MAC-ADDRESS")]
    base_mac: Option<String>,
    /// Product name, e.g. `N5110_LD` (matches `spec.match.models`).
    #[param(rename = "PRODUCT-NAME")]
    product_name: Option<String>,
    /// Running NVOS version (NVOS only).
    #[param(rename = "NVOS-VERSION")]
    nvos_version: Option<String>,
    /// Running SONiC version (SONiC only).
    #[param(rename = "SONiC-VERSION")]
    sonic_version: Option<String>,
}

/// The headers Cumulus Linux ZTP sends (docs/protocols.md §2.3).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct CumulusHeaders {
    /// Serial number of the switch.
    #[param(rename = "CUMULUS-SERIAL")]
    serial: Option<String>,
    /// Base MAC address.
    #[param(rename = "CUMULUS-BASE-MAC")]
    base_mac: Option<String>,
    /// Product name (matches `spec.match.models`).
    #[param(rename = "CUMULUS-PRODUCTNAME")]
    product_name: Option<String>,
}

/// What RtBrick's CTRLD sends beside `ONIE-SERIAL-NUMBER` (docs/protocols.md §4).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct RtBrickHeaders {
    /// Serial number of the switch.
    #[param(rename = "ONIE-SERIAL-NUMBER")]
    serial_number: Option<String>,
    /// The RBFS container.
    #[param(rename = "CONTAINER-NAME")]
    container_name: Option<String>,
    /// The element (switch) name.
    #[param(rename = "ELEMENT-NAME")]
    element_name: Option<String>,
    /// The host name.
    #[param(rename = "HOST-NAME")]
    host_name: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_document_has_every_route_and_marks_admin_routes() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("serialises");
        let paths = doc["paths"].as_object().expect("paths");
        for (path, methods) in [
            ("/onie", &["get"][..]),
            ("/{name}", &["get"]),
            ("/{family}/{serial}/ztp.json", &["get"]),
            ("/cumulus/{serial}/ztp.sh", &["get"]),
            ("/ztp/config/{name}", &["get"]),
            ("/images/{platform}/{version}/{filename}", &["get", "head"]),
            ("/v1/devices/{serial}/provisioned", &["post"]),
            ("/v1/files/", &["get"]),
            ("/v1/files/{platform}/{version}/{filename}", &["get", "head", "post", "delete"]),
            ("/v1/files/{platform}/{version}/{filename}/checksum", &["get"]),
            ("/healthcheck", &["get"]),
        ] {
            for m in methods {
                assert!(paths.get(path).and_then(|p| p.get(*m)).is_some(), "{m} {path} in the document");
            }
        }
        let upload = &paths["/v1/files/{platform}/{version}/{filename}"]["post"];
        assert_eq!(upload["security"], serde_json::json!([{"bearer": []}]));
        assert!(upload["requestBody"]["content"]["multipart/form-data"].is_object(), "{upload}");
        let onie = &paths["/onie"]["get"]["parameters"];
        assert!(onie.as_array().expect("params").iter().any(|p| p["name"] == "ONIE-SERIAL-NUMBER"), "{onie}");
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }

    /// The formats the server enforces are stated, and what it sends is what the document says.
    #[test]
    fn the_document_states_what_the_server_does() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("serialises");
        let paths = &doc["paths"];
        let file = &paths["/v1/files/{platform}/{version}/{filename}"];
        for method in ["get", "post", "delete"] {
            let params = file[method]["parameters"].as_array().expect("parameters");
            for name in ["platform", "version", "filename"] {
                let p = params.iter().find(|p| p["name"] == name).expect(name);
                assert_eq!(p["schema"]["pattern"], crate::api::names::SEGMENT_PATTERN, "{method} {name}");
                assert_eq!(p["schema"]["maxLength"], crate::api::names::MAX_SEGMENT_LEN, "{method} {name}");
            }
            let invalid = &file[method]["responses"]["422"]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(invalid, "#/components/schemas/HTTPValidationError", "{method}");
        }
        let upload = file["post"]["parameters"].as_array().expect("parameters");
        let checksum = upload.iter().find(|p| p["name"] == "checksum").expect("checksum");
        assert_eq!(
            (&checksum["required"], &checksum["schema"]["pattern"]),
            (&json!(true), &json!("^[0-9A-Fa-f]{64}$"))
        );
        let overwrite = upload.iter().find(|p| p["name"] == "overwrite").expect("overwrite");
        assert!(overwrite["schema"]["type"].to_string().contains("boolean"), "{overwrite}");
        let validation = &doc["components"]["schemas"]["ValidationError"];
        assert_eq!(validation["required"], json!(["loc", "msg", "type"]), "{validation}");

        assert!(paths["/healthcheck"]["get"]["responses"]["200"]["content"]["application/json"].is_object());
        assert_ne!(paths["/ztp/message"]["post"]["requestBody"]["required"], json!(true));
        for route in ["/whoami", "/v1/files/"] {
            assert_eq!(paths[route]["get"]["security"], json!([{"bearer": []}]), "{route}");
        }
        let firmware = &paths["/v1/firmware/{platform}/{version}/checksum"]["get"]["responses"]["404"];
        assert!(firmware["content"]["application/json"].is_object(), "{firmware}");
    }
}
