//! Command-line interface of the `ztp-operator` binary. Every flag also reads an environment
//! variable (`ZTP_…`), which is how the Helm chart configures the pods.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    fetch::FetchConfig,
    reconcile::osimage::ImagePolicy,
    store::{
        Store, StoreError,
        fs::FsBackend,
        s3::{S3Backend, S3Settings},
    },
};

/// Zero-touch provisioning for data-centre switches, run from Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "ztp-operator", version, about)]
pub struct Cli {
    /// Log one JSON object per line instead of text.
    #[arg(long, global = true, env = "ZTP_LOG_JSON")]
    pub log_json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Reconcile OsImages and SwitchProfiles in a cluster (fetch, verify, store, render).
    Controller(Box<ControllerArgs>),
    /// Serve switches (ONIE, NVOS/SONiC, Cumulus, RtBrick) and the admin files API.
    Serve(Box<ServeArgs>),
    /// Run the whole pipeline on one machine without a cluster, from a folder of YAML.
    Standalone(Box<StandaloneArgs>),
    /// Print the CustomResourceDefinitions as YAML (what `crds/` holds).
    Crds,
    /// Print a new random report key (64 hex digits) for `serve --report-key-file`, e.g.
    /// `kubectl create secret generic ztp-report-key --from-literal=key=$(ztp-operator report-key)`.
    ReportKey,
}

/// Where the store is: a directory (the mounted PVC) or an S3 / Ceph bucket.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Store images in this directory (a mounted PersistentVolumeClaim).
    #[arg(long, env = "ZTP_STORE_DIR", conflicts_with = "s3_bucket", required_unless_present = "s3_bucket")]
    pub store_dir: Option<PathBuf>,
    /// Store images in this S3 / Ceph bucket. Credentials come from the standard AWS environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, profiles, web identity).
    #[arg(long, env = "ZTP_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// Key prefix inside the bucket.
    #[arg(long, env = "ZTP_S3_PREFIX")]
    pub s3_prefix: Option<String>,
    /// Endpoint URL for Ceph RGW or MinIO.
    #[arg(long, env = "ZTP_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Region (default us-east-1).
    #[arg(long, env = "ZTP_S3_REGION")]
    pub s3_region: Option<String>,
    /// Path-style addressing (endpoint/bucket/key), usual for Ceph and MinIO.
    #[arg(long, env = "ZTP_S3_PATH_STYLE")]
    pub s3_path_style: bool,
    /// PEM file of extra CA certificates for the S3 endpoint.
    #[arg(long, env = "ZTP_S3_CA_FILE")]
    pub s3_ca_file: Option<PathBuf>,
}

/// Store configuration problems.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl StoreArgs {
    /// Opens the configured store.
    pub async fn open(&self) -> Result<Store, ConfigError> {
        if let Some(dir) = &self.store_dir {
            let backend = FsBackend::new(dir)?;
            backend.start_temp_sweeper();
            return Ok(Store::new(std::sync::Arc::new(backend)));
        }
        let bucket = self
            .s3_bucket
            .clone()
            .ok_or_else(|| ConfigError::Invalid("set --store-dir or --s3-bucket".into()))?;
        let ca_bundle_pem = match &self.s3_ca_file {
            Some(p) => {
                Some(std::fs::read(p).map_err(|source| ConfigError::Read { path: p.clone(), source })?)
            }
            None => None,
        };
        let settings = S3Settings {
            bucket,
            prefix: self.s3_prefix.clone(),
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            access_key_id: std::env::var("AWS_ACCESS_KEY_ID").ok(),
            secret_access_key: std::env::var("AWS_SECRET_ACCESS_KEY").ok(),
            force_path_style: self.s3_path_style,
            ca_bundle_pem,
        };
        Ok(Store::new(std::sync::Arc::new(S3Backend::new(&settings).await?)))
    }
}

