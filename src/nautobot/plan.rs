//! What one sync does to the cluster's objects, decided without I/O: which declared objects to
//! apply (new, changed, or not known to be as declared), which existing objects the source may
//! not touch (a name clash), and which of its own objects to prune.
//!
//! An object is the source's when it carries the source's label ([`SOURCE_LABEL`]). A Switch
//! that discovery made (labelled [`DISCOVERED_BY`](crate::switch::k8s::DISCOVERED_BY)) for a
//! device's serial is adopted: it is the same switch. Anything else of that name — made by hand,
//! by Git, or by another source — is never touched: a clash, reported. Pruning takes only the
//! source's own objects that are not declared any more, and never one whose device or image file
//! is still in Nautobot but skipped (a device with a duplicate serial keeps its Switch as it was).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

pub use crate::api::nautobot::{ID_ANNOTATION, SOURCE_LABEL};
use crate::switch::k8s::DISCOVERED_BY;

/// Annotation on every object a NautobotSource applies: a digest (hex) of what it applied, so that
/// an unchanged object is not written again, by this process or the next.
pub const DIGEST_ANNOTATION: &str = "ztp.netops.dev/nautobot-digest";
/// The field manager of the source's server-side applies.
pub const FIELD_MANAGER: &str = "ztp-operator-nautobot";

/// An existing object of a kind, as far as the plan needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    /// The source whose label it carries ([`SOURCE_LABEL`]).
    pub source: Option<String>,
    /// The Nautobot id it was applied for ([`ID_ANNOTATION`]).
    pub nautobot_id: Option<String>,
    /// A Switch the device server made when the device first asked.
    pub discovered: bool,
    /// The digest of what the source last applied to it ([`DIGEST_ANNOTATION`]).
    pub digest: Option<u64>,
    /// Being deleted.
    pub deleting: bool,
}

/// Who an existing object belongs to, seen from source `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This source's.
    Ours,
    /// A discovered Switch no source manages: adopted.
    Adoptable,
    /// Another source's (its name).
    OtherSource(String),
    /// Made otherwise (by hand, by Git): never touched.
    HandMade,
}

impl Existing {
    /// What the plan needs of an object, read through its `label` and `annotation` lookups.
    pub fn read<'a>(
        label: impl Fn(&str) -> Option<&'a str>,
        annotation: impl Fn(&str) -> Option<&'a str>,
        deleting: bool,
    ) -> Self {
        Existing {
            source: label(SOURCE_LABEL).map(str::to_owned),
            nautobot_id: annotation(ID_ANNOTATION).map(str::to_owned),
            discovered: label(DISCOVERED_BY.0) == Some(DISCOVERED_BY.1),
            digest: annotation(DIGEST_ANNOTATION).and_then(|d| u64::from_str_radix(d, 16).ok()),
            deleting,
        }
    }

    pub fn owner(&self, source: &str) -> Owner {
        match &self.source {
            Some(s) if s == source => Owner::Ours,
            Some(s) => Owner::OtherSource(s.clone()),
            None if self.discovered => Owner::Adoptable,
            None => Owner::HandMade,
        }
    }
}

/// One declared object: its name and a digest of the body the source applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared<'a> {
    pub name: &'a str,
    pub digest: u64,
}

/// A declared object the source may not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clash {
    pub name: String,
    /// `made by hand`, `managed by NautobotSource X`, `being deleted`.
    pub why: String,
}

/// What to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Names to apply, and whether each is new (to count created / updated).
    pub apply: Vec<(String, bool)>,
    /// Declared and already as declared (the same digest applied before, still ours).
    pub unchanged: usize,
    pub clashes: Vec<Clash>,
    /// The source's objects no longer declared.
    pub prune: Vec<String>,
}

/// The plan for one kind: `declared` objects against `existing` ones (by name), `applied` (the
/// digest last applied per name, by this process), for `source`; `kept_ids` are the Nautobot ids
/// of devices or image files that are still there but skipped (their objects are not pruned).
pub fn plan<'a>(
    declared: impl IntoIterator<Item = Declared<'a>>,
    existing: &BTreeMap<String, Existing>,
    applied: &BTreeMap<String, u64>,
    kept_ids: &BTreeSet<&str>,
    source: &str,
) -> Plan {
    let mut out = Plan::default();
    let mut names = BTreeSet::new();
    for d in declared {
        names.insert(d.name);
        let Some(e) = existing.get(d.name) else {
            out.apply.push((d.name.to_owned(), true));
            continue;
        };
        let clash = |why: String| Clash { name: d.name.to_owned(), why };
        match e.owner(source) {
            _ if e.deleting => out.clashes.push(clash("it is being deleted".into())),
            Owner::Ours if applied.get(d.name) == Some(&d.digest) || e.digest == Some(d.digest) => {
                out.unchanged += 1
            }
            Owner::Ours | Owner::Adoptable => out.apply.push((d.name.to_owned(), false)),
            Owner::OtherSource(other) => {
                out.clashes.push(clash(format!("NautobotSource {other} manages it")))
            }
            Owner::HandMade => {
                out.clashes.push(clash("it was made by hand (or by Git), not by this source".into()))
            }
        }
    }
    for (name, e) in existing {
        let kept = e.nautobot_id.as_deref().is_some_and(|id| kept_ids.contains(id));
        if e.owner(source) == Owner::Ours && !names.contains(name.as_str()) && !kept && !e.deleting {
            out.prune.push(name.clone());
        }
    }
    out
}

