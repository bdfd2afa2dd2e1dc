//! Logging setup: `tracing` with an `EnvFilter` (`RUST_LOG`), text or JSON lines.
//!
//! Lines are formatted on the calling thread and written by a dedicated thread through a buffer
//! that is flushed whenever no more lines are waiting: a device request never waits on a
//! `write(2)` to a slow log pipe, and a burst of requests costs a few large writes instead of one
//! per line. Nothing is dropped: when 64 Ki lines are waiting, callers wait for the writer.

use std::io::{BufWriter, IsTerminal, Write};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Keeps the log writer thread alive; dropping it writes out what is still queued.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard(#[allow(dead_code)] WorkerGuard);

/// Installs the global subscriber. `json` selects one JSON object per line on stdout (for log
/// shippers); otherwise text lines on stderr, coloured only when stderr is a terminal.
pub fn init(json: bool) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let builder = NonBlockingBuilder::default().lossy(false).buffered_lines_limit(64 * 1024);
    if json {
        let (writer, guard) = builder.finish(buffered(std::io::stdout()));
        registry.with(fmt::layer().json().with_current_span(false).with_writer(writer)).init();
        LogGuard(guard)
    } else {
        let ansi = std::io::stderr().is_terminal();
        let (writer, guard) = builder.finish(buffered(std::io::stderr()));
        registry.with(fmt::layer().with_ansi(ansi).with_writer(writer)).init();
        LogGuard(guard)
    }
}

/// The writer thread flushes after each burst, so a buffer only batches lines that were
/// already waiting.
fn buffered<W: Write + Send + 'static>(w: W) -> BufWriter<W> {
    BufWriter::with_capacity(64 * 1024, w)
}
