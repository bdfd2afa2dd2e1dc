//! An OsImage that SwitchProfiles use is not deleted under them: its deletion waits (the
//! controller keeps its finalizer, standalone keeps serving it) until no profile of its namespace
//! references it any more. Meanwhile the image stays stored and served, and its status says who
//! holds it: `Terminating=True`, reason `InUse`, the message naming the profiles (and a Warning
//! Event `InUse`, once).

use std::sync::Arc;

use super::{EventType, ImageReporter, ReportError, object_name};
use crate::api::{
    ConditionStatus, ConditionType, OsImage, SwitchProfile,
    conditions::{find_condition, set_condition},
};

/// Profiles named in a message at most; the rest are counted.
const NAMED_USERS: usize = 10;

/// The live SwitchProfiles (`namespace/name`, sorted) of the image's namespace that reference it.
pub fn users(image: &OsImage, profiles: &[Arc<SwitchProfile>]) -> Vec<String> {
    let ns = image.metadata.namespace.as_deref();
    let Some(name) = image.metadata.name.as_deref() else { return Vec::new() };
    let mut out: Vec<String> = profiles
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && p.metadata.namespace.as_deref() == ns)
        .filter(|p| p.spec.references().os_images.contains(name))
        .map(|p| object_name(&p.metadata))
        .collect();
    out.sort();
    out
}

/// `deletion waits: still used by SwitchProfile a/b, a/c; …`.
pub fn message(users: &[String]) -> String {
    let mut named = users.iter().take(NAMED_USERS).cloned().collect::<Vec<_>>().join(", ");
    if users.len() > NAMED_USERS {
        named.push_str(&format!(" and {} more", users.len() - NAMED_USERS));
    }
    let noun = if users.len() == 1 { "SwitchProfile" } else { "SwitchProfiles" };
    format!(
        "deletion waits: still used by {noun} {named}; the image stays stored and served until no profile references it"
    )
}

/// Reports that the image's deletion waits for `users` (not empty): the status (when it
/// changed) and a Warning Event the first time.
pub async fn report_held(
    image: &OsImage,
    users: &[String],
    reporter: &dyn ImageReporter,
) -> Result<(), ReportError> {
    let msg = message(users);
    let mut status = image.status.clone().unwrap_or_default();
    let first = find_condition(&status.conditions, ConditionType::Terminating)
        .is_none_or(|c| c.status != "True" || c.reason != "InUse");
    set_condition(
        &mut status.conditions,
        ConditionType::Terminating,
        ConditionStatus::True,
        "InUse",
        &msg,
        image.metadata.generation,
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    status.message = Some(msg.clone());
    // Deletion bumped the generation (a custom resource's does); the spec is what was stored.
    status.observed_generation = image.metadata.generation;
    if image.status.as_ref() != Some(&status) {
        reporter.status(image, &status).await?;
    }
    if first {
        reporter.event(image, EventType::Warning, "InUse", &msg).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(ns: &str, name: &str, image: &str, deleting: bool) -> Arc<SwitchProfile> {
        let mut p: SwitchProfile = serde_json::from_value(serde_json::json!({
            "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "SwitchProfile",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"match": {"models": ["m"]}, "onie": {"installImage": {"name": image}}},
        }))
        .expect("profile");
        if deleting {
            p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        }
        Arc::new(p)
    }

    #[test]
    fn only_live_profiles_of_the_images_namespace_that_name_it_hold_it() {
        let image: OsImage = serde_json::from_value(serde_json::json!({
            "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "OsImage",
            "metadata": {"name": "nos", "namespace": "lab"},
            "spec": {"platform": "p", "version": "1", "source": {"url": {"url": "http://s/f"}}, "sha256": "0".repeat(64)},
        }))
        .expect("image");
        let profiles = [
            profile("lab", "b", "nos", false),
            profile("lab", "a", "nos", false),
            profile("lab", "going", "nos", true),
            profile("other", "c", "nos", false),
            profile("lab", "d", "another", false),
        ];
        assert_eq!(users(&image, &profiles), ["lab/a", "lab/b"]);
        assert!(message(&["lab/a".into()]).contains("still used by SwitchProfile lab/a;"));
        let many: Vec<String> = (0..12).map(|i| format!("lab/p{i:02}")).collect();
        let m = message(&many);
        assert!(m.contains("lab/p09 and 2 more"), "{m}");
        assert!(!m.contains("lab/p10"), "{m}");
    }
}
