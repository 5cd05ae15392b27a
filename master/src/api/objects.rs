//! Admission of objects: type checking against the `k8s-openapi` types (unknown fields found
//! by comparing the input with its typed round trip), defaulting, and validation with
//! Kubernetes' field paths and reasons.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::status::{ApiError, Cause};
use crate::resources::Resource;

/// The current time as Kubernetes writes it (RFC 3339, seconds).
pub fn now() -> String {
    let t = jiff::Timestamp::now();
    jiff::Timestamp::from_second(t.as_second())
        .map(|t| t.to_string())
        .unwrap_or_else(|_| t.to_string())
}

/// A fresh uid (RFC 4122 version 4 format).
pub fn new_uid() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-4{:x}{:02x}-{:x}{:x}{:02x}-{}",
        b[0],
        b[1],
        b[2],
        b[3],
        b[4],
        b[5],
        b[6] & 0x0f,
        b[7],
        8 | (b[8] & 0x3),
        b[8] >> 4,
        b[9],
        b[10..16]
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    )
}

fn roundtrip<T: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, String> {
    let typed: T = serde_path_to_error::deserialize(v.clone()).map_err(|e| {
        let path = e.path().to_string();
        format!("{path}: {}", e.into_inner())
    })?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

/// The object decoded into its `k8s-openapi` type and encoded again.
pub fn typed(kind: &str, v: &Value) -> Result<Value, String> {
    use k8s_openapi::api::{apps, autoscaling, coordination, core, discovery};
    match kind {
        "Namespace" => roundtrip::<core::v1::Namespace>(v),
        "Node" => roundtrip::<core::v1::Node>(v),
        "Pod" => roundtrip::<core::v1::Pod>(v),
        "Service" => roundtrip::<core::v1::Service>(v),
        "Endpoints" => roundtrip::<core::v1::Endpoints>(v),
        "ConfigMap" => roundtrip::<core::v1::ConfigMap>(v),
        "Secret" => roundtrip::<core::v1::Secret>(v),
        "Event" => roundtrip::<core::v1::Event>(v),
        "ServiceAccount" => roundtrip::<core::v1::ServiceAccount>(v),
        "Deployment" => roundtrip::<apps::v1::Deployment>(v),
        "ReplicaSet" => roundtrip::<apps::v1::ReplicaSet>(v),
        "HorizontalPodAutoscaler" => roundtrip::<autoscaling::v2::HorizontalPodAutoscaler>(v),
        "Lease" => roundtrip::<coordination::v1::Lease>(v),
        "EndpointSlice" => roundtrip::<discovery::v1::EndpointSlice>(v),
        "Scale" => roundtrip::<autoscaling::v1::Scale>(v),
        "Binding" => roundtrip::<core::v1::Binding>(v),
        other => Err(format!("unknown kind {other}")),
    }
}

/// Fields present in `input` (non-null) that the typed round trip dropped.
pub fn unknown_fields(input: &Value, output: &Value, path: &str, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                if v.is_null() {
                    continue;
                }
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(w) => unknown_fields(v, w, &p, out),
                    None => out.push(p),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                unknown_fields(v, w, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// How strictly unknown fields are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them (kube-apiserver warns; podlet logs).
    Warn,
    /// Refuse the request (400).
    Strict,
}

impl FieldValidation {
    /// Parses the query parameter (default: Warn, as kube-apiserver).
    pub fn parse(s: Option<&str>) -> Result<FieldValidation, ApiError> {
        match s {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(o) => Err(ApiError::BadRequest(format!(
                "fieldValidation: invalid value {o:?}: must be one of Ignore, Warn, Strict"
            ))),
        }
    }
}

/// Type-checks `obj` as a `kind`; returns the normalized object.
pub fn check_types(r: &Resource, obj: &Value, fv: FieldValidation) -> Result<Value, ApiError> {
    let out = typed(r.kind, obj).map_err(|e| {
        ApiError::BadRequest(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            r.kind, r.version, r.kind
        ))
    })?;
    if fv == FieldValidation::Strict {
        let mut unknown = Vec::new();
        unknown_fields(obj, &out, "", &mut unknown);
        if !unknown.is_empty() {
            let list: Vec<String> = unknown
                .iter()
                .map(|u| format!("unknown field \"{u}\""))
                .collect();
            return Err(ApiError::BadRequest(format!(
                "strict decoding error: {}",
                list.join(", ")
            )));
        }
    }
    Ok(out)
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Kinds whose names must be DNS labels (not subdomains).
const LABEL_NAMED: &[&str] = &["Namespace", "Service"];

fn validate_name(r: &Resource, name: &str, causes: &mut Vec<Cause>) {
    let ok = if LABEL_NAMED.contains(&r.kind) {
        is_dns_label(name)
    } else {
        is_dns_subdomain(name)
    };
    if !ok {
        let what = if LABEL_NAMED.contains(&r.kind) {
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
        } else {
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        };
        causes.push(Cause::invalid("metadata.name", format!("\"{name}\""), what));
    }
}

fn validate_labels(obj: &Value, causes: &mut Vec<Cause>) {
    if let Some(labels) = obj["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            let val = v.as_str().unwrap_or("");
            let ok_value = val.len() <= 63
                && val
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                && (val.is_empty()
                    || (val.as_bytes()[0].is_ascii_alphanumeric()
                        && val.as_bytes()[val.len() - 1].is_ascii_alphanumeric()));
            if !ok_value {
                causes.push(Cause::invalid(
                    "metadata.labels".to_string(),
                    format!("\"{val}\""),
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                ));
            }
            let name = k.rsplit('/').next().unwrap_or("");
            if name.is_empty() || name.len() > 63 {
                causes.push(Cause::invalid(
                    "metadata.labels",
                    format!("\"{k}\""),
                    "name part must be non-empty and at most 63 characters",
                ));
            }
        }
    }
}

/// An IANA service name, as a named port must be: at most 15 lowercase letters, digits and
/// single inner hyphens, with at least one letter.
fn is_port_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 15
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && n.bytes().any(|b| b.is_ascii_lowercase())
        && !n.starts_with('-')
        && !n.ends_with('-')
        && !n.contains("--")
}

