//! The README's Quick start, run for real: its two commands are read from `README.md` and run
//! from a fresh `git clone --local` of the commit under test (uncommitted changes are not in the
//! clone: that is the point — a newcomer gets only what is committed).
//!
//! 1. The standalone command (it keeps running): the lab image becomes Ready in its status file,
//!    and the server answers an ONIE request for it. Then it is stopped.
//! 2. The test-suite command (`scripts/test`), which contains this test: the nested run sets
//!    `ZTP_README_NESTED=1`, and this test skips itself there (saying so).
//!
//! Its own test target, so `cargo test` runs it alone, never beside the e2e binary.
//!
//! Where the clone builds: in the outer run's own target dir (or `$ZTP_README_TARGET_DIR`), so the
//! clone reuses every compiled dependency as it is (same `Cargo.lock`, compiler, profile and
//! features, so the same unit hashes): CI compiles the dependencies once, and nothing is copied.
//! What the clone must not reuse is this package's own artifacts: cargo hashes a path package
//! relative to its workspace root, so the clone's `ztp-operator` units would have exactly the names
//! of the outer ones, and cargo would then take the outer tree's stale sources for fresh. The clone
//! therefore builds with the opposite `CARGO_INCREMENTAL` of the outer run (incremental is part of
//! a unit's hash and applies only to path packages): its own units get other names, and are
//! compiled from the clone's sources (the test checks cargo says so), while the outer run's are
//! left untouched (checked on the outer run's own test executable, [`outer_canary`]). The uplifted `<target>/debug/ztp-operator` is the one shared
//! name; cargo links it back to the outer build on the outer run's next `cargo build`/`test`.
//! Logs of both commands go to `<that dir>/readme-logs/`; their tails are printed on failure.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant, SystemTime},
};

/// Set in the nested run: the test suite inside the clone must not clone itself again.
const NESTED: &str = "ZTP_README_NESTED";

/// The two commands of the README's Quick start block.
#[derive(Debug)]
struct QuickStart {
    standalone: String,
    suite: String,
}

/// Reads the commands of the first ```sh block under `## Quick start`: every line that is neither
/// empty nor a comment. Exactly two are expected, the standalone one first.
fn quick_start(readme: &str) -> Result<QuickStart, String> {
    let readme = format!("\n{readme}");
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Quick start"))
        .ok_or("README.md has no \"## Quick start\" section")?;
    let block = section
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .map(|(block, _)| block)
        .ok_or("the Quick start section of README.md has no ```sh block")?;
    let commands: Vec<&str> =
        block.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    match commands.as_slice() {
        [standalone, suite]
            if standalone.contains(" standalone ") && standalone.contains("--manifests examples/lab") =>
        {
            Ok(QuickStart { standalone: (*standalone).to_owned(), suite: (*suite).to_owned() })
        }
        _ => Err(format!(
            "the Quick start block of README.md should hold exactly two commands, the standalone lab \
             (`cargo run -- standalone --manifests examples/lab …`) and the test suite; it holds {commands:?}"
        )),
    }
}

/// The value of `--flag VALUE` or `--flag=VALUE` in a command line.
fn flag_value(command: &str, flag: &str) -> Option<String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    words.iter().enumerate().find_map(|(i, w)| {
        if *w == flag {
            words.get(i + 1).map(|v| (*v).to_owned())
        } else {
            w.strip_prefix(flag).and_then(|r| r.strip_prefix('=')).map(str::to_owned)
        }
    })
}

/// The command with the value of `--flag` replaced (the rest is kept word for word).
fn with_flag_value(command: &str, flag: &str, value: &str) -> String {
    let mut words: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
    for i in 0..words.len() {
        if words[i] == flag && i + 1 < words.len() {
            words[i + 1] = value.to_owned();
        } else if words[i].starts_with(&format!("{flag}=")) {
            words[i] = format!("{flag}={value}");
        }
    }
    words.join(" ")
}

