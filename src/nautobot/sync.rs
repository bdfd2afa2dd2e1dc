//! One sync of a NautobotSource, the same in the cluster and in standalone: the client made from
//! the source's token and CA bundle ([`connect`]), the read (the change log when the last full read
//! is recent and the spec the same, else a full read: [`read`]), the objects the inventory
//! declares with their digests ([`Declaration`]), the plan carried out against a [`Target`] (the
//! apiserver, or standalone's mirror of the source) with its counts ([`apply`], [`prune`]), and the status
//! that follows ([`status_after`]). What differs — where objects are written, where the status
//! goes — is the caller's.

use std::{
    collections::{BTreeMap, BTreeSet},
    hash::{Hash, Hasher},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;
use serde_json::{Value, json};

use super::{
    Desired, Inventory, Skipped,
    client::{Nautobot, NautobotError},
    plan::{Clash, DIGEST_ANNOTATION, Declared, Existing, Plan, object, plan},
    read::{self, Delta, Mark},
};
use crate::{
    api::{
        ConditionStatus, ConditionType,
        conditions::set_condition,
        nautobot::{
            NautobotSourceSpec, NautobotSourceStatus, ObjectCounts, PrunePolicy, SkippedObject, bounded_skips,
        },
    },
    lookup::{Kind, ObjectLookup},
};

/// A full read at least this often, besides the change log.
pub const FULL_READ_EVERY: Duration = Duration::from_secs(3600);
/// The first poll after a failed read comes this soon; each further failure doubles it, up to
/// [`MAX_RETRY`] or the source's interval, whichever is shorter ([`retry_after`]).
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
/// The longest wait after a failed read (an interval of an hour is not waited after a failure).
pub const MAX_RETRY: Duration = Duration::from_secs(300);
/// Clashes named in the `Conflict` condition; the rest are counted.
const NAMED_CLASHES: usize = 10;

/// What is kept between polls of one source.
#[derive(Debug, Default)]
pub struct SourceState {
    /// The source object's uid and generation at the last full read (another object or spec
    /// reads fully again).
    identity: (String, Option<i64>),
    inventory: Inventory,
    pub mark: Mark,
    full_read_at: Option<Instant>,
    /// The digest last applied per object name (of what this process applied).
    pub switches: BTreeMap<String, u64>,
    pub images: BTreeMap<String, u64>,
    /// Syncs in a row that did not read Nautobot (the next poll comes sooner: [`retry_after`]).
    failed_reads: u32,
}

/// When to poll again after a sync: `interval` after a read, sooner after `failed_reads` failed
/// reads in a row: [`FIRST_RETRY`] (5 s), doubling at each failure, never past `interval` nor
/// [`MAX_RETRY`] (5 min).
pub fn retry_after(interval: Duration, failed_reads: u32) -> Duration {
    if failed_reads == 0 {
        return interval;
    }
    let doublings = (failed_reads - 1).min(16);
    FIRST_RETRY.saturating_mul(1 << doublings).min(MAX_RETRY).min(interval)
}

/// Why a sync did not read Nautobot (nothing changed): the condition's reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unread {
    pub reason: &'static str,
    pub message: String,
}

/// What one sync did.
#[derive(Debug, Default)]
pub struct Synced {
    pub devices: usize,
    pub full: bool,
    pub switches: ObjectCounts,
    pub images: ObjectCounts,
    pub clashes: Vec<Clash>,
    /// Objects whose apply or prune failed, with why.
    pub failures: Vec<String>,
    /// Devices and image files that made no object, and why.
    pub skipped: Vec<SkippedObject>,
    pub skipped_images: Vec<SkippedObject>,
}

