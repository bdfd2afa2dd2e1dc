//! The device handlers driven in process: the whole [`super::router`] over a directory store on a
//! temporary directory, asked with `oneshot` exactly as the connection loop hands a request on
//! (with the peer's address as `ConnectInfo`), each family with the headers it sends. The headers
//! come from [`crate::dryrun::headers`], what `ztpctl device` sends, so the two cannot drift apart.
//! No Kubernetes, no MinIO, no socket: `cargo test --lib` runs these in well under a second.
//!
//! The lab is the one of the e2e test `tests/e2e/devices.rs` (same profiles and images, smaller
//! image bytes), written as the device snapshot the controller or standalone would render from it.

mod cumulus;
mod files;
mod hold;
mod images;
mod onie;
mod report;
mod rtbrick;
mod switch;
mod ztp_json;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::ConnectInfo,
    http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode},
    response::Response,
};
use tower::ServiceExt;

use super::{App, auth, download::Downloads, metrics, observe, onie_pass, router, state};
use crate::{
    activity,
    api::names::ImagePath,
    dryrun::{self, Device},
    hash::Sha256Digest,
    profile::{build, identity::Family, publish, snapshot::Snapshot},
    store::{ManifestEntry, Store, fs::FsBackend},
};

/// Where the lab's switches reach the server (`--external-url`).
pub const BASE: &str = "http://ztp.test:8080";

/// The files API's admin token (`--admin-token-file`, as `ci:<token>`).
pub const ADMIN_TOKEN: &str = "lab-admin-token-0123456789";

/// The lab's snapshot: a model default (ONIE images, an RtBrick `startup` template), `leaf07` by
/// serial and MAC (ONIE installer, NVOS sections, SONiC sections, a Cumulus script) and an
/// NVOS-only profile. Images are `net/nos` (`nos/1/nos.bin`) and `net/onie-update`
/// (`onie/1/onie-updater`), as their sizes and hashes are filled in by [`Lab::new`].
const SNAPSHOT: &str = r##"{
  "format": 1,
  "profiles": [
    {
      "namespace": "net", "name": "as7712-default",
      "models": ["accton_as7712_32x"], "hostname": "default-leaf",
      "onieInstall": "net/nos", "onieUpdate": "net/onie-update",
      "files": {"startup": {"text": {"text": "{\"host\": \"{{ hostname }}\", \"serial\": \"{{ serial }}\", \"element\": \"{{ element_name }}\"}", "template": true}}}
    },
    {
      "namespace": "net", "name": "leaf07",
      "serialNumbers": ["SN-LEAF07"], "macAddresses": ["0c:42:a1:00:00:07"],
      "hostname": "leaf07", "variables": {"ntp": "192.0.2.1"},
      "onieInstall": "net/nos",
      "ztp": {
        "restartZtpNoConfig": false,
        "sections": [
          {"section": {"kind": "image"}, "resolved": {"image": "net/nos"}},
          {"section": {"kind": "commands-list", "clearConfig": true},
           "resolved": {"text": {"text": "nv set system hostname {{ hostname }}\nnv set service ntp default server {{ variables.ntp }}\n", "template": true}}},
          {"section": {"kind": "connectivity-check", "pingHosts": ["192.0.2.1"], "ignoreResult": true}}
        ]
      },
      "sonic": {
        "sections": [
          {"section": {"connectivityCheck": {"pingHosts": ["192.0.2.1"]}}}
        ]
      },
      "cumulusScript": {"text": "#!/bin/bash\n# CUMULUS-AUTOPROVISIONING\necho {{ hostname }}\n", "template": true},
      "files": {"report": {"text": {"text": "curl -H 'Authorization: Bearer {{ report_token }}' {{ report_url }}\n", "template": true}}}
    },
    {
      "namespace": "net", "name": "nvos-only",
      "serialNumbers": ["SN-NVOS-ONLY"],
      "ztp": {"sections": [{"section": {"kind": "connectivity-check", "pingHosts": ["192.0.2.1"]}}]}
    }
  ],
  "images": {}
}"##;

/// The server over a store holding the lab's images and snapshot.
pub struct Lab {
    pub router: Router,
    /// What the router serves (what the connection workers take).
    pub app: super::AppState,
    pub store: Store,
    /// The `nos` image (ONIE installer, NVOS image).
    pub install: Vec<u8>,
    /// The `onie-update` image.
    pub update: Vec<u8>,
    /// What the request log gathered for the devices' Switches.
    pub switches: crate::switch::book::Book,
    /// The serials on hold (what the Switch watch keeps current in a real server).
    pub held: crate::switch::hold::Held,
    /// The Switches `GET /v1/switches` lists (what the writer sets in a real server).
    pub roster: crate::switch::roster::Roster,
    /// The server's report key ([`REPORT_KEY`]).
    pub report_key: crate::switch::token::ReportKey,
    _dir: tempfile::TempDir,
}

/// The lab server's report key (`--report-key-file`).
pub const REPORT_KEY: &str = "lab-report-key-0123456789abcdef0123456789";

impl Lab {
    pub async fn new() -> Lab {
        Lab::with_switches(Vec::new()).await
    }

