//! A small, real HTTP server (axum on tokio) that e2e tests use as the *source* an image fetcher
//! downloads from. Each served path has a body and a [`Behavior`] that decides how it is served
//! (normally, with an error status, cut off half way, slowly, ...). The behavior of a path can be
//! changed while the server runs, and every request is recorded so tests can check what the
//! client sent.
//!
//! The server listens on `127.0.0.1` on a random port, runs as a task on the current tokio
//! runtime and shuts down when the [`SourceServer`] is dropped.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures::stream;
use tokio::{sync::oneshot, task::JoinHandle};

/// Chunk size of the streaming bodies ([`Behavior::Slow`]).
const CHUNK: usize = 64 * 1024;

/// How long a [`Behavior::DropAfter`] body waits after its last bytes before failing, so that
/// hyper flushes those bytes to the socket before it aborts the connection.
const DROP_FLUSH_DELAY: Duration = Duration::from_millis(100);

/// How the server answers requests for one path.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// 200 with the whole body, Content-Length set, `Accept-Ranges: bytes`; honours a single
    /// `Range: bytes=N-` (206 + Content-Range) and `bytes=N-M` (also the suffix form `bytes=-N`).
    /// A range starting at or past the end gets 416 with `Content-Range: bytes */<total>`; a
    /// malformed or multi-part Range header is ignored (200 with the whole body).
    Serve,
    /// Always answer with this status code and a short text body.
    Status(u16),
    /// On requests WITHOUT a Range header: send Content-Length of the full body, then only the
    /// first `cut` bytes, then abort the connection (so the client sees an unexpected EOF / body
    /// error). Requests WITH a Range header are served normally (206). Models a connection
    /// dropped half way. `cut` is clamped to the body length.
    DropAfter {
        /// How many bytes of the body are sent before the connection is aborted.
        cut: usize,
    },
    /// Like Serve but without range support: ignores Range, never sends Accept-Ranges.
    NoRanges,
    /// Serve slowly: `bytes_per_sec` throughput (sleep between chunks of 64 KiB, smaller chunks
    /// of about 100 ms worth of data when the rate is below 640 KiB/s), supports Range like
    /// Serve. A rate of 0 is treated as 1.
    Slow {
        /// Target throughput in bytes per second.
        bytes_per_sec: u64,
    },
    /// 200 with `Content-Type: text/html` and an HTML error page body (what a captive portal /
    /// proxy returns), regardless of the file.
    HtmlErrorPage,
}

/// One request the server has seen.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    /// Request method, e.g. `GET` or `HEAD`.
    pub method: String,
    /// Request path (without the query string).
    pub path: String,
    /// Value of the `Range` header, if any.
    pub range: Option<String>,
    /// All request headers in the order received, with lower-cased names.
    pub headers: Vec<(String, String)>,
}

/// Served paths and recorded requests, shared between the handle and the server task.
#[derive(Default)]
struct SourceState {
    files: HashMap<String, (Bytes, Behavior)>,
    requests: Vec<SeenRequest>,
    /// Body bytes handed to the connection per path, for throttled ([`Behavior::Slow`]) bodies.
    sent: HashMap<String, u64>,
    /// Throttled bodies per path dropped before their end (the client closed the connection).
    unfinished: HashMap<String, usize>,
}

type Shared = Arc<Mutex<SourceState>>;

