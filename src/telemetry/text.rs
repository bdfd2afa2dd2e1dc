//! The text log line without colours, as tracing-subscriber's default (`Full`) format writes it,
//! written straight into the line buffer.
//!
//! Every device request logs a line, so the formatter runs tens of thousands of times a second.
//! tracing-subscriber's formatter sends every piece through `core::fmt` (every string through
//! `Debug` escaping, every number through `Display`, every piece of a line through an ANSI
//! `Style` even when colours are off): about a fifth of the CPU of a ZTP JSON answer. This one
//! writes the same bytes, taking `core::fmt` only where a value needs it (an escape in a string,
//! a `Debug` value). `tests` check it against tracing-subscriber's own formatter, byte for byte.
//! Events that come from the `log` crate and coloured output (a terminal) keep tracing-subscriber's
//! formatter.

use std::{
    cell::RefCell,
    fmt::{self, Write},
};

use tracing::{Event, Level, Subscriber, field::Field};
use tracing_log::NormalizeEvent;
use tracing_subscriber::{
    field::RecordFields,
    fmt::{
        FmtContext, FormatEvent, FormatFields, FormattedFields,
        format::{Format, Full, Writer},
        time::FormatTime,
    },
    registry::LookupSpan,
};

/// The event formatter: `{time} {level} {span}{{fields}}:… {target}: {fields}`.
pub(super) struct TextLine<T> {
    timer: T,
    /// For what this formatter does not write itself: events from the `log` crate.
    full: Format<Full, T>,
}

impl<T: FormatTime + Clone> TextLine<T> {
    pub(super) fn new(timer: T) -> Self {
        Self { full: Format::default().with_timer(timer.clone()).with_ansi(false), timer }
    }
}

impl<S, N, T> FormatEvent<S, N> for TextLine<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    T: FormatTime,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        // A `log` record's target and fields are in its `log.*` fields: tracing-subscriber's to read.
        if event.is_log() {
            return self.full.format_event(ctx, w, event);
        }
        let meta = event.metadata();
        if self.timer.format_time(&mut w).is_err() {
            w.write_str("<unknown time>")?;
        }
        w.write_char(' ')?;
        w.write_str(level(meta.level()))?;
        w.write_char(' ')?;
        if let Some(scope) = ctx.event_scope() {
            let mut seen = false;
            for span in scope.from_root() {
                w.write_str(span.metadata().name())?;
                seen = true;
                if let Some(fields) = span.extensions().get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    w.write_char('{')?;
                    w.write_str(fields)?;
                    w.write_char('}')?;
                }
                w.write_char(':')?;
            }
            if seen {
                w.write_char(' ')?;
            }
        }
        w.write_str(meta.target())?;
        w.write_str(": ")?;
        ctx.format_fields(w.by_ref(), event)?;
        w.write_char('\n')
    }
}

/// A level as tracing-subscriber pads it (five characters, right-aligned).
fn level(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => " INFO",
        Level::WARN => " WARN",
        Level::ERROR => "ERROR",
    }
}

/// The fields formatter (of events and of spans): `message key=value key="text"`, as
/// tracing-subscriber's `DefaultFields` writes them.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct TextFields;

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, mut w: Writer<'w>, fields: R) -> fmt::Result {
        // Pieces of a field go into one string (no dynamic call per piece), written out at once.
        thread_local! {
            static TEXT: RefCell<String> = const { RefCell::new(String::new()) };
        }
        TEXT.with(|text| {
            let (mut borrowed, mut own);
            let text = match text.try_borrow_mut() {
                Ok(t) => {
                    borrowed = t;
                    &mut *borrowed
                }
                // A value's `Debug` logging while it is formatted.
                Err(_) => {
                    own = String::new();
                    &mut own
                }
            };
            text.clear();
            let mut visitor = TextVisitor { out: text, first: true, result: Ok(()) };
            fields.record(&mut visitor);
            visitor.result?;
            w.write_str(text)
        })
    }
}

/// Writes one set of fields; see [`TextFields`].
struct TextVisitor<'a> {
    out: &'a mut String,
    first: bool,
    result: fmt::Result,
}