#[test]
fn readme_quick_start_has_the_two_commands() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md");
    let qs = quick_start(&readme).unwrap_or_else(|e| panic!("{e}"));
    assert!(qs.standalone.starts_with("cargo run -- standalone"), "{qs:?}");
    assert!(
        flag_value(&qs.standalone, "--listen").is_some(),
        "the README's standalone command should serve (--listen) so that a user can curl the lab: {qs:?}"
    );
    assert!(flag_value(&qs.standalone, "--data").is_some(), "{qs:?}");
    assert!(!qs.standalone.contains("--once"), "the first command keeps serving: {qs:?}");

    // The parser itself: a README without the block, or with a third command, is refused.
    assert!(quick_start("# x\n\n## Quick start\n\nno block\n").is_err());
    let three = "## Quick start\n\n```sh\ncargo run -- standalone --manifests examples/lab --data d\nscripts/test\nls\n```\n";
    assert!(quick_start(three).unwrap_err().contains("exactly two commands"));
    assert_eq!(
        with_flag_value("a --listen 127.0.0.1:8080 --data x", "--listen", "127.0.0.1:1"),
        "a --listen 127.0.0.1:1 --data x"
    );
    assert_eq!(with_flag_value("a --listen=h:1", "--listen", "h:2"), "a --listen=h:2");
}

/// A command of the README, run by bash in the clone in its own process group (so that stopping it
/// stops `cargo` and what it started), output to a log file. Killed on drop.
struct Shell {
    child: Child,
    log: PathBuf,
    what: &'static str,
}

impl Shell {
    fn start(what: &'static str, command: &str, dir: &Path, build: &CloneBuild, log: PathBuf) -> Shell {
        let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log handle");
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(command)
            .current_dir(dir)
            .env("CARGO_TARGET_DIR", &build.target)
            .env("CARGO_INCREMENTAL", build.incremental)
            .env(NESTED, "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // If this test process dies, bash dies with it (its group is killed on drop otherwise).
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        eprintln!("readme: running `{command}` in {} (log: {})", dir.display(), log.display());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start bash for {what}: {e}"));
        Shell { child, log, what }
    }

    fn signal_group(&self, signal: libc::c_int) {
        let pgid = i32::try_from(self.child.id()).expect("pid fits i32");
        // SAFETY: plain syscall on a process group this test created.
        unsafe { libc::kill(-pgid, signal) };
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait for bash")
    }

    /// The last `n` lines of the log, for failure messages.
    fn tail(&self, n: usize) -> String {
        let text = String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- last {n} lines of {} ({}):\n{}",
            self.log.display(),
            self.what,
            lines[lines.len().saturating_sub(n)..].join("\n")
        )
    }

    /// Each panic in the log with the lines that follow it (the message, not the backtrace): a
    /// failed nested suite says why, not only which tests failed.
    fn panics(&self) -> String {
        let text = String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        let mut out = format!("--- panics in {} ({}):", self.log.display(), self.what);
        for (i, _) in lines.iter().enumerate().filter(|(_, l)| l.contains("panicked at")) {
            let message = lines[i..].iter().take(8).take_while(|l| !l.starts_with("stack backtrace:"));
            out.push('\n');
            out.push_str(&message.copied().collect::<Vec<_>>().join("\n"));
        }
        out
    }

