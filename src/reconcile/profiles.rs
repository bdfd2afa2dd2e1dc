//! SwitchProfiles → the device snapshot and each profile's status: one pipeline for the
//! controller and standalone, as [`super::osimage`] is for OsImages. [`rebuild`] builds the
//! snapshot ([`build`]), publishes it to the store when its content changed ([`publish`]), then
//! computes every live profile's status ([`profile_status`]: `Ready`, `Reconciling`, `Stalled`,
//! `Conflict` for a key two profiles claim, the CRLF note, the match summary) and hands the ones
//! that changed to a [`ProfileReporter`]: the controller's applies them to the status subresource,
//! standalone's prints one line and keeps them in `{data}/.status/switchprofiles.json`.
//! `status.devices` (the device server's) and `status.switches` (counted from the Switches,
//! [`crate::switch::tally`]) are not the pipeline's: the statuses computed here never carry them.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
};

use async_trait::async_trait;
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

use super::{ReportError, object_name};
use crate::{
    api::{
        ConditionStatus, ConditionType, OsImage, Switch, SwitchProfile, SwitchProfileStatus,
        conditions::{find_condition, set_condition, set_or_remove_condition},
    },
    lookup::ObjectLookup,
    profile::{
        build::{self, SwitchProblem},
        index::DeviceIndex,
        problem::{self, Problem, Severity},
        publish::{self, SnapshotError},
        snapshot::Snapshot,
    },
    store::Store,
};

/// Where the pipeline reports what it built. Kubernetes (status subresource + Events) is one
/// implementation, standalone (printed lines + a status file) the other.
#[async_trait]
pub trait ProfileReporter: Send + Sync {
    /// The outcome of publishing `snapshot`: `Ok(true)` when it became the current one,
    /// `Ok(false)` when it already was (or there is nothing to publish).
    async fn published(&self, snapshot: &Snapshot, outcome: &Result<bool, SnapshotError>);
    /// Records `status`, which differs from the profile's own `status` (`devices` left aside).
    async fn status(&self, profile: &SwitchProfile, status: &SwitchProfileStatus) -> Result<(), ReportError>;
    /// Called once at the end of every rebuild, after its statuses: a reporter that keeps all
    /// statuses in one file writes them out here, once per rebuild (once per profile would
    /// rewrite the whole file ten thousand times for ten thousand profiles).
    async fn rebuilt(&self) -> Result<(), ReportError> {
        Ok(())
    }
    /// What Switches' own values make fail in their profile's trial render, per Switch
    /// (`namespace/name`), after every rebuild (empty when nothing fails): the device of such a
    /// Switch gets an error for that part while the profile's other devices are served.
    async fn switch_problems(&self, problems: &BTreeMap<String, Vec<SwitchProblem>>);
}

/// Builds and publishes the snapshot of `profiles` (and the `switches` that change what their
/// device gets), then reports the status of each profile that
/// is not being deleted and whose status changed. `profiles` carry the status they have now (the
/// watch cache's, or standalone's last one), `images` theirs; ConfigMaps and Secrets come from
/// `lookup`. A status the reporter cannot record is logged; the next rebuild tries again.
pub async fn rebuild(
    store: &Store,
    profiles: &[Arc<SwitchProfile>],
    switches: &[Arc<Switch>],
    images: &[Arc<OsImage>],
    lookup: &dyn ObjectLookup,
    reporter: &dyn ProfileReporter,
) {
    let built = build::build(profiles, switches, images, lookup).await;
    let outcome = publish::publish(store, &built.snapshot).await;
    reporter.published(&built.snapshot, &outcome).await;
    for p in profiles.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
        let key = object_name(&p.metadata);
        let status = profile_status(
            p,
            built.problems.get(&key),
            &claims_of(&built.index, &key),
            built.crlf_normalised.contains(&key),
        );
        if current_status(p).as_ref() == Some(&status) {
            continue;
        }
        if let Err(e) = reporter.status(p, &status).await {
            tracing::warn!(profile = %key, error = %e, "cannot write profile status");
        }
    }
    if let Err(e) = reporter.rebuilt().await {
        tracing::warn!(error = %e, "cannot write profile statuses");
    }
    reporter.switch_problems(&built.switch_problems).await;
}

