//! Serving one store object over HTTP, the way switches download images.
//!
//! [`Downloads::serve`] answers GET and HEAD for an object whose SHA-256 and size the caller knows
//! (from the manifest): exact `Content-Length`, a strong `ETag` (the quoted SHA-256), single byte
//! ranges (`206` / `416`, what resuming installers need), `If-None-Match` (`304`) and `If-Range`,
//! and a long `Cache-Control` (a path's bytes never change without a new SHA-256). The body
//! streams from the store in constant memory.
//!
//! Bodies are admitted, not queued: each GET body holds a permit for its whole transfer; when none
//! is free the answer is an immediate `503` with `Retry-After`, so a burst of devices retries later
//! instead of piling up connections (and disk or S3 reads) on the server.

use std::{
    ops::Range,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::{
    body::Body,
    http::{
        HeaderMap, HeaderValue, Method, StatusCode,
        header::{self, InvalidHeaderValue},
    },
    response::Response,
};
use bytes::Bytes;
use futures::{Stream, StreamExt, stream::BoxStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    api::ImagePath,
    store::{Store, StoreError},
};

/// `Cache-Control` of object responses unless [`Downloads::with_cache_control`] sets another.
pub const DEFAULT_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";
/// Body of the `503` answered when every download permit is taken.
pub const BUSY_BODY: &str = "too many downloads in progress; retry later\n";
/// Body of the `503` answered when the store fails before the first byte.
pub const STORE_UNAVAILABLE_BODY: &str = "storage unavailable; retry later\n";

/// What to do with a request's `Range` header (see [`parse_range`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeDecision {
    /// Send the whole object with `200` (no range, or one this server ignores: several ranges,
    /// another unit, or a malformed header, as RFC 9110 allows).
    Full,
    /// Send these bytes (half-open, within the object) with `206`.
    Partial(Range<u64>),
    /// No byte of the range is in the object: `416` with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Parses a `Range` header value for an object of `size` bytes. Accepts one range of the
/// `bytes` unit: `bytes=a-b` (clipped at the end), `bytes=a-`, `bytes=-n` (the last n bytes).
/// Anything else (several ranges, other units, malformed text, `b < a`) is [`RangeDecision::Full`].
pub fn parse_range(header: &str, size: u64) -> RangeDecision {
    let Some((unit, set)) = header.split_once('=') else { return RangeDecision::Full };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeDecision::Full;
    }
    // A list: optional whitespace around commas, empty elements allowed (RFC 9110 §5.6.1).
    let mut specs = set.split(',').map(str::trim).filter(|s| !s.is_empty());
    let (Some(spec), None) = (specs.next(), specs.next()) else { return RangeDecision::Full };
    let Some((first, last)) = spec.split_once('-') else { return RangeDecision::Full };
    match (first.is_empty(), last.is_empty()) {
        (true, true) => RangeDecision::Full,
        // Suffix range: the last `n` bytes.
        (true, false) => match position(last) {
            None => RangeDecision::Full,
            Some(0) => RangeDecision::Unsatisfiable,
            // Every non-zero suffix of an empty object is satisfiable, but there is no byte to
            // name in a `Content-Range`: send the (empty) whole.
            Some(_) if size == 0 => RangeDecision::Full,
            Some(n) => RangeDecision::Partial(size - n.min(size)..size),
        },
        (false, _) => {
            let Some(start) = position(first) else { return RangeDecision::Full };
            let end = if last.is_empty() {
                size
            } else {
                match position(last) {
                    Some(last) if last >= start => last.saturating_add(1).min(size),
                    _ => return RangeDecision::Full,
                }
            };
            if start >= size { RangeDecision::Unsatisfiable } else { RangeDecision::Partial(start..end) }
        }
    }
}

/// A byte position: one or more ASCII digits (no sign, no space). Values past `u64::MAX` are
/// `u64::MAX` (past the end of any object).
fn position(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().unwrap_or(u64::MAX))
}