/// The client for `spec`: its token from the Secret `tokenSecretRef` names (or, where there is no
/// such Secret, `fallback_token`: standalone's environment variable) and its CA bundle from the
/// ConfigMap `caBundleRef` names, both in `ns`.
pub async fn connect(
    lookup: &dyn ObjectLookup,
    ns: &str,
    spec: &NautobotSourceSpec,
    fallback_token: Option<&str>,
) -> Result<Nautobot, Unread> {
    let token = match lookup.text(Kind::Secret, ns, &spec.token_secret_ref).await {
        Ok(token) => token,
        Err(crate::lookup::LookupError::NotFound { .. }) if fallback_token.is_some() => {
            fallback_token.unwrap_or_default().to_owned()
        }
        Err(e) => return Err(Unread { reason: "TokenUnavailable", message: format!("the token: {e}") }),
    };
    let ca =
        match &spec.ca_bundle_ref {
            Some(r) => Some(lookup.bytes(Kind::ConfigMap, ns, r).await.map_err(|e| Unread {
                reason: "CaBundleUnavailable",
                message: format!("the CA bundle: {e}"),
            })?),
            None => None,
        };
    Nautobot::new(&spec.url, token.trim(), ca.as_deref())
        .map_err(|e| Unread { reason: "InvalidSource", message: e.to_string() })
}

/// Reads Nautobot into `state`: the change log when the last full read of this source object
/// (`uid`) at this `generation` is recent, else everything. Whether it read fully. On an error
/// `state` keeps what it had (the next poll tries again).
pub async fn read(
    nb: &Nautobot,
    spec: &NautobotSourceSpec,
    state: &mut SourceState,
    uid: &str,
    generation: Option<i64>,
) -> Result<bool, Unread> {
    let unread = |e: NautobotError| unread(e, spec);
    let same = state.identity.0 == uid && state.identity.1 == generation;
    let fresh = same && state.full_read_at.is_some_and(|at| at.elapsed() < FULL_READ_EVERY);
    if fresh {
        match read::changes(nb, spec, &mut state.inventory, &mut state.mark).await.map_err(unread)? {
            Delta::Nothing | Delta::Applied(_) => return Ok(false),
            Delta::NeedsFull(why) => tracing::info!(url = %spec.url, why, "a full read of Nautobot"),
        }
    }
    let (inventory, mark) = read::full(nb, spec).await.map_err(unread)?;
    if !same {
        // Another spec may declare other bodies: apply everything once.
        state.switches.clear();
        state.images.clear();
    }
    state.identity = (uid.to_owned(), generation);
    state.inventory = inventory;
    state.mark = mark;
    state.full_read_at = Some(Instant::now());
    Ok(true)
}

/// The condition after a failed read: Nautobot's error, and for a certificate it refused, where
/// the CAs it trusts come from.
fn unread(e: NautobotError, spec: &NautobotSourceSpec) -> Unread {
    let message = match (&e, &spec.ca_bundle_ref) {
        (NautobotError::Untrusted { .. }, Some(r)) => format!(
            "{e}: the CA that signed it belongs in the CA bundle caBundleRef names (ConfigMap {}, key {})",
            r.name, r.key
        ),
        (NautobotError::Untrusted { .. }, None) => format!(
            "{e}: only the system's CAs are trusted; set caBundleRef to a ConfigMap key holding the CA that signed it"
        ),
        _ => e.to_string(),
    };
    Unread { reason: "NautobotError", message }
}

impl SourceState {
    /// What the inventory read declares.
    pub fn declared(&self, spec: &NautobotSourceSpec) -> Desired {
        super::desired(&self.inventory, spec)
    }

    /// Devices in the inventory.
    pub fn devices(&self) -> usize {
        self.inventory.devices.len()
    }

    /// When to poll again, for a source polled every `interval`: [`retry_after`] the failed reads
    /// in a row so far.
    pub fn next_poll(&self, interval: Duration) -> Duration {
        retry_after(interval, self.failed_reads)
    }
}

