//! PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386), Kubernetes' strategic
//! merge patch (lists merged by their merge keys, with the `$patch`, `$retainKeys`,
//! `$setElementOrder/…` and `$deleteFromPrimitiveList/…` directives), and server-side apply
//! (the applied configuration merged by the same keys; fields the manager applied before and
//! no longer applies are removed unless another manager owns them; `managedFields` kept).

use serde_json::{json, Map, Value};

use super::status::ApiError;

/// The merge key of the list at `field` below `parent` in an object of `kind`, or
/// `Some("")` for a merged list of primitives, or None for an atomic list.
pub fn merge_key(kind: &str, parent: &str, field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "schedulingGates"
        | "resourceClaims" => "name",
        "ports"
            if kind == "Service" && parent.ends_with("spec") && !parent.contains("template") =>
        {
            "port"
        }
        "ports" => "containerPort",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "ownerReferences" => "uid",
        "conditions" => "type",
        "finalizers" => "",
        _ => return None,
    })
}

/// Applies a JSON patch.
pub fn json_patch(doc: &Value, patch: &[u8]) -> Result<Value, ApiError> {
    let p: json_patch::Patch = serde_json::from_slice(patch)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON patch: {e}")))?;
    let mut out = doc.clone();
    json_patch::patch(&mut out, &p).map_err(|e| ApiError::Invalid {
        kind: doc["kind"].as_str().unwrap_or("").into(),
        group: String::new(),
        name: doc["metadata"]["name"].as_str().unwrap_or("").into(),
        causes: vec![super::status::Cause {
            reason: "FieldValueInvalid",
            field: String::new(),
            message: format!("the JSON patch could not be applied: {e}"),
        }],
    })?;
    Ok(out)
}

/// Applies a JSON merge patch.
pub fn merge_patch(doc: &Value, patch: &Value) -> Value {
    let mut out = doc.clone();
    json_patch::merge(&mut out, patch);
    out
}

fn key_of(v: &Value, key: &str) -> Option<Value> {
    v.get(key).cloned()
}

/// Applies a strategic merge patch to `doc` (an object of `kind`).
pub fn strategic_merge(kind: &str, doc: &Value, patch: &Value) -> Result<Value, ApiError> {
    if !patch.is_object() {
        return Err(ApiError::BadRequest(
            "a strategic merge patch must be a JSON object".into(),
        ));
    }
    Ok(merge_map(
        kind,
        "",
        doc.as_object().cloned().unwrap_or_default(),
        patch.as_object().unwrap(),
    )
    .map(Value::Object)
    .unwrap_or(Value::Null))
}

/// Merges patch map `p` into `o`; None when the patch deletes the map.
fn merge_map(
    kind: &str,
    path: &str,
    mut o: Map<String, Value>,
    p: &Map<String, Value>,
) -> Option<Map<String, Value>> {
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut r = p.clone();
            r.remove("$patch");
            return Some(strip_directives(r));
        }
        Some("delete") => return None,
        _ => {}
    }
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        o.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, pv) in p {
        if k.starts_with('$') {
            continue;
        }
        let child = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        if pv.is_null() {
            o.remove(k);
            continue;
        }
        let merged = match (o.remove(k), pv) {
            (Some(Value::Object(ov)), Value::Object(pm)) => {
                merge_map(kind, &child, ov, pm).map(Value::Object)
            }
            (Some(Value::Array(ol)), Value::Array(pl)) => Some(merge_list(kind, path, k, ol, pl)),
            (None, Value::Object(pm)) => merge_map(kind, &child, Map::new(), pm).map(Value::Object),
            (None, Value::Array(pl)) => Some(merge_list(kind, path, k, Vec::new(), pl)),
            (_, v) => Some(v.clone()),
        };
        if let Some(m) = merged {
            o.insert(k.clone(), m);
        }
    }
    for (k, pv) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let gone: Vec<&Value> = pv
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            if let Some(Value::Array(l)) = o.get_mut(field) {
                l.retain(|v| !gone.contains(&v));
            }
        }
    }
    for (k, pv) in p {
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            if let (Some(Value::Array(l)), Some(order)) = (o.get_mut(field), pv.as_array()) {
                let key = merge_key(kind, path, field).unwrap_or("");
                reorder(l, order, key);
            }
        }
    }
    Some(o)
}

