//! Connection workers: one thread per core, each with its own single-threaded runtime and its own
//! listening socket on the same address (`SO_REUSEPORT`), each running the connection loop of
//! [`super::conn`] — nginx's worker processes, as threads. With a worker per CPU, each keeps to its
//! CPU and answers the connections that CPU receives ([`super::affinity`]); otherwise the kernel's
//! hash spreads them.
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

use super::{
    affinity::{self, Lane},
    conn,
};

/// Connections the kernel queues per listening socket before they are accepted.
const BACKLOG: i32 = 1024;

/// How many workers serve: one per core this process may use (its CPU quota included).
pub fn default_count() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// The workers' listening sockets, and their lanes (the CPU each keeps to, see [`affinity`]).
pub struct Listeners {
    sockets: Vec<TcpListener>,
    lanes: Vec<Lane>,
}

impl Listeners {
    /// The CPU of each worker in order, when each keeps to one.
    pub fn cpus(&self) -> Option<&[usize]> {
        self.lanes.first()?.mover().cpus()
    }

    /// The open connections of each worker, in order (every lane reads the same counts).
    pub fn open(&self) -> affinity::Open {
        self.lanes[0].mover().open()
    }
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listeners").field("sockets", &self.sockets).field("cpus", &self.cpus()).finish()
    }
}

