//! Child processes of the test run: spawned from one long-lived thread with
//! `PR_SET_PDEATHSIG = SIGKILL`, so etcd, kube-apiserver and MinIO die with the test binary even
//! when it is killed, and never outlive a run.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Mutex, OnceLock,
        mpsc::{self, Sender},
    },
};

type SpawnRequest = (Command, Sender<std::io::Result<Child>>);

fn spawner() -> &'static Mutex<Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        // This thread never exits before the process does: PDEATHSIG fires when the *thread*
        // that forked a child ends, so the children must not be forked from test threads.
        std::thread::Builder::new()
            .name("e2e-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                // The sender lives in a static and is never dropped; park instead of returning.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawn the e2e spawner thread");
        Mutex::new(tx)
    })
}

/// A running server process whose stdout and stderr go to `log`.
pub struct Proc {
    pub name: &'static str,
    pub child: Child,
    pub log: PathBuf,
}

/// Starts `program args…` with output appended to `log`; the child is killed if the test binary dies.
pub fn spawn(
    name: &'static str,
    program: &Path,
    args: &[String],
    envs: &[(&str, &str)],
    log: PathBuf,
) -> Proc {
    let out = File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
    let err = out.try_clone().expect("clone log handle");
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner().lock().expect("spawner lock").send((cmd, tx)).expect("spawner thread is alive");
    let child = rx
        .recv()
        .expect("spawner replied")
        .unwrap_or_else(|e| panic!("start {name} ({}): {e}", program.display()));
    Proc { name, child, log }
}

impl Proc {
    /// Panics with the tail of the log when the process has already exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited early ({status}); last log lines:\n{}", self.name, tail(&self.log, 40));
        }
    }
}

/// The last `n` lines of a file, for failure messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A free TCP port on 127.0.0.1 (bound and released; the servers bind it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Runs a command to its end and returns what it printed (whatever its exit status).
pub fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns its stdout, panics with its output otherwise.
pub fn must(cmd: &mut Command) -> String {
    let out = output(cmd);
    succeeded(&format!("{cmd:?}"), out)
}

/// The stdout of a finished command that had to succeed; panics naming `what`, with its stdout
/// and stderr, otherwise.
pub fn succeeded(what: &str, out: Output) -> String {
    assert!(out.status.success(), "{what} failed ({}):\n{}", out.status, printed(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A finished command's stdout and stderr, for failure messages.
pub fn printed(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}
