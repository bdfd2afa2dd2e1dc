//! Health as GitOps tools judge it: Flux's kstatus library (`sigs.k8s.io/cli-utils/pkg/kstatus`,
//! `status.Compute`) run on objects, through the small Go checker `kstatus-check` that
//! `scripts/build-test-tools` builds from `tests/e2e/kstatus-check`. The objects are given as the
//! apiserver served them (JSON), so nothing of ours interprets them first.

use std::{fmt, process::Stdio};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::tools::tools;

/// kstatus's statuses (`status.Status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum Status {
    InProgress,
    Failed,
    Current,
    Terminating,
    NotFound,
    /// What kstatus's poller reports when `Compute` returns an error.
    Unknown,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// kstatus's verdict on one object.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Health {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub status: Status,
    pub message: String,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}: {} ({})", self.kind, self.namespace, self.name, self.status, self.message)
    }
}

/// kstatus on each of `objects` (single objects or Lists, as `kubectl get -o json` prints them),
/// in order: one result per object, a List giving one per item. Panics when the checker cannot
/// run or says something else than one JSON line per object.
pub async fn compute_all(objects: &[Value]) -> Vec<Health> {
    let checker = &tools().kstatus_check;
    let mut input = Vec::new();
    for o in objects {
        serde_json::to_writer(&mut input, o).expect("objects serialize");
        input.push(b'\n');
    }
    let mut child = tokio::process::Command::new(checker)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", checker.display()));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = tokio::spawn(async move {
        stdin.write_all(&input).await?;
        stdin.shutdown().await
    });
    let out = child.wait_with_output().await.expect("kstatus-check output");
    writer.await.expect("writer task").expect("write objects to kstatus-check");
    assert!(
        out.status.success(),
        "{} failed ({}): {}",
        checker.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("kstatus-check printed {l:?}: {e}")))
        .collect()
}

/// kstatus on JSON text as `kubectl get -o json` or the apiserver prints it: an object or a List
/// (whose items may lack `apiVersion`/`kind`; they take the List's).
pub async fn compute_json(text: &[u8]) -> Vec<Health> {
    let value: Value = serde_json::from_slice(text)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(text)));
    compute_all(std::slice::from_ref(&value)).await
}

/// kstatus on one object (anything that serializes to a Kubernetes object: a `Value`, a
/// `DynamicObject`, a typed object with its `apiVersion` and `kind`).
pub async fn compute<K: Serialize>(object: &K) -> Health {
    let value = serde_json::to_value(object).expect("object serializes");
    let mut all = compute_all(std::slice::from_ref(&value)).await;
    assert_eq!(all.len(), 1, "one object, one result: {all:?}");
    all.remove(0)
}
