//! The connection loop: the front door of every device connection, with a fast path for images
//! (`sendfile(2)`) and ZTP JSON.
//!
//! hyper cannot hand a file to the kernel (hyperium/hyper#3026), and streaming through user space
//! costs a buffer per open download (1–2 MiB each: hundreds of MiB in a boot storm of slow
//! switches) and about 1.6× nginx's CPU per GB. So this loop reads each request head itself. A
//! plain `GET` or `HEAD` of an image (see [`DeviceRoute::parse`]) on a directory store,
//! whose answer is a `200` or `206`, is written here: the head, then `sendfile` from the page
//! cache straight to the socket, in chunks of at most 2 MiB with a yield between them (fairness,
//! as nginx's `sendfile_max_chunk`). A `GET` of a device's ZTP JSON that renders is written here
//! as well, from the snapshot's cache ([`ztp_json::answer`]): the request a fleet makes most, where
//! hyper, axum and their header copies cost more than the answer (on any store). Everything else
//! — other routes, percent-escapes, targets other than a plain path, bodies, upgrades, HTTP/2,
//! conditional answers (`304`, `416`), a full admission limit, images on S3, unknown devices — is
//! handed with the bytes already read to hyper and the axum router, which then owns the
//! connection. Both sides choose images through [`choose`], answer headers through
//! [`Downloads::plan`](super::download::Downloads::plan), take ZTP JSON responses from
//! [`ztp_json::answer`] and read a device's headers through
//! [`SentHeaders`](crate::profile::identity::SentHeaders), so they never differ.

use std::{
    io,
    net::SocketAddr,
    os::fd::AsFd,
    time::{Duration, Instant, SystemTime},
};

use axum::{
    Router,
    extract::ConnectInfo,
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode},
};
use bytes::{Buf, Bytes, BytesMut};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    io::{AsyncReadExt, Interest},
    net::{TcpListener, TcpStream},
};
use tower::ServiceExt;

use super::{
    AppState,
    affinity::{Counted, Handed, Lane, Mover},
    choose::{Asker, ImageRequest, choose},
    connections::{Limits, PerSource, SourceSlot, Throttle, TimedIo},
    device::request_identity,
    download::Plan,
    observe::{Observed, observe},
    reply::rendered_headers,
    ztp_json,
};
use crate::{
    activity::{DeviceOutcome, Stage},
    profile::identity::{DeviceIdentity, Family, SentHeaders, header_text},
    routes::DeviceRoute,
    sys,
};

/// Longest request head the fast path reads; longer ones go to hyper (which has its own limit).
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Headers the fast path parses; a request with more goes to hyper.
pub(crate) const MAX_HEADERS: usize = 64;
/// Answered (best effort) to a source past [`Limits::max_per_source`] before its connection closes.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 39\r\nretry-after: 5\r\nconnection: close\r\n\r\ntoo many connections from this address\n";
/// Bytes per `sendfile` call before yielding to other connections.
const CHUNK: usize = 2 << 20;

/// What every connection loop of one server shares (one loop per worker, see [`super::workers`]).
#[derive(Clone)]
pub struct Front {
    pub app: AppState,
    pub router: Router,
    /// `false`: every connection goes straight to hyper (the plain axum path, for comparison and
    /// as an escape hatch).
    pub sendfile: bool,
    pub limits: Limits,
    /// Connections per source address, counted across every loop.
    pub per_source: std::sync::Arc<PerSource>,
    /// How long the connections open at shutdown may take to end.
    pub drain: Duration,
}

