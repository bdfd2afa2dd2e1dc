//! The server's OpenAPI document (`/openapi.json`) and Swagger UI (`/docs`, assets compiled into
//! the binary: nothing is downloaded at build or run time).
//!
//! Each route documents itself where its handler is (`#[utoipa::path]`, with the headers its
//! family sends beside it); this module lists them, and holds the admin bearer credential.

use axum::Router;
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use utoipa_swagger_ui::SwaggerUi;

use super::{AppState, cumulus, device, files, images, onie, rtbrick, ztp_json};

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
        device::provisioned,
        super::report::report,
        files::healthcheck,
        files::whoami,
        files::list_all,
        files::list_dir,
        files::download,
        files::checksum,
        files::upload,
        files::remove,
        super::switches::list,
        super::switches::one,
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
        (name = "devices", description = "Device callbacks and stage reports"),
        (name = "files", description = "Admin files API of the image store"),
        (name = "switches", description = "The Switches this server knows (one per device)"),
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
            ("/v1/devices/{serial}/report", &["post"]),
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
        // A report with a field the document does not declare is refused (400), so the document
        // says none may be added.
        let report = &doc["components"]["schemas"]["StageReport"];
        assert_eq!(report["additionalProperties"], json!(false), "{report}");
        assert_eq!(report["required"], json!(["stage"]), "{report}");
    }

    /// Every device route template of the URL space is documented (the router declares the same).
    #[test]
    fn the_document_has_every_device_route() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("serialises");
        for template in crate::routes::TEMPLATES {
            assert!(doc["paths"].get(*template).is_some(), "{template} in the document");
        }
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
