//! Request bodies in Kubernetes' protobuf encoding, which client-go's typed clients (so
//! `kubectl create configmap|secret|namespace|deployment|service|serviceaccount` since 1.32)
//! send: the magic `k8s\0`, then a `runtime.Unknown` carrying the type and the object's own
//! message. The object is decoded into JSON with the field tables below (numbers from
//! Kubernetes' `generated.proto`), then goes through the same admission as JSON.
//!
//! Go writes non-pointer fields even when empty; an unknown field with an empty value is
//! therefore skipped, and only an unknown field with content is refused (415, naming it), so
//! the client can resend as JSON.

use base64::Engine;
use serde_json::{json, Map, Value};

/// How one field is encoded and rendered.
#[derive(Debug, Clone, Copy)]
enum K {
    /// string (omitted when empty).
    Str,
    /// int32/int64 (omitted when 0).
    Int,
    /// A pointer int (`*int32`): 0 is kept.
    IntKeep,
    /// bool (omitted when false).
    Bool,
    /// A pointer bool: false is kept.
    BoolKeep,
    /// repeated string.
    Strs,
    /// A nested message.
    Msg(&'static [F]),
    /// repeated message.
    Msgs(&'static [F]),
    /// map<string,string>.
    MapStr,
    /// map<string,bytes> (base64 in JSON).
    MapBytes,
    /// map<string,Quantity>.
    MapQty,
    /// metav1.Time.
    Time,
    /// intstr.IntOrString.
    IntStr,
}

/// A field: number, JSON name, encoding.
#[derive(Debug, Clone, Copy)]
struct F(u32, &'static str, K);

static OWNER_REF: &[F] = &[
    F(5, "apiVersion", K::Str),
    F(1, "kind", K::Str),
    F(3, "name", K::Str),
    F(4, "uid", K::Str),
    F(6, "controller", K::BoolKeep),
    F(7, "blockOwnerDeletion", K::BoolKeep),
];
static OBJECT_META: &[F] = &[
    F(1, "name", K::Str),
    F(2, "generateName", K::Str),
    F(3, "namespace", K::Str),
    F(5, "uid", K::Str),
    F(6, "resourceVersion", K::Str),
    F(7, "generation", K::Int),
    F(8, "creationTimestamp", K::Time),
    F(9, "deletionTimestamp", K::Time),
    F(10, "deletionGracePeriodSeconds", K::IntKeep),
    F(11, "labels", K::MapStr),
    F(12, "annotations", K::MapStr),
    F(13, "ownerReferences", K::Msgs(OWNER_REF)),
    F(14, "finalizers", K::Strs),
];
static SELECTOR_REQ: &[F] = &[
    F(1, "key", K::Str),
    F(2, "operator", K::Str),
    F(3, "values", K::Strs),
];
static LABEL_SELECTOR: &[F] = &[
    F(1, "matchLabels", K::MapStr),
    F(2, "matchExpressions", K::Msgs(SELECTOR_REQ)),
];
static LOCAL_REF: &[F] = &[F(1, "name", K::Str)];
static OBJECT_REF: &[F] = &[
    F(1, "kind", K::Str),
    F(2, "namespace", K::Str),
    F(3, "name", K::Str),
    F(4, "uid", K::Str),
    F(5, "apiVersion", K::Str),
    F(6, "resourceVersion", K::Str),
    F(7, "fieldPath", K::Str),
];
static CONTAINER_PORT: &[F] = &[
    F(1, "name", K::Str),
    F(2, "hostPort", K::Int),
    F(3, "containerPort", K::Int),
    F(4, "protocol", K::Str),
    F(5, "hostIP", K::Str),
];
static ENV_VAR: &[F] = &[F(1, "name", K::Str), F(2, "value", K::Str)];
static RESOURCES: &[F] = &[F(1, "limits", K::MapQty), F(2, "requests", K::MapQty)];
static VOLUME_MOUNT: &[F] = &[
    F(1, "name", K::Str),
    F(2, "readOnly", K::Bool),
    F(3, "mountPath", K::Str),
    F(4, "subPath", K::Str),
    F(5, "mountPropagation", K::Str),
    F(6, "subPathExpr", K::Str),
];
static CONTAINER: &[F] = &[
    F(1, "name", K::Str),
    F(2, "image", K::Str),
    F(3, "command", K::Strs),
    F(4, "args", K::Strs),
    F(5, "workingDir", K::Str),
    F(6, "ports", K::Msgs(CONTAINER_PORT)),
    F(7, "env", K::Msgs(ENV_VAR)),
    F(8, "resources", K::Msg(RESOURCES)),
    F(9, "volumeMounts", K::Msgs(VOLUME_MOUNT)),
    F(13, "terminationMessagePath", K::Str),
    F(14, "imagePullPolicy", K::Str),
    F(16, "stdin", K::Bool),
    F(17, "stdinOnce", K::Bool),
    F(18, "tty", K::Bool),
    F(20, "terminationMessagePolicy", K::Str),
    F(24, "restartPolicy", K::Str),
];
static POD_SPEC: &[F] = &[
    F(2, "containers", K::Msgs(CONTAINER)),
    F(3, "restartPolicy", K::Str),
    F(4, "terminationGracePeriodSeconds", K::IntKeep),
    F(5, "activeDeadlineSeconds", K::IntKeep),
    F(6, "dnsPolicy", K::Str),
    F(7, "nodeSelector", K::MapStr),
    F(8, "serviceAccountName", K::Str),
    F(9, "serviceAccount", K::Str),
    F(10, "nodeName", K::Str),
    F(11, "hostNetwork", K::Bool),
    F(12, "hostPID", K::Bool),
    F(13, "hostIPC", K::Bool),
    F(15, "imagePullSecrets", K::Msgs(LOCAL_REF)),
    F(16, "hostname", K::Str),
    F(17, "subdomain", K::Str),
    F(19, "schedulerName", K::Str),
    F(20, "initContainers", K::Msgs(CONTAINER)),
    F(21, "automountServiceAccountToken", K::BoolKeep),
    F(24, "priorityClassName", K::Str),
    F(25, "priority", K::IntKeep),
    F(29, "runtimeClassName", K::Str),
    F(30, "enableServiceLinks", K::BoolKeep),
    F(31, "preemptionPolicy", K::Str),
];
static POD_TEMPLATE: &[F] = &[
    F(1, "metadata", K::Msg(OBJECT_META)),
    F(2, "spec", K::Msg(POD_SPEC)),
];
static ROLLING_UPDATE: &[F] = &[
    F(1, "maxUnavailable", K::IntStr),
    F(2, "maxSurge", K::IntStr),
];
static DEPLOY_STRATEGY: &[F] = &[
    F(1, "type", K::Str),
    F(2, "rollingUpdate", K::Msg(ROLLING_UPDATE)),
];
static DEPLOY_SPEC: &[F] = &[
    F(1, "replicas", K::IntKeep),
    F(2, "selector", K::Msg(LABEL_SELECTOR)),
    F(3, "template", K::Msg(POD_TEMPLATE)),
    F(4, "strategy", K::Msg(DEPLOY_STRATEGY)),
    F(5, "minReadySeconds", K::Int),
    F(6, "revisionHistoryLimit", K::IntKeep),
    F(7, "paused", K::Bool),
    F(9, "progressDeadlineSeconds", K::IntKeep),
];
static DEPLOYMENT: &[F] = &[
    F(1, "metadata", K::Msg(OBJECT_META)),
    F(2, "spec", K::Msg(DEPLOY_SPEC)),
];
static POD: &[F] = &[
    F(1, "metadata", K::Msg(OBJECT_META)),
    F(2, "spec", K::Msg(POD_SPEC)),
];
static CONFIG_MAP: &[F] = &[
    F(1, "metadata", K::Msg(OBJECT_META)),
    F(2, "data", K::MapStr),
    F(3, "binaryData", K::MapBytes),
    F(4, "immutable", K::BoolKeep),
];
static SECRET: &[F] = &[
    F(1, "metadata", K::Msg(OBJECT_META)),
    F(2, "data", K::MapBytes),
    F(3, "type", K::Str),
    F(4, "stringData", K::MapStr),
    F(5, "immutable", K::BoolKeep),
];
static NAMESPACE_SPEC: &[F] = &[F(1, "finalizers", K::Strs)];
static NAMESPACE: &[F] = &[
    F(1, "metadata", K::Msg(OBJECT_META)),
    F(2, "spec", K::Msg(NAMESPACE_SPEC)),
];
static SERVICE_ACCOUNT: &[F] = &[
    F(1, "metadata", K::Msg(OBJECT_META)),
    F(2, "secrets", K::Msgs(OBJECT_REF)),
    F(3, "imagePullSecrets", K::Msgs(LOCAL_REF)),
    F(4, "automountServiceAccountToken", K::BoolKeep),
];
static SERVICE_PORT: &[F] = &[
    F(1, "name", K::Str),
    F(2, "protocol", K::Str),
    F(3, "port", K::Int),
    F(4, "targetPort", K::IntStr),
    F(5, "nodePort", K::Int),
    F(6, "appProtocol", K::Str),
];
static SERVICE_SPEC: &[F] = &[
    F(1, "ports", K::Msgs(SERVICE_PORT)),
    F(2, "selector", K::MapStr),
    F(3, "clusterIP", K::Str),
    F(4, "type", K::Str),
    F(5, "externalIPs", K::Strs),
    F(7, "sessionAffinity", K::Str),
    F(8, "loadBalancerIP", K::Str),
    F(9, "loadBalancerSourceRanges", K::Strs),
    F(10, "externalName", K::Str),
    F(11, "externalTrafficPolicy", K::Str),
    F(12, "healthCheckNodePort", K::Int),
    F(13, "publishNotReadyAddresses", K::Bool),
    F(17, "ipFamilyPolicy", K::Str),
    F(18, "clusterIPs", K::Strs),
    F(19, "ipFamilies", K::Strs),
    F(20, "allocateLoadBalancerNodePorts", K::BoolKeep),
    F(21, "loadBalancerClass", K::Str),
    F(22, "internalTrafficPolicy", K::Str),
];
static SERVICE: &[F] = &[
    F(1, "metadata", K::Msg(OBJECT_META)),
    F(2, "spec", K::Msg(SERVICE_SPEC)),
];
static PRECONDITIONS: &[F] = &[F(1, "uid", K::Str), F(2, "resourceVersion", K::Str)];
static DELETE_OPTIONS: &[F] = &[
    F(1, "gracePeriodSeconds", K::IntKeep),
    F(2, "preconditions", K::Msg(PRECONDITIONS)),
    F(3, "orphanDependents", K::BoolKeep),
    F(4, "propagationPolicy", K::Str),
    F(5, "dryRun", K::Strs),
];

fn schema(kind: &str) -> Option<&'static [F]> {
    Some(match kind {
        "ConfigMap" => CONFIG_MAP,
        "Secret" => SECRET,
        "Namespace" => NAMESPACE,
        "ServiceAccount" => SERVICE_ACCOUNT,
        "Service" => SERVICE,
        "Deployment" => DEPLOYMENT,
        "Pod" => POD,
        "DeleteOptions" => DELETE_OPTIONS,
        _ => return None,
    })
}

/// Why a protobuf body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("protobuf body: {0}")]
pub struct ProtoError(pub String);

fn err(m: impl Into<String>) -> ProtoError {
    ProtoError(m.into())
}

/// One raw field.
enum Raw<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn varint(b: &[u8], pos: &mut usize) -> Result<u64, ProtoError> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos).ok_or_else(|| err("truncated varint"))?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(err("varint too long"))
}

