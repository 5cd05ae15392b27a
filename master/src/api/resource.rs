//! Resource requests: routing a path to a resource, then get/list/watch/create/update/patch/
//! delete and the `status`, `scale` and `binding` subresources, with authorization.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::auth::Identity;
use super::filter::{decode_continue, encode_continue, Filter};
use super::objects::{self, FieldValidation};
use super::patch;
use super::server::{json_response, AppState};
use super::status::ApiError;
use super::table;
use crate::resources::{self, Resource};
use crate::store::StoreError;

/// What a path names.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resource.
    pub resource: &'static Resource,
    /// Namespace from the path.
    pub namespace: Option<String>,
    /// Object name.
    pub name: Option<String>,
    /// Subresource.
    pub sub: Option<String>,
}

/// Parses `/api/v1/...` and `/apis/<g>/<v>/...`.
pub fn parse_path(path: &str) -> Result<Target, ApiError> {
    let nf = || {
        ApiError::NoRoute(format!(
            "the server could not find the requested resource ({path})"
        ))
    };
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(nf()),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, more @ ..]
            if resources::find(group, version, plural).is_some_and(|r| r.namespaced) =>
        {
            (Some(ns.to_string()), {
                let mut v = vec![*plural];
                v.extend_from_slice(more);
                v
            })
        }
        other => (None, other.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(s.to_string())),
        _ => return Err(nf()),
    };
    let resource = resources::find(group, version, plural).ok_or_else(nf)?;
    if let Some(s) = &sub {
        if !resource.subresources.contains(&s.as_str()) {
            return Err(nf());
        }
    }
    if resource.namespaced && name.is_some() && namespace.is_none() {
        return Err(nf());
    }
    Ok(Target {
        resource,
        namespace,
        name,
        sub,
    })
}

/// A non-empty query parameter.
pub(crate) fn q<'a>(query: &'a HashMap<String, String>, k: &str) -> Option<&'a str> {
    query.get(k).map(String::as_str).filter(|s| !s.is_empty())
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get("accept")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|a| {
            a.split(',')
                .next()
                .is_some_and(|first| first.contains("as=Table"))
        })
}

/// Decodes a request body (JSON, or YAML when the content type says so).
pub fn decode_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let ct = headers
        .get("content-type")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("application/json");
    if ct.contains("protobuf") {
        return super::protobuf::decode(body)
            .map_err(|e| ApiError::UnsupportedMediaType(e.to_string()));
    }
    if ct.contains("cbor") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {ct})"
        )));
    }
    if ct.contains("yaml") {
        let v: serde_yaml::Value = serde_yaml::from_slice(body).map_err(|e| {
            ApiError::BadRequest(format!("the request body is not valid YAML: {e}"))
        })?;
        serde_json::to_value(v).map_err(|e| ApiError::BadRequest(e.to_string()))
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("the request body is not valid JSON: {e}")))
    }
}

/// Whether `id` may do `verb` on `t` (`obj`: the object written, when there is one).
fn authorize(
    id: &Identity,
    verb: &str,
    t: &Target,
    obj: Option<&Value>,
    live: Option<&Value>,
) -> Result<(), ApiError> {
    let read = matches!(verb, "get" | "list" | "watch");
    let node = match id {
        Identity::Admin { .. } => return Ok(()),
        Identity::Joiner => {
            return Err(ApiError::Forbidden(
                "the join token may only be used to join (POST /podlet/v1/join)".into(),
            ))
        }
        Identity::Node { node } => node,
    };
    let deny = || {
        ApiError::Forbidden(format!(
            "node \"{node}\" cannot {verb} {}{}: nodes may only write their own Node, Lease and the pods bound to them",
            t.resource.qualified(),
            t.name.as_ref().map(|n| format!(" \"{n}\"")).unwrap_or_default()
        ))
    };
    if read {
        // Secrets, ConfigMaps, ServiceAccounts: only `get`, and only those its pods reference (checked by
        // the caller with [`node_may_read`], which needs the store).
        return if matches!(t.resource.kind, "Secret" | "ConfigMap" | "ServiceAccount")
            && verb != "get"
        {
            Err(deny())
        } else {
            Ok(())
        };
    }
    let name = t
        .name
        .as_deref()
        .or_else(|| obj.and_then(|o| o["metadata"]["name"].as_str()));
    // As Kubernetes' NodeRestriction: status, its own Lease, deleting its own pods; the spec
    // of its Node (taints, unschedulable) and of pods stays the control plane's.
    let ok = match t.resource.kind {
        "Node" => {
            let own = name == Some(node.as_str());
            let spec_kept = match (obj, live) {
                (Some(o), Some(l)) if t.sub.is_none() => o["spec"] == l["spec"],
                _ => true,
            };
            own && spec_kept && verb != "delete"
        }
        "Lease" => name == Some(node.as_str()) && t.namespace.as_deref() == Some("kube-node-lease"),
        "Pod" => {
            let bound =
                |o: Option<&Value>| o.is_some_and(|o| o["spec"]["nodeName"] == node.as_str());
            let status_or_delete = verb == "delete" || t.sub.as_deref() == Some("status");
            status_or_delete && bound(live) && (obj.is_none() || bound(obj))
        }
        "Event" => verb == "create",
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(deny())
    }
}

