//! Switches: one object per device. Pure: the lifecycle rules ([`lifecycle`]), the object name
//! a serial gets ([`name`]), the per-device report token ([`token`]), what the server gathers of
//! each device between writes ([`book`]) and the serials on hold ([`hold`]). At the edge: the
//! server's follower and writer of Switch objects ([`k8s`]). The resource's shape is
//! [`crate::api::switch`]; how it all fits is `docs/switch.md`.

pub mod book;
pub mod fleet;
pub mod hold;
pub mod k8s;
pub mod lifecycle;
pub mod limit;
pub mod name;
pub mod show;
pub mod token;

/// What the device server keeps for Switches: the sightings to write, and the serials on hold.
/// The default records nothing and holds nothing (a server without `--switches`).
#[derive(Debug, Clone)]
pub struct Tracking {
    pub book: book::Book,
    pub held: hold::Held,
}

impl Default for Tracking {
    fn default() -> Self {
        Self { book: book::Book::disabled(), held: hold::Held::default() }
    }
}