/// What [`Downloads::plan`] decided.
#[derive(Debug)]
pub enum Plan {
    /// Answer with this at once (`304`, `405`, `416`, `500`).
    Answer(Response),
    /// Send `head` (`200` or `206`, every header set, empty body), then, when `body`, the
    /// object's `bytes` (half-open, within the object).
    Send { head: Response, bytes: Range<u64>, body: bool },
}

/// Serves store objects to devices, with an admission limit on concurrent GET bodies.
/// Cheap to clone: clones share the limit.
#[derive(Debug, Clone)]
pub struct Downloads {
    store: Store,
    limit: Arc<Semaphore>,
    /// Permits `limit` started with (for [`Downloads::active`]).
    max_concurrent: usize,
    retry_after_secs: u64,
    cache_control: String,
    /// A body the connection takes nothing of for this long gives its permit back (see
    /// [`Stall`]); `None`: only when it ends.
    send_timeout: Option<Duration>,
}

impl Downloads {
    /// Serves from `store`, at most `max_concurrent` GET bodies at a time (0 refuses every GET
    /// body); refused requests are told to retry after `retry_after_secs` seconds.
    pub fn new(store: Store, max_concurrent: usize, retry_after_secs: u64) -> Self {
        let max_concurrent = max_concurrent.min(Semaphore::MAX_PERMITS);
        Self {
            store,
            limit: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            retry_after_secs,
            cache_control: DEFAULT_CACHE_CONTROL.to_owned(),
            send_timeout: None,
        }
    }

    /// A GET body not polled for `stall` (its connection took nothing: an HTTP/1 socket that does
    /// not drain, an HTTP/2 stream whose window the client never reopens) gives its permit back
    /// then, and fails when it is polled again (hyper resets the stream or closes).
    pub fn with_send_timeout(mut self, stall: Duration) -> Self {
        self.send_timeout = Some(stall);
        self
    }

    /// Replaces the `Cache-Control` of object responses (default [`DEFAULT_CACHE_CONTROL`]).
    pub fn with_cache_control(mut self, value: &str) -> Result<Self, InvalidHeaderValue> {
        HeaderValue::from_str(value)?;
        self.cache_control = value.to_owned();
        Ok(self)
    }

    /// GET bodies being sent right now (each holds a permit until it ends or the client leaves).
    pub fn active(&self) -> usize {
        self.max_concurrent.saturating_sub(self.limit.available_permits())
    }

    /// Decides the answer to a GET or HEAD for an object whose content has SHA-256 `sha256` (hex)
    /// and is `size` bytes long (both from the manifest), without touching the store. `200` and
    /// `206` carry `Content-Disposition: attachment` with `filename`, as the reference's do.
    ///
    /// `304` when `If-None-Match` names the ETag; `206` for one satisfiable byte range (unless
    /// `If-Range` names another ETag or a date); `416` for an unsatisfiable one; `200` otherwise.
    /// Other methods get `405`. The body (and the admission permit it needs) is the caller's:
    /// [`Downloads::serve`] streams it through hyper, the sendfile fast path writes it itself.
    pub fn plan(
        &self,
        method: &Method,
        headers: &HeaderMap,
        filename: &str,
        sha256: &str,
        size: u64,
    ) -> Plan {
        let is_get = method == Method::GET;
        if !is_get && method != Method::HEAD {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Plan::Answer(response);
        }
        let Some((etag, etag_value)) = entity_tag(sha256) else {
            tracing::error!(sha256, "cannot serve: the digest is not a valid entity tag");
            return Plan::Answer(text(StatusCode::INTERNAL_SERVER_ERROR, "invalid digest for this object\n"));
        };

        if none_match(headers, &etag) {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            self.cache_headers(response.headers_mut(), etag_value);
            return Plan::Answer(response);
        }

        // Range is defined for GET only (RFC 9110 §14.2): HEAD describes the whole object.
        let decision = if is_get && range_applies(headers, &etag) {
            single(headers, header::RANGE).map_or(RangeDecision::Full, |v| parse_range(v, size))
        } else {
            RangeDecision::Full
        };
        let range = match decision {
            RangeDecision::Full => None,
            RangeDecision::Partial(range) => Some(range),
            RangeDecision::Unsatisfiable => {
                let mut response = text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n");
                let h = response.headers_mut();
                h.insert(header::CONTENT_RANGE, header_value(format!("bytes */{size}")));
                h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
                h.insert(header::ETAG, etag_value);
                return Plan::Answer(response);
            }
        };

        let length = range.as_ref().map_or(size, |r| r.end - r.start);
        let mut head = Response::new(Body::empty());
        {
            let h = head.headers_mut();
            self.cache_headers(h, etag_value);
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            h.insert(header::CONTENT_DISPOSITION, attachment(filename));
            if let Some(r) = &range {
                let content_range = format!("bytes {}-{}/{size}", r.start, r.end - 1);
                h.insert(header::CONTENT_RANGE, header_value(content_range));
            }
        }
        if range.is_some() {
            *head.status_mut() = StatusCode::PARTIAL_CONTENT;
        }
        let bytes = range.unwrap_or(0..size);
        Plan::Send { head, bytes, body: is_get }
    }