/// Which Switches' problems (trial render, `osImage`) changed from one rebuild to the next, so a
/// reporter says each once rather than at every rebuild.
#[derive(Debug, Default)]
pub struct SwitchProblemNews(Mutex<BTreeMap<String, SwitchNews>>);

/// What changed for one Switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchNews {
    /// Its problems, in one line, and the reason of the first (the Warning Event's).
    Problems { reason: &'static str, line: String },
    /// Its problems cleared: the Normal Event's reason and message.
    Cleared { reason: &'static str, note: &'static str },
}

impl SwitchProblemNews {
    /// Each Switch (`namespace/name`) whose problems differ from the last call's.
    pub fn news(&self, problems: &BTreeMap<String, Vec<SwitchProblem>>) -> Vec<(String, SwitchNews)> {
        let now: BTreeMap<String, SwitchNews> = problems
            .iter()
            .filter_map(|(k, v)| {
                // An osImage still being fetched, or failed, is its OsImage's news (its status and
                // Events say so), not one Event per Switch pinned to it: a new intended version
                // would otherwise tell thousands of Switches, twice. One that does not exist is
                // this Switch's (a name to fix).
                let told: Vec<&SwitchProblem> = v
                    .iter()
                    .filter(|p| {
                        !matches!(
                            p,
                            SwitchProblem::OsImage(
                                Problem::ImageNotReady { .. } | Problem::ImageFailed { .. }
                            )
                        )
                    })
                    .collect();
                let reason = told.first()?.reason();
                let line = told.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
                Some((k.clone(), SwitchNews::Problems { reason, line }))
            })
            .collect();
        let mut last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let cleared = last.iter().filter(|(k, _)| !now.contains_key(*k)).map(|(k, was)| {
            let (reason, note) = match was {
                SwitchNews::Problems { reason: problem::TEMPLATE_ERROR, .. } => {
                    (TEMPLATE_RENDERED, "its values render in its profile's templates again")
                }
                _ => (RESOLVED_AGAIN, "nothing keeps its device from what it gets any more"),
            };
            (k.clone(), SwitchNews::Cleared { reason, note })
        });
        let changed =
            now.iter().filter(|(k, v)| last.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), v.clone()));
        let news = cleared.chain(changed).collect();
        *last = now;
        news
    }
}

/// The status `p` has now, without `devices` (which the pipeline never computes).
pub fn current_status(p: &SwitchProfile) -> Option<SwitchProfileStatus> {
    p.status.clone().map(SwitchProfileStatus::pipeline_part)
}

/// Reason of the `Ready=False` / `Stalled=True` conditions of a profile that lost a key, and of
/// the Warning Event it gets.
pub const CONFLICT: &str = "Conflict";
/// Reason of the Normal Event on a Switch whose values render in its profile's templates again
/// (after a Warning Event with reason [`problem::TEMPLATE_ERROR`]).
pub const TEMPLATE_RENDERED: &str = "TemplateRendered";
/// Reason of the Normal Event on a Switch whose other problem (its `osImage` not Ready) cleared.
pub const RESOLVED_AGAIN: &str = "Resolved";

/// The message of `Ready=True`.
pub const RESOLVED: &str = "every reference resolves";

/// Added to the `Ready=True` message of a profile whose Cumulus script was normalised.
pub const CRLF_NOTE: &str = "the Cumulus script had CRLF line endings and is served with LF";

/// What one profile lost to older claims and kept against newer ones (messages).
#[derive(Debug, Default)]
pub struct ProfileClaims {
    pub lost: Vec<String>,
    pub kept: Vec<String>,
}

/// Profile `key`'s (`namespace/name`) share of the index's conflicts, in the index's order.
pub fn claims_of(index: &DeviceIndex, key: &str) -> ProfileClaims {
    let mut claims = ProfileClaims::default();
    for c in index.conflicts_of(key) {
        if c.loser == key {
            claims.lost.push(format!(
                "{} {} is also claimed by {}, which wins: it is the older claim and serves the device",
                c.key_kind, c.key, c.winner
            ));
        }
        if c.winner == key {
            claims.kept.push(format!(
                "{} {} is also claimed by {} (newer); this profile wins",
                c.key_kind, c.key, c.loser
            ));
        }
    }
    claims
}