/// Kubernetes' Service rules: type, headless, ExternalName, and ports (range, names, unique
/// port/protocol pairs, target ports by number or IANA name).
fn validate_service_spec(spec: &Value, causes: &mut Vec<Cause>) {
    let ty = spec["type"].as_str().unwrap_or("ClusterIP");
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&ty) {
        causes.push(Cause::unsupported(
            "spec.type",
            ty,
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }
    let headless = spec["clusterIP"] == "None";
    if headless && ty != "ClusterIP" {
        causes.push(Cause::invalid(
            "spec.clusterIPs[0]",
            "None",
            &format!("may not be set to 'None' for {ty} services"),
        ));
    }
    if ty == "ExternalName"
        && spec["externalName"]
            .as_str()
            .is_none_or(|n| !is_dns_subdomain(n))
    {
        causes.push(Cause::required("spec.externalName"));
    }
    let ports = spec["ports"].as_array().cloned().unwrap_or_default();
    if ports.is_empty() && ty != "ExternalName" && !headless {
        causes.push(Cause::required("spec.ports"));
    }
    let mut names = std::collections::HashSet::new();
    let mut pairs = std::collections::HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        match p["port"].as_i64() {
            Some(n) if (1..=65535).contains(&n) => {}
            Some(n) => causes.push(Cause::invalid(
                format!("spec.ports[{i}].port"),
                n,
                "must be between 1 and 65535, inclusive",
            )),
            None => causes.push(Cause::required(format!("spec.ports[{i}].port"))),
        }
        let name = p["name"].as_str().unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            causes.push(Cause::required(format!("spec.ports[{i}].name")));
        }
        if !name.is_empty() && !names.insert(name.to_string()) {
            causes.push(Cause::duplicate(format!("spec.ports[{i}].name"), name));
        }
        let proto = p["protocol"].as_str().unwrap_or("TCP");
        if !["TCP", "UDP", "SCTP"].contains(&proto) {
            causes.push(Cause::unsupported(
                format!("spec.ports[{i}].protocol"),
                proto,
                &["SCTP", "TCP", "UDP"],
            ));
        }
        if !pairs.insert((p["port"].as_i64(), proto.to_string())) {
            causes.push(Cause::duplicate(
                format!("spec.ports[{i}]"),
                format!("{{Port:{}, Protocol:\"{proto}\"}}", p["port"]),
            ));
        }
        match &p["targetPort"] {
            Value::Number(n) if !(1..=65535).contains(&n.as_i64().unwrap_or(0)) => {
                causes.push(Cause::invalid(
                    format!("spec.ports[{i}].targetPort"),
                    n.clone(),
                    "must be between 1 and 65535, inclusive",
                ))
            }
            Value::String(t) if !is_port_name(t) => causes.push(Cause::invalid(
                format!("spec.ports[{i}].targetPort"),
                format!("\"{t}\""),
                "must contain only lowercase alphanumeric characters or '-', at most 15, with at least one letter",
            )),
            _ => {}
        }
    }
}

