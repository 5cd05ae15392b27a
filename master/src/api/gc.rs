//! Deletion: finalizers (an object with finalizers gets a `deletionTimestamp` and stays until
//! they are removed), `preconditions`, and owner-reference propagation — `Background` deletes
//! the owner then its dependents, `Foreground` the dependents first, `Orphan` strips the owner
//! reference from dependents. Deleting a Namespace deletes everything in it.

use serde_json::{json, Value};

use super::server::AppState;
use super::status::ApiError;
use crate::resources::{Resource, RESOURCES};
use crate::store::StoreError;

/// Deletes one object per `opts` (`DeleteOptions`); returns its last state.
pub async fn delete(
    st: &AppState,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    opts: &Value,
) -> Result<Value, ApiError> {
    let key = r.key(ns, name);
    let policy =
        opts["propagationPolicy"]
            .as_str()
            .unwrap_or(if opts["orphanDependents"] == true {
                "Orphan"
            } else {
                "Background"
            });
    if !["Background", "Foreground", "Orphan"].contains(&policy) {
        return Err(ApiError::BadRequest(format!(
            "propagationPolicy {policy:?}: must be Background, Foreground or Orphan"
        )));
    }
    for _ in 0..5 {
        let kv = st
            .store
            .get(&key)
            .await
            .map_err(|e| ApiError::from_store(r, name, e))?
            .ok_or_else(|| ApiError::not_found(r, name))?;
        let obj = st.codec.decode(&kv)?;
        if let Some(uid) = opts["preconditions"]["uid"].as_str() {
            if obj["metadata"]["uid"] != uid {
                return Err(ApiError::conflict(r, name));
            }
        }
        if let Some(rv) = opts["preconditions"]["resourceVersion"].as_str() {
            if rv != kv.mod_revision.to_string() {
                return Err(ApiError::conflict(r, name));
            }
        }
        if let Some(grace) = graceful_pod_deletion(r, &obj, opts)? {
            // A running pod bound to a node terminates first: its agent stops it within the
            // grace period, then deletes it with grace 0 (as kubelet does).
            let mut marked = obj.clone();
            let until = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
            marked["metadata"]["deletionTimestamp"] =
                json!(until.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            match store_marked(st, r, name, &key, marked, kv.mod_revision).await? {
                Some(marked) => return Ok(marked),
                None => continue,
            }
        }
        if r.kind == "Pod" && !obj["metadata"]["deletionTimestamp"].is_null() {
            let shorter = opts["gracePeriodSeconds"].as_i64().is_some_and(|g| g == 0);
            let finalizers_left = obj["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| !f.is_empty());
            if !shorter && !finalizers_left && pod_bound_and_running(&obj) {
                // Already terminating with its grace period: nothing changes until the agent
                // (or a forced delete) finishes it.
                return Ok(obj);
            }
        }
        let finalizers = obj["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let is_namespace = r.kind == "Namespace";
        if !finalizers.is_empty() || is_namespace {
            if obj["metadata"]["deletionTimestamp"].is_null() {
                let mut marked = obj.clone();
                marked["metadata"]["deletionTimestamp"] = json!(super::objects::now());
                marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                if is_namespace {
                    marked["status"]["phase"] = json!("Terminating");
                }
                match store_marked(st, r, name, &key, marked, kv.mod_revision).await? {
                    Some(marked) => {
                        if is_namespace {
                            let (st, name) = (st.clone(), name.to_string());
                            tokio::spawn(async move {
                                finish_namespace(&st, &name).await;
                            });
                        }
                        return Ok(marked);
                    }
                    None => continue,
                }
            }
            return Ok(obj);
        }
        let uid = obj["metadata"]["uid"].as_str().unwrap_or("").to_string();
        if policy == "Foreground" {
            delete_dependents(st, ns, &uid, "Foreground").await?;
        }
        if policy == "Orphan" {
            orphan_dependents(st, ns, &uid).await?;
        }
        match st.store.delete(&key, Some(kv.mod_revision)).await {
            Ok(_) => {
                if policy == "Background" {
                    let (st, ns, uid) = (st.clone(), ns.map(str::to_string), uid.clone());
                    tokio::spawn(async move {
                        if let Err(e) =
                            delete_dependents(&st, ns.as_deref(), &uid, "Background").await
                        {
                            tracing::warn!(error = %e, "deleting dependents");
                        }
                    });
                }
                return Ok(obj);
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::from_store(r, name, e)),
        }
    }
    Err(ApiError::conflict(r, name))
}

/// Stores `marked` (a deletion mark on the object at `key`) if it is still at `revision`;
/// returns it with its new resourceVersion, or `None` when another write came first.
async fn store_marked(
    st: &AppState,
    r: &'static Resource,
    name: &str,
    key: &str,
    mut marked: Value,
    revision: i64,
) -> Result<Option<Value>, ApiError> {
    match st
        .store
        .update(key, st.codec.encode(&marked)?, Some(revision))
        .await
    {
        Ok(rev) => {
            marked["metadata"]["resourceVersion"] = json!(rev.to_string());
            Ok(Some(marked))
        }
        Err(StoreError::Conflict { .. }) => Ok(None),
        Err(e) => Err(ApiError::from_store(r, name, e)),
    }
}

/// Whether a pod is bound to a node and has not finished (its containers may be running).
fn pod_bound_and_running(pod: &Value) -> bool {
    let bound = pod["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    bound && !finished
}

/// For a pod that must terminate gracefully, the grace period in seconds (`None`: delete
/// now). As Kubernetes: a bound, unfinished pod gets `deletionTimestamp` = now + grace
/// (`gracePeriodSeconds`, else `spec.terminationGracePeriodSeconds`, else 30); grace 0, an
/// unbound or a finished pod is deleted at once; a second delete may only shorten the grace.
fn graceful_pod_deletion(r: &Resource, pod: &Value, opts: &Value) -> Result<Option<i64>, ApiError> {
    if r.kind != "Pod" || !pod_bound_and_running(pod) {
        return Ok(None);
    }
    let grace = match &opts["gracePeriodSeconds"] {
        Value::Null => pod["spec"]["terminationGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(30),
        v => v.as_i64().filter(|g| *g >= 0).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "gracePeriodSeconds {v}: must be a non-negative integer"
            ))
        })?,
    };
    if grace == 0 {
        return Ok(None);
    }
    let current = pod["metadata"]["deletionGracePeriodSeconds"].as_i64();
    match (pod["metadata"]["deletionTimestamp"].is_null(), current) {
        (true, _) => Ok(Some(grace)),
        (false, Some(c)) if grace < c => Ok(Some(grace)),
        _ => Ok(None),
    }
}

/// Every object (in `ns` for namespaced kinds) with an owner reference to `uid`.
async fn dependents(
    st: &AppState,
    ns: Option<&str>,
    uid: &str,
) -> Result<Vec<(&'static Resource, Value)>, ApiError> {
    let mut out = Vec::new();
    for r in RESOURCES {
        if r.namespaced && ns.is_none() {
            continue;
        }
        let page = st
            .store
            .list(&r.prefix_in(ns), None, 0, None)
            .await
            .map_err(|e| ApiError::from_store(r, "", e))?;
        for kv in &page.items {
            let obj = st.codec.decode(kv)?;
            let owned = obj["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|o| o["uid"] == uid));
            if owned {
                out.push((r, obj));
            }
        }
    }
    Ok(out)
}

/// Deletes the dependents of `uid` with `policy` (boxed: deletion recurses through owners).
fn delete_dependents<'a>(
    st: &'a AppState,
    ns: Option<&'a str>,
    uid: &'a str,
    policy: &'a str,
) -> futures::future::BoxFuture<'a, Result<(), ApiError>> {
    Box::pin(async move {
        if uid.is_empty() {
            return Ok(());
        }
        for (r, obj) in dependents(st, ns, uid).await? {
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
            let dns = obj["metadata"]["namespace"].as_str().map(str::to_string);
            match delete(
                st,
                r,
                dns.as_deref(),
                &name,
                &json!({"propagationPolicy": policy}),
            )
            .await
            {
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
}

async fn orphan_dependents(st: &AppState, ns: Option<&str>, uid: &str) -> Result<(), ApiError> {
    for (r, obj) in dependents(st, ns, uid).await? {
        let name = obj["metadata"]["name"].as_str().unwrap_or("");
        let dns = obj["metadata"]["namespace"].as_str();
        let key = r.key(dns, name);
        let mut o = obj.clone();
        if let Some(refs) = o["metadata"]["ownerReferences"].as_array_mut() {
            refs.retain(|x| x["uid"] != uid);
        }
        let rv: i64 = obj["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        match st.store.update(&key, st.codec.encode(&o)?, Some(rv)).await {
            Ok(_) | Err(StoreError::NotFound(_)) => {}
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(ApiError::from_store(r, name, e)),
        }
    }
    Ok(())
}

/// Deletes everything in a terminating namespace, then the namespace; returns whether it is
/// gone. Anything that cannot be listed or deleted now leaves the namespace Terminating (the
/// namespace controller tries again).
pub async fn finish_namespace(st: &AppState, ns: &str) -> bool {
    let mut clean = true;
    for r in RESOURCES.iter().filter(|r| r.namespaced) {
        let Ok(page) = st.store.list(&r.prefix_in(Some(ns)), None, 0, None).await else {
            clean = false;
            continue;
        };
        for kv in page.items {
            match st.store.delete(&kv.key, None).await {
                Ok(_) | Err(StoreError::NotFound(_)) => {}
                Err(_) => clean = false,
            }
        }
    }
    if !clean {
        return false;
    }
    let r = crate::resources::find("", "v1", "namespaces").expect("namespaces");
    matches!(
        st.store.delete(&r.key(None, ns), None).await,
        Ok(_) | Err(StoreError::NotFound(_))
    )
}