/// The object the source applies for one declared Switch or OsImage (`kind`): its name,
/// namespace, the source label, the Nautobot-id annotation, the owner reference when given (with
/// `prune: Delete`), and `spec`. `ztpctl nautobot check --output yaml` prints the same objects.
pub fn object(
    kind: &str,
    name: &str,
    namespace: &str,
    source: &str,
    nautobot_id: &str,
    owner: Option<&Value>,
    spec: Value,
) -> Value {
    let mut metadata = json!({
        "name": name,
        "namespace": namespace,
        "labels": {SOURCE_LABEL: source},
        "annotations": {ID_ANNOTATION: nautobot_id},
    });
    if let Some(owner) = owner {
        metadata["ownerReferences"] = json!([owner]);
    }
    json!({"apiVersion": "ztp.netops.dev/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(id: &str) -> Existing {
        Existing { source: Some("dc1".to_owned()), nautobot_id: Some(id.to_owned()), ..Default::default() }
    }

    #[test]
    fn new_changed_and_unknown_objects_are_applied_unchanged_ones_are_not() {
        let existing = BTreeMap::from([("a".to_owned(), ours("1")), ("b".to_owned(), ours("2"))]);
        let applied = BTreeMap::from([("a".to_owned(), 7), ("b".to_owned(), 8)]);
        let declared = [
            Declared { name: "a", digest: 7 },
            Declared { name: "b", digest: 9 },
            Declared { name: "c", digest: 1 },
        ];
        let p = plan(declared, &existing, &applied, &BTreeSet::new(), "dc1");
        assert_eq!(p.apply, [("b".to_owned(), false), ("c".to_owned(), true)]);
        assert_eq!(p.unchanged, 1);
        assert!(p.clashes.is_empty() && p.prune.is_empty());
        // After a restart nothing is known in memory: the digest on the object says it is as
        // declared; without one (or another), it is applied.
        let p =
            plan([Declared { name: "a", digest: 7 }], &existing, &BTreeMap::new(), &BTreeSet::new(), "dc1");
        assert_eq!(p.apply, [("a".to_owned(), false)]);
        assert_eq!(p.prune, ["b"]);
        let mut existing = existing;
        existing.get_mut("a").expect("a").digest = Some(7);
        existing.insert("c".to_owned(), Existing { digest: Some(2), ..ours("4") });
        let declared = [Declared { name: "a", digest: 7 }, Declared { name: "c", digest: 1 }];
        let p = plan(declared, &existing, &BTreeMap::new(), &BTreeSet::new(), "dc1");
        assert_eq!(p.apply, [("c".to_owned(), false)]);
        assert_eq!(p.unchanged, 1);
    }

    #[test]
    fn others_objects_are_clashes_and_discovered_switches_are_adopted() {
        let existing = BTreeMap::from([
            ("hand".to_owned(), Existing::default()),
            ("other".to_owned(), Existing { source: Some("dc2".to_owned()), ..Default::default() }),
            ("seen".to_owned(), Existing { discovered: true, ..Default::default() }),
            ("going".to_owned(), Existing { deleting: true, ..ours("9") }),
        ]);
        let declared = ["hand", "other", "seen", "going"].map(|name| Declared { name, digest: 1 });
        let p = plan(declared, &existing, &BTreeMap::new(), &BTreeSet::new(), "dc1");
        assert_eq!(p.apply, [("seen".to_owned(), false)]);
        let why: Vec<(&str, &str)> = p.clashes.iter().map(|c| (c.name.as_str(), c.why.as_str())).collect();
        assert_eq!(
            why,
            [
                ("hand", "it was made by hand (or by Git), not by this source"),
                ("other", "NautobotSource dc2 manages it"),
                ("going", "it is being deleted"),
            ]
        );
        assert!(p.prune.is_empty(), "never another's, never a hand-made one");
    }

    #[test]
    fn only_the_sources_undeclared_objects_are_pruned_and_never_a_skipped_devices() {
        let existing = BTreeMap::from([
            ("gone".to_owned(), ours("1")),
            ("skipped".to_owned(), ours("2")),
            ("hand".to_owned(), Existing::default()),
            ("declared".to_owned(), ours("3")),
        ]);
        let kept = BTreeSet::from(["2"]);
        let p = plan([Declared { name: "declared", digest: 1 }], &existing, &BTreeMap::new(), &kept, "dc1");
        assert_eq!(p.prune, ["gone"]);
    }
}