/// How images are fetched and retried.
#[derive(Debug, Clone, Args)]
pub struct ImageArgs {
    /// Fetches running at once.
    #[arg(long, env = "ZTP_MAX_CONCURRENT_FETCHES", default_value_t = 2)]
    pub max_concurrent_fetches: usize,
    /// Fetch attempts per OsImage generation before a transiently failing image is Stalled.
    /// Unset (the default): errors that can clear are retried for as long as it takes.
    #[arg(long, env = "ZTP_FETCH_MAX_ATTEMPTS")]
    pub fetch_max_attempts: Option<u32>,
    /// Wait after the first failed attempt, in seconds; doubles per attempt.
    #[arg(long, env = "ZTP_FETCH_BACKOFF_SECONDS", default_value_t = 5.0)]
    pub fetch_backoff_seconds: f64,
    /// The longest wait between two attempts, in seconds.
    #[arg(long, env = "ZTP_FETCH_BACKOFF_MAX_SECONDS", default_value_t = 300.0)]
    pub fetch_backoff_max_seconds: f64,
    /// Seconds without data before a transfer counts as dropped (and resumes).
    #[arg(long, env = "ZTP_FETCH_IDLE_TIMEOUT_SECONDS", default_value_t = 60)]
    pub fetch_idle_timeout_seconds: u64,
    /// Least average bytes per second over each rate window of a transfer (0: no check); a
    /// trickling source below it fails the attempt, which is retried with backoff.
    #[arg(long, env = "ZTP_FETCH_MIN_RATE_BYTES", default_value_t = 1024)]
    pub fetch_min_rate_bytes: u64,
    /// The window, in seconds, over which the minimum rate is measured.
    #[arg(long, env = "ZTP_FETCH_MIN_RATE_WINDOW_SECONDS", default_value_t = 60)]
    pub fetch_min_rate_window_seconds: u64,
    /// Seconds between status updates of a running fetch.
    #[arg(long, env = "ZTP_PROGRESS_INTERVAL_SECONDS", default_value_t = 2.0)]
    pub progress_interval_seconds: f64,
    /// Base URL switches use to reach the server (shown in `status.artifact.url`).
    #[arg(long, env = "ZTP_EXTERNAL_URL")]
    pub external_url: Option<String>,
}

impl ImageArgs {
    pub fn policy(&self) -> ImagePolicy {
        ImagePolicy {
            max_attempts: self.fetch_max_attempts.map(|n| n.max(1)),
            backoff_base: Duration::from_secs_f64(self.fetch_backoff_seconds.max(0.0)),
            backoff_max: Duration::from_secs_f64(self.fetch_backoff_max_seconds.max(0.0)),
            progress_interval: Duration::from_secs_f64(self.progress_interval_seconds.max(0.1)),
            ..ImagePolicy::default()
        }
    }

    pub fn fetch_config(&self, file_roots: Option<Vec<PathBuf>>) -> FetchConfig {
        FetchConfig {
            idle_timeout: Duration::from_secs(self.fetch_idle_timeout_seconds.max(1)),
            min_rate: self.fetch_min_rate_bytes,
            min_rate_window: Duration::from_secs(self.fetch_min_rate_window_seconds.max(1)),
            file_roots,
            ..FetchConfig::default()
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ControllerArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub images: ImageArgs,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "ZTP_NAMESPACE")]
    pub namespace: Option<String>,
    /// Directories `file://` OsImage sources may read from (none by default).
    #[arg(long = "allow-file-source", env = "ZTP_ALLOW_FILE_SOURCES", value_delimiter = ',')]
    pub allow_file_sources: Vec<PathBuf>,
    /// Hold a Lease so that only one replica reconciles (and fetches) at a time.
    #[arg(long, env = "ZTP_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, env = "ZTP_LEASE_NAME", default_value = "ztp-operator-controller")]
    pub lease_name: String,
    /// Namespace of the Lease (default: the pod's namespace, else the watched one, else `default`).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease (default: the pod name, else host name and process id).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Address of the controller's own listener: `/healthz`, `/readyz` and `/metrics`
    /// (Prometheus text format).
    #[arg(long, env = "ZTP_METRICS_LISTEN", default_value = "0.0.0.0:8080")]
    pub metrics_listen: std::net::SocketAddr,
    #[command(flatten)]
    pub serving: ServingArgs,
}