/// Accepts connections until the listener fails or `shutdown` resolves, and answers them here or
/// hands them to a less busy worker (`lane`, see [`super::affinity`]), as it answers those handed
/// to it. A source holding [`Limits::max_per_source`] connections gets a `503` and its new one
/// closed.
///
/// On `shutdown` the listener closes and the connections already open are given up to
/// [`Front::drain`] to end: a download ends when its client has read every byte and closed the
/// connection, not when the server has handed the last bytes to the kernel (a process that exits
/// then, in a pod whose network namespace goes with it, leaves the client waiting for bytes that
/// never come).
pub async fn serve(
    listener: TcpListener,
    mut lane: Lane,
    front: Front,
    shutdown: impl std::future::Future<Output = ()>,
) -> io::Result<()> {
    let Front { app, router, sendfile, limits, per_source, drain } = front;
    let open = tokio_util::task::TaskTracker::new();
    let mut accept_log = Throttle::new(Duration::from_secs(1));
    let mut refused_log = Throttle::new(Duration::from_secs(1));
    let mut shutdown = std::pin::pin!(shutdown);
    if lane.cpu().is_some() {
        tokio::spawn(lane.mover().clone().balance());
    }
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(handed) = lane.handed() => {
                // Into this worker's reactor; a connection that cannot be registered closes.
                if let Ok(stream) = TcpStream::from_std(handed.stream) {
                    let held = Held { slot: handed.slot, _counted: handed.counted, mover: lane.mover().clone() };
                    let (app, router) = (app.clone(), router.clone());
                    open.spawn(connection(app, router, stream, handed.peer, limits, held, handed.kept_alive));
                }
                continue;
            }
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            // Out of file descriptors and the like: wait a little instead of spinning.
            Err(e) if is_transient(&e) => {
                if let Some(held_back) = accept_log.allow(tokio::time::Instant::now()) {
                    tracing::warn!(error = %e, held_back, "accept failed; retrying");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let Some(slot) = per_source.admit(peer.ip()) else {
            if let Some(held_back) = refused_log.allow(tokio::time::Instant::now()) {
                let max = limits.max_per_source;
                tracing::warn!(%peer, max, held_back, "too many connections from one source; refused");
            }
            // Best effort, without waiting: the socket buffer of a new connection takes it.
            let _ = stream.try_write(TOO_MANY_CONNECTIONS);
            continue;
        };
        // Nagle off: small answers (ZTP JSON, scripts) must not wait for an ACK.
        let _ = stream.set_nodelay(true);
        let held = Held { slot, _counted: lane.mover().count_here(), mover: lane.mover().clone() };
        let (app, router) = (app.clone(), router.clone());
        if sendfile {
            open.spawn(connection(app, router, stream, peer, limits, held, false));
        } else {
            open.spawn(async move {
                let _held = held;
                hand_off(router, stream, peer, Bytes::new(), limits).await;
            });
        }
    }
    drop(listener);
    open.close();
    tracing::info!(connections = open.len(), "no longer accepting connections; letting the open ones end");
    if tokio::time::timeout(drain, open.wait()).await.is_err() {
        tracing::warn!(
            connections = open.len(),
            "stopping with connections still open (drain limit reached)"
        );
    }
    Ok(())
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted
    ) || matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// What a connection holds while it is open: its places in the counts, and the way to another
/// worker.
struct Held {
    slot: SourceSlot,
    /// Given back when dropped: never read.
    _counted: Counted,
    mover: Mover,
}

/// One connection: fast-path requests for as long as they come, then hyper for the rest. Between
/// two requests it may move to a less busy worker ([`super::affinity`]). `kept_alive`: it has
/// answered a request already (on another worker).
async fn connection(
    app: AppState,
    router: Router,
    mut stream: TcpStream,
    peer: SocketAddr,
    limits: Limits,
    held: Held,
    kept_alive: bool,
) {
    let mut buf = BytesMut::with_capacity(4096);
    let mut first = !kept_alive;
    let mut deadline = Deadline::new(tokio::time::Instant::now() + limits.header_timeout);
    let mut tick_seen = 0;
    loop {
        // A new connection has `header_timeout` for its whole first head; a kept-alive one may
        // idle before its next.
        let first_byte = if first { limits.header_timeout } else { limits.idle_timeout };
        first = false;
        let (head_len, request) =
            match read_head(&mut stream, &mut buf, &mut deadline, first_byte, limits.header_timeout).await {
                Ok(Some(read)) => read,
                Ok(None) => return,
                // Too long, malformed or not HTTP/1: hyper answers it (or closes).
                Err(Unread::ToHyper) => break,
                Err(Unread::Gone) => return,
            };
        let Some(request) = request else { break };
        // Where this request arrived, looked at once a tick, before the answer: its client's
        // acknowledgements of the answer may arrive elsewhere (over loopback, on this CPU).
        let arrived_on = (held.mover.ticked(&mut tick_seen))
            .then(|| socket2::SockRef::from(&stream).cpu_affinity().ok())
            .flatten();
        match answer(&app, &mut stream, request.in_head(&buf), peer, limits.send_timeout).await {
            Answered::Done { keep_alive: true } => buf.advance(head_len),
            Answered::Done { keep_alive: false } | Answered::Broken => return,
            Answered::NotMine => break,
        }
        if buf.is_empty()
            && let Some((worker, counted)) = held.mover.take_move(arrived_on)
        {
            if let Ok(stream) = stream.into_std() {
                let Held { slot, mover, .. } = held;
                mover.hand(worker, Handed { stream, peer, kept_alive: true, slot, counted });
            }
            return;
        }
    }
    let _held = held;
    hand_off(router, stream, peer, buf.freeze(), limits).await;
}

enum Unread {
    /// Give the connection (and what was read) to hyper.
    ToHyper,
    /// The client went away or idled out.
    Gone,
}

/// Reads until `buf` holds a complete request head; returns its length, and the request when the
/// fast path may answer it (parsed once, here). `Ok(None)`: the client closed (or idled out)
/// between requests. The first byte must come within `first_byte`, the
/// whole head within `header` of it (the first request's head: within `header` of the start).
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    deadline: &mut Deadline,
    first_byte: Duration,
    header: Duration,
) -> Result<Option<(usize, Option<FastRequest>)>, Unread> {
    deadline.set(tokio::time::Instant::now() + first_byte);
    loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(buf) {
                Ok(httparse::Status::Complete(len)) => return Ok(Some((len, FastRequest::of(&req, buf)))),
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
                _ => return Err(Unread::ToHyper),
            }
        }
        let started = !buf.is_empty();
        buf.reserve(4096);
        match deadline.within(stream.read_buf(buf)).await {
            Some(Ok(0)) if buf.is_empty() => return Ok(None),
            None if buf.is_empty() => return Ok(None),
            Some(Ok(0)) | Some(Err(_)) | None => return Err(Unread::Gone),
            Some(Ok(_)) if !started => deadline.set_earlier(tokio::time::Instant::now() + header),
            Some(Ok(_)) => {}
        }
    }
}