/// A running source server; stops when dropped.
pub struct SourceServer {
    addr: SocketAddr,
    state: Shared,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl SourceServer {
    /// Starts a server. `files` maps a URL path (e.g. "/images/nvos.bin") to its body and the
    /// behavior for that path. Unknown paths answer 404.
    pub async fn start(files: Vec<(&str, Bytes, Behavior)>) -> SourceServer {
        let state: Shared = Arc::new(Mutex::new(SourceState {
            files: files
                .into_iter()
                .map(|(path, body, behavior)| (path.to_owned(), (body, behavior)))
                .collect(),
            requests: Vec::new(),
            sent: HashMap::new(),
            unfinished: HashMap::new(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind source server");
        let addr = listener.local_addr().expect("source server address");
        let app = Router::new().fallback(handle).with_state(state.clone());
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = shutdown_rx.await;
                })
                .await;
        });
        SourceServer { addr, state, shutdown: Some(shutdown_tx), task }
    }

    /// Base URL like "http://127.0.0.1:PORT".
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Full URL of a path.
    pub fn url_of(&self, path: &str) -> String {
        if path.starts_with('/') { format!("{}{path}", self.url()) } else { format!("{}/{path}", self.url()) }
    }

    /// Every request seen so far, in order: method, path, and the value of the Range header if
    /// any, plus all request headers (lower-cased names) for tests that check what the client
    /// sent.
    pub fn requests(&self) -> Vec<SeenRequest> {
        lock(&self.state).requests.clone()
    }

    /// Body bytes of throttled ([`Behavior::Slow`]) answers for `path` handed to connections so
    /// far, over all requests.
    pub fn sent(&self, path: &str) -> u64 {
        lock(&self.state).sent.get(path).copied().unwrap_or(0)
    }

    /// Throttled ([`Behavior::Slow`]) answers for `path` whose body was dropped before its end:
    /// the client closed the connection mid-transfer.
    pub fn unfinished(&self, path: &str) -> usize {
        lock(&self.state).unfinished.get(path).copied().unwrap_or(0)
    }

    /// Replace the behavior of one path at run time (e.g. switch from Status(500) to Serve).
    /// Panics if the path was not given to [`SourceServer::start`].
    pub fn set_behavior(&self, path: &str, behavior: Behavior) {
        match lock(&self.state).files.get_mut(path) {
            Some(entry) => entry.1 = behavior,
            None => panic!("source server: set_behavior on unknown path {path:?}"),
        }
    }
}

impl SourceServer {
    /// Serves `body` (with [`Behavior::Serve`]) at `path` from now on.
    pub fn set_file(&self, path: &str, body: Bytes) {
        lock(&self.state).files.insert(path.to_owned(), (body, Behavior::Serve));
    }
}

impl Drop for SourceServer {
    fn drop(&mut self) {
        // Tell open connections to finish up, then stop accepting (releases the port at once).
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.abort();
    }
}

/// Locks the state, ignoring poisoning (a panicking test must not hide the original panic).
fn lock(state: &Shared) -> std::sync::MutexGuard<'_, SourceState> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The one handler: records the request, then answers according to the path's behavior.
async fn handle(State(state): State<Shared>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let headers = request.headers();
    let range = headers.get(header::RANGE).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let seen = SeenRequest {
        method: request.method().to_string(),
        path: path.clone(),
        range: range.clone(),
        headers: headers
            .iter()
            .map(|(name, value)| {
                (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned())
            })
            .collect(),
    };
    let file = {
        let mut state = lock(&state);
        state.requests.push(seen);
        state.files.get(&path).cloned()
    };
    let Some((body, behavior)) = file else {
        return (StatusCode::NOT_FOUND, format!("no such file: {path}\n")).into_response();
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "GET, HEAD")], "method not allowed\n")
            .into_response();
    }
    match behavior {
        Behavior::Serve => serve_bytes(body, range.as_deref(), None),
        Behavior::Slow { bytes_per_sec } => {
            let count = Counting { state: state.clone(), path: path.clone() };
            serve_bytes(body, range.as_deref(), Some((bytes_per_sec.max(1), count)))
        }
        Behavior::NoRanges => serve_bytes_no_ranges(body),
        Behavior::DropAfter { cut } => match range {
            Some(range) => serve_bytes(body, Some(&range), None),
            None => serve_cut(body, cut),
        },
        Behavior::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, format!("source server: status {code}\n")).into_response()
        }
        Behavior::HtmlErrorPage => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<!DOCTYPE html>\n<html><head><title>Access denied</title></head>\n\
             <body><h1>Access denied</h1><p>Please sign in to the network portal to continue.</p></body></html>\n",
        )
            .into_response(),
    }
}

/// What a `Range` header asks for, relative to a body of a given length.
#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    /// No usable range: serve the whole body.
    Full,
    /// Bytes `start..=end` (inclusive, already clamped to the body).
    Part { start: usize, end: usize },
    /// A well-formed range that starts at or past the end of the body.
    Unsatisfiable,
}

/// Parses a single-range `bytes=N-`, `bytes=N-M` or `bytes=-N` header; anything else (other
/// units, several ranges, garbage) is ignored as HTTP allows.
fn parse_range(value: Option<&str>, total: usize) -> RangeRequest {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| s.parse::<usize>().ok();
    match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match number(last) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if total == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Part { start: total.saturating_sub(n), end: total - 1 },
            None => RangeRequest::Full,
        },
        // bytes=N-
        (false, true) => match number(first) {
            Some(start) if start >= total => RangeRequest::Unsatisfiable,
            Some(start) => RangeRequest::Part { start, end: total - 1 },
            None => RangeRequest::Full,
        },
        // bytes=N-M
        (false, false) => match (number(first), number(last)) {
            (Some(start), Some(end)) if start <= end => {
                if start >= total {
                    RangeRequest::Unsatisfiable
                } else {
                    RangeRequest::Part { start, end: end.min(total - 1) }
                }
            }
            _ => RangeRequest::Full,
        },
        (true, true) => RangeRequest::Full,
    }
}