/// The source being synced: where its objects go (its namespace), its name (their label), its
/// uid and generation (another object or spec reads fully again), its spec, and the owner
/// reference its objects carry (with `prune: Delete` in a cluster).
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub generation: Option<i64>,
    pub spec: &'a NautobotSourceSpec,
    pub owner: Option<&'a Value>,
}

/// Reads Nautobot (through `lookup`'s token and CA bundle, `fallback_token` where there is no
/// token Secret) and carries out what it declares on `images` and `switches`: OsImages applied
/// first (a Switch then never names one that does not exist yet) and pruned last (one is never
/// taken from under a Switch that still pins it).
pub async fn sync(
    source: &Source<'_>,
    lookup: &dyn ObjectLookup,
    fallback_token: Option<&str>,
    state: &mut SourceState,
    images: &dyn Target,
    switches: &dyn Target,
) -> Result<Synced, Unread> {
    let read = async {
        let nb = connect(lookup, source.namespace, source.spec, fallback_token).await?;
        let full = read(&nb, source.spec, state, source.uid, source.generation).await?;
        Ok::<_, Unread>((nb, full))
    };
    let (nb, full) = match read.await {
        Ok(read) => {
            state.failed_reads = 0;
            read
        }
        Err(e) => {
            state.failed_reads = state.failed_reads.saturating_add(1);
            return Err(e);
        }
    };
    tracing::debug!(source = source.name, requests = nb.requests(), full, "read Nautobot");
    let declared = state.declared(source.spec);
    let mut synced = Synced { devices: state.devices(), full, ..Default::default() };
    let (policy, failures) = (source.spec.prune, &mut synced.failures);
    let images_declared = Declaration::new(
        "OsImage",
        source,
        declared.images.iter().map(|(n, i)| (n.as_str(), i.file_id.as_str(), &i.spec)),
        &declared.skipped_images,
    );
    let (mut image_counts, image_plan) =
        apply(images, &images_declared, &images.existing(), &mut state.images, failures).await;
    let switches_declared = Declaration::new(
        "Switch",
        source,
        declared.switches.iter().map(|(n, s)| (n.as_str(), s.device_id.as_str(), &s.spec)),
        &declared.skipped,
    );
    let (mut switch_counts, switch_plan) =
        apply(switches, &switches_declared, &switches.existing(), &mut state.switches, failures).await;
    prune(switches, "Switch", &switch_plan, policy, &mut state.switches, &mut switch_counts, failures).await;
    // OsImages last: a Switch that moved to another image no longer pins the one that goes.
    prune(images, "OsImage", &image_plan, policy, &mut state.images, &mut image_counts, failures).await;
    synced.images = image_counts;
    synced.switches = switch_counts;
    synced.clashes = switch_plan.clashes.into_iter().chain(image_plan.clashes).collect();
    synced.skipped = declared.skipped.iter().map(Skipped::to_status).collect();
    synced.skipped_images = declared.skipped_images.iter().map(Skipped::to_status).collect();
    Ok(synced)
}

/// One kind's objects as a source declares them, each with the digest of the body it applies
/// (bodies are built again only for what is applied: 5,000 of them are never held at once); and
/// the Nautobot ids of the devices or image files skipped (their objects stay as they were).
pub struct Declaration<'a, T> {
    kind: &'static str,
    by: &'a Source<'a>,
    /// name → (Nautobot id, spec, digest).
    items: BTreeMap<&'a str, (&'a str, &'a T, u64)>,
    kept: BTreeSet<&'a str>,
}

