//! Image downloads by path and by the reference service's firmware routes: HEAD, ETag, single
//! ranges, the admission limit, and never a snapshot.

use axum::http::{HeaderMap, Method, StatusCode};

use super::{Lab, headers};
use crate::{hash::Sha256Digest, profile::publish};

const NOS: &str = "/images/nos/1/nos.bin";

#[tokio::test]
async fn images_answer_head_ranges_and_etag() {
    let lab = Lab::new().await;
    let sha = Sha256Digest::of(&lab.install).to_string();
    let head = lab.send(Method::HEAD, NOS, &HeaderMap::new()).await;
    assert_eq!(head.status, StatusCode::OK, "{head:?}");
    assert_eq!(head.header("content-length"), lab.install.len().to_string());
    assert_eq!(head.header("etag"), format!("\"{sha}\""));
    assert_eq!(head.header("accept-ranges"), "bytes");
    assert!(head.headers.contains_key("cache-control"), "{head:?}");
    assert!(head.body.is_empty());

    let part = lab.get(NOS, &headers([("Range", "bytes=100-199")])).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT, "{part:?}");
    assert_eq!(part.header("content-range"), format!("bytes 100-199/{}", lab.install.len()));
    assert_eq!(part.body, lab.install[100..200]);
    let past = format!("bytes={}-", lab.install.len());
    let r = lab.get(NOS, &headers([("Range", past.as_str())])).await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE, "{r:?}");
    let r = lab.get(NOS, &headers([("If-None-Match", format!("\"{sha}\"").as_str())])).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{r:?}");

    // The reference service's firmware routes.
    let r = lab.get("/v1/firmware/nos/1/checksum", &HeaderMap::new()).await;
    assert_eq!(r.json()["checksum"], sha, "{r:?}");
    let r = lab.get("/v1/firmware/nos/1", &HeaderMap::new()).await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &lab.install[..]));
}

#[tokio::test]
async fn a_snapshot_and_a_path_outside_the_store_are_never_served() {
    let lab = Lab::new().await;
    let manifest = lab.store.manifest().await.expect("manifest");
    let snapshot = publish::current_entry(&manifest).expect("the published snapshot");
    let r = lab.get(&format!("/images/{}", snapshot.path), &HeaderMap::new()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    for hostile in
        ["/images/nos/1/..%2F..%2Fmanifest.json", "/images/nos/../manifest.json", "/images/nos/1/absent.bin"]
    {
        let r = lab.get(hostile, &HeaderMap::new()).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{hostile}: {r:?}");
    }
}

#[tokio::test]
async fn past_the_admission_limit_a_download_gets_503_with_retry_after() {
    let lab = Lab::new().await;
    // Two downloads whose bodies are not read yet hold the two permits.
    let held = [
        lab.response(Method::GET, NOS, &HeaderMap::new()).await,
        lab.response(Method::GET, NOS, &HeaderMap::new()).await,
    ];
    assert!(held.iter().all(|r| r.status() == StatusCode::OK));
    let third = lab.get(NOS, &HeaderMap::new()).await;
    assert_eq!(third.status, StatusCode::SERVICE_UNAVAILABLE, "{third:?}");
    assert!(third.headers.contains_key("retry-after"), "{third:?}");
    let metrics = lab.get("/metrics", &HeaderMap::new()).await;
    assert!(metrics.text().contains("ztp_downloads_active 2"), "{}", metrics.text());
    drop(held);
    let again = lab.get(NOS, &HeaderMap::new()).await;
    assert_eq!((again.status, again.body.len()), (StatusCode::OK, lab.install.len()));
}
