pub mod build;
pub mod identity;
pub mod index;
pub mod publish;
pub mod render;
pub mod snapshot;
pub mod sonic;