/// Whether a pod bound to `node` in the target's namespace references the Secret, ConfigMap or
/// ServiceAccount `t` names (volumes, projected sources, env, envFrom, imagePullSecrets,
/// serviceAccountName), as Kubernetes' node authorizer decides.
async fn node_may_read(st: &AppState, node: &str, t: &Target) -> Result<bool, ApiError> {
    let (Some(ns), Some(name)) = (t.namespace.as_deref(), t.name.as_deref()) else {
        return Ok(false);
    };
    let pods = crate::resources::find("", "v1", "pods").expect("pods are served");
    let page = st
        .store
        .list(&pods.prefix_in(Some(ns)), None, 0, None)
        .await
        .map_err(|e| ApiError::from_store(pods, "", e))?;
    for kv in &page.items {
        let pod = st.codec.decode(kv)?;
        if pod["spec"]["nodeName"] == node && pod_references(&pod, t.resource.kind, name) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether `pod` references the Secret, ConfigMap or ServiceAccount (`kind`) `name`.
pub fn pod_references(pod: &Value, kind: &str, name: &str) -> bool {
    let spec = &pod["spec"];
    if kind == "ServiceAccount" {
        let sa = spec["serviceAccountName"]
            .as_str()
            .or(spec["serviceAccount"].as_str())
            .filter(|s| !s.is_empty())
            .unwrap_or("default");
        return sa == name;
    }
    let (vol_key, vol_name, env_ref, from_ref) = match kind {
        "Secret" => ("secret", "secretName", "secretKeyRef", "secretRef"),
        "ConfigMap" => ("configMap", "name", "configMapKeyRef", "configMapRef"),
        _ => return false,
    };
    let arr = |v: &Value| v.as_array().cloned().unwrap_or_default();
    for v in arr(&spec["volumes"]) {
        if v[vol_key][vol_name] == name {
            return true;
        }
        if arr(&v["projected"]["sources"])
            .iter()
            .any(|s| s[vol_key]["name"] == name)
        {
            return true;
        }
    }
    if kind == "Secret"
        && arr(&spec["imagePullSecrets"])
            .iter()
            .any(|s| s["name"] == name)
    {
        return true;
    }
    let containers = arr(&spec["containers"])
        .into_iter()
        .chain(arr(&spec["initContainers"]));
    for c in containers {
        if arr(&c["env"])
            .iter()
            .any(|e| e["valueFrom"][env_ref]["name"] == name)
            || arr(&c["envFrom"])
                .iter()
                .any(|e| e[from_ref]["name"] == name)
        {
            return true;
        }
    }
    false
}

fn verb_of(method: &Method, t: &Target, query: &HashMap<String, String>) -> &'static str {
    let watch = matches!(q(query, "watch"), Some("1" | "true"));
    match (method.as_str(), t.name.is_some()) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

/// Handles one resource request.
pub async fn handle(
    st: &AppState,
    id: &Identity,
    method: Method,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let t = parse_path(path)?;
    let verb = verb_of(&method, &t, query);
    let sub_ok = match t.sub.as_deref() {
        None => true,
        Some("binding") => verb == "create",
        Some(_) => matches!(verb, "get" | "update" | "patch"),
    };
    if !sub_ok {
        return Err(ApiError::MethodNotAllowed(format!(
            "{method} is not supported on {}/{}",
            t.resource.plural,
            t.sub.as_deref().unwrap_or("")
        )));
    }
    match verb {
        "watch" => {
            authorize(id, verb, &t, None, None)?;
            super::watch::watch(st, &t, query, wants_table(headers)).await
        }
        "list" => {
            authorize(id, verb, &t, None, None)?;
            list(st, &t, query, headers).await
        }
        "get" => {
            authorize(id, verb, &t, None, None)?;
            if let Identity::Node { node } = id {
                if matches!(t.resource.kind, "Secret" | "ConfigMap" | "ServiceAccount")
                    && !node_may_read(st, node, &t).await?
                {
                    return Err(ApiError::Forbidden(format!(
                        "node \"{node}\" cannot get {} \"{}\": no pod bound to it references it",
                        t.resource.qualified(),
                        t.name.as_deref().unwrap_or("")
                    )));
                }
            }
            let obj = get_object(st, &t).await?;
            let out = match t.sub.as_deref() {
                Some("scale") => scale_of(&obj),
                _ => obj,
            };
            if wants_table(headers) && t.sub.is_none() {
                let rv = out["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                return Ok(json_response(
                    StatusCode::OK,
                    &table::table(
                        t.resource.kind,
                        &[out],
                        &rv,
                        None,
                        q(query, "includeObject").unwrap_or("Metadata"),
                        true,
                    ),
                ));
            }
            Ok(json_response(StatusCode::OK, &out))
        }
        "create" => {
            let obj = decode_body(headers, &body)?;
            if t.sub.as_deref() == Some("binding") {
                let live = get_object(st, &t).await?;
                authorize(id, "update", &t, Some(&live), Some(&live))?;
                return bind(st, &t, &obj).await;
            }
            if t.name.is_some() {
                return Err(ApiError::MethodNotAllowed(format!(
                    "POST is not supported on a named {}",
                    t.resource.kind
                )));
            }
            authorize(id, verb, &t, Some(&obj), None)?;
            let fv = FieldValidation::parse(q(query, "fieldValidation"))?;
            let manager = q(query, "fieldManager").unwrap_or("unknown");
            let dry = q(query, "dryRun") == Some("All");
            let out = create(st, &t, obj, fv, manager, dry).await?;
            Ok(json_response(StatusCode::CREATED, &out))
        }
        "update" | "patch" => {
            let fv = FieldValidation::parse(q(query, "fieldValidation"))?;
            let dry = q(query, "dryRun") == Some("All");
            let content_type = headers
                .get("content-type")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("application/json")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            let (code, out) = write(
                st,
                id,
                &t,
                verb,
                &content_type,
                &body,
                headers,
                query,
                fv,
                dry,
            )
            .await?;
            Ok(json_response(code, &out))
        }
        "delete" => {
            let live = get_object(st, &t).await?;
            authorize(id, verb, &t, None, Some(&live))?;
            let mut opts = if body.is_empty() {
                json!({})
            } else {
                decode_body(headers, &body)?
            };
            if !opts.is_object() {
                return Err(ApiError::BadRequest(
                    "the request body is not a DeleteOptions object".into(),
                ));
            }
            // DeleteOptions may also come as query parameters.
            if let Some(g) = q(query, "gracePeriodSeconds") {
                let g: i64 = g.parse().map_err(|_| {
                    ApiError::BadRequest(format!("gracePeriodSeconds {g:?}: not an integer"))
                })?;
                opts["gracePeriodSeconds"] = json!(g);
            }
            if let Some(p) = q(query, "propagationPolicy") {
                opts["propagationPolicy"] = json!(p);
            }
            let out = super::gc::delete(
                st,
                t.resource,
                t.namespace.as_deref(),
                t.name.as_deref().unwrap_or(""),
                &opts,
            )
            .await?;
            Ok(json_response(StatusCode::OK, &out))
        }
        "deletecollection" => {
            authorize(id, verb, &t, None, None)?;
            let filter = Filter::parse(q(query, "labelSelector"), q(query, "fieldSelector"))?;
            let page = st
                .store
                .list(&t.resource.prefix_in(t.namespace.as_deref()), None, 0, None)
                .await
                .map_err(|e| ApiError::from_store(t.resource, "", e))?;
            let mut deleted = Vec::new();
            for kv in page.items {
                let obj = st.codec.decode(&kv)?;
                if !filter.matches(&obj) {
                    continue;
                }
                let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
                let ns = obj["metadata"]["namespace"].as_str().map(str::to_string);
                match super::gc::delete(st, t.resource, ns.as_deref(), &name, &json!({})).await {
                    Ok(o) => deleted.push(o),
                    Err(ApiError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(json_response(
                StatusCode::OK,
                &json!({"kind": t.resource.list_kind(), "apiVersion": t.resource.api_version(), "metadata": {}, "items": deleted}),
            ))
        }
        _ => Err(ApiError::MethodNotAllowed(format!(
            "{method} is not supported here"
        ))),
    }
}

/// Reads the object a target names.
pub async fn get_object(st: &AppState, t: &Target) -> Result<Value, ApiError> {
    let name = t.name.as_deref().unwrap_or("");
    let kv = st
        .store
        .get(&t.resource.key(t.namespace.as_deref(), name))
        .await
        .map_err(|e| ApiError::from_store(t.resource, name, e))?
        .ok_or_else(|| ApiError::not_found(t.resource, name))?;
    st.codec.decode(&kv)
}

async fn list(
    st: &AppState,
    t: &Target,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    if q(query, "sendInitialEvents").is_some() {
        return Err(refuse_initial_events(
            "sendInitialEvents is forbidden for list",
        ));
    }
    let filter = Filter::parse(q(query, "labelSelector"), q(query, "fieldSelector"))?;
    let limit: usize = match q(query, "limit") {
        None => 0,
        Some(l) => l
            .parse()
            .map_err(|_| ApiError::BadRequest(format!("limit {l:?} is not a number")))?,
    };
    let prefix = t.resource.prefix_in(t.namespace.as_deref());
    let (mut revision, mut start) = match q(query, "continue") {
        Some(c) => {
            let (rv, s) = decode_continue(c)?;
            (Some(rv), Some(s))
        }
        None => {
            let rv = match (
                q(query, "resourceVersion"),
                q(query, "resourceVersionMatch"),
            ) {
                (Some(rv), Some("Exact")) => Some(rv.parse::<i64>().map_err(|_| {
                    ApiError::BadRequest(format!("invalid resourceVersion {rv:?}"))
                })?),
                _ => None,
            };
            (rv, None)
        }
    };
    let table_wanted = wants_table(headers);
    // Without selectors and tables the stored bytes go out as they are (no parse, no re-encode).
    let raw = filter.is_empty() && !table_wanted;
    let mut raw_items: Vec<Vec<u8>> = Vec::new();
    let mut items = Vec::new();
    let mut cont = None;
    loop {
        let want = if limit == 0 {
            0
        } else {
            limit.saturating_sub(items.len() + raw_items.len())
        };
        let page = st
            .store
            .list(&prefix, start.as_deref(), want, revision)
            .await
            .map_err(|e| match e {
                StoreError::Compacted { .. } if q(query, "continue").is_some() => ApiError::Expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".into(),
                ),
                e => ApiError::from_store(t.resource, "", e),
            })?;
        revision = Some(page.revision);
        let last = page.items.last().map(|kv| kv.key.clone());
        for kv in &page.items {
            if raw {
                raw_items.push(st.codec.raw_with_rv(kv)?);
                continue;
            }
            let obj = st.codec.decode(kv)?;
            if filter.matches(&obj) {
                items.push(obj);
            }
        }
        if !page.more {
            break;
        }
        start = last;
        if limit > 0 && items.len() + raw_items.len() >= limit {
            cont = start.as_deref().map(|s| encode_continue(page.revision, s));
            break;
        }
    }
    let rv = revision.unwrap_or(0).to_string();
    if raw {
        let mut meta = json!({"resourceVersion": rv});
        if let Some(c) = &cont {
            meta["continue"] = json!(c);
        }
        let mut body = format!(
            "{{\"kind\":{},\"apiVersion\":{},\"metadata\":{},\"items\":[",
            json!(t.resource.list_kind()),
            json!(t.resource.api_version()),
            meta
        )
        .into_bytes();
        for (i, item) in raw_items.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(item);
        }
        body.extend_from_slice(b"]}");
        return Ok((StatusCode::OK, [("content-type", "application/json")], body).into_response());
    }
    if table_wanted {
        let include = q(query, "includeObject").unwrap_or("Metadata");
        return Ok(json_response(
            StatusCode::OK,
            &table::table(t.resource.kind, &items, &rv, cont.as_deref(), include, true),
        ));
    }
    let mut meta = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": t.resource.list_kind(), "apiVersion": t.resource.api_version(), "metadata": meta, "items": items}),
    ))
}

