//! Logging setup: `tracing` with an `EnvFilter` (`RUST_LOG`), text or JSON lines.
//!
//! A device request logs one line, so at tens of thousands of requests a second the way lines
//! reach the file matters: a `write(2)` per line, or a hand-off that wakes a writer thread per
//! line, costs more than the answer itself. Lines are formatted on the calling thread and
//! appended to a shared buffer; a writer thread writes the buffer out every 50 ms, or as soon as
//! 256 KiB are waiting. Nothing is dropped: past 8 MiB waiting the caller writes the buffer
//! itself. Dropping the [`LogGuard`] (the end of `main`) writes out the rest.

use std::{
    io::{self, IsTerminal, Write},
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    thread::JoinHandle,
    time::Duration,
};

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

pub mod access;
mod text;

/// The batched writer of a text log into a file or a pipe, for lines written without `tracing`
/// ([`access`]); unset for any other log.
static DIRECT_TEXT: std::sync::OnceLock<Batched> = std::sync::OnceLock::new();

fn direct_text() -> Option<&'static Shared> {
    DIRECT_TEXT.get().map(|b| &*b.0)
}

/// How long a line may wait in the buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Waiting bytes that wake the writer thread early.
const WAKE_AT: usize = 256 * 1024;
/// Waiting bytes past which the caller writes them out itself.
const WRITE_AT: usize = 8 * 1024 * 1024;

/// Installs the global subscriber. `json` selects one JSON object per line on stdout (for log
/// shippers); otherwise text lines on stderr, coloured only when stderr is a terminal (and then
/// by tracing-subscriber's own formatter; into a file or a pipe by [`text`]'s, the same bytes at a
/// fraction of the cost).
pub fn init(json: bool) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        let (writer, guard) = Batched::start(Box::new(io::stdout()));
        registry
            .with(fmt::layer().json().with_current_span(false).with_timer(CachedTime).with_writer(writer))
            .init();
        guard
    } else {
        let (writer, guard) = Batched::start(Box::new(io::stderr()));
        if io::stderr().is_terminal() {
            registry.with(fmt::layer().with_timer(CachedTime).with_writer(writer)).init();
        } else {
            let _ = DIRECT_TEXT.set(writer.clone());
            let layer = fmt::layer()
                .with_ansi(false)
                .event_format(text::TextLine::new(CachedTime))
                .fmt_fields(text::TextFields)
                .with_writer(writer);
            registry.with(layer).init();
        }
        guard
    }
}

/// The time of a log line as tracing-subscriber's default timer writes it (RFC 3339, UTC,
/// microseconds: `2026-11-30T05:10:44.907764Z`), with the calendar part formatted once per second
/// per thread, as nginx keeps its time strings: at a line per device request, turning seconds
/// into a date each time was a measurable part of the answer.
#[derive(Clone, Copy)]
struct CachedTime;

thread_local! {
    /// The second last formatted, and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

impl fmt::time::FormatTime for CachedTime {
    fn format_time(&self, w: &mut fmt::format::Writer<'_>) -> std::fmt::Result {
        now(w)
    }
}

/// Writes the time now as a log line starts with it.
fn now(w: &mut impl std::fmt::Write) -> std::fmt::Result {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    SECOND.with(|cached| write_time(w, now, &mut cached.borrow_mut()))
}

/// Writes `since_epoch` as RFC 3339 with microseconds, the calendar part taken from `cached` when
/// it is of the same second (and put there when not).
fn write_time(
    w: &mut impl std::fmt::Write,
    since_epoch: Duration,
    cached: &mut (u64, String),
) -> std::fmt::Result {
    let second = since_epoch.as_secs();
    if cached.0 != second {
        let at = i64::try_from(second).ok().and_then(|s| k8s_openapi::jiff::Timestamp::from_second(s).ok());
        cached.1 = at.map(|t| t.strftime("%Y-%m-%dT%H:%M:%S").to_string()).unwrap_or_default();
        cached.0 = second;
    }
    let mut digits = itoa::Buffer::new();
    let micros = digits.format(since_epoch.subsec_micros());
    w.write_str(&cached.1)?;
    w.write_char('.')?;
    w.write_str(&"000000"[micros.len().min(6)..])?;
    w.write_str(micros)?;
    w.write_char('Z')
}

struct Shared {
    /// Lines not yet written.
    pending: Mutex<Vec<u8>>,
    wake: Condvar,
    /// Where lines go; held while a batch is taken and written, so batches keep their order.
    sink: Mutex<Box<dyn Write + Send>>,
    closed: std::sync::atomic::AtomicBool,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Takes what is waiting and writes it out.
    fn write_out(&self) {
        let mut sink = lock(&self.sink);
        // The buffer left behind keeps its size: grown again from nothing, each batch was copied
        // over and over by the reallocations on the way (a hundred instructions per line).
        let batch = std::mem::replace(&mut *lock(&self.pending), Vec::with_capacity(WAKE_AT));
        if !batch.is_empty() {
            // Nowhere to report a failure to write the log; the lines are lost, the server goes on.
            let _ = sink.write_all(&batch).and_then(|()| sink.flush());
        }
    }
}

/// The `MakeWriter` of the fmt layer: every line is appended to the shared buffer.
#[derive(Clone)]
struct Batched(Arc<Shared>);

impl Batched {
    fn start(sink: Box<dyn Write + Send>) -> (Self, LogGuard) {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::with_capacity(WAKE_AT)),
            wake: Condvar::new(),
            sink: Mutex::new(sink),
            closed: false.into(),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                let s = thread_shared;
                loop {
                    {
                        let pending = lock(&s.pending);
                        if pending.len() < WAKE_AT && !s.closed.load(std::sync::atomic::Ordering::Acquire) {
                            let _ = s.wake.wait_timeout(pending, FLUSH_EVERY);
                        }
                    }
                    s.write_out();
                    if s.closed.load(std::sync::atomic::Ordering::Acquire) {
                        s.write_out();
                        return;
                    }
                }
            })
            .ok();
        (Self(shared.clone()), LogGuard { shared, thread })
    }
}

