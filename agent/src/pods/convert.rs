//! A Kubernetes container, in its pod, as the engine's [`ContainerConfig`]: command and args,
//! the environment (values, `valueFrom`, `envFrom`, `$(VAR)` expansion), volume mounts,
//! resources with kubelet's mapping, and the security context. Whatever cannot be honoured
//! is an error naming the field (reported as `CreateContainerConfigError`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use podlet_runtime::engine::{BindMount, ContainerConfig, Resources, Seccomp};

use super::refs::{text, Refs};

/// The value of a downward-API `fieldPath` for `pod`.
pub fn field_value(pod: &Pod, path: &str, pod_ip: &str, host_ip: &str) -> Option<String> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    let from_map =
        |map: &Option<BTreeMap<String, String>>, prefix: &str| -> Option<Option<String>> {
            let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
            Some(map.as_ref().and_then(|l| l.get(key).cloned()))
        };
    if let Some(v) = from_map(&m.labels, "metadata.labels['") {
        return Some(v.unwrap_or_default());
    }
    if let Some(v) = from_map(&m.annotations, "metadata.annotations['") {
        return Some(v.unwrap_or_default());
    }
    let all = |map: &Option<BTreeMap<String, String>>| {
        map.iter()
            .flatten()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Some(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_else(|| "default".into()),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => all(&m.labels),
        "metadata.annotations" => all(&m.annotations),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        _ => return None,
    })
}

/// A quantity (`500m`, `128Mi`, `1`) as a number.
pub fn quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let (num, mult) = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ]
    .iter()
    .find_map(|(s, m)| q.strip_suffix(s).map(|n| (n, *m)))
    .unwrap_or((q, 1.0));
    let n: f64 = num.parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some(n * mult)
}

fn resource_value(
    res: Option<&ResourceRequirements>,
    field: &str,
    divisor: Option<&str>,
) -> Option<String> {
    let (set, name) = field.split_once('.')?;
    let map = match set {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => return None,
    };
    let value = map
        .and_then(|m| m.get(name))
        .and_then(|q| quantity(&q.0))
        .unwrap_or(0.0);
    let div = divisor
        .and_then(quantity)
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    Some(((value / div).ceil() as i64).to_string())
}

/// Expands `$(NAME)` from `vars` as Kubernetes does (`$$` is a literal `$`; unknown names stay
/// as written).
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) if vars.contains_key(&body[..end]) => {
                    out.push_str(&vars[&body[..end]]);
                    rest = &body[end + 1..];
                }
                _ => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The value of `key` in the ConfigMap or Secret (`kind`) `name`; `None` when it or the key
/// is missing and the reference is optional.
fn key_ref(
    kind: &str,
    name: &str,
    key: &str,
    found: Option<&Option<super::refs::Data>>,
    optional: Option<bool>,
) -> Result<Option<String>, String> {
    let optional = optional == Some(true);
    match found {
        Some(Some(d)) => match d.get(key) {
            Some(v) => Ok(Some(text(v))),
            None if optional => Ok(None),
            None => Err(format!("couldn't find key {key} in {kind} {name}")),
        },
        _ if optional => Ok(None),
        _ => Err(format!("{} {name:?} not found", kind.to_ascii_lowercase())),
    }
}

