//! The device request line: one line per device request, the server's access log.
//!
//! It is the line the server writes most (a fleet's ZTP JSON answers cost a few microseconds
//! each), and through `tracing` it cost as much as the answer: the event's value set, a dynamic
//! call per field, the layer stack, the formatter. Where the log is text into a file or a pipe
//! (the default in a pod), the line is written here instead — the same bytes as [`super::text`]
//! writes for the same event (a test compares them), into the same batched writer, and only when
//! `RUST_LOG` lets `ztp_operator::device` at `info` through. Any other log (JSON, a terminal)
//! gets the `tracing` event, so a log shipper sees no difference either way.

use std::cell::RefCell;

use super::text::quoted;

/// The target of the line (what `RUST_LOG` names to quiet it: `ztp_operator::device=warn`).
pub const TARGET: &str = "ztp_operator::device";

/// One device request, as its line names it (`-` for what is not known).
#[derive(Debug, Clone, Copy)]
pub struct DeviceRequest<'a> {
    pub serial: &'a str,
    pub mac: &'a str,
    pub source: &'a str,
    pub family: &'a str,
    pub container: &'a str,
    pub element: &'a str,
    pub host: &'a str,
    pub method: &'a str,
    /// Without the query string.
    pub path: &'a str,
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    pub duration_ms: u64,
}

thread_local! {
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

impl DeviceRequest<'_> {
    /// Logs the line: written here when the log is text into a file or a pipe, else as a
    /// `tracing` event.
    pub fn log(&self) {
        if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
            return;
        }
        let Some(sink) = super::direct_text() else {
            return self.event();
        };
        LINE.with(|line| {
            let Ok(mut line) = line.try_borrow_mut() else {
                return self.event();
            };
            line.clear();
            if super::now(&mut *line).and_then(|()| self.write_text(&mut line)).is_ok() {
                sink.write_line(line.as_bytes());
            }
        });
    }

    /// The line as a `tracing` event.
    fn event(&self) {
        tracing::info!(
            target: TARGET,
            serial = self.serial,
            mac = self.mac,
            source = self.source,
            family = self.family,
            container = self.container,
            element = self.element,
            host = self.host,
            method = %self.method,
            path = self.path,
            status = self.status,
            bytes = self.bytes,
            duration_ms = self.duration_ms,
            "device request"
        );
    }

    /// The line after its time, as [`super::text::TextLine`] writes [`Self::event`].
    fn write_text(&self, w: &mut String) -> std::fmt::Result {
        w.push_str("  INFO ");
        w.push_str(TARGET);
        w.push_str(": device request");
        for (name, value) in [
            ("serial", self.serial),
            ("mac", self.mac),
            ("source", self.source),
            ("family", self.family),
            ("container", self.container),
            ("element", self.element),
            ("host", self.host),
        ] {
            w.push(' ');
            w.push_str(name);
            w.push('=');
            quoted(w, value)?;
        }
        w.push_str(" method=");
        w.push_str(self.method);
        w.push_str(" path=");
        quoted(w, self.path)?;
        let mut digits = itoa::Buffer::new();
        for (name, value) in [
            (" status=", u64::from(self.status)),
            (" bytes=", self.bytes),
            (" duration_ms=", self.duration_ms),
        ] {
            w.push_str(name);
            w.push_str(digits.format(value));
        }
        w.push('\n');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::text::{
        TextFields, TextLine,
        tests::{Captured, Fixed},
    };

    /// What the text formatter writes for the request's `tracing` event.
    fn through_tracing(request: &DeviceRequest<'_>) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .event_format(TextLine::new(Fixed))
            .fmt_fields(TextFields)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || request.event());
        out.text()
    }

    #[test]
    fn the_line_is_the_one_tracing_writes_for_the_event() {
        let plain = DeviceRequest {
            serial: "SN06801",
            mac: "-",
            source: "127.0.0.1",
            family: "nvos",
            container: "-",
            element: "-",
            host: "-",
            method: "GET",
            path: "/nvos/SN06801/ztp.json",
            status: 200,
            bytes: 273,
            duration_ms: 0,
        };
        let odd = DeviceRequest {
            serial: "SN \"quoted\" \\ é",
            mac: "0c:42:a1:00:00:07",
            source: "2001:db8::9",
            host: "line\nbreak\u{1b}[31m",
            method: "HEAD",
            path: "/images/a b/ü.bin",
            status: 404,
            bytes: u64::MAX,
            duration_ms: 12_345,
            ..plain
        };
        for request in [plain, odd] {
            let mut line = String::from("2026-11-30T07:00:00.123456Z");
            request.write_text(&mut line).expect("write");
            assert_eq!(line, through_tracing(&request), "{request:?}");
        }
    }
}