/// A connection's read deadline, kept with one timer that moves lazily (as nginx's timers do,
/// `NGX_TIMER_LAZY_DELAY`): a kept-alive connection's deadline moves later with every request,
/// and re-arming a timer for each (a timer-wheel insert and removal per request) cost more than
/// parsing the request. A later deadline leaves the timer where it is; when it fires before the
/// deadline, it is armed again for the deadline. Only an earlier deadline re-arms it at once.
struct Deadline {
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    at: tokio::time::Instant,
}

impl Deadline {
    fn new(at: tokio::time::Instant) -> Self {
        Self { timer: Box::pin(tokio::time::sleep_until(at)), at }
    }

    /// Moves the deadline to `at`, later or earlier.
    fn set(&mut self, at: tokio::time::Instant) {
        self.at = at;
        if at < self.timer.deadline() {
            self.timer.as_mut().reset(at);
        }
    }

    /// Moves the deadline to `at` if that is earlier.
    fn set_earlier(&mut self, at: tokio::time::Instant) {
        self.set(at.min(self.at));
    }

    /// `future`'s output, or `None` once the deadline has passed.
    async fn within<F: std::future::Future>(&mut self, future: F) -> Option<F::Output> {
        let mut future = std::pin::pin!(future);
        loop {
            tokio::select! {
                biased;
                out = &mut future => return Some(out),
                () = &mut self.timer => {
                    if tokio::time::Instant::now() >= self.at {
                        return None;
                    }
                    self.timer.as_mut().reset(self.at);
                }
            }
        }
    }
}

/// Headers the fast path reads of a head (a switch sends a dozen); a request with more goes to
/// hyper.
const FAST_HEADERS: usize = 24;

/// Where a piece of a head lies in it (a head is at most [`MAX_HEAD`] bytes).
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u16,
    end: u16,
}

impl Span {
    /// The place of `part`, a slice of `head` (as httparse hands them out).
    fn of(head: &[u8], part: &[u8]) -> Option<Self> {
        let start = (part.as_ptr() as usize).checked_sub(head.as_ptr() as usize)?;
        let end = start + part.len();
        (end <= head.len()).then_some(())?;
        Some(Self { start: u16::try_from(start).ok()?, end: u16::try_from(end).ok()? })
    }

    fn in_head(self, head: &[u8]) -> &[u8] {
        head.get(usize::from(self.start)..usize::from(self.end)).unwrap_or_default()
    }
}

/// A request head the fast path may answer: `GET` or `HEAD`, HTTP/1.x, no body, no upgrade, a
/// plain path. Its path and headers are places in the head it was parsed from, read through
/// [`Head`]: nothing of it is copied (an owned `HeaderMap` and `Uri` cost a tenth of a ZTP JSON
/// answer, more for a switch's dozen headers).
pub(crate) struct FastRequest {
    pub(crate) method: Method,
    /// The path, without the query string.
    path: Span,
    /// Each header's name and value, as sent.
    headers: [(Span, Span); FAST_HEADERS],
    count: usize,
    pub(crate) keep_alive: bool,
}

impl FastRequest {
    /// The request of `head` (one complete head), if the fast path may answer it.
    pub(crate) fn parse(head: &[u8]) -> Option<Self> {
        let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut raw);
        req.parse(head).ok()?.is_complete().then_some(())?;
        Self::of(&req, head)
    }

    /// The request of a complete head, parsed from `head`.
    fn of(req: &httparse::Request<'_, '_>, head: &[u8]) -> Option<Self> {
        let method = match req.method? {
            "GET" => Method::GET,
            "HEAD" => Method::HEAD,
            _ => return None,
        };
        let version = req.version?;
        let path = plain_path(req.path?)?;
        if req.headers.len() > FAST_HEADERS {
            return None;
        }
        // No body, unambiguously: no Transfer-Encoding, at most one Content-Length, exactly `0`.
        // Anything else (two lengths, a length with an encoding, `+0`, `0, 0`) is hyper's to
        // accept or refuse with 400, never a head whose body this loop would read as the next
        // request. (httparse admits the names and values `HeaderName` and `HeaderValue` do.)
        let (mut lengths, mut zero_length, mut close) = (0, true, false);
        let mut headers = [(Span::default(), Span::default()); FAST_HEADERS];
        for (h, slot) in req.headers.iter().zip(headers.iter_mut()) {
            let (name, value) = (h.name.as_bytes(), h.value);
            if name.eq_ignore_ascii_case(b"content-length") {
                lengths += 1;
                zero_length &= value == b"0";
            } else if [&b"transfer-encoding"[..], b"upgrade", b"expect"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n))
            {
                return None;
            } else if name.eq_ignore_ascii_case(b"connection") {
                let tokens = header_text(value).map(|v| v.split(','));
                close |= tokens.is_some_and(|mut t| t.any(|t| t.trim().eq_ignore_ascii_case("close")));
            }
            *slot = (Span::of(head, name)?, Span::of(head, value)?);
        }
        if lengths > 1 || !zero_length {
            return None;
        }
        // HTTP/1.0 gets one answer per connection (keep-alive there is opt-in; not worth it).
        Some(Self {
            method,
            path: Span::of(head, path.as_bytes())?,
            headers,
            count: req.headers.len(),
            keep_alive: version == 1 && !close,
        })
    }

    /// This request with `head`, the bytes it was parsed from.
    pub(crate) fn in_head<'a>(&'a self, head: &'a [u8]) -> Head<'a> {
        // ASCII by [`plain_path`].
        let path = std::str::from_utf8(self.path.in_head(head)).unwrap_or_default();
        Head { bytes: head, request: self, path }
    }
}

