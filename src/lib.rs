//! ztp-operator: zero-touch provisioning of data-centre switches, run from Kubernetes.
//!
//! The crate is one library with one binary (`ztp-operator`, several subcommands). Modules:
//! - [`api`]: the custom resources (`OsImage`, `SwitchProfile`) and name validation.
//! - [`cli`]: command-line arguments.
//! - [`hash`]: SHA-256 digests and the streaming hasher.
//! - [`store`]: the image store (directory or S3) and `manifest.json`.

pub mod api;
pub mod cli;
pub mod controller;
pub mod fetch;
pub mod hash;
pub mod reconcile;
pub mod standalone;
pub mod store;
pub mod telemetry;