/// The 422 for `sendInitialEvents` (streaming lists): clients then list and watch instead.
pub(crate) fn refuse_initial_events(why: &str) -> ApiError {
    ApiError::Invalid {
        kind: "ListOptions".into(),
        group: "meta.k8s.io".into(),
        name: String::new(),
        causes: vec![super::status::Cause::invalid(
            "sendInitialEvents",
            "true",
            why,
        )],
    }
}

/// Makes sure the namespace of a new object exists and is not terminating.
async fn check_namespace(st: &AppState, ns: &str) -> Result<(), ApiError> {
    let r = resources::find("", "v1", "namespaces").expect("namespaces");
    let kv = st
        .store
        .get(&r.key(None, ns))
        .await
        .map_err(|e| ApiError::from_store(r, ns, e))?;
    let obj = match kv {
        Some(kv) => st.codec.decode(&kv)?,
        None => return Err(ApiError::not_found(r, ns)),
    };
    if !obj["metadata"]["deletionTimestamp"].is_null() {
        return Err(ApiError::Forbidden(format!(
            "unable to create new content in namespace {ns} because it is being terminated"
        )));
    }
    Ok(())
}

/// Values a create took from the Service ranges; given back if the create does not store.
#[derive(Debug, Default)]
struct Taken {
    ips: Vec<u32>,
    ports: Vec<u32>,
}