/// The path of an origin-form request target (`/…`, then an optional `?query`) made only of the
/// characters RFC 3986 allows there unescaped (and `%`): the path hyper and the router see, the
/// target before its `?`. Any other target (absolute-form, `*`, a fragment, spaces or non-ASCII
/// bytes hyper may take or refuse) is hyper's to answer.
fn plain_path(target: &str) -> Option<&str> {
    (target.starts_with('/') && target.bytes().all(|b| TARGET_PLAIN[usize::from(b)])).then_some(())?;
    Some(target.split_once('?').map_or(target, |(path, _)| path))
}

/// The bytes of a plain target ([`plain_path`]): RFC 3986's unreserved characters and
/// sub-delimiters, `:`, `@`, `/`, `?` and `%`.
static TARGET_PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 128 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let others = b"-._~!$&'()*+,;=:@%/?";
    let mut i = 0;
    while i < others.len() {
        table[others[i] as usize] = true;
        i += 1;
    }
    table
};

/// A [`FastRequest`] read in the head it was parsed from.
#[derive(Clone, Copy)]
pub(crate) struct Head<'a> {
    bytes: &'a [u8],
    request: &'a FastRequest,
    path: &'a str,
}

impl<'a> Head<'a> {
    pub(crate) fn method(&self) -> &'a Method {
        &self.request.method
    }

    pub(crate) fn keep_alive(&self) -> bool {
        self.request.keep_alive
    }

    /// The path, without the query string.
    pub(crate) fn path(&self) -> &'a str {
        self.path
    }

    /// The headers as a map (what choosing and planning an image read).
    pub(crate) fn header_map(&self) -> Option<HeaderMap> {
        let mut map = HeaderMap::with_capacity(self.request.count);
        for (name, value) in self.each() {
            map.append(HeaderName::from_bytes(name).ok()?, HeaderValue::from_bytes(value).ok()?);
        }
        Some(map)
    }
}

impl SentHeaders for Head<'_> {
    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let sent = self.request.headers.get(..self.request.count).unwrap_or_default();
        sent.iter().map(|(name, value)| (name.in_head(self.bytes), value.in_head(self.bytes)))
    }

    fn first(&self, name: &str) -> Option<&[u8]> {
        self.each().find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| v)
    }
}

enum Answered {
    /// Answered here; the connection may carry another request when `keep_alive`.
    Done { keep_alive: bool },
    /// Failed half way (the client left, or the file shrank): close.
    Broken,
    /// Not a fast-path answer: nothing was written, hyper takes over.
    NotMine,
}

/// Answers `request` on the fast path if it is a plain image download from a directory store or
/// a device's ZTP JSON.
async fn answer(
    app: &AppState,
    stream: &mut TcpStream,
    request: Head<'_>,
    peer: SocketAddr,
    send_timeout: Duration,
) -> Answered {
    if !app.device_networks.allows(peer.ip()) {
        return Answered::NotMine; // the router refuses it, and logs it
    }
    match DeviceRoute::parse(request.path()) {
        Some(DeviceRoute::ZtpJson { family, serial }) => {
            answer_ztp_json(app, stream, request, peer, (family, serial), send_timeout).await
        }
        // Boxed: an image answer's future (choosing, sendfile) is many times a ZTP JSON's, and
        // unboxed every request of the connection would move one that size.
        Some(route) => match ImageRequest::of_route(route) {
            Some(image) => Box::pin(answer_image(app, stream, request, &image, peer, send_timeout)).await,
            None => Answered::NotMine,
        },
        None => Answered::NotMine,
    }
}

