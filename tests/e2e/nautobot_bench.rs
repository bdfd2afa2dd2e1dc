//! The benchmark of issue 17 (Nautobot as the source of truth), run by `bench/nautobot.sh`:
//! a real Nautobot 3.2.7 holding `ZTP_NB_DEVICES` (5,000) devices and `ZTP_NB_IMAGES` (50) image
//! files (`scripts/nautobot start --fleet`, a cached snapshot), the **release** controller binary
//! (`ZTP_CONTROLLER_BIN`) as a process against a real kube-apiserver + etcd, and one
//! NautobotSource (`intervalSeconds: 10`). Figures, not a pass/fail timing: each printed line
//! starts `nautobot-bench:` and carries its target beside it.
//!
//! Measured, each over its own window, with CPU seconds (utime + stime from `/proc`) of the
//! controller, of Nautobot's uWSGI processes (master and workers), of its PostgreSQL (postmaster
//! and backends) and of this run's kube-apiserver + etcd; Nautobot's requests are the lines of
//! its uWSGI request log (`DIR/nautobot.log`), the apiserver's writes are counted by a metadata
//! watch on Switches and OsImages:
//!
//! * a reference: the same full read by the library in this process (no applies), before the
//!   controller starts: what Nautobot alone takes to serve the fleet;
//! * the first sync: from creating the source until its status says it synced every device
//!   (`lastSyncTime` set, `Ready=True`, `switches.total` = the devices); the read's end from the
//!   controller's debug line `read Nautobot`;
//! * an idle baseline (10 s, no source), then two no-change resyncs: the next polls (expected:
//!   one request, no write); a poll's duration is the gap between two status writes less the
//!   interval;
//! * one change (`set-mac` on a device): the poll that follows, its requests, and the time until
//!   the Switch shows it;
//! * the controller's peak RSS (`VmHWM`), and its RSS after each window;
//! * a restarted controller: its sync, the writes its re-apply makes, what one changed.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::TryStreamExt;
use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{Api, api::PostParams, core::PartialObjectMeta, runtime::watcher};
use serde_json::json;
use ztp_operator::{
    api::{NautobotSource, OsImage, Switch, nautobot::NautobotSourceSpec},
    nautobot::{client::Nautobot as Client, read},
    switch::name::for_serial,
};

use crate::support::{
    self, binaries,
    nautobot::Nautobot,
    procs,
    store::{Backend, TestStore},
};

/// CPU seconds (utime + stime, and with `children` cutime + cstime: its reaped children's) of
/// one process, from `/proc/PID/stat` (clock ticks of 1/100 s).
fn cpu_of(pid: u32, children: bool) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<f64> = after_name.split_whitespace().map(|v| v.parse().unwrap_or(0.0)).collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0.0);
    // After the name: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
    let own = at(11) + at(12);
    (if children { own + at(13) + at(14) } else { own }) / 100.0
}

/// The parent of a process, from `/proc/PID/stat`.
fn ppid_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds of a process and its direct children (uWSGI's workers, PostgreSQL's backends),
/// those that ended included (their time is in the parent's cutime + cstime).
pub(crate) fn tree_cpu(root: u32) -> f64 {
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    let children: f64 = pids.iter().filter(|p| ppid_of(**p) == Some(root)).map(|p| cpu_of(*p, true)).sum();
    cpu_of(root, true) + children
}

/// `VmHWM` / `VmRSS` of a process in KiB.
fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap_or("");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The requests Nautobot's uWSGI logged so far, one line each (`[pid: …|app: 0|req: …] 127.0.0.1
/// () {…} [date] GET /api/… => generated N bytes in M msecs (HTTP/1.1 200) …`), written when
/// each answer is done.
fn served(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("[pid: ") && l.contains(" => generated "))
        .map(str::to_owned)
        .collect()
}

/// `GET /api/… (M ms)` of a uWSGI request line.
fn request_summary(line: &str) -> String {
    let what = line.split("] ").nth(2).unwrap_or(line);
    let (req, rest) = what.split_once(" => ").unwrap_or((what, ""));
    let ms = rest.split(" in ").nth(1).and_then(|r| r.split(' ').next()).unwrap_or("?");
    let req: String = req.chars().take(110).collect();
    format!("{req} ({ms} ms)")
}