/// The companion serving Deployment (`ztp-operator serve`) the controller applies and keeps in
/// shape: Deployment, Service, ServiceAccount, its RBAC and optionally the PersistentVolumeClaim.
/// The server reads the same store as the controller: the directory store is the claim named by
/// `--serving-pvc` (mounted by both), the S3 store is the controller's own bucket settings.
#[derive(Debug, Clone, Args)]
pub struct ServingArgs {
    /// Apply and keep the serving objects (off: the controller never touches them).
    #[arg(long = "manage-serving", env = "ZTP_SERVING_MANAGE", default_value_t = false, action = clap::ArgAction::Set)]
    pub manage: bool,
    /// Namespace of the serving objects (default: the controller's pod namespace, else the
    /// watched namespace, else `default`).
    #[arg(long = "serving-namespace", env = "ZTP_SERVING_NAMESPACE")]
    pub serving_namespace: Option<String>,
    /// Name of the Deployment, Service, ServiceAccount and Role (and prefix of the ClusterRole).
    #[arg(long = "serving-name", env = "ZTP_SERVING_NAME", default_value = "ztp-server")]
    pub name: String,
    /// Container image of the server (the same image as the controller's).
    #[arg(long = "serving-image", env = "ZTP_SERVING_IMAGE")]
    pub image: Option<String>,
    /// Image pull policy of the server.
    #[arg(long = "serving-image-pull-policy", env = "ZTP_SERVING_IMAGE_PULL_POLICY", default_value = "IfNotPresent",
          value_parser = ["Always", "IfNotPresent", "Never"])]
    pub image_pull_policy: String,
    /// Image pull Secrets of the server pods (comma-separated names).
    #[arg(long = "serving-image-pull-secret", env = "ZTP_SERVING_IMAGE_PULL_SECRETS", value_delimiter = ',')]
    pub image_pull_secrets: Vec<String>,
    /// Server replicas (every replica serves; no leader election).
    #[arg(long = "serving-replicas", env = "ZTP_SERVING_REPLICAS", default_value_t = 2)]
    pub replicas: i32,
    /// Service type.
    #[arg(long = "serving-service-type", env = "ZTP_SERVING_SERVICE_TYPE", default_value = "ClusterIP",
          value_parser = ["ClusterIP", "NodePort", "LoadBalancer"])]
    pub service_type: String,
    /// Service port. ONIE's name discovery only tries port 80; the pods listen on 8080.
    #[arg(long = "serving-service-port", env = "ZTP_SERVING_SERVICE_PORT", default_value_t = 80)]
    pub service_port: i32,
    /// Claim name of the directory store (the PersistentVolumeClaim the controller mounts at
    /// `--store-dir`); required with a directory store.
    #[arg(long = "serving-pvc", env = "ZTP_SERVING_PVC")]
    pub pvc: Option<String>,
    /// Create the claim too (size, class and access mode below). Only where the controller does
    /// not mount it itself: a pod cannot start before its claim exists.
    #[arg(long = "serving-pvc-create", env = "ZTP_SERVING_PVC_CREATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub pvc_create: bool,
    /// Requested size of a created claim.
    #[arg(long = "serving-pvc-size", env = "ZTP_SERVING_PVC_SIZE", default_value = "20Gi")]
    pub pvc_size: String,
    /// StorageClass of a created claim (default: the cluster's default class).
    #[arg(long = "serving-pvc-storage-class", env = "ZTP_SERVING_PVC_STORAGE_CLASS")]
    pub pvc_storage_class: Option<String>,
    /// Access mode of the claim (of a created one, and of `--serving-pvc`). ReadWriteMany lets
    /// server and controller pods run on any node; with ReadWriteOnce the server pods get a
    /// required pod affinity to the controller's pods (`--serving-owner-deployment`'s selector),
    /// so all share its node; ReadWriteOncePod cannot be shared and is refused.
    #[arg(long = "serving-pvc-access-mode", env = "ZTP_SERVING_PVC_ACCESS_MODE", default_value = "ReadWriteMany",
          value_parser = ["ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod", "ReadOnlyMany"])]
    pub pvc_access_mode: String,
    /// Secret with the S3 credentials of the server (keys `accessKeyId`, `secretAccessKey`);
    /// without it the server uses the ambient AWS credentials (e.g. web identity).
    #[arg(long = "serving-s3-credentials-secret", env = "ZTP_SERVING_S3_CREDENTIALS_SECRET")]
    pub s3_credentials_secret: Option<String>,
    /// ConfigMap with extra CA certificates for the S3 endpoint (key `ca.crt`).
    #[arg(long = "serving-s3-ca-configmap", env = "ZTP_SERVING_S3_CA_CONFIGMAP")]
    pub s3_ca_config_map: Option<String>,
    /// Secret of admin tokens for the files API (key `tokens`: one `name:token` per line).
    #[arg(long = "serving-admin-token-secret", env = "ZTP_SERVING_ADMIN_TOKEN_SECRET")]
    pub admin_token_secret: Option<String>,
    /// OIDC issuer whose JWTs are admin credentials of the server.
    #[arg(long = "serving-oidc-issuer", env = "ZTP_SERVING_OIDC_ISSUER", requires = "oidc_audience")]
    pub oidc_issuer: Option<String>,
    /// The `aud` those tokens must carry.
    #[arg(long = "serving-oidc-audience", env = "ZTP_SERVING_OIDC_AUDIENCE", requires = "oidc_issuer")]
    pub oidc_audience: Option<String>,
    /// The issuer's JWKS URL (default: discovery).
    #[arg(long = "serving-oidc-jwks-url", env = "ZTP_SERVING_OIDC_JWKS_URL", requires = "oidc_issuer")]
    pub oidc_jwks_url: Option<String>,
    /// Anyone may list files (the server's `--public-listing`); by default listing needs an admin
    /// credential.
    #[arg(long = "serving-public-listing", env = "ZTP_SERVING_PUBLIC_LISTING")]
    pub public_listing: bool,
    /// Listing needs an admin credential: the default; kept so that existing configurations
    /// still start, and wins over `--serving-public-listing`.
    #[arg(long = "serving-protect-listing", env = "ZTP_SERVING_PROTECT_LISTING", hide = true)]
    pub protect_listing: bool,
    /// Device routes answer only these source networks (the server's `--device-networks`;
    /// CIDRs, comma-separated). Default: any source.
    #[arg(long = "serving-device-networks", env = "ZTP_SERVING_DEVICE_NETWORKS", value_delimiter = ',')]
    pub device_networks: Vec<ipnet::IpNet>,
    /// Image downloads each server replica serves at once (503 + Retry-After beyond).
    #[arg(long = "serving-max-downloads", env = "ZTP_SERVING_MAX_DOWNLOADS", default_value_t = 512)]
    pub max_downloads: usize,
    /// Seconds a client has to send a complete request head (the server's
    /// `--header-timeout-seconds`; default: the server's own).
    #[arg(long = "serving-header-timeout-seconds", env = "ZTP_SERVING_HEADER_TIMEOUT_SECONDS")]
    pub header_timeout_seconds: Option<f64>,
    /// Seconds a kept-alive connection may sit idle (the server's `--idle-timeout-seconds`).
    #[arg(long = "serving-idle-timeout-seconds", env = "ZTP_SERVING_IDLE_TIMEOUT_SECONDS")]
    pub idle_timeout_seconds: Option<f64>,
    /// Seconds an answer may wait for a client that takes no bytes before it is abandoned and its
    /// download slot freed (the server's `--send-timeout-seconds`).
    #[arg(long = "serving-send-timeout-seconds", env = "ZTP_SERVING_SEND_TIMEOUT_SECONDS")]
    pub send_timeout_seconds: Option<f64>,
    /// Connections one source address may hold at once, 0 for no limit (the server's
    /// `--max-connections-per-source`).
    #[arg(long = "serving-max-connections-per-source", env = "ZTP_SERVING_MAX_CONNECTIONS_PER_SOURCE")]
    pub max_connections_per_source: Option<usize>,
    /// Servers write device activity into SwitchProfile status and Events (grants their
    /// ServiceAccount `patch` on `switchprofiles/status` and `create`/`patch` on Events).
    #[arg(long = "serving-report-status", env = "ZTP_SERVING_REPORT_STATUS", default_value_t = true, action = clap::ArgAction::Set)]
    pub report_status: bool,
    /// Servers keep one Switch per device (their `--switches`): they create Switches (per
    /// `--serving-discover`) and write what each device did into its status. The controller
    /// generates the report key Secret `<serving-name>-report-key` when it is missing (never
    /// replacing one that exists) and mounts it into the servers (`report_token` in templates,
    /// authenticated stage reports). Grants the servers' ServiceAccount `get`, `list`, `watch`,
    /// `create`, `delete` on `switches` and `patch` on `switches/status`.
    #[arg(long = "serving-switches", env = "ZTP_SERVING_SWITCHES", default_value_t = true, action = clap::ArgAction::Set)]
    pub switches: bool,
    /// Which devices get a Switch created when they first ask (the servers' `--discover`).
    #[arg(long = "serving-discover", env = "ZTP_SERVING_DISCOVER", value_enum, default_value_t = crate::switch::k8s::Discover::Matched)]
    pub discover: crate::switch::k8s::Discover,
    /// CPU request of a server container.
    #[arg(long = "serving-cpu-request", env = "ZTP_SERVING_CPU_REQUEST", default_value = "100m")]
    pub cpu_request: Option<String>,
    /// Memory request of a server container.
    #[arg(long = "serving-memory-request", env = "ZTP_SERVING_MEMORY_REQUEST", default_value = "128Mi")]
    pub memory_request: Option<String>,
    /// CPU limit of a server container (none by default).
    #[arg(long = "serving-cpu-limit", env = "ZTP_SERVING_CPU_LIMIT")]
    pub cpu_limit: Option<String>,
    /// Memory limit of a server container.
    #[arg(long = "serving-memory-limit", env = "ZTP_SERVING_MEMORY_LIMIT", default_value = "512Mi")]
    pub memory_limit: Option<String>,
    /// Name of the Deployment running this controller, in the serving namespace: the serving
    /// objects get it as owner, so deleting the controller (`helm uninstall`) deletes them.
    #[arg(long = "serving-owner-deployment", env = "ZTP_SERVING_OWNER_DEPLOYMENT")]
    pub owner_deployment: Option<String>,
    /// Also apply the server's Role and RoleBinding (ClusterRole and ClusterRoleBinding when
    /// every namespace is watched), named `<serving-name>-activity`. Off by default: creating
    /// RBAC objects lets the controller hand what it holds (Secret reads) to anyone, so the
    /// chart installs them instead and the controller holds no RBAC verb (README, "RBAC").
    #[arg(long = "serving-rbac", env = "ZTP_SERVING_RBAC", default_value_t = false, action = clap::ArgAction::Set)]
    pub rbac: bool,
    /// Node labels the server pods must run on (a JSON object, the pod spec's `nodeSelector`).
    #[arg(long = "serving-node-selector", env = "ZTP_SERVING_NODE_SELECTOR")]
    pub node_selector: Option<String>,
    /// Affinity of the server pods (JSON, the pod spec's `affinity`). With a ReadWriteOnce claim a
    /// required pod affinity to the controller's pods is added.
    #[arg(long = "serving-affinity", env = "ZTP_SERVING_AFFINITY")]
    pub affinity: Option<String>,
    /// Tolerations of the server pods (a JSON array).
    #[arg(long = "serving-tolerations", env = "ZTP_SERVING_TOLERATIONS")]
    pub tolerations: Option<String>,
    /// Topology spread constraints of the server pods (a JSON array).
    #[arg(long = "serving-topology-spread-constraints", env = "ZTP_SERVING_TOPOLOGY_SPREAD_CONSTRAINTS")]
    pub topology_spread_constraints: Option<String>,
    /// Annotations of the Service (a JSON object; e.g. a cloud load balancer's settings).
    #[arg(long = "serving-service-annotations", env = "ZTP_SERVING_SERVICE_ANNOTATIONS")]
    pub service_annotations: Option<String>,
    /// `externalTrafficPolicy` of a NodePort or LoadBalancer Service: `Local` keeps the switches'
    /// source addresses (which `--serving-device-networks` and the activity records see).
    #[arg(long = "serving-external-traffic-policy", env = "ZTP_SERVING_EXTERNAL_TRAFFIC_POLICY",
          value_parser = ["Cluster", "Local"])]
    pub external_traffic_policy: Option<String>,
    /// `loadBalancerIP` of a LoadBalancer Service (where the provider honours it).
    #[arg(long = "serving-load-balancer-ip", env = "ZTP_SERVING_LOAD_BALANCER_IP")]
    pub load_balancer_ip: Option<String>,
    /// `nodePort` of a NodePort or LoadBalancer Service (within the apiserver's node port range;
    /// default: one the apiserver picks).
    #[arg(long = "serving-node-port", env = "ZTP_SERVING_NODE_PORT")]
    pub node_port: Option<i32>,
    /// `loadBalancerSourceRanges` of a LoadBalancer Service: the client networks the provider's
    /// load balancer lets in (CIDRs, comma-separated; default: any).
    #[arg(
        long = "serving-load-balancer-source-ranges",
        env = "ZTP_SERVING_LOAD_BALANCER_SOURCE_RANGES",
        value_delimiter = ','
    )]
    pub load_balancer_source_ranges: Vec<ipnet::IpNet>,
    /// Seconds fewer server replicas than asked may be available before the controller says so
    /// (a Warning Event `ServersUnavailable` on its own Deployment, `ServersAvailable` after).
    #[arg(
        long = "serving-unavailable-grace-seconds",
        env = "ZTP_SERVING_UNAVAILABLE_GRACE_SECONDS",
        default_value_t = 180
    )]
    pub unavailable_grace_seconds: u64,
}

