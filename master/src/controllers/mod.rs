//! The controllers and the scheduler, run inside `podlet master` by whichever master holds the
//! `podlet-controller-manager` Lease. They read through informers (a local copy of a resource
//! kept current by the watch cache) and write through the same API code path as clients
//! (admission, validation, optimistic concurrency), as the system user.

pub mod deployment;
pub mod endpoints;
pub mod hpa;
pub mod leader;
pub mod namespaces;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod replicaset;
pub mod scheduler;
pub mod service_ranges;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method};
use serde_json::Value;

use crate::api::auth::Identity;
use crate::api::server::AppState;
use crate::api::status::ApiError;
use crate::resources::{self, Resource};

/// Access to the API for controllers.
#[derive(Clone)]
pub struct Ctx {
    /// The API state.
    pub st: AppState,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").finish_non_exhaustive()
    }
}

/// The path of a collection (`ns` for namespaced resources) or of one object.
pub fn path(r: &Resource, ns: Option<&str>, name: Option<&str>, sub: Option<&str>) -> String {
    let base = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    let mut p = match ns {
        Some(ns) if r.namespaced => format!("{base}/namespaces/{ns}/{}", r.plural),
        _ => format!("{base}/{}", r.plural),
    };
    if let Some(n) = name {
        p.push('/');
        p.push_str(n);
    }
    if let Some(s) = sub {
        p.push('/');
        p.push_str(s);
    }
    p
}

/// A resource by kind (the served ones only).
pub fn res(kind: &str) -> &'static Resource {
    resources::RESOURCES
        .iter()
        .find(|r| r.kind == kind)
        .expect("a served kind")
}

impl Ctx {
    /// Performs one API request as the controllers' system identity.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let (path_only, query_str) = path.split_once('?').unwrap_or((path, ""));
        let query: HashMap<String, String> = query_str
            .split('&')
            .filter(|kv| !kv.is_empty())
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            HeaderValue::from_str(content_type)
                .unwrap_or(HeaderValue::from_static("application/json")),
        );
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let id = Identity::Admin {
            user: "system:controller-manager".into(),
        };
        let resp = crate::api::resource::handle(
            &self.st,
            &id,
            method,
            path_only,
            &query,
            &headers,
            bytes.into(),
        )
        .await?;
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        serde_json::from_slice(&body).map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// Creates an object.
    pub async fn create(
        &self,
        r: &Resource,
        ns: Option<&str>,
        obj: &Value,
    ) -> Result<Value, ApiError> {
        self.request(
            Method::POST,
            &format!(
                "{}?fieldManager=podlet-controller-manager",
                path(r, ns, None, None)
            ),
            "application/json",
            Some(obj),
        )
        .await
    }

    /// Replaces an object (compare-and-swap on its resourceVersion).
    pub async fn update(
        &self,
        r: &Resource,
        obj: &Value,
        sub: Option<&str>,
    ) -> Result<Value, ApiError> {
        let ns = obj["metadata"]["namespace"].as_str();
        let name = obj["metadata"]["name"].as_str();
        self.request(
            Method::PUT,
            &format!(
                "{}?fieldManager=podlet-controller-manager",
                path(r, ns, name, sub)
            ),
            "application/json",
            Some(obj),
        )
        .await
    }

    /// Merge-patches an object (or a subresource).
    pub async fn patch(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        sub: Option<&str>,
        patch: &Value,
    ) -> Result<Value, ApiError> {
        self.request(
            Method::PATCH,
            &format!(
                "{}?fieldManager=podlet-controller-manager",
                path(r, ns, Some(name), sub)
            ),
            "application/merge-patch+json",
            Some(patch),
        )
        .await
    }

    /// Deletes an object.
    pub async fn delete(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        opts: &Value,
    ) -> Result<Value, ApiError> {
        self.request(
            Method::DELETE,
            &path(r, ns, Some(name), None),
            "application/json",
            Some(opts),
        )
        .await
    }

    /// Starts an informer on `r`.
    pub async fn informer(&self, r: &'static Resource) -> Informer {
        Informer::start(self.st.clone(), r).await
    }
}

