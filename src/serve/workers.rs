//! Connection workers: one thread per core, each with its own single-threaded runtime and its own
//! listening socket on the same address (`SO_REUSEPORT`; the kernel spreads new connections over
//! them), each running the connection loop of [`super::conn`] — nginx's worker processes, as
//! threads.
//!
//! A request on the fast path costs a few microseconds; on a work-stealing runtime a good part
//! of that went to the scheduler around it: a parked worker woken (a futex and a context switch)
//! to steal tasks that were about to run anyway, then sleeping again. A worker here sleeps only in
//! its own `epoll_wait` and runs every connection it accepted to the end, so a busy server stays
//! busy on each core instead of handing work back and forth. What is not a connection
//! (reloading the snapshot, writing Switch statuses, the controller) stays on the main runtime;
//! the workers share [`AppState`] with it.

use std::{
    io,
    net::{SocketAddr, TcpListener},
    num::NonZeroUsize,
    time::Duration,
};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::conn;

/// Connections the kernel queues per listening socket before they are accepted.
const BACKLOG: i32 = 1024;

/// How many workers serve: one per core this process may use (its CPU quota included).
pub fn default_count() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// `count` listening sockets on `listen`, all bound before any worker starts (so an address in use
/// is an error here, not in a thread). Port 0 is resolved once: every socket takes that port.
///
/// Sockets with `SO_REUSEPORT` share a port with any other socket of the same user that sets it
/// too, another process's included. So the address is first bound without it: a server already
/// listening there (another ztp-operator included) makes this fail with "address in use" instead of
/// silently splitting the connections with it.
pub fn bind(listen: SocketAddr, count: NonZeroUsize) -> io::Result<Vec<TcpListener>> {
    let addr = {
        let probe = socket(listen)?;
        probe.bind(&listen.into())?;
        probe.local_addr()?.as_socket().unwrap_or(listen)
    };
    (0..count.get())
        .map(|_| {
            let socket = socket(addr)?;
            socket.set_reuse_port(true)?;
            socket.bind(&addr.into())?;
            socket.listen(BACKLOG)?;
            Ok(socket.into())
        })
        .collect()
}

