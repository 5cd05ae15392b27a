//! `Table` responses (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), so `kubectl get`
//! prints the columns kube-apiserver prints; `-o wide` shows the priority-1 columns.

use serde_json::{json, Value};

/// Kubernetes' short human duration (`HumanDuration`).
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if d < 365 * 8 {
        format!("{}y{}d", d / 365, d % 365)
    } else {
        format!("{}y", d / 365)
    }
}

fn age(obj: &Value) -> String {
    let Some(ts) = obj["metadata"]["creationTimestamp"].as_str() else {
        return "<unknown>".into();
    };
    match ts.parse::<jiff::Timestamp>() {
        Ok(t) => human_duration(jiff::Timestamp::now().as_second() - t.as_second()),
        Err(_) => "<unknown>".into(),
    }
}

fn col(name: &str, ty: &str, priority: i64) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": "", "priority": priority})
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn or_none(v: String) -> String {
    if v.is_empty() {
        "<none>".into()
    } else {
        v
    }
}

fn selector_text(sel: &Value) -> String {
    let mut parts: Vec<String> = sel
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", s(v))).collect())
        .unwrap_or_default();
    parts.sort();
    or_none(parts.join(","))
}

fn pod_row(p: &Value) -> Vec<Value> {
    let containers = p["spec"]["containers"]
        .as_array()
        .map(|c| c.len())
        .unwrap_or(0);
    let statuses = p["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ready = statuses.iter().filter(|c| c["ready"] == true).count();
    let restarts: i64 = statuses
        .iter()
        .filter_map(|c| c["restartCount"].as_i64())
        .sum();
    let mut status = s(&p["status"]["phase"]);
    if let Some(r) = p["status"]["reason"].as_str() {
        status = r.to_string();
    }
    for c in &statuses {
        if let Some(r) = c["state"]["waiting"]["reason"].as_str() {
            status = r.to_string();
        } else if let Some(r) = c["state"]["terminated"]["reason"].as_str() {
            status = r.to_string();
        }
    }
    if !p["metadata"]["deletionTimestamp"].is_null() {
        status = "Terminating".into();
    }
    vec![
        json!(p["metadata"]["name"]),
        json!(format!("{ready}/{containers}")),
        json!(status),
        json!(restarts.to_string()),
        json!(age(p)),
        json!(or_none(s(&p["status"]["podIP"]))),
        json!(or_none(s(&p["spec"]["nodeName"]))),
        json!(or_none(s(&p["status"]["nominatedNodeName"]))),
        json!("<none>"),
    ]
}

fn ports_text(svc: &Value) -> String {
    let ports: Vec<String> = svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64() {
                Some(n) => format!("{}:{n}/{proto}", p["port"]),
                None => format!("{}/{proto}", p["port"]),
            }
        })
        .collect();
    or_none(ports.join(","))
}

