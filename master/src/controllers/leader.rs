//! Leader election over a Lease (`kube-system/podlet-controller-manager`), so that of several
//! masters on one etcd exactly one runs the controllers: the holder renews every 2 s; another
//! master takes over once the lease has gone unrenewed for its duration (15 s). Losing the
//! lease stops the controllers at once.

use std::time::Duration;

use serde_json::{json, Value};

use super::{res, Ctx};

/// The Lease's name.
pub const LEASE: &str = "podlet-controller-manager";
/// How long a lease is valid without renewal.
pub const DURATION: i64 = 15;

fn micro_now() -> String {
    let t = jiff::Timestamp::now();
    format!("{}", t.strftime("%Y-%m-%dT%H:%M:%S.%6fZ"))
}

/// Tries to hold the lease once; returns whether `me` holds it now.
pub async fn try_hold(ctx: &Ctx, me: &str) -> bool {
    let r = res("Lease");
    let path = super::path(r, Some("kube-system"), Some(LEASE), None);
    let now = micro_now();
    match ctx
        .request(axum::http::Method::GET, &path, "application/json", None)
        .await
    {
        Err(_) => {
            let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": LEASE, "namespace": "kube-system"},
                "spec": {"holderIdentity": me, "leaseDurationSeconds": DURATION, "acquireTime": now, "renewTime": now, "leaseTransitions": 0}});
            ctx.create(r, Some("kube-system"), &lease).await.is_ok()
        }
        Ok(mut lease) => {
            let holder = lease["spec"]["holderIdentity"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let renewed = lease["spec"]["renewTime"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| jiff::Timestamp::now().as_second() - t.as_second())
                .unwrap_or(i64::MAX);
            let expired = renewed
                > lease["spec"]["leaseDurationSeconds"]
                    .as_i64()
                    .unwrap_or(DURATION);
            if holder != me && !expired {
                return false;
            }
            if holder != me {
                let n = lease["spec"]["leaseTransitions"].as_i64().unwrap_or(0) + 1;
                lease["spec"]["leaseTransitions"] = json!(n);
                lease["spec"]["acquireTime"] = json!(now);
                lease["spec"]["holderIdentity"] = Value::String(me.to_string());
            }
            lease["spec"]["renewTime"] = json!(now);
            // Compare-and-swap on the read resourceVersion: two masters never both win.
            ctx.update(r, &lease, None).await.is_ok()
        }
    }
}

/// Campaigns forever: runs the controllers while holding the lease.
pub async fn run(ctx: Ctx, me: String) {
    let mut running: Option<Vec<tokio::task::JoinHandle<()>>> = None;
    loop {
        let held = try_hold(&ctx, &me).await;
        match (held, &running) {
            (true, None) => {
                tracing::info!(identity = %me, "leading: starting the controllers");
                running = Some(super::run_all(ctx.clone()).await);
            }
            (false, Some(_)) => {
                tracing::warn!(identity = %me, "lost the lease: stopping the controllers");
                for h in running.take().into_iter().flatten() {
                    h.abort();
                }
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