fn fields(b: &[u8]) -> Result<Vec<(u32, Raw<'_>)>, ProtoError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let key = varint(b, &mut pos)?;
        let (num, wire) = ((key >> 3) as u32, key & 7);
        let raw = match wire {
            0 => Raw::Varint(varint(b, &mut pos)?),
            1 => {
                pos += 8;
                Raw::Fixed
            }
            2 => {
                let len = varint(b, &mut pos)? as usize;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= b.len())
                    .ok_or_else(|| err("truncated field"))?;
                let s = &b[pos..end];
                pos = end;
                Raw::Bytes(s)
            }
            5 => {
                pos += 4;
                Raw::Fixed
            }
            w => return Err(err(format!("unsupported wire type {w}"))),
        };
        if pos > b.len() {
            return Err(err("truncated field"));
        }
        out.push((num, raw));
    }
    Ok(out)
}

fn string(b: &[u8]) -> Result<String, ProtoError> {
    String::from_utf8(b.to_vec()).map_err(|_| err("a string field is not UTF-8"))
}

fn map_entry(b: &[u8]) -> Result<(String, &[u8]), ProtoError> {
    let mut key = String::new();
    let mut value: &[u8] = &[];
    for (n, r) in fields(b)? {
        match (n, r) {
            (1, Raw::Bytes(k)) => key = string(k)?,
            (2, Raw::Bytes(v)) => value = v,
            _ => return Err(err("malformed map entry")),
        }
    }
    Ok((key, value))
}

