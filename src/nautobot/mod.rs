//! Nautobot as the source of Switches and OsImages (issue 17): the REST objects as Nautobot
//! returns them ([`model`]), read over HTTP ([`client`]) fully (one GraphQL query whose answer
//! takes the same shapes) or by REST's change log ([`read`]), the
//! pure mapping from them to what a NautobotSource declares ([`map`]), and that declaration
//! printed for a dry run ([`check`], `ztpctl nautobot check`). The resource itself is
//! [`crate::api::nautobot`]; what ztp-operator relies on of Nautobot's API is in
//! `docs/nautobot.md`.

pub mod check;
pub mod client;
pub mod map;
pub mod model;
pub mod plan;
pub mod read;
pub mod sync;

pub use map::{
    DEVICE_READ_PARAMS, Desired, DesiredImage, DesiredSwitch, Inventory, Skipped, desired, device_query,
    image_name,
};
