use super::*;
use crate::api::{DeviceFacts, MatchedBy};

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn config(at: i64, start: bool) -> Event {
    Event { at: t(at), what: What::ConfigServed { start } }
}

fn image(at: i64, start: bool) -> Event {
    Event { at: t(at), what: What::ImageServed { start, path: Some("nvos/25.02/nvos.bin".into()) } }
}

fn report(at: i64, stage: &str, result: StageResult, message: Option<&str>) -> Event {
    Event { at: t(at), what: What::Reported(Report::new(stage, result, message).unwrap()) }
}

fn ok(at: i64, stage: &str) -> Event {
    report(at, stage, StageResult::Ok, None)
}

fn failed(at: i64, stage: &str, why: &str) -> Event {
    report(at, stage, StageResult::Failed, Some(why))
}

fn spec() -> SwitchSpec {
    SwitchSpec::for_serial("SN1")
}

fn matched() -> Option<MatchedProfile> {
    Some(MatchedProfile { name: "leaf".into(), namespace: Some("fabric".into()), by: MatchedBy::Serial })
}

fn replay(events: &[Event]) -> SwitchStatus {
    let mut s = SwitchStatus::default();
    for e in events {
        record(&mut s, None, e);
    }
    s
}

/// (trigger, result, stage names) of each attempt, newest first.
fn shape(s: &SwitchStatus) -> Vec<(AttemptTrigger, Option<AttemptResult>, Vec<String>)> {
    s.attempts
        .iter()
        .map(|a| (a.trigger, a.result, a.stages.iter().map(|s| s.name.clone()).collect()))
        .collect()
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn phase_of(s: &SwitchStatus) -> SwitchPhase {
    phase(&spec(), matched().as_ref(), s)
}

#[test]
fn a_full_run_is_one_attempt_that_ends_provisioned() {
    let s = replay(&[
        image(0, true),
        config(60, true),
        config(61, false),
        image(62, false),
        ok(90, "image-installed"),
        ok(95, "config-applied"),
        ok(100, "provisioned"),
    ]);
    assert_eq!(
        shape(&s),
        vec![(
            AttemptTrigger::Discovered,
            Some(AttemptResult::Provisioned),
            names(&["ImageServed", "ConfigServed", "image-installed", "config-applied", "Provisioned"])
        )]
    );
    assert_eq!(s.attempts[0].ended, Some(Time(t(100))));
    assert_eq!(s.attempts[0].stages[0].message.as_deref(), Some("nvos/25.02/nvos.bin"));
    assert_eq!(phase_of(&s), SwitchPhase::Provisioned);
}

#[test]
fn the_phase_follows_the_newest_stage() {
    let mut s = SwitchStatus::default();
    assert_eq!(phase_of(&s), SwitchPhase::Discovered);
    record(&mut s, None, &image(0, true));
    assert_eq!(phase_of(&s), SwitchPhase::Installing);
    record(&mut s, None, &config(10, true));
    assert_eq!(phase_of(&s), SwitchPhase::Configuring);
    record(&mut s, None, &ok(20, "image-installed"));
    assert_eq!(phase_of(&s), SwitchPhase::Configuring);
    record(&mut s, None, &failed(30, "config-apply", "nv config apply: exit 1"));
    assert_eq!(phase_of(&s), SwitchPhase::Failed);

    let mut held = spec();
    held.hold = true;
    assert_eq!(phase(&held, matched().as_ref(), &s), SwitchPhase::Held, "hold wins over everything");
    assert_eq!(phase(&spec(), None, &s), SwitchPhase::Unmatched);
}

#[test]
fn events_are_idempotent_in_any_number_of_replays() {
    let events = [config(0, true), image(5, false), ok(7, "a"), ok(7, "a"), ok(8, "a"), ok(9, "provisioned")];
    let once = replay(&events);
    let mut twice = once.clone();
    for e in &events {
        assert!(!record(&mut twice, None, e), "{e:?} recorded again");
    }
    assert_eq!(once, twice);
    assert_eq!(shape(&once)[0].2, names(&["ConfigServed", "ImageServed", "a", "a", "Provisioned"]));
}

#[test]
fn a_served_stage_is_recorded_once_unless_reached_earlier() {
    // A section at 20 after the ZTP JSON at 10 adds nothing; one at 5 (a replica that flushed
    // late) opened the attempt: the attempt starts then, as it would have in time order.
    let s = replay(&[config(10, true), config(20, false), config(5, false)]);
    let times: Vec<Time> = s.attempts[0].stages.iter().map(|s| s.time.clone()).collect();
    assert_eq!(times, [Time(t(5)), Time(t(10))]);
    assert_eq!(s.attempts[0].started, Time(t(5)));
    assert_eq!(s, replay(&[config(5, false), config(10, true), config(20, false)]), "the same in time order");
}

#[test]
fn times_are_whole_seconds_as_stored() {
    let mut s = SwitchStatus::default();
    let at = |nanos| Event {
        at: t(3).checked_add(k8s_openapi::jiff::SignedDuration::from_nanos(nanos)).unwrap(),
        what: What::ConfigServed { start: true },
    };
    assert!(record(&mut s, None, &at(250_000_000)));
    assert!(!record(&mut s, None, &at(750_000_000)), "the same second");
    assert_eq!(s.attempts[0].started, Time(t(3)));
    let stored: SwitchStatus = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
    assert_eq!(stored, s, "what is stored reads back equal");
}

#[test]
fn two_replicas_in_either_order_give_one_history() {
    // Replica A served config and the image; replica B took the reports. Each flushes its own
    // events onto what the other wrote, in either order.
    let a = [config(0, true), image(10, false)];
    let b = [ok(20, "image-installed"), ok(30, "provisioned")];
    let mut a_then_b = replay(&a);
    b.iter().for_each(|e| _ = record(&mut a_then_b, None, e));
    let mut b_then_a = replay(&b);
    a.iter().for_each(|e| _ = record(&mut b_then_a, None, e));
    assert_eq!(shape(&a_then_b), shape(&b_then_a));
    assert_eq!(a_then_b.attempts[0].stages, b_then_a.attempts[0].stages);
    assert_eq!(a_then_b.attempts[0].result, Some(AttemptResult::Provisioned));
}

#[test]
fn a_failure_stays_until_the_switch_starts_over() {
    let mut s = replay(&[config(0, true), failed(10, "config-apply", "exit 1")]);
    assert!(!record(&mut s, None, &image(20, false)), "a section's image after the failure");
    assert!(!record(&mut s, None, &ok(21, "late")));
    assert_eq!(phase_of(&s), SwitchPhase::Failed);
    assert!(record(&mut s, None, &config(30, true)), "the ZTP JSON again: a new attempt");
    assert_eq!(
        shape(&s),
        vec![
            (AttemptTrigger::Restarted, None, names(&["ConfigServed"])),
            (
                AttemptTrigger::Discovered,
                Some(AttemptResult::Failed),
                names(&["ConfigServed", "config-apply"])
            ),
        ]
    );
    assert_eq!(phase_of(&s), SwitchPhase::Configuring);
    let failure = &s.attempts[1].stages[1];
    assert_eq!((failure.result, failure.message.as_deref()), (Some(StageResult::Failed), Some("exit 1")));
}

#[test]
fn a_fresh_start_served_before_the_failure_was_known_moves_to_its_own_attempt() {
    // Replica B served the restart at 30 and flushed first; replica A's failure at 10 follows.
    let mut s = replay(&[config(0, true), config(30, true)]);
    assert_eq!(s.attempts.len(), 1, "B could not know of the failure");
    record(&mut s, None, &failed(10, "config-apply", "exit 1"));
    assert_eq!(
        shape(&s),
        vec![
            (AttemptTrigger::Restarted, None, names(&["ConfigServed"])),
            (
                AttemptTrigger::Discovered,
                Some(AttemptResult::Failed),
                names(&["ConfigServed", "config-apply"])
            ),
        ]
    );
    assert_eq!(s.attempts[0].started, Time(t(30)));
    // The same history as when the failure was known first.
    let known_first = replay(&[config(0, true), failed(10, "config-apply", "exit 1"), config(30, true)]);
    assert_eq!(s, known_first);
}

#[test]
fn a_late_event_lands_in_the_attempt_its_time_falls_in() {
    let mut s = replay(&[config(0, true), failed(10, "x", "boom"), config(30, true)]);
    assert!(record(&mut s, None, &image(5, false)));
    assert_eq!(shape(&s)[1].2, names(&["ConfigServed", "ImageServed", "x"]));
    assert!(!record(&mut s, None, &image(20, false)), "between attempts: the switch was idle");
    assert!(record(&mut s, None, &image(-5, false)), "before the first attempt: it opened it");
    assert_eq!(s.attempts[1].started, Time(t(-5)));
    assert!(record(&mut s, None, &config(25, true)), "a fresh start between two attempts opened the next");
    assert_eq!(s.attempts[0].started, Time(t(25)));
    assert_eq!(shape(&s)[0].2, names(&["ConfigServed", "ConfigServed"]));
}

#[test]
fn reprovision_supersedes_an_open_attempt_and_follows_a_closed_one() {
    let mut s = replay(&[config(0, true)]);
    let mut sp = spec();
    assert!(!reprovision(&mut s, &sp, t(5)), "unchanged");
    sp.reprovision = Some("ticket-1".into());
    assert!(reprovision(&mut s, &sp, t(5)));
    assert!(!reprovision(&mut s, &sp, t(6)), "applied once");
    assert_eq!(
        shape(&s),
        vec![
            (AttemptTrigger::Reprovision, None, vec![]),
            (AttemptTrigger::Discovered, Some(AttemptResult::Superseded), names(&["ConfigServed"])),
        ]
    );
    assert_eq!(phase(&sp, matched().as_ref(), &s), SwitchPhase::Discovered);
    record(&mut s, Some("ticket-1"), &config(10, true));
    record(&mut s, Some("ticket-1"), &ok(20, "provisioned"));
    sp.reprovision = Some("ticket-2".into());
    assert!(reprovision(&mut s, &sp, t(30)));
    assert_eq!(s.attempts[1].result, Some(AttemptResult::Provisioned), "a closed attempt keeps its result");
    assert_eq!(s.attempts[0].reprovision.as_deref(), Some("ticket-2"));
    let mut never_seen = SwitchStatus::default();
    assert!(!reprovision(&mut never_seen, &sp, t(0)));
    record(&mut never_seen, sp.reprovision.as_deref(), &config(1, true));
    assert!(!reprovision(&mut never_seen, &sp, t(2)), "the first attempt carries the value");
}

#[test]
fn history_and_stages_are_bounded() {
    let mut s = SwitchStatus::default();
    for i in 0..15 {
        record(&mut s, None, &config(i * 100, true));
        record(&mut s, None, &failed(i * 100 + 1, "x", "boom"));
    }
    assert_eq!(s.attempts.len(), MAX_ATTEMPTS);
    assert_eq!(s.attempts[0].started, Time(t(1400)), "newest first");
    let mut s = SwitchStatus::default();
    record(&mut s, None, &config(0, true));
    for i in 1..100 {
        record(&mut s, None, &ok(i, &format!("step-{i}")));
    }
    let stages = &s.attempts[0].stages;
    assert_eq!(stages.len(), MAX_STAGES);
    assert_eq!(stages[0].name, CONFIG_SERVED, "the first stage stays");
    assert_eq!(stages[MAX_STAGES - 1].name, "step-99", "the newest stay");
}

#[test]
fn reports_are_checked_and_cut() {
    assert!(Report::new("", StageResult::Ok, None).is_err());
    assert!(Report::new("a b", StageResult::Ok, None).is_err());
    assert!(Report::new(&"a".repeat(65), StageResult::Ok, None).is_err());
    assert!(Report::new("../x", StageResult::Ok, None).is_err());
    assert_eq!(Report::new("PROVISIONED", StageResult::Ok, None).unwrap().stage, PROVISIONED);
    let long = "é".repeat(400);
    let m = Report::new("x", StageResult::Ok, Some(&long)).unwrap().message.unwrap();
    assert!(m.len() <= MAX_STAGE_MESSAGE && m.chars().all(|c| c == 'é'));
    assert_eq!(Report::new("x", StageResult::Ok, Some("")).unwrap().message, None);
}

#[test]
fn conditions_follow_the_phase_for_kstatus() {
    let cond = |s: &SwitchStatus, ty: &str| {
        s.conditions.iter().find(|c| c.type_ == ty).map(|c| (c.status.clone(), c.reason.clone()))
    };
    let mut s = replay(&[config(0, true)]);
    assert!(refresh(&mut s, &spec(), Some(3), matched(), t(1)));
    assert!(!refresh(&mut s, &spec(), Some(3), matched(), t(2)), "nothing new");
    assert_eq!(s.phase, Some(SwitchPhase::Configuring));
    assert_eq!(s.observed_generation, Some(3));
    assert_eq!(cond(&s, "Ready"), Some(("False".into(), "Configuring".into())));
    assert_eq!(cond(&s, "Reconciling"), Some(("True".into(), "Configuring".into())));
    assert_eq!(cond(&s, "Stalled"), None);

    record(&mut s, None, &ok(10, "provisioned"));
    refresh(&mut s, &spec(), Some(3), matched(), t(11));
    assert_eq!(cond(&s, "Ready"), Some(("True".into(), "Provisioned".into())));
    assert_eq!((cond(&s, "Reconciling"), cond(&s, "Stalled")), (None, None));

    record(&mut s, None, &config(20, true));
    record(&mut s, None, &failed(30, "config-apply", "exit 1"));
    refresh(&mut s, &spec(), Some(3), matched(), t(31));
    assert_eq!(cond(&s, "Stalled"), Some(("True".into(), "Failed".into())));
    let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "False");
    assert!(ready.message.contains("config-apply") && ready.message.contains("exit 1"), "{}", ready.message);

    let mut unmatched = SwitchStatus {
        device: Some(DeviceFacts { mac: Some("0c:42:a1:00:00:01".into()), ..Default::default() }),
        ..Default::default()
    };
    refresh(&mut unmatched, &spec(), Some(1), None, t(0));
    assert_eq!(unmatched.phase, Some(SwitchPhase::Unmatched));
    let stalled = unmatched.conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
    assert!(
        stalled.message.contains("SN1") && stalled.message.contains("0c:42:a1:00:00:01"),
        "{}",
        stalled.message
    );

    // Pinned to a profile the servers do not have: the message says so, not "nothing matches".
    let pinned = SwitchSpec { profile: Some("lab-bench".into()), ..spec() };
    refresh(&mut unmatched, &pinned, Some(2), None, t(1));
    let stalled = unmatched.conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
    assert!(
        stalled.message.starts_with("spec.profile pins SwitchProfile \"lab-bench\""),
        "{}",
        stalled.message
    );

    let mut held = spec();
    held.hold = true;
    refresh(&mut s, &held, Some(4), matched(), t(40));
    assert_eq!(s.phase, Some(SwitchPhase::Held));
    assert_eq!(cond(&s, "Ready"), Some(("False".into(), "Held".into())));
    assert_eq!((cond(&s, "Reconciling"), cond(&s, "Stalled")), (None, None), "held is a steady state");
}

#[test]
fn a_fresh_start_in_the_second_of_the_close_opens_a_new_attempt() {
    // Stored times have whole seconds: a restart served right after `provisioned` shares its second.
    let s = replay(&[config(0, true), ok(10, "provisioned"), config(10, true), image(10, false)]);
    assert_eq!(
        shape(&s),
        vec![
            (AttemptTrigger::Restarted, None, names(&["ConfigServed", "ImageServed"])),
            (
                AttemptTrigger::Discovered,
                Some(AttemptResult::Provisioned),
                names(&["ConfigServed", "Provisioned"])
            ),
        ]
    );
    // A report in the close's second is still the closed attempt's.
    let s = replay(&[config(0, true), ok(10, "provisioned"), ok(10, "late")]);
    assert_eq!(s.attempts.len(), 1);
}