/// The controller's `RUST_LOG`: the sync's `read Nautobot` lines (at debug) are what the figures read.
const CONTROLLER_LOG: &str =
    "info,ztp_operator::controller::nautobot=debug,ztp_operator::nautobot::sync=debug";

/// The `read Nautobot` debug lines of the controller's log: (time, requests, full).
fn reads(log: &Path) -> Vec<(Timestamp, u64, bool)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("read Nautobot"))
        .filter_map(|l| {
            let at: Timestamp = l.split_whitespace().next()?.parse().ok()?;
            let field = |k: &str| l.split_whitespace().find_map(|w| w.strip_prefix(k)).map(str::to_owned);
            let requests = field("requests=")?.parse().ok()?;
            Some((at, requests, field("full=").as_deref() == Some("true")))
        })
        .collect()
}

fn secs_between(a: Timestamp, b: Timestamp) -> f64 {
    (b.as_nanosecond() - a.as_nanosecond()) as f64 / 1e9
}

/// Writes the apiserver made to objects of one kind, as a watch sees them.
#[derive(Default)]
struct Writes {
    events: u64,
    names: HashSet<String>,
}

fn count_writes<K>(api: Api<PartialObjectMeta<K>>) -> (Arc<Mutex<Writes>>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    let writes = Arc::new(Mutex::new(Writes::default()));
    let counted = writes.clone();
    let task = tokio::spawn(async move {
        let _ = watcher(api, watcher::Config::default())
            .try_for_each(move |e| {
                if let watcher::Event::Apply(o) = e {
                    let mut w = counted.lock().expect("lock");
                    w.events += 1;
                    w.names.insert(o.metadata.name.unwrap_or_default());
                }
                futures::future::ready(Ok(()))
            })
            .await;
    });
    (writes, task)
}

/// Everything counted at one moment; windows are differences of two.
#[derive(Clone, Debug)]
struct Sample {
    at: Instant,
    requests: usize,
    nautobot: f64,
    postgres: f64,
    controller: f64,
    control_plane: f64,
    switch_writes: u64,
    switch_names: usize,
    image_writes: u64,
    image_names: usize,
}

/// One window: what happened between two samples.
struct Window {
    secs: f64,
    requests: usize,
    nautobot: f64,
    postgres: f64,
    controller: f64,
    control_plane: f64,
    switch_writes: u64,
    switch_names: usize,
    image_writes: u64,
    image_names: usize,
}

impl Sample {
    fn to(&self, later: &Sample) -> Window {
        Window {
            secs: later.at.duration_since(self.at).as_secs_f64(),
            requests: later.requests - self.requests,
            nautobot: later.nautobot - self.nautobot,
            postgres: later.postgres - self.postgres,
            controller: later.controller - self.controller,
            control_plane: later.control_plane - self.control_plane,
            switch_writes: later.switch_writes - self.switch_writes,
            switch_names: later.switch_names - self.switch_names,
            image_writes: later.image_writes - self.image_writes,
            image_names: later.image_names - self.image_names,
        }
    }
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 { format!("{:.2}x", a / b) } else { "n/a".into() }
}

fn synced(s: &NautobotSource) -> Option<(String, bool, i64)> {
    let st = s.status.as_ref()?;
    let last = st.last_sync_time.as_ref()?.0.to_string();
    let ready = st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
    Some((last, ready, st.switches.as_ref().map_or(0, |c| c.total)))
}

/// The apiserver's `apiserver_request_total`, summed by verb and resource (with subresource).
async fn apiserver_requests(client: &kube::Client) -> std::collections::BTreeMap<String, f64> {
    let text = client
        .request_text(http::Request::get("/metrics").body(Vec::new()).expect("request"))
        .await
        .unwrap_or_default();
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let label = |k: &str| {
            labels.split(&format!("{k}=\"")).nth(1).and_then(|r| r.split('"').next()).unwrap_or("").to_owned()
        };
        let sub = label("subresource");
        let key = format!(
            "{} {}{}",
            label("verb"),
            label("resource"),
            if sub.is_empty() { sub } else { format!("/{sub}") }
        );
        *out.entry(key).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

/// The requests of a window by verb and resource, most first.
fn request_diff(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) -> String {
    let mut d: Vec<(String, f64)> = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect();
    d.sort_by(|a, b| b.1.total_cmp(&a.1));
    d.iter().take(10).map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
}

/// The paths where two JSON values differ, with both sides (cut short).
fn diff(at: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value::Object;
    match (a, b) {
        (Object(x), Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let null = serde_json::Value::Null;
                diff(&format!("{at}.{k}"), x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null), out);
            }
        }
        _ if a != b => {
            let cut = |v: &serde_json::Value| v.to_string().chars().take(300).collect::<String>();
            out.push(format!("{at}: {} -> {}", cut(a), cut(b)));
        }
        _ => {}
    }
}

