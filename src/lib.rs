//! ztp-operator: zero-touch provisioning of data-centre switches, run from Kubernetes.
//!
//! The crate is one library with one binary (`ztp-operator`, several subcommands). Modules:
//! - [`api`]: the custom resources (`OsImage`, `SwitchProfile`) and name validation.
//! - [`cli`]: command-line arguments.

pub mod api;
pub mod cli;
pub mod telemetry;
