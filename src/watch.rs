//! What the roles that follow and write objects through the apiserver share (the controller's
//! loops, the server's activity and Switch writers): waiting for a reflector's first list, and
//! an API error's status code.

use std::{hash::Hash, time::Duration};

use kube::runtime::reflector;

/// Waits until `store` holds its watch's first list. kube-runtime's `Store::wait_until_ready`
/// keeps the waker of one waiting task only (its readiness is a oneshot channel shared by every
/// clone of the store), and kube's own `Controller` waits on the store it is given: a second
/// task waiting on the same store may never be woken. Seen here under load: the snapshot loop
/// started 15 s late, when a timer happened to poll it again. So the wait is polled again every
/// 100 ms as well.
pub async fn filled<K>(store: &reflector::Store<K>) -> Result<(), reflector::store::WriterDropped>
where
    K: reflector::Lookup + Clone + 'static,
    <K as reflector::Lookup>::DynamicType: Eq + Hash + Clone,
{
    let wait = store.wait_until_ready();
    tokio::pin!(wait);
    loop {
        if let Ok(result) = tokio::time::timeout(Duration::from_millis(100), &mut wait).await {
            return result;
        }
    }
}

/// The HTTP status of an error the apiserver answered (409 Conflict, 404 Not Found, …); `None` for
/// any other failure.
pub fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::watcher;

    use super::*;

    #[tokio::test]
    async fn a_store_filled_wakes_every_waiter_even_when_another_task_waits_on_it_too() {
        let (store, mut writer) = reflector::store::<ConfigMap>();
        let first = tokio::spawn({
            let store = store.clone();
            async move { filled(&store).await }
        });
        tokio::task::yield_now().await;
        // Another task (kube's Controller does this with its store) waits after the first one.
        let second = tokio::spawn({
            let store = store.clone();
            async move { store.wait_until_ready().await }
        });
        tokio::task::yield_now().await;
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let both = async { (first.await, second.await) };
        let (first, second) = tokio::time::timeout(Duration::from_secs(1), both)
            .await
            .expect("both waiters woken within a second");
        assert!(first.expect("first waiter").is_ok() && second.expect("second waiter").is_ok());
    }
}
