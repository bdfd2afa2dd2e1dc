//! Who may use the admin routes (uploads, deletes, listings, `/whoami`): bearer tokens checked
//! against static tokens read from a file (a mounted Secret, one token per line) and/or validated
//! as JWTs of an OIDC issuer ([`oidc`]). The `Bearer` scheme is matched in any case, as
//! HTTP says. Nothing configured means no admin access at all — writes and listings are refused,
//! never open (only `--public-listing` opens listings). Tokens are never logged.

pub mod oidc;
pub mod tokens;

use std::{path::Path, sync::Arc};

use axum::http::{HeaderMap, StatusCode, header};
use oidc::{Oidc, OidcError};
pub use tokens::TokenFileError;

/// The admin credentials this server accepts.
#[derive(Debug, Clone, Default)]
pub struct AdminAuth {
    /// `(name, token)`: the name is what `/whoami` and the logs show (`token-1`, …, or the text
    /// before a `:` on the line, `ci:secret` → `ci`).
    tokens: Vec<(String, String)>,
    oidc: Option<Arc<Oidc>>,
    /// Listing files needs no credential (`--public-listing`); by default it needs one, as with
    /// the reference.
    public_listing: bool,
}

/// The `detail` of a request without a credential, in the reference's words.
pub const NO_CREDENTIAL: &str = "This endpoint requires SSO authentication.";

/// Why an admin request was refused: the status and the `detail` text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Refused {
    pub status: StatusCode,
    pub detail: &'static str,
}

impl AdminAuth {
    /// No admin access.
    pub fn none() -> Self {
        Self::default()
    }

    /// Reads `path`: one token per line ([`tokens::read`]).
    pub fn from_file(path: &Path) -> Result<Self, TokenFileError> {
        Ok(Self { tokens: tokens::read(path)?, oidc: None, public_listing: false })
    }

    /// Also accepts JWTs validated by `oidc`.
    pub fn with_oidc(mut self, oidc: Oidc) -> Self {
        self.oidc = Some(Arc::new(oidc));
        self
    }

    /// Lets anyone list files (`--public-listing`); by default listing is an admin route.
    pub fn public_listing(mut self, public: bool) -> Self {
        self.public_listing = public;
        self
    }

    /// Whether anyone may list files.
    pub fn listing_is_public(&self) -> bool {
        self.public_listing
    }

    /// For the listing routes: as [`Self::check`], unless [`Self::public_listing`].
    pub async fn check_listing(&self, headers: &HeaderMap) -> Result<(), Refused> {
        if self.public_listing {
            return Ok(());
        }
        if !self.enabled() {
            return Err(Refused {
                status: StatusCode::FORBIDDEN,
                detail: "Listing needs an admin credential and the server has none configured \
                    (--admin-token-file, --oidc-issuer); --public-listing lets anyone list.",
            });
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
        let Some(presented) = bearer(headers) else {
            return Err(Refused { status: StatusCode::FORBIDDEN, detail: NO_CREDENTIAL });
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
            Some(oidc) if presented.matches('.').count() == 2 => {
                oidc.verify(presented).await.map_err(refused)
            }
            _ => Err(Refused { status: StatusCode::FORBIDDEN, detail: "Invalid or expired credentials" }),
        }
    }
}

/// The refusal of a token the OIDC issuer's keys do not validate: 503 when the keys cannot be
/// fetched (the credential may be fine), 403 otherwise.
fn refused(e: OidcError) -> Refused {
    let status = match e {
        OidcError::KeysUnreachable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::FORBIDDEN,
    };
    Refused { status, detail: e.detail() }
}

/// The credential of `Authorization: Bearer <token>`; the scheme in any case (RFC 9110 §11.1).
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
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
        assert_eq!(auth.check(&HeaderMap::new()).await.expect_err("none").detail, NO_CREDENTIAL);

        std::fs::write(&path, "short\n").expect("write");
        assert!(matches!(AdminAuth::from_file(&path), Err(TokenFileError::Short { line: 1, .. })));
        std::fs::write(&path, "# nothing\n").expect("write");
        assert!(matches!(AdminAuth::from_file(&path), Err(TokenFileError::Empty { .. })));
        assert!(matches!(AdminAuth::from_file(&dir.path().join("absent")), Err(TokenFileError::Read { .. })));
    }

    #[tokio::test]
    async fn the_bearer_scheme_in_any_case() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("tokens");
        std::fs::write(&path, "ci:0123456789abcdef0123\n").expect("write");
        let auth = AdminAuth::from_file(&path).expect("parse");
        for value in [
            "Bearer 0123456789abcdef0123",
            "bearer 0123456789abcdef0123",
            "BEARER 0123456789abcdef0123",
            "bEaReR  0123456789abcdef0123 ",
            "Bearer\t0123456789abcdef0123",
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, value.parse().expect("header"));
            assert_eq!(auth.check(&h).await.as_deref(), Ok("ci"), "{value:?}");
        }
        for value in [
            "Basic 0123456789abcdef0123",
            "Bearer",
            "Bearer ",
            "0123456789abcdef0123",
            "Bearer0123456789abcdef0123",
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, value.parse().expect("header"));
            assert_eq!(auth.check(&h).await.expect_err(value).detail, NO_CREDENTIAL, "{value:?}");
        }
    }

    #[tokio::test]
    async fn listing_needs_a_credential_unless_public() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("tokens");
        std::fs::write(&path, "ci:0123456789abcdef0123\n").expect("write");
        let auth = AdminAuth::from_file(&path).expect("parse");
        assert_eq!(auth.check_listing(&HeaderMap::new()).await.expect_err("protected").detail, NO_CREDENTIAL);
        assert_eq!(auth.check_listing(&bearer("0123456789abcdef0123")).await, Ok(()));
        let public = auth.public_listing(true);
        assert_eq!(public.check_listing(&HeaderMap::new()).await, Ok(()));
        // A valid credential is still required for everything else.
        assert_eq!(public.check(&HeaderMap::new()).await.expect_err("admin").detail, NO_CREDENTIAL);

        // No credentials configured: listing is closed too (nobody could present one), unless public.
        let closed =
            AdminAuth::none().check_listing(&bearer("0123456789abcdef0123")).await.expect_err("none");
        assert_eq!(closed.status, StatusCode::FORBIDDEN);
        assert!(closed.detail.contains("--public-listing"), "{}", closed.detail);
        assert_eq!(AdminAuth::none().public_listing(true).check_listing(&HeaderMap::new()).await, Ok(()));
    }

    #[tokio::test]
    async fn without_tokens_nothing_is_admin() {
        let refused = AdminAuth::none().check(&bearer("0123456789abcdef0123")).await.expect_err("disabled");
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(refused.detail.contains("--admin-token-file"));
    }
}