/// Serves `body` with range support, at full speed or throttled to `rate` bytes per second
/// (counted).
fn serve_bytes(body: Bytes, range: Option<&str>, rate: Option<(u64, Counting)>) -> Response {
    let total = body.len();
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    let (status, part) = match parse_range(range, total) {
        RangeRequest::Full => (StatusCode::OK, body),
        RangeRequest::Part { start, end } => {
            headers.insert(header::CONTENT_RANGE, header_value(format!("bytes {start}-{end}/{total}")));
            (StatusCode::PARTIAL_CONTENT, body.slice(start..=end))
        }
        RangeRequest::Unsatisfiable => {
            headers.insert(header::CONTENT_RANGE, header_value(format!("bytes */{total}")));
            return (StatusCode::RANGE_NOT_SATISFIABLE, headers, "range not satisfiable\n").into_response();
        }
    };
    let body = match rate {
        None => Body::from(part),
        Some((rate, count)) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(part.len()));
            slow_body(part, rate, count)
        }
    };
    (status, headers, body).into_response()
}

/// Serves the whole `body`, ignoring any Range header, without `Accept-Ranges`.
fn serve_bytes_no_ranges(body: Bytes) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/octet-stream")], body).into_response()
}

/// Declares the whole body's length but sends only its first `cut` bytes, then fails the body so
/// hyper aborts the connection.
fn serve_cut(body: Bytes, cut: usize) -> Response {
    let total = body.len();
    let head = body.slice(..cut.min(total));
    let chunks = stream::unfold(Some(head), |state| async move {
        let head = state?;
        if !head.is_empty() {
            // Data first; the stream is polled again after it, which is when it fails.
            return Some((Ok(head), Some(Bytes::new())));
        }
        // Give hyper a pending poll, during which it flushes the bytes already written.
        tokio::time::sleep(DROP_FLUSH_DELAY).await;
        Some((
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "source server: dropping connection",
            )),
            None,
        ))
    });
    let mut response = Body::from_stream(chunks).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    response
}

/// Where a throttled body counts what it sent, and whether it was dropped unfinished.
struct Counting {
    state: Shared,
    path: String,
}

/// What is left of a throttled body; counts an unfinished body when dropped with bytes left.
struct Rest {
    data: Bytes,
    count: Counting,
}

impl Drop for Rest {
    fn drop(&mut self) {
        if !self.data.is_empty() {
            *lock(&self.count.state).unfinished.entry(self.count.path.clone()).or_default() += 1;
        }
    }
}

/// A body that yields `data` in chunks, sleeping so the throughput is about `rate` bytes/s.
fn slow_body(data: Bytes, rate: u64, count: Counting) -> Body {
    // At most 64 KiB, and about 100 ms worth of data when the rate is low.
    let chunk = usize::try_from(rate / 10).unwrap_or(CHUNK).clamp(1, CHUNK);
    let chunks = stream::unfold((Rest { data, count }, true), move |(mut rest, first)| async move {
        if rest.data.is_empty() {
            return None;
        }
        let n = chunk.min(rest.data.len());
        if !first {
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
        }
        let piece = rest.data.split_to(n);
        *lock(&rest.count.state).sent.entry(rest.count.path.clone()).or_default() += n as u64;
        Some((Ok::<_, std::io::Error>(piece), (rest, false)))
    });
    Body::from_stream(chunks)
}

fn header_value(value: String) -> HeaderValue {
    HeaderValue::from_str(&value).expect("valid header value")
}

// ---------------------------------------------------------------------------------------------
// Tests of the source server itself, with a raw HTTP/1.1 client over a TcpStream.
// ---------------------------------------------------------------------------------------------

/// A parsed raw HTTP/1.1 response.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    /// Header names lower-cased.
    headers: Vec<(String, String)>,
    /// Everything received after the header block until the server closed the connection.
    body: Vec<u8>,
    /// Whether reading ended with an error (e.g. connection reset) rather than a clean EOF.
    read_error: bool,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Sends one request with `Connection: close` and reads until the server closes the connection.
