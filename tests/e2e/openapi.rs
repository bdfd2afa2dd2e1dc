//! The server's own OpenAPI document, checked against the real server by a property-based run:
//! schemathesis (pinned, installed from PyPI into a venv outside the repository by
//! `scripts/schemathesis`) generates requests from `/openapi.json` (valid and invalid ones), sends
//! them with the admin token, and checks that every answer is documented (status code, content
//! type, body schema, never a 5xx), that requests the document forbids are refused and those it
//! allows are not; a document whose constraints the server does not enforce fails it too
//! (`schemathesis.toml`). Bounded (20 examples per operation, deterministic), so it takes seconds.

use std::{path::Path, process::Stdio, time::Duration};

use reqwest::{Client, StatusCode, multipart};
use ztp_operator::hash::Sha256Digest;

use crate::{
    support::binaries::serve,
    support::store::{Backend, TestStore},
};

/// Every answer documented (status, content type, body schema), never a 5xx; requests the document
/// allows are accepted (or refused with a documented reason, see `schemathesis.toml`), requests it
/// forbids are refused.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
    response_schema_conformance,negative_data_rejection,positive_data_acceptance";

const TOKEN: &str = "ci:openapi-e2e-token-0123456789";
const BEARER: &str = "openapi-e2e-token-0123456789";

/// The schemathesis executable (installed on first use; the script prints its path last).
fn schemathesis() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/schemathesis");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/schemathesis");
    assert!(out.status.success(), "scripts/schemathesis failed ({})", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout.lines().last().expect("the script prints the executable's path").trim().to_owned()
}

#[tokio::test]
async fn the_server_does_what_its_openapi_document_says() {
    let schemathesis = tokio::task::spawn_blocking(schemathesis).await.expect("install");
    let store = TestStore::new(Backend::Fs, "openapi").await;
    let dir = tempfile::tempdir().expect("dir");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).expect("tokens");
    let mut flags = store.flags();
    flags.push(format!("--admin-token-file={}", tokens.display()));
    flags.push(format!("--max-upload-bytes={}", 1 << 20));
    // Reports are checked (403 without the device's token) rather than refused whole (503).
    let key = dir.path().join("report-key");
    std::fs::write(&key, "openapi-e2e-report-key-0123456789abcdef\n").expect("report key");
    flags.push(format!("--report-key-file={}", key.display()));
    let (mut server, base) = serve("openapi", &flags, &[]).await;

    // One firmware image, so that listings and the firmware routes answer 200 with a body too.
    let image = b"openapi e2e firmware".to_vec();
    let form = multipart::Form::new().part("file", multipart::Part::bytes(image.clone()).file_name("fw.bin"));
    let url =
        format!("{base}/v1/files/lab/1.0/fw.bin?checksum={}&firmware_image=true", Sha256Digest::of(&image));
    let r = Client::new().post(url).bearer_auth(BEARER).multipart(form).send().await.expect("upload");
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap_or_default());

    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/schemathesis.toml");
    let started = std::time::Instant::now();
    let run = tokio::process::Command::new(&schemathesis)
        .current_dir(dir.path())
        .args([
            "--config-file",
            config.to_str().expect("utf-8 path"),
            "run",
            &format!("{base}/openapi.json"),
            "--checks",
            CHECKS,
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "20",
            // The same examples on every run (no seed, no example database).
            "--generation-deterministic",
            "--workers",
            "2",
            "--request-timeout",
            "10",
            "--header",
            &format!("Authorization: Bearer {BEARER}"),
            "--no-color",
            "--output-truncate",
            "false",
        ])
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(110), run)
        .await
        .expect("schemathesis finishes within 110 s")
        .expect("run schemathesis");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let summary = text.lines().filter(|l| l.contains(" generated")).collect::<Vec<_>>().join(" ");
    eprintln!("e2e: schemathesis took {:.1} s: {}", started.elapsed().as_secs_f64(), summary.trim());
    server.assert_running();
    assert!(out.status.success(), "schemathesis found disagreements ({}):\n{text}", out.status);
}
