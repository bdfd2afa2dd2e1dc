//! `ztpctl`: the admin files API from a shell. Uploads stream the file (constant memory) with a
//! progress bar, after hashing it locally when no checksum is given; the server verifies the
//! hash again and stores nothing on a mismatch. Errors from the server are shown as their
//! `detail` text.
//!
//! `ztpctl dhcp` writes ISC dhcpd or Kea host reservations pointing the switches of a folder of
//! SwitchProfiles and Switches at the server ([`ztp_operator::dhcp`]); `ztpctl nautobot check`
//! reads a Nautobot and prints what a NautobotSource would declare, declaring nothing
//! ([`ztp_operator::nautobot::check`]); `ztpctl device` asks the server what a
//! switch of one family would get, with exactly that family's headers ([`ztp_operator::dryrun`]);
//! `ztpctl switches` / `ztpctl switch SERIAL` print the Switches a server knows, or a standalone
//! data folder's ([`ztp_operator::switch::show`]).

#![deny(unsafe_code)]

use std::{path::PathBuf, process::ExitCode};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum, parser::ValueSource};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Client, Method, StatusCode, multipart};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;
use ztp_operator::{
    dhcp::{self, DhcpError},
    dryrun::{self, Device, DryRunError, Expect},
    hash::Sha256Digest,
    nautobot::{
        self as nb,
        check::{self, CheckError},
        client::NautobotError,
    },
    profile::identity::Family,
    serve::auth::NO_CREDENTIAL,
    switch::{fleet, show},
};

