//! kstatus-style conditions shared by both resources, so Argo CD and Flux health checks work
//! without custom scripts (`Ready`, `Reconciling`, `Stalled`; plus `Conflict` on profiles).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types written by the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionType {
    /// The object's desired state is fully realised.
    Ready,
    /// The controller is working towards the desired state (kstatus "abnormal-true").
    Reconciling,
    /// The controller cannot make progress without a change from the user (kstatus "abnormal-true").
    Stalled,
    /// Two SwitchProfiles claim the same device.
    Conflict,
    /// Deletion was asked for and waits (an OsImage that SwitchProfiles still use).
    Terminating,
}

impl ConditionType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Reconciling => "Reconciling",
            Self::Stalled => "Stalled",
            Self::Conflict => "Conflict",
            Self::Terminating => "Terminating",
        }
    }
}

/// The three condition statuses of the Kubernetes API conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

/// Sets (or adds) a condition, moving `lastTransitionTime` only when the status flips, as the API
/// conventions require. Returns whether anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: ConditionType,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
    now: Time,
) -> bool {
    let new = Condition {
        type_: type_.as_str().to_owned(),
        status: status.as_str().to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation,
        last_transition_time: now,
    };
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            let changed = old.status != new.status
                || old.reason != new.reason
                || old.message != new.message
                || old.observed_generation != new.observed_generation;
            let transition = if old.status == new.status {
                old.last_transition_time.clone()
            } else {
                new.last_transition_time.clone()
            };
            *old = Condition { last_transition_time: transition, ..new };
            changed
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

/// Removes a condition of this type, if present. Returns whether one was removed.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: ConditionType) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_.as_str());
    before != conditions.len()
}

/// Sets a `True` condition of this type with `(reason, message)`, or removes it when `None`:
/// the shape of every abnormal-true kstatus condition (`Stalled`, `Reconciling`, `Conflict`).
/// Returns whether anything changed.
pub fn set_or_remove_condition(
    conditions: &mut Vec<Condition>,
    type_: ConditionType,
    value: Option<(&str, &str)>,
    observed_generation: Option<i64>,
    now: Time,
) -> bool {
    match value {
        Some((reason, message)) => {
            set_condition(conditions, type_, ConditionStatus::True, reason, message, observed_generation, now)
        }
        None => remove_condition(conditions, type_),
    }
}

/// Looks a condition up by type.
pub fn find_condition(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut cs = Vec::new();
        assert!(set_condition(
            &mut cs,
            ConditionType::Ready,
            ConditionStatus::False,
            "Fetching",
            "0%",
            Some(1),
            at(10)
        ));
        assert!(set_condition(
            &mut cs,
            ConditionType::Ready,
            ConditionStatus::False,
            "Fetching",
            "50%",
            Some(1),
            at(20)
        ));
        assert_eq!(cs[0].last_transition_time, at(10));
        assert!(!set_condition(
            &mut cs,
            ConditionType::Ready,
            ConditionStatus::False,
            "Fetching",
            "50%",
            Some(1),
            at(25)
        ));
        assert!(set_condition(
            &mut cs,
            ConditionType::Ready,
            ConditionStatus::True,
            "Verified",
            "ok",
            Some(1),
            at(30)
        ));
        assert_eq!(cs[0].last_transition_time, at(30));
        assert_eq!(cs.len(), 1);
        assert_eq!(find_condition(&cs, ConditionType::Ready).map(|c| c.status.as_str()), Some("True"));
        assert!(remove_condition(&mut cs, ConditionType::Ready));
        assert!(!remove_condition(&mut cs, ConditionType::Ready));
    }
}