async fn raw_request(
    server: &SourceServer,
    method: &str,
    path: &str,
    extra_headers: &[(&str, &str)],
) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut stream = tokio::net::TcpStream::connect(server.addr).await.expect("connect to source server");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", server.addr);
    for (name, value) in extra_headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("write request");

    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut read_error = false;
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(_) => {
                    read_error = true;
                    break;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read_all)
        .await
        .expect("server did not close the connection");

    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("complete response head");
    let head = String::from_utf8(raw[..end].to_vec()).expect("utf-8 head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status code");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    RawResponse { status, headers, body: raw[end + 4..].to_vec(), read_error }
}

/// A recognisable body: byte `i` is `i % 251`.
fn test_body(len: usize) -> Bytes {
    (0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into()
}

#[tokio::test]
async fn source_serve_returns_body_and_content_length() {
    let body = test_body(200_000);
    let server = SourceServer::start(vec![("/images/nvos.bin", body.clone(), Behavior::Serve)]).await;
    assert!(server.url().starts_with("http://127.0.0.1:"));
    assert_eq!(server.url_of("/images/nvos.bin"), format!("{}/images/nvos.bin", server.url()));

    let response = raw_request(&server, "GET", "/images/nvos.bin", &[]).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-length"), Some("200000"));
    assert_eq!(response.header("accept-ranges"), Some("bytes"));
    assert!(!response.read_error);
    assert_eq!(response.body, body);

    let head = raw_request(&server, "HEAD", "/images/nvos.bin", &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("200000"));
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn source_serve_honours_ranges() {
    let body = test_body(1000);
    let server = SourceServer::start(vec![("/f", body.clone(), Behavior::Serve)]).await;

    let tail = raw_request(&server, "GET", "/f", &[("Range", "bytes=5-")]).await;
    assert_eq!(tail.status, 206);
    assert_eq!(tail.header("content-range"), Some("bytes 5-999/1000"));
    assert_eq!(tail.header("content-length"), Some("995"));
    assert_eq!(tail.body, body[5..]);

    let middle = raw_request(&server, "GET", "/f", &[("Range", "bytes=10-19")]).await;
    assert_eq!(middle.status, 206);
    assert_eq!(middle.header("content-range"), Some("bytes 10-19/1000"));
    assert_eq!(middle.body, body[10..20]);

    let past_end = raw_request(&server, "GET", "/f", &[("Range", "bytes=1000-")]).await;
    assert_eq!(past_end.status, 416);
    assert_eq!(past_end.header("content-range"), Some("bytes */1000"));

    let no_ranges = SourceServer::start(vec![("/f", body.clone(), Behavior::NoRanges)]).await;
    let ignored = raw_request(&no_ranges, "GET", "/f", &[("Range", "bytes=5-")]).await;
    assert_eq!(ignored.status, 200);
    assert_eq!(ignored.header("accept-ranges"), None);
    assert_eq!(ignored.header("content-range"), None);
    assert_eq!(ignored.body, body);
}

#[tokio::test]
async fn source_drop_after_cuts_the_body_and_closes() {
    let body = test_body(300_000);
    let server = SourceServer::start(vec![("/f", body.clone(), Behavior::DropAfter { cut: 100_000 })]).await;

    let cut = raw_request(&server, "GET", "/f", &[]).await;
    assert_eq!(cut.status, 200);
    assert_eq!(cut.header("content-length"), Some("300000"));
    assert_eq!(cut.header("transfer-encoding"), None);
    eprintln!("DropAfter: got {} of 300000 body bytes, read error: {}", cut.body.len(), cut.read_error);
    assert_eq!(cut.body.len(), 100_000, "exactly the first `cut` bytes, then the connection closes");
    assert_eq!(cut.body, body[..100_000]);

    // With a Range header the rest is served normally.
    let rest = raw_request(&server, "GET", "/f", &[("Range", "bytes=100000-")]).await;
    assert_eq!(rest.status, 206);
    assert_eq!(rest.header("content-range"), Some("bytes 100000-299999/300000"));
    assert_eq!(rest.body, body[100_000..]);
}

#[tokio::test]
async fn source_status_unknown_path_html_and_set_behavior() {
    let body = test_body(100);
    let server = SourceServer::start(vec![("/f", body.clone(), Behavior::Status(500))]).await;

    let failed = raw_request(&server, "GET", "/f", &[]).await;
    assert_eq!(failed.status, 500);
    assert!(!failed.body.is_empty());

    let missing = raw_request(&server, "GET", "/nope", &[]).await;
    assert_eq!(missing.status, 404);

    server.set_behavior("/f", Behavior::HtmlErrorPage);
    let html = raw_request(&server, "GET", "/f", &[]).await;
    assert_eq!(html.status, 200);
    assert!(html.header("content-type").is_some_and(|t| t.starts_with("text/html")));
    assert!(String::from_utf8_lossy(&html.body).contains("<html>"));

    server.set_behavior("/f", Behavior::Serve);
    let ok = raw_request(&server, "GET", "/f", &[]).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body, body);
}

#[tokio::test]
async fn source_records_requests() {
    let server = SourceServer::start(vec![("/f", test_body(100), Behavior::Serve)]).await;
    raw_request(&server, "GET", "/f", &[]).await;
    raw_request(&server, "GET", "/f", &[("Range", "bytes=5-"), ("X-Test-Client", "ztp")]).await;
    raw_request(&server, "HEAD", "/other?x=1", &[]).await;

    let seen = server.requests();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str(), seen[0].range.as_deref()),
        ("GET", "/f", None)
    );
    assert_eq!(seen[1].range.as_deref(), Some("bytes=5-"));
    assert!(seen[1].headers.iter().any(|(n, v)| n == "x-test-client" && v == "ztp"), "{:?}", seen[1].headers);
    assert!(seen[1].headers.iter().any(|(n, _)| n == "host"));
    assert_eq!((seen[2].method.as_str(), seen[2].path.as_str()), ("HEAD", "/other"));
}

