//! The admin files API through the real binary, on both storage backends: the reference service's
//! routes and error texts, verification of the uploaded bytes, admin tokens, interrupted and
//! oversized uploads, concurrent uploads, hostile paths, and snapshots kept out of sight.

use reqwest::{Client, Method, StatusCode, multipart};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use ztp_operator::hash::Sha256Digest;

use crate::{
    support::binaries::serve,
    support::{
        lab::lab_with,
        random_bytes,
        store::{Backend, TestStore},
    },
};

const TOKEN: &str = "ci:files-e2e-token-0123456789";
const BEARER: &str = "files-e2e-token-0123456789";

struct Api {
    c: Client,
    base: String,
}

impl Api {
    async fn upload(&self, path: &str, body: &[u8], query: &str, token: Option<&str>) -> (StatusCode, Value) {
        let form = multipart::Form::new()
            .part("file", multipart::Part::bytes(body.to_vec()).file_name("upload.bin"));
        let mut r = self.c.post(format!("{}/v1/files/{path}?{query}", self.base)).multipart(form);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.expect("upload");
        (r.status(), serde_json::from_slice(&r.bytes().await.expect("body")).unwrap_or(Value::Null))
    }

    async fn json(&self, method: Method, path: &str) -> (StatusCode, Value) {
        let r = self
            .c
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(BEARER)
            .send()
            .await
            .expect("request");
        (r.status(), serde_json::from_slice(&r.bytes().await.expect("body")).unwrap_or(Value::Null))
    }

    async fn bytes(&self, path: &str) -> (StatusCode, Vec<u8>) {
        let r = self.c.get(format!("{}{path}", self.base)).send().await.expect("get");
        (r.status(), r.bytes().await.expect("body").to_vec())
    }
}

fn detail(v: &Value) -> &str {
    v["detail"].as_str().unwrap_or("<no detail>")
}

