//! Who may use the admin routes (uploads, deletes): bearer tokens checked against static tokens
//! read from a file (a mounted Secret, one token per line) and/or validated as JWTs of an OIDC
//! issuer ([`super::oidc`]). Nothing configured means no admin access at all — writes are
//! refused, never open. Tokens are never logged.

use std::{path::Path, sync::Arc};

use super::oidc::Oidc;

use axum::http::{HeaderMap, StatusCode, header};

/// The admin credentials this server accepts.
#[derive(Debug, Clone, Default)]
pub struct AdminAuth {
    /// `(name, token)`: the name is what `/whoami` and the logs show (`token-1`, …, or the text
    /// before a `:` on the line, `ci:secret` → `ci`).
    tokens: Vec<(String, String)>,
    oidc: Option<Arc<Oidc>>,
    /// Listing files needs a credential too.
    listing: bool,
}

/// Why an admin request was refused: the status and the `detail` text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Refused {
    pub status: StatusCode,
    pub detail: &'static str,
}

/// A token file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("read admin token file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("admin token file {path} holds no token (one per line, `name:token` or `token`)")]
    Empty { path: String },
    #[error("admin token file {path}, line {line}: a token needs at least 16 characters")]
    Short { path: String, line: usize },
}

impl AdminAuth {
    /// No admin access.
    pub fn none() -> Self {
        Self::default()
    }

    /// Reads `path`: one token per line (`name:token` or just `token`); blank lines and lines
    /// starting with `#` are skipped.
    pub fn from_file(path: &Path) -> Result<Self, TokenFileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| TokenFileError::Read { path: shown.clone(), source })?;
        let mut tokens = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, token) = match line.split_once(':') {
                Some((name, token)) => (name.trim().to_owned(), token.trim().to_owned()),
                None => (format!("token-{}", tokens.len() + 1), line.to_owned()),
            };
            if token.len() < 16 {
                return Err(TokenFileError::Short { path: shown, line: i + 1 });
            }
            tokens.push((name, token));
        }
        if tokens.is_empty() {
            return Err(TokenFileError::Empty { path: shown });
        }
        Ok(Self { tokens, oidc: None, listing: false })
    }

    /// Also accepts JWTs validated by `oidc`.
    pub fn with_oidc(mut self, oidc: Oidc) -> Self {
        self.oidc = Some(Arc::new(oidc));
        self
    }

    /// Makes listing files an admin route (`--protect-listing`).
    pub fn protect_listing(mut self, protect: bool) -> Self {
        self.listing = protect;
        self
    }

    /// For the listing routes: open unless [`Self::protect_listing`], then as [`Self::check`].
    pub async fn check_listing(&self, headers: &HeaderMap) -> Result<(), Refused> {
        if !self.listing {
            return Ok(());
        }
        self.check(headers).await.map(|_| ())
    }

    /// Whether any admin credential is configured.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty() || self.oidc.is_some()
    }

    /// The caller's name when its `Authorization: Bearer` token is one of ours, or a valid JWT
    /// of the OIDC issuer.
    pub async fn check(&self, headers: &HeaderMap) -> Result<String, Refused> {
        if !self.enabled() {
            return Err(Refused {
                status: StatusCode::FORBIDDEN,
                detail: "Admin API disabled: the server has no admin credentials configured (--admin-token-file, --oidc-issuer).",
            });
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        let Some(presented) = presented else {
            return Err(Refused { status: StatusCode::FORBIDDEN, detail: "Not authenticated" });
        };
        // Compare with every token, in time independent of where they differ.
        let mut found = None;
        for (name, token) in &self.tokens {
            if constant_time_eq(token.as_bytes(), presented.as_bytes()) {
                found = Some(name.as_str());
            }
        }
        if let Some(name) = found {
            return Ok(name.to_owned());
        }
        match &self.oidc {
            // Static tokens are opaque; anything with two dots may be a JWT.
            Some(oidc) if presented.matches('.').count() == 2 => oidc.verify(presented).await,
            _ => Err(Refused { status: StatusCode::FORBIDDEN, detail: "Invalid or expired credentials" }),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, format!("Bearer {token}").parse().expect("header"));
        h
    }

    #[tokio::test]
    async fn tokens_from_a_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("tokens");
        std::fs::write(&path, "# admins\nci:0123456789abcdef0123\n\nfedcba9876543210fedc\n").expect("write");
        let auth = AdminAuth::from_file(&path).expect("parse");
        assert_eq!(auth.check(&bearer("0123456789abcdef0123")).await.as_deref(), Ok("ci"));
        assert_eq!(auth.check(&bearer("fedcba9876543210fedc")).await.as_deref(), Ok("token-2"));
        let bad = auth.check(&bearer("0123456789abcdef0124")).await.expect_err("wrong token");
        assert_eq!((bad.status, bad.detail), (StatusCode::FORBIDDEN, "Invalid or expired credentials"));
        assert_eq!(auth.check(&HeaderMap::new()).await.expect_err("none").detail, "Not authenticated");

        std::fs::write(&path, "short\n").expect("write");
        assert!(matches!(AdminAuth::from_file(&path), Err(TokenFileError::Short { line: 1, .. })));
        std::fs::write(&path, "# nothing\n").expect("write");
        assert!(matches!(AdminAuth::from_file(&path), Err(TokenFileError::Empty { .. })));
        assert!(matches!(AdminAuth::from_file(&dir.path().join("absent")), Err(TokenFileError::Read { .. })));
    }

    #[tokio::test]
    async fn without_tokens_nothing_is_admin() {
        let refused = AdminAuth::none().check(&bearer("0123456789abcdef0123")).await.expect_err("disabled");
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(refused.detail.contains("--admin-token-file"));
    }
}
