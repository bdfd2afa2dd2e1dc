//! Entry points for the fuzz targets under `fuzz/` (cargo-fuzz; see `scripts/fuzz`). Not an API:
//! each function takes the fuzzer's bytes, drives one parser that reads outside input, and panics
//! when an invariant (or a differential against a reference) does not hold. They need no network
//! and no file system.

use std::{cell::RefCell, time::Duration};

use axum::{
    body::Body,
    extract::{FromRequest, Multipart},
    http::{HeaderMap, HeaderName, HeaderValue, Method, Request, header},
};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use crate::{
    api::names,
    manifests,
    profile::identity::{self, DeviceIdentity, Family},
    serve::{
        conn::{FastRequest, MAX_HEADERS},
        download::{RangeDecision, parse_range},
        files::copy_file_part,
    },
    store::manifest::Manifest,
};

pub use names::{MAX_SEGMENT_LEN, SEGMENT_PATTERN};
/// The rule the CRD's CEL validation applies to a path segment, as a regular expression (plus
/// `size() <= MAX_SEGMENT_LEN` and "no `..`"); see [`names::segment_rule`].
pub const SEGMENT_CEL_REGEX: &str = names::SEGMENT_REGEX;

thread_local! {
    static RUNTIME: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
}

/// Runs `future` on this thread's single-threaded runtime.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    RUNTIME.with(|rt| {
        let mut rt = rt.borrow_mut();
        let rt = rt.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a tokio runtime")
        });
        rt.block_on(future)
    })
}

/// The request a server took from a head: what the router would see.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadVerdict {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    /// The request has no body (the next bytes on the connection are the next request).
    pub bodiless: bool,
}

impl HeadVerdict {
    /// The request the fast path reads in `head` (`None`: its headers do not make a map).
    pub(crate) fn of(fast: &FastRequest, head: &[u8]) -> Option<Self> {
        let head = fast.in_head(head);
        let headers = head.header_map()?;
        Some(Self { method: head.method().clone(), path: head.path().to_owned(), headers, bodiless: true })
    }
}

/// What hyper's HTTP/1 server makes of `input` (the bytes a client sent, then closed): the first
/// request it hands to the service, or `None` when it refuses it.
pub async fn hyper_verdict(input: &[u8]) -> Option<HeadVerdict> {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let record = seen.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        use hyper::body::Body as _;
        let verdict = HeadVerdict {
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
            headers: request.headers().clone(),
            bodiless: request.body().is_end_stream(),
        };
        record.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(verdict);
        async { Ok::<_, std::convert::Infallible>(hyper::Response::new(Body::empty())) }
    });
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(server), service);
    // The duplex buffer holds any input libFuzzer makes; a failed write means hyper hung up.
    let _ = client.write_all(input).await;
    let _ = client.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
    seen.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// The fast path's parser against hyper: a head the fast path answers itself (read as the
/// connection loop reads it: up to the end of the first complete head) must be, for hyper, the
/// same request, with no body. Anything else is handed to hyper anyway.
pub fn fast_head(input: &[u8]) {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let Ok(httparse::Status::Complete(len)) = httparse::Request::new(&mut raw).parse(input) else { return };
    let Some(fast) = FastRequest::parse(&input[..len]) else { return };
    let hyper = block_on(hyper_verdict(input));
    assert_eq!(
        HeadVerdict::of(&fast, &input[..len]),
        hyper,
        "the fast path took a head hyper sees otherwise: {:?}",
        String::from_utf8_lossy(input)
    );
}

/// `Range` parsing: a partial answer is a non-empty range inside the object. The first byte is the object's size when
/// below 128, else the next 8 bytes are; the rest is the header value.
pub fn range(input: &[u8]) {
    let (size, text) = match input.split_first() {
        Some((&b, rest)) if b < 0x80 => (u64::from(b), rest),
        Some((_, rest)) if rest.len() >= 8 => {
            let (n, text) = rest.split_at(8);
            (u64::from_le_bytes(n.try_into().unwrap_or([0; 8])), text)
        }
        _ => return,
    };
    let Ok(text) = std::str::from_utf8(text) else { return };
    match parse_range(text, size) {
        RangeDecision::Full => {}
        RangeDecision::Partial(r) => {
            assert!(r.start < r.end && r.end <= size, "{text:?} of {size} bytes: {r:?}");
        }
        RangeDecision::Unsatisfiable => {}
    }
}

