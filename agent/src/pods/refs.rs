//! The ConfigMaps and Secrets a pod references (volumes, env, `imagePullSecrets`), fetched (as the node, which the master lets
//! read exactly these) before each sync, decoded to `key → bytes`.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::Api;

/// A ConfigMap's or Secret's data.
pub type Data = BTreeMap<String, Vec<u8>>;

/// What the pod's references resolved to: `None` for one that does not exist.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Refs {
    /// ConfigMaps by name.
    pub config_maps: BTreeMap<String, Option<Data>>,
    /// Secrets by name.
    pub secrets: BTreeMap<String, Option<Data>>,
}

/// The names of the ConfigMaps and Secrets `pod` references.
pub fn referenced(pod: &Pod) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut cms = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    let Some(spec) = &pod.spec else {
        return (cms, secrets);
    };
    for v in spec.volumes.iter().flatten() {
        if let Some(c) = &v.config_map {
            cms.insert(c.name.clone());
        }
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.insert(s);
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &src.config_map {
                cms.insert(c.name.clone());
            }
            if let Some(s) = &src.secret {
                secrets.insert(s.name.clone());
            }
        }
    }
    secrets.extend(super::pull_secrets::names(pod));
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
    {
        for e in c.env.iter().flatten() {
            if let Some(from) = &e.value_from {
                if let Some(r) = &from.config_map_key_ref {
                    cms.insert(r.name.clone());
                }
                if let Some(r) = &from.secret_key_ref {
                    secrets.insert(r.name.clone());
                }
            }
        }
        for e in c.env_from.iter().flatten() {
            if let Some(r) = &e.config_map_ref {
                cms.insert(r.name.clone());
            }
            if let Some(r) = &e.secret_ref {
                secrets.insert(r.name.clone());
            }
        }
    }
    (cms, secrets)
}

fn config_map_data(cm: ConfigMap) -> Data {
    let mut out: Data = cm
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    for (k, v) in cm.binary_data.unwrap_or_default() {
        out.insert(k, v.0);
    }
    out
}

fn secret_data(s: Secret) -> Data {
    let mut out: Data = s
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    for (k, v) in s.string_data.unwrap_or_default() {
        out.insert(k, v.into_bytes());
    }
    out
}

/// Fetches every ConfigMap and Secret `pod` references.
pub async fn fetch(client: &kube::Client, pod: &Pod) -> Result<Refs, kube::Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let (cms, secrets) = referenced(pod);
    let mut refs = Refs::default();
    let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for name in cms {
        let got = cm_api.get_opt(&name).await?.map(config_map_data);
        refs.config_maps.insert(name, got);
    }
    let secret_api: Api<Secret> = Api::namespaced(client.clone(), ns);
    for name in secrets {
        let got = secret_api.get_opt(&name).await?.map(secret_data);
        refs.secrets.insert(name, got);
    }
    Ok(refs)
}

/// A Secret value as text for the environment (invalid UTF-8 replaced).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_come_from_volumes_env_and_env_from() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "imagePullSecrets": [{"name": "s-pull"}],
                "volumes": [{"name": "a", "configMap": {"name": "cm-vol"}},
                            {"name": "b", "secret": {"secretName": "s-vol"}},
                            {"name": "c", "projected": {"sources": [{"secret": {"name": "s-proj"}}]}}],
                "initContainers": [{"name": "i", "envFrom": [{"configMapRef": {"name": "cm-from"}}]}],
                "containers": [{"name": "c", "env": [
                    {"name": "X", "valueFrom": {"secretKeyRef": {"name": "s-env", "key": "k"}}}]}]
            }
        }))
        .unwrap();
        let (cms, secrets) = referenced(&pod);
        assert_eq!(cms.into_iter().collect::<Vec<_>>(), ["cm-from", "cm-vol"]);
        assert_eq!(
            secrets.into_iter().collect::<Vec<_>>(),
            ["s-env", "s-proj", "s-pull", "s-vol"]
        );
    }
}
