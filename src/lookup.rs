//! ConfigMap and Secret data by namespace and name, for the two cores that read them: OsImage
//! sources (CA bundle, headers, S3 credentials) and SwitchProfile content. Where the objects come
//! from is the [`ObjectLookup`] trait: the API server or its watch caches in the cluster, the
//! YAML folder in standalone mode. The "not found / no such key / not UTF-8" rules, and their
//! words, are written once here ([`ObjectLookup::bytes`], [`ObjectLookup::text`]).

use std::{collections::BTreeMap, fmt};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use crate::api::KeyRef;

/// The data of one ConfigMap or Secret: every key's value as bytes.
pub type Data = BTreeMap<String, Vec<u8>>;

/// Which kind of object holds the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ConfigMap,
    Secret,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a key of a ConfigMap or Secret could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("{kind} {namespace}/{name} not found")]
    NotFound { kind: Kind, namespace: String, name: String },
    #[error("{kind} {namespace}/{name} has no key {key:?}")]
    NoKey { kind: Kind, namespace: String, name: String, key: String },
    #[error("{kind} {namespace}/{name} key {key:?} is not UTF-8 text")]
    NotUtf8 { kind: Kind, namespace: String, name: String, key: String },
    /// The source of the objects failed (the API server, for one); it may work next time.
    #[error("read {kind} {namespace}/{name}: {message}")]
    Backend { kind: Kind, namespace: String, name: String, message: String },
}

/// Reads ConfigMap and Secret data by namespace and name. Values are bytes (Secret data decoded).
#[async_trait]
pub trait ObjectLookup: Send + Sync {
    /// The data of ConfigMap `namespace/name`; `None` when there is no such ConfigMap.
    async fn config_map(&self, namespace: &str, name: &str) -> Result<Option<Data>, LookupError>;
    /// The data of Secret `namespace/name`; `None` when there is no such Secret.
    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Data>, LookupError>;

    /// The `kind` object `namespace/name`; a missing object is an error.
    async fn object(&self, kind: Kind, namespace: &str, name: &str) -> Result<Object, LookupError> {
        let data = match kind {
            Kind::ConfigMap => self.config_map(namespace, name).await?,
            Kind::Secret => self.secret(namespace, name).await?,
        };
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        match data {
            Some(data) => Ok(Object { kind, namespace, name, data }),
            None => Err(LookupError::NotFound { kind, namespace, name }),
        }
    }

    /// The value of key `r.key` of the `kind` object `namespace/r.name`.
    async fn bytes(&self, kind: Kind, namespace: &str, r: &KeyRef) -> Result<Vec<u8>, LookupError> {
        self.object(kind, namespace, &r.name).await?.bytes(&r.key)
    }

    /// The value of key `r.key` of the `kind` object `namespace/r.name`, as UTF-8 text.
    async fn text(&self, kind: Kind, namespace: &str, r: &KeyRef) -> Result<String, LookupError> {
        self.object(kind, namespace, &r.name).await?.text(&r.key)
    }
}

/// One ConfigMap or Secret that was found: its keys, read with errors that name it.
#[derive(Debug, Clone)]
pub struct Object {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub data: Data,
}

impl Object {
    /// The value of `key`.
    pub fn bytes(&self, key: &str) -> Result<Vec<u8>, LookupError> {
        self.data.get(key).cloned().ok_or_else(|| LookupError::NoKey {
            kind: self.kind,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            key: key.into(),
        })
    }

    /// The value of `key`, as UTF-8 text.
    pub fn text(&self, key: &str) -> Result<String, LookupError> {
        self.utf8(key, self.bytes(key)?)
    }

    /// Every key and its value as UTF-8 text, in key order.
    pub fn texts(&self) -> Result<Vec<(String, String)>, LookupError> {
        self.data.iter().map(|(k, v)| Ok((k.clone(), self.utf8(k, v.clone())?))).collect()
    }

    fn utf8(&self, key: &str, bytes: Vec<u8>) -> Result<String, LookupError> {
        String::from_utf8(bytes).map_err(|_| LookupError::NotUtf8 {
            kind: self.kind,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            key: key.into(),
        })
    }
}

/// A ConfigMap's `data` and `binaryData` as bytes.
pub fn config_map_data(cm: ConfigMap) -> Data {
    let mut out: Data = cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
    out.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
    out
}

/// A Secret's `data` (already base64-decoded) and `stringData` as bytes.
pub fn secret_data(s: Secret) -> Data {
    let mut out: Data = s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
    out.extend(s.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One ConfigMap `net/cm` with a text key and a binary one; no Secrets.
    struct One;

    #[async_trait]
    impl ObjectLookup for One {
        async fn config_map(&self, namespace: &str, name: &str) -> Result<Option<Data>, LookupError> {
            Ok((namespace == "net" && name == "cm").then(|| {
                Data::from([("text".to_owned(), b"hello".to_vec()), ("bin".to_owned(), vec![0xff, 0xfe])])
            }))
        }
        async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Data>, LookupError> {
            Err(LookupError::Backend {
                kind: Kind::Secret,
                namespace: namespace.into(),
                name: name.into(),
                message: "forbidden".into(),
            })
        }
    }

    fn key(name: &str, key: &str) -> KeyRef {
        KeyRef { name: name.into(), key: key.into() }
    }

    #[tokio::test]
    async fn each_failure_says_what_is_missing_in_the_words_users_know() {
        assert_eq!(One.text(Kind::ConfigMap, "net", &key("cm", "text")).await, Ok("hello".to_owned()));
        assert_eq!(One.bytes(Kind::ConfigMap, "net", &key("cm", "bin")).await, Ok(vec![0xff, 0xfe]));
        let err = |r: Result<String, LookupError>| r.expect_err("fails").to_string();
        assert_eq!(
            err(One.text(Kind::ConfigMap, "net", &key("other", "text")).await),
            "ConfigMap net/other not found"
        );
        assert_eq!(
            err(One.text(Kind::ConfigMap, "net", &key("cm", "nope")).await),
            r#"ConfigMap net/cm has no key "nope""#
        );
        assert_eq!(
            err(One.text(Kind::ConfigMap, "net", &key("cm", "bin")).await),
            r#"ConfigMap net/cm key "bin" is not UTF-8 text"#
        );
        assert_eq!(err(One.text(Kind::Secret, "net", &key("s", "k")).await), "read Secret net/s: forbidden");
        let cm = One.object(Kind::ConfigMap, "net", "cm").await.expect("found");
        assert_eq!(
            cm.texts().expect_err("bin is binary").to_string(),
            r#"ConfigMap net/cm key "bin" is not UTF-8 text"#
        );
    }
}
