//! A forwarder between a client under test and a real HTTP server (Nautobot's uWSGI), plain or
//! TLS-terminating, on loopback. It reads each request's head, so it can
//!
//! * log the requests (their targets) and count the bytes the server answered;
//! * rewrite a list's `limit=` smaller ([`Options::page_size`]): the server then pages a small
//!   fleet as it pages a large one (its own `next` links, its own counts);
//! * hold the first request a test names ([`Forwarder::hold`]) until the test has done something
//!   real meanwhile (stopped the server's web process), then forward it.
//!
//! Each connection carries one request: `Connection: close` is put in its head, so the server
//! closes it after its answer (ztp-operator's client opens one per request anyway). A server that
//! no longer listens closes the client's connection without an answer, as the server itself
//! would have refused it.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{oneshot, watch},
};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    },
};

/// Longest request head read (Nautobot's URLs with 50 ids are some 2 KiB).
const MAX_HEAD: usize = 64 * 1024;

/// How a [`Forwarder`] treats what passes.
#[derive(Default)]
pub struct Options {
    /// Terminate TLS with this certificate chain and key (PEM).
    pub tls: Option<(String, String)>,
    /// A request's `limit=N` larger than this is sent as this.
    pub page_size: Option<usize>,
}

/// The first request a predicate named, held until [`Held::release`] (or the `Held` is dropped).
struct Trap {
    matches: Box<dyn Fn(&str) -> bool + Send>,
    hit: oneshot::Sender<String>,
    release: watch::Receiver<bool>,
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<String>>,
    answered_bytes: AtomicU64,
    trap: Mutex<Option<Trap>>,
}

/// A running forwarder; it stops when dropped.
pub struct Forwarder {
    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// A request held by [`Forwarder::hold`].
pub struct Held {
    hit: Option<oneshot::Receiver<String>>,
    release: watch::Sender<bool>,
}

impl Held {
    /// Waits (at most `within`) until the request arrives; its target (path and query).
    pub async fn arrived(&mut self, within: Duration) -> String {
        let hit = self.hit.take().expect("arrived is awaited once");
        tokio::time::timeout(within, hit)
            .await
            .unwrap_or_else(|_| panic!("the held request did not come within {within:?}"))
            .expect("the forwarder stopped")
    }

    /// Forwards the held request (to a server that may no longer listen).
    pub fn release(&self) {
        let _ = self.release.send(true);
    }
}

impl Forwarder {
    /// Forwards `127.0.0.1:PORT` (a new port) to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str, options: Options) -> Forwarder {
        let upstream = upstream_addr(upstream);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind forwarder");
        let port = listener.local_addr().expect("local addr").port();
        let tls = options.tls.as_ref().map(|(chain, key)| acceptor(chain, key));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let shared = Arc::new(Shared::default());
        let task = {
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (shared, tls, limit) = (shared.clone(), tls.clone(), options.page_size);
                    tokio::spawn(async move {
                        match tls {
                            Some(tls) => {
                                // A client that refuses our certificate ends here.
                                if let Ok(stream) = tls.accept(stream).await {
                                    connection(stream, upstream, limit, &shared).await;
                                }
                            }
                            None => connection(stream, upstream, limit, &shared).await,
                        }
                    });
                }
            })
        };
        Forwarder { url: format!("{scheme}://127.0.0.1:{port}"), shared, task }
    }

    /// Holds the first request from now on whose target (path and query) `matches`.
    pub fn hold(&self, matches: impl Fn(&str) -> bool + Send + 'static) -> Held {
        let (hit_tx, hit_rx) = oneshot::channel();
        let (release_tx, release_rx) = watch::channel(false);
        *self.shared.trap.lock().expect("lock") =
            Some(Trap { matches: Box::new(matches), hit: hit_tx, release: release_rx });
        Held { hit: Some(hit_rx), release: release_tx }
    }

    /// The targets (path and query, as forwarded) of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().expect("lock").clone()
    }

    /// Bytes the server answered so far (heads and bodies).
    pub fn answered_bytes(&self) -> u64 {
        self.shared.answered_bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn upstream_addr(url: &str) -> SocketAddr {
    let rest = url.strip_prefix("http://").unwrap_or_else(|| panic!("{url}: an http:// upstream"));
    let host_port = rest.split('/').next().unwrap_or(rest);
    host_port.parse().unwrap_or_else(|e| panic!("{url}: not host:port ({e})"))
}

fn acceptor(chain: &str, key: &str) -> TlsAcceptor {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(chain.as_bytes()).collect::<Result<_, _>>().expect("certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key PEM");
    let config =
        ServerConfig::builder().with_no_client_auth().with_single_cert(chain, key).expect("TLS config");
    TlsAcceptor::from(Arc::new(config))
}

/// One connection: its request head read (and rewritten), held if a trap names it, then
/// forwarded; the answer copied back and counted.
async fn connection<S>(mut client: S, upstream: SocketAddr, limit: Option<usize>, shared: &Shared)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(4096);
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return;
        }
        let mut chunk = [0u8; 4096];
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let Ok(head) = std::str::from_utf8(&buf[..end]) else { return };
    let (head, target) = rewrite(head, limit);
    shared.requests.lock().expect("lock").push(target.clone());
    let release = {
        let mut trap = shared.trap.lock().expect("lock");
        match trap.take() {
            Some(t) if (t.matches)(&target) => {
                let _ = t.hit.send(target.clone());
                Some(t.release)
            }
            other => {
                *trap = other;
                None
            }
        }
    };
    if let Some(mut release) = release {
        let _ = release.wait_for(|go| *go).await;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
    if server.write_all(head.as_bytes()).await.is_err() || server.write_all(&buf[end..]).await.is_err() {
        return;
    }
    // The answer is counted as it passes (a read measured ends with its last byte, not with the
    // connection).
    let (mut from_client, mut to_client) = tokio::io::split(client);
    let (mut from_server, mut to_server) = server.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
        let _ = to_server.shutdown().await;
    };
    let down = async {
        let mut chunk = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = from_server.read(&mut chunk).await {
            if to_client.write_all(&chunk[..n]).await.is_err() {
                break;
            }
            shared.answered_bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
        let _ = to_client.shutdown().await;
    };
    tokio::join!(up, down);
}

/// The head with `limit=` cut to `limit` and `Connection: close`; the request's target.
fn rewrite(head: &str, limit: Option<usize>) -> (String, String) {
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.splitn(3, ' ');
    let (method, target, version) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let target = match (limit, target.split_once('?')) {
        (Some(max), Some((path, query))) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.strip_prefix("limit=").and_then(|v| v.parse::<usize>().ok()) {
                    Some(n) if n > max => format!("limit={max}"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        _ => target.to_owned(),
    };
    let mut out = format!("{method} {target} {version}\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    (out, target)
}
