//! A real S3 server for the tests: MinIO on 127.0.0.1, single drive, built from its Go module.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

use super::{controlplane::http_status, procs, tools};

pub const ACCESS_KEY: &str = "ztp-e2e-access";
pub const SECRET_KEY: &str = "ztp-e2e-secret-key";
pub const REGION: &str = "us-east-1";

pub struct S3Server {
    pub endpoint: String,
    pub version: String,
    _proc: procs::Proc,
}

impl S3Server {
    pub async fn start(dir: &Path, logs: &Path) -> Self {
        let tools = tools::tools();
        let port = procs::free_port();
        let console = procs::free_port();
        let data = dir.join("minio");
        std::fs::create_dir_all(&data).expect("minio data dir");
        let mut proc = procs::spawn(
            "minio",
            &tools.minio,
            &[
                "server".into(),
                data.display().to_string(),
                format!("--address=127.0.0.1:{port}"),
                format!("--console-address=127.0.0.1:{console}"),
                "--quiet".into(),
            ],
            &[
                ("MINIO_ROOT_USER", ACCESS_KEY),
                ("MINIO_ROOT_PASSWORD", SECRET_KEY),
                ("MINIO_BROWSER", "off"),
                ("MINIO_UPDATE", "off"),
                ("MINIO_CI_CD", "1"),
            ],
            logs.join("minio.log"),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_status(port, "/minio/health/ready").await != Some(200) {
            proc.assert_running();
            assert!(Instant::now() < deadline, "minio not ready after 60 s:\n{}", procs::tail(&proc.log, 40));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            version: tools::built_version(&tools.minio),
            _proc: proc,
        }
    }

    /// An aws-sdk-s3 client for this server, path-style addressing, static credentials.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "ztp-e2e"))
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }
}