    /// A permit for one GET body, if one is free (see `Downloads::busy`).
    pub fn try_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.limit.clone().try_acquire_owned().ok()
    }

    /// Answers a GET or HEAD for the object at `path` (see [`Downloads::plan`]), streaming the body
    /// from the store.
    ///
    /// A GET body needs a free permit (else `503` + `Retry-After`, at once); a store error before
    /// the first byte is `404` (not found) or `503`. A store error later cuts the connection
    /// (the client sees a short body and can resume with a range).
    pub async fn serve(
        &self,
        method: &Method,
        headers: &HeaderMap,
        path: &ImagePath,
        sha256: &str,
        size: u64,
    ) -> Response {
        let (mut response, bytes) = match self.plan(method, headers, path.filename(), sha256, size) {
            Plan::Answer(response) => return response,
            Plan::Send { head, body: false, .. } => {
                // HEAD: the same headers, no body, no permit; but only for an object that is there.
                return match self.store.stat(path).await {
                    Ok(Some(_)) => head,
                    Ok(None) => self.store_error(path, StoreError::NotFound(path.to_string())),
                    Err(e) => self.store_error(path, e),
                };
            }
            Plan::Send { head, bytes, body: true } => (head, bytes),
        };

        let Some(permit) = self.try_permit() else { return self.busy() };
        let length = bytes.end - bytes.start;
        let range = (length != size).then_some(bytes);
        let inner = match self.store.read(path, range).await {
            Ok(stream) => stream,
            Err(e) => return self.store_error(path, e),
        };
        let mut transfer = Transfer {
            inner,
            first: None,
            expected: length,
            sent: 0,
            permit: Some(Stall::watch(permit, self.send_timeout)),
            path: path.clone(),
        };
        // Wait for the first chunk, so that a store failing right away gets a clean status instead
        // of a `200` cut short.
        match transfer.next().await {
            Some(Ok(first)) => transfer.first = Some(first),
            Some(Err(e)) => return self.store_error(path, e),
            None => {}
        }
        *response.body_mut() = Body::from_stream(transfer);
        response
    }

    /// `ETag` and `Cache-Control`: what `200`, `206` and `304` share.
    fn cache_headers(&self, headers: &mut HeaderMap, etag: HeaderValue) {
        headers.insert(header::ETAG, etag);
        // Validated by `with_cache_control`.
        if let Ok(value) = HeaderValue::from_str(&self.cache_control) {
            headers.insert(header::CACHE_CONTROL, value);
        }
    }

    /// `503` + `Retry-After`: no permit free.
    fn busy(&self) -> Response {
        let mut response = text(StatusCode::SERVICE_UNAVAILABLE, BUSY_BODY);
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(self.retry_after_secs));
        response
    }

    /// `404` for a missing object, `503` + `Retry-After` for anything else the store says.
    fn store_error(&self, path: &ImagePath, error: StoreError) -> Response {
        if let StoreError::NotFound(_) = error {
            return text(StatusCode::NOT_FOUND, "not found\n");
        }
        tracing::warn!(%path, error = %error, "download failed before the first byte");
        let mut response = text(StatusCode::SERVICE_UNAVAILABLE, STORE_UNAVAILABLE_BODY);
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(self.retry_after_secs));
        response
    }
}