fn validate_pod_spec(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    let containers = spec["containers"].as_array();
    match containers {
        None => causes.push(Cause::required(format!("{path}.containers"))),
        Some(cs) if cs.is_empty() => causes.push(Cause::required(format!("{path}.containers"))),
        Some(cs) => {
            let mut names = std::collections::HashSet::new();
            for (i, c) in cs.iter().enumerate() {
                let p = format!("{path}.containers[{i}]");
                match c["name"].as_str() {
                    None | Some("") => causes.push(Cause::required(format!("{p}.name"))),
                    Some(n) => {
                        if !is_dns_label(n) {
                            causes.push(Cause::invalid(format!("{p}.name"), format!("\"{n}\""), "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'"));
                        }
                        if !names.insert(n.to_string()) {
                            causes.push(Cause {
                                reason: "FieldValueDuplicate",
                                field: format!("{p}.name"),
                                message: format!("Duplicate value: \"{n}\""),
                            });
                        }
                    }
                }
                if c["image"].as_str().is_none_or(|s| s.trim().is_empty()) {
                    causes.push(Cause::required(format!("{p}.image")));
                }
            }
        }
    }
}

/// Whether a `LabelSelector` object selects a template's labels (an empty or malformed
/// selector selects nothing).
fn selector_matches(selector: &Value, template: &Value) -> bool {
    crate::selector::selector_of(selector)
        .is_some_and(|s| s.matches(&crate::selector::labels_of(template)))
}

/// Kind-specific validation.
pub fn validate(r: &Resource, obj: &Value) -> Result<(), ApiError> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let mut causes = Vec::new();
    validate_name(r, name, &mut causes);
    validate_labels(obj, &mut causes);
    match r.kind {
        "Pod" => validate_pod_spec(&obj["spec"], "spec", &mut causes),
        "Deployment" | "ReplicaSet" => {
            if let Some(n) = obj["spec"]["replicas"].as_i64() {
                if n < 0 {
                    causes.push(Cause::invalid(
                        "spec.replicas",
                        n,
                        "must be greater than or equal to 0",
                    ));
                }
            }
            let sel = &obj["spec"]["selector"];
            if !sel.is_object()
                || (sel["matchLabels"].as_object().is_none_or(|m| m.is_empty())
                    && sel["matchExpressions"]
                        .as_array()
                        .is_none_or(|m| m.is_empty()))
            {
                causes.push(Cause::required("spec.selector"));
            } else if !selector_matches(sel, &obj["spec"]["template"]) {
                causes.push(Cause::invalid(
                    "spec.template.metadata.labels",
                    obj["spec"]["template"]["metadata"]["labels"].to_string(),
                    "`selector` does not match template `labels`",
                ));
            }
            validate_pod_spec(
                &obj["spec"]["template"]["spec"],
                "spec.template.spec",
                &mut causes,
            );
        }
        "Service" => validate_service_spec(&obj["spec"], &mut causes),
        "ConfigMap" | "Secret" => {
            for field in ["data", "binaryData", "stringData"] {
                if let Some(m) = obj[field].as_object() {
                    for k in m.keys() {
                        let ok = !k.is_empty()
                            && k.len() <= 253
                            && k.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                        if !ok {
                            causes.push(Cause::invalid(format!("{field}[{k}]"), format!("\"{k}\""), "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"));
                        }
                    }
                }
            }
        }
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(r, name, causes))
    }
}