impl TextVisitor<'_> {
    /// Starts a field: `false` when nothing is to be written (an earlier failure, or a `log.*`
    /// field, which the line has already used). Writes the space between fields.
    fn start(&mut self, field: &Field) -> bool {
        if self.result.is_err() || field.name().starts_with("log.") {
            return false;
        }
        if !std::mem::take(&mut self.first) {
            self.out.push(' ');
        }
        true
    }

    /// `name=` (a raw identifier without its `r#`).
    fn name(&mut self, field: &Field) {
        let name = field.name();
        self.out.push_str(name.strip_prefix("r#").unwrap_or(name));
        self.out.push('=');
    }

    fn number(&mut self, field: &Field, digits: &str) {
        if self.start(field) {
            self.name(field);
            self.out.push_str(digits);
        }
    }
}

impl tracing::field::Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            return self.record_debug(field, &format_args!("{value}"));
        }
        if self.start(field) {
            self.name(field);
            self.result = quoted(self.out, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.number(field, itoa::Buffer::new().format(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.number(field, itoa::Buffer::new().format(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.number(field, if value { "true" } else { "false" });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if !self.start(field) {
            return;
        }
        // `name=error name.sources=[source, its source, …]`, each without control sequences.
        self.name(field);
        self.result = (|| {
            write!(AnsiEscaping(&mut *self.out), "{value}")?;
            if let Some(source) = value.source() {
                write!(self.out, " {}.sources=[", field.name())?;
                let mut next = Some(source);
                let mut first = true;
                while let Some(error) = next {
                    if !std::mem::take(&mut first) {
                        self.out.push_str(", ");
                    }
                    write!(AnsiEscaping(&mut *self.out), "{error}")?;
                    next = error.source();
                }
                self.out.push(']');
            }
            Ok(())
        })();
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !self.start(field) {
            return;
        }
        self.result = if field.name() == "message" {
            write!(AnsiEscaping(&mut *self.out), "{value:?}")
        } else {
            self.name(field);
            write!(self.out, "{value:?}")
        };
    }
}

/// The bytes written between quotes as they are: printable ASCII but `"` and `\` (one load per
/// byte of a device request line's values, not three comparisons).
static PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = b' ';
    while b <= b'~' {
        table[b as usize] = b != b'"' && b != b'\\';
        b += 1;
    }
    table
};

/// `value` as `{:?}` writes it: quoted, with `"`, `\` and what is not printable escaped. Text of
/// printable ASCII without either (serials, paths, addresses) is written as it is.
pub(super) fn quoted(w: &mut impl Write, value: &str) -> fmt::Result {
    if value.bytes().all(|b| PLAIN[usize::from(b)]) {
        w.write_char('"')?;
        w.write_str(value)?;
        w.write_char('"')
    } else {
        write!(w, "{value:?}")
    }
}

/// Passes text on with the characters that drive a terminal written as escapes (ESC, BEL, BS, FF,
/// DEL, and the C1 controls U+0080 to U+009F), as tracing-subscriber does for messages and errors.
struct AnsiEscaping<'w, W>(&'w mut W);

impl<W: Write> Write for AnsiEscaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // In UTF-8 a C1 control is 0xC2 followed by 0x80..=0x9F; the other five are single bytes.
        let plain = !s.bytes().any(|b| matches!(b, 0x1b | 0x07 | 0x08 | 0x0c | 0x7f | 0xc2));
        if plain {
            return self.0.write_str(s);
        }
        for ch in s.chars() {
            match ch {
                '\x1b' => self.0.write_str("\\x1b")?,
                '\x07' => self.0.write_str("\\x07")?,
                '\x08' => self.0.write_str("\\x08")?,
                '\x0c' => self.0.write_str("\\x0c")?,
                '\x7f' => self.0.write_str("\\x7f")?,
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", ch as u32)?,
                _ => self.0.write_char(ch)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::{
        io,
        sync::{Arc, Mutex, PoisonError},
    };

    use tracing_subscriber::{fmt::layer, prelude::*};

    use super::*;

    /// A fixed time, so two formatters' lines can be compared.
    #[derive(Clone)]
    pub(in crate::telemetry) struct Fixed;

    impl FormatTime for Fixed {
        fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
            w.write_str("2026-11-30T07:00:00.123456Z")
        }
    }

    /// What a writer was given.
    #[derive(Clone, Default)]
    pub(in crate::telemetry) struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        pub(in crate::telemetry) fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()).expect("utf-8")
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot reach the \x1b[31msource\x1b[0m")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("connection refused")]
    struct Inner;

    /// Events of every kind this program logs: fields of each type, text that needs quoting or
    /// escaping, spans with and without fields, nested spans, a raw identifier, errors with sources.
    fn events() {
        tracing::info!(target: "ztp_operator::device", serial = "SN00001", mac = "-", source = "127.0.0.1",
            family = "nvos", method = %"GET", path = "/nvos/SN00001/ztp.json", status = 200u16, bytes = 279u64,
            duration_ms = 0u64, "device request");
        tracing::warn!(peer = %"192.0.2.1:5000", max = 64usize, held_back = 3u64, "too many connections; refused");
        tracing::error!(error = %"disk full", path = "a \"quoted\" path\\with\ttab\nand newline", "cannot write");
        tracing::info!(signed = -42i64, yes = true, no = false, ratio = 0.5f64, r#type = "raw", list = ?vec![1, 2]);
        tracing::info!(
            user_agent = "naïve — ünïcode ✓",
            control = "\u{1b}[2J\u{85}\u{7f}",
            "escape \u{1b}[31mred\u{9b} here"
        );
        tracing::debug!(empty = "", "");
        let outer = Outer(Inner);
        tracing::warn!(error = &outer as &(dyn std::error::Error + 'static), "fetch failed");
        tracing::warn!(error = &Inner as &(dyn std::error::Error + 'static), "no source");
        let span =
            tracing::info_span!("reconciling object", object.ref = "OsImage/default/x", attempt = 2u64);
        let _outer = span.enter();
        tracing::info!("inside one span");
        let empty = tracing::info_span!("no_fields");
        let _inner = empty.enter();
        tracing::trace!(answer = 42u64, "inside two spans");
        let late = tracing::info_span!("late", a = tracing::field::Empty, b = 1u64);
        late.record("a", "recorded later");
        late.in_scope(|| tracing::info!("after a record"));
    }

    fn lines(with: impl FnOnce(Captured) -> tracing::Dispatch) -> String {
        let out = Captured::default();
        tracing::dispatcher::with_default(&with(out.clone()), events);
        out.text()
    }

    #[test]
    fn lines_are_tracing_subscriber_s_own_byte_for_byte() {
        let theirs = lines(|out| {
            tracing_subscriber::registry()
                .with(layer().with_ansi(false).with_timer(Fixed).with_writer(move || out.clone()))
                .with(tracing_subscriber::filter::LevelFilter::TRACE)
                .into()
        });
        let ours = lines(|out| {
            tracing_subscriber::registry()
                .with(
                    layer()
                        .with_ansi(false)
                        .event_format(TextLine::new(Fixed))
                        .fmt_fields(TextFields)
                        .with_writer(move || out.clone()),
                )
                .with(tracing_subscriber::filter::LevelFilter::TRACE)
                .into()
        });
        assert_eq!(theirs.lines().count(), 11, "every event logged: {theirs}");
        for (ours, theirs) in ours.lines().zip(theirs.lines()) {
            assert_eq!(ours, theirs);
        }
        assert_eq!(ours, theirs);
        assert!(ours.contains(r#"path="a \"quoted\" path\\with\ttab\nand newline""#), "{ours}");
        assert!(ours.contains(r"escape \x1b[31mred\u{9b} here"), "{ours}");
        assert!(
            ours.contains(
                "error=cannot reach the \\x1b[31msource\\x1b[0m error.sources=[connection refused]"
            ),
            "{ours}"
        );
    }

    #[test]
    fn quoting_writes_plain_text_as_it_is_and_escapes_as_debug_does() {
        for text in ["SN00001", "", "a b", "\"", "\\", "tab\t", "é", "\u{7f}", "~ok~", "\u{200d}"] {
            let mut ours = String::new();
            quoted(&mut ours, text).expect("write");
            assert_eq!(ours, format!("{text:?}"), "{text:?}");
        }
    }
}
