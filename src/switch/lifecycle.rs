//! The lifecycle of one Switch, as pure functions on its status: what a request or a report
//! does to the attempt history ([`record`]), what a change of `spec.reprovision` does
//! ([`reprovision`]), and the phase and conditions that follow ([`refresh`]).
//!
//! # Several writers, one history
//!
//! Every server replica keeps the events it has not written yet and applies them, in time order,
//! to the status it reads back before each write; a write that lost a race is read and applied
//! again. So [`record`] must give the same history whatever replica (or restart) applies an
//! event, and however often:
//! - an event is **idempotent**: a stage already recorded with the same name and time is not
//!   recorded again, nor is a served stage that is no fresh start (a section, an image by path)
//!   when its attempt already shows that stage reached at or before it; times are whole seconds,
//!   as stored;
//! - an event lands in the attempt **its time** falls in, not the newest one: a late event from a
//!   replica that flushed after another one's failure report goes into the attempt it belongs to,
//!   and one from before its attempt's start moves the start back;
//! - when a failure or success is recorded into an attempt that already holds stages later than
//!   it (another replica served the device's fresh start first), those later stages move to a new
//!   `Restarted` attempt, as they would have had the close been known first.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use crate::api::{
    Attempt, AttemptResult, AttemptTrigger, MatchedProfile, StageRecord, StageResult, SwitchPhase,
    SwitchSpec, SwitchStatus,
    conditions::{ConditionStatus, ConditionType, set_condition, set_or_remove_condition},
    switch::{MAX_ATTEMPTS, MAX_STAGE_MESSAGE, MAX_STAGE_NAME, MAX_STAGES},
};

/// Name of the stage a switch reaches when it is served its configuration.
pub const CONFIG_SERVED: &str = "ConfigServed";
/// Name of the stage a switch reaches when its image download is answered.
pub const IMAGE_SERVED: &str = "ImageServed";
/// Name of the closing stage of a successful attempt.
pub const PROVISIONED: &str = "Provisioned";

/// Something a switch did, at a time (the server's clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: Timestamp,
    pub what: What,
}

/// What a switch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// It was served a configuration document. `start`: the document a switch asks for first
    /// (ZTP JSON, Cumulus script, RtBrick's first file), which after a closed attempt means the
    /// switch started over.
    ConfigServed { start: bool },
    /// Its image download was answered. `start`: an ONIE installer or updater request, which after
    /// a closed attempt means the switch started over. `path`: the image's store path.
    ImageServed { start: bool, path: Option<String> },
    /// It reported a stage (`POST /v1/devices/{serial}/report`, or the `provisioned` callback as
    /// stage `Provisioned`).
    Reported(Report),
}

/// A stage a switch reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The stage's name; `provisioned` (any case) with result `ok` closes the attempt as
    /// `Provisioned`.
    pub stage: String,
    /// `failed` closes the attempt as `Failed`.
    pub result: StageResult,
    pub message: Option<String>,
}

/// Why a report is refused before anything is recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadReport {
    #[error("stage must be 1 to {MAX_STAGE_NAME} characters of A-Z a-z 0-9 . _ -, got {0:?}")]
    Stage(String),
}