fn set_default(obj: &mut Map<String, Value>, key: &str, v: Value) {
    if obj.get(key).is_none_or(Value::is_null) {
        obj.insert(key.to_string(), v);
    }
}

fn default_pod_spec(spec: &mut Value) {
    let Some(s) = spec.as_object_mut() else {
        return;
    };
    set_default(s, "restartPolicy", json!("Always"));
    set_default(s, "terminationGracePeriodSeconds", json!(30));
    set_default(s, "dnsPolicy", json!("ClusterFirst"));
    set_default(s, "schedulerName", json!("default-scheduler"));
    set_default(s, "securityContext", json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = s.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                let image = c["image"].as_str().unwrap_or("").to_string();
                let Some(c) = c.as_object_mut() else { continue };
                let tag = image.rsplit('/').next().unwrap_or("");
                let policy =
                    if !image.contains('@') && (!tag.contains(':') || tag.ends_with(":latest")) {
                        "Always"
                    } else {
                        "IfNotPresent"
                    };
                set_default(c, "imagePullPolicy", json!(policy));
                set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "terminationMessagePolicy", json!("File"));
                set_default(c, "resources", json!({}));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        set_default(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

/// Kubernetes' defaults for a new or replaced object.
pub fn default(r: &Resource, obj: &mut Value) {
    match r.kind {
        "Pod" => {
            default_pod_spec(&mut obj["spec"]);
            if obj["status"]["phase"].is_null() {
                obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
            }
        }
        "Deployment" | "ReplicaSet" => {
            if let Some(s) = obj["spec"].as_object_mut() {
                set_default(s, "replicas", json!(1));
                set_default(s, "revisionHistoryLimit", json!(10));
                if r.kind == "Deployment" {
                    set_default(s, "progressDeadlineSeconds", json!(600));
                    set_default(s, "strategy", json!({"type": "RollingUpdate"}));
                    if s["strategy"]["type"] == "RollingUpdate" {
                        let st = s["strategy"].as_object_mut().unwrap();
                        set_default(st, "rollingUpdate", json!({}));
                        let ru = st["rollingUpdate"].as_object_mut().unwrap();
                        set_default(ru, "maxUnavailable", json!("25%"));
                        set_default(ru, "maxSurge", json!("25%"));
                    }
                }
            }
            default_pod_spec(&mut obj["spec"]["template"]["spec"]);
        }
        "Service" => {
            if let Some(s) = obj["spec"].as_object_mut() {
                set_default(s, "type", json!("ClusterIP"));
                set_default(s, "sessionAffinity", json!("None"));
                set_default(s, "ipFamilies", json!(["IPv4"]));
                set_default(s, "ipFamilyPolicy", json!("SingleStack"));
                set_default(s, "internalTrafficPolicy", json!("Cluster"));
                if let Some(ports) = s.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        set_default(p, "protocol", json!("TCP"));
                        let port = p.get("port").cloned().unwrap_or(Value::Null);
                        set_default(p, "targetPort", port);
                    }
                }
            }
            if obj["status"].is_null() {
                obj["status"] = json!({"loadBalancer": {}});
            }
        }
        "Namespace" => {
            if obj["spec"].is_null() {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
            }
            if obj["metadata"]["deletionTimestamp"].is_null() {
                obj["status"] = json!({"phase": "Active"});
            }
        }
        "Secret" => {
            if let Some(o) = obj.as_object_mut() {
                set_default(o, "type", json!("Opaque"));
            }
            // stringData is write-only: merged into data (base64) and dropped.
            if let Some(sd) = obj.get("stringData").and_then(Value::as_object).cloned() {
                use base64::Engine;
                let data = obj["data"].as_object().cloned().unwrap_or_default();
                let mut data = data;
                for (k, v) in sd {
                    let s = v.as_str().unwrap_or("").as_bytes().to_vec();
                    data.insert(
                        k,
                        json!(base64::engine::general_purpose::STANDARD.encode(s)),
                    );
                }
                obj["data"] = Value::Object(data);
                if let Some(o) = obj.as_object_mut() {
                    o.remove("stringData");
                }
            }
        }
        _ => {}
    }
}