/// A non-blocking TCP socket for `addr` (`SO_REUSEADDR`: a restarted server binds again while its
/// old connections linger in `TIME_WAIT`).
fn socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Runs a worker per listener until `shutdown` resolves or one of them fails; then every worker
/// stops accepting and lets its open connections end (for at most [`conn::Front::drain`]). The
/// first error is returned.
pub async fn run(
    listeners: Vec<TcpListener>,
    front: conn::Front,
    shutdown: impl std::future::Future<Output = ()>,
) -> io::Result<()> {
    let stop = CancellationToken::new();
    let worker = Worker { front, stop: stop.clone() };
    let (done, mut ended) = mpsc::unbounded_channel();
    let mut running = 0;
    let mut first_error = None;
    for (n, listener) in listeners.into_iter().enumerate() {
        let (worker, done) = (worker.clone(), done.clone());
        let thread = move || {
            // A worker that panicked still says it ended, so the others stop with it.
            let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.run(listener)))
                .unwrap_or_else(|_| Err(io::Error::other(format!("connection worker {n} panicked"))));
            let _ = done.send(served);
        };
        match std::thread::Builder::new().name(format!("ztp-conn-{n}")).spawn(thread) {
            Ok(_) => running += 1,
            Err(e) => {
                first_error = Some(e);
                stop.cancel();
                break;
            }
        }
    }
    drop((worker, done));
    let mut shutdown = std::pin::pin!(shutdown);
    while running > 0 {
        let served = tokio::select! {
            served = ended.recv() => served,
            () = &mut shutdown, if !stop.is_cancelled() => {
                stop.cancel();
                continue;
            }
        };
        let Some(served) = served else { break };
        running -= 1;
        // One worker ending (its listener broke) stops them all: a server that accepts on some
        // of its sockets only would leave a share of the fleet unanswered.
        stop.cancel();
        if let Err(e) = served {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// What every worker takes: the server, and the signal to stop accepting.
#[derive(Clone)]
struct Worker {
    front: conn::Front,
    stop: CancellationToken,
}

impl Worker {
    /// The worker's thread: its runtime, and the connection loop on its listener.
    fn run(self, listener: TcpListener) -> io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let Self { front, stop } = self;
        let served = runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            conn::serve(listener, front, stop.cancelled_owned()).await
        });
        // Blocking work a connection started (an upload's writer) is not waited for past this.
        runtime.shutdown_timeout(Duration::from_secs(1));
        served
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
    };

    use super::*;
    use crate::serve::{
        connections::{Limits, PerSource},
        handler_tests::Lab,
    };

    const TWO: NonZeroUsize = NonZeroUsize::MIN.saturating_add(1);

    /// Sends `request` on `sock` and reads the answer's first 12 bytes (`HTTP/1.1 200`).
    async fn status(sock: &mut TcpStream, request: &str) -> String {
        sock.write_all(request.as_bytes()).await.expect("write");
        let mut line = [0; 12];
        sock.read_exact(&mut line).await.expect("an answer");
        String::from_utf8_lossy(&line).into_owned()
    }

    /// The whole answer to `GET path` on a new connection.
    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut sock = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nhost: ztp.test\r\nconnection: close\r\n\r\n");
        sock.write_all(request.as_bytes()).await.expect("write");
        let mut answer = String::new();
        sock.read_to_string(&mut answer).await.expect("read");
        answer
    }

    /// Two workers serving the lab on a free port, until the sender is used or dropped.
    async fn start(
        lab: &Lab,
        limits: Limits,
    ) -> (SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<io::Result<()>>) {
        let listeners = bind("127.0.0.1:0".parse().expect("addr"), TWO).expect("bind");
        let addr = listeners[0].local_addr().expect("addr");
        assert_eq!(listeners[1].local_addr().expect("addr"), addr, "port 0 is resolved once");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let front = conn::Front {
            app: lab.app.clone(),
            router: lab.router.clone(),
            sendfile: true,
            limits,
            per_source: PerSource::new(limits.max_per_source),
            drain: Duration::from_secs(5),
        };
        (addr, stop, tokio::spawn(run(listeners, front, shutdown)))
    }

    #[tokio::test]
    async fn the_workers_answer_on_one_port_and_stop_with_the_server() {
        let lab = Lab::new().await;
        let (addr, stop, server) = start(&lab, Limits::default()).await;
        let taken = bind(addr, NonZeroUsize::MIN).expect_err("a second server on the same address");
        assert_eq!(taken.kind(), io::ErrorKind::AddrInUse, "refused, not sharing the port: {taken}");
        // New connections, spread by the kernel over both sockets: each is answered, on the fast
        // path (ZTP JSON) and through the router (metrics).
        for _ in 0..16 {
            let answer = get(addr, "/nvos/SN-LEAF07/ztp.json").await;
            assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("\"ztp\""), "{answer}");
            let answer = get(addr, "/metrics").await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }
        stop.send(()).expect("the server is running");
        let served = tokio::time::timeout(Duration::from_secs(10), server).await.expect("stops");
        served.expect("joined").expect("no worker failed");
        bind(addr, TWO).expect("every worker closed its socket: the address is free again");
    }

    #[tokio::test]
    async fn one_cap_per_source_holds_across_the_workers() {
        let lab = Lab::new().await;
        let (addr, stop, server) = start(&lab, Limits { max_per_source: 2, ..Limits::default() }).await;
        let request = "GET /nvos/SN-LEAF07/ztp.json HTTP/1.1\r\nhost: ztp.test\r\n\r\n";
        let (mut held, mut statuses) = (Vec::new(), Vec::new());
        // Eight connections from one address, each kept open once answered: the kernel spreads
        // them over both workers, and still only two are served.
        for _ in 0..8 {
            let mut sock = TcpStream::connect(addr).await.expect("connect");
            statuses.push(status(&mut sock, request).await);
            held.push(sock);
        }
        let served = statuses.iter().filter(|s| *s == "HTTP/1.1 200").count();
        let refused = statuses.iter().filter(|s| *s == "HTTP/1.1 503").count();
        assert_eq!((served, refused), (2, 6), "{statuses:?}");
        drop((held, stop));
        server.await.expect("joined").expect("no worker failed");
    }
}
