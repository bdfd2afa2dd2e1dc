//! Command-line interface of the `ztp-operator` binary.

use clap::{Parser, Subcommand};

/// Zero-touch provisioning for data-centre switches, run from Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "ztp-operator", version, about)]
pub struct Cli {
    /// Log one JSON object per line instead of text.
    #[arg(long, global = true, env = "ZTP_LOG_JSON")]
    pub log_json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Reconcile OsImages and SwitchProfiles in a cluster (fetch, verify, store, render).
    Controller,
    /// Serve switches (ONIE, NVOS/SONiC, Cumulus, RtBrick) and the admin files API.
    Serve,
    /// Run the whole pipeline on one machine without a cluster, from a folder of YAML.
    Standalone,
    /// Print the CustomResourceDefinitions as YAML (what `crds/` holds).
    Crds,
}
