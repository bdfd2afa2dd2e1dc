//! Fetching an image from its source straight into the store, in one streaming pass: every chunk
//! is hashed and written as it arrives (constant memory whatever the size), and a dropped
//! connection resumes with `Range` where the source allows it, continuing the same hash and the
//! same pending object — what was already written is never read again.

mod file;
mod http;
mod s3;

pub(crate) use http::error_chain;

use std::{path::PathBuf, time::Duration};

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::store::{StoreError, VerifyingWriter, s3::S3Settings};

/// A source with every reference (CA bundle, header Secret, S3 credentials) already resolved.
#[derive(Clone)]
pub enum Source {
    Http {
        url: String,
        /// PEM CA certificates to trust in addition to the system roots.
        ca_pem: Option<Vec<u8>>,
        /// Extra request headers (values are secrets: never logged).
        headers: Vec<(String, String)>,
        insecure_skip_tls_verify: bool,
    },
    File {
        path: PathBuf,
    },
    S3 {
        settings: S3Settings,
        key: String,
    },
}

impl Source {
    /// For messages and logs: the URL without credentials or header values.
    pub fn describe(&self) -> String {
        match self {
            Self::Http { url, .. } => url.clone(),
            Self::File { path } => format!("file://{}", path.display()),
            Self::S3 { settings, key } => format!("s3://{}/{key}", settings.bucket),
        }
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Limits of a fetch.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    pub connect_timeout: Duration,
    /// Longest wait for the next chunk before the connection counts as dropped.
    pub idle_timeout: Duration,
    /// Resumes (reconnects with `Range`) allowed within one attempt.
    pub max_resumes: u32,
    /// Least average throughput, in bytes per second, over each `min_rate_window` of a transfer:
    /// a source trickling below it fails the attempt (a transient error) instead of holding a
    /// fetch slot forever. 0 turns the check off.
    pub min_rate: u64,
    pub min_rate_window: Duration,
    /// Directories `file://` sources may read from; `None` allows any path (standalone mode),
    /// an empty list disables file sources (the controller's default).
    pub file_roots: Option<Vec<PathBuf>>,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_resumes: 5,
            min_rate: 1024,
            min_rate_window: Duration::from_secs(60),
            file_roots: Some(Vec::new()),
        }
    }
}

/// Why a fetch failed. [`FetchError::is_transient`] tells whether another attempt may help.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("GET {url}: HTTP {status}{}", reason_of(*.status))]
    Status { url: String, status: u16 },
    #[error("GET {url}: {message}")]
    Transfer { url: String, message: String },
    #[error("GET {url}: no data for {}s", .idle.as_secs())]
    Idle { url: String, idle: Duration },
    #[error("{url}: {done} bytes in {}s, below the minimum rate of {min_rate} bytes/s", .window.as_secs())]
    TooSlow { url: String, done: u64, window: Duration, min_rate: u64 },
    #[error("{url}: the connection dropped {resumes} times; giving up this attempt")]
    TooManyResumes { url: String, resumes: u32 },
    #[error("{url}: the source answered {got} bytes where {expected} were announced")]
    Truncated { url: String, expected: u64, got: u64 },
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn reason_of(status: u16) -> String {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map(|r| format!(" {r}"))
        .unwrap_or_default()
}

impl FetchError {
    /// Whether the error can clear by itself, so that trying again later may succeed: a refused
    /// or dropped connection, a DNS failure, a timeout, a trickle, HTTP 408/425/429 and 5xx, a
    /// store hiccup. Everything else (404, 403, 410 and other client errors, a disabled or
    /// misconfigured source, a name the store refuses, a wrong checksum) needs a human: retrying
    /// the same request gets the same answer. The one place this decision is made.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Status { status, .. } => matches!(status, 408 | 425 | 429 | 500..=599),
            Self::Transfer { .. }
            | Self::Idle { .. }
            | Self::TooSlow { .. }
            | Self::TooManyResumes { .. }
            | Self::Truncated { .. } => true,
            Self::Unsupported(_) => false,
            Self::Store(e) => !matches!(
                e,
                StoreError::InvalidName(_) | StoreError::Conflict(_) | StoreError::ChecksumMismatch { .. }
            ),
        }
    }
}

/// What the fetch learned about the body.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// Size announced by the source (Content-Length, S3 object size, file size).
    pub announced_size: Option<u64>,
    /// The source's content type, when it said (an HTML error page shows here).
    pub content_type: Option<String>,
    /// Times the transfer resumed after a dropped connection.
    pub resumes: u32,
}

/// Fetches images. Cheap to clone (the HTTP client pools connections).
#[derive(Clone)]
pub struct Fetcher {
    config: FetchConfig,
    http: reqwest::Client,
}

/// One opened body: its chunks, and what the source said about it.
struct Opened {
    chunks: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>,
    /// Total size of the object.
    total: Option<u64>,
    /// Bytes of the object the stream skips (0 unless a Range request was honoured).
    starts_at: u64,
    content_type: Option<String>,
}

impl Fetcher {
    pub fn new(config: FetchConfig) -> Result<Self, FetchError> {
        let http = http::client(&config, None, false)?;
        Ok(Self { config, http })
    }

    pub fn config(&self) -> &FetchConfig {
        &self.config
    }

