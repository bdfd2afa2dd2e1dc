//! The S3 operations the store relies on, against the real S3 server, through aws-sdk-s3 with
//! path-style addressing: put, get, list, and conditional put (`If-Match` / `If-None-Match`),
//! which the manifest's compare-and-swap is built on.

use aws_sdk_s3::{error::ProvideErrorMetadata, primitives::ByteStream};

use crate::support;

#[tokio::test]
async fn put_get_list_round_trip() {
    let t = support::s3_test("s3-roundtrip").await;
    let body = b"image bytes \x00\x01\x02".to_vec();
    t.client
        .put_object()
        .bucket(&t.bucket)
        .key("nvos/25.02/nvos.bin")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .expect("put");
    t.client
        .put_object()
        .bucket(&t.bucket)
        .key("manifest.json")
        .body(ByteStream::from_static(b"{}"))
        .send()
        .await
        .expect("put");

    let got = t.client.get_object().bucket(&t.bucket).key("nvos/25.02/nvos.bin").send().await.expect("get");
    assert_eq!(got.content_length(), Some(body.len() as i64));
    assert_eq!(got.body.collect().await.expect("body").into_bytes().as_ref(), body.as_slice());

    let listed = t.client.list_objects_v2().bucket(&t.bucket).prefix("nvos/").send().await.expect("list");
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["nvos/25.02/nvos.bin"]);

    let missing = t.client.get_object().bucket(&t.bucket).key("nvos/25.02/absent.bin").send().await;
    let err = missing.expect_err("absent key");
    assert_eq!(err.into_service_error().code(), Some("NoSuchKey"));
}

#[tokio::test]
async fn conditional_put_is_a_compare_and_swap() {
    let t = support::s3_test("s3-cas").await;
    let key = "manifest.json";

    // Create only if absent.
    let first = t
        .client
        .put_object()
        .bucket(&t.bucket)
        .key(key)
        .if_none_match("*")
        .body(ByteStream::from_static(br#"{"images":[]}"#))
        .send()
        .await
        .expect("create-if-absent");
    let etag1 = first.e_tag().expect("etag").to_owned();

    let again = t
        .client
        .put_object()
        .bucket(&t.bucket)
        .key(key)
        .if_none_match("*")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    assert_eq!(status_of(again), 412, "If-None-Match: * on an existing key must fail");

    // Replace only if unchanged since we read it.
    let second = t
        .client
        .put_object()
        .bucket(&t.bucket)
        .key(key)
        .if_match(&etag1)
        .body(ByteStream::from_static(br#"{"images":[{"path":"a"}]}"#))
        .send()
        .await
        .expect("swap with the current etag");
    let etag2 = second.e_tag().expect("etag").to_owned();
    assert_ne!(etag1, etag2);

    // A writer holding the stale etag loses, and the winner's content stays.
    let stale = t
        .client
        .put_object()
        .bucket(&t.bucket)
        .key(key)
        .if_match(&etag1)
        .body(ByteStream::from_static(b"lost"))
        .send()
        .await;
    assert_eq!(status_of(stale), 412, "If-Match with a stale etag must fail");
    let now = t.client.get_object().bucket(&t.bucket).key(key).send().await.expect("get");
    assert_eq!(now.e_tag(), Some(etag2.as_str()));
    assert_eq!(
        now.body.collect().await.expect("body").into_bytes().as_ref(),
        br#"{"images":[{"path":"a"}]}"#
    );
}

fn status_of<T, E>(r: Result<T, aws_sdk_s3::error::SdkError<E>>) -> u16
where
    E: std::fmt::Debug,
{
    match r {
        Ok(_) => 200,
        Err(e) => {
            e.raw_response().map(|r| r.status().as_u16()).unwrap_or_else(|| panic!("no HTTP response: {e:?}"))
        }
    }
}