/// The container's environment, in Kubernetes' order (`envFrom` first, then `env`); the
/// Service variables `services` fill in what neither sets and are visible to `$(VAR)`.
pub fn environment(
    pod: &Pod,
    c: &Container,
    refs: &Refs,
    services: &[(String, String)],
    pod_ip: &str,
    host_ip: &str,
) -> Result<Vec<(String, String)>, String> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut set = |k: String, v: String, vars: &mut BTreeMap<String, String>| {
        if !vars.contains_key(&k) {
            order.push(k.clone());
        }
        vars.insert(k, v);
    };
    for (k, v) in services {
        set(k.clone(), v.clone(), &mut vars);
    }
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (data, kind, name, optional) = if let Some(r) = &from.config_map_ref {
            (
                refs.config_maps.get(&r.name),
                "configmap",
                &r.name,
                r.optional == Some(true),
            )
        } else if let Some(r) = &from.secret_ref {
            (
                refs.secrets.get(&r.name),
                "secret",
                &r.name,
                r.optional == Some(true),
            )
        } else {
            continue;
        };
        match data {
            Some(Some(d)) => {
                for (k, v) in d {
                    set(format!("{prefix}{k}"), text(v), &mut vars);
                }
            }
            _ if optional => {}
            _ => return Err(format!("{kind} {name:?} not found")),
        }
    }
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (_, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    field_value(pod, &f.field_path, pod_ip, host_ip).ok_or_else(|| {
                        format!("env {:?}: unsupported fieldPath {:?}", e.name, f.field_path)
                    })?
                } else if let Some(r) = &from.resource_field_ref {
                    let target = match &r.container_name {
                        Some(n) => pod
                            .spec
                            .iter()
                            .flat_map(|s| s.containers.iter())
                            .find(|x| &x.name == n)
                            .ok_or_else(|| format!("env {:?}: no container {n:?}", e.name))?,
                        None => c,
                    };
                    resource_value(
                        target.resources.as_ref(),
                        &r.resource,
                        r.divisor.as_ref().map(|d| d.0.as_str()),
                    )
                    .ok_or_else(|| {
                        format!("env {:?}: unsupported resource {:?}", e.name, r.resource)
                    })?
                } else if let Some(r) = &from.config_map_key_ref {
                    let found = refs.config_maps.get(&r.name);
                    match key_ref("ConfigMap", &r.name, &r.key, found, r.optional)? {
                        Some(v) => v,
                        None => continue,
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    let found = refs.secrets.get(&r.name);
                    match key_ref("Secret", &r.name, &r.key, found, r.optional)? {
                        Some(v) => v,
                        None => continue,
                    }
                } else {
                    return Err(format!("env {:?}: empty valueFrom", e.name));
                }
            }
            (Some(v), None) => expand(v, &vars),
            (None, None) => String::new(),
        };
        set(e.name.clone(), value, &mut vars);
    }
    Ok(order
        .into_iter()
        .map(|k| {
            let v = vars[&k].clone();
            (k, v)
        })
        .collect())
}

/// The container's seccomp filter from `seccompProfile` (the container's, else the pod's):
/// `RuntimeDefault`, `Unconfined`, or `Localhost` — an OCI seccomp JSON file below
/// `profiles_dir` (kubelet's `<root>/seccomp`; the engine checks its fields). Unset: `RuntimeDefault` when the node's
/// `--seccomp-default` says so, else `Unconfined`. Privileged containers are unconfined.
pub fn seccomp(
    pod: &Pod,
    c: &Container,
    node_default: bool,
    profiles_dir: &std::path::Path,
) -> Result<Seccomp, String> {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = c.security_context.as_ref();
    if sc.and_then(|s| s.privileged) == Some(true) {
        return Ok(Seccomp::Unconfined);
    }
    let profile = sc
        .and_then(|s| s.seccomp_profile.as_ref())
        .or(pod_sc.and_then(|s| s.seccomp_profile.as_ref()));
    let Some(p) = profile else {
        return Ok(if node_default {
            Seccomp::RuntimeDefault
        } else {
            Seccomp::Unconfined
        });
    };
    match p.type_.as_str() {
        "RuntimeDefault" => Ok(Seccomp::RuntimeDefault),
        "Unconfined" => Ok(Seccomp::Unconfined),
        "Localhost" => {
            let name = p
                .localhost_profile
                .as_deref()
                .filter(|n| !n.is_empty())
                .ok_or("seccompProfile Localhost needs localhostProfile")?;
            let rel = std::path::Path::new(name);
            if !rel
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
            {
                return Err(format!(
                    "seccompProfile localhostProfile {name:?} must be a relative path without '..'"
                ));
            }
            let path = profiles_dir.join(rel);
            let bytes = std::fs::read(&path)
                .map_err(|e| format!("seccomp profile {}: {e}", path.display()))?;
            let value: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| format!("seccomp profile {}: {e}", path.display()))?;
            Ok(Seccomp::Profile(value))
        }
        other => Err(format!("seccompProfile type {other:?} is not supported")),
    }
}