fn containers_and_images(spec: &Value) -> (String, String) {
    let cs = spec["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    (
        cs.iter()
            .map(|c| s(&c["name"]))
            .collect::<Vec<_>>()
            .join(","),
        cs.iter()
            .map(|c| s(&c["image"]))
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// Columns and one row per object, for `kind`.
pub fn columns_and_rows(kind: &str, items: &[Value]) -> (Vec<Value>, Vec<Vec<Value>>) {
    match kind {
        "Pod" => (
            vec![
                col("Name", "string", 0),
                col("Ready", "string", 0),
                col("Status", "string", 0),
                col("Restarts", "string", 0),
                col("Age", "string", 0),
                col("IP", "string", 1),
                col("Node", "string", 1),
                col("Nominated Node", "string", 1),
                col("Readiness Gates", "string", 1),
            ],
            items.iter().map(pod_row).collect(),
        ),
        "Deployment" => (
            vec![
                col("Name", "string", 0),
                col("Ready", "string", 0),
                col("Up-to-date", "integer", 0),
                col("Available", "integer", 0),
                col("Age", "string", 0),
                col("Containers", "string", 1),
                col("Images", "string", 1),
                col("Selector", "string", 1),
            ],
            items
                .iter()
                .map(|d| {
                    let (c, i) = containers_and_images(&d["spec"]);
                    vec![
                        json!(d["metadata"]["name"]),
                        json!(format!(
                            "{}/{}",
                            d["status"]["readyReplicas"].as_i64().unwrap_or(0),
                            d["spec"]["replicas"].as_i64().unwrap_or(0)
                        )),
                        json!(d["status"]["updatedReplicas"].as_i64().unwrap_or(0)),
                        json!(d["status"]["availableReplicas"].as_i64().unwrap_or(0)),
                        json!(age(d)),
                        json!(c),
                        json!(i),
                        json!(selector_text(&d["spec"]["selector"]["matchLabels"])),
                    ]
                })
                .collect(),
        ),
        "ReplicaSet" => (
            vec![
                col("Name", "string", 0),
                col("Desired", "integer", 0),
                col("Current", "integer", 0),
                col("Ready", "integer", 0),
                col("Age", "string", 0),
                col("Containers", "string", 1),
                col("Images", "string", 1),
                col("Selector", "string", 1),
            ],
            items
                .iter()
                .map(|d| {
                    let (c, i) = containers_and_images(&d["spec"]);
                    vec![
                        json!(d["metadata"]["name"]),
                        json!(d["spec"]["replicas"].as_i64().unwrap_or(0)),
                        json!(d["status"]["replicas"].as_i64().unwrap_or(0)),
                        json!(d["status"]["readyReplicas"].as_i64().unwrap_or(0)),
                        json!(age(d)),
                        json!(c),
                        json!(i),
                        json!(selector_text(&d["spec"]["selector"]["matchLabels"])),
                    ]
                })
                .collect(),
        ),
        "Service" => (
            vec![
                col("Name", "string", 0),
                col("Type", "string", 0),
                col("Cluster-IP", "string", 0),
                col("External-IP", "string", 0),
                col("Port(s)", "string", 0),
                col("Age", "string", 0),
                col("Selector", "string", 1),
            ],
            items
                .iter()
                .map(|v| {
                    let ext: Vec<String> = v["spec"]["externalIPs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(s)
                        .collect();
                    vec![
                        json!(v["metadata"]["name"]),
                        json!(s(&v["spec"]["type"])),
                        json!(or_none(s(&v["spec"]["clusterIP"]))),
                        json!(or_none(ext.join(","))),
                        json!(ports_text(v)),
                        json!(age(v)),
                        json!(selector_text(&v["spec"]["selector"])),
                    ]
                })
                .collect(),
        ),
        "ConfigMap" => (
            vec![
                col("Name", "string", 0),
                col("Data", "integer", 0),
                col("Age", "string", 0),
            ],
            items
                .iter()
                .map(|v| {
                    let n = v["data"].as_object().map(|m| m.len()).unwrap_or(0)
                        + v["binaryData"].as_object().map(|m| m.len()).unwrap_or(0);
                    vec![json!(v["metadata"]["name"]), json!(n), json!(age(v))]
                })
                .collect(),
        ),
        "Secret" => (
            vec![
                col("Name", "string", 0),
                col("Type", "string", 0),
                col("Data", "integer", 0),
                col("Age", "string", 0),
            ],
            items
                .iter()
                .map(|v| {
                    vec![
                        json!(v["metadata"]["name"]),
                        json!(s(&v["type"])),
                        json!(v["data"].as_object().map(|m| m.len()).unwrap_or(0)),
                        json!(age(v)),
                    ]
                })
                .collect(),
        ),
        "Namespace" => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Age", "string", 0),
            ],
            items
                .iter()
                .map(|v| {
                    vec![
                        json!(v["metadata"]["name"]),
                        json!(s(&v["status"]["phase"])),
                        json!(age(v)),
                    ]
                })
                .collect(),
        ),
        "Node" => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Roles", "string", 0),
                col("Age", "string", 0),
                col("Version", "string", 0),
                col("Internal-IP", "string", 1),
            ],
            items
                .iter()
                .map(|v| {
                    let ready = v["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|c| c["type"] == "Ready")
                        .map(|c| match c["status"].as_str() {
                            Some("True") => "Ready",
                            _ => "NotReady",
                        })
                        .unwrap_or("Unknown");
                    let status = if v["spec"]["unschedulable"] == true {
                        format!("{ready},SchedulingDisabled")
                    } else {
                        ready.to_string()
                    };
                    let ip = v["status"]["addresses"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|a| a["type"] == "InternalIP")
                        .map(|a| s(&a["address"]))
                        .unwrap_or_default();
                    vec![
                        json!(v["metadata"]["name"]),
                        json!(status),
                        json!("<none>"),
                        json!(age(v)),
                        json!(s(&v["status"]["nodeInfo"]["kubeletVersion"])),
                        json!(or_none(ip)),
                    ]
                })
                .collect(),
        ),
        _ => (
            vec![col("Name", "string", 0), col("Age", "string", 0)],
            items
                .iter()
                .map(|v| vec![json!(v["metadata"]["name"]), json!(age(v))])
                .collect(),
        ),
    }
}

/// `PartialObjectMetadata` of an object (what a row carries by default).
fn partial(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

/// A `Table` of `items` (`include`: `Metadata` (default), `Object` or `None`).
pub fn table(
    kind: &str,
    items: &[Value],
    resource_version: &str,
    cont: Option<&str>,
    include: &str,
    with_columns: bool,
) -> Value {
    let (cols, rows) = columns_and_rows(kind, items);
    let rows: Vec<Value> = rows
        .into_iter()
        .zip(items)
        .map(|(cells, obj)| {
            let object = match include {
                "Object" => obj.clone(),
                "None" => Value::Null,
                _ => partial(obj),
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    let mut meta = json!({"resourceVersion": resource_version});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
           "columnDefinitions": if with_columns { Value::Array(cols) } else { json!([]) }, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(1800), "30m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400), "3d");
    }

    #[test]
    fn pod_rows_have_every_column() {
        let p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
                       "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [{"ready": true, "restartCount": 2}, {"ready": false, "restartCount": 1}]}});
        let t = table("Pod", &[p], "7", None, "Metadata", true);
        let cells = &t["rows"][0]["cells"];
        assert_eq!(
            cells.as_array().unwrap().len(),
            t["columnDefinitions"].as_array().unwrap().len()
        );
        assert_eq!(cells[1], "1/2");
        assert_eq!(cells[3], "3");
        assert_eq!(cells[5], "10.0.0.5");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    }
}
