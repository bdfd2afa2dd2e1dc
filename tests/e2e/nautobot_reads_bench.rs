//! REST or GraphQL for the full read (issue 17: "reads through Nautobot's REST API, or GraphQL if
//! one query is clearly better: measure"), run by `bench/nautobot.sh reads`: the same real
//! Nautobot 3.2.7 holding `ZTP_NB_DEVICES` (5,000) devices and `ZTP_NB_IMAGES` (50) image files as
//! the sync benchmark (`scripts/nautobot start --fleet`, the cached snapshot), read in this
//! process through a counting forwarder ([`Forwarder`]), three ways:
//!
//! * **REST**: ztp-operator's REST full read ([`read::full_rest`], what the full read was before it
//!   moved to GraphQL: the newest change-log entry, the devices with
//!   `include=config_context&exclude_m2m=false`, the `eth0` interfaces, platforms, roles, device
//!   types, software versions and image files; 1,000 a page, two lists at a time);
//! * **GraphQL, paged**: `POST /api/graphql/`, one query per 1,000 devices and 1,000 interfaces,
//!   the first also holding the small lists and the newest change-log entry;
//! * **GraphQL, one query**: all of it in one query: ztp-operator's full read ([`read::full`],
//!   [`read::full_query`]).
//!
//! The GraphQL queries ask for exactly the fields the REST objects are read for
//! (`ztp_operator::nautobot::model`), aliased to the REST names, so their answers parse into the same
//! types and build the same [`Inventory`]; the test asserts both declare the same Switches and
//! OsImages. Each read: wall time, requests, bytes received (heads and bodies, at the forwarder),
//! and CPU seconds of Nautobot's uWSGI processes and of its PostgreSQL from `/proc`. A warm-up
//! round first (each uWSGI worker builds its GraphQL schema once), then `ZTP_NB_READ_ROUNDS` (2)
//! rounds; each printed line starts `nautobot-bench: reads:`.

use std::time::Instant;

use serde::Deserialize;
use serde_json::json;
use ztp_operator::{
    api::nautobot::NautobotSourceSpec,
    nautobot::{
        client::Nautobot as Client,
        desired,
        map::{Inventory, keep_what_is_read},
        model::{Device, DeviceType, Interface, Platform, Role, SoftwareImageFile, SoftwareVersion},
        read,
    },
};

use crate::{
    nautobot_bench::tree_cpu,
    support::{
        forward::{Forwarder, Options},
        guard,
        nautobot::Nautobot,
    },
};

/// Devices (and interfaces) per paged GraphQL query: REST's page.
const PAGE: usize = 1000;

/// A device as the REST read keeps it (`custom_fields` and the rendered `config_context` under
/// their REST names).
const DEVICE: &str = "id name serial role { id } platform { id } device_type { id } \
     software_version { id } software_image_files { id } custom_fields: _custom_field_data config_context";
const INTERFACE: &str = "id name device { id } mac_address mgmt_only";
/// The small lists and the newest change-log entry (the mark a full read starts from).
const SMALL_LISTS: &str = "platforms { id name network_driver manufacturer { id } } \
     roles { id name } device_types { id model manufacturer { id } } \
     software_versions { id version alias platform { id } status { id } last_updated } \
     software_image_files { id image_file_name image_file_checksum hashing_algorithm image_file_size \
       download_url default_image software_version { id } status { id } last_updated } \
     object_changes(limit: 1) { id time }";