/// How the device-facing server listens and limits itself.
#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    /// Address to serve devices on. ONIE's name discovery only uses port 80: map it there in the
    /// Service (or listen on :80 with CAP_NET_BIND_SERVICE).
    #[arg(long, env = "ZTP_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: std::net::SocketAddr,
    /// Image downloads served at once; beyond it devices get 503 with Retry-After.
    #[arg(long, env = "ZTP_MAX_DOWNLOADS", default_value_t = 512)]
    pub max_downloads: usize,
    /// Answer every request through the HTTP stack (hyper + axum): no sendfile fast path for
    /// images on directory stores, no fast path for ZTP JSON (for comparison, and as an escape
    /// hatch).
    #[arg(long, env = "ZTP_NO_SENDFILE")]
    pub no_sendfile: bool,
    /// Answer device routes only to sources in these networks (CIDRs, comma-separated, e.g.
    /// `10.0.0.0/8,fd00::/8`: the management network); others get 403. The files API, probes
    /// and metrics are not limited. Default: any source.
    #[arg(long, env = "ZTP_DEVICE_NETWORKS", value_delimiter = ',')]
    pub device_networks: Vec<ipnet::IpNet>,
    /// Seconds a client has to send a complete request head (slower ones are disconnected).
    #[arg(long, env = "ZTP_HEADER_TIMEOUT_SECONDS", default_value_t = 30.0)]
    pub header_timeout_seconds: f64,
    /// Seconds a kept-alive connection may sit idle before it is closed.
    #[arg(long, env = "ZTP_IDLE_TIMEOUT_SECONDS", default_value_t = 60.0)]
    pub idle_timeout_seconds: f64,
    /// Connections one source address may hold at once; past it a new one gets 503 and is
    /// closed (0: no limit). Above `--max-downloads` by default: behind source NAT (a Service
    /// without `externalTrafficPolicy: Local`) every device shares a few addresses, and a boot
    /// storm must meet the download admission limit first, not this one.
    #[arg(long, env = "ZTP_MAX_CONNECTIONS_PER_SOURCE", default_value_t = 1024)]
    pub max_connections_per_source: usize,
    /// Seconds an answer may wait for a client that takes no bytes; then it is abandoned and
    /// its download slot freed.
    #[arg(long, env = "ZTP_SEND_TIMEOUT_SECONDS", default_value_t = 60.0)]
    pub send_timeout_seconds: f64,
    /// Connection workers: threads that each accept and answer connections on their own
    /// listening socket (as nginx's worker processes). Default: one per CPU this process may use.
    /// With one per CPU of the process's cpuset, each keeps to its CPU and answers the connections
    /// that CPU receives (handing some to a less busy worker when one CPU receives most); with any
    /// other count the kernel spreads connections by a hash.
    #[arg(long, env = "ZTP_WORKERS")]
    pub workers: Option<std::num::NonZeroUsize>,
}