/// A ZTP JSON that renders (or is cached) for this device, on `GET`; anything else (`HEAD`, an
/// unknown device, a render error) is the router's.
async fn answer_ztp_json(
    app: &AppState,
    stream: &mut TcpStream,
    request: Head<'_>,
    peer: SocketAddr,
    (family, serial): (Family, Option<&str>),
    send_timeout: Duration,
) -> Answered {
    let started = Instant::now();
    if request.method() != Method::GET {
        return Answered::NotMine;
    }
    let Ok(ztp_json::ZtpAnswer { body, device }) = ztp_json::answer(app, family, &request, serial) else {
        return Answered::NotMine;
    };
    // The head as `head` writes it, from parts: one `writev`, no copies.
    let mut length = itoa::Buffer::new();
    let parts = |date: &[u8]| {
        let length = length.format(body.len()).as_bytes();
        write_now(
            stream,
            [&ZTP_JSON_HEAD, length, b"\r\ndate: ", date, end_of_head(request.keep_alive()), &body],
        )
    };
    let result = match with_http_date(parts) {
        Ok(rest) => write_rest(stream, rest, send_timeout).await,
        Err(e) => Err(e),
    };
    let sent = if result.is_ok() { body.len() as u64 } else { 0 };
    let outcome = device.as_ref().map(|d| d.outcome(Stage::ConfigServed));
    // SONiC's chain document is for a device that named no serial number: known by its request.
    let computed;
    let identity = match &device {
        Some(device) => &device.id,
        None => {
            computed = request_identity(&request, request.path());
            &computed
        }
    };
    observe(app, &observed(&request, peer, StatusCode::OK, sent, started, outcome.as_ref(), identity));
    finish(result, request, peer, sent)
}

/// A plain image download from a directory store, answered `200` or `206` with `sendfile`.
async fn answer_image(
    app: &AppState,
    stream: &mut TcpStream,
    request: Head<'_>,
    route: &ImageRequest,
    peer: SocketAddr,
    send_timeout: Duration,
) -> Answered {
    let started = Instant::now();
    let Some(headers) = request.header_map() else { return Answered::NotMine };
    let asker = Asker { method: request.method(), headers: &headers, source: Some(peer.ip()) };
    // A refusal (or any other error) is the router's to answer and log.
    let Ok(chosen) = choose(app, route, asker).await else { return Answered::NotMine };
    let Some(local) = app.server.store.filesystem_path(&chosen.path) else { return Answered::NotMine };
    let (sha256, size) = (&chosen.image.sha256, chosen.image.size);
    let Plan::Send { head: planned, bytes, body } =
        app.downloads.plan(request.method(), &headers, chosen.path.filename(), sha256, size)
    else {
        return Answered::NotMine;
    };
    let permit = if body {
        match app.downloads.try_permit() {
            Some(permit) => Some(permit),
            None => return Answered::NotMine, // hyper answers 503 + Retry-After
        }
    } else {
        None
    };
    // The file must be the manifest's: the same size, or the router's path reports the problem.
    let file = match std::fs::File::open(&local) {
        Ok(f) if f.metadata().is_ok_and(|m| m.is_file() && m.len() == size) => f,
        _ => return Answered::NotMine,
    };

    let status = planned.status();
    let out = head(status, planned.headers().iter(), request.keep_alive());
    // Corked, the head and the first bytes of the file leave in full segments.
    sys::set_cork(stream.as_fd(), body);
    let mut sent = 0;
    let result = async {
        write_within(stream, &out, send_timeout).await?;
        if body {
            sys::advise_sequential(file.as_fd(), &bytes);
            sendfile_range(stream, &file, bytes.clone(), send_timeout, &mut sent).await?;
        }
        io::Result::Ok(())
    }
    .await;
    sys::set_cork(stream.as_fd(), false);
    drop(permit);
    if let Some(ticket) = &chosen.ticket
        && result.is_ok()
        && status == StatusCode::OK
        && sent == size
    {
        app.passes.served(ticket, &chosen.image, Instant::now());
    }

    // Recorded when the head went out, as the router does.
    let outcome = chosen.device.as_ref().filter(|_| body).map(|d| d.outcome(Stage::ImageServed));
    let identity = request_identity(&request, request.path());
    observe(app, &observed(&request, peer, status, sent, started, outcome.as_ref(), &identity));
    finish(result, request, peer, sent)
}

thread_local! {
    /// The second of the last `date` header written on this thread, and its text (formatted once
    /// per second, as nginx does).
    static HTTP_DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

/// `f` of the `date` header's value now.
fn with_http_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    HTTP_DATE.with(|cached| {
        let mut cached = cached.borrow_mut();
        let now = SystemTime::now();
        let second = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if cached.0 != second {
            *cached = (second, httpdate::fmt_http_date(now));
        }
        f(cached.1.as_bytes())
    })
}

/// The end of a head after the `date` header's value.
fn end_of_head(keep_alive: bool) -> &'static [u8] {
    if keep_alive { b"\r\n\r\n" } else { b"\r\nconnection: close\r\n\r\n" }
}

/// The head of a ZTP JSON answer up to its `content-length` value: what [`head`] writes before it
/// for the headers of [`rendered_headers`].
static ZTP_JSON_HEAD: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let [(type_name, type_value), (cache_name, cache_value)] =
        rendered_headers(ztp_json::ZtpAnswer::CONTENT_TYPE);
    let mut out =
        head_start(StatusCode::OK, [(&type_name, &type_value), (&cache_name, &cache_value)].into_iter());
    out.extend_from_slice(b"content-length: ");
    out
});

