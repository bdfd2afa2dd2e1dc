//! Why a SwitchProfile is not Ready, typed so that its health reads right in GitOps tools: a
//! problem that clears by itself (an image still being fetched, a referenced object not created
//! yet) makes the profile `Reconciling` (kstatus `InProgress`, Argo CD `Progressing`); one that
//! needs a human (a missing key, a template that does not render, an image that failed) makes it
//! `Stalled` (kstatus `Failed`, Argo CD `Degraded`).
//!
//! A referenced ConfigMap, Secret or OsImage that does not exist *waits*: a GitOps sync applies
//! a profile and the objects it references together, in no guaranteed order, and the profile
//! turns Ready by itself once they are there; a name that stays wrong keeps the profile
//! `Reconciling` with a message naming the object, and the GitOps tool's own timeout reports it.
//! An object that exists but lacks the key, or holds something unusable, needs a human.

use crate::profile::render::RenderError;

/// Reason of `Reconciling=True` (and `Ready=False`) while a referenced OsImage is not Ready yet.
pub const WAITING_FOR_IMAGE: &str = "WaitingForImage";
/// Reason of `Reconciling=True` (and `Ready=False`) while a referenced ConfigMap, Secret or
/// OsImage does not exist (yet).
pub const WAITING_FOR_REFERENCE: &str = "WaitingForReference";
/// Reason of `Stalled=True` (and `Ready=False`) when a referenced OsImage failed or is being
/// deleted.
pub const IMAGE_FAILED: &str = "ImageFailed";
/// Reason of `Stalled=True` (and `Ready=False`) for content that cannot be used: a missing key,
/// non-UTF-8 data, a `config_db.json` that is not a JSON object, a Cumulus script without its
/// marker, a MAC that is not one, content of the wrong kind.
pub const INVALID_CONTENT: &str = "InvalidContent";
/// Reason of `Stalled=True` (and `Ready=False`) for a template that does not parse, or fails
/// when trial-rendered for a sample device.
pub const TEMPLATE_ERROR: &str = "TemplateError";

/// Whether a problem clears by itself or needs someone to change something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// It clears by itself (an image is fetched, an object gets created): `Reconciling`.
    Waiting,
    /// It needs a human: `Stalled`.
    NeedsHuman,
}

/// One reason a profile is not Ready. `what` names the part of the spec (`files.startup`,
/// `ztp.sections[1]`, `onie.installImage`, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A referenced OsImage exists but is not Ready yet (pending, fetching, retrying, or its
    /// status is of an older generation).
    #[error("{what}: OsImage {image} is not Ready yet ({state})")]
    ImageNotReady { what: String, image: String, state: String },
    /// A referenced OsImage stalled (`Failed`) or is being deleted.
    #[error("{what}: OsImage {image} {state}")]
    ImageFailed { what: String, image: String, state: String },
    /// A referenced object (`kind` is `ConfigMap`, `Secret` or `OsImage`) does not exist.
    #[error("{what}: {kind} {object} not found")]
    NotFound { what: String, kind: &'static str, object: String },
    /// Reading a referenced object failed (it may succeed on the next rebuild).
    #[error("{what}: {message}")]
    Lookup { what: String, message: String },
    /// A ConfigMap or Secret exists but has no such key.
    #[error("{what}: {kind} {object} has no key {key:?}")]
    MissingKey { what: String, kind: &'static str, object: String, key: String },
    /// Content that exists but cannot serve its purpose (`reason` says why).
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    /// A template that does not parse.
    #[error("{0}")]
    Template(RenderError),
    /// Content that does not render for the profile's sample device ([`super::trial`]).
    #[error("{error} (trial render for a sample device, serial {serial})")]
    Trial { error: RenderError, serial: String },
}

impl Problem {
    /// Whether it clears by itself or needs a human.
    pub fn severity(&self) -> Severity {
        match self {
            Problem::ImageNotReady { .. } | Problem::NotFound { .. } | Problem::Lookup { .. } => {
                Severity::Waiting
            }
            Problem::ImageFailed { .. }
            | Problem::MissingKey { .. }
            | Problem::Invalid { .. }
            | Problem::Template(_)
            | Problem::Trial { .. } => Severity::NeedsHuman,
        }
    }

    /// The condition reason it gives (`WaitingForImage`, `TemplateError`, …).
    pub fn reason(&self) -> &'static str {
        match self {
            Problem::ImageNotReady { .. } => WAITING_FOR_IMAGE,
            Problem::NotFound { .. } | Problem::Lookup { .. } => WAITING_FOR_REFERENCE,
            Problem::ImageFailed { .. } => IMAGE_FAILED,
            Problem::MissingKey { .. } | Problem::Invalid { .. } => INVALID_CONTENT,
            Problem::Template(_) | Problem::Trial { .. } => TEMPLATE_ERROR,
        }
    }

    /// An [`Problem::Invalid`] of `what`.
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Problem::Invalid { what: what.into(), reason: reason.into() }
    }
}