    /// SIGINT to the whole group (what Ctrl-C does), then SIGKILL if it is still there after 20 s.
    fn stop(&mut self) {
        self.signal_group(libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.signal_group(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        self.signal_group(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.0 GET as a switch sends it: status and body (None while nothing listens).
fn http_get(addr: &str, path: &str, headers: &[(&str, &str)]) -> Option<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let head_end = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status_line = String::from_utf8_lossy(&response[..head_end]).lines().next()?.to_owned();
    let status = status_line.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, response[head_end + 4..].to_vec()))
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn minutes_from_env(name: &str, default: u64) -> Duration {
    Duration::from_secs(60 * std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default))
}

#[test]
fn readme_commands_work_from_a_fresh_clone() {
    if std::env::var_os(NESTED).is_some() {
        eprintln!(
            "readme: skipped readme_commands_work_from_a_fresh_clone: {NESTED} is set, so this is the \
             test suite the README test itself runs in a clone (running it again would recurse)"
        );
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(repo.join("README.md")).expect("read README.md");
    let qs = quick_start(&readme).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        flag_value(&qs.standalone, "--listen").is_some(),
        "the README's standalone command has no --listen: nothing to ask as a switch would ({qs:?})"
    );

    // <target>/debug/ztp-operator → <target>: the outer run's target dir, wherever it is.
    let outer_target = Path::new(env!("CARGO_BIN_EXE_ztp-operator"))
        .ancestors()
        .nth(2)
        .expect("the binary lives in <target>/<profile>/")
        .to_path_buf();
    let build = CloneBuild {
        target: std::env::var_os("ZTP_README_TARGET_DIR").map(PathBuf::from).unwrap_or(outer_target),
        incremental: clone_incremental(|name| std::env::var(name).ok()),
    };
    let outer_own = outer_canary(&build.target.join("debug/deps"));
    let logs = build.target.join("readme-logs");
    std::fs::create_dir_all(&logs).unwrap_or_else(|e| panic!("create {}: {e}", logs.display()));

    // A fresh clone of the committed HEAD.
    let dir = tempfile::Builder::new().prefix("ztp-readme-").tempdir().expect("tempdir");
    let clone = dir.path().join("ztp-operator");
    let status = Command::new("git")
        .args(["clone", "--quiet", "--local"])
        .arg(repo)
        .arg(&clone)
        .status()
        .expect("run git clone");
    assert!(status.success(), "git clone --local {} failed", repo.display());
    let head = git(&clone, &["rev-parse", "HEAD"]);
    eprintln!("readme: cloned {} at {head} into {}", repo.display(), clone.display());
    if !git(repo, &["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        eprintln!("readme: note: {} has uncommitted changes; the clone has only {head}", repo.display());
    }
    let keep_on_failure = scopeguard(dir);

    // 1. The standalone lab. The port is the one thing changed: 8080 may be taken on a shared
    //    machine (or by a parallel CI job), so it runs on a free one.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").to_string()
    };
    let command = with_flag_value(&qs.standalone, "--listen", &addr);
    let data = clone.join(flag_value(&qs.standalone, "--data").expect("--data in the README command"));
    let started = Instant::now();
    let mut standalone = Shell::start("standalone", &command, &clone, &build, logs.join("standalone.log"));
    let installer =
        std::fs::read(clone.join("examples/lab/images/lab-nos-installer.bin")).expect("the lab installer");
    let onie = [
        ("User-Agent", "onie/1.0 (Linux-5.10.0 2024.11; BusyBox-v1.25.1)"),
        ("ONIE-SERIAL-NUMBER", "README-0001"),
        ("ONIE-ETH-ADDR", "0c:42:a1:00:00:99"),
        ("ONIE-MACHINE", "lab_switch"),
        ("ONIE-MACHINE-REV", "0"),
        ("ONIE-ARCH", "x86_64"),
        ("ONIE-OPERATION", "os-install"),
        ("ONIE-VERSION", "2024.11"),
    ];
    // The first build of the clone compiles its crate (the dependencies only in a cold target dir).
    let deadline = Instant::now() + minutes_from_env("ZTP_README_BUILD_TIMEOUT_MINUTES", 45);
    loop {
        if let Some(status) = standalone.exited() {
            panic!(
                "the README's standalone command exited ({status}) before serving:\n{}",
                standalone.tail(60)
            );
        }
        let lab_ready = std::fs::read(data.join(".status/osimages.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|s| s["default/lab-nos"]["phase"] == "Ready");
        let served = lab_ready
            && http_get(&addr, "/readyz", &[]).is_some_and(|(s, _)| s == 200)
            && http_get(&addr, "/onie-installer", &onie)
                .is_some_and(|(s, body)| s == 200 && body == installer);
        if served {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the README's standalone command did not serve the Ready lab image in time:\n{}",
            standalone.tail(60)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = String::from_utf8_lossy(&std::fs::read(&standalone.log).unwrap_or_default()).into_owned();
    assert!(log.contains("osimage default/lab-nos: Ready"), "{}", standalone.tail(60));
    let compiled = format!("Compiling ztp-operator v{} ({})", env!("CARGO_PKG_VERSION"), clone.display());
    assert!(
        log.contains(&compiled),
        "cargo did not build the clone's own sources (no `{compiled}`):\n{}",
        standalone.tail(60)
    );
    assert_untouched(&outer_own, &build.target.join("debug/deps"));
    eprintln!(
        "readme: standalone served the Ready lab image on {addr} after {} s (including the build)",
        started.elapsed().as_secs()
    );
    standalone.stop();

    // 2. The test suite, exactly as the README says, in the clone (this test skips itself there).
    let started = Instant::now();
    let log = logs.join("scripts-test.log");
    let mut suite = Shell::start("test suite", &qs.suite, &clone, &build, log);
    let deadline = Instant::now() + minutes_from_env("ZTP_README_SUITE_TIMEOUT_MINUTES", 80);
    let status = loop {
        if let Some(status) = suite.exited() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the README's test-suite command did not finish in time:\n{}",
            suite.tail(80)
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(
        status.success(),
        "the README's test-suite command failed ({status}) in the clone:\n{}\n{}",
        suite.panics(),
        suite.tail(80)
    );
    let output = String::from_utf8_lossy(&std::fs::read(&suite.log).unwrap_or_default()).into_owned();
    assert!(
        output.contains("readme: skipped readme_commands_work_from_a_fresh_clone"),
        "the nested suite did not run (and skip) this test:\n{}",
        suite.tail(80)
    );
    assert!(output.contains("==> all green"), "{}", suite.tail(80));
    let checked = format!("Checking ztp-operator v{} ({})", env!("CARGO_PKG_VERSION"), clone.display());
    assert!(
        output.contains(&checked),
        "clippy did not check the clone's own sources (no `{checked}`):\n{}",
        suite.tail(80)
    );
    assert_untouched(&outer_own, &build.target.join("debug/deps"));
    eprintln!("readme: `{}` passed in the clone in {} s", qs.suite, started.elapsed().as_secs());
    keep_on_failure.success();
}

/// Where and how the clone builds: the shared target dir, and the `CARGO_INCREMENTAL` that gives
/// its own units other names than the outer run's.
struct CloneBuild {
    target: PathBuf,
    incremental: &'static str,
}

/// The clone's `CARGO_INCREMENTAL`: the opposite of the outer run's, as cargo decides it
/// (`CARGO_INCREMENTAL=1` on, any other value off; without it the dev profile's `incremental`,
/// on by default). Incremental only ever applies to path packages, so the dependencies keep their
/// hashes and are shared; this package's units change theirs.
fn clone_incremental(var: impl Fn(&str) -> Option<String>) -> &'static str {
    let outer_incremental = match var("CARGO_INCREMENTAL") {
        Some(v) => v == "1",
        None => var("CARGO_PROFILE_DEV_INCREMENTAL").is_none_or(|v| v != "false"),
    };
    if outer_incremental { "0" } else { "1" }
}

/// Artifacts of this package (its library, binaries and test targets); everything else in `deps/`
/// is a dependency.
fn is_own_artifact(name: &str) -> bool {
    const OWN: [&str; 7] =
        ["ztp_operator-", "libztp_operator-", "ztp-operator-", "ztpctl-", "e2e-", "crds_in_sync-", "readme-"];
    OWN.iter().any(|p| name.starts_with(p))
}

/// The outer run's own test executable (this process, `deps/readme-<hash>`) with its modification
/// time, when it lives in `deps`: the canary for a clash of unit names. The clone's build makes
/// its own `readme-<hash>` (`scripts/test` builds every target); were the two builds' hashes the
/// same, it would rewrite this file. Not every own artifact in `deps/`: a shared target dir also
/// holds the clone's units of an earlier run (the same names again, rewritten on purpose).
fn outer_canary(deps: &Path) -> BTreeMap<String, SystemTime> {
    let Ok(exe) = std::env::current_exe() else { return BTreeMap::new() };
    own_artifacts(deps)
        .into_iter()
        .filter(|(name, _)| exe.file_name().is_some_and(|f| f == name.as_str()))
        .collect()
}

/// This package's own artifacts in a `deps/` dir, with their modification times.
fn own_artifacts(deps: &Path) -> BTreeMap<String, SystemTime> {
    let Ok(entries) = std::fs::read_dir(deps) else { return BTreeMap::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let modified = e.metadata().and_then(|m| m.modified()).ok()?;
            is_own_artifact(&name).then_some((name, modified))
        })
        .collect()
}

/// The artifacts of `before` that are gone or were rewritten since.
fn rewritten(before: &BTreeMap<String, SystemTime>, now: &BTreeMap<String, SystemTime>) -> Vec<String> {
    before.iter().filter(|(name, t)| now.get(*name) != Some(t)).map(|(name, _)| name.clone()).collect()
}

/// The clone's build must not have replaced an artifact of the outer run: cargo would take it for
/// the outer tree's next time.
fn assert_untouched(outer_own: &BTreeMap<String, SystemTime>, deps: &Path) {
    let rewritten = rewritten(outer_own, &own_artifacts(deps));
    assert!(
        rewritten.is_empty(),
        "the clone's build rewrote the outer run's own artifacts in {} (the two builds' units have \
         the same hashes: was incremental set in a cargo config file? or another build ran in this \
         target dir meanwhile): {rewritten:?}",
        deps.display()
    );
}

#[test]
fn the_clone_builds_its_own_units_under_other_names_than_the_outer_run() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    };
    assert_eq!(clone_incremental(env(&[])), "0", "dev builds are incremental by default");
    assert_eq!(clone_incremental(env(&[("CARGO_INCREMENTAL", "1")])), "0");
    assert_eq!(clone_incremental(env(&[("CARGO_INCREMENTAL", "0")])), "1");
    assert_eq!(clone_incremental(env(&[("CARGO_PROFILE_DEV_INCREMENTAL", "false")])), "1");
    assert_eq!(
        clone_incremental(env(&[("CARGO_INCREMENTAL", "1"), ("CARGO_PROFILE_DEV_INCREMENTAL", "false")])),
        "0",
        "CARGO_INCREMENTAL wins over the profile"
    );

    assert!(
        is_own_artifact("libztp_operator-0ef71ea21789698d.rlib") && is_own_artifact("e2e-1c48ec40c3ea6822")
    );
    assert!(!is_own_artifact("libtokio-6c1e270c698fa6a6.rlib"));
    let t0 = SystemTime::UNIX_EPOCH;
    let t1 = t0 + Duration::from_secs(1);
    let before = BTreeMap::from([("a".to_owned(), t0), ("b".to_owned(), t0), ("c".to_owned(), t0)]);
    let now = BTreeMap::from([("a".to_owned(), t0), ("b".to_owned(), t1), ("d".to_owned(), t1)]);
    assert_eq!(rewritten(&before, &now), ["b", "c"], "a rewritten and a removed artifact; a new one is fine");
}

/// Keeps the clone (its logs, `target/e2e-logs`) for a look when the test fails; removes it when it
/// passes.
struct KeepOnFailure(Option<tempfile::TempDir>);

fn scopeguard(dir: tempfile::TempDir) -> KeepOnFailure {
    KeepOnFailure(Some(dir))
}

impl KeepOnFailure {
    fn success(mut self) {
        self.0.take();
    }
}

impl Drop for KeepOnFailure {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take()
            && std::thread::panicking()
        {
            eprintln!("readme: the clone is kept in {}", dir.keep().display());
        }
    }
}