async fn files_api(backend: Backend, name: &str) {
    let store = TestStore::new(backend, name).await;
    let dir = tempfile::tempdir().expect("dir");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).expect("tokens");
    let mut flags = store.flags();
    flags.push(format!("--admin-token-file={}", tokens.display()));
    flags.push(format!("--max-upload-bytes={}", 4 << 20));
    let (_server, base) = serve(name, &flags, &[]).await;
    let api = Api { c: Client::new(), base };

    // The reference's small routes; the `Bearer` scheme in any case.
    assert_eq!(api.json(Method::GET, "/healthcheck").await, (StatusCode::OK, Value::from("OK")));
    let (_, me) = api.json(Method::GET, "/whoami").await;
    assert_eq!(me, serde_json::json!({"user": "ci", "roles": ["admin"]}));
    for scheme in ["BEARER", "bearer"] {
        let r =
            api.c.get(format!("{}/whoami", api.base)).header("Authorization", format!("{scheme} {BEARER}"));
        assert_eq!(r.send().await.expect("whoami").status(), StatusCode::OK, "{scheme}");
    }
    let r = api.c.get(format!("{}/whoami", api.base)).send().await.expect("whoami");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = serde_json::from_slice(&r.bytes().await.expect("body")).expect("json");
    assert_eq!(detail(&body), "This endpoint requires SSO authentication.");

    let image = random_bytes(3 << 20, 71).to_vec();
    let sha = Sha256Digest::of(&image).to_string();
    let path = "cumulus-linux/5.14.0/cl.bin";
    let q = format!("checksum={sha}&firmware_image=true");

    // (Refused before the body is read, so these bodies are small: a client still sending a large
    // one sees the connection close, as with any server that answers early.)
    // No token, a wrong token: 403, nothing stored.
    let (status, body) = api.upload(path, b"x", &q, None).await;
    assert_eq!(
        (status, detail(&body)),
        (StatusCode::FORBIDDEN, "This endpoint requires SSO authentication.")
    );
    let (status, body) = api.upload(path, b"x", &q, Some("files-e2e-token-wrong-wrong")).await;
    assert_eq!((status, detail(&body)), (StatusCode::FORBIDDEN, "Invalid or expired credentials"));

    // A wrong checksum: refused with both hashes, nothing stored.
    let wrong = Sha256Digest::of(b"something else").to_string();
    let (status, body) = api.upload(path, &image, &format!("checksum={wrong}"), Some(BEARER)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(detail(&body).contains(&sha) && detail(&body).contains(&wrong), "{body}");
    assert_eq!(api.bytes(&format!("/v1/files/{path}")).await.0, StatusCode::NOT_FOUND);

    // The store's own names are refused as any segment, in any letter case (before: 500).
    for reserved in
        ["manifest.json/1/a.bin", "MANIFEST.JSON/1/a.bin", "lab/Manifest.json/a.bin", "lab/1/manifest.JSON"]
    {
        let x = Sha256Digest::of(b"x");
        let (status, body) = api.upload(reserved, b"x", &format!("checksum={x}"), Some(BEARER)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reserved}: {body}");
        assert!(body.to_string().contains("reserved"), "{reserved}: {body}");
    }
    // A store failure names the path inside the store, never the server's own directories.
    if let Some(root) = store.dir.as_ref().map(|d| d.path().to_owned()) {
        std::fs::write(root.join("blocked"), b"a file where a platform directory would go").expect("write");
        let small = Sha256Digest::of(b"x").to_string();
        let (status, body) =
            api.upload("blocked/1/a.bin", b"x", &format!("checksum={small}"), Some(BEARER)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        let text = detail(&body);
        assert!(text.contains("blocked/1") && !text.contains(&root.display().to_string()), "{text}");
    }

    // The upload, then everything that reads it.
    assert_eq!(api.upload(path, &image, &q, Some(BEARER)).await, (StatusCode::OK, Value::from("OK")));
    assert_eq!(api.bytes(&format!("/v1/files/{path}")).await, (StatusCode::OK, image.clone()));
    let r = api.c.get(format!("{}/v1/files/{path}", api.base)).send().await.expect("get");
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=\"cl.bin\"; filename*=UTF-8''cl.bin"
    );
    let (_, sum) = api.json(Method::GET, &format!("/v1/files/{path}/checksum")).await;
    assert_eq!(sum["checksum"], sha.as_str());
    let (_, listing) = api.json(Method::GET, "/v1/files/cumulus-linux/5.14.0/").await;
    assert_eq!(listing[0]["file"], "cl.bin");
    assert_eq!(listing[0]["size"], image.len());
    let (_, all) = api.json(Method::GET, "/v1/files/").await;
    let entry = all.as_array().expect("list").iter().find(|e| e["key"] == path).expect("listed");
    assert_eq!(
        (entry["sha256"].as_str(), entry["size"].as_u64()),
        (Some(sha.as_str()), Some(image.len() as u64))
    );
    assert!(entry["tags"].get("firmware-image").is_some(), "{entry}");
    let part = api
        .c
        .get(format!("{}/v1/files/{path}", api.base))
        .header("Range", "bytes=10-19")
        .send()
        .await
        .expect("range");
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.bytes().await.expect("body").as_ref(), &image[10..20]);
    let head = api.c.head(format!("{}/v1/files/{path}", api.base)).send().await.expect("head");
    assert_eq!(head.headers()["content-length"], image.len().to_string().as_str());
    // The firmware route of devices sees it within seconds (the server re-reads the manifest).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while api.bytes("/v1/firmware/cumulus-linux/5.14.0/checksum").await.0 != StatusCode::OK {
        assert!(std::time::Instant::now() < deadline, "the upload never reached the firmware route");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let fw = api.c.head(format!("{}/v1/firmware/cumulus-linux/5.14.0", api.base)).send().await.expect("head");
    assert_eq!(
        fw.headers()["content-disposition"],
        "attachment; filename=\"cl.bin\"; filename*=UTF-8''cl.bin"
    );
    // A directory without firmware: the reference's JSON 404 on both firmware routes.
    for route in ["/v1/firmware/cumulus-linux/9.9.9", "/v1/firmware/cumulus-linux/9.9.9/checksum"] {
        let r = api.c.get(format!("{}{route}", api.base)).send().await.expect("get");
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{route}");
        assert_eq!(r.headers()["content-type"], "application/json", "{route}");
        let body: Value = serde_json::from_slice(&r.bytes().await.expect("body")).expect("json");
        assert_eq!(body, serde_json::json!({"detail": "Firmware image not found in S3."}), "{route}");
    }

    // The reference's refusals.
    let (status, body) = api.upload(path, b"x", &q, Some(BEARER)).await;
    assert_eq!(
        (status, detail(&body)),
        (StatusCode::BAD_REQUEST, format!("File already exists: {path}").as_str())
    );
    let other = random_bytes(1000, 72).to_vec();
    let other_q = format!("checksum={}&firmware_image=true", Sha256Digest::of(&other));
    let (status, body) = api.upload("cumulus-linux/5.14.0/other.bin", &other, &other_q, Some(BEARER)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        detail(&body),
        "A different firmware image already exists in cumulus-linux/5.14.0/: 'cl.bin'. Remove it first or upload with the same filename."
    );
    // Requests that do not match the declared parameters: 422 with FastAPI's list shape.
    let invalid = |body: &Value| {
        let e = &body["detail"][0];
        (e["loc"].clone(), e["type"].as_str().unwrap_or("<no type>").to_owned(), e["msg"].is_string())
    };
    let (status, body) = api.upload(path, b"x", "firmware_image=true", Some(BEARER)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        invalid(&body),
        (serde_json::json!(["query", "checksum"]), "missing".to_owned(), true),
        "{body}"
    );
    let (status, body) = api.upload(path, b"x", "checksum=abc", Some(BEARER)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(invalid(&body).0, serde_json::json!(["query", "checksum"]), "{body}");
    let (status, body) = api.upload(path, b"x", &format!("{q}&overwrite=maybe"), Some(BEARER)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(invalid(&body).0, serde_json::json!(["query", "overwrite"]), "{body}");
    let (status, body) = api.upload("cumulus-linux/5.14.0/a%20b.bin", b"x", &q, Some(BEARER)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(invalid(&body).0, serde_json::json!(["path", "filename"]), "{body}");
    let r = api
        .c
        .post(format!("{}/v1/files/{path}?{q}&overwrite=true", api.base))
        .bearer_auth(BEARER)
        .send()
        .await
        .expect("post without a body");
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = serde_json::from_slice(&r.bytes().await.expect("body")).expect("json");
    assert_eq!(invalid(&body).0, serde_json::json!(["body", "file"]), "{body}");

    // Overwrite replaces bytes and checksum together.
    let q2 = format!("checksum={}&firmware_image=true&overwrite=true", Sha256Digest::of(&other));
    assert_eq!(api.upload(path, &other, &q2, Some(BEARER)).await.0, StatusCode::OK);
    assert_eq!(api.bytes(&format!("/v1/files/{path}")).await, (StatusCode::OK, other.clone()));

    // Past the size limit: 413, nothing stored. With curl -F, as the reference documents uploads
    // (it sends `Expect: 100-continue` and stops sending when the answer comes early).
    let big = random_bytes(5 << 20, 73).to_vec();
    let big_file = dir.path().join("big.bin");
    std::fs::write(&big_file, &big).expect("write");
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-H", &format!("Authorization: Bearer {BEARER}")])
        .arg("-F")
        .arg(format!("file=@{}", big_file.display()))
        .arg(format!(
            "{}/v1/files/cumulus-linux/5.14.0/big.bin?checksum={}",
            api.base,
            Sha256Digest::of(&big)
        ))
        .output()
        .await
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(text.ends_with("\n413") && text.contains("File too large"), "{text} {err}");
    assert_eq!(api.bytes("/v1/files/cumulus-linux/5.14.0/big.bin").await.0, StatusCode::NOT_FOUND);

    // Cut off half way: nothing stored.
    let half = random_bytes(2 << 20, 74).to_vec();
    let addr = api.base.trim_start_matches("http://").to_owned();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let boundary = "XyZbOuNdArY";
    let preamble = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"h.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    );
    let total = preamble.len() + half.len() * 2 + boundary.len() + 8;
    let head = format!(
        "POST /v1/files/cumulus-linux/5.14.0/half.bin?checksum={} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {BEARER}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {total}\r\n\r\n{preamble}",
        Sha256Digest::of(&half)
    );
    sock.write_all(head.as_bytes()).await.expect("head");
    sock.write_all(&half).await.expect("half");
    drop(sock);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(api.bytes("/v1/files/cumulus-linux/5.14.0/half.bin").await.0, StatusCode::NOT_FOUND);

    // Concurrent uploads into one directory: every entry lands in the manifest.
    let uploads = (0..6).map(|i| {
        let api = Api { c: api.c.clone(), base: api.base.clone() };
        async move {
            let body = random_bytes(200_000 + i, 80 + i as u64).to_vec();
            let q = format!("checksum={}", Sha256Digest::of(&body));
            api.upload(&format!("sonic/4.4/part{i}.bin"), &body, &q, Some(BEARER)).await.0
        }
    });
    for status in futures::future::join_all(uploads).await {
        assert_eq!(status, StatusCode::OK);
    }
    let (_, listing) = api.json(Method::GET, "/v1/files/sonic/4.4/").await;
    assert_eq!(listing.as_array().map(Vec::len), Some(6), "{listing}");
    let leftovers = store.leftovers().await;
    assert!(leftovers.is_empty(), "partial uploads left behind: {leftovers:?}");

    // Hostile paths never reach the store.
    for hostile in
        ["..%2F..%2Fetc/5/x", "cumulus-linux/..%2F/x", "cumulus-linux/5.14.0/..%2Fmanifest.json", "a/b/.."]
    {
        let (status, _) = api.upload(hostile, &other, &q2, Some(BEARER)).await;
        assert!(
            matches!(status, StatusCode::UNPROCESSABLE_ENTITY | StatusCode::NOT_FOUND),
            "{hostile}: {status}"
        );
        let (status, _) = api.json(Method::GET, &format!("/v1/files/{hostile}")).await;
        assert!(
            matches!(status, StatusCode::UNPROCESSABLE_ENTITY | StatusCode::NOT_FOUND),
            "{hostile}: {status}"
        );
    }

    // DELETE, and the reference's 404 texts afterwards.
    let (status, _) = api.json(Method::DELETE, &format!("/v1/files/{path}")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api.json(Method::GET, &format!("/v1/files/{path}")).await;
    assert_eq!((status, detail(&body)), (StatusCode::NOT_FOUND, "File not found in S3."));
    let (status, body) = api.json(Method::GET, &format!("/v1/files/{path}/checksum")).await;
    assert_eq!(
        (status, detail(&body)),
        (StatusCode::NOT_FOUND, format!("Checksum data not found for {path}.").as_str())
    );
    assert_eq!(api.json(Method::DELETE, &format!("/v1/files/{path}")).await.0, StatusCode::NOT_FOUND);
    let r = api.c.delete(format!("{}/v1/files/sonic/4.4/part0.bin", api.base)).send().await.expect("delete");
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "DELETE needs a token");
}

#[tokio::test]
async fn files_api_on_a_directory_store() {
    files_api(Backend::Fs, "files-fs").await;
}

#[tokio::test]
async fn files_api_on_s3() {
    files_api(Backend::S3, "files-s3").await;
}

#[tokio::test]
async fn snapshots_are_never_listed_or_served_by_the_files_api() {
    let lab = lab_with("files-snapshots", &[("ZTP_PUBLIC_LISTING", "true")]).await;
    let c = Client::new();
    let all =
        c.get(format!("{}/v1/files/", lab.base)).send().await.expect("list").bytes().await.expect("body");
    let all: Value = serde_json::from_slice(&all).expect("json");
    let keys: Vec<&str> = all.as_array().expect("list").iter().filter_map(|e| e["key"].as_str()).collect();
    assert!(keys.contains(&"nos/1/nos.bin"), "{keys:?}");
    assert!(keys.iter().all(|k| !k.starts_with("ztp-snapshots/")), "{keys:?}");
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(lab.manifests.parent().expect("dir").join("d/manifest.json")).expect("manifest"),
    )
    .expect("json");
    let snapshot = manifest["images"]
        .as_array()
        .expect("images")
        .iter()
        .find_map(|e| e["path"].as_str().filter(|p| p.starts_with("ztp-snapshots/")))
        .expect("a snapshot")
        .to_owned();
    for path in [format!("/v1/files/{snapshot}"), format!("/v1/files/{snapshot}/checksum")] {
        let r = c.get(format!("{}{path}", lab.base)).send().await.expect("get");
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // Without a token file the admin routes are closed, not open.
    let r = c.delete(format!("{}/v1/files/nos/1/nos.bin", lab.base)).send().await.expect("delete");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        c.get(format!("{}/whoami", lab.base)).send().await.expect("whoami").status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn ztpctl_uploads_lists_checks_and_removes() {
    let store = TestStore::new(Backend::Fs, "files-ztpctl").await;
    let dir = tempfile::tempdir().expect("dir");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).expect("tokens");
    let mut flags = store.flags();
    flags.push(format!("--admin-token-file={}", tokens.display()));
    let (_server, base) = serve("files-ztpctl", &flags, &[]).await;
    let image = random_bytes(2 << 20, 91).to_vec();
    let sha = Sha256Digest::of(&image).to_string();
    let file = dir.path().join("nvos-25.02.bin");
    std::fs::write(&file, &image).expect("write");
    let ztpctl = |args: Vec<String>, token: bool| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ztpctl"));
        cmd.args(args).env("ZTP_SERVER", &base).env_remove("ZTP_TOKEN");
        if token {
            cmd.env("ZTP_TOKEN", BEARER);
        }
        async move {
            let out = cmd.output().await.expect("run ztpctl");
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            (out.status.success(), text(&out.stdout), text(&out.stderr))
        }
    };
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let file_arg = file.display().to_string();

    let (ok, _, err) =
        ztpctl(s(&["upload", &file_arg, "--platform", "nvos", "--version", "25.02"]), false).await;
    assert!(!ok && err.contains("This endpoint requires SSO authentication."), "{err}");
    let wrong = Sha256Digest::of(b"x").to_string();
    let args = s(&["upload", &file_arg, "--platform", "nvos", "--version", "25.02", "--checksum", &wrong]);
    let (ok, _, err) = ztpctl(args, true).await;
    assert!(!ok && err.contains("Checksum mismatch") && err.contains(&sha), "{err}");

    // No checksum given: ztpctl hashes the file itself; the server checks it again.
    let args = s(&["upload", &file_arg, "--platform", "nvos", "--version", "25.02", "--firmware-image"]);
    let (ok, out, err) = ztpctl(args, true).await;
    assert!(ok, "{out} {err}");
    assert!(out.contains(&sha), "{out}");
    // Listing needs the token (the default, as with the reference).
    let (ok, _, err) = ztpctl(s(&["ls"]), false).await;
    assert!(
        !ok && err.contains("403") && err.contains("This endpoint requires SSO authentication."),
        "{err}"
    );
    let (ok, out, err) = ztpctl(s(&["ls", "nvos", "25.02"]), true).await;
    assert!(ok && out.contains("nvos-25.02.bin") && out.contains(&image.len().to_string()), "{out} {err}");
    let (ok, out, err) = ztpctl(s(&["ls"]), true).await;
    assert!(ok && out.contains("* nvos/25.02/nvos-25.02.bin") && out.contains(&sha), "{out} {err}");
    // A request that does not match the API: ztpctl prints FastAPI's validation list readably.
    let (ok, _, err) = ztpctl(s(&["checksum", "nvos", "25.02", "a b"]), false).await;
    assert!(!ok && err.contains("422") && err.contains("path.filename:"), "{err}");
    let (ok, out, _) = ztpctl(s(&["checksum", "nvos", "25.02", "nvos-25.02.bin"]), false).await;
    assert_eq!((ok, out.trim()), (true, sha.as_str()));
    let (ok, _, err) = ztpctl(s(&["rm", "nvos", "25.02", "nvos-25.02.bin"]), true).await;
    assert!(ok, "{err}");
    let (ok, _, err) = ztpctl(s(&["checksum", "nvos", "25.02", "nvos-25.02.bin"]), false).await;
    assert!(!ok && err.contains("Checksum data not found for nvos/25.02/nvos-25.02.bin."), "{err}");
}

/// An ES256 key pair for signing test tokens, and its public JWK.
fn signing_key(kid: &str) -> (jsonwebtoken::EncodingKey, Value) {
    use base64::Engine;
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key pair");
    let raw = pair.public_key_raw(); // 0x04 || x || y
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
        "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
    });
    let key = jsonwebtoken::EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("pem");
    (key, jwk)
}