impl<'a, T: Serialize> Declaration<'a, T> {
    pub fn new(
        kind: &'static str,
        by: &'a Source<'a>,
        items: impl IntoIterator<Item = (&'a str, &'a str, &'a T)>,
        skipped: &'a [Skipped],
    ) -> Self {
        let mut out = Self { kind, by, items: BTreeMap::new(), kept: BTreeSet::new() };
        for (name, id, spec) in items {
            let digest = digest(&out.unstamped(name, id, spec));
            out.items.insert(name, (id, spec, digest));
        }
        out.kept = skipped.iter().map(|s| s.id.as_str()).collect();
        out
    }

    fn unstamped(&self, name: &str, id: &str, spec: &T) -> Value {
        let (ns, source) = (self.by.namespace, self.by.name);
        object(self.kind, name, ns, source, id, self.by.owner, json!(spec))
    }

    /// The body applied for `name`, with its digest annotation (a restarted process knows what it
    /// wrote already).
    pub fn body(&self, name: &str) -> Option<(Value, u64)> {
        let (id, spec, digest) = self.items.get(name)?;
        let mut body = self.unstamped(name, id, spec);
        body["metadata"]["annotations"][DIGEST_ANNOTATION] = json!(format!("{digest:016x}"));
        Some((body, *digest))
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The plan against `existing`, given the digests this process `applied`.
    pub fn plan(&self, existing: &BTreeMap<String, Existing>, applied: &BTreeMap<String, u64>) -> Plan {
        let wanted = self.items.iter().map(|(name, (_, _, digest))| Declared { name, digest: *digest });
        plan(wanted, existing, applied, &self.kept, self.by.name)
    }
}

/// The digest of an object's body (before its digest annotation).
fn digest(body: &Value) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.to_string().hash(&mut h);
    h.finish()
}

/// Where a source's objects of one kind are written.
#[async_trait]
pub trait Target: Sync {
    /// The objects of the kind in the source's namespace, as the plan needs them.
    fn existing(&self) -> BTreeMap<String, Existing>;
    /// Applies `bodies` (a batch), each answered in order: done, or why not.
    async fn apply(&self, bodies: Vec<(&str, Value)>) -> Vec<Result<(), String>>;
    /// Prunes `name` as `policy` says: whether it was there, or why not.
    async fn prune(&self, name: &str, policy: PrunePolicy) -> Result<bool, String>;
    /// Objects applied per batch.
    fn batch(&self) -> usize {
        16
    }
}

/// Plans one kind against `existing` and applies what the plan says on `target`: the counts so
/// far, and the plan (its clashes, and what [`prune`] is to take later). `applied` learns each
/// digest written; failures are added to `failures`.
pub async fn apply<T: Serialize>(
    target: &dyn Target,
    declared: &Declaration<'_, T>,
    existing: &BTreeMap<String, Existing>,
    applied: &mut BTreeMap<String, u64>,
    failures: &mut Vec<String>,
) -> (ObjectCounts, Plan) {
    let plan = declared.plan(existing, applied);
    let mut counts = ObjectCounts {
        total: i64::try_from(declared.len() - plan.clashes.len()).unwrap_or(i64::MAX),
        unchanged: i64::try_from(plan.unchanged).unwrap_or(i64::MAX),
        ..Default::default()
    };
    // A batch at a time, each body built just before it is written and dropped after.
    for chunk in plan.apply.chunks(target.batch().max(1)) {
        let mut bodies = Vec::with_capacity(chunk.len());
        let mut digests = Vec::with_capacity(chunk.len());
        for (name, new) in chunk {
            if let Some((body, digest)) = declared.body(name) {
                bodies.push((name.as_str(), body));
                digests.push((name, *new, digest));
            }
        }
        for ((name, new, digest), result) in digests.into_iter().zip(target.apply(bodies).await) {
            match result {
                Ok(()) => {
                    applied.insert(name.clone(), digest);
                    if new { counts.created += 1 } else { counts.updated += 1 }
                }
                Err(e) => {
                    applied.remove(name);
                    failures.push(format!("{} {name}: {e}", declared.kind));
                }
            }
        }
    }
    (counts, plan)
}

/// Prunes `plan`'s objects of `kind` on `target` as `policy` says, counting them in `counts`;
/// `applied` forgets each one pruned.
pub async fn prune(
    target: &dyn Target,
    kind: &str,
    plan: &Plan,
    policy: PrunePolicy,
    applied: &mut BTreeMap<String, u64>,
    counts: &mut ObjectCounts,
    failures: &mut Vec<String>,
) {
    for name in &plan.prune {
        match target.prune(name, policy).await {
            Ok(was_there) => {
                applied.remove(name);
                match (was_there, policy) {
                    (false, _) => {} // gone already: pruned all the same
                    (true, PrunePolicy::Delete) => counts.deleted += 1,
                    (true, PrunePolicy::Orphan) => counts.orphaned += 1,
                }
            }
            Err(e) => failures.push(format!("{kind} {name}: {e}")),
        }
    }
}

/// The source's status after a sync (`outcome`), from the one it had: conditions for the
/// `generation` it saw, and after a read the counts, the skipped objects, the times and the
/// change-log cursor (`mark`); when Nautobot was not read, only the conditions change.
pub fn status_after(
    mut status: NautobotSourceStatus,
    outcome: Result<Synced, Unread>,
    mark: &Mark,
    generation: Option<i64>,
    now: Time,
) -> NautobotSourceStatus {
    status.observed_generation = generation;
    let mut set = |t, s, reason: &str, message: &str| {
        set_condition(&mut status.conditions, t, s, reason, message, generation, now.clone());
    };
    let synced = match outcome {
        Err(unread) => {
            set(ConditionType::Ready, ConditionStatus::False, unread.reason, &unread.message);
            set(ConditionType::Stalled, ConditionStatus::True, unread.reason, &unread.message);
            set(
                ConditionType::Reconciling,
                ConditionStatus::False,
                unread.reason,
                "the next poll reads again",
            );
            return status;
        }
        Ok(synced) => synced,
    };
    let summary = format!(
        "{} Switches and {} OsImages from {} devices in Nautobot",
        synced.switches.total, synced.images.total, synced.devices
    );
    if synced.failures.is_empty() {
        set(ConditionType::Ready, ConditionStatus::True, "Synced", &summary);
        set(ConditionType::Reconciling, ConditionStatus::False, "Synced", &summary);
    } else {
        let message = format!(
            "{} writes failed (the next poll tries again): {}",
            synced.failures.len(),
            synced.failures.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
        );
        set(ConditionType::Ready, ConditionStatus::False, "ApplyFailed", &message);
        set(ConditionType::Reconciling, ConditionStatus::True, "ApplyFailed", &message);
    }
    set(ConditionType::Stalled, ConditionStatus::False, "Synced", "Nautobot was read");
    if synced.clashes.is_empty() {
        set(
            ConditionType::Conflict,
            ConditionStatus::False,
            "NoClash",
            "no object of another owner is in the way",
        );
    } else {
        set(ConditionType::Conflict, ConditionStatus::True, "NameClash", &clash_message(&synced.clashes));
    }
    status.last_sync_time = Some(now.clone());
    if synced.full {
        status.last_full_sync_time = Some(now);
    }
    status.cursor = (!mark.time.is_empty()).then(|| mark.time.clone());
    status.devices = Some(i64::try_from(synced.devices).unwrap_or(i64::MAX));
    status.switches = Some(synced.switches);
    status.images = Some(synced.images);
    let (count, kept) = bounded_skips(synced.skipped);
    status.skipped = Some(count);
    status.skipped_devices = kept;
    let (count, kept) = bounded_skips(synced.skipped_images);
    status.skipped_image_files = Some(count);
    status.skipped_images = kept;
    status
}

/// `Switch a: it was made by hand …; OsImage b: …` (at most [`NAMED_CLASHES`], then a count).
fn clash_message(clashes: &[Clash]) -> String {
    let mut named: Vec<String> =
        clashes.iter().take(NAMED_CLASHES).map(|c| format!("{}: {}", c.name, c.why)).collect();
    if clashes.len() > NAMED_CLASHES {
        named.push(format!("and {} more", clashes.len() - NAMED_CLASHES));
    }
    format!("not applied, as another owner's object has the name: {}", named.join("; "))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::{
        api::conditions::find_condition,
        nautobot::{
            map::tests::{fleet, source},
            plan::{ID_ANNOTATION, SOURCE_LABEL},
        },
    };

    /// Objects in memory; applies of the names in `failing` fail.
    #[derive(Default)]
    struct Memory {
        objects: Mutex<BTreeMap<String, Value>>,
        failing: BTreeSet<String>,
    }

    #[async_trait]
    impl Target for Memory {
        fn existing(&self) -> BTreeMap<String, Existing> {
            let objects = self.objects.lock().expect("lock");
            let read = |meta: &Value| {
                Existing::read(|k| meta["labels"][k].as_str(), |k| meta["annotations"][k].as_str(), false)
            };
            objects.iter().map(|(name, body)| (name.clone(), read(&body["metadata"]))).collect()
        }

        async fn apply(&self, bodies: Vec<(&str, Value)>) -> Vec<Result<(), String>> {
            let mut objects = self.objects.lock().expect("lock");
            bodies
                .into_iter()
                .map(|(name, body)| {
                    if self.failing.contains(name) {
                        return Err("boom".to_owned());
                    }
                    objects.insert(name.to_owned(), body);
                    Ok(())
                })
                .collect()
        }

        async fn prune(&self, name: &str, policy: PrunePolicy) -> Result<bool, String> {
            let mut objects = self.objects.lock().expect("lock");
            match policy {
                PrunePolicy::Delete => Ok(objects.remove(name).is_some()),
                PrunePolicy::Orphan => Ok(objects
                    .get_mut(name)
                    .and_then(|b| b["metadata"]["labels"].as_object_mut().map(|l| l.remove(SOURCE_LABEL)))
                    .is_some()),
            }
        }

        fn batch(&self) -> usize {
            2
        }
    }

    /// Apply, then prune: one kind's whole sync.
    async fn carry_out(
        target: &Memory,
        declared: &Declaration<'_, crate::api::SwitchSpec>,
        existing: &BTreeMap<String, Existing>,
        applied: &mut BTreeMap<String, u64>,
        policy: PrunePolicy,
        failures: &mut Vec<String>,
    ) -> (ObjectCounts, Vec<Clash>) {
        let (mut counts, plan) = apply(target, declared, existing, applied, failures).await;
        prune(target, "Switch", &plan, policy, applied, &mut counts, failures).await;
        (counts, plan.clashes)
    }

    fn source_of(spec: &NautobotSourceSpec) -> Source<'_> {
        Source { namespace: "net", name: "dc1", uid: "u1", generation: Some(1), spec, owner: None }
    }

