//! Whether the server Deployment serves, told where a user looks: a Warning Event
//! `ServersUnavailable` when fewer replicas are available than asked for longer than a grace
//! period, a Normal Event `ServersAvailable` when they are back. The Events are about the
//! controller's own Deployment (the release's object: `kubectl describe deploy`, Argo CD's and
//! Flux's event views), or the server Deployment when the controller has none.
//!
//! [`Tracker`] is the pure core (what to say, and when); [`watch`] feeds it the server
//! Deployment from a watch and publishes what it says.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::ObjectReference};
use kube::{
    Api, Client, Resource,
    runtime::{
        WatchStreamExt,
        events::{Event, EventType, Recorder, Reporter},
        watcher,
    },
};
use tokio::time::Instant;

/// Available against desired replicas, with the Deployment's own reason when it gives one.
#[derive(Debug, Clone, PartialEq)]
pub struct Availability {
    pub desired: i32,
    pub available: i32,
    /// The message of a false `Available` or `Progressing` condition (quota, image, deadline).
    pub reason: Option<String>,
}

impl Availability {
    pub fn of(d: &Deployment) -> Self {
        let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let status = d.status.clone().unwrap_or_default();
        let reason = status
            .conditions
            .iter()
            .flatten()
            .filter(|c| c.status == "False" && (c.type_ == "Available" || c.type_ == "Progressing"))
            .find_map(|c| c.message.clone());
        Self { desired, available: status.available_replicas.unwrap_or(0), reason }
    }

    pub fn serving(&self) -> bool {
        self.available >= self.desired
    }
}

/// What to publish.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    Unavailable(String),
    Available(String),
}

/// Remembers since when the servers are short and whether that was said.
#[derive(Debug, Clone)]
pub struct Tracker {
    grace: Duration,
    short_since: Option<Instant>,
    reported: bool,
    last: Option<Availability>,
}

impl Tracker {
    pub fn new(grace: Duration) -> Self {
        Self { grace, short_since: None, reported: false, last: None }
    }

    /// A new observation (or `None`: only time passed).
    pub fn observe(&mut self, now: Instant, seen: Option<Availability>) -> Option<Signal> {
        if let Some(a) = seen {
            self.last = Some(a);
        }
        let a = self.last.as_ref()?;
        if a.serving() {
            self.short_since = None;
            let was = std::mem::replace(&mut self.reported, false);
            return was
                .then(|| Signal::Available(format!("{} of {} replicas available", a.available, a.desired)));
        }
        let since = *self.short_since.get_or_insert(now);
        if self.reported || now.duration_since(since) < self.grace {
            return None;
        }
        self.reported = true;
        let mut note = format!(
            "{} of {} replicas available for {} s: switches may not be answered",
            a.available,
            a.desired,
            now.duration_since(since).as_secs()
        );
        if let Some(r) = &a.reason {
            note.push_str(&format!(" ({r})"));
        }
        Some(Signal::Unavailable(note))
    }

    /// When the grace period of a shortage ends, if one is pending.
    pub fn deadline(&self) -> Option<Instant> {
        self.short_since.filter(|_| !self.reported).map(|s| s + self.grace)
    }
}

/// Watches the server Deployment `namespace/name` and publishes the [`Tracker`]'s signals about
/// the Deployment `owner` in the same namespace (or the server Deployment). Never returns.
pub async fn watch(client: Client, namespace: String, name: String, owner: Option<String>, grace: Duration) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let owners = api.clone();
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut seen = watcher(api, config).default_backoff().applied_objects().boxed();
    let recorder =
        Recorder::new(client, Reporter { controller: super::SERVING_FIELD_MANAGER.into(), instance: None });
    let mut tracker = Tracker::new(grace);
    let mut server_ref: Option<ObjectReference> = None;
    loop {
        let wake = tracker.deadline().unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let observed = tokio::select! {
            d = seen.next() => match d {
                Some(Ok(d)) => {
                    server_ref = Some(d.object_ref(&()));
                    Some(Availability::of(&d))
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "watching the server Deployment");
                    continue;
                }
                None => return,
            },
            _ = tokio::time::sleep_until(wake) => None,
        };
        let Some(signal) = tracker.observe(Instant::now(), observed) else { continue };
        let (type_, reason, note) = match signal {
            Signal::Unavailable(n) => (EventType::Warning, "ServersUnavailable", n),
            Signal::Available(n) => (EventType::Normal, "ServersAvailable", n),
        };
        let note = format!("server Deployment {namespace}/{name}: {note}");
        match type_ {
            EventType::Warning => tracing::warn!(%note, "servers unavailable"),
            EventType::Normal => tracing::info!(%note, "servers available"),
        }
        let regarding = match &owner {
            Some(o) => owners.get(o).await.ok().map(|d| d.object_ref(&())),
            None => None,
        };
        let Some(target) = regarding.or_else(|| server_ref.clone()) else { continue };
        let ev =
            Event { type_, reason: reason.into(), note: Some(note), action: "Watch".into(), secondary: None };
        if let Err(e) = recorder.publish(&ev, &target).await {
            tracing::warn!(error = %e, "cannot publish the servers' availability Event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(available: i32) -> Option<Availability> {
        Some(Availability { desired: 2, available, reason: Some("quota exceeded".into()) })
    }

    #[test]
    fn a_shortage_is_told_after_the_grace_once_and_its_end_once() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(60);
        let mut t = Tracker::new(grace);
        assert_eq!(t.observe(t0, short(0)), None, "within the grace");
        assert_eq!(t.deadline(), Some(t0 + grace));
        assert_eq!(t.observe(t0 + Duration::from_secs(30), short(1)), None, "still within it");
        let Some(Signal::Unavailable(note)) = t.observe(t0 + grace, None) else {
            panic!("told at the deadline")
        };
        assert!(note.contains("1 of 2") && note.contains("quota exceeded"), "{note}");
        assert_eq!(t.observe(t0 + grace * 2, short(0)), None, "once");
        assert_eq!(t.deadline(), None);
        assert_eq!(
            t.observe(t0 + grace * 3, Some(Availability { desired: 2, available: 2, reason: None })),
            Some(Signal::Available("2 of 2 replicas available".into()))
        );
        assert_eq!(t.observe(t0 + grace * 4, None), None, "said once");
        // A short dip heals unseen.
        assert_eq!(t.observe(t0 + grace * 5, short(1)), None);
        assert_eq!(t.observe(t0 + grace * 5 + Duration::from_secs(5), short(2)), None);
        assert_eq!(t.deadline(), None);
    }

    #[test]
    fn availability_reads_the_status() {
        let d: Deployment = serde_json::from_value(serde_json::json!({
            "spec": {"replicas": 3, "selector": {}, "template": {}},
            "status": {"availableReplicas": 1, "conditions": [
                {"type": "Available", "status": "False", "message": "Deployment does not have minimum availability."}
            ]},
        }))
        .expect("deployment");
        let a = Availability::of(&d);
        assert_eq!((a.desired, a.available, a.serving()), (3, 1, false));
        assert_eq!(a.reason.as_deref(), Some("Deployment does not have minimum availability."));
    }
}
