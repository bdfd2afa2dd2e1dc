//! Resolving an OsImage's source references (CA bundle ConfigMap, header Secret, S3 credentials
//! Secret) into a [`Source`]. One implementation for both modes; where ConfigMaps and Secrets come
//! from is the [`ObjectLookup`] trait (the API server, or YAML files in standalone mode).

use async_trait::async_trait;

use super::{ResolveError, SourceResolver};
use crate::{
    api::OsImage,
    fetch::Source,
    lookup::{Kind, LookupError, ObjectLookup},
    store::s3::S3Settings,
};

/// A reference that does not resolve may resolve later (the object or key may appear).
impl From<LookupError> for ResolveError {
    fn from(e: LookupError) -> Self {
        ResolveError::Missing(e.to_string())
    }
}

/// A [`SourceResolver`] over any [`ObjectLookup`].
pub struct RefResolver<L>(pub L);

#[async_trait]
impl<L: ObjectLookup> SourceResolver for RefResolver<L> {
    async fn resolve(&self, image: &OsImage) -> Result<Source, ResolveError> {
        let ns = image.metadata.namespace.as_deref().unwrap_or("default");
        let src = &image.spec.source;
        if let Some(u) = &src.url {
            if u.url.starts_with("file://") {
                let url = reqwest::Url::parse(&u.url)
                    .map_err(|e| ResolveError::InvalidSpec(format!("{}: {e}", u.url)))?;
                let path = url.to_file_path().map_err(|_| {
                    ResolveError::InvalidSpec(format!(
                        "{}: a file URL needs an absolute path, e.g. file:///srv/images/x.bin",
                        u.url
                    ))
                })?;
                return Ok(Source::File { path });
            }
            reqwest::Url::parse(&u.url)
                .map_err(|e| ResolveError::InvalidSpec(format!("{}: not a valid URL: {e}", u.url)))?;
            let ca_pem = match &u.ca_bundle_ref {
                Some(r) => Some(self.0.bytes(Kind::ConfigMap, ns, r).await?),
                None => None,
            };
            let mut headers = Vec::new();
            if let Some(r) = &u.headers_secret_ref {
                headers = self.0.object(Kind::Secret, ns, &r.name).await?.texts()?;
            }
            return Ok(Source::Http {
                url: u.url.clone(),
                ca_pem,
                headers,
                insecure_skip_tls_verify: u.insecure_skip_tls_verify,
            });
        }
        let Some(s3) = &src.s3 else {
            return Err(ResolveError::InvalidSpec("spec.source sets neither url nor s3".into()));
        };
        let mut settings = S3Settings {
            bucket: s3.bucket.clone(),
            endpoint: s3.endpoint.clone(),
            region: s3.region.clone(),
            force_path_style: s3.force_path_style,
            ..Default::default()
        };
        if let Some(r) = &s3.credentials_secret_ref {
            let secret = self.0.object(Kind::Secret, ns, &r.name).await?;
            settings.access_key_id = Some(secret.text("accessKeyId")?);
            settings.secret_access_key = Some(secret.text("secretAccessKey")?);
        }
        Ok(Source::S3 { settings, key: s3.key.clone() })
    }
}
