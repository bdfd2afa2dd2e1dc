//! The server's connection edges, probed with raw sockets against the real `ztp-operator serve`:
//! slow and idle clients are disconnected, one source cannot take every connection, stalled
//! readers give their download slot back (HTTP/1 on both paths, HTTP/2 streams), and a request the fast path cannot answer exactly as
//! hyper would (two `Content-Length`s and the like) gets hyper's verdict.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

use crate::{
    support::binaries::serve,
    support::{
        lab::{Lab, lab},
        procs,
    },
};

/// Longer than any limit the tests set, far shorter than the defaults (30 s and more).
const BOUND: Duration = Duration::from_secs(15);

/// The lab's store served by `ztp-operator serve` with `flags`; the lab (which owns the store)
/// must outlive the server.
async fn server(test: &str, flags: &[&str]) -> (Lab, procs::Proc, SocketAddr) {
    let lab = lab(&format!("{test}-lab")).await;
    let data = lab.manifests.parent().expect("dir").join("d");
    let (proc, base) = serve(test, &[format!("--store-dir={}", data.display())], flags).await;
    let addr = base.trim_start_matches("http://").parse().expect("addr");
    (lab, proc, addr)
}

/// Reads one response (head and `Content-Length` body, none after a HEAD); its status.
async fn read_response(sock: &mut TcpStream, after_head: bool) -> u16 {
    let mut raw = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        let mut h = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut h);
        if let Ok(httparse::Status::Complete(head)) = r.parse(&raw) {
            let len: usize = r
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                .filter(|_| !after_head)
                .unwrap_or(0);
            let status = r.code.expect("status");
            while raw.len() < head + len {
                let n = sock.read(&mut chunk).await.expect("read body");
                assert!(n > 0, "body cut short");
                raw.extend_from_slice(&chunk[..n]);
            }
            return status;
        }
        let n = sock.read(&mut chunk).await.expect("read head");
        assert!(n > 0, "closed before a response: {:?}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&chunk[..n]);
    }
}

/// Whether the server closes `sock` within [`BOUND`] (reading and dropping whatever it sends).
async fn closed_within_bound(mut sock: TcpStream) -> bool {
    let mut sink = Vec::new();
    // EOF or a reset, in time.
    tokio::time::timeout(BOUND, sock.read_to_end(&mut sink)).await.is_ok()
}

