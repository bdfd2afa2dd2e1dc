//! The reconcile core, shared by the Kubernetes controller and the standalone mode. It takes
//! desired state (the objects) and reports observed state through small traits
//! ([`ImageReporter`] for OsImages, [`profiles::ProfileReporter`] for SwitchProfiles and the
//! snapshot); Kubernetes (status subresource + Events) is one implementation of them, standalone
//! (printed lines + status files) the other.

pub mod in_flight;
pub mod in_use;
pub mod metrics;
pub mod osimage;
pub mod profiles;
pub mod progress;
pub mod sources;
#[cfg(test)]
pub(crate) mod testing;

use async_trait::async_trait;

use crate::{
    api::{OsImage, OsImageStatus},
    fetch::Source,
};

/// Normal or Warning, as Kubernetes Events have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// A reporter could not record status (the apiserver is unreachable, a file cannot be written).
#[derive(Debug, thiserror::Error)]
#[error("cannot report status of {object}: {message}")]
pub struct ReportError {
    pub object: String,
    pub message: String,
}

/// Where the core reports what it observed.
#[async_trait]
pub trait ImageReporter: Send + Sync {
    /// Records the whole status of `image`.
    async fn status(&self, image: &OsImage, status: &OsImageStatus) -> Result<(), ReportError>;
    /// Records a transition worth telling a human. Best effort.
    async fn event(&self, image: &OsImage, kind: EventType, reason: &str, note: &str);
}

/// A source reference could not be resolved (missing ConfigMap, Secret, key…).
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// A referenced object or key is missing or unreadable: it may appear, so retry.
    #[error("{0}")]
    Missing(String),
    /// The spec itself is wrong (a relative `file://` URL, an invalid URL): needs a human.
    #[error("{0}")]
    InvalidSpec(String),
}

/// Turns an OsImage's source (with its references to ConfigMaps and Secrets) into a [`Source`].
#[async_trait]
pub trait SourceResolver: Send + Sync {
    async fn resolve(&self, image: &OsImage) -> Result<Source, ResolveError>;
}

pub use crate::api::object_name;