/// A response head: the status line, `headers`, `date`, and `connection: close` unless kept alive.
fn head<'h>(
    status: StatusCode,
    headers: impl Iterator<Item = (&'h HeaderName, &'h HeaderValue)>,
    keep_alive: bool,
) -> Vec<u8> {
    let mut out = head_start(status, headers);
    out.extend_from_slice(b"date: ");
    with_http_date(|date| out.extend_from_slice(date));
    out.extend_from_slice(end_of_head(keep_alive));
    out
}

/// The status line and `headers` of a head.
fn head_start<'h>(
    status: StatusCode,
    headers: impl Iterator<Item = (&'h HeaderName, &'h HeaderValue)>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// What [`observe`] records of a fast-path answer.
fn observed<'a>(
    request: &'a Head<'a>,
    peer: SocketAddr,
    status: StatusCode,
    bytes: u64,
    started: Instant,
    outcome: Option<&'a DeviceOutcome<'a>>,
    identity: &'a DeviceIdentity,
) -> Observed<'a> {
    Observed {
        headers: request,
        source: Some(peer.ip()),
        method: request.method(),
        path: request.path(),
        status: status.as_u16(),
        bytes,
        started,
        outcome,
        step: None,
        identity,
    }
}

/// How the connection goes on after an answer was (partly) written.
fn finish(result: io::Result<()>, request: Head<'_>, peer: SocketAddr, sent: u64) -> Answered {
    match result {
        Ok(()) => Answered::Done { keep_alive: request.keep_alive() },
        Err(e) => {
            tracing::debug!(%peer, path = request.path(), sent, error = %e, "answer ended early");
            Answered::Broken
        }
    }
}

/// Writes `out` to `stream`; fails with `TimedOut` when the client takes none of it for
/// `stall` (its answer, and any download slot, are then given up). A timer is armed only when
/// the socket's buffer is full: an answer that fits (nearly every one) is written at once.
async fn write_within(stream: &TcpStream, out: &[u8], stall: Duration) -> io::Result<()> {
    let rest = write_now(stream, [out])?;
    write_rest(stream, rest, stall).await
}

/// Writes `parts` with one `writev` (more only if the socket takes part of them), without waiting;
/// returns what the socket did not take (empty, and not allocated: all of it), for [`write_rest`].
fn write_now<const N: usize>(stream: &TcpStream, parts: [&[u8]; N]) -> io::Result<Vec<u8>> {
    let mut slices = parts.map(io::IoSlice::new);
    let mut left = &mut slices[..];
    while !left.is_empty() {
        match stream.try_write_vectored(left) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut left, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(left.iter().flat_map(|s| s.iter().copied()).collect())
}

/// Writes what [`write_now`] left, waiting for room in the socket's buffer at most `stall` each
/// time (the only place a write arms a timer).
async fn write_rest(stream: &TcpStream, mut rest: Vec<u8>, stall: Duration) -> io::Result<()> {
    while !rest.is_empty() {
        match tokio::time::timeout(stall, stream.writable()).await {
            Ok(ready) => ready?,
            Err(_) => return Err(stalled()),
        }
        rest = write_now(stream, [&rest])?;
    }
    Ok(())
}

fn stalled() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the client took no bytes")
}

/// Sends `bytes` of `file` on `stream`, counting into `sent`; fails with `TimedOut` when the
/// client takes no byte for `stall`.
async fn sendfile_range(
    stream: &TcpStream,
    file: &std::fs::File,
    bytes: std::ops::Range<u64>,
    stall: Duration,
    sent: &mut u64,
) -> io::Result<()> {
    let mut offset =
        libc::off_t::try_from(bytes.start).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let end = libc::off_t::try_from(bytes.end).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // The time of the last byte taken; a timer is armed only while the socket's buffer is full.
    let mut progress = tokio::time::Instant::now();
    while offset < end {
        let want = usize::try_from(end - offset).unwrap_or(CHUNK).min(CHUNK);
        let result = stream
            .try_io(Interest::WRITABLE, || sys::sendfile(stream.as_fd(), file.as_fd(), &mut offset, want));
        match result {
            // The file ended before the manifest said it would: never send made-up bytes.
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file is shorter than its manifest entry",
                ));
            }
            Ok(n) => {
                *sent += n;
                progress = tokio::time::Instant::now();
                tokio::task::yield_now().await;
            }
            // The buffer is full (try_io cleared the readiness): wait for room, under the stall limit.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match tokio::time::timeout_at(progress + stall, stream.writable()).await {
                    Ok(ready) => ready?,
                    Err(_) => return Err(stalled()),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Serves the rest of the connection with hyper and the axum router; `read` holds bytes already