impl Taken {
    async fn give_back(self, st: &AppState) {
        let store = st.store.as_ref();
        let _ = crate::allocator::release(store, &crate::allocator::SERVICE_IPS, &self.ips).await;
        let _ = crate::allocator::release(store, &crate::allocator::NODE_PORTS, &self.ports).await;
    }
}

fn alloc_error(
    r: &'static Resource,
    name: &str,
    field: &str,
    value: impl std::fmt::Display,
    e: crate::allocator::AllocError,
) -> ApiError {
    use crate::allocator::AllocError;
    match e {
        AllocError::Taken => ApiError::invalid(
            r,
            name,
            vec![super::status::Cause::invalid(
                field,
                value,
                "provided value is already allocated",
            )],
        ),
        AllocError::Store(e) => ApiError::from_store(r, name, e),
        other => ApiError::Internal(other.to_string()),
    }
}

/// Gives a new Service its ClusterIP: the one it asks for (in 10.43.0.0/16 and free), or a
/// free one from the allocator (never .0.1, the `kubernetes` Service's, or .0.10, the
/// cluster DNS's).
async fn assign_cluster_ip(
    st: &AppState,
    svc: &mut Value,
    taken: &mut Taken,
) -> Result<(), ApiError> {
    use crate::allocator::SERVICE_IPS;
    let r = resources::find("", "v1", "services").expect("services");
    let name = svc["metadata"]["name"].as_str().unwrap_or("").to_string();
    let requested = svc["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
    if requested == "None" || svc["spec"]["type"] == "ExternalName" {
        return Ok(());
    }
    if requested.is_empty() {
        let start = name
            .bytes()
            .fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
        let v = crate::allocator::allocate(st.store.as_ref(), &SERVICE_IPS, start)
            .await
            .map_err(|e| alloc_error(r, &name, "spec.clusterIPs", "", e))?;
        taken.ips.push(v);
        let ip = std::net::Ipv4Addr::from(v).to_string();
        svc["spec"]["clusterIP"] = json!(ip);
        svc["spec"]["clusterIPs"] = json!([ip]);
        return Ok(());
    }
    let bad = |why: &str| {
        ApiError::invalid(
            r,
            &name,
            vec![super::status::Cause::invalid(
                "spec.clusterIPs",
                &requested,
                why,
            )],
        )
    };
    let parsed: std::net::Ipv4Addr = requested
        .parse()
        .map_err(|_| bad("must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"))?;
    if SERVICE_IPS.ip_offset(parsed).is_none() {
        return Err(bad(
            "failed to allocate IP: the provided IP is not in the valid range. The range of valid IPs is 10.43.0.0/16",
        ));
    }
    crate::allocator::claim(st.store.as_ref(), &SERVICE_IPS, u32::from(parsed))
        .await
        .map_err(|e| match e {
            crate::allocator::AllocError::Taken => {
                bad("failed to allocate IP: provided IP is already allocated")
            }
            e => alloc_error(r, &name, "spec.clusterIPs", &requested, e),
        })?;
    taken.ips.push(u32::from(parsed));
    svc["spec"]["clusterIPs"] = json!([requested]);
    Ok(())
}

/// Gives each port of a NodePort/LoadBalancer Service without one a free node port
/// (30000–32767); a requested port outside the range or already in use is refused.
async fn assign_node_ports(
    st: &AppState,
    svc: &mut Value,
    taken: &mut Taken,
) -> Result<(), ApiError> {
    use crate::allocator::NODE_PORTS;
    let r = resources::find("", "v1", "services").expect("services");
    let name = svc["metadata"]["name"].as_str().unwrap_or("").to_string();
    let Some(ports) = svc["spec"]["ports"].as_array_mut() else {
        return Ok(());
    };
    for (i, p) in ports.iter_mut().enumerate() {
        let field = format!("spec.ports[{i}].nodePort");
        match p["nodePort"].as_i64() {
            Some(n) if !(30000..=32767).contains(&n) => {
                return Err(ApiError::invalid(r, &name, vec![super::status::Cause::invalid(field, n, "provided port is not in the valid range. The range of valid ports is 30000-32767")]));
            }
            Some(n) => {
                crate::allocator::claim(st.store.as_ref(), &NODE_PORTS, n as u32)
                    .await
                    .map_err(|e| alloc_error(r, &name, &field, n, e))?;
                taken.ports.push(n as u32);
            }
            None => {
                let start = rand::random_range(0..NODE_PORTS.size);
                let v = crate::allocator::allocate(st.store.as_ref(), &NODE_PORTS, start)
                    .await
                    .map_err(|e| alloc_error(r, &name, &field, "", e))?;
                taken.ports.push(v);
                p["nodePort"] = json!(v);
            }
        }
    }
    Ok(())
}

/// Admission and storage of a new object.
pub async fn create(
    st: &AppState,
    t: &Target,
    obj: Value,
    fv: FieldValidation,
    manager: &str,
    dry: bool,
) -> Result<Value, ApiError> {
    let mut taken = Taken::default();
    let out = create_checked(st, t, obj, fv, manager, dry, &mut taken).await;
    // Values taken for a Service that was not stored (refused, or a dry run) go back.
    if out.is_err() || dry {
        taken.give_back(st).await;
    }
    out
}

#[allow(clippy::too_many_arguments)]
async fn create_checked(
    st: &AppState,
    t: &Target,
    obj: Value,
    fv: FieldValidation,
    manager: &str,
    dry: bool,
    taken: &mut Taken,
) -> Result<Value, ApiError> {
    let r = t.resource;
    if !obj.is_object() {
        return Err(ApiError::BadRequest(
            "the request body must be an object".into(),
        ));
    }
    let mut obj = obj;
    match obj["apiVersion"].as_str() {
        None => obj["apiVersion"] = json!(r.api_version()),
        Some(v) if v == r.api_version() => {}
        Some(v) => {
            return Err(ApiError::BadRequest(format!(
                "the API version in the data ({v}) does not match the expected API version ({})",
                r.api_version()
            )))
        }
    }
    match obj["kind"].as_str() {
        None => obj["kind"] = json!(r.kind),
        Some(k) if k == r.kind => {}
        Some(k) => {
            return Err(ApiError::BadRequest(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                r.kind
            )))
        }
    }
    // Shape first (unknown fields per `fieldValidation`): everything below may then index
    // into the object without meeting a value of the wrong type.
    let mut obj = objects::check_types(r, &obj, fv)?;
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    if r.namespaced {
        let ns = t
            .namespace
            .clone()
            .ok_or_else(|| ApiError::BadRequest("a namespace is required".into()))?;
        match obj["metadata"]["namespace"].as_str() {
            None => obj["metadata"]["namespace"] = json!(ns),
            Some(n) if n == ns => {}
            Some(_) => return Err(ApiError::BadRequest("the namespace of the provided object does not match the namespace sent on the request".into())),
        }
        check_namespace(st, &ns).await?;
    } else if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    let generate = obj["metadata"]["generateName"].as_str().map(str::to_string);
    if obj["metadata"]["name"].as_str().is_none_or(str::is_empty) {
        match &generate {
            Some(g) if !g.is_empty() => {}
            _ => {
                return Err(ApiError::invalid(
                    r,
                    "",
                    vec![super::status::Cause::required("metadata.name")],
                ))
            }
        }
    }
    let now = objects::now();
    {
        let m = obj["metadata"].as_object_mut().expect("object");
        m.insert("uid".into(), json!(objects::new_uid()));
        m.insert("creationTimestamp".into(), json!(now));
        m.insert("generation".into(), json!(1));
        m.remove("resourceVersion");
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
    }
    objects::default(r, &mut obj);
    if r.kind == "Service" {
        // Shape first, so that nothing is allocated for a Service that is refused anyway
        // (a generated name is checked once it exists, below).
        if obj["metadata"]["name"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
        {
            objects::validate(r, &objects::check_types(r, &obj, FieldValidation::Ignore)?)?;
        }
        assign_cluster_ip(st, &mut obj, taken).await?;
        if matches!(
            obj["spec"]["type"].as_str(),
            Some("NodePort" | "LoadBalancer")
        ) {
            assign_node_ports(st, &mut obj, taken).await?;
        }
    }
    if obj["metadata"]["managedFields"].is_null() {
        patch::record_update(&mut obj, None, manager, &r.api_version(), &now);
    }
    for attempt in 0..8 {
        if let Some(g) = generate
            .as_deref()
            .filter(|_| obj["metadata"]["name"].as_str().is_none_or(str::is_empty) || attempt > 0)
        {
            let suffix: String = (0..5)
                .map(|_| {
                    let c = b"bcdfghjklmnpqrstvwxz2456789"[rand::random_range(0..27)];
                    c as char
                })
                .collect();
            obj["metadata"]["name"] = json!(format!("{g}{suffix}"));
        }
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let checked = objects::check_types(r, &obj, FieldValidation::Ignore)?;
        objects::validate(r, &checked)?;
        if dry {
            return Ok(checked);
        }
        let key = r.key(t.namespace.as_deref(), &name);
        match st.store.create(&key, st.codec.encode(&checked)?).await {
            Ok(rev) => {
                let mut out = checked;
                out["metadata"]["resourceVersion"] = json!(rev.to_string());
                return Ok(out);
            }
            Err(StoreError::AlreadyExists(_)) if generate.is_some() && attempt < 7 => continue,
            Err(e) => return Err(ApiError::from_store(r, &name, e)),
        }
    }
    Err(ApiError::Internal(
        "could not generate a unique name".into(),
    ))
}

/// The `Scale` view of a Deployment or ReplicaSet.
fn scale_of(obj: &Value) -> Value {
    let sel = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            let mut v: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect();
            v.sort();
            v.join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"],
                     "uid": obj["metadata"]["uid"], "resourceVersion": obj["metadata"]["resourceVersion"],
                     "creationTimestamp": obj["metadata"]["creationTimestamp"]},
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": sel},
    })
}

