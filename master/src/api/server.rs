//! The router, shared state, authentication/authorization and the non-resource endpoints.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::{Identity, Tokens};
use super::codec::Codec;
use super::discovery;
use super::status::ApiError;
use super::watch_cache::WatchCache;
use crate::store::Store;

/// The largest request body accepted (etcd's default value limit is 1.5 MiB; kube-apiserver
/// accepts 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Everything handlers share.
pub struct Inner {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Object encoding (and Secret sealing).
    pub codec: Codec,
    /// The watch fan-out.
    pub cache: WatchCache,
    /// Token authentication (None: every request is admin — only for in-process tests).
    pub tokens: Option<Tokens>,
    /// Where clients reach this server (for `/api`).
    pub address: String,
}

/// Shared state handle.
pub type AppState = Arc<Inner>;

/// A JSON response with a status code.
pub fn json_response(code: StatusCode, v: &Value) -> Response {
    (code, [("content-type", "application/json")], v.to_string()).into_response()
}

async fn authenticate(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let public = matches!(
        req.uri().path(),
        "/version" | "/healthz" | "/livez" | "/readyz"
    );
    let identity = match &st.tokens {
        None => Some(Identity::Admin {
            user: "admin".into(),
        }),
        Some(tokens) => req
            .headers()
            .get("authorization")
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .and_then(|t| tokens.identify(t.trim())),
    };
    match identity {
        Some(id) => {
            req.extensions_mut().insert(id);
            next.run(req).await
        }
        None if public => next.run(req).await,
        None => ApiError::Unauthorized.into_response(),
    }
}

async fn version() -> Json<Value> {
    Json(discovery::version())
}

async fn healthy() -> &'static str {
    "ok"
}

async fn core_api(State(st): State<AppState>) -> Response {
    json_response(StatusCode::OK, &discovery::core_versions(&st.address))
}

async fn apis() -> Response {
    json_response(StatusCode::OK, &discovery::groups())
}

async fn core_v1() -> Response {
    json_response(
        StatusCode::OK,
        &discovery::resource_list("", "v1").unwrap_or(Value::Null),
    )
}

async fn group_version(
    axum::extract::Path((g, v)): axum::extract::Path<(String, String)>,
) -> Response {
    match discovery::resource_list(&g, &v) {
        Some(l) => json_response(StatusCode::OK, &l),
        None => ApiError::NoRoute(format!(
            "the server could not find the requested resource (/apis/{g}/{v})"
        ))
        .into_response(),
    }
}

async fn group(axum::extract::Path(g): axum::extract::Path<String>) -> Response {
    match super::super::resources::groups()
        .into_iter()
        .find(|(name, _)| *name == g)
    {
        Some((name, v)) => {
            let gv = json!({"groupVersion": format!("{name}/{v}"), "version": v});
            json_response(
                StatusCode::OK,
                &json!({"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": [gv.clone()], "preferredVersion": gv}),
            )
        }
        None => ApiError::NoRoute(format!(
            "the server could not find the requested resource (/apis/{g})"
        ))
        .into_response(),
    }
}

async fn openapi_root() -> Response {
    json_response(StatusCode::OK, &discovery::openapi_root())
}

async fn openapi_doc(axum::extract::Path(path): axum::extract::Path<String>) -> Response {
    match discovery::openapi_doc(&path) {
        Some(d) => json_response(StatusCode::OK, &d),
        None => ApiError::NoRoute(format!("no OpenAPI document for {path}")).into_response(),
    }
}

/// `POST /podlet/v1/join` with the join token and `{"nodeName": "…"}`: a token of the node's own.
async fn join(
    State(st): State<AppState>,
    axum::Extension(id): axum::Extension<Identity>,
    body: axum::body::Bytes,
) -> Response {
    let allowed = matches!(id, Identity::Joiner | Identity::Admin { .. });
    if !allowed {
        return ApiError::Forbidden("only the join token may join nodes".into()).into_response();
    }
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return ApiError::BadRequest(format!("join request: {e}")).into_response(),
    };
    let Some(node) = req["nodeName"]
        .as_str()
        .filter(|n| !n.is_empty() && n.len() <= 253)
    else {
        return ApiError::BadRequest("join request: nodeName is required".into()).into_response();
    };
    if !node
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return ApiError::BadRequest(format!("join request: invalid nodeName {node:?}"))
            .into_response();
    }
    // A name joins once: its token is not handed out again (a node keeps its token).
    let nodes = crate::resources::find("", "v1", "nodes").expect("nodes");
    match st.store.get(&nodes.key(None, node)).await {
        Ok(Some(_)) if !matches!(id, Identity::Admin { .. }) => {
            return ApiError::AlreadyExists {
                qualified: "nodes".into(),
                group: String::new(),
                plural: "nodes".into(),
                name: node.to_string(),
            }
            .into_response();
        }
        Err(e) => return ApiError::Internal(e.to_string()).into_response(),
        _ => {}
    }
    let Some(tokens) = &st.tokens else {
        return ApiError::BadRequest("authentication is off".into()).into_response();
    };
    match tokens.node_token(node) {
        Ok(t) => json_response(StatusCode::OK, &json!({"token": t, "nodeName": node})),
        Err(e) => ApiError::Internal(e.to_string()).into_response(),
    }
}

async fn resources(
    State(st): State<AppState>,
    method: Method,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    req: Request,
) -> Response {
    let id = req
        .extensions()
        .get::<Identity>()
        .cloned()
        .unwrap_or(Identity::Joiner);
    let path = req.uri().path().to_string();
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::TooLarge(format!("the request body exceeds {MAX_BODY} bytes"))
                .into_response();
        }
    };
    match super::resource::handle(&st, &id, method, &path, &query, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/healthz", get(healthy))
        .route("/livez", get(healthy))
        .route("/readyz", get(healthy))
        .route("/api", get(core_api))
        .route("/api/v1", get(core_v1))
        .route("/apis", get(apis))
        .route("/apis/{group}", get(group))
        .route("/apis/{group}/{version}", get(group_version))
        .route("/openapi/v3", get(openapi_root))
        .route("/openapi/v3/{*path}", get(openapi_doc))
        .route("/podlet/v1/join", post(join))
        .fallback(resources)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .with_state(state)
}
