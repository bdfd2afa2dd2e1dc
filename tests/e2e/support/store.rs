//! A fresh store of either kind for a test (a directory, or a bucket on the run's MinIO), with
//! what a test needs to look inside it.

use std::sync::Arc;

use bytes::Bytes;
use ztp_operator::{
    api::ImagePath,
    store::{
        Store,
        fs::FsBackend,
        s3::{S3Backend, S3Settings},
    },
};

use super::s3server::{ACCESS_KEY, REGION, SECRET_KEY};

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Fs,
    S3,
}

/// A store of either kind, fresh for the test, with what a test needs to look inside it.
pub struct TestStore {
    pub store: Store,
    pub dir: Option<tempfile::TempDir>,
    pub bucket: Option<String>,
    pub s3: Option<aws_sdk_s3::Client>,
}

impl TestStore {
    pub async fn new(backend: Backend, test: &str) -> Self {
        match backend {
            Backend::Fs => {
                let dir = tempfile::tempdir().expect("tempdir");
                let store = Store::new(Arc::new(FsBackend::new(dir.path()).expect("fs store")));
                Self { store, dir: Some(dir), bucket: None, s3: None }
            }
            Backend::S3 => {
                let t = super::s3_test(test).await;
                let settings = s3_settings(&t.bucket, &t.endpoint);
                let store = Store::new(Arc::new(S3Backend::new(&settings).await.expect("s3 store")));
                Self { store, dir: None, bucket: Some(t.bucket.clone()), s3: Some(t.client) }
            }
        }
    }

    /// Command-line flags selecting this store (for a controller subprocess).
    pub fn flags(&self) -> Vec<String> {
        match (&self.dir, &self.bucket) {
            (Some(d), _) => vec![format!("--store-dir={}", d.path().display())],
            (None, Some(b)) => {
                let endpoint = futures::executor::block_on(super::env()).s3.endpoint.clone();
                vec![
                    format!("--s3-bucket={b}"),
                    format!("--s3-endpoint={endpoint}"),
                    "--s3-path-style".into(),
                ]
            }
            _ => unreachable!(),
        }
    }

    /// Anything left over from writes in progress: temp files, or open multipart uploads.
    pub async fn leftovers(&self) -> Vec<String> {
        if let Some(d) = &self.dir {
            return std::fs::read_dir(d.path().join(".tmp"))
                .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
        }
        let (s3, bucket) = (self.s3.as_ref().expect("s3"), self.bucket.as_ref().expect("bucket"));
        let out = s3.list_multipart_uploads().bucket(bucket).send().await.expect("list uploads");
        out.uploads().iter().filter_map(|u| u.key().map(str::to_owned)).collect()
    }

    pub async fn bytes(&self, path: &ImagePath) -> Option<Vec<u8>> {
        use futures::TryStreamExt;
        self.store.stat(path).await.expect("stat")?;
        let chunks: Vec<Bytes> =
            self.store.read(path, None).await.expect("read").try_collect().await.expect("read body");
        Some(chunks.concat())
    }

    /// Writes raw bytes as the manifest (a hand edit).
    pub async fn write_manifest_raw(&self, bytes: &[u8]) {
        if let Some(d) = &self.dir {
            std::fs::write(d.path().join("manifest.json"), bytes).expect("write manifest");
            return;
        }
        let (s3, bucket) = (self.s3.as_ref().expect("s3"), self.bucket.as_ref().expect("bucket"));
        s3.put_object()
            .bucket(bucket)
            .key("manifest.json")
            .body(aws_sdk_s3::primitives::ByteStream::from(bytes.to_vec()))
            .send()
            .await
            .expect("put manifest");
    }

    pub async fn read_manifest_raw(&self) -> Option<Vec<u8>> {
        if let Some(d) = &self.dir {
            return std::fs::read(d.path().join("manifest.json")).ok();
        }
        let (s3, bucket) = (self.s3.as_ref().expect("s3"), self.bucket.as_ref().expect("bucket"));
        let out = s3.get_object().bucket(bucket).key("manifest.json").send().await.ok()?;
        Some(out.body.collect().await.expect("body").into_bytes().to_vec())
    }
}

pub fn s3_settings(bucket: &str, endpoint: &str) -> S3Settings {
    S3Settings {
        bucket: bucket.to_owned(),
        endpoint: Some(endpoint.to_owned()),
        region: Some(REGION.into()),
        access_key_id: Some(ACCESS_KEY.into()),
        secret_access_key: Some(SECRET_KEY.into()),
        force_path_style: true,
        ..Default::default()
    }
}