/// A short plain-text answer that no cache keeps.
fn text(status: StatusCode, body: &'static str) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A header value built from ASCII digits and punctuation.
/// `attachment; filename="…"; filename*=UTF-8''…` (RFC 6266; the quoted name without quotes,
/// backslashes and control characters, the extended one percent-encoded as RFC 8187 says).
fn attachment(filename: &str) -> HeaderValue {
    let plain: String = filename
        .chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control() && !matches!(c, '"' | '\\'))
        .collect();
    let mut encoded = String::with_capacity(filename.len());
    for b in filename.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    header_value(format!("attachment; filename=\"{plain}\"; filename*=UTF-8''{encoded}"))
}

fn header_value(text: String) -> HeaderValue {
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The strong entity tag for `sha256` (`"<sha256>"`), as text and as a header value; None when
/// the digest cannot be one (empty, or characters an entity tag cannot hold).
fn entity_tag(sha256: &str) -> Option<(String, HeaderValue)> {
    if sha256.is_empty() || !sha256.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
        return None;
    }
    let etag = format!("\"{sha256}\"");
    let value = HeaderValue::from_str(&etag).ok()?;
    Some((etag, value))
}

/// The value of a header that occurs exactly once and is visible ASCII.
fn single(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => value.to_str().ok(),
        _ => None,
    }
}

/// Whether `If-None-Match` names `etag` (weak comparison) or is `*`.
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// Whether a `Range` may be honoured: no `If-Range`, or one naming `etag` exactly (strong
/// comparison). A date cannot match (no `Last-Modified` is sent), nor can a weak tag.
fn range_applies(headers: &HeaderMap, etag: &str) -> bool {
    if !headers.contains_key(header::IF_RANGE) {
        return true;
    }
    single(headers, header::IF_RANGE).is_some_and(|v| v.trim() == etag)
}

/// A GET body's admission permit, given back when the body ends or is dropped, or by a watchdog
/// task once the body has not been polled for the send timeout. hyper polls a body only when
/// the connection can take more: on HTTP/1 the socket, on HTTP/2 the stream's flow-control
/// window. A client that stops reading an HTTP/2 stream leaves its connection busy with other
/// streams, pings or nothing at all, and the body unpolled, never dropped: only a timer outside
/// the body can free its slot.
struct Stall {
    permit: std::sync::Mutex<Option<OwnedSemaphorePermit>>,
    /// When the body was last polled.
    polled: std::sync::Mutex<tokio::time::Instant>,
    watchdog: std::sync::Mutex<Option<tokio::task::AbortHandle>>,
}

impl Stall {
    fn watch(permit: OwnedSemaphorePermit, stall: Option<Duration>) -> Arc<Self> {
        let this = Arc::new(Self {
            permit: std::sync::Mutex::new(Some(permit)),
            polled: std::sync::Mutex::new(tokio::time::Instant::now()),
            watchdog: std::sync::Mutex::default(),
        });
        if let Some(stall) = stall {
            let weak = Arc::downgrade(&this);
            let task = tokio::spawn(async move {
                loop {
                    let Some(this) = weak.upgrade() else { return };
                    let deadline = *this.polled.lock().unwrap_or_else(|p| p.into_inner()) + stall;
                    if tokio::time::Instant::now() >= deadline {
                        this.permit.lock().unwrap_or_else(|p| p.into_inner()).take();
                        return;
                    }
                    drop(this);
                    tokio::time::sleep_until(deadline).await;
                }
            });
            *this.watchdog.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.abort_handle());
        }
        this
    }

    /// The body is polled: whether it still holds its permit (`false`: the watchdog took it).
    fn polled(&self) -> bool {
        *self.polled.lock().unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
        self.permit.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }
}

