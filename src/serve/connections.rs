//! What bounds a connection: how long a client may take to send a request head or sit idle, how
//! long a stalled reader may hold an answer, and how many connections one source address may
//! hold. [`TimedIo`] enforces the idle and send limits under hyper; the fast path
//! ([`super::conn`]) applies the same [`Limits`] to its own reads and writes.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::{Instant, Sleep},
};

/// How long clients may take, and how many connections one source may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A request head must be complete within this time of its first byte (of the connection
    /// opening, for the first request; on the router's connections, of the previous answer).
    pub header_timeout: Duration,
    /// A kept-alive connection on which no byte moves for this long is closed.
    pub idle_timeout: Duration,
    /// An answer whose bytes the client does not take for this long is abandoned (and its
    /// download slot freed).
    pub send_timeout: Duration,
    /// Connections one source address may hold at once (0: no limit).
    pub max_per_source: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            max_per_source: 1024,
        }
    }
}

/// Open connections per source address, capped.
#[derive(Debug, Default)]
pub struct PerSource {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerSource {
    /// At most `max` connections per source (0: no limit).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { max, open: Mutex::default() })
    }

    /// A slot for one more connection from `source`, unless it holds `max` already. The slot is
    /// given back when dropped.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Option<SourceSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(source).or_default();
        if self.max != 0 && *count >= self.max {
            return None;
        }
        *count += 1;
        Some(SourceSlot { of: self.clone(), source })
    }

    /// Connections `source` holds now.
    pub fn open(&self, source: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&source).copied().unwrap_or(0)
    }
}

/// One admitted connection (see [`PerSource::admit`]).
#[derive(Debug)]
pub struct SourceSlot {
    of: Arc<PerSource>,
    source: IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.of.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.source);
            }
        }
    }
}

/// Lets a repeated log line through at most once per `every`, counting the ones held back.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Self {
        Self { every, last: None, held_back: 0 }
    }

    /// `Some(n)`: log now, mentioning the `n` occurrences held back since the last line.
    /// `None`: hold this one back.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|last| now.saturating_duration_since(last) < self.every) {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

/// A connection as hyper sees it: bytes already read are replayed first; a read that waits with
/// no byte moving either way for [`Limits::idle_timeout`], or a write that waits for
/// [`Limits::send_timeout`], fails with `TimedOut` (hyper then closes the connection and drops
/// the answer, and any download slot with it).
pub struct TimedIo {
    read: Bytes,
    stream: TcpStream,
    idle: Duration,
    send: Duration,
    /// When a byte last moved either way.
    last_progress: Instant,
    /// Since when writes have been waiting for the client.
    blocked_since: Option<Instant>,
    read_timer: Pin<Box<Sleep>>,
    write_timer: Pin<Box<Sleep>>,
}

impl TimedIo {
    pub fn new(read: Bytes, stream: TcpStream, limits: &Limits) -> Self {
        let now = Instant::now();
        Self {
            read,
            stream,
            idle: limits.idle_timeout,
            send: limits.send_timeout,
            last_progress: now,
            blocked_since: None,
            read_timer: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
            write_timer: Box::pin(tokio::time::sleep_until(now + limits.send_timeout)),
        }
    }

    /// `Pending`, or a `TimedOut` error once `deadline` passed (`timer` wakes the task then).
    fn wait(
        timer: &mut Pin<Box<Sleep>>,
        deadline: Instant,
        cx: &mut Context<'_>,
        what: &str,
    ) -> io::Result<()> {
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(io::ErrorKind::TimedOut, what.to_owned())),
            Poll::Pending => Ok(()),
        }
    }

    fn wrote<T>(&mut self, polled: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => {
                let since = *self.blocked_since.get_or_insert_with(Instant::now);
                let deadline = since + self.send;
                match Self::wait(&mut self.write_timer, deadline, cx, "the client took no bytes") {
                    Ok(()) => Poll::Pending,
                    Err(e) => Poll::Ready(Err(e)),
                }
            }
            ready => {
                self.blocked_since = None;
                self.last_progress = Instant::now();
                ready
            }
        }
    }
}

impl AsyncRead for TimedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.read.is_empty() {
            let n = this.read.len().min(out.remaining());
            out.put_slice(&this.read[..n]);
            this.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut this.stream).poll_read(cx, out) {
            Poll::Pending => {
                let deadline = this.last_progress + this.idle;
                match Self::wait(&mut this.read_timer, deadline, cx, "the connection was idle") {
                    Ok(()) => Poll::Pending,
                    Err(e) => Poll::Ready(Err(e)),
                }
            }
            ready => {
                this.last_progress = Instant::now();
                ready
            }
        }
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, data);
        self.wrote(polled, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.wrote(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.wrote(polled, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn each_source_gets_its_own_cap() {
        let per = PerSource::new(2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip"));
        let first = per.admit(a).expect("1st");
        let _second = per.admit(a).expect("2nd");
        assert!(per.admit(a).is_none(), "the third from one source is refused");
        assert!(per.admit(b).is_some(), "another source is not");
        drop(first);
        assert_eq!(per.open(a), 1);
        assert!(per.admit(a).is_some(), "a closed connection gives its slot back");
        assert!(PerSource::new(0).admit(a).is_some_and(|_| true), "0: no limit");
    }

    #[test]
    fn a_throttled_line_counts_what_it_held_back() {
        let mut t = Throttle::new(Duration::from_secs(1));
        let start = Instant::now();
        assert_eq!(t.allow(start), Some(0));
        assert_eq!(t.allow(start + Duration::from_millis(10)), None);
        assert_eq!(t.allow(start + Duration::from_millis(900)), None);
        assert_eq!(t.allow(start + Duration::from_millis(1000)), Some(2));
        assert_eq!(t.allow(start + Duration::from_millis(1500)), None);
    }

    #[tokio::test]
    async fn bytes_read_ahead_are_replayed_before_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.expect("connect");
            c.write_all(b" world").await.expect("write");
        });
        let (stream, _) = listener.accept().await.expect("accept");
        let mut p = TimedIo::new(Bytes::from_static(b"hello"), stream, &Limits::default());
        let mut all = String::new();
        p.read_to_string(&mut all).await.expect("read");
        client.await.expect("client");
        assert_eq!(all, "hello world");
    }

    #[tokio::test]
    async fn an_idle_read_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (stream, _) = listener.accept().await.expect("accept");
        let limits = Limits { idle_timeout: Duration::from_millis(200), ..Limits::default() };
        let mut p = TimedIo::new(Bytes::new(), stream, &limits);
        let mut buf = [0; 8];
        let e = p.read(&mut buf).await.expect_err("times out");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
