//! Each SwitchProfile's `status.switches`: its Switches counted by phase ([`tally`]) from the
//! snapshot loop's watch caches, every [`EVERY`], and server-side applied (field manager
//! [`COUNTS_FIELD_MANAGER`], so neither the pipeline's status fields nor the device server's
//! `status.devices` are touched) only to the profiles whose counts changed. Separate from the
//! snapshot rebuild: a device's progress changes counts, never the snapshot.

use std::time::Duration;

use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::reflector,
};
use serde_json::json;

use crate::{
    api::{Switch, SwitchProfile},
    switch::tally::{changes, tally},
    watch::status_code,
};

/// Field manager of the counts.
pub const COUNTS_FIELD_MANAGER: &str = "ztp-operator-switch-counts";
/// How often the counts are taken.
pub const EVERY: Duration = Duration::from_secs(5);

/// Counts and writes until the process ends.
pub async fn run(
    client: Client,
    profiles: reflector::Store<SwitchProfile>,
    switches: reflector::Store<Switch>,
) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let counted = tally(switches.state().iter().map(|s| &**s));
        let profiles = profiles.state();
        let shown = profiles.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).map(|p| {
            let key = (p.namespace().unwrap_or_default(), p.name_any());
            (key, p.status.as_ref().and_then(|s| s.switches.as_ref()))
        });
        for ((ns, name), counts) in changes(shown, &counted) {
            let api: Api<SwitchProfile> = Api::namespaced(client.clone(), &ns);
            let patch = json!({
                "apiVersion": "ztp.netops.dev/v1alpha1",
                "kind": "SwitchProfile",
                "status": {"switches": counts},
            });
            let params = PatchParams::apply(COUNTS_FIELD_MANAGER).force();
            match api.patch_status(&name, &params, &Patch::Apply(&patch)).await {
                Ok(_) => tracing::debug!(profile = %format!("{ns}/{name}"), ?counts, "Switch counts written"),
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => {
                    tracing::warn!(profile = %format!("{ns}/{name}"), error = %e, "writing Switch counts; again in {EVERY:?}")
                }
            }
        }
    }
}