impl Report {
    /// A report with its stage name checked and its message cut to the stored length.
    pub fn new(stage: &str, result: StageResult, message: Option<&str>) -> Result<Self, BadReport> {
        let ok = !stage.is_empty()
            && stage.len() <= MAX_STAGE_NAME
            && stage.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return Err(BadReport::Stage(stage.chars().take(MAX_STAGE_NAME + 1).collect()));
        }
        let stage = if stage.eq_ignore_ascii_case(PROVISIONED) { PROVISIONED } else { stage };
        let message = message.filter(|m| !m.is_empty()).map(|m| cut(m, MAX_STAGE_MESSAGE));
        Ok(Self { stage: stage.to_owned(), result, message })
    }

    /// The `provisioned` callback: the final stage, successful.
    pub fn provisioned() -> Self {
        Self { stage: PROVISIONED.to_owned(), result: StageResult::Ok, message: None }
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl What {
    /// The stage record this event adds.
    fn stage(&self, at: Timestamp) -> StageRecord {
        let time = Time(at);
        match self {
            What::ConfigServed { .. } => {
                StageRecord { name: CONFIG_SERVED.into(), time, result: None, message: None }
            }
            What::ImageServed { path, .. } => {
                StageRecord { name: IMAGE_SERVED.into(), time, result: None, message: path.clone() }
            }
            What::Reported(r) => StageRecord {
                name: r.stage.clone(),
                time,
                result: Some(r.result),
                message: r.message.clone(),
            },
        }
    }

    fn starts(&self) -> bool {
        matches!(self, What::ConfigServed { start: true } | What::ImageServed { start: true, .. })
    }

    /// How this event closes its attempt, if it does.
    fn closes(&self) -> Option<AttemptResult> {
        match self {
            What::Reported(Report { result: StageResult::Failed, .. }) => Some(AttemptResult::Failed),
            What::Reported(r) if r.stage == PROVISIONED => Some(AttemptResult::Provisioned),
            _ => None,
        }
    }

    /// Whether the event is a served stage (not a report).
    fn is_served(&self) -> bool {
        !matches!(self, What::Reported(_))
    }
}

fn new_attempt(at: Timestamp, trigger: AttemptTrigger, reprovision: Option<String>) -> Attempt {
    Attempt { started: Time(at), ended: None, result: None, trigger, reprovision, stages: Vec::new() }
}

/// Records `event` in the attempt history. `reprovision` is the Switch's current
/// `spec.reprovision` (a first attempt belongs to it). Returns whether anything changed.
///
/// The result is what recording every event in time order would give: an event lands in the
/// attempt its time falls in, and one from before the attempt it belongs to (a replica that
/// flushed late) moves that attempt's start back.
pub fn record(status: &mut SwitchStatus, reprovision: Option<&str>, event: &Event) -> bool {
    // Stored times have whole seconds (`metav1.Time`): compare and store in them.
    let event = &Event { at: whole_seconds(event.at), what: event.what.clone() };
    let at = event.at;
    let attempts = &mut status.attempts;
    if attempts.is_empty() {
        attempts.push(new_attempt(at, AttemptTrigger::Discovered, reprovision.map(str::to_owned)));
        return add(attempts, 0, event) | true;
    }
    // The newest attempt started at or before the event.
    let Some(i) = attempts.iter().position(|a| a.started.0 <= at) else {
        // Before every attempt kept: it opened the first one (if that one is still kept).
        let first = attempts.len() - 1;
        if attempts.len() < MAX_ATTEMPTS && attempts[first].trigger == AttemptTrigger::Discovered {
            attempts[first].started = Time(at);
            return add(attempts, first, event) | true;
        }
        return false;
    };
    match attempts[i].ended.as_ref().map(|end| end.0) {
        None => add(attempts, i, event),
        // In the close's own second (times are whole seconds) a fresh start comes after it.
        Some(end) if at < end || (at == end && !event.what.starts()) => add(attempts, i, event),
        // After a close only a fresh start counts; anything else shows in `lastSeen` only.
        Some(_) if !event.what.starts() => false,
        Some(_) if i == 0 => {
            let reprovision = attempts[0].reprovision.clone();
            attempts.insert(0, new_attempt(at, AttemptTrigger::Restarted, reprovision));
            attempts.truncate(MAX_ATTEMPTS);
            add(attempts, 0, event) | true
        }
        // A fresh start between two attempts: it opened the next one, if the switch did.
        Some(_) if attempts[i - 1].trigger == AttemptTrigger::Restarted => {
            attempts[i - 1].started = Time(at);
            add(attempts, i - 1, event) | true
        }
        Some(_) => false,
    }
}

/// `t` without its fraction of a second (stored times have whole seconds).
pub fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// Adds the event's stage to attempt `i`, closing it when the event closes it. Returns whether
/// anything changed. A served stage that is no fresh start (a section, an image by path) is
/// recorded unless the attempt shows that stage reached at or before its time; every other
/// stage once per name and time.
fn add(attempts: &mut Vec<Attempt>, i: usize, event: &Event) -> bool {
    let stage = event.what.stage(event.at);
    let attempt = &mut attempts[i];
    let recorded = if event.what.is_served() && !event.what.starts() {
        attempt.stages.iter().any(|s| s.name == stage.name && s.time.0 <= stage.time.0)
    } else {
        attempt.stages.iter().any(|s| s.name == stage.name && s.time == stage.time)
    };
    if recorded {
        return false;
    }
    let pos = attempt.stages.partition_point(|s| s.time.0 <= stage.time.0);
    attempt.stages.insert(pos, stage);
    bound_stages(&mut attempt.stages);
    // A second close of a closed attempt (`provisioned` after `failed`) stays a stage; only an
    // earlier one (from a replica that flushed late) moves the close.
    if let Some(result) = event.what.closes()
        && attempt.ended.as_ref().is_none_or(|end| event.at < end.0)
    {
        close(attempts, i, event.at, result);
    }
    true
}

/// Closes attempt `i` at `at`. Stages later than `at` were a fresh start served before this close
/// was known (another replica): they move to a new attempt after it.
fn close(attempts: &mut Vec<Attempt>, i: usize, at: Timestamp, result: AttemptResult) {
    let attempt = &mut attempts[i];
    attempt.ended = Some(Time(at));
    attempt.result = Some(result);
    let split = attempt.stages.partition_point(|s| s.time.0 <= at);
    if split == attempt.stages.len() || i != 0 {
        return;
    }
    let later = attempt.stages.split_off(split);
    let mut next = new_attempt(later[0].time.0, AttemptTrigger::Restarted, attempt.reprovision.clone());
    next.stages = later;
    attempts.insert(0, next);
    attempts.truncate(MAX_ATTEMPTS);
    // The moved stages may close the new attempt themselves.
    let closing = attempts[0].stages.iter().find_map(|s| closes_as(s).map(|r| (s.time.0, r)));
    if let Some((at, result)) = closing {
        close(attempts, 0, at, result);
    }
}

/// How a recorded stage closes its attempt, if it does.
fn closes_as(s: &StageRecord) -> Option<AttemptResult> {
    match s.result {
        Some(StageResult::Failed) => Some(AttemptResult::Failed),
        Some(StageResult::Ok) if s.name == PROVISIONED => Some(AttemptResult::Provisioned),
        _ => None,
    }
}

/// Keeps at most [`MAX_STAGES`]: the first stage and the newest ones.
fn bound_stages(stages: &mut Vec<StageRecord>) {
    if stages.len() > MAX_STAGES {
        stages.drain(1..=stages.len() - MAX_STAGES);
    }
}

/// Applies `spec.reprovision`: a value other than the current attempt's closes it (`Superseded`,
/// when still open) and opens a new attempt at `now`. A switch never seen has no attempt to
/// supersede: its first one will carry the value. Returns whether anything changed.
pub fn reprovision(status: &mut SwitchStatus, spec: &SwitchSpec, now: Timestamp) -> bool {
    let Some(current) = status.attempts.first_mut() else { return false };
    if current.reprovision == spec.reprovision {
        return false;
    }
    if current.ended.is_none() {
        current.ended = Some(Time(now));
        current.result = Some(AttemptResult::Superseded);
    }
    status.attempts.insert(0, new_attempt(now, AttemptTrigger::Reprovision, spec.reprovision.clone()));
    status.attempts.truncate(MAX_ATTEMPTS);
    true
}

/// The phase that follows from the spec, the matched profile and the current attempt.
pub fn phase(spec: &SwitchSpec, matched: Option<&MatchedProfile>, status: &SwitchStatus) -> SwitchPhase {
    if spec.hold {
        return SwitchPhase::Held;
    }
    if matched.is_none() {
        return SwitchPhase::Unmatched;
    }
    let Some(current) = status.attempts.first() else { return SwitchPhase::Discovered };
    match current.result {
        Some(AttemptResult::Provisioned) => SwitchPhase::Provisioned,
        Some(AttemptResult::Failed) => SwitchPhase::Failed,
        // A superseded attempt is never the current one (a new one opens with it).
        Some(AttemptResult::Superseded) => SwitchPhase::Discovered,
        None => match current.stages.last() {
            None => SwitchPhase::Discovered,
            Some(s) if s.name == IMAGE_SERVED => SwitchPhase::Installing,
            Some(_) => SwitchPhase::Configuring,
        },
    }
}

/// Sets `matchedProfile`, `phase`, the kstatus conditions and `observedGeneration` from the
/// spec, the profile the switch matches (`None`: none) and the attempt history. Returns whether
/// anything changed.
pub fn refresh(
    status: &mut SwitchStatus,
    spec: &SwitchSpec,
    generation: Option<i64>,
    matched: Option<MatchedProfile>,
    now: Timestamp,
) -> bool {
    let phase = phase(spec, matched.as_ref(), status);
    let mut changed = status.phase != Some(phase)
        || status.matched_profile != matched
        || status.observed_generation != generation;
    status.phase = Some(phase);
    status.matched_profile = matched;
    status.observed_generation = generation;
    let (ready, reason, message) = readiness(phase, spec, status);
    let now = Time(now);
    let conds = &mut status.conditions;
    let status_of = if ready { ConditionStatus::True } else { ConditionStatus::False };
    changed |=
        set_condition(conds, ConditionType::Ready, status_of, reason, &message, generation, now.clone());
    let reconciling =
        matches!(phase, SwitchPhase::Discovered | SwitchPhase::Configuring | SwitchPhase::Installing);
    let stalled = matches!(phase, SwitchPhase::Failed | SwitchPhase::Unmatched);
    let (r, s) = (reconciling.then_some((reason, &*message)), stalled.then_some((reason, &*message)));
    changed |= set_or_remove_condition(conds, ConditionType::Reconciling, r, generation, now.clone());
    changed |= set_or_remove_condition(conds, ConditionType::Stalled, s, generation, now);
    changed
}

/// `Ready`'s status, reason and message for a phase.
fn readiness(phase: SwitchPhase, spec: &SwitchSpec, status: &SwitchStatus) -> (bool, &'static str, String) {
    let current = status.attempts.first();
    let since = |a: &Attempt| a.started.0.to_string();
    let message = match phase {
        SwitchPhase::Provisioned => {
            format!(
                "provisioned at {}",
                current.and_then(|a| a.ended.as_ref()).map_or(String::new(), |t| t.0.to_string())
            )
        }
        SwitchPhase::Failed => {
            let failed =
                current.and_then(|a| a.stages.iter().rev().find(|s| s.result == Some(StageResult::Failed)));
            match failed {
                Some(s) => format!(
                    "stage {} failed at {}{}",
                    s.name,
                    s.time.0,
                    s.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
                ),
                None => "the switch reported a failure".into(),
            }
        }
        SwitchPhase::Unmatched => match &spec.profile {
            Some(pinned) => format!(
                "spec.profile pins SwitchProfile {pinned:?}, which is not in this namespace or not \
                 served yet (the switch gets nothing until it is, never another profile)"
            ),
            None => format!(
                "no SwitchProfile matches serial {:?}{}{}, and spec.profile is unset",
                spec.serial_number,
                mac_of(spec, status).map(|m| format!(", MAC {m}")).unwrap_or_default(),
                model_of(spec, status).map(|m| format!(", model {m:?}")).unwrap_or_default(),
            ),
        },
        SwitchPhase::Held => "spec.hold is set: the server answers this switch nothing".into(),
        SwitchPhase::Discovered => match current {
            Some(a) if a.trigger == AttemptTrigger::Reprovision => {
                format!("re-provision requested at {}; waiting for the switch to start over", since(a))
            }
            _ => "waiting for the switch's first request".into(),
        },
        SwitchPhase::Configuring | SwitchPhase::Installing => {
            let last = current.and_then(|a| a.stages.last());
            last.map_or(String::new(), |s| format!("last stage {} at {}", s.name, s.time.0))
        }
    };
    (phase == SwitchPhase::Provisioned, phase.as_str(), message)
}

fn mac_of<'a>(spec: &'a SwitchSpec, status: &'a SwitchStatus) -> Option<&'a str> {
    spec.mac_address.as_deref().or(status.device.as_ref().and_then(|d| d.mac.as_deref()))
}

fn model_of<'a>(spec: &'a SwitchSpec, status: &'a SwitchStatus) -> Option<&'a str> {
    spec.model.as_deref().or(status.device.as_ref().and_then(|d| d.model.as_deref()))
}

#[cfg(test)]
mod tests;