/// Slots of an informer's change channel (see [`Informer::changes`]).
const CHANGE_SLOTS: usize = 16;

/// A resource's objects, kept current from the watch cache; `changed` ticks on every event.
/// Its feeding task stops when the last clone is dropped.
#[derive(Clone)]
pub struct Informer {
    objects: Arc<RwLock<BTreeMap<String, Arc<Value>>>>,
    /// Ticks on every change: a wake-up only (a lagging receiver just wakes once), so the
    /// channel is small — tokio preallocates every slot, and 65,536 slots per informer were
    /// most of the master's idle memory.
    pub changes: tokio::sync::broadcast::Sender<()>,
    feeder: Arc<AbortOnDrop>,
}

/// Aborts a task when dropped.
struct AbortOnDrop(std::sync::OnceLock<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = self.0.get() {
            h.abort();
        }
    }
}

impl std::fmt::Debug for Informer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Informer").finish_non_exhaustive()
    }
}

fn object_key(obj: &Value) -> String {
    match obj["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{ns}/{}", obj["metadata"]["name"].as_str().unwrap_or("")),
        None => obj["metadata"]["name"].as_str().unwrap_or("").to_string(),
    }
}

impl Informer {
    async fn start(st: AppState, r: &'static Resource) -> Informer {
        let inf = Informer {
            objects: Arc::default(),
            changes: tokio::sync::broadcast::channel(CHANGE_SLOTS).0,
            feeder: Arc::new(AbortOnDrop(std::sync::OnceLock::new())),
        };
        // The task holds only the data, not the informer (or it would keep itself alive).
        let me = Informer {
            objects: inf.objects.clone(),
            changes: inf.changes.clone(),
            feeder: Arc::new(AbortOnDrop(std::sync::OnceLock::new())),
        };
        let ready = Arc::new(tokio::sync::Notify::new());
        let signal = ready.clone();
        let task = tokio::spawn(async move {
            let mut first = true;
            loop {
                if let Err(e) = me.sync(&st, r, &signal, &mut first).await {
                    tracing::warn!(resource = r.plural, error = %e, "informer relisting");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let _ = inf.feeder.0.set(task.abort_handle());
        ready.notified().await;
        inf
    }

    /// List, then follow the cache until it cannot (then the caller relists).
    async fn sync(
        &self,
        st: &AppState,
        r: &'static Resource,
        ready: &tokio::sync::Notify,
        first: &mut bool,
    ) -> Result<(), ApiError> {
        let page = st
            .store
            .list(&r.prefix(), None, 0, None)
            .await
            .map_err(|e| ApiError::from_store(r, "", e))?;
        let mut fresh = BTreeMap::new();
        for kv in &page.items {
            let obj = st.codec.decode(kv)?;
            fresh.insert(object_key(&obj), Arc::new(obj));
        }
        let changed = {
            let mut map = self.objects.write().unwrap();
            let changed = !map.is_empty() || !fresh.is_empty();
            *map = fresh;
            changed
        };
        if changed {
            let _ = self.changes.send(());
        }
        st.cache.wait_for(page.revision).await;
        let (replay, mut live) = st
            .cache
            .subscribe(&r.prefix(), page.revision)
            .map_err(|e| {
                ApiError::Expired(format!("informer: revision {} expired", e.requested))
            })?;
        if *first {
            *first = false;
            ready.notify_one();
        }
        let mut last = page.revision;
        let apply = |ev: &crate::api::watch_cache::CachedEvent| {
            let key = object_key(&ev.object);
            {
                let mut map = self.objects.write().unwrap();
                if ev.kind == "DELETED" {
                    map.remove(&key);
                } else {
                    map.insert(key.clone(), ev.object.clone());
                }
            }
            let _ = self.changes.send(());
        };
        for ev in replay {
            last = ev.revision;
            apply(&ev);
        }
        loop {
            match live.recv().await {
                Ok(ev) => {
                    if ev.revision <= last || !ev.key.starts_with(&r.prefix()) {
                        continue;
                    }
                    last = ev.revision;
                    apply(&ev);
                }
                Err(_) => return Ok(()),
            }
        }
    }

    /// Every object.
    pub fn list(&self) -> Vec<Arc<Value>> {
        self.objects.read().unwrap().values().cloned().collect()
    }

    /// One object by `namespace/name` (or `name`).
    pub fn get(&self, key: &str) -> Option<Arc<Value>> {
        self.objects.read().unwrap().get(key).cloned()
    }
}

/// The key of an object (`namespace/name`).
pub fn key_of(obj: &Value) -> String {
    object_key(obj)
}

/// Whether `obj` is controlled by the object with `uid`.
pub fn controlled_by(obj: &Value, uid: &str) -> bool {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r["uid"] == uid && r["controller"] == true)
        })
}

/// The controller owner reference of `obj`, if any.
pub fn controller_of(obj: &Value) -> Option<&Value> {
    obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
}

/// Whether a pod is ready (Ready condition True).
pub fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Whether an object is being deleted.
pub fn terminating(obj: &Value) -> bool {
    !obj["metadata"]["deletionTimestamp"].is_null()
}

/// Whether a pod has finished (it will not run again).
pub fn pod_finished(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

/// Starts every controller and the scheduler (call while leading); dropping or aborting the
/// returned tasks stops them.
pub async fn run_all(ctx: Ctx) -> Vec<tokio::task::JoinHandle<()>> {
    let pods = ctx.informer(res("Pod")).await;
    let nodes = ctx.informer(res("Node")).await;
    let rss = ctx.informer(res("ReplicaSet")).await;
    let deps = ctx.informer(res("Deployment")).await;
    let svcs = ctx.informer(res("Service")).await;
    let leases = ctx.informer(res("Lease")).await;
    let hpas = ctx.informer(res("HorizontalPodAutoscaler")).await;
    let nss = ctx.informer(res("Namespace")).await;
    vec![
        tokio::spawn(namespaces::run(ctx.clone(), nss)),
        tokio::spawn(hpa::run(ctx.clone(), hpas, deps.clone(), pods.clone())),
        tokio::spawn(scheduler::run(ctx.clone(), pods.clone(), nodes.clone())),
        tokio::spawn(replicaset::run(ctx.clone(), rss.clone(), pods.clone())),
        tokio::spawn(deployment::run(ctx.clone(), deps, rss, pods.clone())),
        tokio::spawn(nodeipam::run(
            ctx.clone(),
            nodes.clone(),
            nodeipam::parse_cidr(nodeipam::DEFAULT_CLUSTER_CIDR).expect("valid default CIDR"),
        )),
        tokio::spawn(nodelifecycle::run(ctx.clone(), nodes, leases, pods.clone())),
        tokio::spawn(service_ranges::run(ctx.clone(), svcs.clone())),
        tokio::spawn(endpoints::run(ctx, svcs, pods)),
    ]
}

/// A coalescing trigger: fires (at most one pending) whenever any of `sources` changes.
pub fn triggers(sources: &[&Informer]) -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    for s in sources {
        let mut changes = s.changes.subscribe();
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.try_send(());
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
    rx
}

/// Level-triggered control: run `pass` now, then after every change (changes during a pass
/// coalesce into one more pass) and at least every `resync`.
pub async fn level_loop<F, Fut>(
    mut trigger: tokio::sync::mpsc::Receiver<()>,
    resync: Duration,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        pass().await;
        tokio::select! {
            _ = trigger.recv() => {}
            _ = tokio::time::sleep(resync) => {}
        }
    }
}
