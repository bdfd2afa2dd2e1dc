//! End-to-end tests against real servers: kube-apiserver + etcd and MinIO, built from Go modules
//! and started by the harness in `support`. Nothing here is mocked.

mod support;

mod activity;
mod argocd_health;
mod crds;
mod devices;
mod edges;
mod fetch_cancel;
mod files;
mod helm_chart;
mod hostile;
mod image;
mod image_in_use;
mod kstatus;
mod nautobot;
mod nautobot_bench;
mod nautobot_check;
mod nautobot_reads_bench;
mod openapi;
mod pipeline;
mod profile_health;
mod profile_requests;
mod profiles;
mod real_node;
mod real_node_chart;
mod s3;
mod serving;
mod serving_deployment;
mod standalone;
mod standalone_nautobot;
mod switch_image;
mod switch_values;
mod switches;
mod validate;
mod ztpctl;