fn reorder(list: &mut Vec<Value>, order: &[Value], key: &str) {
    let ident = |v: &Value| {
        if key.is_empty() {
            Some(v.clone())
        } else {
            key_of(v, key)
        }
    };
    let mut rest = std::mem::take(list);
    for o in order {
        let want = if key.is_empty() {
            Some(o.clone())
        } else {
            key_of(o, key)
        };
        if let Some(pos) = rest.iter().position(|v| ident(v) == want && want.is_some()) {
            list.push(rest.remove(pos));
        }
    }
    list.extend(rest);
}

fn strip_directives(mut m: Map<String, Value>) -> Map<String, Value> {
    m.retain(|k, _| !k.starts_with('$'));
    for v in m.values_mut() {
        match v {
            Value::Object(o) => *o = strip_directives(std::mem::take(o)),
            Value::Array(a) => {
                a.retain(|e| e.get("$patch").is_none());
                for e in a.iter_mut() {
                    if let Value::Object(o) = e {
                        *o = strip_directives(std::mem::take(o));
                    }
                }
            }
            _ => {}
        }
    }
    m
}

fn merge_list(kind: &str, parent: &str, field: &str, mut o: Vec<Value>, p: &[Value]) -> Value {
    let child = if parent.is_empty() {
        field.to_string()
    } else {
        format!("{parent}.{field}")
    };
    // `{"$patch": "replace"}` as an element: the rest of the patch list replaces the list.
    if p.iter()
        .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Value::Array(
            p.iter()
                .filter(|e| e.get("$patch").is_none())
                .map(|e| {
                    e.as_object()
                        .map(|m| Value::Object(strip_directives(m.clone())))
                        .unwrap_or_else(|| e.clone())
                })
                .collect(),
        );
    }
    match merge_key(kind, parent, field) {
        None => Value::Array(
            p.iter()
                .map(|e| {
                    e.as_object()
                        .map(|m| Value::Object(strip_directives(m.clone())))
                        .unwrap_or_else(|| e.clone())
                })
                .collect(),
        ),
        Some("") => {
            for v in p {
                if !o.contains(v) {
                    o.push(v.clone());
                }
            }
            Value::Array(o)
        }
        Some(key) => {
            for pe in p {
                let Some(pm) = pe.as_object() else { continue };
                let want = pm.get(key).cloned();
                let pos = want
                    .as_ref()
                    .and_then(|w| o.iter().position(|e| e.get(key) == Some(w)));
                match (pm.get("$patch").and_then(Value::as_str), pos) {
                    (Some("delete"), Some(i)) => {
                        o.remove(i);
                    }
                    (Some("delete"), None) => {}
                    (_, Some(i)) => {
                        let base = o[i].as_object().cloned().unwrap_or_default();
                        match merge_map(kind, &child, base, pm) {
                            Some(m) => o[i] = Value::Object(m),
                            None => {
                                o.remove(i);
                            }
                        }
                    }
                    (_, None) => {
                        if let Some(m) = merge_map(kind, &child, Map::new(), pm) {
                            o.push(Value::Object(m));
                        }
                    }
                }
            }
            Value::Array(o)
        }
    }
}

/// One path in a managed-fields set: `f:name` and `k:{"name":"c"}` steps.
type FieldPath = Vec<String>;

/// The field set (`fieldsV1`) an applied configuration covers.
pub fn field_set(kind: &str, v: &Value) -> Value {
    fn walk(kind: &str, path: &str, v: &Value) -> Value {
        let mut out = Map::new();
        if let Value::Object(m) = v {
            for (k, cv) in m {
                if ["apiVersion", "kind"].contains(&k.as_str()) && path.is_empty() {
                    continue;
                }
                if path.is_empty() && k == "metadata" {
                    let mut meta = Map::new();
                    for mk in ["labels", "annotations"] {
                        if let Some(Value::Object(lm)) = cv.get(mk) {
                            let inner: Map<String, Value> =
                                lm.keys().map(|l| (format!("f:{l}"), json!({}))).collect();
                            meta.insert(format!("f:{mk}"), Value::Object(inner));
                        }
                    }
                    if !meta.is_empty() {
                        out.insert("f:metadata".into(), Value::Object(meta));
                    }
                    continue;
                }
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let entry = match cv {
                    Value::Object(_) => walk(kind, &child, cv),
                    Value::Array(items) => match merge_key(kind, path, k) {
                        Some(key) if !key.is_empty() => {
                            let mut lm = Map::new();
                            for it in items {
                                if let Some(kv) = it.get(key) {
                                    let mut inner = walk(kind, &child, it);
                                    inner.as_object_mut().unwrap().insert(".".into(), json!({}));
                                    lm.insert(format!("k:{}", json!({ key: kv })), inner);
                                }
                            }
                            Value::Object(lm)
                        }
                        _ => json!({}),
                    },
                    _ => json!({}),
                };
                out.insert(format!("f:{k}"), entry);
            }
        }
        Value::Object(out)
    }
    walk(kind, "", v)
}

