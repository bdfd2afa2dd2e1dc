//! The device request line: one line per device request, the server's access log.
//!
//! It is the line the server writes most (a fleet's ZTP JSON answers cost a few microseconds
//! each), and through `tracing` it cost as much as the answer: the event's value set, a dynamic
//! call per field, the layer stack, the formatter. Where the log is text into a file or a pipe
//! (the default in a pod), the line is written here instead — the same bytes as [`super::text`]
//! writes for the same event (a test compares them), into the same batched writer, and only when
//! `RUST_LOG` lets `ztp_operator::device` at `info` through. Any other log (JSON, a terminal)
//! gets the `tracing` event, so a log shipper sees no difference either way.

use std::{cell::RefCell, net::IpAddr};

use super::text::quoted;

/// The target of the line (what `RUST_LOG` names to quiet it: `ztp_operator::device=warn`).
pub const TARGET: &str = "ztp_operator::device";

/// One device request, as its line names it (`-` for what is not known).
#[derive(Debug, Clone, Copy)]
pub struct DeviceRequest<'a> {
    pub serial: &'a str,
    pub mac: &'a str,
    /// Written as [`address`] writes it.
    pub source: Option<IpAddr>,
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
        let source = self.source.map(address);
        tracing::info!(
            target: TARGET,
            serial = self.serial,
            mac = self.mac,
            source = source.as_deref().unwrap_or("-"),
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

    /// The line after its time, as [`super::text::TextLine`] writes [`Self::event`]. Field by
    /// field with the names written out: a name's length known when compiled, its copy is not a
    /// call.
    fn write_text(&self, w: &mut String) -> std::fmt::Result {
        w.push_str("  INFO ");
        w.push_str(TARGET);
        w.push_str(": device request serial=");
        quoted(w, self.serial)?;
        w.push_str(" mac=");
        quoted(w, self.mac)?;
        w.push_str(" source=\"");
        match self.source {
            Some(ip) => write_address(w, ip),
            None => w.push('-'),
        }
        w.push_str("\" family=");
        quoted(w, self.family)?;
        w.push_str(" container=");
        quoted(w, self.container)?;
        w.push_str(" element=");
        quoted(w, self.element)?;
        w.push_str(" host=");
        quoted(w, self.host)?;
        w.push_str(" method=");
        w.push_str(self.method);
        w.push_str(" path=");
        quoted(w, self.path)?;
        let mut digits = itoa::Buffer::new();
        w.push_str(" status=");
        w.push_str(digits.format(self.status));
        w.push_str(" bytes=");
        w.push_str(digits.format(self.bytes));
        w.push_str(" duration_ms=");
        w.push_str(digits.format(self.duration_ms));
        w.push('\n');
        Ok(())
    }
}

/// `ip` as text (IPv4 without `core::fmt`: `Ipv4Addr`'s `Display` cost more than the rest of a
/// device request's log line).
pub fn address(ip: IpAddr) -> String {
    let mut text = String::with_capacity(15);
    write_address(&mut text, ip);
    text
}

/// Appends `ip` as [`address`] writes it.
fn write_address(w: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    w.push('.');
                }
                w.push_str(digits.format(octet));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(w, "{v6}");
        }
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
    fn addresses_read_as_their_display() {
        for text in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "192.0.2.255",
            "255.255.255.255",
            "::1",
            "2001:db8::9",
            "::ffff:192.0.2.1",
        ] {
            let ip: IpAddr = text.parse().expect("ip");
            assert_eq!(address(ip), ip.to_string());
            assert_eq!(address(ip), text);
        }
    }

    #[test]
    fn the_line_is_the_one_tracing_writes_for_the_event() {
        let plain = DeviceRequest {
            serial: "SN06801",
            mac: "-",
            source: Some(IpAddr::from([127, 0, 0, 1])),
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
            source: "2001:db8::9".parse().ok(),
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