/// The part of an object whose change bumps `metadata.generation` (all but metadata/status).
pub fn spec_part(obj: &Value) -> Value {
    let mut o = obj.as_object().cloned().unwrap_or_default();
    for k in ["metadata", "status", "apiVersion", "kind"] {
        o.remove(k);
    }
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    #[test]
    fn unknown_fields_are_found_by_round_trip() {
        let r = find("apps", "v1", "deployments").unwrap();
        let obj = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": 1, "bogus": 1, "selector": {"matchLabels": {"a": "b"}},
                     "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i", "colour": "red"}]}}}});
        match check_types(r, &obj, FieldValidation::Strict) {
            Err(ApiError::BadRequest(m)) => {
                assert!(m.contains("unknown field \"spec.bogus\""), "{m}");
                assert!(m.contains("spec.template.spec.containers[0].colour"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        assert!(check_types(r, &obj, FieldValidation::Ignore).is_ok());
        let bad =
            json!({"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": "three"}});
        assert!(
            matches!(check_types(r, &bad, FieldValidation::Ignore), Err(ApiError::BadRequest(m)) if m.contains("spec.replicas"))
        );
    }

    #[test]
    fn validation_names_fields() {
        let r = find("apps", "v1", "deployments").unwrap();
        let obj = json!({"metadata": {"name": "Bad_Name"}, "spec": {"replicas": -1, "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "c"}}, "spec": {"containers": [{"name": "c"}]}}}});
        let Err(ApiError::Invalid { causes, .. }) = validate(r, &obj) else {
            panic!()
        };
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "metadata.name",
                "spec.replicas",
                "spec.template.metadata.labels",
                "spec.template.spec.containers[0].image"
            ]
        );
    }

    #[test]
    fn services_are_validated_like_kubernetes() {
        let r = find("", "v1", "services").unwrap();
        let fields = |spec: Value| -> Vec<String> {
            match validate(r, &json!({"metadata": {"name": "s"}, "spec": spec})) {
                Ok(()) => Vec::new(),
                Err(ApiError::Invalid { causes, .. }) => causes
                    .into_iter()
                    .map(|c| format!("{} {}", c.reason, c.field))
                    .collect(),
                Err(e) => panic!("{e:?}"),
            }
        };
        assert!(fields(
            json!({"ports": [{"name": "http", "port": 80, "targetPort": "http"},
                                          {"name": "dns", "port": 53, "protocol": "UDP"},
                                          {"name": "dns-tcp", "port": 53}]})
        )
        .is_empty());
        assert!(fields(json!({"clusterIP": "None"})).is_empty());
        assert!(fields(json!({"type": "ExternalName", "externalName": "example.org"})).is_empty());
        assert_eq!(
            fields(json!({"type": "Fancy", "ports": [
                {"name": "a", "port": 80, "protocol": "ICMP", "targetPort": 70000},
                {"name": "a", "port": 80, "protocol": "ICMP", "targetPort": "Not_A_Name"}]})),
            [
                "FieldValueNotSupported spec.type",
                "FieldValueNotSupported spec.ports[0].protocol",
                "FieldValueInvalid spec.ports[0].targetPort",
                "FieldValueDuplicate spec.ports[1].name",
                "FieldValueNotSupported spec.ports[1].protocol",
                "FieldValueDuplicate spec.ports[1]",
                "FieldValueInvalid spec.ports[1].targetPort",
            ]
        );
        assert_eq!(fields(json!({})), ["FieldValueRequired spec.ports"]);
        assert_eq!(
            fields(json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]})),
            ["FieldValueInvalid spec.clusterIPs[0]"]
        );
        assert_eq!(
            fields(json!({"type": "ExternalName"})),
            ["FieldValueRequired spec.externalName"]
        );
    }

    #[test]
    fn defaults_like_kubernetes() {
        let r = find("apps", "v1", "deployments").unwrap();
        let mut obj = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
        default(r, &mut obj);
        assert_eq!(obj["spec"]["replicas"], 1);
        assert_eq!(obj["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(
            obj["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "Always"
        );
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
    }
}