/// What a profile's problems add up to: the worst severity, and the reason and message of the
/// conditions it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub severity: Severity,
    /// The reason of the first problem of the worst severity.
    pub reason: &'static str,
    /// Every problem of the worst severity, `; `-separated (what the `Stalled` or `Reconciling`
    /// condition says).
    pub message: String,
    /// Every problem, `; `-separated (what `Ready=False` says).
    pub all: String,
}

/// The verdict on `problems`; `None` when there are none. A profile with both kinds is
/// `Stalled` (a human has to act anyway; kstatus would read `Reconciling` first and hide it).
pub fn verdict(problems: &[Problem]) -> Option<Verdict> {
    let severity = problems.iter().map(Problem::severity).max()?;
    let worst: Vec<&Problem> = problems.iter().filter(|p| p.severity() == severity).collect();
    Some(Verdict {
        severity,
        reason: worst[0].reason(),
        message: join(worst.iter().copied()),
        all: join(problems),
    })
}

fn join<'a>(problems: impl IntoIterator<Item = &'a Problem>) -> String {
    problems.into_iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting() -> Problem {
        Problem::ImageNotReady {
            what: "onie.installImage".into(),
            image: "net/x".into(),
            state: "Fetching".into(),
        }
    }

    #[test]
    fn things_that_clear_by_themselves_wait_and_the_rest_needs_a_human() {
        let cases = [
            (waiting(), Severity::Waiting, WAITING_FOR_IMAGE),
            (
                Problem::NotFound { what: "files.a".into(), kind: "ConfigMap", object: "net/cm".into() },
                Severity::Waiting,
                WAITING_FOR_REFERENCE,
            ),
            (
                Problem::Lookup { what: "files.a".into(), message: "x".into() },
                Severity::Waiting,
                WAITING_FOR_REFERENCE,
            ),
            (
                Problem::ImageFailed { what: "w".into(), image: "net/x".into(), state: "failed: 404".into() },
                Severity::NeedsHuman,
                IMAGE_FAILED,
            ),
            (
                Problem::MissingKey {
                    what: "w".into(),
                    kind: "Secret",
                    object: "net/s".into(),
                    key: "k".into(),
                },
                Severity::NeedsHuman,
                INVALID_CONTENT,
            ),
            (Problem::invalid("w", "not UTF-8"), Severity::NeedsHuman, INVALID_CONTENT),
            (
                Problem::Template(RenderError::Template {
                    profile: String::new(),
                    what: "files.a".into(),
                    message: "undefined".into(),
                    line: Some(1),
                }),
                Severity::NeedsHuman,
                TEMPLATE_ERROR,
            ),
        ];
        for (p, severity, reason) in cases {
            assert_eq!((p.severity(), p.reason()), (severity, reason), "{p:?}");
        }
    }

    #[test]
    fn the_verdict_is_the_worst_severity_naming_its_problems() {
        assert_eq!(verdict(&[]), None);
        let v = verdict(&[waiting()]).expect("verdict");
        assert_eq!(v.severity, Severity::Waiting);
        assert_eq!(v.reason, WAITING_FOR_IMAGE);
        assert_eq!(v.message, "onie.installImage: OsImage net/x is not Ready yet (Fetching)");

        let key = Problem::MissingKey {
            what: "files.a".into(),
            kind: "ConfigMap",
            object: "net/cm".into(),
            key: "startup".into(),
        };
        let v = verdict(&[waiting(), key]).expect("verdict");
        assert_eq!(v.severity, Severity::NeedsHuman);
        assert_eq!(v.reason, INVALID_CONTENT);
        assert_eq!(v.message, r#"files.a: ConfigMap net/cm has no key "startup""#);
        assert_eq!(
            v.all,
            r#"onie.installImage: OsImage net/x is not Ready yet (Fetching); files.a: ConfigMap net/cm has no key "startup""#
        );
    }
}