    fn counts(c: &ObjectCounts) -> [i64; 6] {
        [c.total, c.created, c.updated, c.unchanged, c.orphaned, c.deleted]
    }

    /// The Switches of the captured fleet through `carry_out`: created once, then unchanged (also
    /// for a restarted process, from the digest annotations), a failed apply said and tried
    /// again, a device gone orphaned or deleted as `prune` says.
    #[tokio::test]
    async fn carry_out_writes_only_what_changed_and_counts_what_it_did() {
        let spec = source();
        let src = source_of(&spec);
        let declared = super::super::desired(&fleet(), &spec);
        let decl = |d: &'_ Desired| -> Vec<(String, String, crate::api::SwitchSpec)> {
            d.switches.iter().map(|(n, s)| (n.clone(), s.device_id.clone(), s.spec.clone())).collect()
        };
        let items = decl(&declared);
        let n = i64::try_from(items.len()).expect("small");
        assert!(n >= 4, "{declared:#?}");
        let declaration = Declaration::new(
            "Switch",
            &src,
            items.iter().map(|(n, id, s)| (n.as_str(), id.as_str(), s)),
            &declared.skipped,
        );
        let (first, second) = (&items[0].0, &items[1].0);
        let target = Memory { failing: BTreeSet::from([second.clone()]), ..Default::default() };
        let (mut applied, mut failures) = (BTreeMap::new(), Vec::new());
        let carry =
            async |target: &Memory, applied: &mut BTreeMap<String, u64>, failures: &mut Vec<String>| {
                let existing = target.existing();
                carry_out(target, &declaration, &existing, applied, PrunePolicy::Orphan, failures).await
            };

