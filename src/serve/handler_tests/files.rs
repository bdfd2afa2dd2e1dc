//! The admin files API (the reference service's routes): the admin token, listing, uploads
//! verified against their checksum, downloads.

use axum::http::{HeaderMap, Method, StatusCode};
use bytes::Bytes;

use super::{ADMIN_TOKEN, Lab, headers};
use crate::{hash::Sha256Digest, serve::auth::NO_CREDENTIAL};

fn admin() -> HeaderMap {
    headers([("Authorization", format!("Bearer {ADMIN_TOKEN}").as_str())])
}

/// A `multipart/form-data` body with one `file` part, as `curl -F file=@a.bin` sends it.
fn form(file: &[u8]) -> (HeaderMap, Bytes) {
    let mut body = b"--XBOUNDARYX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
    body.extend_from_slice(file);
    body.extend_from_slice(b"\r\n--XBOUNDARYX--\r\n");
    let mut h = admin();
    h.extend(headers([("Content-Type", "multipart/form-data; boundary=XBOUNDARYX")]));
    (h, Bytes::from(body))
}

#[tokio::test]
async fn the_files_api_wants_the_admin_token_and_lists_images_not_snapshots() {
    let lab = Lab::new().await;
    let r = lab.get("/v1/files/", &HeaderMap::new()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert_eq!(r.json()["detail"], NO_CREDENTIAL);
    let r = lab.get("/v1/files/", &headers([("Authorization", "Bearer not-the-token-0123456789")])).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");

    let r = lab.get("/v1/files/", &admin()).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let mut keys: Vec<String> = r
        .json()
        .as_array()
        .expect("a list")
        .iter()
        .map(|f| f["key"].as_str().expect("key").to_owned())
        .collect();
    keys.sort();
    assert_eq!(keys, ["nos/1/nos.bin", "onie/1/onie-updater"], "the snapshot is never listed");
    assert_eq!(lab.get("/whoami", &admin()).await.json()["user"], "ci");
    let r = lab.get("/v1/files/nos/1/nos.bin/checksum", &admin()).await;
    assert_eq!(r.json()["checksum"], Sha256Digest::of(&lab.install).to_string(), "{r:?}");
}

#[tokio::test]
async fn an_upload_is_stored_only_when_its_checksum_matches() {
    let lab = Lab::new().await;
    let file = b"a Cumulus image".to_vec();
    let url = |sha: &Sha256Digest| format!("/v1/files/cumulus-linux/5.14.0/a.bin?checksum={sha}");
    let (with_token, body) = form(&file);

    let wrong = Sha256Digest::of(b"something else");
    let r = lab.send_body(Method::POST, &url(&wrong), &with_token, body.clone()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(lab.get("/v1/files/cumulus-linux/5.14.0/a.bin", &admin()).await.status, StatusCode::NOT_FOUND);

    let sha = Sha256Digest::of(&file);
    let mut without_token = with_token.clone();
    without_token.remove("authorization");
    let r = lab.send_body(Method::POST, &url(&sha), &without_token, body.clone()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");

    let r = lab.send_body(Method::POST, &url(&sha), &with_token, body).await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, serde_json::json!("OK")), "{r:?}");
    let r = lab.get("/v1/files/cumulus-linux/5.14.0/a.bin", &admin()).await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &file[..]));
}

/// An upload refused before its body is read (the file exists) closes its connection, and says
/// so: a client that sent its next request on it would get no answer. A stored one keeps it.
#[tokio::test]
async fn a_refused_upload_says_its_connection_closes() {
    let lab = Lab::new().await;
    let file = b"a Cumulus image".to_vec();
    let url = format!("/v1/files/cumulus-linux/5.14.0/a.bin?checksum={}", Sha256Digest::of(&file));
    let (with_token, body) = form(&file);
    let r = lab.send_body(Method::POST, &url, &with_token, body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.headers.get("connection"), None, "{r:?}");
    let r = lab.send_body(Method::POST, &url, &with_token, body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(r.headers.get("connection").map(|v| v.as_bytes()), Some(&b"close"[..]), "{r:?}");
}