fn leaf_paths(set: &Value, prefix: &mut FieldPath, out: &mut Vec<FieldPath>) {
    if let Value::Object(m) = set {
        let children: Vec<(&String, &Value)> =
            m.iter().filter(|(k, _)| k.as_str() != ".").collect();
        if children.is_empty() {
            out.push(prefix.clone());
        }
        for (k, v) in children {
            prefix.push(k.clone());
            leaf_paths(v, prefix, out);
            prefix.pop();
        }
    }
}

fn contains_path(set: &Value, path: &[String]) -> bool {
    let mut cur = set;
    for step in path {
        match cur.get(step) {
            Some(next) => cur = next,
            None => return false,
        }
    }
    true
}

/// Removes the field at `path` (managed-field steps) from `obj`.
fn remove_path(obj: &mut Value, path: &[String], parent: &str) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if let Some(name) = first.strip_prefix("f:") {
        let child = if parent.is_empty() {
            name.to_string()
        } else {
            format!("{parent}.{name}")
        };
        if rest.is_empty() {
            if let Some(m) = obj.as_object_mut() {
                m.remove(name);
            }
        } else if let Some(next) = obj.get_mut(name) {
            if let Some(k) = rest[0].strip_prefix("k:") {
                let Ok(Value::Object(keyobj)) = serde_json::from_str::<Value>(k) else {
                    return;
                };
                if let Value::Array(items) = next {
                    if let Some(i) = items
                        .iter()
                        .position(|it| keyobj.iter().all(|(kk, kv)| it.get(kk) == Some(kv)))
                    {
                        if rest.len() == 1 {
                            items.remove(i);
                        } else {
                            remove_path(&mut items[i], &rest[1..], &child);
                        }
                    }
                }
            } else {
                remove_path(next, rest, &child);
            }
        }
    }
}

/// Server-side apply of `applied` by `manager` onto `live` (None: the object is new).
/// Returns the new object with its `managedFields` updated.
pub fn apply(
    kind: &str,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    time: &str,
) -> Result<Value, ApiError> {
    if !applied.is_object() {
        return Err(ApiError::BadRequest(
            "an apply patch must be an object".into(),
        ));
    }
    let mut cfg = applied.clone();
    if let Some(m) = cfg["metadata"].as_object_mut() {
        m.remove("managedFields");
        m.remove("resourceVersion");
    }
    let new_set = field_set(kind, &cfg);
    let mut obj = match live {
        None => cfg.clone(),
        Some(l) => strategic_merge(kind, l, &cfg)?,
    };
    let mut managed: Vec<Value> = live
        .and_then(|l| l["metadata"]["managedFields"].as_array().cloned())
        .unwrap_or_default();
    // Fields this manager applied last time and no longer applies, and no other manager owns.
    if let Some(prev) = managed
        .iter()
        .find(|m| m["manager"] == manager && m["operation"] == "Apply")
        .map(|m| m["fieldsV1"].clone())
    {
        let mut old = Vec::new();
        leaf_paths(&prev, &mut Vec::new(), &mut old);
        for p in old {
            if contains_path(&new_set, &p) {
                continue;
            }
            let others = managed.iter().any(|m| {
                !(m["manager"] == manager && m["operation"] == "Apply")
                    && contains_path(&m["fieldsV1"], &p)
            });
            if !others {
                remove_path(&mut obj, &p, "");
            }
        }
    }
    managed.retain(|m| !(m["manager"] == manager && m["operation"] == "Apply"));
    managed.push(json!({
        "manager": manager, "operation": "Apply",
        "apiVersion": applied["apiVersion"], "time": time,
        "fieldsType": "FieldsV1", "fieldsV1": new_set,
    }));
    obj["metadata"]["managedFields"] = Value::Array(managed);
    Ok(obj)
}