        let (c, clashes) = carry(&target, &mut applied, &mut failures).await;
        assert_eq!(counts(&c), [n, n - 1, 0, 0, 0, 0]);
        assert!(clashes.is_empty());
        assert_eq!(failures, [format!("Switch {second}: boom")]);
        assert!(!applied.contains_key(second), "a failed apply is tried again");
        let body = target.objects.lock().expect("lock")[first].clone();
        assert_eq!(body["metadata"]["namespace"], "net");
        assert_eq!(body["metadata"]["labels"][SOURCE_LABEL], "dc1");
        assert!(body["metadata"]["annotations"][ID_ANNOTATION].is_string());
        assert_eq!(
            body["metadata"]["annotations"][DIGEST_ANNOTATION],
            format!("{:016x}", applied[first]),
            "the digest applied is on the object"
        );

        // Next poll: only the failed one is written (now it works).
        let target =
            Memory { objects: Mutex::new(target.objects.into_inner().expect("lock")), ..Default::default() };
        failures.clear();
        let (c, _) = carry(&target, &mut applied, &mut failures).await;
        assert_eq!(counts(&c), [n, 1, 0, n - 1, 0, 0]);
        // A restarted process knows nothing but what the objects say: nothing is written.
        let (c, _) = carry(&target, &mut BTreeMap::new(), &mut failures).await;
        assert_eq!(counts(&c), [n, 0, 0, n, 0, 0]);
        assert!(failures.is_empty(), "{failures:?}");