#[derive(Parser)]
#[command(
    name = "ztpctl",
    version,
    about = "Upload, list and remove images on a ztp-operator server; generate DHCP reservations; dry-run a device or a NautobotSource"
)]
struct Cli {
    /// Base URL of the server (`ztp-operator serve`).
    #[arg(long, env = "ZTP_SERVER", default_value = "http://127.0.0.1:8080", global = true)]
    server: String,
    /// Admin bearer token (one of the server's --admin-token-file tokens, or an OIDC access token).
    #[arg(long, env = "ZTP_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Upload FILE to `{platform}/{version}/{file name}`.
    Upload {
        file: PathBuf,
        #[arg(long)]
        platform: String,
        #[arg(long)]
        version: String,
        /// Store under this name instead of FILE's.
        #[arg(long)]
        name: Option<String>,
        /// The published SHA-256; computed locally when absent.
        #[arg(long)]
        checksum: Option<String>,
        /// Tag it as the directory's firmware image.
        #[arg(long)]
        firmware_image: bool,
        /// Replace a file already at that path.
        #[arg(long)]
        overwrite: bool,
    },
    /// List every file, or those of one `{platform}/{version}`.
    Ls { platform: Option<String>, version: Option<String> },
    /// Print a file's recorded SHA-256.
    Checksum { platform: String, version: String, filename: String },
    /// Delete a file and its manifest entry.
    Rm { platform: String, version: String, filename: String },
    /// Print DHCP host reservations pointing every device of PROFILES at the server: option 114
    /// (ONIE, `{server}/onie`), 67 (NVOS / SONiC, `{server}/nvos/{serial}/ztp.json`), 239
    /// (Cumulus, `{server}/cumulus/{serial}/ztp.sh`), 210 (RtBrick CTRLD, `{server}`). Hosts are
    /// identified by MAC, else by the client identifier built from the serial. A Switch with a
    /// `macAddress` gets a host of its own with its `hostname` and the options of the profile its
    /// device gets. Notes (devices that cannot be reserved) go to stderr.
    Dhcp {
        #[arg(long, value_enum)]
        format: DhcpFormat,
        /// A YAML file or a folder of SwitchProfiles and Switches (what `kubectl apply` takes, or
        /// `ztpctl nautobot check --output yaml` prints).
        #[arg(long)]
        profiles: PathBuf,
        /// The server URL as switches reach it (default: --server).
        #[arg(long)]
        server_url: Option<String>,
        /// Paths and client identifiers for profiles with `ztp`: NVOS or SONiC.
        #[arg(long, value_enum, default_value = "nvos")]
        ztp_family: ZtpFamilyArg,
    },
    /// Dry run: send what a switch of FAMILY sends first (its headers, its entry URL) and print
    /// the answer: the ZTP JSON or script, RtBrick's config files, or for images the HEAD result
    /// (size, ETag; never the bytes).
    Device {
        #[arg(long)]
        serial: String,
        #[arg(long)]
        mac: Option<String>,
        /// ONIE machine, PRODUCT-NAME or CUMULUS-PRODUCTNAME.
        #[arg(long)]
        model: Option<String>,
        #[arg(long, value_enum, default_value = "onie")]
        family: FamilyArg,
        /// ONIE-OPERATION: os-install or onie-update.
        #[arg(long, default_value = "os-install")]
        operation: String,
    },
    /// Nautobot as the source of Switches and OsImages.
    Nautobot {
        #[command(subcommand)]
        command: NautobotCommand,
    },
    /// Print the fleet with the columns `kubectl get switches` shows: every Switch the server
    /// knows (`GET /v1/switches`, as of its last flush; an admin token unless it runs with
    /// `--public-listing`), or of a standalone data folder with --data.
    Switches {
        /// Read standalone's data folder (its `--data`: `{data}/.status/switches.json`) instead
        /// of asking the server.
        #[arg(long, env = "ZTP_DATA")]
        data: Option<PathBuf>,
    },
    /// Print one Switch (by serial number) with its attempt history: from the server
    /// (`GET /v1/switches/{serial}`), or from a standalone data folder with --data.
    Switch {
        serial: String,
        /// Read standalone's data folder (its `--data`) instead of asking the server.
        #[arg(long, env = "ZTP_DATA")]
        data: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum NautobotCommand {
    /// Dry run: read Nautobot as a NautobotSource would and print the Switches and OsImages it
    /// would declare, and the devices and image files it would skip with why. Declares nothing.
    Check {
        /// Nautobot's base URL (over the --source file's `spec.url`).
        #[arg(long, env = "NAUTOBOT_URL")]
        url: Option<String>,
        /// Nautobot API token (read access to devices, interfaces, platforms, roles, device types,
        /// software and the change log).
        #[arg(long, env = "NAUTOBOT_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// PEM CA certificates to trust for an https URL, besides the system's.
        #[arg(long)]
        ca_bundle: Option<PathBuf>,
        /// A NautobotSource YAML file whose spec (filter, switches and images mapping) is used;
        /// without it, a source with the default spec.
        #[arg(long)]
        source: Option<PathBuf>,
        /// Namespace of the objects printed (default: the --source file's, else `default`).
        #[arg(long)]
        namespace: Option<String>,
        #[arg(long, value_enum, default_value = "summary")]
        output: CheckOutput,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum CheckOutput {
    /// Counts, one line per Switch and OsImage, the skipped devices and image files.
    Summary,
    /// The Switch and OsImage objects, a YAML stream for `kubectl apply -f -`.
    Yaml,
}

#[derive(Clone, Copy, ValueEnum)]
enum DhcpFormat {
    Isc,
    Kea,
}

#[derive(Clone, Copy, ValueEnum)]
enum ZtpFamilyArg {
    Nvos,
    Sonic,
}

#[derive(Clone, Copy, ValueEnum)]
enum FamilyArg {
    Onie,
    Nvos,
    Sonic,
    Cumulus,
    Rtbrick,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("{0}")]
    Server(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("cannot reach {server}: {source}")]
    Http { server: String, source: reqwest::Error },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Profiles(#[from] ztp_operator::manifests::ManifestsError),
    #[error(transparent)]
    Dhcp(#[from] DhcpError),
    #[error(transparent)]
    Device(#[from] DryRunError),
    #[error("{}", nautobot_message(.0))]
    Nautobot(#[from] NautobotError),
    #[error("{path}: {source}")]
    Source { path: String, source: CheckError },
    #[error(transparent)]
    Check(#[from] CheckError),
}

/// Nautobot's error, with the flag to fix when it refused the token or a certificate was refused.
fn nautobot_message(e: &NautobotError) -> String {
    match e {
        NautobotError::Refused { url, status, detail } => format!(
            "Nautobot refused the token for {url} (HTTP {status}: {detail}): check --token or NAUTOBOT_TOKEN and the token's permissions"
        ),
        NautobotError::Untrusted { .. } => format!("{e}: give the CA that signed it with --ca-bundle FILE"),
        other => other.to_string(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // `nautobot check --token` shares its name with the global `--token`: clap hands the
    // subcommand ZTP_TOKEN when neither --token nor NAUTOBOT_TOKEN is given. The server's token
    // must not go to Nautobot: only a --token typed on the line, else NAUTOBOT_TOKEN, counts.
    if let Command::Nautobot { command: NautobotCommand::Check { token, .. } } = &mut cli.command {
        let check = matches.subcommand_matches("nautobot").and_then(|m| m.subcommand_matches("check"));
        if check.and_then(|m| m.value_source("token")) != Some(ValueSource::CommandLine) {
            *token = std::env::var("NAUTOBOT_TOKEN").ok();
        }
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Error> {
    let server = cli.server.trim_end_matches('/').to_owned();
    let c = Client::new();
    let http = |source| Error::Http { server: server.clone(), source };
    let request = |method: Method, path: String| {
        let r = c.request(method, format!("{server}{path}"));
        match &cli.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    };
    match cli.command {
        Command::Upload { file, platform, version, name, checksum, firmware_image, overwrite } => {
            let io = |what: &str| {
                let what = format!("{what} {}", file.display());
                move |source| Error::Io { what, source }
            };
            let size = tokio::fs::metadata(&file).await.map_err(io("read"))?.len();
            let filename = match name.or_else(|| file.file_name().map(|n| n.to_string_lossy().into_owned())) {
                Some(n) => n,
                None => {
                    return Err(Error::Usage(format!("{} has no file name; give --name", file.display())));
                }
            };
            // The server refuses these before reading the body, and a client still sending a large
            // body only sees the connection close: ask first, so the user reads why.
            let who = answer(request(Method::GET, "/whoami".into()).send().await.map_err(http)?).await?;
            let who: serde_json::Value = serde_json::from_slice(&who).unwrap_or_default();
            if !who["roles"].as_array().is_some_and(|r| r.iter().any(|r| r == "admin")) {
                let why = if cli.token.is_some() { "Invalid or expired credentials" } else { NO_CREDENTIAL };
                return Err(Error::Server(format!("403 Forbidden: {why} (give --token or ZTP_TOKEN)")));
            }
            let exists = format!("/v1/files/{platform}/{version}/{filename}/checksum");
            if !overwrite && request(Method::GET, exists).send().await.map_err(http)?.status().is_success() {
                let why = format!(
                    "File already exists: {platform}/{version}/{filename} (give --overwrite to replace it)"
                );
                return Err(Error::Server(why));
            }
            let checksum = match checksum {
                Some(c) => c,
                None => hash_file(&file, size).await.map_err(io("hash"))?,
            };
            let bar = bar(size, "upload");
            let reader = tokio::fs::File::open(&file).await.map_err(io("open"))?;
            let progress = bar.clone();
            let stream = ReaderStream::with_capacity(reader, 1 << 20).inspect(move |chunk| {
                if let Ok(c) = chunk {
                    progress.inc(c.len() as u64);
                }
            });
            let part = multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), size)
                .file_name(filename.clone())
                .mime_str("application/octet-stream")
                .map_err(http)?;
            let query = format!("checksum={checksum}&firmware_image={firmware_image}&overwrite={overwrite}");
            let path = format!("/v1/files/{platform}/{version}/{filename}?{query}");
            let r =
                request(Method::POST, path).multipart(multipart::Form::new().part("file", part)).send().await;
            bar.finish_and_clear();
            answer(r.map_err(http)?).await?;
            println!("uploaded {platform}/{version}/{filename} ({size} bytes, sha256 {checksum})");
        }
        Command::Ls { platform, version } => {
            let path = match (&platform, &version) {
                (Some(p), Some(v)) => format!("/v1/files/{p}/{v}/"),
                (None, None) => "/v1/files/".to_owned(),
                _ => return Err(Error::Usage("give both PLATFORM and VERSION, or neither".into())),
            };
            let body = answer(request(Method::GET, path).send().await.map_err(http)?).await?;
            let list: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap_or_default();
            for f in list {
                let name = f.get("key").or_else(|| f.get("file")).and_then(|v| v.as_str()).unwrap_or("?");
                let size = f.get("size").and_then(|v| v.as_u64()).map_or("-".to_owned(), |s| s.to_string());
                let sha = f.get("sha256").and_then(|v| v.as_str()).unwrap_or("");
                let firmware = f.get("tags").and_then(|t| t.get("firmware-image")).is_some();
                println!("{size:>12}  {}{name}  {sha}", if firmware { "* " } else { "  " });
            }
        }
        Command::Checksum { platform, version, filename } => {
            let path = format!("/v1/files/{platform}/{version}/{filename}/checksum");
            let body = answer(request(Method::GET, path).send().await.map_err(http)?).await?;
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            println!("{}", v["checksum"].as_str().unwrap_or_default());
        }
        Command::Rm { platform, version, filename } => {
            let path = format!("/v1/files/{platform}/{version}/{filename}");
            answer(request(Method::DELETE, path).send().await.map_err(http)?).await?;
            println!("deleted {platform}/{version}/{filename}");
        }
        Command::Dhcp { format, profiles, server_url, ztp_family } => {
            dhcp_command(format, &profiles, server_url.as_deref().unwrap_or(&server), ztp_family)?;
        }
        Command::Nautobot {
            command: NautobotCommand::Check { url, token, ca_bundle, source, namespace, output },
        } => {
            let check = NautobotCheck { url, token, ca_bundle, source, namespace, output };
            nautobot_check(check).await?;
        }
        Command::Device { serial, mac, model, family, operation } => {
            let device = Device { serial, mac, model, onie_operation: operation };
            device_command(&server, family, &device).await?;
        }
        Command::Switches { data } => {
            let fleet = match data {
                Some(data) => read_fleet(&data)?,
                None => {
                    let body =
                        answer(request(Method::GET, "/v1/switches".into()).send().await.map_err(http)?)
                            .await?;
                    parse_switches(&body, &format!("{server}/v1/switches"))?
                }
            };
            print!("{}", show::table(&fleet.iter().collect::<Vec<_>>()));
        }
        Command::Switch { serial, data } => {
            let switch = match data {
                Some(data) => read_fleet(&data)?
                    .into_iter()
                    .find(|s| s.spec.serial_number == serial)
                    .ok_or_else(|| {
                        Error::Usage(format!("no Switch with serial number {serial} in {}", data.display()))
                    })?,
                None => {
                    // A serial number is a safe path segment (the Switch's schema says so): no escaping.
                    ztp_operator::api::names::validate_segment("serial number", &serial)
                        .map_err(|e| Error::Usage(e.to_string()))?;
                    let path = format!("/v1/switches/{serial}");
                    let body = answer(request(Method::GET, path.clone()).send().await.map_err(http)?).await?;
                    serde_json::from_slice(&body)
                        .map_err(|e| Error::Server(format!("{server}{path}: not a Switch: {e}")))?
                }
            };
            print!("{}", show::describe(&switch));
        }
    }
    Ok(())
}

/// The Switches of standalone's data folder.
fn read_fleet(data: &std::path::Path) -> Result<Vec<ztp_operator::api::Switch>, Error> {
    let path = data.join(".status").join(fleet::FILE);
    let bytes = std::fs::read(&path).map_err(|source| Error::Io {
        what: format!("read {} (standalone writes it while it serves devices)", path.display()),
        source,
    })?;
    parse_switches(&bytes, &path.display().to_string())
}

/// A JSON list of Switches (the file standalone writes, or the server's `GET /v1/switches`),
/// read from `from`.
fn parse_switches(bytes: &[u8], from: &str) -> Result<Vec<ztp_operator::api::Switch>, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Usage(format!("{from}: not a list of Switches: {e}")))
}

fn bar(size: u64, what: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(size);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:8} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what);
    bar
}

/// The SHA-256 of a file, read in 1 MiB chunks.
async fn hash_file(file: &std::path::Path, size: u64) -> std::io::Result<String> {
    let bar = bar(size, "sha256");
    let mut f = tokio::fs::File::open(file).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok(Sha256Digest::finish(hasher).to_string())
}

/// The body of a successful answer; otherwise the server's `detail` as the error.
async fn answer(r: reqwest::Response) -> Result<bytes::Bytes, Error> {
    let status = r.status();
    let body = r.bytes().await.unwrap_or_default();
    if status.is_success() {
        return Ok(body);
    }
    let detail = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| detail_text(&v["detail"]))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned());
    let hint = if status == StatusCode::FORBIDDEN { " (give --token or ZTP_TOKEN)" } else { "" };
    Err(Error::Server(format!("{status}: {detail}{hint}")))
}

/// The server's `detail`: a refusal's text, or a validation error's list (`422`, FastAPI's
/// `[{loc, msg, type}]`) as `query.checksum: msg; …`.
fn detail_text(detail: &serde_json::Value) -> Option<String> {
    match detail {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Array(errors) => Some(
            errors
                .iter()
                .map(|e| {
                    let loc: Vec<String> = e["loc"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|l| l.as_str().map_or_else(|| l.to_string(), str::to_owned))
                        .collect();
                    format!("{}: {}", loc.join("."), e["msg"].as_str().unwrap_or("invalid"))
                })
                .collect::<Vec<_>>()
                .join("; "),
        ),
        _ => None,
    }
}

/// `ztpctl dhcp`: the configuration on stdout, the notes on stderr.
fn dhcp_command(
    format: DhcpFormat,
    profiles: &std::path::Path,
    server_url: &str,
    ztp_family: ZtpFamilyArg,
) -> Result<(), Error> {
    let (list, switches) = ztp_operator::manifests::read_profiles_and_switches(profiles)?;
    let ztp_family = match ztp_family {
        ZtpFamilyArg::Nvos => Family::Nvos,
        ZtpFamilyArg::Sonic => Family::Sonic,
    };
    let options = dhcp::Options { server_url: server_url.to_owned(), ztp_family };
    let plan = dhcp::plan_with_switches(&list, &switches, &options)?;
    let server = dhcp::server_url(server_url)?;
    let source = match switches.len() {
        0 => format!("{} SwitchProfiles in {}", list.len(), profiles.display()),
        n => format!("{} SwitchProfiles and {n} Switches in {}", list.len(), profiles.display()),
    };
    for note in &plan.notes {
        eprintln!("note: {note}");
    }
    match format {
        DhcpFormat::Isc => print!("{}", dhcp::isc::render(&plan, &server, &source)),
        DhcpFormat::Kea => {
            let doc = dhcp::kea::render(&plan, &server, &source);
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
    }
    Ok(())
}

/// `ztpctl nautobot check`'s arguments.
struct NautobotCheck {
    url: Option<String>,
    token: Option<String>,
    ca_bundle: Option<PathBuf>,
    source: Option<PathBuf>,
    namespace: Option<String>,
    output: CheckOutput,
}

/// `ztpctl nautobot check`: one full read, mapped as the source would map it; the summary or the
/// objects on stdout.
async fn nautobot_check(c: NautobotCheck) -> Result<(), Error> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|source| Error::Io { what: format!("read {}", path.display()), source })
    };
    let source = match &c.source {
        Some(path) => {
            let text = String::from_utf8_lossy(&read(path)?).into_owned();
            let source = check::source_from_yaml(&text)
                .map_err(|source| Error::Source { path: path.display().to_string(), source })?;
            Some(source)
        }
        None => None,
    };
    let url = c.url.or_else(|| source.as_ref().map(|s| s.spec.url.clone())).ok_or_else(|| {
        Error::Usage("give --url (or NAUTOBOT_URL), or a --source file with spec.url".into())
    })?;
    let token = c
        .token
        .ok_or_else(|| Error::Usage("give --token (or NAUTOBOT_TOKEN): a Nautobot API token".into()))?;
    let ca = c.ca_bundle.as_deref().map(read).transpose()?;
    let mut spec = match &source {
        Some(s) => s.spec.clone(),
        None => serde_json::from_value(serde_json::json!({
            "url": url, "tokenSecretRef": {"name": "nautobot", "key": "token"},
        }))
        .map_err(|e| Error::Usage(format!("the default NautobotSource spec: {e}")))?,
    };
    spec.url.clone_from(&url);
    let namespace = c
        .namespace
        .or_else(|| source.as_ref().and_then(|s| s.metadata.namespace.clone()))
        .unwrap_or_else(|| "default".to_owned());
    let name = source
        .as_ref()
        .and_then(|s| s.metadata.name.clone())
        .unwrap_or_else(|| check::NO_SOURCE_NAME.to_owned());

    let client = nb::client::Nautobot::new(&url, &token, ca.as_deref())?;
    let (inventory, _) = nb::read::full(&client, &spec).await?;
    let desired = nb::desired(&inventory, &spec);
    match c.output {
        CheckOutput::Summary => {
            print!("{}", check::summary(&desired, inventory.devices.len(), client.requests()))
        }
        CheckOutput::Yaml => print!("{}", check::yaml(&desired, &namespace, &name)?),
    }
    Ok(())
}

/// `ztpctl device`: each request with its headers, the status, and the body or image facts.
async fn device_command(server: &str, family: FamilyArg, device: &Device) -> Result<(), Error> {
    let family = match family {
        FamilyArg::Onie => Family::Onie,
        FamilyArg::Nvos => Family::Nvos,
        FamilyArg::Sonic => Family::Sonic,
        FamilyArg::Cumulus => Family::Cumulus,
        FamilyArg::Rtbrick => Family::RtBrick,
    };
    // Devices do not follow redirects (SONiC never; ONIE only some): show them as they are.
    let c = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|source| Error::Http { server: server.to_owned(), source })?;
    let mut failed = Vec::new();
    let mut answered = false;
    for r in dryrun::requests(family, device, server)? {
        let (status, body) = send(&c, server, r.method, &r.url, &r.headers, r.expect).await?;
        answered |= status.is_success();
        let ok = status.is_success() || (r.not_found_ok && status == StatusCode::NOT_FOUND);
        if !ok {
            failed.push(format!("{} {}: {status}", r.method, r.url));
        }
        // A ZTP JSON's images: HEAD only, as the device would find them.
        if status.is_success()
            && let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body)
        {
            for url in dryrun::image_urls(&json) {
                let (status, _) = send(&c, server, "HEAD", &url, &r.headers, Expect::Image).await?;
                if !status.is_success() {
                    failed.push(format!("HEAD {url}: {status}"));
                }
            }
        }
    }
    if !answered && failed.is_empty() {
        failed.push("nothing answered for this device".into());
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::Server(format!("the device would fail: {}", failed.join("; "))))
    }
}

