//! The namespace controller: a Namespace marked for deletion loses its contents, then goes.
//! The API starts this at once when the Namespace is deleted; this loop finishes what a
//! restart or a failed delete left behind.

use std::time::Duration;

use super::{terminating, Ctx, Informer};

/// Runs the controller.
pub async fn run(ctx: Ctx, namespaces: Informer) {
    loop {
        for ns in namespaces.list() {
            if terminating(&ns) {
                if let Some(name) = ns["metadata"]["name"].as_str() {
                    crate::api::gc::finish_namespace(&ctx.st, name).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