impl<'a> fmt::MakeWriter<'a> for Batched {
    type Writer = &'a Shared;

    fn make_writer(&'a self) -> Self::Writer {
        &self.0
    }
}

impl Write for &Shared {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.write_line(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Shared {
    /// Appends `line` to what is waiting.
    fn write_line(&self, line: &[u8]) {
        let waiting = {
            let mut pending = lock(&self.pending);
            pending.extend_from_slice(line);
            pending.len()
        };
        if waiting >= WRITE_AT {
            self.write_out();
        } else if wakes_the_writer(waiting - line.len(), waiting) {
            self.wake.notify_one();
        }
    }
}

/// Whether a line that took the waiting bytes from `before` to `after` wakes the writer thread:
/// only the line that crosses [`WAKE_AT`]. A wake is a system call, and at tens of thousands of
/// lines a second every line written until the woken thread runs would make one more.
fn wakes_the_writer(before: usize, after: usize) -> bool {
    before < WAKE_AT && after >= WAKE_AT
}

/// Keeps the log writer thread; dropping it writes out what is still waiting.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.closed.store(true, std::sync::atomic::Ordering::Release);
        self.shared.wake.notify_one();
        match self.thread.take() {
            Some(t) => {
                let _ = t.join();
            }
            None => self.shared.write_out(), // the thread never started: write from here
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            lock(&self.0).extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_whole_in_order_and_none_is_lost() {
        let out = Captured::default();
        let (writer, guard) = Batched::start(Box::new(out.clone()));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        let line = format!("thread {t} line {i:05} {}\n", "x".repeat(i % 300));
                        (&*w.0).write_all(line.as_bytes()).expect("write");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("join");
        }
        drop(guard);
        let text = String::from_utf8(lock(&out.0).clone()).expect("utf-8");
        for t in 0..4 {
            let prefix = format!("thread {t} line ");
            let seen: Vec<usize> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&prefix))
                .map(|rest| rest[..5].parse().expect("number"))
                .collect();
            assert_eq!(seen, (0..20_000).collect::<Vec<_>>(), "thread {t}: every line, in order");
        }
    }

    #[test]
    fn only_the_line_that_fills_the_buffer_wakes_the_writer() {
        assert!(wakes_the_writer(WAKE_AT - 1, WAKE_AT));
        assert!(wakes_the_writer(WAKE_AT - 10, WAKE_AT + 200));
        assert!(!wakes_the_writer(WAKE_AT - 300, WAKE_AT - 1), "not full yet");
        assert!(!wakes_the_writer(WAKE_AT, WAKE_AT + 200), "woken already: the lines after wait for it");
        assert!(!wakes_the_writer(0, 120));
    }

    #[test]
    fn a_quiet_line_is_written_within_the_flush_interval() {
        let out = Captured::default();
        let (writer, _guard) = Batched::start(Box::new(out.clone()));
        (&*writer.0).write_all(b"one line\n").expect("write");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while lock(&out.0).is_empty() {
            assert!(std::time::Instant::now() < deadline, "the line was never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(lock(&out.0).as_slice(), b"one line\n");
    }

    #[test]
    fn the_cached_time_is_the_time_of_every_line() {
        let mut cached = (u64::MAX, String::new());
        for micros in
            [0u64, 1, 999_999, 1_000_000, 1_764_479_444_907_764, 1_764_479_444_999_999, 1_764_479_445_000_001]
        {
            let at = Duration::from_micros(micros);
            let want = k8s_openapi::jiff::Timestamp::from_microsecond(micros as i64)
                .expect("in range")
                .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
                .to_string();
            let mut line = String::new();
            write_time(&mut line, at, &mut cached).expect("write");
            assert_eq!(line, want, "{micros} µs");
        }
        let mut line = String::new();
        write_time(&mut line, Duration::from_micros(1_764_479_444_907_764), &mut cached).expect("write");
        assert_eq!(line, "2025-11-30T05:10:44.907764Z");
    }
}
