//! The horizontal pod autoscaler (autoscaling/v2, CPU utilization), with Kubernetes'
//! algorithm: utilization = the ready pods' average CPU usage over their CPU requests; desired
//! = ceil(current replicas × utilization / target), unchanged within a 10% tolerance, clamped
//! to `minReplicas`..`maxReplicas`; scale-downs use the highest recommendation of the
//! stabilization window (`behavior.scaleDown.stabilizationWindowSeconds`, default 300 s).
//!
//! Usage comes from the agents: each reports its pods' CPU usage in the pod annotation
//! [`CPU_USAGE`] (a quantity, e.g. `250m`). The controller runs every [`PERIOD`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::scheduler::quantity;
use super::{pod_ready, res, terminating, Ctx, Informer};
use crate::selector::{labels_of as labels, selector_of};

/// The pod annotation agents report CPU usage in.
pub const CPU_USAGE: &str = "metrics.podlet.io/cpu-usage";
/// How often autoscalers are evaluated (Kubernetes: 15 s).
pub const PERIOD: Duration = Duration::from_secs(2);
/// Ratios this close to 1 change nothing.
pub const TOLERANCE: f64 = 0.1;

/// The replica count the algorithm recommends.
pub fn recommend(current: i64, utilization: f64, target: f64) -> i64 {
    let ratio = utilization / target;
    if (ratio - 1.0).abs() <= TOLERANCE {
        return current;
    }
    (ratio * current as f64).ceil() as i64
}

fn target_utilization(hpa: &Value) -> Option<f64> {
    hpa["spec"]["metrics"].as_array()?.iter().find_map(|m| {
        (m["type"] == "Resource"
            && m["resource"]["name"] == "cpu"
            && m["resource"]["target"]["type"] == "Utilization")
            .then(|| m["resource"]["target"]["averageUtilization"].as_f64())
            .flatten()
    })
}

/// Recommendations remembered per autoscaler, for the stabilization window.
#[derive(Debug, Default)]
pub struct History(HashMap<String, Vec<(Instant, i64)>>);

async fn evaluate(ctx: &Ctx, hpa: &Value, deps: &Informer, pods: &Informer, history: &mut History) {
    if terminating(hpa) {
        return;
    }
    let ns = hpa["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let name = hpa["metadata"]["name"].as_str().unwrap_or("").to_string();
    let target_ref = &hpa["spec"]["scaleTargetRef"];
    if target_ref["kind"] != "Deployment" {
        return;
    }
    let Some(dep) = deps.get(&format!(
        "{ns}/{}",
        target_ref["name"].as_str().unwrap_or("")
    )) else {
        return;
    };
    let Some(sel) = selector_of(&dep["spec"]["selector"]) else {
        return;
    };
    let Some(target) = target_utilization(hpa) else {
        return;
    };
    let current = dep["spec"]["replicas"].as_i64().unwrap_or(1);
    let mut usage = 0.0;
    let mut request = 0.0;
    let mut counted = 0;
    for p in pods.list().iter().filter(|p| {
        p["metadata"]["namespace"] == ns.as_str()
            && !terminating(p)
            && pod_ready(p)
            && sel.matches(&labels(p))
    }) {
        let (req_milli, _) = super::scheduler::requests(p);
        let Some(u) = p["metadata"]["annotations"][CPU_USAGE]
            .as_str()
            .and_then(quantity)
        else {
            continue;
        };
        if req_milli <= 0.0 {
            continue;
        }
        usage += u * 1000.0;
        request += req_milli;
        counted += 1;
    }
    let min = hpa["spec"]["minReplicas"].as_i64().unwrap_or(1).max(1);
    let max = hpa["spec"]["maxReplicas"].as_i64().unwrap_or(min).max(min);
    let (utilization, raw) = if counted == 0 || request <= 0.0 {
        (None, current)
    } else {
        let u = usage / request * 100.0;
        (Some(u), recommend(current, u, target))
    };
    let desired_now = raw.clamp(min, max);
    let window = Duration::from_secs(
        hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"]
            .as_u64()
            .unwrap_or(300),
    );
    let recs = history.0.entry(format!("{ns}/{name}")).or_default();
    let now = Instant::now();
    recs.push((now, desired_now));
    recs.retain(|(t, _)| now.duration_since(*t) <= window);
    // Scale down only to the highest recommendation of the window.
    let desired = if desired_now < current {
        recs.iter()
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(desired_now)
            .min(current)
    } else {
        desired_now
    };
    let mut status = json!({
        "currentReplicas": current, "desiredReplicas": desired,
        "conditions": [
            {"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale", "lastTransitionTime": crate::api::objects::now()},
            {"type": "ScalingActive", "status": if utilization.is_some() { "True" } else { "False" },
             "reason": if utilization.is_some() { "ValidMetricFound" } else { "FailedGetResourceMetric" }, "lastTransitionTime": crate::api::objects::now()},
            {"type": "ScalingLimited", "status": if raw != desired_now { "True" } else { "False" },
             "reason": if raw > max { "TooManyReplicas" } else if raw < min { "TooFewReplicas" } else { "DesiredWithinRange" }, "lastTransitionTime": crate::api::objects::now()},
        ],
    });
    if let Some(u) = utilization {
        status["currentMetrics"] = json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": u.round() as i64}}}]);
    }
    if desired != current {
        let scale = json!({"spec": {"replicas": desired}});
        match ctx
            .patch(
                res("Deployment"),
                Some(&ns),
                target_ref["name"].as_str().unwrap_or(""),
                Some("scale"),
                &scale,
            )
            .await
        {
            Ok(_) => {
                status["lastScaleTime"] = json!(crate::api::objects::now());
                tracing::info!(hpa = %name, from = current, to = desired, "autoscaled");
            }
            Err(e) => tracing::debug!(hpa = %name, error = %e, "scaling"),
        }
    } else if !hpa["status"]["lastScaleTime"].is_null() {
        status["lastScaleTime"] = hpa["status"]["lastScaleTime"].clone();
    }
    let cmp = |v: &Value| {
        (
            v["currentReplicas"].clone(),
            v["desiredReplicas"].clone(),
            v["currentMetrics"].clone(),
            v["lastScaleTime"].clone(),
        )
    };
    if cmp(&status) != cmp(&hpa["status"]) {
        let _ = ctx
            .patch(
                res("HorizontalPodAutoscaler"),
                Some(&ns),
                &name,
                Some("status"),
                &json!({"status": status}),
            )
            .await;
    }
}

/// Runs the controller.
pub async fn run(ctx: Ctx, hpas: Informer, deps: Informer, pods: Informer) {
    let mut history = History::default();
    loop {
        for h in hpas.list() {
            evaluate(&ctx, &h, &deps, &pods, &mut history).await;
        }
        tokio::time::sleep(PERIOD).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_ratio_and_tolerance() {
        assert_eq!(recommend(2, 100.0, 50.0), 4);
        assert_eq!(recommend(4, 54.0, 50.0), 4, "within 10%");
        assert_eq!(recommend(4, 10.0, 50.0), 1);
        assert_eq!(recommend(3, 70.0, 50.0), 5);
    }
}