/// Sends `head` a few bytes at a time, slowly, for at most [`BOUND`], while waiting for the
/// server to close: whether it did.
async fn slowloris_closed(sock: TcpStream, head: &'static [u8]) -> bool {
    let (mut read, mut write) = sock.into_split();
    let trickle = tokio::spawn(async move {
        for piece in head.chunks(2).cycle() {
            if write.write_all(piece).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(BOUND, read.read_to_end(&mut sink)).await.is_ok();
    trickle.abort();
    closed && !String::from_utf8_lossy(&sink).contains(" 200 ")
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
const IMAGE_HEAD: &[u8] = b"HEAD /images/nos/1/nos.bin HTTP/1.1\r\nHost: x\r\n\r\n";
/// A head that never ends: header lines forever.
const ENDLESS: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaa\r\n";

/// Every way a connection can hang on to the server, each closed within [`BOUND`]:
/// idle from the start, a slow first head, idle and slow after an answer of the router's, and
/// idle after an answer of the fast path's.
async fn every_hanging_connection_is_closed(addr: SocketAddr) {
    let connect = || async { TcpStream::connect(addr).await.expect("connect") };
    let answered = |first: &'static [u8]| async move {
        let mut sock = TcpStream::connect(addr).await.expect("connect");
        sock.write_all(first).await.expect("write");
        assert_eq!(read_response(&mut sock, first.starts_with(b"HEAD")).await, 200);
        sock
    };
    let (idle, slow, idle_after_router, slow_after_router, idle_after_fast) = tokio::join!(
        async { closed_within_bound(connect().await).await },
        async { slowloris_closed(connect().await, ENDLESS).await },
        async { closed_within_bound(answered(HEALTHZ).await).await },
        async { slowloris_closed(answered(HEALTHZ).await, ENDLESS).await },
        async { closed_within_bound(answered(IMAGE_HEAD).await).await },
    );
    assert!(idle, "an idle new connection stays open");
    assert!(slow, "a slow first head is waited for");
    assert!(idle_after_router, "an idle connection after the router's answer stays open");
    assert!(slow_after_router, "a slow second head after the router's answer is waited for");
    assert!(idle_after_fast, "an idle connection after a fast-path answer stays open");
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed() {
    let limits = ["--header-timeout-seconds=2", "--idle-timeout-seconds=2"];
    let (_lab, _fast, fast) = server("edges-timeouts-fast", &limits).await;
    every_hanging_connection_is_closed(fast).await;
    let (_lab, _router, router) =
        server("edges-timeouts-router", &[&limits[..], &["--no-sendfile"]].concat()).await;
    every_hanging_connection_is_closed(router).await;
}

/// A connection from `source` (a loopback address) to `addr`.
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(format!("{source}:0").parse().expect("source")).expect("bind");
    socket.connect(addr).await.expect("connect")
}

#[tokio::test]
async fn one_source_cannot_hold_every_connection() {
    let (_lab, _server, addr) = server("edges-per-source", &["--max-connections-per-source=3"]).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut sock = connect_from("127.0.0.1", addr).await;
        sock.write_all(HEALTHZ).await.expect("write");
        assert_eq!(read_response(&mut sock, false).await, 200);
        held.push(sock);
    }
    // The fourth from the same address: 503, then closed.
    let mut fourth = connect_from("127.0.0.1", addr).await;
    let mut answer = Vec::new();
    tokio::time::timeout(BOUND, fourth.read_to_end(&mut answer)).await.expect("closed").expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer:?}");
    // Another source is served.
    let mut other = connect_from("127.0.0.2", addr).await;
    other.write_all(HEALTHZ).await.expect("write");
    assert_eq!(read_response(&mut other, false).await, 200);
    // One closed: the first source may connect again.
    drop(held.pop());
    let deadline = Instant::now() + BOUND;
    loop {
        let mut again = connect_from("127.0.0.1", addr).await;
        let _ = again.write_all(HEALTHZ).await;
        let mut first = [0; 12];
        if again.read_exact(&mut first).await.is_ok() && &first == b"HTTP/1.1 200" {
            break;
        }
        assert!(Instant::now() < deadline, "a closed connection never gave its slot back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client that asks for the whole image, reads the status line (so the server has given it a
/// download slot) and then nothing more (a small receive buffer, so the server's writes stall at
/// once).
async fn stalled_download(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut sock = socket.connect(addr).await.expect("connect");
    sock.write_all(b"GET /images/nos/1/nos.bin HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    let mut status = [0; 12];
    tokio::time::timeout(BOUND, sock.read_exact(&mut status)).await.expect("status line").expect("read");
    assert_eq!(&status, b"HTTP/1.1 200", "the stalled reader got its download slot");
    sock
}

/// Status and body length of a whole-image GET.
async fn download(c: &reqwest::Client, addr: SocketAddr) -> (u16, usize) {
    let r = c.get(format!("http://{addr}/images/nos/1/nos.bin")).send().await.expect("get");
    let status = r.status().as_u16();
    (status, r.bytes().await.map_or(0, |b| b.len()))
}

async fn stalled_readers_give_their_slots_back(addr: SocketAddr, size: usize) {
    let _stalled = [stalled_download(addr).await, stalled_download(addr).await];
    let c = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    // Both slots taken (each stalled reader has its status line): a third client is refused.
    assert_eq!(download(&c, addr).await.0, 503, "the stalled readers hold both slots");
    // Past the send timeout, they are given up: a third client gets the image.
    let deadline = Instant::now() + BOUND;
    loop {
        let (status, len) = download(&c, addr).await;
        if status == 200 {
            assert_eq!(len, size);
            break;
        }
        assert_eq!(status, 503);
        assert!(Instant::now() < deadline, "stalled readers still hold every download slot");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn stalled_readers_free_their_download_slot() {
    // Each stalled reader holds its slot once it has its status line; the probe that follows must
    // come within the send timeout (the probe used to race the stalled requests themselves: a probe
    // served before the second stalled request took that slot, and the probes kept finding one free).
    let limits = ["--max-downloads=2", "--send-timeout-seconds=5"];
    let (lab, _fast, fast) = server("edges-stalled-fast", &limits).await;
    stalled_readers_give_their_slots_back(fast, lab.install.len()).await;
    let flags = [&limits[..], &["--no-sendfile"]].concat();
    let (lab, _router, router) = server("edges-stalled-router", &flags).await;
    stalled_readers_give_their_slots_back(router, lab.install.len()).await;
}

/// An HTTP/2 client (h2c, prior knowledge: the server's hyper detects the preface) that asks for
/// the whole image and never reads the body, so its stream's flow-control window runs out and the
/// server stops polling the body. The connection stays open (its task runs) and takes nothing.
async fn stalled_h2_download(addr: SocketAddr) -> (h2::client::SendRequest<bytes::Bytes>, h2::RecvStream) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.expect("h2 ready");
    let request =
        http::Request::get(format!("http://{addr}/images/nos/1/nos.bin")).body(()).expect("request");
    let (response, _) = client.send_request(request, true).expect("send");
    let response = response.await.expect("response head");
    assert_eq!(response.status(), 200, "the stalled HTTP/2 stream got its download slot");
    (client, response.into_body())
}

#[tokio::test]
async fn stalled_http2_streams_free_their_download_slot() {
    // The connection is idle far longer than the test waits: only the send timeout can act.
    let flags = ["--max-downloads=1", "--send-timeout-seconds=2", "--idle-timeout-seconds=600"];
    let (lab, _proc, addr) = server("edges-stalled-h2", &flags).await;
    let size = lab.install.len();
    let (_client, mut stalled) = stalled_h2_download(addr).await;
    let c = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    assert_eq!(download(&c, addr).await.0, 503, "the stalled stream holds the only slot");
    let deadline = Instant::now() + BOUND;
    loop {
        let (status, len) = download(&c, addr).await;
        if status == 200 {
            assert_eq!(len, size);
            break;
        }
        assert_eq!(status, 503);
        assert!(Instant::now() < deadline, "a stalled HTTP/2 stream still holds the download slot");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Reading again, the stalled client gets what was in flight, then a reset: never the rest.
    let mut received = 0;
    let ended = tokio::time::timeout(BOUND, async {
        loop {
            match stalled.data().await {
                Some(Ok(chunk)) => {
                    received += chunk.len();
                    let _ = stalled.flow_control().release_capacity(chunk.len());
                }
                Some(Err(e)) => return Some(e),
                None => return None,
            }
        }
    })
    .await
    .expect("the stalled stream ends");
    assert!(
        ended.is_some() && received < size,
        "the given-up stream went on: {received} of {size} bytes, {ended:?}"
    );
}

/// The statuses of the responses `raw` sends on one connection, in order (bodies skipped by
/// `Content-Length`), and whether the server then closed it.
async fn exchange(addr: SocketAddr, raw: &[u8]) -> (Vec<u16>, bool) {
    let mut sock = TcpStream::connect(addr).await.expect("connect");
    sock.write_all(raw).await.expect("write");
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut got)).await.is_ok();
    let mut statuses = Vec::new();
    let mut rest = &got[..];
    while !rest.is_empty() {
        let mut h = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut h);
        let Ok(httparse::Status::Complete(head)) = r.parse(rest) else { break };
        let len: usize = r
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
            .unwrap_or(0);
        statuses.push(r.code.expect("status"));
        rest = &rest[(head + len).min(rest.len())..];
    }
    (statuses, closed)
}

#[tokio::test]
async fn ambiguous_bodies_get_hyper_s_verdict_on_the_fast_path() {
    let (_lab, _fast, fast) = server("edges-framing-fast", &[]).await;
    let (_lab, _router, router) = server("edges-framing-router", &["--no-sendfile"]).await;
    let image = "GET /images/nos/1/nos.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-3\r\n";
    // The "body" is a whole second request: read as one, it would be smuggled past a proxy.
    let second = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let n = second.len();
    let smuggling = format!("{image}Content-Length: 0\r\nContent-Length: {n}\r\n\r\n{second}");
    let cases = [
        smuggling.clone(),
        format!("{image}Content-Length: {n}\r\nContent-Length: 0\r\n\r\n{second}"),
        format!("{image}Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{second}"),
        format!("{image}Transfer-Encoding: identity\r\n\r\n{second}"),
        format!("{image}Content-Length: +0\r\n\r\n{second}"),
        format!("{image}Content-Length: 0, {n}\r\n\r\n{second}"),
        format!("{image}Content-Length: 0\r\nContent-Length: 0\r\n\r\n{second}"),
        format!("{image}X-Folded: a\r\n b\r\n\r\n{second}"),
        format!("GET /images/nos/1/n\u{f6}s.bin HTTP/1.1\r\nHost: x\r\n\r\n{second}"),
        format!("{image}\r\n{second}"),
    ];
    for raw in &cases {
        let (on_fast, on_router) =
            (exchange(fast, raw.as_bytes()).await, exchange(router, raw.as_bytes()).await);
        assert_eq!(on_fast, on_router, "{raw:?}");
    }
    assert_eq!(exchange(fast, smuggling.as_bytes()).await, (vec![400], true), "two lengths: 400, closed");
}