fn jwt(key: &jsonwebtoken::EncodingKey, kid: &str, claims: Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &claims, key).expect("sign")
}

#[tokio::test]
async fn oidc_tokens_are_checked_against_the_issuers_keys() {
    use crate::support::source::{Behavior, SourceServer};
    let (key1, jwk1) = signing_key("k1");
    let (key2, jwk2) = signing_key("k2");
    let keys = SourceServer::start(vec![(
        "/jwks.json",
        serde_json::to_vec(&serde_json::json!({"keys": [jwk1]})).expect("json").into(),
        Behavior::Serve,
    )])
    .await;
    let issuer = SourceServer::start(vec![]).await;
    let discovery = serde_json::json!({"issuer": issuer.url(), "jwks_uri": keys.url_of("/jwks.json")});
    issuer
        .set_file("/.well-known/openid-configuration", serde_json::to_vec(&discovery).expect("json").into());
    let store = TestStore::new(Backend::Fs, "files-oidc").await;
    let mut flags = store.flags();
    flags.extend([format!("--oidc-issuer={}", issuer.url()), "--oidc-audience=ztp".to_owned()]);
    let (_server, base) = serve("files-oidc", &flags, &[]).await;

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let claims = |iss: &str, aud: &str, exp: u64| serde_json::json!({"iss": iss, "aud": aud, "exp": exp, "iat": now, "sub": "u-1", "preferred_username": "alice"});
    let c = Client::new();
    // DELETE of an absent file: past the credential check it is a 404, before it a 403.
    let probe = |token: String| {
        let req = c.delete(format!("{base}/v1/files/nvos/1/absent.bin")).bearer_auth(token);
        async move {
            let r = req.send().await.expect("delete");
            let status = r.status();
            let body: Value = serde_json::from_slice(&r.bytes().await.expect("body")).unwrap_or(Value::Null);
            (status, detail(&body).to_owned())
        }
    };
    let iss = issuer.url();
    let valid = jwt(&key1, "k1", claims(&iss, "ztp", now + 600));
    assert_eq!(probe(valid.clone()).await, (StatusCode::NOT_FOUND, "File not found in S3.".to_owned()));
    let me = c.get(format!("{base}/whoami")).bearer_auth(&valid).send().await.expect("whoami").bytes().await;
    let me: Value = serde_json::from_slice(&me.expect("body")).expect("json");
    assert_eq!(me["user"], "alice");

    let cases = [
        (jwt(&key1, "k1", claims(&iss, "ztp", now - 3600)), "Token expired"),
        (jwt(&key1, "k1", claims(&iss, "someone-else", now + 600)), "Token audience not accepted"),
        (jwt(&key1, "k1", claims("https://evil.example", "ztp", now + 600)), "Token issuer not accepted"),
        (jwt(&key2, "k2", claims(&iss, "ztp", now + 600)), "Token signed by an unknown key"),
        (jwt(&key2, "k1", claims(&iss, "ztp", now + 600)), "Token signature invalid"),
    ];
    for (token, want) in cases {
        assert_eq!(probe(token).await, (StatusCode::FORBIDDEN, want.to_owned()));
    }

    // The issuer rotates in k2: accepted once the set is refetched (unknown key ids trigger a
    // refetch at most every 10 s).
    keys.set_file(
        "/jwks.json",
        serde_json::to_vec(&serde_json::json!({"keys": [jwk2]})).expect("json").into(),
    );
    let rotated = jwt(&key2, "k2", claims(&iss, "ztp", now + 600));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while probe(rotated.clone()).await.0 != StatusCode::NOT_FOUND {
        assert!(std::time::Instant::now() < deadline, "a rotated key was never picked up");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Listings need the admin credential by default (`--public-listing` opens them, and only them);
/// `--device-networks` keeps
/// device routes (the router's and the sendfile path's) for the management network, while the
/// files API and the probes still answer; the OpenAPI document and Swagger UI (its assets are in
/// the binary) are served.
#[tokio::test]
async fn listing_protection_device_networks_and_the_openapi_document() {
    let store = TestStore::new(Backend::Fs, "files-closed").await;
    let dir = tempfile::tempdir().expect("dir");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).expect("tokens");
    let mut flags = store.flags();
    flags.push(format!("--admin-token-file={}", tokens.display()));
    let (_server, base) =
        serve("files-closed", &flags, &["--device-networks=192.0.2.0/24,2001:db8::/32"]).await;
    let c = Client::new();
    let get = |path: &str, token: Option<&str>| {
        let r = c.get(format!("{base}{path}"));
        let r = if let Some(t) = token { r.bearer_auth(t) } else { r };
        async move {
            let r = r.send().await.expect("get");
            (r.status(), r.text().await.expect("body"))
        }
    };
    for path in ["/v1/files/", "/v1/files/nos/1/"] {
        let (status, body) = get(path, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert!(body.contains("This endpoint requires SSO authentication."), "{path}: {body}");
        assert_eq!(get(path, Some(BEARER)).await.0, StatusCode::OK, "{path} with a token");
    }
    // 127.0.0.1 is outside the device networks: every device route refuses it, whichever path
    // would have answered (the image routes are the sendfile path's).
    for path in [
        "/onie",
        "/onie-installer-x86_64",
        "/images/nos/1/nos.bin",
        "/nvos/SN1/ztp.json",
        "/ztp/config/startup",
    ] {
        let (status, body) = get(path, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert!(body.contains("not in --device-networks"), "{path}: {body}");
    }
    assert_eq!(get("/healthcheck", None).await.0, StatusCode::OK);
    assert_eq!(get("/healthz", None).await.0, StatusCode::OK);

    let (status, spec) = get("/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let spec: Value = serde_json::from_str(&spec).expect("the document is JSON");
    assert!(spec["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", spec["openapi"]);
    assert!(spec["paths"]["/v1/files/{platform}/{version}/{filename}"]["post"].is_object());
    let (status, page) = get("/docs/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("swagger-ui"), "{page}");
    let (status, initializer) = get("/docs/swagger-initializer.js", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(initializer.contains("/openapi.json"), "Swagger UI loads our document: {initializer}");
    let (status, css) = get("/docs/swagger-ui.css", None).await;
    assert_eq!((status, css.len() > 10_000), (StatusCode::OK, true), "vendored assets are served");

    // Inside the networks, device routes answer as usual (here: nothing to serve yet). With
    // `--public-listing` anyone lists; `/whoami` and writes still need the credential.
    let (_server, inside) =
        serve("files-networks-inside", &flags, &["--device-networks=127.0.0.0/8", "--public-listing"]).await;
    let r = c.get(format!("{inside}/nvos/SN1/ztp.json")).send().await.expect("get");
    assert!(matches!(r.status(), StatusCode::NOT_FOUND | StatusCode::SERVICE_UNAVAILABLE), "{}", r.status());
    for (path, want) in [
        ("/v1/files/", StatusCode::OK),
        ("/v1/files/nos/1/", StatusCode::OK),
        ("/whoami", StatusCode::FORBIDDEN),
    ] {
        let r = c.get(format!("{inside}{path}")).send().await.expect("get");
        assert_eq!(r.status(), want, "{path} with --public-listing");
    }
}

/// Clients that race each other: how many, and the size of each one's (different) bytes.
const RACERS: usize = 16;

/// The file at `path` as every reader of the files API sees it: the bytes served agree with
/// `/checksum`, the full listing (sha256 and etag), the directory listing's size and the `ETag`
/// header. Returns the bytes served.
async fn assert_consistent(api: &Api, path: &str) -> Vec<u8> {
    let r = api.c.get(format!("{}/v1/files/{path}", api.base)).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    let etag = r.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let served = r.bytes().await.expect("body").to_vec();
    let sha = Sha256Digest::of(&served).to_string();
    let (_, sum) = api.json(Method::GET, &format!("/v1/files/{path}/checksum")).await;
    assert_eq!(
        sum["checksum"].as_str(),
        Some(sha.as_str()),
        "{path}: /checksum disagrees with the bytes served"
    );
    assert_eq!(etag, format!("\"{sha}\""), "{path}: ETag disagrees with the bytes served");
    let (_, all) = api.json(Method::GET, "/v1/files/").await;
    let entry = all.as_array().expect("list").iter().find(|e| e["key"] == path).expect("listed");
    assert_eq!(
        entry["sha256"].as_str(),
        Some(sha.as_str()),
        "{path}: listing disagrees with the bytes served"
    );
    assert_eq!(entry["etag"].as_str(), Some(sha.as_str()), "{path}: listing etag disagrees");
    let (dir, file) = path.rsplit_once('/').expect("a file path");
    let (_, listing) = api.json(Method::GET, &format!("/v1/files/{dir}/")).await;
    let listed = listing.as_array().expect("dir").iter().find(|e| e["file"] == file).expect("in its dir");
    assert_eq!(listed["size"].as_u64(), Some(served.len() as u64), "{path}: size");
    served
}

/// Every object in the store is in manifest.json (besides the manifest, its lock, and the
/// hidden directories of the store), and no write is left half done.
async fn assert_nothing_unlisted(store: &TestStore) {
    let manifest = store.store.manifest().await.expect("manifest");
    let listed: std::collections::HashSet<&str> = manifest.images.iter().map(|e| e.path.as_str()).collect();
    let mut keys = Vec::new();
    if let Some(d) = &store.dir {
        fn walk(dir: &std::path::Path, rel: &str, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).expect("read dir").flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let key = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
                if e.file_type().expect("type").is_dir() {
                    if !(rel.is_empty() && name.starts_with('.')) {
                        walk(&e.path(), &key, out);
                    }
                } else {
                    out.push(key);
                }
            }
        }
        walk(d.path(), "", &mut keys);
    } else {
        let (s3, bucket) = (store.s3.as_ref().expect("s3"), store.bucket.as_ref().expect("bucket"));
        let out = s3.list_objects_v2().bucket(bucket).send().await.expect("list");
        keys.extend(out.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
    }
    let unlisted: Vec<&String> = keys
        .iter()
        .filter(|k| {
            !["manifest.json", ".manifest.lock"].contains(&k.as_str()) && !listed.contains(k.as_str())
        })
        .collect();
    assert!(unlisted.is_empty(), "objects in the store without a manifest entry: {unlisted:?}");
    let leftovers = store.leftovers().await;
    assert!(leftovers.is_empty(), "writes left half done: {leftovers:?}");
}

/// Places `bytes` at `path` behind the store's back (a copy by hand: no manifest entry).
async fn place_by_hand(store: &TestStore, path: &str, bytes: &[u8]) {
    if let Some(d) = &store.dir {
        let p = d.path().join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, bytes).expect("write");
        return;
    }
    let (s3, bucket) = (store.s3.as_ref().expect("s3"), store.bucket.as_ref().expect("bucket"));
    let body = aws_sdk_s3::primitives::ByteStream::from(bytes.to_vec());
    s3.put_object().bucket(bucket).key(path).body(body).send().await.expect("put");
}

async fn racing_uploads(backend: Backend, name: &str) {
    let store = TestStore::new(backend, name).await;
    let dir = tempfile::tempdir().expect("dir");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).expect("tokens");
    let mut flags = store.flags();
    flags.push(format!("--admin-token-file={}", tokens.display()));
    let (_server, base) = serve(name, &flags, &[]).await;
    let api = Api { c: Client::new(), base };
    let bodies: Vec<Vec<u8>> =
        (0..RACERS).map(|i| random_bytes(300_000 + 977 * i, 500 + i as u64).to_vec()).collect();
    let shas: Vec<String> = bodies.iter().map(|b| Sha256Digest::of(b).to_string()).collect();
    let race = |path: String, extra: &'static str| {
        let api = &api;
        let (bodies, shas) = (&bodies, &shas);
        futures::future::join_all((0..RACERS).map(move |i| {
            let path = path.clone();
            async move {
                api.upload(&path, &bodies[i], &format!("checksum={}{extra}", shas[i]), Some(BEARER)).await
            }
        }))
    };

    for round in 0..3 {
        // A new path, no overwrite: exactly one upload wins, and its bytes are the ones kept.
        let path = format!("race/{round}/new.bin");
        let answers = race(path.clone(), "").await;
        let won: Vec<usize> = (0..RACERS).filter(|&i| answers[i].0 == StatusCode::OK).collect();
        assert_eq!(won.len(), 1, "round {round}: exactly one upload may win: {answers:?}");
        for (i, (status, body)) in answers.iter().enumerate().filter(|(i, _)| *i != won[0]) {
            assert_eq!(
                (*status, detail(body)),
                (StatusCode::BAD_REQUEST, format!("File already exists: {path}").as_str()),
                "round {round}, upload {i}"
            );
        }
        let served = assert_consistent(&api, &path).await;
        assert!(served == bodies[won[0]], "round {round}: the bytes stored are not the accepted upload's");

        // The same path again with overwrite: every upload may win, the last one's bytes stay,
        // and every reader agrees on them.
        let answers = race(path.clone(), "&overwrite=true").await;
        assert!(answers.iter().all(|(s, _)| *s == StatusCode::OK), "round {round}: {answers:?}");
        let served = assert_consistent(&api, &path).await;
        assert!(bodies.contains(&served), "round {round}: overwrite left bytes nobody uploaded");

        // Firmware images: one per directory; the refused ones leave nothing behind.
        let answers = futures::future::join_all((0..RACERS).map(|i| {
            let (api, body, sha) = (&api, &bodies[i], &shas[i]);
            let path = format!("fw/{round}/image-{i}.bin");
            async move {
                api.upload(&path, body, &format!("checksum={sha}&firmware_image=true"), Some(BEARER)).await
            }
        }))
        .await;
        let won: Vec<usize> = (0..RACERS).filter(|&i| answers[i].0 == StatusCode::OK).collect();
        assert_eq!(won.len(), 1, "round {round}: one firmware image per directory: {answers:?}");
        let served = assert_consistent(&api, &format!("fw/{round}/image-{}.bin", won[0])).await;
        assert!(served == bodies[won[0]]);
        assert_nothing_unlisted(&store).await;
    }

    // A file placed by hand (no manifest entry) is taken: an upload without overwrite is refused
    // as for any existing file, and the file is left as it was.
    let hand = "race/hand/placed.bin";
    place_by_hand(&store, hand, b"placed by hand").await;
    let (status, body) = api.upload(hand, &bodies[0], &format!("checksum={}", shas[0]), Some(BEARER)).await;
    assert_eq!(
        (status, detail(&body)),
        (StatusCode::BAD_REQUEST, format!("File already exists: {hand}").as_str())
    );
    let p = ztp_operator::api::ImagePath::new("race", "hand", "placed.bin").expect("path");
    assert_eq!(store.bytes(&p).await.as_deref(), Some(&b"placed by hand"[..]));
    // With overwrite it is replaced, and then listed.
    let q = format!("checksum={}&overwrite=true", shas[1]);
    assert_eq!(api.upload(hand, &bodies[1], &q, Some(BEARER)).await.0, StatusCode::OK);
    assert!(assert_consistent(&api, hand).await == bodies[1]);
    assert_nothing_unlisted(&store).await;
}

#[tokio::test]
async fn racing_uploads_keep_bytes_and_manifest_together_on_a_directory_store() {
    racing_uploads(Backend::Fs, "files-race-fs").await;
}

#[tokio::test]
async fn racing_uploads_keep_bytes_and_manifest_together_on_s3() {
    racing_uploads(Backend::S3, "files-race-s3").await;
}

/// An upload through the API racing an OsImage fetch of the same path (the controller's way into
/// the store: a verifying writer committed with its manifest entry, called here directly, while
/// the server process uploads): exactly one wins, and the bytes stored are the manifest's.
async fn upload_racing_a_fetch(backend: Backend, name: &str) {
    use ztp_operator::{
        api::ImagePath,
        store::{ManifestEntry, StoreError},
    };
    let store = TestStore::new(backend, name).await;
    let dir = tempfile::tempdir().expect("dir");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).expect("tokens");
    let mut flags = store.flags();
    flags.push(format!("--admin-token-file={}", tokens.display()));
    let (_server, base) = serve(name, &flags, &[]).await;
    let api = Api { c: Client::new(), base };
    for round in 0..6u64 {
        let version = format!("fetch-{round}");
        let path = ImagePath::new("race", &version, "img.bin").expect("path");
        let (fetched, uploaded) = (random_bytes(400_000, 900 + round), random_bytes(400_013, 950 + round));
        let (fetched_sha, uploaded_sha) = (Sha256Digest::of(&fetched), Sha256Digest::of(&uploaded));
        let fetch = async {
            let mut w = store.store.writer(&path, fetched_sha).await.expect("writer");
            for chunk in fetched.chunks(64 * 1024) {
                w.write(bytes::Bytes::copy_from_slice(chunk)).await.expect("write");
            }
            let entry = ManifestEntry::new(&path, fetched_sha, 0, true, Some("osimage/ns/img".into()));
            w.commit_entry(Some(fetched.len() as u64), entry, false).await
        };
        let query = format!("checksum={uploaded_sha}&firmware_image=true");
        let key = path.to_string();
        let upload = api.upload(&key, &uploaded, &query, Some(BEARER));
        let (fetch, (status, body)) = tokio::join!(fetch, upload);
        let kept = match fetch {
            Ok(_) => {
                assert_eq!(status, StatusCode::BAD_REQUEST, "round {round}: both won: {body}");
                &fetched
            }
            Err(StoreError::Conflict(c)) => {
                assert_eq!(status, StatusCode::OK, "round {round}: both lost ({c}): {body}");
                &uploaded
            }
            Err(e) => panic!("round {round}: the fetch failed: {e}"),
        };
        let served = assert_consistent(&api, &path.to_string()).await;
        assert!(served == kept.as_ref(), "round {round}: the stored bytes are not the winner's");
        assert_eq!(store.bytes(&path).await.as_deref(), Some(kept.as_ref()));
    }
    assert_nothing_unlisted(&store).await;
}

#[tokio::test]
async fn an_upload_racing_an_osimage_fetch_ends_consistent_on_a_directory_store() {
    upload_racing_a_fetch(Backend::Fs, "files-race-fetch-fs").await;
}

#[tokio::test]
async fn an_upload_racing_an_osimage_fetch_ends_consistent_on_s3() {
    upload_racing_a_fetch(Backend::S3, "files-race-fetch-s3").await;
}