/// The benchmark of issue 17 (ignored by `cargo test`; `bench/nautobot.sh` runs it).
#[tokio::test]
#[ignore = "a benchmark: bench/nautobot.sh runs it"]
async fn sync() {
    let devices: usize = std::env::var("ZTP_NB_DEVICES").ok().and_then(|v| v.parse().ok()).unwrap_or(5000);
    let images: usize = std::env::var("ZTP_NB_IMAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let interval: u64 = 10;
    let program = std::env::var_os("ZTP_CONTROLLER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ztp-operator")));
    let t = support::kube_test("nautobot-bench").await;
    let store = TestStore::new(Backend::Fs, "nautobot-bench").await;
    let started = Instant::now();
    let nb = Nautobot::start_with_fleet("bench", &format!("--devices {devices} --images {images}")).await;
    let pid = |k: &str| -> u32 {
        nb.env.get(k).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{k} in env"))
    };
    let (nautobot_pid, postgres_pid) = (pid("NAUTOBOT_PID"), pid("POSTGRES_PID"));
    let nb_log = nb.dir.join("nautobot.log");
    println!(
        "nautobot-bench: Nautobot {} with {devices} devices and {images} image files up in {:.1} s; controller {}",
        nb.env.get("NAUTOBOT_VERSION").map_or("?", String::as_str),
        started.elapsed().as_secs_f64(),
        program.display()
    );
    let control_plane_pids = support::env().await.control_plane.pids();

    let ns = t.namespace.clone();
    let (switch_writes, switch_watch) =
        count_writes(Api::<PartialObjectMeta<Switch>>::namespaced(t.client.clone(), &ns));
    let (image_writes, image_watch) =
        count_writes(Api::<PartialObjectMeta<OsImage>>::namespaced(t.client.clone(), &ns));
    let controller_pid = Arc::new(Mutex::new(None::<u32>));
    let sample = {
        let (nb_log, controller_pid) = (nb_log.clone(), controller_pid.clone());
        let (switch_writes, image_writes) = (switch_writes.clone(), image_writes.clone());
        move || {
            let (sw, img) = (switch_writes.lock().expect("lock"), image_writes.lock().expect("lock"));
            Sample {
                at: Instant::now(),
                requests: served(&nb_log).len(),
                nautobot: tree_cpu(nautobot_pid),
                postgres: tree_cpu(postgres_pid),
                controller: controller_pid.lock().expect("lock").map_or(0.0, |p| cpu_of(p, false)),
                control_plane: control_plane_pids.iter().map(|p| cpu_of(*p, false)).sum(),
                switch_writes: sw.events,
                switch_names: sw.names.len(),
                image_writes: img.events,
                image_names: img.names.len(),
            }
        }
    };

    // The spec of the source (its switches.profiles as a site would have them).
    let spec_json = json!({
        "url": nb.url, "tokenSecretRef": {"name": "nautobot", "key": "token"}, "intervalSeconds": interval,
        "switches": {"profiles": [{"role": "spine", "profile": "spines"}, {"role": "leaf", "profile": "leafs"}]},
    });

    // Reference: the same full read in this process, nothing applied.
    let spec: NautobotSourceSpec = serde_json::from_value(spec_json.clone()).expect("spec");
    let client = Client::new(&nb.url, &nb.token, None).expect("client");
    let before = sample();
    let (inventory, _) = read::full(&client, &spec).await.expect("reference full read");
    let reference = before.to(&sample());
    assert_eq!(inventory.devices.len(), devices, "the fleet's devices");
    println!(
        "nautobot-bench: reference: the full read alone (library in the test process, no applies): {:.1} s, {} requests ({} in Nautobot's log); Nautobot CPU {:.1} s ({:.2} ms/device), PostgreSQL {:.1} s",
        reference.secs,
        client.requests(),
        reference.requests,
        reference.nautobot,
        reference.nautobot * 1e3 / devices as f64,
        reference.postgres
    );
    drop(inventory);

    // The release controller, as a process.
    let metrics = format!("127.0.0.1:{}", procs::free_port());
    let args: Vec<String> = [
        "controller".to_owned(),
        format!("--namespace={ns}"),
        "--leader-elect=false".into(),
        format!("--metrics-listen={metrics}"),
        // The fleet's image URLs lead nowhere (127.0.0.1:99): one attempt each, then Stalled, so
        // that retried fetches do not run through the windows measured.
        "--fetch-max-attempts=1".into(),
    ]
    .into_iter()
    .chain(store.flags())
    .collect();
    let log_name = "nautobot-bench-controller.log";
    // A diagnosis may run the controller under a tool (`ZTP_NB_CONTROLLER_WRAP="heaptrack -o F"`);
    // its CPU and RSS figures are then the tool's, not the controller's.
    let wrap: Vec<String> = std::env::var("ZTP_NB_CONTROLLER_WRAP")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    // `{n}` in it: 1 for the first controller process, 2 for the restarted one.
    let command = |n: usize| -> (PathBuf, Vec<String>) {
        match wrap.split_first() {
            None => (program.clone(), args.clone()),
            Some((tool, tool_args)) => {
                let mut all: Vec<String> =
                    tool_args.iter().map(|a| a.replace("{n}", &n.to_string())).collect();
                all.push(program.display().to_string());
                all.extend(args.iter().cloned());
                (PathBuf::from(tool), all)
            }
        }
    };
    let (run, run_args) = command(1);
    let mut controller = binaries::with_cluster_as(&run, &run_args, CONTROLLER_LOG, log_name).await;
    let controller_log = support::env().await.log_dir.join(log_name);
    *controller_pid.lock().expect("lock") = Some(controller.child.id());
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        controller.assert_running();
        let r = http.get(format!("http://{metrics}/readyz")).send().await;
        if r.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "controller not ready:\n{}", procs::tail(&controller.log, 30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // its watches listed
    let idle_rss = status_kib(controller.child.id(), "VmRSS:");
    // A baseline: 10 s of the controller and the control plane with no source.
    let idle_start = sample();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle = idle_start.to(&sample());
    println!(
        "nautobot-bench: idle baseline, {:.1} s with no source: controller {:.2} s CPU, Nautobot {:.2} s, kube-apiserver + etcd {:.2} s",
        idle.secs, idle.controller, idle.nautobot, idle.control_plane
    );

    let secrets: Api<Secret> = Api::namespaced(t.client.clone(), &ns);
    let secret: Secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "nautobot"}, "stringData": {"token": nb.token}}))
    .expect("secret");
    secrets.create(&PostParams::default(), &secret).await.expect("create Secret");
    let sources: Api<NautobotSource> = Api::namespaced(t.client.clone(), &ns);
    let source: NautobotSource = serde_json::from_value(json!({
        "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "NautobotSource", "metadata": {"name": "bench"},
        "spec": spec_json,
    }))
    .expect("source");

    // Waits for a status write after `after` (its lastSyncTime differs); polls every 100 ms.
    let next_sync = |after: Option<String>, what: &'static str, limit: u64| {
        let sources = sources.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(limit);
            loop {
                let s = sources.get("bench").await.expect("get source");
                if let Some(found) = synced(&s)
                    && Some(&found.0) != after.as_ref()
                {
                    return (Instant::now(), found, s);
                }
                assert!(Instant::now() < deadline, "{what}: no sync within {limit} s: {:#?}", s.status);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };

    // The controller's RSS every 100 ms: where its peak falls (the read, or the applies).
    let rss_series = Arc::new(Mutex::new(Vec::<(Timestamp, u64)>::new()));
    let rss_task = {
        let (series, pid) = (rss_series.clone(), controller.child.id());
        tokio::spawn(async move {
            loop {
                let kib = status_kib(pid, "VmRSS:");
                series.lock().expect("lock").push((Timestamp::now(), kib));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // (a) The first sync.
    let start = sample();
    let created_at = Timestamp::now();
    sources.create(&PostParams::default(), &source).await.expect("create source");
    let (mut seen_at, mut found, mut status) = next_sync(None, "first sync", 900).await;
    let first_status = start.at.elapsed().as_secs_f64();
    let first_ready = found.1;
    let mut polls = 1;
    while !(found.1 && found.2 == devices as i64) {
        let st = status.status.as_ref();
        println!(
            "nautobot-bench: first sync: poll {polls} ended {:.1} s after the source was made, not yet all synced: Ready {}, Switches {}, {:?}",
            seen_at.duration_since(start.at).as_secs_f64(),
            found.1,
            found.2,
            st.map(|s| s
                .conditions
                .iter()
                .map(|c| format!("{} {} {}", c.type_, c.status, c.message))
                .collect::<Vec<_>>())
        );
        assert!(polls < 10, "not synced after {polls} polls");
        (seen_at, found, status) = next_sync(Some(found.0.clone()), "first sync, again", 900).await;
        polls += 1;
    }
    let first = start.to(&sample());
    let first_secs = seen_at.duration_since(start.at).as_secs_f64();
    let st = status.status.clone().expect("status");
    let read_end = reads(&controller_log).into_iter().find(|r| r.2);
    let read_secs = read_end.map(|r| secs_between(created_at, r.0));
    let (sw, img) = (st.switches.clone().unwrap_or_default(), st.images.clone().unwrap_or_default());
    println!(
        "nautobot-bench: first sync: {first_secs:.1} s (target <= 60 s: {}) from creating the source to its status with {} Switches (created {}), {} OsImages (created {}), {} devices, {} skipped; {polls} poll(s), the first status after {first_status:.1} s (Ready {first_ready})",
        met(first_secs <= 60.0),
        sw.total,
        sw.created,
        img.total,
        img.created,
        st.devices.unwrap_or(0),
        st.skipped.unwrap_or(0),
    );
    match (read_secs, read_end) {
        (Some(r), Some((_, requests, _))) => println!(
            "nautobot-bench: first sync, where the time goes: reading Nautobot {r:.1} s ({requests} requests; {:.2}x the reference read), applying and the status {:.1} s ({} Switches + {} OsImages applied: {:.0} applies/s)",
            r / reference.secs,
            first_secs - r,
            first.switch_names,
            first.image_names,
            (first.switch_names + first.image_names) as f64 / (first_secs - r).max(0.001)
        ),
        _ => println!(
            "nautobot-bench: first sync: no `read Nautobot` debug line in {}",
            controller_log.display()
        ),
    }
    println!("nautobot-bench: first sync requests: {} served by Nautobot (uWSGI log)", first.requests);
    if let Some((read_at, _, _)) = read_end {
        let series = rss_series.lock().expect("lock").clone();
        let peak = |keep: &dyn Fn(Timestamp) -> bool| {
            series.iter().filter(|(t, _)| keep(*t)).map(|(_, k)| *k).max().unwrap_or(0) as f64 / 1024.0
        };
        let end = Timestamp::now();
        println!(
            "nautobot-bench: first sync, controller RSS (sampled every 100 ms): {:.1} MiB at most while reading, {:.1} MiB at most while applying, {:.1} MiB at the end",
            peak(&|t| t >= created_at && t <= read_at),
            peak(&|t| t > read_at && t <= end),
            series.last().map_or(0.0, |(_, k)| *k as f64 / 1024.0)
        );
    }
    println!(
        "nautobot-bench: first sync CPU: controller {:.1} s ({:.2} ms/device), Nautobot {:.1} s ({:.2} ms/device) + its PostgreSQL {:.1} s; Nautobot / controller {}; kube-apiserver + etcd {:.1} s",
        first.controller,
        first.controller * 1e3 / devices as f64,
        first.nautobot,
        first.nautobot * 1e3 / devices as f64,
        first.postgres,
        ratio(first.nautobot, first.controller),
        first.control_plane
    );
    println!(
        "nautobot-bench: first sync apiserver writes: Switches {} events on {} objects, OsImages {} events on {} objects (their fetches' status writes included)",
        first.switch_writes, first.switch_names, first.image_writes, first.image_names
    );

    let rss_now = |pid: u32| status_kib(pid, "VmRSS:") as f64 / 1024.0;
    let mut rss_marks = vec![("before the source", idle_rss as f64 / 1024.0)];
    if let Some((read_at, _, _)) = read_end {
        let series = rss_series.lock().expect("lock").clone();
        if let Some((_, k)) = series.iter().find(|(t, _)| *t >= read_at) {
            rss_marks.push(("after the read", *k as f64 / 1024.0));
        }
    }
    rss_marks.push(("after the first sync", rss_now(controller.child.id())));

    // (b) No-change resyncs: the next poll (right after the first sync, while the rest of the
    // controller still takes in 5,000 new Switches), then the one after (quiet).
    let (mut last_at, mut last) = (seen_at, found.clone());
    for which in ["first no-change resync", "second no-change resync"] {
        let api_before = apiserver_requests(&t.client).await;
        let resync_start = sample();
        let resync_reads = reads(&controller_log).len();
        let (resync_at, found_b, _) = next_sync(Some(last.0.clone()), "no-change resync", 120).await;
        let resync = resync_start.to(&sample());
        let gap = resync_at.duration_since(last_at).as_secs_f64();
        let poll_secs = gap - interval as f64;
        let lines = served(&nb_log);
        let asked: Vec<String> = lines[resync_start.requests..resync_start.requests + resync.requests]
            .iter()
            .map(|l| request_summary(l))
            .collect();
        let logged = reads(&controller_log).get(resync_reads).map(|r| (r.1, r.2));
        println!(
            "nautobot-bench: {which}: {poll_secs:.2} s (target <= 5 s: {}; status {gap:.2} s after the last, interval {interval} s), Ready {}; {} Nautobot request(s) (target 1: {}) {asked:?}; the controller's count (requests, full) {logged:?}; apiserver writes: Switches {}, OsImages {}",
            met(poll_secs <= 5.0),
            found_b.1,
            resync.requests,
            met(resync.requests == 1),
            resync.switch_writes,
            resync.image_writes
        );
        println!(
            "nautobot-bench: {which} CPU over its {:.1} s window (the interval's idle time included): controller {:.2} s, Nautobot {:.2} s + PostgreSQL {:.2} s; Nautobot / controller {}; kube-apiserver + etcd {:.2} s",
            resync.secs,
            resync.controller,
            resync.nautobot,
            resync.postgres,
            ratio(resync.nautobot, resync.controller),
            resync.control_plane
        );
        println!(
            "nautobot-bench: {which}: the apiserver's requests in that window (this test's own polls of the source, 10/s, included): {}",
            request_diff(&api_before, &apiserver_requests(&t.client).await)
        );
        rss_marks.push((which, rss_now(controller.child.id())));
        (last_at, last) = (resync_at, found_b);
    }

    // (c) One change: a new MAC on sw-00001's management interface. The window starts once
    // Nautobot has logged the change's own PATCH (its log line comes after the answer).
    let mac = "02:5a:00:ab:cd:ef";
    let switch_name = for_serial("SN00001");
    let patches = || served(&nb_log).iter().filter(|l| l.contains("] PATCH ")).count();
    let patched = patches();
    nb.fleet(&["set-mac", "sw-00001", mac]).await;
    let changed = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    while patches() == patched && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let change_start = sample();
    let change_reads = reads(&controller_log).len();
    let switches: Api<Switch> = Api::namespaced(t.client.clone(), &ns);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let sw = switches.get(&switch_name).await.expect("get Switch");
        if sw.spec.mac_address.as_deref() == Some(mac) {
            break;
        }
        assert!(Instant::now() < deadline, "{switch_name} never showed MAC {mac}: {:?}", sw.spec);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shown = changed.elapsed().as_secs_f64();
    let (change_at, found_c, _) = next_sync(Some(last.0.clone()), "the change's poll", 120).await;
    let change = change_start.to(&sample());
    let change_poll = change_at.duration_since(last_at).as_secs_f64() - interval as f64;
    let lines = served(&nb_log);
    let asked: Vec<String> = lines[change_start.requests..change_start.requests + change.requests]
        .iter()
        .map(|l| request_summary(l))
        .collect();
    let logged = reads(&controller_log).get(change_reads).map(|r| (r.1, r.2));
    println!(
        "nautobot-bench: one change (set-mac sw-00001): the Switch showed it {shown:.1} s after the change (the poll interval is {interval} s); that poll {change_poll:.2} s, Ready {}; {} Nautobot requests {asked:?}; the controller's count (requests, full) {logged:?}; apiserver writes: Switches {}, OsImages {}",
        found_c.1, change.requests, change.switch_writes, change.image_writes
    );
    println!(
        "nautobot-bench: one change CPU over its {:.1} s window: controller {:.2} s, Nautobot {:.2} s + PostgreSQL {:.2} s; Nautobot / controller {}",
        change.secs,
        change.controller,
        change.nautobot,
        change.postgres,
        ratio(change.nautobot, change.controller),
    );
    rss_marks.push(("after the change", rss_now(controller.child.id())));

    // (d) Memory.
    let pid = controller.child.id();
    let hwm = status_kib(pid, "VmHWM:");
    println!(
        "nautobot-bench: controller peak RSS {:.1} MiB (VmHWM; target <= 128 MiB: {}); RSS {}",
        hwm as f64 / 1024.0,
        met(hwm <= 128 * 1024),
        rss_marks.iter().map(|(w, m)| format!("{m:.1} MiB {w}")).collect::<Vec<_>>().join(", ")
    );

    // (e) A restarted controller: it knows nothing applied, so it reads fully and applies every
    // object once again. What a re-apply changes in a Switch it made (sw-00002's, untouched since
    // its create) is printed.
    let probe = for_serial("SN00002");
    let before_restart = serde_json::to_value(switches.get(&probe).await.expect("get Switch")).expect("json");
    let _ = controller.child.kill();
    let _ = controller.child.wait();
    let restart_log = "nautobot-bench-controller-2.log";
    let restart_start = sample();
    let restarted = Instant::now();
    let (run, run_args) = command(2);
    let mut controller = binaries::with_cluster_as(&run, &run_args, CONTROLLER_LOG, restart_log).await;
    *controller_pid.lock().expect("lock") = Some(controller.child.id());
    let restart_base = Sample { controller: 0.0, ..restart_start.clone() };
    let (_, found_e, _) = next_sync(Some(found_c.0.clone()), "the restarted controller's sync", 600).await;
    let restart = restart_base.to(&sample());
    let hwm2 = status_kib(controller.child.id(), "VmHWM:");
    println!(
        "nautobot-bench: restart: a new controller process synced {:.1} s after it started (Ready {}, {} Switches); {} Nautobot requests; apiserver writes: Switches {}, OsImages {}; CPU: controller {:.1} s, Nautobot {:.1} s + PostgreSQL {:.1} s, kube-apiserver + etcd {:.1} s; its peak RSS {:.1} MiB",
        restarted.elapsed().as_secs_f64(),
        found_e.1,
        found_e.2,
        restart.requests,
        restart.switch_writes,
        restart.image_writes,
        restart.controller,
        restart.nautobot,
        restart.postgres,
        restart.control_plane,
        hwm2 as f64 / 1024.0
    );
    let after_restart = serde_json::to_value(switches.get(&probe).await.expect("get Switch")).expect("json");
    let mut changed_paths = Vec::new();
    diff("", &before_restart, &after_restart, &mut changed_paths);
    println!(
        "nautobot-bench: restart: what the re-apply changed in {probe} (untouched since its create): {changed_paths:?}"
    );
    let restart_log = support::env().await.log_dir.join(restart_log);

    controller.assert_running();
    let _ = controller.child.kill();
    let _ = controller.child.wait();
    switch_watch.abort();
    image_watch.abort();
    rss_task.abort();
    // The run's logs go with a green run: the script asks for a copy.
    if let Some(out) = std::env::var_os("ZTP_NB_BENCH_OUT").map(PathBuf::from) {
        std::fs::create_dir_all(&out).expect("ZTP_NB_BENCH_OUT");
        for (from, to) in [
            (&controller_log, "controller.log"),
            (&restart_log, "controller-2.log"),
            (&nb_log, "nautobot.log"),
        ] {
            std::fs::copy(from, out.join(to)).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        }
        println!(
            "nautobot-bench: logs (the controller's at debug for the NautobotSource, Nautobot's uWSGI) in {}",
            out.display()
        );
    }
}
