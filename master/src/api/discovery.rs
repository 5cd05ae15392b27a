//! Discovery (`/api`, `/apis`, `/api/v1`, `/apis/<group>/<version>`), `/version`, and the
//! OpenAPI v3 documents `kubectl` reads to decide on server-side field validation: one per
//! group/version, with a PATCH operation per kind that carries its group-version-kind and the
//! `fieldValidation` parameter (strategic merge patches are then computed from kubectl's own
//! compiled-in types).

use serde_json::{json, Value};

use crate::resources::{self, Resource, RESOURCES, VERBS};

/// The Kubernetes version podlet's API speaks.
pub const KUBE_VERSION: (&str, &str) = ("1", "36");

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": KUBE_VERSION.0, "minor": KUBE_VERSION.1,
        "gitVersion": format!("v{}.{}.0+podlet", KUBE_VERSION.0, KUBE_VERSION.1),
        "gitCommit": "podlet", "gitTreeState": "clean", "buildDate": "2026-11-28T00:00:00Z",
        "goVersion": "n/a", "compiler": "rustc", "platform": "linux/amd64",
    })
}

/// `/api`.
pub fn core_versions(server: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
           "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}]})
}

/// `/apis`.
pub fn groups() -> Value {
    let groups: Vec<Value> = resources::groups()
        .into_iter()
        .map(|(g, v)| {
            let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/api/v1` or `/apis/<group>/<version>`; None if no such group/version.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mine: Vec<&Resource> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if mine.is_empty() {
        return None;
    }
    let mut list = Vec::new();
    for r in mine {
        list.push(json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind, "verbs": VERBS, "shortNames": r.short_names, "categories": r.categories,
        }));
        for sub in r.subresources {
            let (kind, verbs, group_v): (&str, Vec<&str>, Option<(&str, &str)>) = match *sub {
                "scale" => (
                    "Scale",
                    vec!["get", "patch", "update"],
                    Some(("autoscaling", "v1")),
                ),
                "binding" => ("Binding", vec!["create"], None),
                _ => (r.kind, vec!["get", "patch", "update"], None),
            };
            let mut entry = json!({"name": format!("{}/{sub}", r.plural), "singularName": "",
                                   "namespaced": r.namespaced, "kind": kind, "verbs": verbs});
            if let Some((g, v)) = group_v {
                entry["group"] = json!(g);
                entry["version"] = json!(v);
            }
            list.push(entry);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
    )
}

/// `/openapi/v3`: where each group/version's document is.
pub fn openapi_root() -> Value {
    let mut paths = serde_json::Map::new();
    paths.insert(
        "api/v1".into(),
        json!({"serverRelativeURL": "/openapi/v3/api/v1"}),
    );
    for (g, v) in resources::groups() {
        paths.insert(
            format!("apis/{g}/{v}"),
            json!({"serverRelativeURL": format!("/openapi/v3/apis/{g}/{v}")}),
        );
    }
    json!({"paths": paths})
}

fn param(name: &str, ty: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": ty}, "uniqueItems": true})
}

/// The OpenAPI v3 document of one group/version (`api/v1`, `apis/apps/v1`).
pub fn openapi_doc(path: &str) -> Option<Value> {
    let (group, version) = match path.trim_matches('/').split('/').collect::<Vec<_>>()[..] {
        ["api", v] => ("", v),
        ["apis", g, v] => (g, v),
        _ => return None,
    };
    let mine: Vec<&Resource> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if mine.is_empty() {
        return None;
    }
    let base = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let mut paths = serde_json::Map::new();
    for r in mine {
        let item = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{base}/{}/{{name}}", r.plural)
        };
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let params = vec![
            param("dryRun", "string"),
            param("fieldManager", "string"),
            param("fieldValidation", "string"),
            param("force", "boolean"),
        ];
        paths.insert(
            item,
            json!({
                "get": {"operationId": format!("read{}", r.kind), "x-kubernetes-action": "get",
                        "x-kubernetes-group-version-kind": gvk, "responses": {"200": {"description": "OK"}}},
                "put": {"operationId": format!("replace{}", r.kind), "x-kubernetes-action": "put",
                        "x-kubernetes-group-version-kind": gvk, "parameters": params.clone(),
                        "responses": {"200": {"description": "OK"}}},
                "patch": {"operationId": format!("patch{}", r.kind), "x-kubernetes-action": "patch",
                          "x-kubernetes-group-version-kind": gvk, "parameters": params,
                          "responses": {"200": {"description": "OK"}}},
            }),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (podlet)", "version": format!("v{}.{}.0", KUBE_VERSION.0, KUBE_VERSION.1)},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_lists_resources_and_subresources() {
        let v1 = resource_list("", "v1").unwrap();
        let names: Vec<&str> = v1["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"pods")
                && names.contains(&"pods/status")
                && names.contains(&"pods/binding")
        );
        let apps = resource_list("apps", "v1").unwrap();
        let scale = apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .unwrap();
        assert_eq!(scale["kind"], "Scale");
        assert!(resource_list("nope", "v1").is_none());
        let doc = openapi_doc("apis/apps/v1").unwrap();
        let p = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(p["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(p["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == "fieldValidation"));
    }
}