fn int_or_string(b: &[u8]) -> Result<Value, ProtoError> {
    let (mut ty, mut i, mut s) = (0u64, 0i64, String::new());
    for (n, r) in fields(b)? {
        match (n, r) {
            (1, Raw::Varint(v)) => ty = v,
            (2, Raw::Varint(v)) => i = v as i64 as i32 as i64,
            (3, Raw::Bytes(v)) => s = string(v)?,
            _ => return Err(err("malformed IntOrString")),
        }
    }
    Ok(if ty == 1 { json!(s) } else { json!(i) })
}

fn time(b: &[u8]) -> Result<Option<Value>, ProtoError> {
    let mut secs = 0i64;
    for (n, r) in fields(b)? {
        if let (1, Raw::Varint(v)) = (n, r) {
            secs = v as i64;
        }
    }
    if secs == 0 {
        return Ok(None);
    }
    let t = jiff::Timestamp::from_second(secs).map_err(|e| err(e.to_string()))?;
    Ok(Some(json!(t.to_string())))
}

/// Whether a field carries nothing: a zero, an empty string, or a message whose fields all
/// carry nothing (what Go writes for an unset non-pointer struct such as `status`).
fn is_empty(r: &Raw<'_>, depth: usize) -> bool {
    match r {
        Raw::Varint(v) => *v == 0,
        Raw::Bytes(b) => {
            b.is_empty()
                || (depth < MAX_DEPTH
                    && fields(b).is_ok_and(|fs| fs.iter().all(|(_, f)| is_empty(f, depth + 1))))
        }
        Raw::Fixed => false,
    }
}