/// Kubelet's `runAsNonRoot` check: with it set, the effective `runAsUser` — or else the
/// image's `User` (`image_user`) — must be a numeric uid other than 0.
pub fn check_non_root(pod: &Pod, c: &Container, image_user: &str) -> Result<(), String> {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = c.security_context.as_ref();
    let non_root = sc
        .and_then(|s| s.run_as_non_root)
        .or(pod_sc.and_then(|s| s.run_as_non_root))
        == Some(true);
    if !non_root {
        return Ok(());
    }
    let uid = sc
        .and_then(|s| s.run_as_user)
        .or(pod_sc.and_then(|s| s.run_as_user));
    match uid {
        Some(0) => Err(
            "container's runAsUser breaks non-root policy (runAsNonRoot with runAsUser 0)".into(),
        ),
        Some(_) => Ok(()),
        None => {
            let user = image_user.split(':').next().unwrap_or("").trim();
            match user.parse::<u32>() {
                _ if user.is_empty() => Err("container has runAsNonRoot and image will run as root".into()),
                Ok(0) => Err("container has runAsNonRoot and image will run as root".into()),
                Ok(_) => Ok(()),
                Err(_) => Err(format!("container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root")),
            }
        }
    }
}

/// The engine config of container `c` of `pod` (engine name `id`, joining pod `sandbox`).
#[allow(clippy::too_many_arguments)]
pub fn container_config(
    pod: &Pod,
    c: &Container,
    id: &str,
    sandbox: &str,
    refs: &Refs,
    services: &[(String, String)],
    volumes: &BTreeMap<String, PathBuf>,
    pod_ip: &str,
    host_ip: &str,
) -> Result<ContainerConfig, String> {
    let image = c
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .ok_or("the container has no image")?;
    let env = environment(pod, c, refs, services, pod_ip, host_ip)?;
    let vars: BTreeMap<String, String> = env.iter().cloned().collect();
    let exp = |v: &Vec<String>| v.iter().map(|s| expand(s, &vars)).collect::<Vec<_>>();
    let mut mounts = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let src = volumes
            .get(&m.name)
            .ok_or_else(|| format!("volumeMount {:?} names no volume", m.name))?;
        if !m.mount_path.starts_with('/') {
            return Err(format!(
                "volumeMount {:?}: mountPath must be absolute",
                m.name
            ));
        }
        let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                if sub.starts_with('/') || sub.split('/').any(|p| p == "..") {
                    return Err(format!(
                        "volumeMount {:?}: subPath {sub:?} must stay inside the volume",
                        m.name
                    ));
                }
                let p = src.join(sub);
                if !p.exists() {
                    std::fs::create_dir_all(&p).map_err(|e| format!("subPath {sub:?}: {e}"))?;
                }
                p
            }
            None => src.clone(),
        };
        mounts.push(BindMount {
            source,
            destination: m.mount_path.clone(),
            readonly: m.read_only == Some(true),
        });
    }
    let res = c.resources.as_ref();
    let get = |set: Option<
        &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
               k: &str| {
        set.and_then(|m| m.get(k)).map(|q| {
            quantity(&q.0).ok_or_else(|| format!("resources: invalid quantity {:?} for {k}", q.0))
        })
    };
    let limits = res.and_then(|r| r.limits.as_ref());
    let requests = res.and_then(|r| r.requests.as_ref());
    let memory = get(limits, "memory").transpose()?;
    let cpu_limit = get(limits, "cpu").transpose()?;
    // kubelet: shares = requests.cpu (or the limit when only that is set) in millicores
    // * 1024 / 1000, at least 2.
    let cpu_request = get(requests, "cpu").transpose()?.or(cpu_limit);
    let resources = Resources {
        memory_bytes: memory.map(|m| m as i64),
        cpus: cpu_limit.filter(|c| *c > 0.0),
        cpu_shares: Some(
            cpu_request
                .map(|c| ((c * 1024.0) as u64).max(2))
                .unwrap_or(2),
        ),
        pids: None,
    };
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = c.security_context.as_ref();
    let uid = sc
        .and_then(|s| s.run_as_user)
        .or(pod_sc.and_then(|s| s.run_as_user));
    let gid = sc
        .and_then(|s| s.run_as_group)
        .or(pod_sc.and_then(|s| s.run_as_group));
    let user = match (uid, gid) {
        (Some(u), Some(g)) => Some(format!("{u}:{g}")),
        (Some(u), None) => Some(u.to_string()),
        (None, Some(g)) => Some(format!("0:{g}")),
        (None, None) => None,
    };
    let mut additional_gids: Vec<u32> = Vec::new();
    if let Some(ps) = pod_sc {
        if let Some(g) = ps.fs_group {
            additional_gids.push(g as u32);
        }
        additional_gids.extend(ps.supplemental_groups.iter().flatten().map(|g| *g as u32));
    }
    let privileged = sc.and_then(|s| s.privileged) == Some(true);
    let (mut cap_add, cap_drop) = match sc.and_then(|s| s.capabilities.as_ref()) {
        Some(caps) => (
            caps.add.clone().unwrap_or_default(),
            caps.drop.clone().unwrap_or_default(),
        ),
        None => (vec![], vec![]),
    };
    if privileged {
        cap_add = vec!["ALL".into()];
    }
    let mut ports = Vec::new();
    for p in c.ports.iter().flatten() {
        if let Some(hp) = p.host_port {
            let proto = match p.protocol.as_deref() {
                None | Some("TCP") => "",
                Some("UDP") => "/udp",
                Some(other) => return Err(format!("port protocol {other:?} is not supported")),
            };
            let ip = p
                .host_ip
                .as_deref()
                .map(|i| format!("{i}:"))
                .unwrap_or_default();
            let spec = format!("{ip}{hp}:{}{proto}", p.container_port);
            ports
                .push(podlet_runtime::ports::PortMapping::parse(&spec).map_err(|e| e.to_string())?);
        }
    }
    Ok(ContainerConfig {
        name: Some(id.to_string()),
        image,
        entrypoint: c.command.as_ref().filter(|v| !v.is_empty()).map(exp),
        command: c.args.as_ref().map(exp).unwrap_or_default(),
        env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        mounts,
        workdir: c.working_dir.clone().filter(|w| !w.is_empty()),
        user,
        additional_gids,
        hostname: None,
        network: podlet_runtime::engine::Network::None,
        pod: Some(sandbox.to_string()),
        ports,
        resources,
        read_only: sc.and_then(|s| s.read_only_root_filesystem) == Some(true),
        cap_add,
        cap_drop,
        no_new_privileges: sc.and_then(|s| s.allow_privilege_escalation) == Some(false),
        tty: c.tty == Some(true),
        remove: false,
        seccomp: Seccomp::Unconfined,
        privileged,
        resolv_conf: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{
                "name": "c", "image": "busybox",
                "command": ["sh", "-c"], "args": ["echo $(GREETING) $$HOME"],
                "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}},
                "env": [
                    {"name": "GREETING", "value": "hi-$(POD)"},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                    {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                    {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "site", "key": "color"}}}
                ],
                "envFrom": [{"configMapRef": {"name": "site"}, "prefix": "SITE_"}],
                "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": true}]
            }]}
        }))
        .unwrap()
    }

    fn refs() -> Refs {
        let mut r = Refs::default();
        r.secrets.insert(
            "db".into(),
            Some([("password".to_string(), b"s3cret".to_vec())].into()),
        );
        r.config_maps.insert(
            "site".into(),
            Some([("color".to_string(), b"blue".to_vec())].into()),
        );
        r
    }

    #[test]
    fn env_values_refs_and_expansion() {
        let p = pod();
        let c = &p.spec.as_ref().unwrap().containers[0];
        let env: BTreeMap<_, _> = environment(&p, c, &refs(), &[], "10.42.0.7", "10.0.0.1")
            .unwrap()
            .into_iter()
            .collect();
        // $(POD) is defined after GREETING, so it stays as written (Kubernetes' rule).
        assert_eq!(env["GREETING"], "hi-$(POD)");
        assert_eq!(env["POD"], "web-1");
        assert_eq!(env["IP"], "10.42.0.7");
        assert_eq!(env["APP"], "web");
        assert_eq!(env["MEM"], "64");
        assert_eq!(env["PASS"], "s3cret");
        assert_eq!(env["COLOR"], "blue");
        assert_eq!(env["SITE_color"], "blue");
    }

    #[test]
    fn missing_references_name_the_problem() {
        let p = pod();
        let c = &p.spec.as_ref().unwrap().containers[0];
        let mut r = refs();
        r.secrets.insert("db".into(), None);
        let err = environment(&p, c, &r, &[], "", "").unwrap_err();
        assert!(err.contains("secret \"db\" not found"), "{err}");
    }

    #[test]
    fn the_engine_config_maps_command_resources_and_mounts() {
        let p = pod();
        let c = &p.spec.as_ref().unwrap().containers[0];
        let vols = [("data".to_string(), PathBuf::from("/v/data"))].into();
        let cfg =
            container_config(&p, c, "id", "sb", &refs(), &[], &vols, "10.42.0.7", "h").unwrap();
        assert_eq!(
            cfg.entrypoint,
            Some(vec!["sh".to_string(), "-c".to_string()])
        );
        assert_eq!(cfg.command, vec!["echo hi-$(POD) $HOME"]);
        assert_eq!(cfg.resources.memory_bytes, Some(64 << 20));
        assert_eq!(cfg.resources.cpus, Some(0.5));
        assert_eq!(cfg.resources.cpu_shares, Some(512));
        assert_eq!(cfg.mounts[0].source, PathBuf::from("/v/data"));
        assert!(cfg.mounts[0].readonly);
        assert_eq!(cfg.pod.as_deref(), Some("sb"));
        let vols = BTreeMap::new();
        let err = container_config(&p, c, "id", "sb", &refs(), &[], &vols, "", "").unwrap_err();
        assert!(err.contains("names no volume"), "{err}");
    }

    #[test]
    fn run_as_non_root_checks_the_effective_user_then_the_image() {
        let with = |pod_sc: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p"},
                "spec": {"securityContext": pod_sc, "containers": [{"name": "c", "image": "x"}]}
            }))
            .unwrap()
        };
        let check = |p: &Pod, image_user: &str| {
            check_non_root(p, &p.spec.as_ref().unwrap().containers[0], image_user)
        };
        let p = with(serde_json::json!({"runAsNonRoot": true}));
        assert!(check(&p, "").unwrap_err().contains("will run as root"));
        assert!(check(&p, "0:0").unwrap_err().contains("will run as root"));
        assert!(check(&p, "nobody")
            .unwrap_err()
            .contains("non-numeric user (nobody)"));
        assert!(check(&p, "1000:1000").is_ok());
        let p = with(serde_json::json!({"runAsNonRoot": true, "runAsUser": 0}));
        assert!(check(&p, "1000")
            .unwrap_err()
            .contains("breaks non-root policy"));
        let p = with(serde_json::json!({"runAsNonRoot": true, "runAsUser": 1000}));
        assert!(check(&p, "").is_ok());
        let p = with(serde_json::json!({}));
        assert!(check(&p, "").is_ok());
    }

    #[test]
    fn seccomp_profiles_follow_the_container_then_the_pod_then_the_node() {
        let with = |pod_sc: serde_json::Value, c_sc: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p"},
                "spec": {"securityContext": pod_sc,
                         "containers": [{"name": "c", "image": "x", "securityContext": c_sc}]}
            }))
            .unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("mine.json"),
            r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#,
        )
        .unwrap();
        let get = |p: &Pod, node_default: bool| {
            seccomp(
                p,
                &p.spec.as_ref().unwrap().containers[0],
                node_default,
                dir.path(),
            )
        };
        let none = with(serde_json::json!({}), serde_json::json!({}));
        assert_eq!(get(&none, false).unwrap(), Seccomp::Unconfined);
        assert_eq!(get(&none, true).unwrap(), Seccomp::RuntimeDefault);
        let pod_rd = with(
            serde_json::json!({"seccompProfile": {"type": "RuntimeDefault"}}),
            serde_json::json!({"seccompProfile": {"type": "Unconfined"}}),
        );
        assert_eq!(get(&pod_rd, true).unwrap(), Seccomp::Unconfined);
        let privileged = with(
            serde_json::json!({"seccompProfile": {"type": "RuntimeDefault"}}),
            serde_json::json!({"privileged": true}),
        );
        assert_eq!(get(&privileged, true).unwrap(), Seccomp::Unconfined);
        let local = |name: &str| {
            with(
                serde_json::json!({}),
                serde_json::json!({"seccompProfile": {"type": "Localhost", "localhostProfile": name}}),
            )
        };
        assert!(matches!(
            get(&local("mine.json"), false).unwrap(),
            Seccomp::Profile(_)
        ));
        let err = get(&local("../etc/x.json"), false).unwrap_err();
        assert!(err.contains("without '..'"), "{err}");
        let err = get(&local("gone.json"), false).unwrap_err();
        assert!(err.contains("gone.json"), "{err}");
    }

    #[test]
    fn quantities_and_expansion_edge_cases() {
        assert_eq!(quantity("128Mi"), Some(134217728.0));
        assert_eq!(quantity("250m"), Some(0.25));
        assert_eq!(quantity("x"), None);
        let vars = [("A".to_string(), "1".to_string())].into();
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &vars), "1-$(B)-$(A)-$");
    }
}