#[tokio::test]
async fn source_slow_throttles_and_supports_ranges() {
    let body = test_body(40_000);
    let server =
        SourceServer::start(vec![("/f", body.clone(), Behavior::Slow { bytes_per_sec: 100_000 })]).await;

    let started = std::time::Instant::now();
    let full = raw_request(&server, "GET", "/f", &[]).await;
    let elapsed = started.elapsed();
    assert_eq!(full.status, 200);
    assert_eq!(full.header("content-length"), Some("40000"));
    assert_eq!(full.body, body);
    // 40 KB at 100 KB/s in 10 KB chunks: three sleeps of 100 ms after the first chunk.
    assert!(elapsed >= Duration::from_millis(250), "too fast: {elapsed:?}");

    let part = raw_request(&server, "GET", "/f", &[("Range", "bytes=30000-")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-range"), Some("bytes 30000-39999/40000"));
    assert_eq!(part.body, body[30_000..]);
}

#[tokio::test]
async fn source_stops_when_dropped() {
    let server = SourceServer::start(vec![("/f", test_body(10), Behavior::Serve)]).await;
    let addr = server.addr;
    drop(server);
    // The accept loop is aborted; give the runtime a moment to drop the listener.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still accepting after drop");
}

#[test]
fn source_parse_range_forms() {
    assert_eq!(parse_range(None, 10), RangeRequest::Full);
    assert_eq!(parse_range(Some("bytes=0-"), 10), RangeRequest::Part { start: 0, end: 9 });
    assert_eq!(parse_range(Some("bytes=3-5"), 10), RangeRequest::Part { start: 3, end: 5 });
    assert_eq!(parse_range(Some("bytes=3-50"), 10), RangeRequest::Part { start: 3, end: 9 });
    assert_eq!(parse_range(Some("bytes=-4"), 10), RangeRequest::Part { start: 6, end: 9 });
    assert_eq!(parse_range(Some("bytes=10-"), 10), RangeRequest::Unsatisfiable);
    assert_eq!(parse_range(Some("bytes=5-3"), 10), RangeRequest::Full);
    assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), RangeRequest::Full);
    assert_eq!(parse_range(Some("items=0-1"), 10), RangeRequest::Full);
}

#[tokio::test]
async fn source_drop_after_is_a_body_error_for_a_real_client() {
    let server =
        SourceServer::start(vec![("/f", test_body(300_000), Behavior::DropAfter { cut: 100_000 })]).await;
    let response = reqwest::get(server.url_of("/f")).await.expect("response head arrives");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.content_length(), Some(300_000));
    let error = response.bytes().await.expect_err("the body must fail half way");
    eprintln!("DropAfter as seen by reqwest: {error:?}");
    assert!(error.is_body() || error.is_decode(), "{error:?}");
}