    /// Streams `source` into `writer`, resuming after dropped connections. `progress(bytes,
    /// total)` is called as bytes arrive (cheaply: callers throttle what they do with it).
    /// The caller commits the writer (which verifies the hash) or aborts it.
    pub async fn fetch(
        &self,
        source: &Source,
        writer: &mut VerifyingWriter,
        progress: &(dyn Fn(u64, Option<u64>) + Send + Sync),
    ) -> Result<Fetched, FetchError> {
        let url = source.describe();
        let mut fetched = Fetched::default();
        loop {
            let offset = writer.written();
            let opened = self.open(source, offset).await?;
            if fetched.announced_size.is_none() {
                fetched.announced_size = opened.total;
            }
            if fetched.content_type.is_none() {
                fetched.content_type = opened.content_type.clone();
            }
            match self.pump(&url, opened, writer, progress).await? {
                Pump::Complete => {
                    if let Some(total) = fetched.announced_size
                        && writer.written() < total
                    {
                        // The body ended early without an error: treat it as a drop.
                        if !self.may_resume(&mut fetched, &url)? {
                            return Err(FetchError::Truncated {
                                url,
                                expected: total,
                                got: writer.written(),
                            });
                        }
                        continue;
                    }
                    return Ok(fetched);
                }
                Pump::Dropped(message) => {
                    tracing::warn!(source = %url, bytes = writer.written(), %message, "transfer interrupted; resuming");
                    if !self.may_resume(&mut fetched, &url)? {
                        return Err(FetchError::Transfer { url, message });
                    }
                }
                Pump::Idle => {
                    if !self.may_resume(&mut fetched, &url)? {
                        return Err(FetchError::Idle { url, idle: self.config.idle_timeout });
                    }
                }
            }
        }
    }

    fn may_resume(&self, fetched: &mut Fetched, url: &str) -> Result<bool, FetchError> {
        if fetched.resumes >= self.config.max_resumes {
            return Err(FetchError::TooManyResumes { url: url.to_owned(), resumes: fetched.resumes });
        }
        fetched.resumes += 1;
        Ok(true)
    }

    async fn open(&self, source: &Source, offset: u64) -> Result<Opened, FetchError> {
        match source {
            Source::Http { url, ca_pem, headers, insecure_skip_tls_verify } => {
                let custom;
                let client = if ca_pem.is_some() || *insecure_skip_tls_verify {
                    custom = http::client(&self.config, ca_pem.as_deref(), *insecure_skip_tls_verify)?;
                    &custom
                } else {
                    &self.http
                };
                http::open(client, url, headers, offset).await
            }
            Source::File { path } => file::open(&self.config, path, offset).await,
            Source::S3 { settings, key } => s3::open(settings, key, offset).await,
        }
    }

    /// Moves chunks from the source into the writer until the body ends, breaks or idles.
    async fn pump(
        &self,
        url: &str,
        mut opened: Opened,
        writer: &mut VerifyingWriter,
        progress: &(dyn Fn(u64, Option<u64>) + Send + Sync),
    ) -> Result<Pump, FetchError> {
        // A source that ignored our Range resends from byte `starts_at`; skip what we have.
        let mut skip = writer.written().saturating_sub(opened.starts_at);
        let window = self.config.min_rate_window;
        let (mut window_start, mut window_bytes) = (tokio::time::Instant::now(), writer.written());
        loop {
            if self.config.min_rate > 0 && window_start.elapsed() >= window {
                let done = writer.written() - window_bytes;
                let least = self.config.min_rate.saturating_mul(window.as_secs().max(1));
                if done < least {
                    return Err(FetchError::TooSlow {
                        url: url.to_owned(),
                        done,
                        window,
                        min_rate: self.config.min_rate,
                    });
                }
                (window_start, window_bytes) = (tokio::time::Instant::now(), writer.written());
            }
            let next = match tokio::time::timeout(self.config.idle_timeout, opened.chunks.next()).await {
                Err(_) => return Ok(Pump::Idle),
                Ok(next) => next,
            };
            match next {
                None => return Ok(Pump::Complete),
                Some(Err(message)) => return Ok(Pump::Dropped(message)),
                Some(Ok(mut chunk)) => {
                    if skip > 0 {
                        let n = skip.min(chunk.len() as u64);
                        skip -= n;
                        chunk = chunk.slice(n as usize..);
                        if chunk.is_empty() {
                            continue;
                        }
                    }
                    writer.write(chunk).await?;
                    progress(writer.written(), opened.total);
                }
            }
        }
    }
}

enum Pump {
    Complete,
    Dropped(String),
    Idle,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> FetchError {
        FetchError::Status { url: "http://h/x".into(), status }
    }

    #[test]
    fn errors_that_can_clear_are_transient() {
        for code in [408, 425, 429, 500, 502, 503, 504] {
            assert!(status(code).is_transient(), "{code}");
        }
        let url = String::from("http://h/x");
        assert!(
            FetchError::Transfer { url: url.clone(), message: "connection refused".into() }.is_transient()
        );
        assert!(FetchError::Idle { url: url.clone(), idle: Duration::from_secs(1) }.is_transient());
        assert!(
            FetchError::TooSlow { url: url.clone(), done: 1, window: Duration::from_secs(1), min_rate: 2 }
                .is_transient()
        );
        assert!(FetchError::TooManyResumes { url: url.clone(), resumes: 5 }.is_transient());
        assert!(FetchError::Truncated { url, expected: 2, got: 1 }.is_transient());
        assert!(FetchError::Store(StoreError::NotFound("x".into())).is_transient());
    }

    #[test]
    fn errors_that_need_a_human_are_not() {
        for code in [400, 401, 403, 404, 410, 451] {
            assert!(!status(code).is_transient(), "{code}");
        }
        assert!(!FetchError::Unsupported("file sources are disabled".into()).is_transient());
        let d = crate::hash::Sha256Digest::of(b"x");
        assert!(!FetchError::Store(StoreError::ChecksumMismatch { expected: d, actual: d }).is_transient());
    }
}
