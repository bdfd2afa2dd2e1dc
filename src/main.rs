#![deny(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use ztp_operator::{
    activity::{Activity, k8s::KubeSink, report_forever},
    api,
    cli::{Cli, Command},
    controller,
    serve::state::{BaseUrl, ServerState},
    standalone, telemetry,
};

/// jemalloc, not glibc's malloc: with glibc the controller kept ~1.7x its live heap resident
/// (freed memory fragmented over per-thread arenas and not returned: 196 MiB peak RSS for a
/// 95 MiB heap peak in `bench/nautobot.sh`), with jemalloc as configured below 119 MiB.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at its start (`_RJEM_MALLOC_CONF` in the environment still
/// overrides them): two arenas, not four per CPU of the node (a pod's share of it is smaller);
/// freed pages returned to the system after about a second, by a background thread, rather
/// than kept for the next burst.
#[allow(unsafe_code, non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] = b"narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0,background_thread:true\0";

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Crds = cli.command {
        return match api::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot render the CRDs as YAML: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::ReportKey = cli.command {
        return match ztp_operator::switch::token::ReportKey::generate() {
            Ok(key) => {
                println!("{}", String::from_utf8_lossy(key.as_bytes()));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let _log = telemetry::init(cli.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Controller(args) => report(controller::run(*args).await),
            Command::Standalone(args) => match standalone::run(*args).await {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => report::<()>(Err(e)),
            },
            Command::Serve(args) => report(serve(*args).await),
            Command::Crds | Command::ReportKey => unreachable!("handled above"),
        }
    });
    // A role that returned (SIGTERM included) does not wait for blocking work still running, such
    // as a fetch's writer thread: what it leaves half-written is under the store's `.tmp/`.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

async fn serve(args: ztp_operator::cli::ServeArgs) -> Result<(), String> {
    let store = args.store.open().await.map_err(|e| e.to_string())?;
    let base_url = BaseUrl::Fixed(args.external_url.trim_end_matches('/').to_owned());
    let state = std::sync::Arc::new(ServerState::new(store, base_url));
    let activity = if args.report_status {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| format!("--report-status needs Kubernetes credentials: {e}"))?;
        let sink = KubeSink::new(client, std::env::var("POD_NAME").ok());
        // With Switches, each holds its device's progress and the controller counts them per
        // profile (`status.switches`): the server writes no `status.devices` then, Events only.
        let activity = if args.switches.enabled { Activity::events_only() } else { Activity::new() };
        tokio::spawn(report_forever(activity.clone(), std::sync::Arc::new(sink), args.activity_flush()));
        activity
    } else {
        Activity::disabled()
    };
    let switches = if args.switches.enabled {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| format!("--switches needs Kubernetes credentials: {e}"))?;
        let s = &args.switches;
        let options = ztp_operator::switch::k8s::Options {
            discover: s.discover,
            namespace: s
                .discover_namespace
                .clone()
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .unwrap_or_else(|| "default".into()),
            scope: s.switch_namespace.clone(),
            max_unmatched: s.max_unmatched,
            per_source_per_minute: s.discover_per_source_per_minute,
            writes_per_second: s.switch_writes_per_second,
            flush: args.activity_flush(),
        };
        let tracking = ztp_operator::switch::Tracking::new();
        let server = state.clone();
        let matcher: ztp_operator::switch::k8s::Matcher =
            std::sync::Arc::new(move |spec| ztp_operator::serve::matched::declared_match(&server, spec));
        tokio::spawn(ztp_operator::switch::k8s::run(client, tracking.clone(), options, matcher));
        tracking
    } else {
        Default::default()
    };
    let options = ztp_operator::serve::Options {
        listen: args.listen.listen,
        max_downloads: args.listen.max_downloads,
        sendfile: !args.listen.no_sendfile,
        activity,
        switches,
        reports: args.reports.reports().map_err(|e| e.to_string())?,
        admin: args.admin.auth().map_err(|e| e.to_string())?,
        max_upload: args.admin.max_upload_bytes,
        device_networks: ztp_operator::serve::observe::DeviceNetworks::new(
            args.listen.device_networks.clone(),
        ),
        limits: args.listen.limits(),
        workers: args.listen.workers(),
    };
    ztp_operator::serve::run(state, options, ztp_operator::shutdown::terminated())
        .await
        .map_err(|e| format!("serve on {}: {e}", args.listen.listen))
}

fn report<T>(r: Result<T, impl std::fmt::Display>) -> ExitCode {
    match r {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
