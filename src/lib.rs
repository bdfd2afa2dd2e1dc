//! ztp-operator: zero-touch provisioning of data-centre switches, run from Kubernetes.
//!
//! The crate is one library with one binary (`ztp-operator`, several subcommands). Modules:
//! - [`api`]: the custom resources (`OsImage`, `SwitchProfile`, `Switch`) and name validation.
//! - [`cli`]: command-line arguments.
//! - [`hash`]: SHA-256 digests and the streaming hasher.
//! - [`store`]: the image store (directory or S3) and `manifest.json`.
//! - [`fetch`]: one-pass fetch-and-verify from http(s), s3 and file sources, with resume.
//! - [`lookup`]: ConfigMap and Secret data by namespace and name, with [`lookup::LookupError`].
//! - [`manifests`]: folders of YAML manifests (standalone's desired state, `ztpctl dhcp`'s profiles).
//! - [`nautobot`]: Nautobot's REST objects and their mapping to Switches and OsImages.
//! - [`reconcile`]: the reconcile core shared by [`controller`] (Kubernetes) and [`standalone`].
//! - [`profile`]: SwitchProfiles → the device snapshot (identity, matching index, rendering).
//! - [`serve`]: the device-facing server (ONIE, NVOS/SONiC, Cumulus, RtBrick, images).
//! - [`switch`]: one Switch object per device: lifecycle rules, names, report tokens.
//! - [`activity`]: how far each device got, per SwitchProfile, written to status or a file.
//! - [`dhcp`]: ISC dhcpd / Kea host reservations pointing switches at the server (`ztpctl dhcp`).
//! - [`routes`]: the device URL space: what each path a switch asks for means.
//! - [`dryrun`]: the requests each switch family sends first (`ztpctl device`).
//! - [`shutdown`]: SIGTERM / Ctrl-C, which end the long-running roles.
//! - [`watch`]: waiting for a reflector's first list (the controller's loops, the Switch writer).
//! - `sys`: the few system calls `std` does not wrap; the only module allowed `unsafe` code.

#![deny(unsafe_code)]

pub mod activity;
pub mod api;
pub mod cli;
pub mod controller;
pub mod dhcp;
pub mod dryrun;
pub mod fetch;
#[doc(hidden)]
pub mod fuzzing;
pub mod hash;
pub mod lookup;
pub mod manifests;
pub mod nautobot;
pub mod profile;
pub mod reconcile;
pub mod routes;
pub mod serve;
pub mod shutdown;
pub mod standalone;
pub mod status_file;
pub mod store;
pub mod switch;
mod sys;
pub mod telemetry;
pub mod watch;
