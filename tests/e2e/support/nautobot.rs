//! A real Nautobot for a test: `scripts/nautobot` (PostgreSQL, Redis and Nautobot's web server on
//! loopback, from PyPI and Debian packages cached outside the repository) started in the run's
//! scratch directory and stopped when dropped; its fleet loaded and changed through Nautobot's own
//! REST API (`scripts/nautobot_fleet.py`).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use bytes::Bytes;
use serde_json::json;
use ztp_operator::hash::Sha256Digest;

use super::{
    random_bytes, run,
    source::{Behavior, SourceServer},
    unique,
};

/// A Nautobot holding `devices` devices (sw-00002 and sw-00006 are SONiC, the only platform with
/// software) and two SONiC versions, 4.0.1 (`sonic-a.bin`) and 4.0.2 (`sonic-b.bin`), whose image
/// files the returned source serves; their bodies (`seed`, `seed + 1`).
pub struct SonicFleet {
    pub nb: Nautobot,
    pub src: SourceServer,
    pub a: Bytes,
    pub b: Bytes,
}

impl SonicFleet {
    pub async fn start(name: &str, devices: usize, seed: u64) -> SonicFleet {
        let (a, b) = (random_bytes(40_000, seed), random_bytes(50_000, seed + 1));
        let src = SourceServer::start(vec![
            ("/sonic-a.bin", a.clone(), Behavior::Serve),
            ("/sonic-b.bin", b.clone(), Behavior::Serve),
        ])
        .await;
        let nb = Nautobot::start(name).await;
        let image = |version: &str, file: &str, body: &Bytes| {
            json!({"platform": "sonic", "version": version, "file": file, "size": body.len(),
                   "sha256": Sha256Digest::of(body).to_string(), "url": src.url_of(&format!("/{file}"))})
        };
        let spec_file = nb.dir.join("images.json");
        let images = json!([image("4.0.1", "sonic-a.bin", &a), image("4.0.2", "sonic-b.bin", &b)]);
        std::fs::write(&spec_file, images.to_string()).expect("write image spec");
        let devices = devices.to_string();
        nb.load(&["--devices", &devices, "--image-spec", &spec_file.to_string_lossy()]).await;
        SonicFleet { nb, src, a, b }
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/nautobot")
}

/// Runs `scripts/nautobot ARGS` to its end; its stdout's last line.
fn nautobot(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run scripts/nautobot {args:?}: {e}"));
    assert!(out.status.success(), "scripts/nautobot {args:?} failed ({})", out.status);
    String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_owned()
}

/// A running Nautobot, stopped when dropped.
pub struct Nautobot {
    pub dir: PathBuf,
    pub url: String,
    pub token: String,
    /// `DIR/env` as `scripts/nautobot start` wrote it (`NAUTOBOT_PID`, `POSTGRES_PID`, …).
    pub env: BTreeMap<String, String>,
}

impl Nautobot {
    /// Starts one (seconds, once the venv and the database template are cached; the first run
    /// builds both: minutes).
    pub async fn start(name: &str) -> Nautobot {
        Self::start_args(name, Vec::new()).await
    }

    /// Starts one whose database already holds the fleet `load DIR FLEET` makes (`start
    /// --fleet`): seconds from the cached snapshot; the first run with these arguments builds it
    /// (5,000 devices: about 10 minutes).
    pub async fn start_with_fleet(name: &str, fleet: &str) -> Nautobot {
        Self::start_args(name, vec!["--fleet".to_owned(), fleet.to_owned()]).await
    }

    async fn start_args(name: &str, extra: Vec<String>) -> Nautobot {
        let dir = run().run_dir.join(format!("nautobot-{name}-{}", unique()));
        let mut args = vec!["start".to_owned(), dir.to_string_lossy().into_owned()];
        args.extend(extra);
        let env_file = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            nautobot(&refs)
        })
        .await
        .expect("start");
        let env: BTreeMap<String, String> = std::fs::read_to_string(&env_file)
            .expect("read env")
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        Nautobot { url: env["NAUTOBOT_URL"].clone(), token: env["NAUTOBOT_TOKEN"].clone(), dir, env }
    }

    fn dir_arg(&self) -> String {
        self.dir.to_string_lossy().into_owned()
    }

    /// `scripts/nautobot load DIR ARGS`: the fleet's summary JSON.
    pub async fn load(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["load".to_owned(), self.dir_arg()];
        all.extend(args.iter().map(|s| s.to_string()));
        let out = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            nautobot(&refs)
        })
        .await
        .expect("load");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("load's summary {out:?}: {e}"))
    }

    /// `scripts/nautobot fleet DIR ARGS` (set-serial, set-mac, set-software, delete, …).
    pub async fn fleet(&self, args: &[&str]) -> String {
        let mut all = vec!["fleet".to_owned(), self.dir_arg()];
        all.extend(args.iter().map(|s| s.to_string()));
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            nautobot(&refs)
        })
        .await
        .expect("fleet")
    }

    /// Stops the web server only (PostgreSQL and Redis stay): "Nautobot down".
    pub async fn stop_web(&self) {
        let dir = self.dir_arg();
        tokio::task::spawn_blocking(move || nautobot(&["stop-web", &dir])).await.expect("stop-web");
    }

    /// Starts the web server again on the same port; the token stays valid.
    pub async fn start_web(&self) {
        let dir = self.dir_arg();
        tokio::task::spawn_blocking(move || nautobot(&["start-web", &dir])).await.expect("start-web");
    }
}

impl Drop for Nautobot {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script()).arg("stop").arg(&self.dir).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
