//! `?watch=true`: newline-delimited JSON events from the watch cache, filtered by the
//! request's selectors (an object that stops matching is reported as DELETED, one that starts
//! matching as ADDED), with bookmarks and `timeoutSeconds`. An expired resourceVersion is an
//! `ERROR` event carrying a 410 Status inside a 200 response, as kube-apiserver does (clients
//! re-list on it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use super::filter::Filter;
use super::resource::{q, Target};
use super::server::AppState;
use super::status::ApiError;
use super::table;
use super::watch_cache::CachedEvent;

fn expired(msg: String) -> Value {
    json!({"type": "ERROR", "object": ApiError::Expired(msg).status()})
}

/// Serves one watch.
pub async fn watch(
    st: &AppState,
    t: &Target,
    query: &HashMap<String, String>,
    as_table: bool,
) -> Result<Response, ApiError> {
    if matches!(q(query, "sendInitialEvents"), Some("true")) {
        return Err(super::resource::refuse_initial_events(
            "sendInitialEvents is not supported; list, then watch from the list's resourceVersion",
        ));
    }
    let filter = Filter::parse(q(query, "labelSelector"), q(query, "fieldSelector"))?;
    // At most an hour; clients re-watch from their last resourceVersion.
    let timeout = match q(query, "timeoutSeconds") {
        Some(s) => s
            .parse::<u64>()
            .map_err(|_| ApiError::BadRequest(format!("timeoutSeconds {s:?} is not a number")))?,
        None => 1800,
    }
    .min(3600);
    let bookmarks = matches!(q(query, "allowWatchBookmarks"), Some("true" | "1"));
    let prefix = t.resource.prefix_in(t.namespace.as_deref());
    let (tx, rx) = mpsc::channel::<Result<String, std::io::Error>>(256);
    let mut initial = Vec::new();
    let after = match q(query, "resourceVersion") {
        None | Some("0") => {
            // "Most recent": the current state as ADDED events, then changes after it.
            let page = st
                .store
                .list(&prefix, None, 0, None)
                .await
                .map_err(|e| ApiError::from_store(t.resource, "", e))?;
            for kv in &page.items {
                let obj = st.codec.decode(kv)?;
                if filter.matches(&obj) {
                    initial.push(obj);
                }
            }
            page.revision
        }
        Some(rv) => rv
            .parse::<i64>()
            .map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}")))?,
    };
    st.cache.wait_for(after).await;
    let kind = t.resource.kind;
    let subscribed = st.cache.subscribe(&prefix, after);
    let first_table = std::sync::atomic::AtomicBool::new(true);
    let render = move |ty: &str, obj: &Value| -> String {
        let object = if as_table {
            let rv = obj["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let cols = first_table.swap(false, std::sync::atomic::Ordering::Relaxed);
            table::table(kind, std::slice::from_ref(obj), &rv, None, "Metadata", cols)
        } else {
            obj.clone()
        };
        let mut line = json!({"type": ty, "object": object}).to_string();
        line.push('\n');
        line
    };
    let (replay, live) = match subscribed {
        Ok(x) => x,
        Err(e) => {
            let mut line = expired(format!(
                "too old resource version: {} ({})",
                e.requested, e.floor
            ))
            .to_string();
            line.push('\n');
            return Ok(stream_response(Body::from(line)));
        }
    };
    let api_version = t.resource.api_version();
    tokio::spawn(async move {
        let send = |s: String| {
            let tx = tx.clone();
            async move { tx.send(Ok(s)).await.is_ok() }
        };
        for obj in &initial {
            if !send(render("ADDED", obj)).await {
                return;
            }
        }
        drop(initial);
        let mut last = after;
        for ev in replay {
            if let Some((ty, obj)) = select(&ev, &filter) {
                if !send(render(ty, obj)).await {
                    return;
                }
            }
            last = ev.revision;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        let mut live: broadcast::Receiver<Arc<CachedEvent>> = live;
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
                _ = tick.tick(), if bookmarks => {
                    // Only as far as this watch has read: queued events come first.
                    let rv = last;
                    let mut line = json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version,
                        "metadata": {"resourceVersion": rv.to_string()}}}).to_string();
                    line.push('\n');
                    if !send(line).await {
                        return;
                    }
                }
                ev = live.recv() => match ev {
                    Ok(ev) => {
                        if ev.revision <= last {
                            continue;
                        }
                        last = ev.revision;
                        if !ev.key.starts_with(&prefix) {
                            continue;
                        }
                        if let Some((ty, obj)) = select(&ev, &filter) {
                            if !send(render(ty, obj)).await {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let mut line = expired(format!("too old resource version: {last} (the watch fell {n} events behind)")).to_string();
                        line.push('\n');
                        let _ = send(line).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        // The cache restarted its history (compaction): clients must re-list.
                        let mut line = expired(format!("too old resource version: {last} (the watch cache was reset)")).to_string();
                        line.push('\n');
                        let _ = send(line).await;
                        return;
                    }
                },
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Ok(stream_response(Body::from_stream(stream)))
}

fn stream_response(body: Body) -> Response {
    (
        StatusCode::OK,
        [
            ("content-type", "application/json"),
            ("cache-control", "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The event type a watcher with `filter` sees for `ev`, if any.
fn select<'a>(ev: &'a CachedEvent, filter: &Filter) -> Option<(&'static str, &'a Value)> {
    let now = filter.matches(&ev.object);
    let before = ev.prev.as_ref().is_some_and(|p| filter.matches(p));
    match ev.kind {
        "ADDED" => now.then_some(("ADDED", &*ev.object)),
        "DELETED" => (before || now).then_some(("DELETED", &*ev.object)),
        _ => match (before, now) {
            (true, true) => Some(("MODIFIED", &*ev.object)),
            (false, true) => Some(("ADDED", &*ev.object)),
            (true, false) => Some(("DELETED", &*ev.object)),
            (false, false) => None,
        },
    }
}