/// `POST pods/<name>/binding`.
async fn bind(st: &AppState, t: &Target, binding: &Value) -> Result<Response, ApiError> {
    let node = binding["target"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                t.resource,
                t.name.as_deref().unwrap_or(""),
                vec![super::status::Cause::required("target.name")],
            )
        })?;
    let name = t.name.clone().unwrap_or_default();
    let key = t.resource.key(t.namespace.as_deref(), &name);
    for _ in 0..5 {
        let kv = st
            .store
            .get(&key)
            .await
            .map_err(|e| ApiError::from_store(t.resource, &name, e))?
            .ok_or_else(|| ApiError::not_found(t.resource, &name))?;
        let mut pod = st.codec.decode(&kv)?;
        if let Some(uid) = binding["metadata"]["uid"].as_str() {
            if pod["metadata"]["uid"] != uid {
                return Err(ApiError::conflict(t.resource, &name));
            }
        }
        if let Some(current) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return Err(ApiError::Conflict {
                qualified: "pods/binding".to_string(),
                group: String::new(),
                plural: "pods".into(),
                name: format!("{name}\": pod {name} is already assigned to node \"{current}"),
            });
        }
        pod["spec"]["nodeName"] = json!(node);
        let mut conds: Vec<Value> = pod["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        conds.retain(|c| c["type"] != "PodScheduled");
        conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": objects::now()}));
        pod["status"]["conditions"] = Value::Array(conds);
        match st
            .store
            .update(&key, st.codec.encode(&pod)?, Some(kv.mod_revision))
            .await
        {
            Ok(_) => {
                return Ok(json_response(
                    StatusCode::CREATED,
                    &super::status::success(),
                ))
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::from_store(t.resource, &name, e)),
        }
    }
    Err(ApiError::conflict(t.resource, &name))
}

