//! Switches: one object per device. Pure: the lifecycle rules ([`lifecycle`]), the object name
//! a serial gets ([`name`]), the per-device report token ([`token`]), and what the server gathers
//! of each device between writes ([`book`]). At the edge: the server's writer of Switch objects
//! ([`k8s`]). The resource's shape is [`crate::api::switch`]; how it all fits is
//! `docs/switch.md`.

pub mod book;
pub mod k8s;
pub mod lifecycle;
pub mod name;
pub mod token;