/// The Warning Event's note when `new` loses a key that `old` did not (or loses another one).
pub fn newly_lost(old: Option<&SwitchProfileStatus>, new: &SwitchProfileStatus) -> Option<String> {
    let stalled = |s: &SwitchProfileStatus| {
        find_condition(&s.conditions, ConditionType::Stalled)
            .filter(|c| c.status == "True" && c.reason == CONFLICT)
            .map(|c| c.message.clone())
    };
    let now = stalled(new)?;
    (old.and_then(stalled).as_ref() != Some(&now)).then_some(now)
}

/// The status of one profile after a rebuild: the controller's fields only (`devices` is left
/// out, it is the device server's). kstatus reads it so:
///
/// - every reference resolves and no claim is lost: `Ready=True` (Current);
/// - a problem that clears by itself (an image still fetching, an object not created yet):
///   `Ready=False` and `Reconciling=True` with its reason, e.g. `WaitingForImage` (InProgress);
/// - a problem that needs a human (a missing key, a template that does not render, an image
///   that failed) or a key lost to an older profile (`Conflict`): `Ready=False` and
///   `Stalled=True` with its reason (Failed); no `Reconciling` then, which kstatus would read first.
///
/// Conditions that no longer apply are removed; each carries the generation it describes.
pub fn profile_status(
    p: &SwitchProfile,
    problems: Option<&Vec<Problem>>,
    claims: &ProfileClaims,
    crlf: bool,
) -> SwitchProfileStatus {
    let mut status = p.status.clone().unwrap_or_default();
    let generation = p.metadata.generation;
    let now = Time(Timestamp::now());
    let conds: &mut Vec<Condition> = &mut status.conditions;
    let verdict = problems.and_then(|p| problem::verdict(p));
    let lost = claims.lost.join("; ");
    let human = verdict.as_ref().filter(|v| v.severity == Severity::NeedsHuman);
    let waiting = verdict.as_ref().filter(|v| v.severity == Severity::Waiting);
    let with = |first: &str, then: Option<&str>| match then {
        Some(t) => format!("{first}; {t}"),
        None => first.to_owned(),
    };
    let (ready, stalled, reconciling) = match (claims.lost.is_empty(), &verdict) {
        (true, None) => {
            let mut msg = RESOLVED.to_owned();
            if crlf {
                msg.push_str("; ");
                msg.push_str(CRLF_NOTE);
            }
            ((ConditionStatus::True, "Resolved", msg), None, None)
        }
        (true, Some(v)) => (
            (ConditionStatus::False, v.reason, v.all.clone()),
            human.map(|h| (h.reason, h.message.clone())),
            waiting.map(|w| (w.reason, w.message.clone())),
        ),
        (false, v) => (
            (ConditionStatus::False, CONFLICT, with(&lost, v.as_ref().map(|v| v.all.as_str()))),
            Some((CONFLICT, with(&lost, human.map(|h| h.message.as_str())))),
            None,
        ),
    };
    set_condition(conds, ConditionType::Ready, ready.0, ready.1, &ready.2, generation, now.clone());
    let abnormal = [(ConditionType::Stalled, stalled), (ConditionType::Reconciling, reconciling)];
    for (type_, value) in abnormal {
        let value = value.as_ref().map(|(reason, msg)| (*reason, msg.as_str()));
        set_or_remove_condition(conds, type_, value, generation, now.clone());
    }
    let all = claims.lost.iter().chain(&claims.kept).cloned().collect::<Vec<_>>().join("; ");
    let conflict = (!all.is_empty()).then_some(("DuplicateMatch", all.as_str()));
    set_or_remove_condition(conds, ConditionType::Conflict, conflict, generation, now);
    status.observed_generation = generation;
    status.match_summary = Some(p.spec.selector.summary());
    status.pipeline_part()
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, sync::Mutex};

    use serde_json::json;

    use super::*;
    use crate::{
        lookup::{Data, LookupError},
        profile::problem::{IMAGE_FAILED, WAITING_FOR_IMAGE},
        store::fs::FsBackend,
    };

    fn profile(generation: i64) -> SwitchProfile {
        serde_json::from_value(json!({
            "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "SwitchProfile",
            "metadata": {"name": "p", "namespace": "net", "generation": generation},
            "spec": {"match": {"serialNumbers": ["SN1"]}}
        }))
        .expect("profile")
    }

    fn fetching() -> Problem {
        Problem::ImageNotReady {
            what: "onie.installImage".into(),
            image: "net/nos".into(),
            state: "Fetching".into(),
        }
    }

    fn failed() -> Problem {
        Problem::ImageFailed {
            what: "onie.installImage".into(),
            image: "net/nos".into(),
            state: "failed: 404".into(),
        }
    }

    /// `(type, status, reason)` of every condition, sorted by type.
    fn conds(s: &SwitchProfileStatus) -> Vec<(String, String, String)> {
        let mut v: Vec<_> =
            s.conditions.iter().map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone())).collect();
        v.sort();
        v
    }

    fn c(t: &str, s: &str, r: &str) -> (String, String, String) {
        (t.into(), s.into(), r.into())
    }

    #[test]
    fn waiting_reconciles_a_human_problem_stalls_and_stale_conditions_go() {
        let none = ProfileClaims::default();
        let mut p = profile(1);
        let s = profile_status(&p, Some(&vec![fetching()]), &none, false);
        assert_eq!(
            conds(&s),
            [c("Ready", "False", WAITING_FOR_IMAGE), c("Reconciling", "True", WAITING_FOR_IMAGE)]
        );
        let r = find_condition(&s.conditions, ConditionType::Reconciling).expect("reconciling");
        assert_eq!(r.message, "onie.installImage: OsImage net/nos is not Ready yet (Fetching)");
        assert_eq!(r.observed_generation, Some(1));

        p.status = Some(s);
        p.metadata.generation = Some(2);
        let s = profile_status(&p, Some(&vec![fetching(), failed()]), &none, false);
        assert_eq!(conds(&s), [c("Ready", "False", IMAGE_FAILED), c("Stalled", "True", IMAGE_FAILED)]);
        let st = find_condition(&s.conditions, ConditionType::Stalled).expect("stalled");
        assert_eq!(st.message, "onie.installImage: OsImage net/nos failed: 404");
        assert!(s.conditions.iter().all(|c| c.observed_generation == Some(2)));

        p.status = Some(s);
        let s = profile_status(&p, None, &none, false);
        assert_eq!(conds(&s), [c("Ready", "True", "Resolved")]);

        // A lost claim stalls, whatever else waits; no Reconciling to hide it from kstatus.
        let lost = ProfileClaims { lost: vec!["serial SN1 is also claimed by net/old".into()], kept: vec![] };
        let s = profile_status(&p, Some(&vec![fetching()]), &lost, false);
        assert_eq!(
            conds(&s),
            [
                c("Conflict", "True", "DuplicateMatch"),
                c("Ready", "False", CONFLICT),
                c("Stalled", "True", CONFLICT)
            ]
        );
    }

    /// What the pipeline reported: each publication's outcome and each status, in order.
    #[derive(Default)]
    struct Recorder {
        published: Mutex<Vec<bool>>,
        statuses: Mutex<Vec<(String, SwitchProfileStatus)>>,
    }

    #[async_trait]
    impl ProfileReporter for Recorder {
        async fn published(&self, _snapshot: &Snapshot, outcome: &Result<bool, SnapshotError>) {
            self.published.lock().expect("lock").push(*outcome.as_ref().expect("published"));
        }
        async fn status(&self, p: &SwitchProfile, s: &SwitchProfileStatus) -> Result<(), ReportError> {
            self.statuses.lock().expect("lock").push((object_name(&p.metadata), s.clone()));
            Ok(())
        }
        async fn switch_problems(&self, _problems: &BTreeMap<String, Vec<SwitchProblem>>) {}
    }

    impl Recorder {
        fn take(&self) -> BTreeMap<String, SwitchProfileStatus> {
            self.statuses.lock().expect("lock").drain(..).collect()
        }
    }

    /// No ConfigMaps, no Secrets.
    struct Nothing;

    #[async_trait]
    impl ObjectLookup for Nothing {
        async fn config_map(&self, _ns: &str, _name: &str) -> Result<Option<Data>, LookupError> {
            Ok(None)
        }
        async fn secret(&self, _ns: &str, _name: &str) -> Result<Option<Data>, LookupError> {
            Ok(None)
        }
    }

    fn named(name: &str, spec: serde_json::Value) -> Arc<SwitchProfile> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "SwitchProfile",
                "metadata": {"name": name, "namespace": "net", "generation": 1},
                "spec": spec
            }))
            .expect("profile"),
        )
    }

    fn condition(s: &SwitchProfileStatus, t: ConditionType) -> (&str, &str, &str) {
        let c = find_condition(&s.conditions, t).unwrap_or_else(|| panic!("no {t:?} in {s:?}"));
        (c.status.as_str(), c.reason.as_str(), c.message.as_str())
    }

    /// Two profiles claiming one serial: the older claim is Ready and told of the newer, the newer
    /// is not Ready and Stalled with `Conflict`; a CRLF Cumulus script is noted in `Ready`. A
    /// second rebuild over the statuses reported first publishes nothing and reports nothing.
    #[tokio::test]
    async fn rebuild_reports_conflicts_and_the_crlf_note_then_only_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(Arc::new(FsBackend::new(dir.path()).expect("store")));
        let script = "#!/bin/sh\r\n# CUMULUS-AUTOPROVISIONING\r\nexit 0\r\n";
        let mut profiles = vec![
            named("a-first", json!({"match": {"serialNumbers": ["SN1"]}})),
            named("b-second", json!({"match": {"serialNumbers": ["SN1", "SN2"]}})),
            named("crlf", json!({"match": {"models": ["vx"]}, "cumulus": {"script": {"inline": script}}})),
        ];
        let recorder = Recorder::default();
        rebuild(&store, &profiles, &[], &[], &Nothing, &recorder).await;
        assert_eq!(*recorder.published.lock().expect("lock"), [true]);
        let reported = recorder.take();
        assert_eq!(reported.keys().collect::<Vec<_>>(), ["net/a-first", "net/b-second", "net/crlf"]);

        let winner = &reported["net/a-first"];
        assert_eq!(condition(winner, ConditionType::Ready), ("True", "Resolved", RESOLVED));
        assert_eq!(
            condition(winner, ConditionType::Conflict),
            (
                "True",
                "DuplicateMatch",
                "serial SN1 is also claimed by net/b-second (newer); this profile wins"
            )
        );
        let lost = "serial SN1 is also claimed by net/a-first, which wins: it is the older claim and serves the device";
        let loser = &reported["net/b-second"];
        assert_eq!(condition(loser, ConditionType::Ready), ("False", CONFLICT, lost));
        assert_eq!(condition(loser, ConditionType::Stalled), ("True", CONFLICT, lost));
        assert_eq!(condition(loser, ConditionType::Conflict), ("True", "DuplicateMatch", lost));
        assert_eq!(loser.match_summary.as_deref(), Some("2 serials"));
        let crlf = &reported["net/crlf"];
        let note = format!("{RESOLVED}; {CRLF_NOTE}");
        assert_eq!(condition(crlf, ConditionType::Ready), ("True", "Resolved", note.as_str()));
        assert!(reported.values().all(|s| s.devices.is_none() && s.observed_generation == Some(1)));

        // The statuses as the reporter keeps them (with devices, which the pipeline leaves alone).
        for p in &mut profiles {
            let mut with = (**p).clone();
            let mut status = reported[&object_name(&p.metadata)].clone();
            status.devices = Some(Default::default());
            with.status = Some(status);
            *p = Arc::new(with);
        }
        rebuild(&store, &profiles, &[], &[], &Nothing, &recorder).await;
        assert_eq!(*recorder.published.lock().expect("lock"), [true, false]);
        assert!(recorder.take().is_empty(), "an unchanged status is reported again");
    }

    /// A profile being deleted is in no snapshot and gets no status.
    #[tokio::test]
    async fn a_profile_being_deleted_gets_no_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(Arc::new(FsBackend::new(dir.path()).expect("store")));
        let mut going = (*named("going", json!({"match": {"serialNumbers": ["SN1"]}}))).clone();
        going.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        let profiles = [Arc::new(going), named("stays", json!({"match": {"serialNumbers": ["SN1"]}}))];
        let recorder = Recorder::default();
        rebuild(&store, &profiles, &[], &[], &Nothing, &recorder).await;
        let reported = recorder.take();
        assert_eq!(reported.keys().collect::<Vec<_>>(), ["net/stays"]);
        assert_eq!(condition(&reported["net/stays"], ConditionType::Ready).0, "True");
        assert!(find_condition(&reported["net/stays"].conditions, ConditionType::Conflict).is_none());
    }

    /// The Warning Event's note: only when a key is newly lost, or another one is.
    #[test]
    fn a_lost_key_is_news_once() {
        let none = ProfileClaims::default();
        let p = profile(1);
        let ready = profile_status(&p, None, &none, false);
        let claims = |what: &str| ProfileClaims { lost: vec![what.into()], kept: vec![] };
        let lost = profile_status(&p, None, &claims("serial SN1 lost"), false);
        assert_eq!(newly_lost(Some(&ready), &lost).as_deref(), Some("serial SN1 lost"));
        assert_eq!(newly_lost(None, &lost).as_deref(), Some("serial SN1 lost"));
        assert_eq!(newly_lost(Some(&lost), &lost), None);
        let other = profile_status(&p, None, &claims("serial SN2 lost"), false);
        assert_eq!(newly_lost(Some(&lost), &other).as_deref(), Some("serial SN2 lost"));
        assert_eq!(newly_lost(Some(&lost), &ready), None);
    }

    #[test]
    fn a_switchs_problem_is_news_once_and_its_clearing_too() {
        let news = SwitchProblemNews::default();
        let problem = |msg: &str| SwitchProblem::Render {
            profile: "net/sn2410".into(),
            error: crate::profile::render::RenderError::Template {
                profile: String::new(),
                what: "files.x".into(),
                message: msg.into(),
                line: None,
            },
        };
        let one = BTreeMap::from([("net/leaf18".to_owned(), vec![problem("undefined")])]);
        let said = news.news(&one);
        assert_eq!(said.len(), 1);
        assert_eq!(said[0].0, "net/leaf18");
        assert!(
            matches!(&said[0].1, SwitchNews::Problems { reason: problem::TEMPLATE_ERROR, line } if line.starts_with("profile net/sn2410: ")),
            "{said:?}"
        );
        assert_eq!(news.news(&one), [], "the same problem again is no news");
        let other = BTreeMap::from([("net/leaf18".to_owned(), vec![problem("another")])]);
        assert_eq!(news.news(&other).len(), 1, "a different problem is");
        let cleared = news.news(&BTreeMap::new());
        assert!(
            matches!(&cleared[..], [(k, SwitchNews::Cleared { reason: TEMPLATE_RENDERED, .. })] if k == "net/leaf18")
        );
        assert_eq!(news.news(&BTreeMap::new()), []);

        // An osImage that is not Ready is told with its own reason, and so is its clearing.
        let fetching = || {
            SwitchProblem::OsImage(Problem::ImageNotReady {
                what: "osImage".into(),
                image: "net/nos-2".into(),
                state: "Fetching".into(),
            })
        };
        let missing = SwitchProblem::OsImage(Problem::NotFound {
            what: "osImage".into(),
            kind: "OsImage",
            object: "net/nos-3".into(),
        });
        // An image still being fetched, or failed, is not news, alone or beside another problem.
        let failed = SwitchProblem::OsImage(Problem::ImageFailed {
            what: "osImage".into(),
            image: "net/nos-1".into(),
            state: "failed".into(),
        });
        assert_eq!(news.news(&BTreeMap::from([("net/leaf18".to_owned(), vec![fetching(), failed])])), []);
        let said = news.news(&BTreeMap::from([("net/leaf18".to_owned(), vec![fetching(), missing])]));
        assert!(
            matches!(&said[..], [(_, SwitchNews::Problems { reason: problem::WAITING_FOR_REFERENCE, line })] if !line.contains("nos-2")),
            "{said:?}"
        );
        let cleared = news.news(&BTreeMap::new());
        assert!(
            matches!(&cleared[..], [(_, SwitchNews::Cleared { reason: RESOLVED_AGAIN, .. })]),
            "{cleared:?}"
        );
    }
}
