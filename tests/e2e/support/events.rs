//! The Events about a Switch, as the controller records them (`TemplateError`,
//! `WaitingForImage`, `Resolved`, …).

use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};

use super::KubeTest;

/// The notes of the Events about Switch `name` with `reason`.
pub async fn switch_events(t: &KubeTest, name: &str, reason: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(t.client.clone(), &t.namespace);
    let all = api.list(&ListParams::default()).await.expect("list events");
    all.items
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some("Switch") && r.name.as_deref() == Some(name))
                && e.reason.as_deref() == Some(reason)
        })
        .filter_map(|e| e.note)
        .collect()
}

/// Waits (30 s at most) for an Event about Switch `name` with `reason`; its note.
pub async fn wait_switch_event(t: &KubeTest, name: &str, reason: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(note) = switch_events(t, name, reason).await.pop() {
            return note;
        }
        assert!(Instant::now() < deadline, "no {reason} Event on Switch {name} within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
