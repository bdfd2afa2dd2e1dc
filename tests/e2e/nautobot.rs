//! NautobotSource against a real Nautobot 3.2.7 (`scripts/nautobot`: PostgreSQL, Redis and
//! Nautobot's web server on loopback; the fleet made through Nautobot's own REST API).
//!
//! The reader: a full read maps the fleet; the change log then brings exactly what changed (a
//! serial, a MAC, intended software, a deleted device) with requests in proportion to the
//! changes, and a poll without changes is one request; a wrong token or a stopped Nautobot is a
//! clear error that leaves the inventory as it was.

use ztp_operator::{
    api::nautobot::NautobotSourceSpec,
    nautobot::{
        client::{Nautobot as Client, NautobotError},
        desired,
        read::{self, Delta},
    },
};

use crate::support::nautobot::Nautobot;

fn spec(url: &str) -> NautobotSourceSpec {
    serde_json::from_value(serde_json::json!({
        "url": url, "tokenSecretRef": {"name": "nautobot", "key": "token"},
    }))
    .expect("spec")
}

#[tokio::test]
async fn the_reader_follows_the_fleet_fully_then_by_change_log() {
    let nb = Nautobot::start("reader").await;
    let loaded = nb.load(&["--devices", "12", "--images", "4"]).await;
    assert_eq!(loaded["devices"], 12, "{loaded}");
    let spec = spec(&nb.url);
    let client = Client::new(&nb.url, &nb.token, None).expect("client");

    let (mut inv, mut mark) = read::full(&client, &spec).await.expect("full read");
    let first = desired(&inv, &spec);
    assert_eq!(first.switches.len(), 12, "{:?}", first.skipped);
    assert!(first.skipped.is_empty(), "{:?}", first.skipped);
    let full_requests = client.requests();

    // Nothing changed: one request.
    assert_eq!(read::changes(&client, &spec, &mut inv, &mut mark).await.expect("poll"), Delta::Nothing);
    assert_eq!(client.requests(), full_requests + 1);

    // A new serial, a new MAC, another device deleted: read again by id, not the fleet.
    nb.fleet(&["set-serial", "sw-00002", "SN-NEW-2"]).await;
    nb.fleet(&["set-mac", "sw-00003", "02:5a:00:aa:bb:cc"]).await;
    nb.fleet(&["delete", "sw-00004"]).await;
    let before = client.requests();
    let delta = read::changes(&client, &spec, &mut inv, &mut mark).await.expect("poll");
    assert!(matches!(delta, Delta::Applied(n) if n >= 3), "{delta:?}");
    assert!(client.requests() - before <= 4, "{} requests for three changes", client.requests() - before);
    let now = desired(&inv, &spec);
    assert_eq!(now.switches.len(), 11);
    let serials: Vec<&str> = now.switches.values().map(|s| s.spec.serial_number.as_str()).collect();
    assert!(serials.contains(&"SN-NEW-2") && !serials.contains(&"SN00002") && !serials.contains(&"SN00004"));
    let sw3 = now.switches.values().find(|s| s.device_name.as_deref() == Some("sw-00003")).expect("sw-00003");
    assert_eq!(sw3.spec.mac_address.as_deref(), Some("02:5a:00:aa:bb:cc"));
    // The incremental inventory is what a full read gives.
    let (fresh, _) = read::full(&client, &spec).await.expect("full read");
    assert_eq!(desired(&fresh, &spec), now);
    assert_eq!(read::changes(&client, &spec, &mut inv, &mut mark).await.expect("poll"), Delta::Nothing);

    // A wrong token: refused, said so; Nautobot stopped: unreachable. The inventory stays.
    let wrong = Client::new(&nb.url, "0123456789abcdef0123456789abcdef01234567", None).expect("client");
    let e = read::full(&wrong, &spec).await.expect_err("a wrong token");
    assert!(
        matches!(&e, NautobotError::Refused { status: 403, detail, .. } if detail == "Invalid token"),
        "{e}"
    );
    nb.stop_web().await;
    let kept = inv.clone();
    let e = read::changes(&client, &spec, &mut inv, &mut mark).await.expect_err("Nautobot is down");
    assert!(matches!(e, NautobotError::Unreachable { .. }), "{e}");
    assert_eq!(inv, kept);
    nb.start_web().await;
    assert_eq!(read::changes(&client, &spec, &mut inv, &mut mark).await.expect("poll"), Delta::Nothing);
}