/// `count` listening sockets on `listen`, all bound before any worker starts (so an address in use
/// is an error here, not in a thread). Port 0 is resolved once: every socket takes that port. When
/// `count` is the number of CPUs this process may run on, worker `i` will keep to the `i`-th of
/// them and its socket takes the connections that CPU receives ([`affinity`]); with any other
/// count (`--workers`, or a CPU quota smaller than the cpuset) the kernel's hash spreads them.
///
/// Sockets with `SO_REUSEPORT` share a port with any other socket of the same user that sets it
/// too, another process's included. So the address is first bound without it: a server already
/// listening there (another ztp-operator included) makes this fail with "address in use" instead of
/// silently splitting the connections with it.
pub fn bind(listen: SocketAddr, count: NonZeroUsize) -> io::Result<Listeners> {
    let addr = {
        let probe = socket(listen)?;
        probe.bind(&listen.into())?;
        probe.local_addr()?.as_socket().unwrap_or(listen)
    };
    let cpus = affinity::allowed_cpus().ok().filter(|cpus| cpus.len() == count.get());
    let sockets = (0..count.get())
        .map(|i| {
            let socket = socket(addr)?;
            socket.set_reuse_port(true)?;
            if let Some(&cpu) = cpus.as_ref().and_then(|cpus| cpus.get(i)) {
                // `SO_INCOMING_CPU`; a kernel before 6.2 accepts it and keeps hashing.
                socket.set_cpu_affinity(cpu)?;
            }
            socket.bind(&addr.into())?;
            socket.listen(BACKLOG)?;
            Ok(socket.into())
        })
        .collect::<io::Result<_>>()?;
    let lanes = Lane::all(count.get(), cpus.as_deref());
    Ok(Listeners { sockets, lanes })
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
    listeners: Listeners,
    front: conn::Front,
    shutdown: impl std::future::Future<Output = ()>,
) -> io::Result<()> {
    let stop = CancellationToken::new();
    let worker = Worker { front, stop: stop.clone() };
    let (done, mut ended) = mpsc::unbounded_channel();
    let mut running = 0;
    let mut first_error = None;
    for (n, (listener, lane)) in listeners.sockets.into_iter().zip(listeners.lanes).enumerate() {
        let (worker, done) = (worker.clone(), done.clone());
        let thread = move || {
            // A worker that panicked still says it ended, so the others stop with it.
            let served =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.run(listener, lane)))
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
    fn run(self, listener: TcpListener, lane: Lane) -> io::Result<()> {
        if let Some(cpu) = lane.cpu()
            && let Err(e) = affinity::keep_to(cpu)
        {
            tracing::warn!(cpu, error = %e, "connection worker not kept to its CPU");
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let Self { front, stop } = self;
        let served = runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            conn::serve(listener, lane, front, stop.cancelled_owned()).await
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

    /// Sends `request` on a kept-alive `sock` and reads its whole answer (head and body).
    fn whole_answer(sock: &mut std::net::TcpStream, request: &str) -> String {
        use std::io::{Read, Write};
        sock.write_all(request.as_bytes()).expect("write");
        let mut answer = Vec::new();
        loop {
            let mut chunk = [0; 4096];
            let n = sock.read(&mut chunk).expect("read");
            assert!(n > 0, "closed before the whole answer: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&answer).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = (head.lines())
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned))
                    .and_then(|l| l.trim().parse::<usize>().ok())
                    .expect("a content-length");
                if body.len() >= length {
                    return text;
                }
            }
        }
    }

    /// From a client thread kept to `cpu` (so the packets of each connection arrive there):
    /// connects `connect` more connections, then asks every connection for a device's ZTP JSON,
    /// each answer a whole `200`.
    async fn ask_from(
        cpu: usize,
        addr: SocketAddr,
        mut socks: Vec<std::net::TcpStream>,
        connect: usize,
    ) -> Vec<std::net::TcpStream> {
        tokio::task::spawn_blocking(move || {
            affinity::keep_to(cpu).expect("a client thread on the CPU");
            socks.extend((0..connect).map(|_| std::net::TcpStream::connect(addr).expect("connect")));
            for (n, sock) in socks.iter_mut().enumerate() {
                sock.set_read_timeout(Some(Duration::from_secs(5))).expect("a read timeout");
                let request = "GET /nvos/SN-LEAF07/ztp.json HTTP/1.1\r\nhost: ztp.test\r\n\r\n";
                let answer = whole_answer(sock, request);
                assert!(
                    answer.starts_with("HTTP/1.1 200") && answer.trim_end().ends_with('}'),
                    "{n}: {answer}"
                );
            }
            socks
        })
        .await
        .expect("the client thread")
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

    /// Stops the server `start` started, and waits for every worker to end without a failure.
    async fn stop_and_join(
        stop: tokio::sync::oneshot::Sender<()>,
        server: tokio::task::JoinHandle<io::Result<()>>,
    ) {
        stop.send(()).expect("the server is running");
        let served = tokio::time::timeout(Duration::from_secs(10), server).await.expect("stops");
        served.expect("joined").expect("no worker failed");
    }

    /// Two workers serving the lab on a free port, until the sender is used or dropped.
    async fn start(
        lab: &Lab,
        limits: Limits,
    ) -> (SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<io::Result<()>>, affinity::Open)
    {
        let listeners = bind("127.0.0.1:0".parse().expect("addr"), TWO).expect("bind");
        let addr = listeners.sockets[0].local_addr().expect("addr");
        assert_eq!(listeners.sockets[1].local_addr().expect("addr"), addr, "port 0 is resolved once");
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
        let open = listeners.open();
        (addr, stop, tokio::spawn(run(listeners, front, shutdown)), open)
    }

    /// With a worker per CPU, each worker's socket takes the connections made on its CPU (the
    /// kernel's steering, not a hash: every CPU is asked, each must land on its own socket).
    #[test]
    fn with_a_worker_per_cpu_each_socket_takes_the_connections_its_cpu_receives() {
        let cpus = affinity::allowed_cpus().expect("the CPUs of this process");
        let count = NonZeroUsize::new(cpus.len()).expect("at least one CPU");
        let listeners = bind("127.0.0.1:0".parse().expect("addr"), count).expect("bind");
        assert_eq!(listeners.cpus(), Some(&cpus[..]), "a worker per CPU keeps to it");
        let addr = listeners.sockets[0].local_addr().expect("addr");
        for (k, &cpu) in cpus.iter().enumerate().take(16) {
            let client = std::thread::spawn(move || {
                affinity::keep_to(cpu).expect("a client thread on the CPU");
                std::net::TcpStream::connect(addr).expect("connect")
            })
            .join()
            .expect("the client thread");
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            let taker = loop {
                let takers: Vec<usize> = (listeners.sockets.iter().enumerate())
                    .filter_map(|(i, l)| l.accept().ok().map(|_| i))
                    .collect();
                if !takers.is_empty() || std::time::Instant::now() > deadline {
                    break takers;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            assert_eq!(taker, vec![k], "the connection made on CPU {cpu}");
            drop(client);
        }
        let fewer = bind("127.0.0.1:0".parse().expect("addr"), NonZeroUsize::MIN.saturating_add(cpus.len()))
            .expect("bind");
        assert_eq!(fewer.cpus(), None, "more workers than CPUs: none is kept to a CPU");
    }

    /// The two CPUs of a machine with two (these tests run a worker on each).
    fn two_cpus() -> [usize; 2] {
        let cpus = affinity::allowed_cpus().expect("cpus");
        cpus.try_into().expect("this test runs two workers, one per CPU: a machine with two CPUs")
    }

    /// Every connection made on one CPU (one receive queue) goes to that CPU's worker, which hands
    /// half of them to the other after two ticks, each between two requests; those whose packets
    /// still arrive on the first CPU come back until the skew allows no more. All of them, held
    /// open together, answer before, during and after the moves.
    #[tokio::test]
    async fn connections_made_on_one_cpu_past_the_skew_are_all_answered() {
        let lab = Lab::new().await;
        let (addr, stop, server, open) = start(&lab, Limits::default()).await;
        let [cpu, _] = two_cpus();
        let count = 4 * affinity::MAX_SKEW;
        let (mut socks, mut seen) = (Vec::new(), Vec::new());
        for round in 0..3 {
            socks = ask_from(cpu, addr, socks, if round == 0 { count } else { 0 }).await;
            seen.push(open.now());
            tokio::time::sleep(3 * affinity::TICK).await;
        }
        let back = count / 2 + affinity::MAX_SKEW / 2;
        assert_eq!(
            seen,
            [[count, 0], [count / 2, count / 2], [back, count - back]],
            "all on the first CPU's worker, then half moved, then back to the skew"
        );
        drop(socks);
        stop_and_join(stop, server).await;
    }

    /// Connections whose client moves to the other CPU follow it to that CPU's worker, within a
    /// tick of their next request: answers and their packets on one CPU again.
    #[tokio::test]
    async fn connections_follow_their_client_to_another_cpu() {
        let lab = Lab::new().await;
        let (addr, stop, server, open) = start(&lab, Limits::default()).await;
        let [first, second] = two_cpus();
        let count = affinity::MAX_SKEW;
        let mut socks = ask_from(first, addr, Vec::new(), count).await;
        let made = open.now();
        tokio::time::sleep(2 * affinity::TICK).await;
        socks = ask_from(second, addr, socks, 0).await;
        // Once more: each moved connection has answered on its new worker (counted there).
        socks = ask_from(second, addr, socks, 0).await;
        let followed = open.now();
        assert_eq!(
            (made, followed),
            (vec![count, 0], vec![0, count]),
            "made on the first CPU, then all on the second"
        );
        drop(socks);
        stop_and_join(stop, server).await;
    }

    #[tokio::test]
    async fn the_workers_answer_on_one_port_and_stop_with_the_server() {
        let lab = Lab::new().await;
        let (addr, stop, server, _) = start(&lab, Limits::default()).await;
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
        stop_and_join(stop, server).await;
        bind(addr, TWO).expect("every worker closed its socket: the address is free again");
    }

    #[tokio::test]
    async fn one_cap_per_source_holds_across_the_workers() {
        let lab = Lab::new().await;
        let (addr, stop, server, _) = start(&lab, Limits { max_per_source: 2, ..Limits::default() }).await;
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
