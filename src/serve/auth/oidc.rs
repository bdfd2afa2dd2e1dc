//! Bearer JWTs from an OIDC issuer: signature against the issuer's JWKS (found through its
//! discovery document, or given), `iss`, `aud`, `exp` / `nbf` (30 s leeway). Keys rotate: a token
//! naming a key id the cached set lacks refetches the set (at most every 10 s), and the set is
//! refreshed every 10 minutes anyway. Only asymmetric algorithms are accepted.

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind, jwk::JwkSet};
use serde::Deserialize;
use tokio::sync::Mutex;

/// How often an unknown key id may trigger a refetch.
const REFETCH_MIN: Duration = Duration::from_secs(10);
/// Age after which the key set is refetched anyway.
const MAX_AGE: Duration = Duration::from_secs(600);

/// What tokens must say.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// `iss`, exactly; also where discovery starts.
    pub issuer: String,
    /// An accepted `aud`.
    pub audience: String,
    /// The JWKS URL; None: from `{issuer}/.well-known/openid-configuration`.
    pub jwks_url: Option<String>,
}

/// Validates tokens of one issuer.
#[derive(Debug)]
pub struct Oidc {
    settings: OidcSettings,
    http: reqwest::Client,
    keys: Mutex<Option<(JwkSet, Instant)>>,
}

#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    #[error("{url}: not the JSON expected: {source}")]
    Json { url: String, source: serde_json::Error },
}

#[derive(Deserialize)]
struct Discovery {
    jwks_uri: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    preferred_username: Option<String>,
    email: Option<String>,
}

/// Why a token is not accepted; [`Self::detail`] is what the client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.detail())]
pub enum OidcError {
    Invalid,
    AlgorithmNotAccepted,
    NoKeyId,
    Expired,
    NotValidYet,
    IssuerNotAccepted,
    AudienceNotAccepted,
    SignatureInvalid,
    NoSubject,
    UnknownKey,
    UnusableKey,
    /// The issuer's key set cannot be fetched (and none is cached): the token may be fine.
    KeysUnreachable,
}

impl OidcError {
    /// The refusal's text, as the client reads it in `{"detail": …}`.
    pub fn detail(self) -> &'static str {
        match self {
            Self::Invalid => "Invalid token",
            Self::AlgorithmNotAccepted => "Token algorithm not accepted",
            Self::NoKeyId => "Token has no key id",
            Self::Expired => "Token expired",
            Self::NotValidYet => "Token not valid yet",
            Self::IssuerNotAccepted => "Token issuer not accepted",
            Self::AudienceNotAccepted => "Token audience not accepted",
            Self::SignatureInvalid => "Token signature invalid",
            Self::NoSubject => "Token names no subject",
            Self::UnknownKey => "Token signed by an unknown key",
            Self::UnusableKey => "Token signed by an unusable key",
            Self::KeysUnreachable => "Cannot reach the OIDC issuer's keys",
        }
    }
}

impl Oidc {
    pub fn new(settings: OidcSettings) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
        Self { settings, http, keys: Mutex::new(None) }
    }

    /// The caller's name (`preferred_username`, `email` or `sub`) when `token` is valid.
    pub async fn verify(&self, token: &str) -> Result<String, OidcError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| OidcError::Invalid)?;
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        ) {
            return Err(OidcError::AlgorithmNotAccepted);
        }
        let kid = header.kid.ok_or(OidcError::NoKeyId)?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.leeway = 30;
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => OidcError::Expired,
            ErrorKind::ImmatureSignature => OidcError::NotValidYet,
            ErrorKind::InvalidIssuer => OidcError::IssuerNotAccepted,
            ErrorKind::InvalidAudience => OidcError::AudienceNotAccepted,
            ErrorKind::InvalidSignature => OidcError::SignatureInvalid,
            _ => OidcError::Invalid,
        })?;
        let c = data.claims;
        c.preferred_username.or(c.email).or(c.sub).ok_or(OidcError::NoSubject)
    }

    /// The decoding key for `kid`, refetching the key set when it lacks it (rotation) or is old.
    async fn key(&self, kid: &str) -> Result<DecodingKey, OidcError> {
        let mut keys = self.keys.lock().await;
        let stale = keys.as_ref().is_none_or(|(set, at)| {
            at.elapsed() > MAX_AGE || (set.find(kid).is_none() && at.elapsed() > REFETCH_MIN)
        });
        if stale {
            match self.fetch().await {
                Ok(set) => *keys = Some((set, Instant::now())),
                Err(e) => {
                    tracing::warn!(issuer = %self.settings.issuer, error = %e, "cannot fetch the OIDC key set");
                    if keys.is_none() {
                        return Err(OidcError::KeysUnreachable);
                    }
                }
            }
        }
        let jwk = keys.as_ref().and_then(|(set, _)| set.find(kid)).ok_or(OidcError::UnknownKey)?;
        DecodingKey::from_jwk(jwk).map_err(|_| OidcError::UnusableKey)
    }

    async fn fetch(&self) -> Result<JwkSet, FetchError> {
        let url = match &self.settings.jwks_url {
            Some(url) => url.clone(),
            None => {
                let issuer = self.settings.issuer.trim_end_matches('/');
                self.get::<Discovery>(&format!("{issuer}/.well-known/openid-configuration")).await?.jwks_uri
            }
        };
        self.get(&url).await
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, FetchError> {
        let body = self.http.get(url).send().await?.error_for_status()?.bytes().await?;
        serde_json::from_slice(&body).map_err(|source| FetchError::Json { url: url.to_owned(), source })
    }
}
