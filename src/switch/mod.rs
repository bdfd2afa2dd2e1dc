//! Switches: one object per device. Pure: the lifecycle rules ([`lifecycle`]), the object name
//! a serial gets ([`name`]), the per-device report token ([`token`]), what the server gathers of
//! each device between writes ([`book`]), the serials on hold ([`hold`]), the Switches a server
//! lists ([`roster`]), each profile's Switches by phase ([`tally`]). At the edge: the server's
//! follower and writer of Switch objects ([`k8s`]), standalone's fleet ([`fleet`]). The
//! resource's shape is [`crate::api::switch`]; how it all fits is `docs/switch.md`.

pub mod book;
pub mod fleet;
pub mod hold;
pub mod k8s;
pub mod lifecycle;
pub mod limit;
pub mod name;
pub mod roster;
pub mod show;
pub mod tally;
pub mod token;

/// What the device server keeps for Switches: the sightings to write, the serials on hold, and
/// the Switches as last written. The default records, holds and lists nothing (a server without
/// `--switches`).
#[derive(Debug, Clone)]
pub struct Tracking {
    pub book: book::Book,
    pub held: hold::Held,
    pub roster: roster::Roster,
}

impl Tracking {
    /// What a server that keeps Switches tracks.
    pub fn new() -> Self {
        Self { book: book::Book::new(), held: hold::Held::default(), roster: roster::Roster::new() }
    }
}

impl Default for Tracking {
    fn default() -> Self {
        Self { book: book::Book::disabled(), held: hold::Held::default(), roster: roster::Roster::default() }
    }
}