impl Drop for Stall {
    fn drop(&mut self) {
        if let Some(task) = self.watchdog.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

/// A GET body in flight: the store's stream, cut to exactly `expected` bytes, holding its
/// admission permit until it ends (or is dropped, when the client goes away, or taken back when
/// the client takes nothing for the send timeout: see [`Stall`]).
struct Transfer {
    inner: BoxStream<'static, Result<Bytes, StoreError>>,
    /// A chunk read ahead (to see the store's first answer before choosing a status).
    first: Option<Bytes>,
    expected: u64,
    sent: u64,
    /// None once the transfer is over.
    permit: Option<Arc<Stall>>,
    path: ImagePath,
}

impl Stream for Transfer {
    type Item = Result<Bytes, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.permit.as_ref().is_some_and(|p| !p.polled()) {
            // Taken back by the watchdog: the rest is not sent (hyper resets the stream).
            this.permit = None;
            this.first = None;
            let source = std::io::Error::new(std::io::ErrorKind::TimedOut, "the client took no bytes");
            let sent = this.sent;
            tracing::debug!(path = %this.path, sent, "download given up: the client took no bytes");
            return Poll::Ready(Some(Err(StoreError::Io {
                op: "send",
                path: this.path.to_string().into(),
                source,
            })));
        }
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        if this.permit.is_none() {
            return Poll::Ready(None);
        }
        let remaining = this.expected - this.sent;
        if remaining == 0 {
            this.permit = None;
            return Poll::Ready(None);
        }
        match ready!(this.inner.poll_next_unpin(cx)) {
            Some(Ok(mut chunk)) => {
                // An object longer than the manifest says: send what was announced.
                if let Ok(max) = usize::try_from(remaining) {
                    chunk.truncate(max);
                }
                this.sent += chunk.len() as u64;
                Poll::Ready(Some(Ok(chunk)))
            }
            Some(Err(e)) => {
                this.permit = None;
                tracing::warn!(path = %this.path, sent = this.sent, error = %e, "download cut short");
                Poll::Ready(Some(Err(e)))
            }
            None => {
                this.permit = None;
                let (expected, actual) = (this.expected, this.sent);
                tracing::warn!(path = %this.path, expected, actual, "stored object shorter than announced");
                Poll::Ready(Some(Err(StoreError::SizeMismatch { expected, actual })))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{hash::Sha256Digest, store::fs::FsBackend};

    const SIZE: usize = 600_000;

    fn data() -> Vec<u8> {
        (0..SIZE).map(|i| (i % 251) as u8).collect()
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        downloads: Downloads,
        path: ImagePath,
        sha: String,
        data: Vec<u8>,
    }

    async fn fixture(max_concurrent: usize) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(Arc::new(FsBackend::new(dir.path()).expect("store")));
        let path = ImagePath::new("lab-nos", "1.0.0", "image.bin").expect("path");
        let data = data();
        let sha = Sha256Digest::of(&data);
        let mut writer = store.writer(&path, sha).await.expect("writer");
        writer.write(Bytes::from(data.clone())).await.expect("write");
        let entry = crate::store::ManifestEntry::new(&path, sha, 0, false, None);
        writer.commit_entry(None, entry, false).await.expect("commit");
        Fixture {
            _dir: dir,
            downloads: Downloads::new(store, max_concurrent, 7),
            path,
            sha: sha.to_hex(),
            data,
        }
    }

    impl Fixture {
        async fn request(&self, method: Method, headers: &[(header::HeaderName, &str)]) -> Response {
            let mut map = HeaderMap::new();
            for (name, value) in headers {
                map.append(name, HeaderValue::from_str(value).expect("header value"));
            }
            self.downloads.serve(&method, &map, &self.path, &self.sha, self.data.len() as u64).await
        }

        async fn get_range(&self, range: &str) -> Response {
            self.request(Method::GET, &[(header::RANGE, range)]).await
        }
    }

    fn header(response: &Response, name: header::HeaderName) -> Option<&str> {
        response.headers().get(name).and_then(|v| v.to_str().ok())
    }

    async fn body(response: Response) -> Vec<u8> {
        axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body").to_vec()
    }

    #[test]
    fn downloads_are_attachments_named_as_stored() {
        assert_eq!(
            attachment("cl-5.14.0+mlx~1.bin"),
            "attachment; filename=\"cl-5.14.0+mlx~1.bin\"; filename*=UTF-8''cl-5.14.0+mlx~1.bin"
        );
        assert_eq!(attachment("a@b=c,d"), "attachment; filename=\"a@b=c,d\"; filename*=UTF-8''a%40b%3Dc%2Cd");
        assert_eq!(attachment("a\"b\\é"), "attachment; filename=\"ab\"; filename*=UTF-8''a%22b%5C%C3%A9");
    }

    #[test]
    fn parses_single_ranges() {
        use RangeDecision::*;
        assert_eq!(parse_range("bytes=10-19", 100), Partial(10..20));
        assert_eq!(parse_range("bytes=0-0", 100), Partial(0..1));
        assert_eq!(parse_range("bytes=90-", 100), Partial(90..100));
        assert_eq!(parse_range("bytes=0-", 100), Partial(0..100));
        assert_eq!(parse_range("bytes=-5", 100), Partial(95..100));
        assert_eq!(parse_range("bytes=-500", 100), Partial(0..100));
        assert_eq!(parse_range("bytes=99-", 100), Partial(99..100));
        // Clipped at the end, even past u64.
        assert_eq!(parse_range("bytes=50-1000", 100), Partial(50..100));
        assert_eq!(parse_range("bytes=50-99999999999999999999999", 100), Partial(50..100));
        // Unit case-insensitive; list whitespace and empty elements tolerated.
        assert_eq!(parse_range("Bytes=1-2", 100), Partial(1..3));
        assert_eq!(parse_range("bytes= 1-2 ,", 100), Partial(1..3));
    }

    #[test]
    fn unsatisfiable_ranges() {
        use RangeDecision::*;
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=100-200", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=99999999999999999999999-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        // A non-zero suffix of an empty object: the whole (empty) object.
        assert_eq!(parse_range("bytes=-5", 0), Full);
    }

    #[test]
    fn ignores_multiple_other_and_malformed_ranges() {
        for header in [
            "bytes=0-1,5-6",
            "bytes=0-1, -5",
            "items=0-5",
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=5",
            "bytes=5-3",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes=1 -2",
            "bytes=--5",
            "bytes=1-2-3",
            "",
        ] {
            assert_eq!(parse_range(header, 100), RangeDecision::Full, "{header:?}");
        }
    }

    #[tokio::test]
    async fn full_get_streams_the_object_with_its_headers() {
        let f = fixture(2).await;
        let response = f.request(Method::GET, &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, header::CONTENT_LENGTH), Some(SIZE.to_string().as_str()));
        assert_eq!(header(&response, header::ETAG), Some(format!("\"{}\"", f.sha).as_str()));
        assert_eq!(header(&response, header::ACCEPT_RANGES), Some("bytes"));
        assert_eq!(header(&response, header::CACHE_CONTROL), Some(DEFAULT_CACHE_CONTROL));
        assert_eq!(header(&response, header::CONTENT_TYPE), Some("application/octet-stream"));
        let disposition = format!("attachment; filename=\"{0}\"; filename*=UTF-8''{0}", f.path.filename());
        assert_eq!(header(&response, header::CONTENT_DISPOSITION), Some(disposition.as_str()));
        assert_eq!(header(&response, header::CONTENT_RANGE), None);
        assert_eq!(f.downloads.active(), 1);
        assert!(body(response).await == f.data);
        assert_eq!(f.downloads.active(), 0, "the permit is released when the body ends");
    }

    #[tokio::test]
    async fn head_has_the_headers_and_no_body() {
        let f = fixture(2).await;
        // Range is ignored on HEAD.
        let response = f.request(Method::HEAD, &[(header::RANGE, "bytes=0-9")]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, header::CONTENT_LENGTH), Some(SIZE.to_string().as_str()));
        assert_eq!(header(&response, header::ETAG), Some(format!("\"{}\"", f.sha).as_str()));
        assert_eq!(header(&response, header::ACCEPT_RANGES), Some("bytes"));
        assert_eq!(f.downloads.active(), 0);
        assert!(body(response).await.is_empty());
    }

    #[tokio::test]
    async fn ranges_get_206_with_content_range() {
        let f = fixture(2).await;
        let n = SIZE as u64;
        for (range, expected) in [
            ("bytes=10-19", 10..20),
            ("bytes=-5", SIZE - 5..SIZE),
            (&*format!("bytes={}-", n - 1), SIZE - 1..SIZE),
            // Across the store's read chunks.
            ("bytes=262000-530000", 262_000..530_001),
            ("bytes=0-99999999", 0..SIZE),
        ] {
            let response = f.get_range(range).await;
            assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{range}");
            let content_range = format!("bytes {}-{}/{n}", expected.start, expected.end - 1);
            assert_eq!(header(&response, header::CONTENT_RANGE), Some(content_range.as_str()), "{range}");
            let length = (expected.end - expected.start).to_string();
            assert_eq!(header(&response, header::CONTENT_LENGTH), Some(length.as_str()), "{range}");
            assert_eq!(header(&response, header::ETAG), Some(format!("\"{}\"", f.sha).as_str()));
            assert!(body(response).await == f.data[expected], "{range}");
        }
        assert_eq!(f.downloads.active(), 0);
    }

    #[tokio::test]
    async fn unsatisfiable_range_gets_416() {
        let f = fixture(2).await;
        for range in
            [format!("bytes={SIZE}-"), format!("bytes={}-{}", SIZE + 10, SIZE + 20), "bytes=-0".into()]
        {
            let response = f.get_range(&range).await;
            assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
            assert_eq!(header(&response, header::CONTENT_RANGE), Some(format!("bytes */{SIZE}").as_str()));
        }
        assert_eq!(f.downloads.active(), 0);
    }

    #[tokio::test]
    async fn multiple_or_malformed_ranges_get_the_whole_object() {
        let f = fixture(2).await;
        for range in ["bytes=0-9,20-29", "bytes=9-0", "lines=1-2"] {
            let response = f.get_range(range).await;
            assert_eq!(response.status(), StatusCode::OK, "{range}");
            assert_eq!(header(&response, header::CONTENT_RANGE), None);
            assert!(body(response).await == f.data, "{range}");
        }
        // Two Range header lines are as good as two ranges.
        let response =
            f.request(Method::GET, &[(header::RANGE, "bytes=0-9"), (header::RANGE, "bytes=5-9")]).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn if_none_match_gets_304() {
        let f = fixture(1).await;
        let etag = format!("\"{}\"", f.sha);
        for value in [etag.clone(), format!("W/{etag}"), format!("\"other\", {etag}"), "*".into()] {
            for method in [Method::GET, Method::HEAD] {
                let response = f.request(method, &[(header::IF_NONE_MATCH, &value)]).await;
                assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{value}");
                assert_eq!(header(&response, header::ETAG), Some(etag.as_str()));
                assert_eq!(header(&response, header::CACHE_CONTROL), Some(DEFAULT_CACHE_CONTROL));
                assert!(body(response).await.is_empty());
            }
        }
        let response = f.request(Method::GET, &[(header::IF_NONE_MATCH, "\"other\"")]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(body(response).await == f.data);
    }

    #[tokio::test]
    async fn if_range_must_name_the_etag() {
        let f = fixture(2).await;
        let etag = format!("\"{}\"", f.sha);
        let response =
            f.request(Method::GET, &[(header::RANGE, "bytes=10-19"), (header::IF_RANGE, &etag)]).await;
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
        assert!(body(response).await == f.data[10..20]);
        for other in ["\"other\"", &format!("W/{etag}"), "Wed, 21 Oct 2015 07:28:00 GMT"] {
            let response =
                f.request(Method::GET, &[(header::RANGE, "bytes=10-19"), (header::IF_RANGE, other)]).await;
            assert_eq!(response.status(), StatusCode::OK, "{other}");
            assert!(body(response).await == f.data, "{other}");
        }
    }

    #[tokio::test]
    async fn admission_limit_answers_503_at_once_and_frees_on_drop() {
        let f = fixture(1).await;
        let held = f.request(Method::GET, &[]).await;
        assert_eq!(held.status(), StatusCode::OK);
        assert_eq!(f.downloads.active(), 1);

        let refused = f.request(Method::GET, &[]).await;
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(header(&refused, header::RETRY_AFTER), Some("7"));
        assert_eq!(body(refused).await, BUSY_BODY.as_bytes());
        // A range is a GET body too.
        assert_eq!(f.get_range("bytes=0-9").await.status(), StatusCode::SERVICE_UNAVAILABLE);
        // HEAD and 304 need no permit.
        assert_eq!(f.request(Method::HEAD, &[]).await.status(), StatusCode::OK);
        let etag = format!("\"{}\"", f.sha);
        assert_eq!(
            f.request(Method::GET, &[(header::IF_NONE_MATCH, &etag)]).await.status(),
            StatusCode::NOT_MODIFIED
        );

        // The client goes away mid-transfer: the body is dropped, and the permit with it.
        drop(held);
        assert_eq!(f.downloads.active(), 0);
        let third = f.request(Method::GET, &[]).await;
        assert_eq!(third.status(), StatusCode::OK);
        assert!(body(third).await == f.data);
        assert_eq!(f.downloads.active(), 0);
    }

    #[tokio::test]
    async fn missing_objects_and_store_failures() {
        let f = fixture(1).await;
        let missing = ImagePath::new("lab-nos", "1.0.0", "missing.bin").expect("path");
        let headers = HeaderMap::new();
        for method in [Method::GET, Method::HEAD] {
            let response = f.downloads.serve(&method, &headers, &missing, &f.sha, 10).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method}");
        }
        assert_eq!(f.downloads.active(), 0, "a failed GET gives its permit back");

        // The store has fewer bytes than announced: nothing to send at all is a 503 ...
        let n = SIZE as u64;
        let mut range = HeaderMap::new();
        range.insert(header::RANGE, HeaderValue::from_static("bytes=600000-"));
        let response = f.downloads.serve(&Method::GET, &range, &f.path, &f.sha, n + 100).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(header(&response, header::RETRY_AFTER), Some("7"));
        assert_eq!(body(response).await, STORE_UNAVAILABLE_BODY.as_bytes());
        // ... and running out later cuts the body (the client sees an error, not a short file).
        let response = f.downloads.serve(&Method::GET, &headers, &f.path, &f.sha, n + 100).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(axum::body::to_bytes(response.into_body(), usize::MAX).await.is_err());
        assert_eq!(f.downloads.active(), 0);

        // More bytes than announced: exactly the announced ones are sent.
        let response = f.downloads.serve(&Method::GET, &headers, &f.path, &f.sha, 1000).await;
        assert_eq!(header(&response, header::CONTENT_LENGTH), Some("1000"));
        assert!(body(response).await == f.data[..1000]);

        let response = f.downloads.serve(&Method::POST, &headers, &f.path, &f.sha, n).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(header(&response, header::ALLOW), Some("GET, HEAD"));
        let response = f.downloads.serve(&Method::GET, &headers, &f.path, "bad\"digest", n).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn cache_control_can_be_replaced() {
        let f = fixture(1).await;
        let downloads = f.downloads.clone().with_cache_control("no-cache").expect("valid");
        let response = downloads.serve(&Method::HEAD, &HeaderMap::new(), &f.path, &f.sha, SIZE as u64).await;
        assert_eq!(header(&response, header::CACHE_CONTROL), Some("no-cache"));
        assert!(f.downloads.clone().with_cache_control("bad\nvalue").is_err());
    }
}