/// Sends one request and prints it and its answer; returns the status and body (empty for HEAD).
async fn send(
    c: &Client,
    server: &str,
    method: &'static str,
    url: &str,
    headers: &[(&'static str, String)],
    expect: Expect,
) -> Result<(StatusCode, bytes::Bytes), Error> {
    let http = |source| Error::Http { server: server.to_owned(), source };
    let method = if method == "HEAD" { Method::HEAD } else { Method::GET };
    println!("{method} {url}");
    let mut req = c.request(method, url);
    for (k, v) in headers {
        println!("> {k}: {v}");
        req = req.header(*k, v);
    }
    let r = req.send().await.map_err(http)?;
    let status = r.status();
    println!("< {status}");
    let h = r.headers();
    let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Some(t) = get("content-type") {
        println!("< content-type: {t}");
    }
    if expect == Expect::Image {
        let size = get("content-length").unwrap_or_else(|| "-".into());
        let etag = get("etag").unwrap_or_else(|| "-".into());
        println!("< size: {size}  etag: {etag}");
        if let Some(l) = get("location") {
            println!("< location: {l}");
        }
        println!();
        return Ok((status, bytes::Bytes::new()));
    }
    let body = r.bytes().await.map_err(http)?;
    println!();
    let text = String::from_utf8_lossy(&body);
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    println!();
    Ok((status, body))
}