        // One of ours no longer declared: orphaned (label gone), or deleted.
        let mut stray = target.objects.lock().expect("lock")[first].clone();
        stray["metadata"]["name"] = json!("gone");
        target.objects.lock().expect("lock").insert("gone".into(), stray.clone());
        let existing = target.existing();
        let (c, _) =
            carry_out(&target, &declaration, &existing, &mut applied, PrunePolicy::Orphan, &mut failures)
                .await;
        assert_eq!(c.orphaned, 1);
        assert!(
            target.objects.lock().expect("lock")["gone"]["metadata"]["labels"].get(SOURCE_LABEL).is_none()
        );
        target.objects.lock().expect("lock").insert("gone".into(), stray);
        let (c, _) =
            carry_out(&target, &declaration, &existing, &mut applied, PrunePolicy::Delete, &mut failures)
                .await;
        assert_eq!(c.deleted, 1);
        assert!(!target.objects.lock().expect("lock").contains_key("gone"));
        // Gone already: pruned all the same, counted as nothing.
        let (c, _) =
            carry_out(&target, &declaration, &existing, &mut applied, PrunePolicy::Delete, &mut failures)
                .await;
        assert_eq!((c.deleted, c.orphaned), (0, 0));
        assert!(failures.is_empty(), "{failures:?}");
    }

    #[test]
    fn a_failed_read_is_retried_sooner_backing_off_to_the_interval_or_five_minutes() {
        let secs =
            |interval: u64, failures: u32| retry_after(Duration::from_secs(interval), failures).as_secs();
        let hour: Vec<u64> = (0..10).map(|n| secs(3600, n)).collect();
        assert_eq!(hour, [3600, 5, 10, 20, 40, 80, 160, 300, 300, 300]);
        let minute: Vec<u64> = (0..6).map(|n| secs(60, n)).collect();
        assert_eq!(minute, [60, 5, 10, 20, 40, 60]);
        assert_eq!(secs(10, 1), 5);
        assert_eq!(secs(10, 3), 10, "never past the interval");
        assert_eq!(secs(3600, u32::MAX), 300, "no overflow however long Nautobot stays down");
        let mut state = SourceState::default();
        assert_eq!(state.next_poll(Duration::from_secs(600)), Duration::from_secs(600));
        state.failed_reads = 2;
        assert_eq!(state.next_poll(Duration::from_secs(600)), Duration::from_secs(10));
    }

    #[test]
    fn a_refused_certificate_says_where_the_trusted_cas_come_from() {
        let refused = || NautobotError::Untrusted {
            url: "https://nb/api/dcim/devices/".into(),
            why: "it is not signed by a CA this client trusts (UnknownIssuer)".into(),
        };
        let mut spec: NautobotSourceSpec = serde_json::from_value(
            json!({"url": "https://nb", "tokenSecretRef": {"name": "nb", "key": "token"}}),
        )
        .expect("spec");
        let u = unread(refused(), &spec);
        assert_eq!(u.reason, "NautobotError");
        assert!(
            u.message.starts_with(
                "Nautobot's TLS certificate at https://nb/api/dcim/devices/ is not trusted: it is not signed"
            ),
            "{}",
            u.message
        );
        assert!(u.message.ends_with("only the system's CAs are trusted; set caBundleRef to a ConfigMap key holding the CA that signed it"), "{}", u.message);
        spec.ca_bundle_ref = Some(crate::api::content::KeyRef { name: "nb-ca".into(), key: "ca.crt".into() });
        let u = unread(refused(), &spec);
        assert!(u.message.ends_with("caBundleRef names (ConfigMap nb-ca, key ca.crt)"), "{}", u.message);
        let down = NautobotError::Unreachable { url: "u".into(), message: "refused".into() };
        assert_eq!(unread(down, &spec).message, "cannot reach Nautobot at u: refused");
    }

    fn condition(s: &NautobotSourceStatus, t: ConditionType) -> (String, String) {
        let c = find_condition(&s.conditions, t).expect("condition");
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn the_status_after_a_sync_counts_and_after_a_failed_read_keeps_the_counts() {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let mark = Mark { time: "2026-12-01T00:00:00.000000Z".into(), seen: BTreeSet::new() };
        let synced = Synced {
            devices: 3,
            full: true,
            switches: ObjectCounts { total: 2, created: 2, ..Default::default() },
            images: ObjectCounts { total: 1, created: 1, ..Default::default() },
            clashes: vec![Clash { name: "a".into(), why: "it was made by hand".into() }],
            ..Default::default()
        };
        let s = status_after(NautobotSourceStatus::default(), Ok(synced), &mark, Some(4), now.clone());
        assert_eq!(condition(&s, ConditionType::Ready), ("True".into(), "Synced".into()));
        assert_eq!(condition(&s, ConditionType::Conflict), ("True".into(), "NameClash".into()));
        let ready = find_condition(&s.conditions, ConditionType::Ready).expect("Ready");
        assert_eq!(ready.message, "2 Switches and 1 OsImages from 3 devices in Nautobot");
        assert_eq!(
            (s.devices, s.observed_generation, s.cursor.as_deref()),
            (Some(3), Some(4), Some(mark.time.as_str()))
        );
        assert!(s.last_full_sync_time.is_some() && s.last_sync_time.is_some());

        let unread = Unread { reason: "NautobotError", message: "cannot reach Nautobot".into() };
        let after = status_after(s.clone(), Err(unread), &Mark::default(), Some(5), now);
        assert_eq!(condition(&after, ConditionType::Stalled), ("True".into(), "NautobotError".into()));
        assert_eq!(condition(&after, ConditionType::Ready), ("False".into(), "NautobotError".into()));
        assert_eq!(
            (after.switches, after.cursor, after.last_sync_time),
            (s.switches, s.cursor, s.last_sync_time)
        );
        assert_eq!(after.observed_generation, Some(5));
    }
}