    /// The lab with `switches` in its snapshot (Switches that pin a profile or carry values).
    pub async fn with_switches(switches: Vec<crate::profile::snapshot::SwitchSnapshot>) -> Lab {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(Arc::new(FsBackend::new(dir.path()).expect("directory store")));
        let install: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let update = b"#!/bin/sh\necho the ONIE updater\n".to_vec();
        let mut snapshot: Snapshot = serde_json::from_str(SNAPSHOT).expect("the lab snapshot parses");
        for (key, (platform, file), bytes) in [
            ("net/nos", ("nos", "nos.bin"), &install),
            ("net/onie-update", ("onie", "onie-updater"), &update),
        ] {
            let image = put(&store, ImagePath::new(platform, "1", file).expect("image path"), bytes).await;
            snapshot.images.insert(key.to_owned(), image);
        }
        snapshot.switches = switches;
        build::set_version(&mut snapshot);
        publish::publish(&store, &snapshot).await.expect("publish the snapshot");
        let tokens = dir.path().join("admin-tokens");
        std::fs::write(&tokens, format!("ci:{ADMIN_TOKEN}\n")).expect("write the token file");
        let admin = auth::AdminAuth::from_file(&tokens).expect("the token file");
        let server = Arc::new(state::ServerState::new(store.clone(), state::BaseUrl::Fixed(BASE.into())));
        server.reload().await;
        assert!(server.loaded().is_some_and(|l| l.snapshot.profiles.len() == 3), "the snapshot is loaded");
        let tracking = crate::switch::Tracking::new();
        let (switches, held, roster) =
            (tracking.book.clone(), tracking.held.clone(), tracking.roster.clone());
        let report_key = crate::switch::token::ReportKey::from_bytes("lab", REPORT_KEY.as_bytes())
            .expect("a long enough key");
        let app = Arc::new(App {
            downloads: Downloads::new(store.clone(), 2, 5),
            server,
            metrics: metrics::Metrics::default(),
            max_downloads: 2,
            activity: activity::Activity::disabled(),
            switches: tracking,
            reports: super::report::Reports { key: Some(Arc::new(report_key.clone())), require_token: false },
            admin,
            max_upload: 1 << 20,
            device_networks: observe::DeviceNetworks::default(),
            passes: onie_pass::Passes::default(),
        });
        Lab {
            router: router(app.clone()),
            app,
            store,
            install,
            update,
            switches,
            held,
            roster,
            report_key,
            _dir: dir,
        }
    }

    /// One request through the router, from a switch at 192.0.2.50; the body not read yet.
    pub async fn response(&self, method: Method, uri: &str, headers: &HeaderMap) -> Response {
        self.response_with_body(method, uri, headers, Bytes::new()).await
    }

    /// [`Lab::response`] of a request with a body.
    pub async fn response_with_body(
        &self,
        method: Method,
        uri: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Response {
        let mut request = Request::builder().method(method).uri(uri).body(Body::from(body)).expect("request");
        *request.headers_mut() = headers.clone();
        let peer: SocketAddr = "192.0.2.50:40000".parse().expect("peer");
        request.extensions_mut().insert(ConnectInfo(peer));
        self.router.clone().oneshot(request).await.expect("the router is infallible")
    }

    /// [`Lab::response`] with its body read.
    pub async fn send(&self, method: Method, uri: &str, headers: &HeaderMap) -> Answer {
        self.send_body(method, uri, headers, Bytes::new()).await
    }

    /// [`Lab::send`] with a request body.
    pub async fn send_body(&self, method: Method, uri: &str, headers: &HeaderMap, body: Bytes) -> Answer {
        let (parts, body) = self.response_with_body(method, uri, headers, body).await.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.expect("the whole body");
        Answer { status: parts.status, headers: parts.headers, body }
    }

    pub async fn get(&self, uri: &str, headers: &HeaderMap) -> Answer {
        self.send(Method::GET, uri, headers).await
    }
}

/// A response, body read.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("a text body")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} in {self:?}"))
    }
}

/// Stores an image as the controller does (verified, in the manifest) and says where it is.
async fn put(store: &Store, path: ImagePath, bytes: &[u8]) -> crate::profile::snapshot::ImageRef {
    let sha = Sha256Digest::of(bytes);
    let mut writer = store.writer(&path, sha).await.expect("writer");
    writer.write(Bytes::copy_from_slice(bytes)).await.expect("write");
    let size = bytes.len() as u64;
    let entry = ManifestEntry::new(&path, sha, size, true, Some("osimage/net/lab".into()));
    writer.commit_entry(Some(size), entry, false).await.expect("commit");
    crate::profile::snapshot::ImageRef { path: path.to_string(), sha256: sha.to_string(), size }
}

/// What `family` sends as `device` (the switch's own headers, from [`dryrun::headers`]).
pub fn sent_by(family: Family, device: &Device) -> HeaderMap {
    let pairs = dryrun::headers(family, device).expect("a valid device");
    headers(pairs.iter().map(|(k, v)| (*k, v.as_str())))
}

/// A header map from name / value pairs (a repeated name keeps the last value).
pub fn headers<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
        map.insert(name, HeaderValue::from_str(value).expect("header value"));
    }
    map
}

/// A device of the lab: `serial`, `mac`, the model ONIE and RtBrick send.
pub fn device(serial: &str, mac: Option<&str>, onie_operation: &str) -> Device {
    Device {
        serial: serial.into(),
        mac: mac.map(str::to_owned),
        model: Some("accton_as7712_32x".into()),
        onie_operation: onie_operation.into(),
    }
}