/// `Manifest::parse`: no panic; what parses has valid paths and survives a write and re-read.
pub fn manifest(input: &[u8]) {
    let Ok(manifest) = Manifest::parse("manifest.json", input) else { return };
    for entry in &manifest.images {
        let path = entry.image_path().expect("a parsed entry has a valid path");
        assert_eq!(path.to_string(), entry.path);
    }
    let again = Manifest::parse("manifest.json", &manifest.to_bytes()).expect("a written manifest parses");
    assert_eq!(again, manifest);
}

/// Segment validation, checked without a regular expression engine here: the fuzz target
/// compares it with the CRD's rule ([`SEGMENT_CEL_REGEX`]) and the OpenAPI `pattern`.
pub fn segment_is_valid(name: &str) -> bool {
    names::validate_segment("segment", name).is_ok()
}

/// Whether `name` is a reserved store name (refused by the code; see [`names::RESERVED_NAMES`]).
pub fn segment_is_reserved(name: &str) -> bool {
    names::is_reserved(name)
}

/// Identity headers: lines `N:value`, `N` picking an identity header (or any name). Once
/// [`identity::check_identity_headers`] accepts the headers, every value the device is known by
/// is within the segment length; a normalised MAC is a fixed point.
pub fn identity(input: &[u8]) {
    let names: Vec<&HeaderName> = identity::identity_header_names().collect();
    let mut headers = HeaderMap::new();
    for line in input.split(|&b| b == b'\n') {
        let Some((&pick, value)) = line.split_first() else { continue };
        let name = match names.get(usize::from(pick)) {
            Some(&name) => name.clone(),
            None => match value.iter().position(|&b| b == b':') {
                Some(at) => match HeaderName::from_bytes(&value[..at]) {
                    Ok(name) => name,
                    Err(_) => continue,
                },
                None => continue,
            },
        };
        let Ok(value) = HeaderValue::from_bytes(value) else { continue };
        headers.append(name, value);
    }
    let family = Family::detect(&headers);
    let accepted = identity::check_identity_headers(&headers).is_ok();
    for hint in [Family::Unknown, family, Family::Onie, Family::Cumulus] {
        let device = DeviceIdentity::from_headers(&headers, hint);
        if let Some(mac) = &device.mac {
            assert_eq!(identity::normalize_mac(mac).as_deref(), Some(mac.as_str()));
        }
        if !accepted {
            continue;
        }
        let within = |v: &Option<String>| v.as_ref().is_none_or(|v| v.chars().count() <= MAX_SEGMENT_LEN);
        for value in [
            &device.serial,
            &device.onie_operation,
            &device.onie_arch,
            &device.onie_machine,
            &device.onie_machine_rev,
            &device.onie_vendor_id,
            &device.os_version,
            &device.container_name,
            &device.element_name,
            &device.host_name,
        ] {
            assert!(within(value), "{value:?} is longer than a segment");
        }
        // The ONIE platform joins three values: `<arch>-<machine>-r<rev>`.
        for model in &device.models {
            assert!(model.chars().count() <= 3 * MAX_SEGMENT_LEN + 3, "{model:?}");
        }
    }
}

/// The upload's multipart handling: the first line is the `Content-Type`, the rest the body.
/// Finding the `file` part and reading it to its end never panics, never yields more bytes than
/// the body holds, and ends (an error or the end of the part).
pub fn multipart(input: &[u8]) {
    let (content_type, body) = match input.iter().position(|&b| b == b'\n') {
        Some(at) => (&input[..at], &input[at + 1..]),
        None => (&b"multipart/form-data; boundary=X"[..], input),
    };
    let Ok(content_type) = HeaderValue::from_bytes(content_type) else { return };
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/files/p/v/f")
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body.to_vec()));
    let Ok(request) = request else { return };
    block_on(async {
        let Ok(mut multipart) = Multipart::from_request(request, &()).await else { return };
        // The files API's own reading of an upload, into a sink that counts what it is given.
        copy_file_part(
            &mut multipart,
            async || Ok::<_, std::convert::Infallible>(0),
            async |read: &mut usize, chunk| {
                *read += chunk.len();
                assert!(
                    *read <= body.len(),
                    "the file part yielded {read} bytes of a {}-byte body",
                    body.len()
                );
                Ok(())
            },
        )
        .await;
    });
}

/// The standalone manifest loader: the nesting and size checks come first; what parses is read
/// as the loader reads it. (libFuzzer's `-timeout` catches a document that takes too long.)
pub fn yaml(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else { return };
    let Ok(docs) = manifests::parse_documents(text) else { return };
    for (_, value) in docs {
        let _ = serde_json::from_value::<crate::api::SwitchProfile>(value.clone());
        let _ = serde_json::from_value::<crate::api::OsImage>(value);
    }
}