impl ListenArgs {
    /// The connection limits these flags set (timeouts at least 100 ms).
    pub fn limits(&self) -> crate::serve::connections::Limits {
        let seconds = |s: f64| Duration::from_secs_f64(s.max(0.1));
        crate::serve::connections::Limits {
            header_timeout: seconds(self.header_timeout_seconds),
            idle_timeout: seconds(self.idle_timeout_seconds),
            send_timeout: seconds(self.send_timeout_seconds),
            max_per_source: self.max_connections_per_source,
        }
    }

    /// Connection workers: `--workers`, else one per CPU.
    pub fn workers(&self) -> std::num::NonZeroUsize {
        self.workers.unwrap_or_else(crate::serve::workers::default_count)
    }
}

/// The admin files API (`/v1/files/…`).
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// File of admin bearer tokens (a mounted Secret): one per line, `name:token` or `token`.
    /// Without it uploads and deletes are refused.
    #[arg(long, env = "ZTP_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Largest upload accepted, in bytes (413 past it).
    #[arg(long, env = "ZTP_MAX_UPLOAD_BYTES", default_value_t = 32 << 30)]
    pub max_upload_bytes: u64,
    /// OIDC issuer whose access tokens (JWTs) are admin credentials: `iss` must equal it.
    #[arg(long, env = "ZTP_OIDC_ISSUER", requires = "oidc_audience")]
    pub oidc_issuer: Option<String>,
    /// The `aud` those tokens must carry.
    #[arg(long, env = "ZTP_OIDC_AUDIENCE", requires = "oidc_issuer")]
    pub oidc_audience: Option<String>,
    /// The issuer's JWKS URL (default: from its `/.well-known/openid-configuration`).
    #[arg(long, env = "ZTP_OIDC_JWKS_URL", requires = "oidc_issuer")]
    pub oidc_jwks_url: Option<String>,
    /// Anyone may list files (`GET /v1/files/`, `/v1/files/{platform}/{version}/`) and Switches
    /// (`GET /v1/switches`, with their devices' addresses). By default listing needs an admin
    /// credential, as with the reference service, also when none is
    /// configured (then nobody may list). Device routes and downloads are anonymous either way.
    #[arg(long, env = "ZTP_PUBLIC_LISTING")]
    pub public_listing: bool,
    /// Listing needs an admin credential: the default; kept so that existing configurations
    /// still start, and wins over `--public-listing`.
    #[arg(long, env = "ZTP_PROTECT_LISTING", hide = true)]
    pub protect_listing: bool,
}

