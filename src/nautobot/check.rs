//! `ztpctl nautobot check`: what a NautobotSource would declare, without declaring anything — a
//! summary for people ([`summary`]), or the Switch and OsImage objects as the YAML stream
//! `kubectl apply -f -` takes ([`objects`], [`yaml`]). Pure: a [`Desired`] in, text out (the
//! reading is [`super::read`]); and the NautobotSource a YAML file holds ([`source_from_yaml`]),
//! whose spec the dry run uses.

use std::fmt::Write;

use kube::CustomResourceExt;
use serde_json::Value;

use super::{
    map::{Desired, Skipped},
    plan::object,
};
use crate::api::{
    NautobotSource,
    validate::{Invalid, validate_against},
};

/// The source label's value when no NautobotSource file names the source.
pub const NO_SOURCE_NAME: &str = "check";

/// Why a NautobotSource file cannot be used, or the objects not printed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The text is not YAML (or nests too deep).
    #[error("not YAML: {0}")]
    Yaml(String),
    /// No document of kind NautobotSource.
    #[error("it holds no NautobotSource")]
    NoSource,
    /// The NautobotSource is not what the apiserver would take.
    #[error("document {document}: {source}")]
    Invalid { document: usize, source: Invalid },
    /// The NautobotSource does not read as one (after validation: a bug, said plainly).
    #[error("document {document}: not a NautobotSource: {message}")]
    Shape { document: usize, message: String },
    /// An object could not be written as YAML.
    #[error("cannot write {what} as YAML: {message}")]
    Write { what: String, message: String },
}

/// The first NautobotSource of `text` (a YAML file, several documents allowed), checked against
/// its CRD as the apiserver would check it.
pub fn source_from_yaml(text: &str) -> Result<NautobotSource, CheckError> {
    let docs = crate::manifests::parse_documents(text).map_err(CheckError::Yaml)?;
    let (i, doc) = docs
        .into_iter()
        .find(|(_, d)| d.get("kind").and_then(Value::as_str) == Some("NautobotSource"))
        .ok_or(CheckError::NoSource)?;
    let document = i + 1;
    validate_against(&NautobotSource::crd(), &doc)
        .map_err(|source| CheckError::Invalid { document, source })?;
    serde_json::from_value(doc).map_err(|e| CheckError::Shape { document, message: e.to_string() })
}

/// `-` for nothing.
fn or_dash(v: Option<&str>) -> String {
    v.filter(|v| !v.is_empty()).unwrap_or("-").to_owned()
}

/// Rows under a header, each column as wide as its widest cell, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<w$}  ");
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One skipped object per line: its name, reason and message.
fn skipped_lines(out: &mut String, title: &str, skipped: &[Skipped]) {
    let _ = writeln!(out, "\n{title} ({}):", skipped.len());
    for s in skipped {
        let _ = writeln!(out, "  {} [{}]: {}", s.name, s.reason.as_str(), s.message);
    }
}

/// The dry run for people: what was read, the Switches (name, serial, hostname, model, MAC,
/// profile, osImage) and OsImages (name, store path, URL) the source would declare, every skipped
/// device and image file with why, and the requests it took. `devices` is how many devices the
/// read selected, `requests` how many requests it made.
pub fn summary(desired: &Desired, devices: usize, requests: u64) -> String {
    let mut out = format!(
        "Read {} from Nautobot: would declare {} and {}; skipped {} and {}.\n",
        plural(devices, "device", "devices"),
        plural(desired.switches.len(), "Switch", "Switches"),
        plural(desired.images.len(), "OsImage", "OsImages"),
        plural(desired.skipped.len(), "device", "devices"),
        plural(desired.skipped_images.len(), "image file", "image files"),
    );
    let switches: Vec<Vec<String>> = desired
        .switches
        .iter()
        .map(|(name, sw)| {
            let s = &sw.spec;
            vec![
                name.clone(),
                s.serial_number.clone(),
                or_dash(s.hostname.as_deref()),
                or_dash(s.model.as_deref()),
                or_dash(s.mac_address.as_deref()),
                or_dash(s.profile.as_deref()),
                or_dash(s.os_image.as_deref()),
            ]
        })
        .collect();
    let _ = writeln!(out, "\nSwitches ({}):", switches.len());
    if !switches.is_empty() {
        out.push_str(&table(
            &["NAME", "SERIAL", "HOSTNAME", "MODEL", "MAC", "PROFILE", "OSIMAGE"],
            &switches,
        ));
    }
    let images: Vec<Vec<String>> = desired
        .images
        .iter()
        .map(|(name, image)| {
            let s = &image.spec;
            let url = s.source.url.as_ref().map(|u| u.url.as_str());
            vec![
                name.clone(),
                format!("{}/{}/{}", s.platform, s.version, s.filename.as_deref().unwrap_or("-")),
                or_dash(url),
            ]
        })
        .collect();
    let _ = writeln!(out, "\nOsImages ({}):", images.len());
    if !images.is_empty() {
        out.push_str(&table(&["NAME", "PLATFORM/VERSION/FILENAME", "URL"], &images));
    }
    skipped_lines(&mut out, "Skipped devices", &desired.skipped);
    skipped_lines(&mut out, "Skipped image files", &desired.skipped_images);
    let _ = writeln!(
        out,
        "\n{} to Nautobot.",
        plural(usize::try_from(requests).unwrap_or(usize::MAX), "request", "requests")
    );
    out
}

/// The Switches, then the OsImages, the source named `source` would declare in `namespace`: the
/// objects its controller applies ([`object`]), without an owner reference.
pub fn objects(desired: &Desired, namespace: &str, source: &str) -> Result<Vec<Value>, CheckError> {
    let spec = |what: String, v: Result<Value, serde_json::Error>| {
        v.map_err(|e| CheckError::Write { what, message: e.to_string() })
    };
    let mut out = Vec::new();
    for (name, sw) in &desired.switches {
        let body = spec(format!("Switch {name}"), serde_json::to_value(&sw.spec))?;
        out.push(object("Switch", name, namespace, source, &sw.device_id, None, body));
    }
    for (name, image) in &desired.images {
        let body = spec(format!("OsImage {name}"), serde_json::to_value(&image.spec))?;
        out.push(object("OsImage", name, namespace, source, &image.file_id, None, body));
    }
    Ok(out)
}

/// [`objects`] as one multi-document YAML stream (`---` before each document).
pub fn yaml(desired: &Desired, namespace: &str, source: &str) -> Result<String, CheckError> {
    let mut out = String::new();
    for doc in objects(desired, namespace, source)? {
        let what = format!("{} {}", doc["kind"].as_str().unwrap_or("object"), doc["metadata"]["name"]);
        let text =
            yaml_serde::to_string(&doc).map_err(|e| CheckError::Write { what, message: e.to_string() })?;
        out.push_str("---\n");
        out.push_str(&text);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