/// `obj` without its resourceVersion and managed-field timestamps: what a no-op write leaves
/// unchanged (such a write is not stored, as kube-apiserver skips it).
fn without_times(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o["metadata"].as_object_mut() {
        m.remove("resourceVersion");
        if let Some(Value::Array(mf)) = m.get_mut("managedFields") {
            for e in mf.iter_mut().filter_map(Value::as_object_mut) {
                e.remove("time");
            }
        }
    }
    o
}

/// PUT and PATCH (also on `status` and `scale`), with retries when a patch races a writer.
#[allow(clippy::too_many_arguments)]
async fn write(
    st: &AppState,
    id: &Identity,
    t: &Target,
    verb: &str,
    content_type: &str,
    body: &[u8],
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    fv: FieldValidation,
    dry: bool,
) -> Result<(StatusCode, Value), ApiError> {
    let r = t.resource;
    let name = t
        .name
        .clone()
        .ok_or_else(|| ApiError::MethodNotAllowed(format!("{verb} needs an object name")))?;
    let key = r.key(t.namespace.as_deref(), &name);
    let manager_default = if content_type == "application/apply-patch+yaml" {
        ""
    } else {
        "unknown"
    };
    let manager = q(query, "fieldManager")
        .unwrap_or(manager_default)
        .to_string();
    if content_type == "application/apply-patch+yaml" && manager.is_empty() {
        return Err(ApiError::BadRequest("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into()));
    }
    let body_value = if verb == "update" || content_type != "application/json-patch+json" {
        Some(decode_body(headers, body)?)
    } else {
        None
    };
    for _attempt in 0..5 {
        let current = st
            .store
            .get(&key)
            .await
            .map_err(|e| ApiError::from_store(r, &name, e))?;
        let live = match &current {
            Some(kv) => Some(st.codec.decode(kv)?),
            None => None,
        };
        // Apply on a missing object creates it.
        if live.is_none() {
            if content_type == "application/apply-patch+yaml" && t.sub.is_none() {
                let applied = body_value.clone().unwrap_or(Value::Null);
                if !applied.is_object() {
                    return Err(ApiError::BadRequest(
                        "an apply patch must be an object".into(),
                    ));
                }
                if applied["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n != name)
                {
                    return Err(ApiError::BadRequest(format!(
                        "the name of the object ({}) does not match the name on the URL ({name})",
                        applied["metadata"]["name"].as_str().unwrap_or("")
                    )));
                }
                authorize(id, "create", t, None, None)?;
                let applied = objects::check_types(r, &applied, fv)?;
                authorize(id, "create", t, Some(&applied), None)?;
                let obj = patch::apply(r.kind, None, &applied, &manager, &objects::now())?;
                let mut obj = obj;
                if obj["metadata"]["name"].is_null() {
                    obj["metadata"]["name"] = json!(name);
                }
                let created = create(st, t, obj, fv, &manager, dry).await;
                match created {
                    Err(ApiError::AlreadyExists { .. }) => continue,
                    other => return other.map(|o| (StatusCode::CREATED, o)),
                }
            }
            return Err(ApiError::not_found(r, &name));
        }
        let live = live.expect("checked");
        // Before the patch touches anything (its errors could echo stored values).
        authorize(id, verb, t, None, Some(&live))?;
        let live_rev = current.as_ref().map(|kv| kv.mod_revision).unwrap_or(0);
        // The full object the client asks for.
        let base = match t.sub.as_deref() {
            Some("scale") => scale_of(&live),
            _ => live.clone(),
        };
        let wanted = if verb == "update" {
            body_value.clone().unwrap_or(Value::Null)
        } else {
            match content_type {
                "application/json-patch+json" => patch::json_patch(&base, body)?,
                "application/merge-patch+json" => patch::merge_patch(&base, body_value.as_ref().unwrap()),
                "application/strategic-merge-patch+json" => patch::strategic_merge(r.kind, &base, body_value.as_ref().unwrap())?,
                "application/apply-patch+yaml" => {
                    let applied = body_value.as_ref().unwrap();
                    if !applied.is_object() {
                        return Err(ApiError::BadRequest("an apply patch must be an object".into()));
                    }
                    let applied = objects::check_types(r, applied, fv)?;
                    patch::apply(r.kind, Some(&base), &applied, &manager, &objects::now())?
                }
                other => return Err(ApiError::UnsupportedMediaType(format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other})"))),
            }
        };
        if !wanted.is_object() {
            return Err(ApiError::BadRequest(
                "the object must be a JSON object".into(),
            ));
        }
        // Shape first (as for create); the scale view is checked as a Scale.
        let wanted = match t.sub.as_deref() {
            Some("scale") => {
                let scale = crate::resources::Resource {
                    kind: "Scale",
                    ..*r
                };
                objects::check_types(&scale, &wanted, fv)?
            }
            _ => objects::check_types(r, &wanted, fv)?,
        };
        // Optimistic concurrency: a resourceVersion the client sent must match (a patch that
        // does not name one applies to whatever is current, and is retried on a race).
        let client_rv = match (verb, content_type) {
            ("update", _) => wanted["metadata"]["resourceVersion"].as_str(),
            (_, "application/json-patch+json") => {
                let names_rv = serde_json::from_slice::<Value>(body).ok().is_some_and(|p| {
                    p.as_array().is_some_and(|ops| {
                        ops.iter().any(|o| o["path"] == "/metadata/resourceVersion")
                    })
                });
                if names_rv {
                    wanted["metadata"]["resourceVersion"].as_str()
                } else {
                    None
                }
            }
            (_, "application/apply-patch+yaml") => None,
            _ => body_value
                .as_ref()
                .and_then(|b| b["metadata"]["resourceVersion"].as_str()),
        };
        let expected = match client_rv {
            Some(rv) => {
                let n: i64 = rv
                    .parse()
                    .map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}")))?;
                if n != live_rev {
                    return Err(ApiError::conflict(r, &name));
                }
                Some(n)
            }
            _ => None,
        };
        if wanted["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n != name)
            && t.sub.as_deref() != Some("scale")
        {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                wanted["metadata"]["name"].as_str().unwrap_or("")
            )));
        }
        let mut next = match t.sub.as_deref() {
            Some("status") => {
                let mut o = live.clone();
                o["status"] = wanted["status"].clone();
                o
            }
            Some("scale") => {
                let n = wanted["spec"]["replicas"].as_i64().ok_or_else(|| {
                    ApiError::invalid(
                        r,
                        &name,
                        vec![super::status::Cause::required("spec.replicas")],
                    )
                })?;
                if n < 0 {
                    return Err(ApiError::invalid(
                        r,
                        &name,
                        vec![super::status::Cause::invalid(
                            "spec.replicas",
                            n,
                            "must be greater than or equal to 0",
                        )],
                    ));
                }
                let mut o = live.clone();
                o["spec"]["replicas"] = json!(n);
                o
            }
            _ => {
                let mut o = wanted.clone();
                if o["apiVersion"].is_null() {
                    o["apiVersion"] = live["apiVersion"].clone();
                }
                if o["kind"].is_null() {
                    o["kind"] = live["kind"].clone();
                }
                if o["apiVersion"] != live["apiVersion"] || o["kind"] != live["kind"] {
                    return Err(ApiError::BadRequest(format!(
                        "the kind or API version in the data does not match {} {}",
                        r.api_version(),
                        r.kind
                    )));
                }
                if r.subresources.contains(&"status") {
                    o["status"] = live["status"].clone();
                }
                o
            }
        };
        // Metadata the client cannot change.
        for k in [
            "uid",
            "creationTimestamp",
            "namespace",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "name",
        ] {
            next["metadata"][k] = live["metadata"][k].clone();
        }
        if let Some(m) = next["metadata"].as_object_mut() {
            m.retain(|_, v| !v.is_null());
            m.remove("resourceVersion");
        }
        let mut gen = live["metadata"]["generation"].as_i64().unwrap_or(1);
        if objects::spec_part(&next) != objects::spec_part(&live) {
            gen += 1;
        }
        next["metadata"]["generation"] = json!(gen);
        if t.sub.is_none() {
            objects::default(r, &mut next);
            if r.kind == "Service" && next["spec"]["clusterIP"].is_null() {
                next["spec"]["clusterIP"] = live["spec"]["clusterIP"].clone();
                next["spec"]["clusterIPs"] = live["spec"]["clusterIPs"].clone();
            }
        }
        if content_type != "application/apply-patch+yaml" {
            patch::record_update(
                &mut next,
                Some(&live),
                &manager,
                &r.api_version(),
                &objects::now(),
            );
        }
        authorize(id, verb, t, Some(&next), Some(&live))?;
        let checked = objects::check_types(r, &next, FieldValidation::Ignore)?;
        objects::validate(r, &checked)?;
        // An object being deleted whose last finalizer went: delete it now.
        let finalizers_empty = checked["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty());
        // (Namespaces finish through the namespace controller, not on their last write.)
        if !checked["metadata"]["deletionTimestamp"].is_null()
            && finalizers_empty
            && r.kind != "Namespace"
        {
            if dry {
                return Ok((StatusCode::OK, checked));
            }
            return match st.store.delete(&key, Some(live_rev)).await {
                Ok(_) => Ok((StatusCode::OK, checked)),
                Err(StoreError::Conflict { .. }) if expected.is_none() => continue,
                Err(e) => Err(ApiError::from_store(r, &name, e)),
            };
        }
        if without_times(&checked) == without_times(&live) {
            // No change: no write, same resourceVersion (kubectl prints "unchanged").
            let out = match t.sub.as_deref() {
                Some("scale") => scale_of(&live),
                _ => live,
            };
            return Ok((StatusCode::OK, out));
        }
        if dry {
            return Ok((StatusCode::OK, checked));
        }
        match st
            .store
            .update(&key, st.codec.encode(&checked)?, Some(live_rev))
            .await
        {
            Ok(rev) => {
                let mut out = checked;
                out["metadata"]["resourceVersion"] = json!(rev.to_string());
                let out = match t.sub.as_deref() {
                    Some("scale") => scale_of(&out),
                    _ => out,
                };
                return Ok((StatusCode::OK, out));
            }
            // A patch without a resourceVersion is retried against the new state.
            Err(StoreError::Conflict { .. }) if expected.is_none() => continue,
            Err(e) => return Err(ApiError::from_store(r, &name, e)),
        }
    }
    Err(ApiError::conflict(r, &name))
}