impl AdminArgs {
    pub fn auth(&self) -> Result<crate::serve::auth::AdminAuth, crate::serve::auth::TokenFileError> {
        let auth = match &self.admin_token_file {
            Some(path) => crate::serve::auth::AdminAuth::from_file(path)?,
            None => crate::serve::auth::AdminAuth::none(),
        };
        let auth = auth.public_listing(self.public_listing && !self.protect_listing);
        Ok(match (&self.oidc_issuer, &self.oidc_audience) {
            (Some(issuer), Some(audience)) => {
                auth.with_oidc(crate::serve::auth::oidc::Oidc::new(crate::serve::auth::oidc::OidcSettings {
                    issuer: issuer.clone(),
                    audience: audience.clone(),
                    jwks_url: self.oidc_jwks_url.clone(),
                }))
            }
            _ => auth,
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub listen: ListenArgs,
    /// Base URL switches reach this server at (URLs inside ZTP JSON and scripts point there).
    #[arg(long, env = "ZTP_EXTERNAL_URL")]
    pub external_url: String,
    /// Write device activity (counts per stage, recent devices) into each SwitchProfile's
    /// `status.devices` and record `DeviceSeen` / `DeviceProvisioned` Events, with the in-cluster
    /// service account (or KUBECONFIG). Needs `patch` on `switchprofiles/status` and `create`,
    /// `patch` on `events.k8s.io` events; off by default (a server without RBAC works).
    #[arg(long, env = "ZTP_REPORT_STATUS")]
    pub report_status: bool,
    /// Seconds between writes of device activity (and of Switches, with `--switches`).
    #[arg(long, env = "ZTP_ACTIVITY_FLUSH_SECONDS", default_value_t = 5.0)]
    pub activity_flush_seconds: f64,
    #[command(flatten)]
    pub switches: SwitchArgs,
    #[command(flatten)]
    pub reports: ReportArgs,
}

/// Stage reports from the devices' scripts (`POST /v1/devices/{serial}/report`).
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// File holding the report key (at least 32 bytes; a Secret's key mounted into the pod): a
    /// device's report token (template variable `report_token`) is an HMAC of its serial with
    /// it. Without it reports are refused (503) and templates have no `report_token`.
    #[arg(long, env = "ZTP_REPORT_KEY_FILE")]
    pub report_key_file: Option<PathBuf>,
    /// The old `POST /v1/devices/{serial}/provisioned` callback needs the device's report token
    /// too (without it, it is unauthenticated, for existing scripts).
    #[arg(long, env = "ZTP_REQUIRE_REPORT_TOKEN", requires = "report_key_file")]
    pub require_report_token: bool,
}

impl ReportArgs {
    /// How the server takes reports: the key read from its file.
    pub fn reports(&self) -> Result<crate::serve::report::Reports, crate::switch::token::KeyError> {
        let key = match &self.report_key_file {
            Some(path) => Some(std::sync::Arc::new(crate::switch::token::ReportKey::load(path)?)),
            None => None,
        };
        Ok(crate::serve::report::Reports { key, require_token: self.require_report_token })
    }
}

/// One Switch object per device, written by the server (`docs/switch.md`).
#[derive(Debug, Clone, Args)]
pub struct SwitchArgs {
    /// Create a Switch for each device that asks (per `--discover`) and write what it did into
    /// its status, with the in-cluster service account (or KUBECONFIG). Needs `get`, `list`,
    /// `watch`, `create` and `delete` on `switches` and `patch` on `switches/status`.
    #[arg(long = "switches", env = "ZTP_SWITCHES")]
    pub enabled: bool,
    /// Which devices get a Switch created when they first ask: `matched` (a SwitchProfile
    /// matches them), `all` (also the others: phase `Unmatched`), `none` (only existing
    /// Switches are written).
    #[arg(long, env = "ZTP_DISCOVER", value_enum, default_value_t = crate::switch::k8s::Discover::Matched)]
    pub discover: crate::switch::k8s::Discover,
    /// Namespace of a discovered Switch that no profile matches (a matched one goes to its
    /// profile's namespace). Default: the server's own (`POD_NAMESPACE`), else `default`.
    #[arg(long, env = "ZTP_DISCOVER_NAMESPACE")]
    pub discover_namespace: Option<String>,
    /// Follow only this namespace's Switches (needs only a Role there); default: every namespace.
    #[arg(long, env = "ZTP_SWITCH_NAMESPACE")]
    pub switch_namespace: Option<String>,
    /// Discovered `Unmatched` Switches at most; past it the least recently seen one is deleted to
    /// make room (identity over plain HTTP is self-asserted: this bounds what made-up serials
    /// create).
    #[arg(long, env = "ZTP_MAX_UNMATCHED", default_value_t = 500)]
    pub max_unmatched: usize,
    /// New Switches one source address may cause per minute at most.
    #[arg(long, env = "ZTP_DISCOVER_PER_SOURCE_PER_MINUTE", default_value_t = 30)]
    pub discover_per_source_per_minute: u32,
    /// Switch writes (creations, status writes, deletions) per second at most, per replica.
    #[arg(long, env = "ZTP_SWITCH_WRITES_PER_SECOND", default_value_t = 50.0)]
    pub switch_writes_per_second: f64,
}

impl ServeArgs {
    /// The flush interval (at least 100 ms).
    pub fn activity_flush(&self) -> Duration {
        Duration::from_secs_f64(self.activity_flush_seconds.max(0.1))
    }
}

#[derive(Debug, Clone, Args)]
pub struct StandaloneArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Folder of YAML: OsImages (and ConfigMaps / Secrets they reference). Re-read when it changes.
    #[arg(long, env = "ZTP_MANIFESTS")]
    pub manifests: PathBuf,
    /// Store directory: images, manifest.json, and `.status/`.
    #[arg(long, env = "ZTP_DATA")]
    pub data: PathBuf,
    /// Reconcile everything once and exit: 0 when every image is Ready, 1 otherwise.
    #[arg(long)]
    pub once: bool,
    /// Also serve devices on this address (the lab's DHCP points switches here).
    #[arg(long, env = "ZTP_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// Image downloads served at once when serving.
    #[arg(long, env = "ZTP_MAX_DOWNLOADS", default_value_t = 512)]
    pub max_downloads: usize,
    /// Seconds between writes of device activity to `{data}/.status/switchprofiles.json` when
    /// serving.
    #[arg(long, env = "ZTP_ACTIVITY_FLUSH_SECONDS", default_value_t = 5.0)]
    pub activity_flush_seconds: f64,
    /// Seconds between checks of the manifests folder for changes.
    #[arg(long, env = "ZTP_POLL_SECONDS", default_value_t = 2.0)]
    pub poll_seconds: f64,
    /// When serving: which devices get a Switch in `{data}/.status/switches.json` when they first
    /// ask: `matched` (a SwitchProfile matches them), `all` (also the others: `Unmatched`),
    /// `none` (only the folder's Switches).
    #[arg(long, env = "ZTP_DISCOVER", value_enum, default_value_t = crate::switch::k8s::Discover::Matched)]
    pub discover: crate::switch::k8s::Discover,
    /// Discovered `Unmatched` Switches at most (the least recently seen goes first).
    #[arg(long, env = "ZTP_MAX_UNMATCHED", default_value_t = 500)]
    pub max_unmatched: usize,
    /// New Switches one source address may cause per minute at most.
    #[arg(long, env = "ZTP_DISCOVER_PER_SOURCE_PER_MINUTE", default_value_t = 30)]
    pub discover_per_source_per_minute: u32,
    /// File holding the report key (`report_token` in templates, `POST /v1/devices/{serial}/report`).
    /// Default: `{data}/.status/report-key`, generated on the first run.
    #[arg(long, env = "ZTP_REPORT_KEY_FILE")]
    pub report_key_file: Option<PathBuf>,
    #[command(flatten)]
    pub images: ImageArgs,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        super::Cli::command().debug_assert();
    }
}