/// Records a non-apply write by `manager` in `obj`'s managedFields.
pub fn record_update(
    obj: &mut Value,
    previous: Option<&Value>,
    manager: &str,
    api_version: &str,
    time: &str,
) {
    let mut managed: Vec<Value> = previous
        .and_then(|p| p["metadata"]["managedFields"].as_array().cloned())
        .unwrap_or_default();
    managed.retain(|m| !(m["manager"] == manager && m["operation"] == "Update"));
    managed.push(json!({
        "manager": manager, "operation": "Update", "apiVersion": api_version,
        "time": time, "fieldsType": "FieldsV1", "fieldsV1": {},
    }));
    obj["metadata"]["managedFields"] = Value::Array(managed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy() -> Value {
        json!({"kind": "Deployment", "metadata": {"name": "d", "labels": {"a": "1"}},
               "spec": {"template": {"spec": {"containers": [
                   {"name": "web", "image": "nginx:1", "env": [{"name": "A", "value": "1"}]},
                   {"name": "side", "image": "busybox"}]}}}})
    }

    #[test]
    fn strategic_merge_by_keys_and_directives() {
        let patch = json!({"metadata": {"labels": {"a": null, "b": "2"}},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "side"}, {"name": "web"}],
                "containers": [{"name": "web", "image": "nginx:2", "env": [{"name": "B", "value": "2"}]},
                               {"name": "gone", "$patch": "delete"}]}}}});
        let out = strategic_merge("Deployment", &deploy(), &patch).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"b": "2"}));
        let cs = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(cs[0]["name"], "side");
        assert_eq!(cs[1]["image"], "nginx:2");
        assert_eq!(
            cs[1]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
        );
        let del = json!({"spec": {"template": {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}}});
        let out = strategic_merge("Deployment", &deploy(), &del).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        let retain = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}});
        let mut d = deploy();
        d["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}});
        let out = strategic_merge("Deployment", &d, &retain).unwrap();
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        // Atomic lists are replaced.
        let args = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "args": ["x"]}]}}}});
        let out = strategic_merge("Deployment", &deploy(), &args).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["args"],
            json!(["x"])
        );
    }

    #[test]
    fn service_ports_merge_by_port() {
        let svc = json!({"kind": "Service", "spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}});
        let p = json!({"spec": {"ports": [{"port": 443, "$patch": "delete"}, {"port": 80, "targetPort": 8080}]}});
        let out = strategic_merge("Service", &svc, &p).unwrap();
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "name": "http", "targetPort": 8080}])
        );
    }

    #[test]
    fn apply_twice_and_drop_a_field() {
        let cfg1 = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"a": "1", "b": "2"}},
                          "spec": {"replicas": 2}});
        let o1 = apply("Deployment", None, &cfg1, "kubectl", "t").unwrap();
        let o2 = apply("Deployment", Some(&o1), &cfg1, "kubectl", "t").unwrap();
        assert_eq!(o1, o2);
        let cfg2 = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"a": "1"}}});
        let mut live = o2.clone();
        live["spec"]["paused"] = json!(true); // someone else's field
        let o3 = apply("Deployment", Some(&live), &cfg2, "kubectl", "t").unwrap();
        assert_eq!(o3["metadata"]["labels"], json!({"a": "1"}));
        assert!(o3["spec"].get("replicas").is_none(), "{o3}");
        assert_eq!(o3["spec"]["paused"], true);
        assert_eq!(o3["metadata"]["managedFields"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn merge_and_json_patches() {
        let d = deploy();
        let out = merge_patch(&d, &json!({"metadata": {"labels": {"a": null, "c": "3"}}}));
        assert_eq!(out["metadata"]["labels"], json!({"c": "3"}));
        let out = json_patch(
            &d,
            br#"[{"op": "replace", "path": "/metadata/name", "value": "e"}]"#,
        )
        .unwrap();
        assert_eq!(out["metadata"]["name"], "e");
        assert!(json_patch(&d, br#"[{"op": "remove", "path": "/nope"}]"#).is_err());
        assert!(json_patch(&d, b"not json").is_err());
    }
}
