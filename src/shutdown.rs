//! The end of a long-running role (`controller`, `serve`): SIGTERM, what the kubelet sends a pod
//! it stops, or Ctrl-C. A process that is PID 1 in its container (as both roles are in the chart's
//! pods) gets no default action for SIGTERM: unless it handles it, the signal is ignored and the
//! kubelet kills it after the grace period, cutting whatever it was doing.

use tokio::signal::unix::{SignalKind, signal};

/// Resolves on the first SIGTERM or Ctrl-C.
pub async fn terminated() {
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops this process");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = term => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
    }
}