/// How deep messages may nest (Kubernetes objects need about 10).
const MAX_DEPTH: usize = 32;

fn message(b: &[u8], schema: &[F], path: &str) -> Result<Map<String, Value>, ProtoError> {
    if path.matches('.').count() > MAX_DEPTH {
        return Err(err("messages nested too deeply"));
    }
    let mut out = Map::new();
    for (num, raw) in fields(b)? {
        let Some(F(_, name, kind)) = schema.iter().find(|f| f.0 == num) else {
            if is_empty(&raw, 0) {
                continue;
            }
            let at = if path.is_empty() { "the object" } else { path };
            return Err(err(format!(
                "field {num} of {at} is not supported; send the object as JSON"
            )));
        };
        let p = if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        };
        let bad = || err(format!("{p}: wrong wire type"));
        match (kind, raw) {
            (K::Str, Raw::Bytes(s)) => {
                if !s.is_empty() {
                    out.insert(name.to_string(), json!(string(s)?));
                }
            }
            (K::Int | K::IntKeep, Raw::Varint(v)) => {
                let v = v as i64;
                if v != 0 || matches!(kind, K::IntKeep) {
                    out.insert(name.to_string(), json!(v));
                }
            }
            (K::Bool | K::BoolKeep, Raw::Varint(v)) => {
                if v != 0 || matches!(kind, K::BoolKeep) {
                    out.insert(name.to_string(), json!(v != 0));
                }
            }
            (K::Strs, Raw::Bytes(s)) => {
                let list = out.entry(name.to_string()).or_insert_with(|| json!([]));
                list.as_array_mut().expect("array").push(json!(string(s)?));
            }
            (K::Msg(sub), Raw::Bytes(s)) => {
                let m = message(s, sub, &p)?;
                if !m.is_empty() || !s.is_empty() {
                    out.insert(name.to_string(), Value::Object(m));
                }
            }
            (K::Msgs(sub), Raw::Bytes(s)) => {
                let m = message(s, sub, &p)?;
                let list = out.entry(name.to_string()).or_insert_with(|| json!([]));
                list.as_array_mut().expect("array").push(Value::Object(m));
            }
            (K::MapStr | K::MapBytes | K::MapQty, Raw::Bytes(s)) => {
                let (k, v) = map_entry(s)?;
                let value = match kind {
                    K::MapStr => json!(string(v)?),
                    K::MapBytes => json!(base64::engine::general_purpose::STANDARD.encode(v)),
                    _ => {
                        // Quantity { string string = 1 }
                        let mut q = String::new();
                        for (n, r) in fields(v)? {
                            if let (1, Raw::Bytes(b)) = (n, r) {
                                q = string(b)?;
                            }
                        }
                        json!(q)
                    }
                };
                let m = out.entry(name.to_string()).or_insert_with(|| json!({}));
                m.as_object_mut().expect("object").insert(k, value);
            }
            (K::Time, Raw::Bytes(s)) => {
                if let Some(t) = time(s)? {
                    out.insert(name.to_string(), t);
                }
            }
            (K::IntStr, Raw::Bytes(s)) => {
                out.insert(name.to_string(), int_or_string(s)?);
            }
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

/// The magic that starts a protobuf-encoded Kubernetes object.
pub const MAGIC: &[u8] = b"k8s\0";

/// Decodes a protobuf request body into the object's JSON form.
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| err("missing the k8s magic prefix"))?;
    let (mut api_version, mut kind, mut raw): (String, String, &[u8]) =
        (String::new(), String::new(), &[]);
    for (n, r) in fields(rest)? {
        match (n, r) {
            (1, Raw::Bytes(tm)) => {
                for (m, v) in fields(tm)? {
                    match (m, v) {
                        (1, Raw::Bytes(s)) => api_version = string(s)?,
                        (2, Raw::Bytes(s)) => kind = string(s)?,
                        _ => {}
                    }
                }
            }
            (2, Raw::Bytes(r)) => raw = r,
            (3 | 4, Raw::Bytes(s)) if !s.is_empty() => {
                return Err(err("encoded or typed raw content is not supported"));
            }
            _ => {}
        }
    }
    let schema = schema(&kind).ok_or_else(|| {
        err(format!(
            "{kind} objects in protobuf are not supported; send JSON"
        ))
    })?;
    let mut obj = message(raw, schema, "")?;
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32, wire: u8) -> Vec<u8> {
        enc_varint(((n as u64) << 3) | wire as u64)
    }
    fn enc_varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }
    fn bytes(n: u32, b: &[u8]) -> Vec<u8> {
        [key(n, 2), enc_varint(b.len() as u64), b.to_vec()].concat()
    }
    fn int(n: u32, v: u64) -> Vec<u8> {
        [key(n, 0), enc_varint(v)].concat()
    }
    fn entry(n: u32, k: &str, v: &[u8]) -> Vec<u8> {
        bytes(n, &[bytes(1, k.as_bytes()), bytes(2, v)].concat())
    }

    fn envelope(api: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let tm = [bytes(1, api.as_bytes()), bytes(2, kind.as_bytes())].concat();
        [
            MAGIC.to_vec(),
            bytes(1, &tm),
            bytes(2, raw),
            bytes(3, b""),
            bytes(4, b""),
        ]
        .concat()
    }

    #[test]
    fn a_config_map_as_kubectl_sends_it() {
        // metadata{name, empty generateName/namespace as Go writes them, an empty time},
        // data{a: b}.
        let meta = [
            bytes(1, b"x"),
            bytes(2, b""),
            bytes(3, b""),
            bytes(8, b""),
            int(7, 0),
        ]
        .concat();
        let raw = [
            bytes(1, &meta),
            entry(2, "a", b"b"),
            entry(3, "bin", &[0, 1]),
        ]
        .concat();
        let v = decode(&envelope("v1", "ConfigMap", &raw)).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"},
                   "data": {"a": "b"}, "binaryData": {"bin": "AAE="}})
        );
    }

    #[test]
    fn deployments_keep_pointer_zeros_and_int_or_strings() {
        let ru = [
            bytes(1, &[int(1, 1), bytes(3, b"25%")].concat()),
            bytes(2, &[int(1, 0), int(2, 2)].concat()),
        ]
        .concat();
        let spec = [
            int(1, 0),
            bytes(4, &[bytes(1, b"RollingUpdate"), bytes(2, &ru)].concat()),
            int(7, 0),
        ]
        .concat();
        let raw = [bytes(1, &bytes(1, b"d")), bytes(2, &spec)].concat();
        let v = decode(&envelope("apps/v1", "Deployment", &raw)).unwrap();
        assert_eq!(v["spec"]["replicas"], 0, "a pointer zero is kept");
        assert!(
            v["spec"].get("paused").is_none(),
            "a value false is omitted"
        );
        assert_eq!(
            v["spec"]["strategy"]["rollingUpdate"],
            json!({"maxUnavailable": "25%", "maxSurge": 2})
        );
    }

    #[test]
    fn unknown_content_and_junk_are_refused() {
        let raw = [bytes(1, &bytes(1, b"x")), bytes(99, b"something")].concat();
        let e = decode(&envelope("v1", "ConfigMap", &raw)).unwrap_err();
        assert!(e.0.contains("field 99"), "{e}");
        // An unknown field that is empty is what Go writes for unset values: skipped, also
        // when it is a struct of empty fields.
        let raw = [
            bytes(1, &bytes(1, b"x")),
            bytes(99, b""),
            bytes(98, &bytes(1, b"")),
        ]
        .concat();
        assert!(decode(&envelope("v1", "ConfigMap", &raw)).is_ok());
        assert!(decode(b"not protobuf").is_err());
        assert!(decode(&[MAGIC, &[0x0a, 0xff]].concat()).is_err());
        assert!(decode(&envelope("v1", "Node", b"")).is_err());
        // Deep nesting is refused, not recursed into without end.
        let mut deep = bytes(1, b"x");
        for _ in 0..100_000 {
            deep = bytes(99, &deep);
        }
        assert!(decode(&envelope("v1", "ConfigMap", &deep)).is_err());
    }
}
