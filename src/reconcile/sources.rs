//! Resolving an OsImage's source references (CA bundle ConfigMap, header Secret, S3 credentials
//! Secret) into a [`Source`]. One implementation for both modes; where ConfigMaps and Secrets come
//! from is the [`ObjectLookup`] trait (the API server, or YAML files in standalone mode).

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{ResolveError, SourceResolver};
use crate::{
    api::{KeyRef, OsImage},
    fetch::Source,
    store::s3::S3Settings,
};

/// Reads ConfigMap and Secret data by namespace and name. Values are bytes (Secret data decoded).
#[async_trait]
pub trait ObjectLookup: Send + Sync {
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, ResolveError>;
    async fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, ResolveError>;
}

/// A ConfigMap's `data` and `binaryData` as bytes.
pub fn config_map_data(cm: k8s_openapi::api::core::v1::ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> =
        cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
    out.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
    out
}

/// A Secret's `data` (already base64-decoded) and `stringData` as bytes.
pub fn secret_data(s: k8s_openapi::api::core::v1::Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> =
        s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
    out.extend(s.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
    out
}

/// A [`SourceResolver`] over any [`ObjectLookup`].
pub struct RefResolver<L>(pub L);

async fn key_of(
    data: Option<BTreeMap<String, Vec<u8>>>,
    kind: &str,
    ns: &str,
    r: &KeyRef,
) -> Result<Vec<u8>, ResolveError> {
    let data = data.ok_or_else(|| ResolveError::Missing(format!("{kind} {ns}/{} not found", r.name)))?;
    data.get(&r.key)
        .cloned()
        .ok_or_else(|| ResolveError::Missing(format!("{kind} {ns}/{} has no key {:?}", r.name, r.key)))
}

fn text(kind: &str, ns: &str, name: &str, key: &str, v: Vec<u8>) -> Result<String, ResolveError> {
    String::from_utf8(v)
        .map_err(|_| ResolveError::Missing(format!("{kind} {ns}/{name} key {key:?} is not UTF-8 text")))
}

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
                Some(r) => Some(key_of(self.0.config_map(ns, &r.name).await?, "ConfigMap", ns, r).await?),
                None => None,
            };
            let mut headers = Vec::new();
            if let Some(r) = &u.headers_secret_ref {
                let data = self
                    .0
                    .secret(ns, &r.name)
                    .await?
                    .ok_or_else(|| ResolveError::Missing(format!("Secret {ns}/{} not found", r.name)))?;
                for (k, v) in data {
                    headers.push((k.clone(), text("Secret", ns, &r.name, &k, v)?));
                }
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
            let data = self
                .0
                .secret(ns, &r.name)
                .await?
                .ok_or_else(|| ResolveError::Missing(format!("Secret {ns}/{} not found", r.name)))?;
            let get = |k: &str| {
                data.get(k)
                    .cloned()
                    .ok_or_else(|| ResolveError::Missing(format!("Secret {ns}/{} has no key {k:?}", r.name)))
                    .and_then(|v| text("Secret", ns, &r.name, k, v))
            };
            settings.access_key_id = Some(get("accessKeyId")?);
            settings.secret_access_key = Some(get("secretAccessKey")?);
        }
        Ok(Source::S3 { settings, key: s3.key.clone() })
    }
}