/// read from it (they are replayed first). hyper gets a timer, so that its header-read timeout
/// holds (for every head, kept-alive ones too); [`TimedIo`] closes idle and stalled connections.
async fn hand_off(router: Router, stream: TcpStream, peer: SocketAddr, read: Bytes, limits: Limits) {
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request)
    });
    let io = TokioIo::new(TimedIo::new(read, stream, &limits));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new());
    if let Err(e) = builder.serve_connection_with_upgrades(io, service).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header;

    /// The ZTP JSON head written from parts is the head [`head`] writes for the router's headers.
    #[test]
    fn the_ztp_json_head_from_parts_is_the_whole_head() {
        let [(type_name, type_value), (cache_name, cache_value)] =
            rendered_headers(ztp_json::ZtpAnswer::CONTENT_TYPE);
        let length = HeaderValue::from(279);
        let headers =
            [(&type_name, &type_value), (&cache_name, &cache_value), (&header::CONTENT_LENGTH, &length)];
        for keep_alive in [true, false] {
            // Tried again if the date's second turned between the two.
            let both = || {
                let whole = head(StatusCode::OK, headers.into_iter(), keep_alive);
                let parts = with_http_date(|date| {
                    [&ZTP_JSON_HEAD[..], b"279", b"\r\ndate: ", date, end_of_head(keep_alive)].concat()
                });
                (String::from_utf8_lossy(&whole).into_owned(), String::from_utf8_lossy(&parts).into_owned())
            };
            let (whole, parts) = (0..3).map(|_| both()).find(|(w, p)| w == p).unwrap_or_else(both);
            assert_eq!(parts, whole);
        }
    }

    #[test]
    fn only_plain_gets_and_heads_are_fast() {
        let parse = |head: &str| FastRequest::parse(head.as_bytes());
        let plain = "GET /onie?x=1 HTTP/1.1\r\nHost: a\r\nONIE-OPERATION: os-install\r\n\r\n";
        let r = parse(plain).expect("plain GET");
        let head = r.in_head(plain.as_bytes());
        assert_eq!((head.method(), head.path(), head.keep_alive()), (&Method::GET, "/onie", true));
        assert_eq!(head.first("onie-operation"), Some(&b"os-install"[..]));
        assert_eq!(head.first("host"), Some(&b"a"[..]));
        let map = head.header_map().expect("a map");
        assert_eq!(map.get("onie-operation").map(|v| v.as_bytes()), Some(&b"os-install"[..]));
        assert!(
            parse("HEAD /onie HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n")
                .is_some_and(|r| !r.keep_alive)
        );
        assert!(parse("GET /onie HTTP/1.0\r\n\r\n").is_some_and(|r| !r.keep_alive));
        assert!(parse("GET /onie HTTP/1.1\r\nContent-Length: 0\r\n\r\n").is_some());
        for not_fast in [
            "POST /onie HTTP/1.1\r\n\r\n",
            "GET /onie HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "GET /onie HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /onie HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "GET /onie HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET /onie HTTP/1.1\r\nHost: a\r\n",
            // Targets other than a plain origin-form path are hyper's to read.
            "GET http://h/onie HTTP/1.1\r\n\r\n",
            "GET * HTTP/1.1\r\n\r\n",
            "GET /onie#frag HTTP/1.1\r\n\r\n",
            "GET /images/\u{e9}/1/x HTTP/1.1\r\n\r\n",
            "GET /a\"b HTTP/1.1\r\n\r\n",
        ] {
            assert!(parse(not_fast).is_none(), "{not_fast:?}");
        }
        let many = format!("GET /onie HTTP/1.1\r\n{}\r\n", "X-A: 1\r\n".repeat(FAST_HEADERS + 1));
        assert!(parse(&many).is_none(), "more headers than the fast path keeps");
        let enough = format!("GET /onie HTTP/1.1\r\n{}\r\n", "X-A: 1\r\n".repeat(FAST_HEADERS));
        let r = parse(&enough).expect("as many headers as the fast path keeps");
        assert_eq!(r.in_head(enough.as_bytes()).header_map().map(|m| m.len()), Some(FAST_HEADERS));
    }

    /// The fast path answers a head only when hyper would accept it as the same request: same
    /// method, path and headers. (Everything else goes to hyper, whose verdict it then is.)
    async fn assert_agrees_with_hyper(input: &[u8]) {
        let Some(fast) = FastRequest::parse(input) else { return };
        let hyper = crate::fuzzing::hyper_verdict(input).await;
        assert_eq!(
            crate::fuzzing::HeadVerdict::of(&fast, input),
            hyper,
            "the fast path took a head hyper sees otherwise: {:?}",
            String::from_utf8_lossy(input)
        );
    }

    /// Heads that once fooled, or could fool, a hand-written parser.
    const TRICKY: &[&str] = &[
        "GET /onie HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello",
        "GET /onie HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
        "GET /onie HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET /onie HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n",
        "GET /onie HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET /onie HTTP/1.1\r\nContent-Length: +0\r\n\r\n",
        "GET /onie HTTP/1.1\r\nContent-Length: 0, 0\r\n\r\n",
        "GET /onie HTTP/1.1\r\nContent-Length: 00\r\n\r\n",
        "GET /onie HTTP/1.1\r\nContent-Length : 0\r\n\r\n",
        "GET /onie HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        "GET /onie HTTP/1.1\r\nHost: a\r\n\tfolded\r\n\r\n",
        "GET /images/\u{e9}/1/x HTTP/1.1\r\n\r\n",
        "GET /onie#frag HTTP/1.1\r\n\r\n",
        "GET http://h/onie HTTP/1.1\r\n\r\n",
        "GET * HTTP/1.1\r\n\r\n",
        "GET /onie HTTP/1.1\nHost: a\n\n",
        "\r\nGET /onie HTTP/1.1\r\n\r\n",
        "GET  /onie HTTP/1.1\r\n\r\n",
        "GET /onie HTTP/1.1\r\nX: a\rb\r\n\r\n",
        "GET /onie HTTP/1.1\r\nX: \u{80}\r\n\r\n",
        "GET /onie HTTP/1.1\r\n: empty\r\n\r\n",
        "GET /onie HTTP/1.1\r\nX-Empty:\r\n\r\n",
        "GET /o%6eie?x=%zz HTTP/1.1\r\n\r\n",
    ];

    #[test]
    fn heads_with_a_body_or_two_lengths_are_not_fast() {
        for head in &TRICKY[..9] {
            let fast = FastRequest::parse(head.as_bytes());
            let plain_one =
                head.contains("Content-Length: 0\r\n\r\n") && head.matches("Content-Length").count() == 1;
            assert!(fast.is_none() || plain_one, "{head:?}");
        }
    }

    #[tokio::test]
    async fn tricky_heads_get_hyper_s_verdict() {
        for head in TRICKY {
            assert_agrees_with_hyper(head.as_bytes()).await;
        }
    }

    /// A small deterministic generator (xorshift64*), so a failure names a seed that replays it.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[self.below(from.len())]
        }
    }

    /// A head built from pieces that matter to framing, then sometimes mutated byte by byte.
    fn generated_head(rng: &mut Rng) -> Vec<u8> {
        const METHODS: &[&str] = &["GET", "GET", "GET", "HEAD", "HEAD", "POST", "get", "GET ", "CONNECT"];
        const TARGETS: &[&str] = &[
            "/onie",
            "/images/nos/1/nos.bin",
            "/nvos/SN1/ztp.json?x=1",
            "/a#b",
            "/\u{e9}",
            "http://h/onie",
            "*",
            "/%2e%2e/x",
            "//x",
            "/a?b#c",
        ];
        const VERSIONS: &[&str] = &[
            "HTTP/1.1",
            "HTTP/1.1",
            "HTTP/1.1",
            "HTTP/1.0",
            "HTTP/1.2",
            "HTTP/2.0",
            "http/1.1",
            "HTTP/1.1 ",
        ];
        const HEADERS: &[&str] = &[
            "Host: x",
            "Host: x",
            "User-Agent: Wget",
            "Accept: */*",
            "Connection: keep-alive",
            "Content-Length: 0",
            "Content-Length: 00",
            "Content-Length: 5",
            "Content-Length: +0",
            "Content-Length:0",
            "Content-Length: 0 ",
            "Content-Length: 0, 0",
            "content-length: 0",
            "Content-Length : 0",
            "Transfer-Encoding: chunked",
            "Transfer-Encoding: identity",
            "transfer-encoding: gzip, chunked",
            "Connection: close",
            "Connection: keep-alive, Upgrade",
            "Upgrade: h2c",
            "Expect: 100-continue",
            " folded",
            "\tfolded",
            "X: a\rb",
            "X: \u{80}",
            "X:",
            ": v",
            "X-Y: z",
            "Range: bytes=0-1",
            "ONIE-SERIAL-NUMBER: SN1",
        ];
        const ENDS: &[&str] = &["\r\n", "\r\n", "\r\n", "\n"];
        let mut head = format!("{} {} {}", rng.pick(METHODS), rng.pick(TARGETS), rng.pick(VERSIONS));
        head.push_str(rng.pick(ENDS));
        for _ in 0..rng.below(5) {
            head.push_str(rng.pick(HEADERS));
            head.push_str(rng.pick(ENDS));
        }
        head.push_str(rng.pick(ENDS));
        let mut bytes = head.into_bytes();
        for _ in 0..rng.below(3) {
            if rng.below(2) == 0 {
                continue;
            }
            let at = rng.below(bytes.len());
            let byte = b" \t\r\n:,0-/?#\x00\x7f\x80aZ"[rng.below(16)];
            match rng.below(3) {
                0 => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ => {
                    bytes.remove(at);
                }
            }
        }
        bytes
    }

    #[tokio::test]
    async fn generated_heads_get_hyper_s_verdict() {
        let mut taken = 0;
        for seed in 1..=4000u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let head = generated_head(&mut rng);
            taken += usize::from(FastRequest::parse(&head).is_some());
            assert_agrees_with_hyper(&head).await;
        }
        // The generator must reach the fast path often enough to mean something.
        assert!(taken > 150, "only {taken} generated heads took the fast path");
    }
}