#[derive(Deserialize)]
struct Answer {
    data: Option<Lists>,
    #[serde(default)]
    errors: Vec<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct Lists {
    #[serde(default)]
    devices: Vec<Device>,
    #[serde(default)]
    interfaces: Vec<Interface>,
    #[serde(default)]
    platforms: Vec<Platform>,
    #[serde(default)]
    roles: Vec<Role>,
    #[serde(default)]
    device_types: Vec<DeviceType>,
    #[serde(default)]
    software_versions: Vec<SoftwareVersion>,
    #[serde(default)]
    software_image_files: Vec<SoftwareImageFile>,
}

/// The GraphQL query of one page (`Some((limit, offset))`) or of everything (`None`); the small
/// lists only with `first`.
fn query(page: Option<(usize, usize)>, first: bool, interface: &str) -> String {
    let (devices, interfaces) = match page {
        Some((limit, offset)) => (
            format!("devices(limit: {limit}, offset: {offset})"),
            format!("interfaces(name: [{interface:?}], limit: {limit}, offset: {offset})"),
        ),
        None => ("devices".to_owned(), format!("interfaces(name: [{interface:?}])")),
    };
    let small = if first { SMALL_LISTS } else { "" };
    format!("{{ {devices} {{ {DEVICE} }} {interfaces} {{ {INTERFACE} }} {small} }}")
}

/// Reads the source's inventory through GraphQL: pages of [`PAGE`], or one query.
async fn graphql(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    spec: &NautobotSourceSpec,
    paged: bool,
) -> (Inventory, u64) {
    let interface = spec.switches.mac.interface.clone().unwrap_or_else(|| "eth0".into());
    let mut inv = Inventory::default();
    let mut requests = 0;
    for n in 0.. {
        let page = paged.then_some((PAGE, n * PAGE));
        let body = json!({"query": query(page, n == 0, &interface)});
        let answer = http
            .post(format!("{url}/api/graphql/"))
            .header("Authorization", format!("Token {token}"))
            .header("Accept", "application/json")
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("POST /api/graphql/");
        requests += 1;
        let status = answer.status();
        let bytes = answer.bytes().await.expect("GraphQL answer");
        assert!(status.is_success(), "GraphQL: HTTP {status}: {}", String::from_utf8_lossy(&bytes));
        let answer: Answer = serde_json::from_slice(&bytes).expect("GraphQL answer JSON");
        assert!(answer.errors.is_empty(), "GraphQL errors: {:?}", answer.errors);
        let lists = answer.data.unwrap_or_default();
        let more = paged && (lists.devices.len() == PAGE || lists.interfaces.len() == PAGE);
        inv.add_devices(lists.devices.into_iter().map(|mut d| {
            keep_what_is_read(&mut d, spec);
            d
        }));
        inv.add_interfaces(lists.interfaces);
        inv.add_platforms(lists.platforms);
        inv.add_roles(lists.roles);
        inv.add_device_types(lists.device_types);
        inv.add_software_versions(lists.software_versions);
        inv.add_image_files(lists.software_image_files);
        if !more {
            break;
        }
    }
    (inv, requests)
}

/// One read's figures.
#[derive(Clone, Copy)]
struct Figures {
    secs: f64,
    requests: u64,
    bytes: u64,
    nautobot: f64,
    postgres: f64,
}

impl Figures {
    fn line(&self, devices: usize) -> String {
        format!(
            "{:.2} s, {} requests, {:.2} MB received; Nautobot CPU {:.2} s ({:.2} ms/device), PostgreSQL {:.2} s",
            self.secs,
            self.requests,
            self.bytes as f64 / 1e6,
            self.nautobot,
            self.nautobot * 1e3 / devices as f64,
            self.postgres
        )
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Way {
    Rest,
    GraphqlPaged,
    GraphqlOne,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Rest => "REST (ztp-operator's REST full read, before)",
            Way::GraphqlPaged => "GraphQL, one query per 1,000 devices",
            Way::GraphqlOne => "GraphQL, one query (ztp-operator's full read, now)",
        }
    }
}

/// REST against GraphQL for the full read (ignored by `cargo test`; `bench/nautobot.sh reads`).
#[tokio::test]
#[ignore = "a benchmark: bench/nautobot.sh reads runs it"]
async fn reads() {
    let _guard = guard("nautobot-reads");
    let devices: usize = std::env::var("ZTP_NB_DEVICES").ok().and_then(|v| v.parse().ok()).unwrap_or(5000);
    let images: usize = std::env::var("ZTP_NB_IMAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let rounds: usize = std::env::var("ZTP_NB_READ_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let nb = Nautobot::start_with_fleet("reads", &format!("--devices {devices} --images {images}")).await;
    let pid = |k: &str| -> u32 {
        nb.env.get(k).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{k} in env"))
    };
    let (nautobot_pid, postgres_pid) = (pid("NAUTOBOT_PID"), pid("POSTGRES_PID"));
    let fwd = Forwarder::start(&nb.url, Options::default()).await;
    // The sync benchmark's spec.
    let spec: NautobotSourceSpec = serde_json::from_value(json!({
        "url": fwd.url, "tokenSecretRef": {"name": "nautobot", "key": "token"},
        "switches": {"profiles": [{"role": "spine", "profile": "spines"}, {"role": "leaf", "profile": "leafs"}]},
    }))
    .expect("spec");
    // As ztp-operator's client: a connection per request.
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    println!(
        "nautobot-bench: reads: Nautobot {} with {devices} devices and {images} image files; the same reads through a counting forwarder, {rounds} round(s) after a warm-up",
        nb.env.get("NAUTOBOT_VERSION").map_or("?", String::as_str)
    );

    let read_once = async |way: Way| -> (Figures, Inventory) {
        let (cpu, pg, bytes, t) =
            (tree_cpu(nautobot_pid), tree_cpu(postgres_pid), fwd.answered_bytes(), Instant::now());
        let (inv, requests) = match way {
            Way::Rest => {
                let client = Client::new(&fwd.url, &nb.token, None).expect("client");
                let (inv, _) = read::full_rest(&client, &spec).await.expect("REST full read");
                (inv, client.requests())
            }
            Way::GraphqlPaged => graphql(&http, &fwd.url, &nb.token, &spec, true).await,
            Way::GraphqlOne => {
                let client = Client::new(&fwd.url, &nb.token, None).expect("client");
                let (inv, _) = read::full(&client, &spec).await.expect("GraphQL full read");
                (inv, client.requests())
            }
        };
        let secs = t.elapsed().as_secs_f64();
        let figures = Figures {
            secs,
            requests,
            bytes: fwd.answered_bytes() - bytes,
            nautobot: tree_cpu(nautobot_pid) - cpu,
            postgres: tree_cpu(postgres_pid) - pg,
        };
        (figures, inv)
    };

    let ways = [Way::Rest, Way::GraphqlPaged, Way::GraphqlOne];
    // Warm-up: each uWSGI worker's first GraphQL query builds the schema (seconds).
    let (_, rest) = read_once(Way::Rest).await;
    let rest = desired(&rest, &spec);
    assert_eq!(rest.switches.len() + rest.skipped.len(), devices, "the fleet's devices");
    for way in [Way::GraphqlPaged, Way::GraphqlOne, Way::GraphqlOne, Way::GraphqlOne] {
        let (f, inv) = read_once(way).await;
        println!("nautobot-bench: reads: warm-up, {}: {}", way.name(), f.line(devices));
        assert_eq!(desired(&inv, &spec), rest, "{}: the same Switches and OsImages as REST", way.name());
    }
    println!(
        "nautobot-bench: reads: each way declares the same {} Switches and {} OsImages",
        rest.switches.len(),
        rest.images.len()
    );

    let mut best: Vec<(Way, Figures)> = Vec::new();
    for round in 1..=rounds {
        for way in ways {
            let (f, _) = read_once(way).await;
            println!("nautobot-bench: reads: round {round}, {}: {}", way.name(), f.line(devices));
            match best.iter_mut().find(|(w, _)| *w == way) {
                Some((_, b)) if b.secs <= f.secs => {}
                Some((_, b)) => *b = f,
                None => best.push((way, f)),
            }
        }
    }
    let rest = best.iter().find(|(w, _)| *w == Way::Rest).map(|(_, f)| *f).expect("REST");
    for (way, f) in best.iter().filter(|(w, _)| *w != Way::Rest) {
        println!(
            "nautobot-bench: reads: {} against REST (fastest of each): wall {:.2}x, Nautobot CPU {:.2}x, PostgreSQL CPU {:.2}x, bytes {:.2}x, requests {} vs {}",
            way.name(),
            f.secs / rest.secs,
            f.nautobot / rest.nautobot,
            f.postgres / rest.postgres,
            f.bytes as f64 / rest.bytes as f64,
            f.requests,
            rest.requests
        );
    }
}
