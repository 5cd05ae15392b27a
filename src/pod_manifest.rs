//! `podlet pod run -f pod.yaml`: a Kubernetes Pod manifest (the `k8s-openapi` type, so what
//! `kubectl` accepts reads the same here) turned into a pod and its containers. Init containers
//! run to completion first, in order; then every container starts detached.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{Container, Pod};
use podlet_runtime::pod::{PodSpec, Pods};

use crate::pod_cli::{create_pod, CniArgs, Paths};
use crate::run_cli::RunArgs;

/// Reads a Pod manifest (YAML or JSON; `-` is stdin).
pub fn read_manifest(file: &Path) -> Result<Pod> {
    let text = if file == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?
    };
    let value: serde_yaml::Value = serde_yaml::from_str(&text)
        .with_context(|| format!("{}: not YAML/JSON", file.display()))?;
    match value.get("kind").and_then(|k| k.as_str()) {
        Some("Pod") => {}
        Some(other) => bail!("{}: kind {other:?} is not a Pod", file.display()),
        None => bail!("{}: missing \"kind: Pod\"", file.display()),
    }
    serde_yaml::from_value(value).with_context(|| format!("{}: invalid Pod", file.display()))
}

/// Parses a Kubernetes quantity (`128Mi`, `1G`, `500m`, `2`, `1e3`) into a number (the
/// master's parser, refusing negative values).
pub fn parse_quantity(q: &str) -> Result<f64> {
    podlet_master::controllers::scheduler::quantity(q)
        .filter(|n| n.is_finite() && *n >= 0.0)
        .with_context(|| format!("invalid quantity {q:?} (expected e.g. 128Mi, 1G, 500m, 2)"))
}

/// The `podlet run` arguments for one container of the pod.
fn run_args(pod: &str, c: &Container, cni: &CniArgs) -> Result<RunArgs> {
    let ctx = |what: &str| format!("container {:?}: {what}", c.name);
    let image = c
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .with_context(|| ctx("missing image"))?;
    let (entrypoint, mut command) = match c.command.as_deref() {
        Some([first, rest @ ..]) => (Some(first.clone()), rest.to_vec()),
        _ => (None, Vec::new()),
    };
    command.extend(c.args.clone().unwrap_or_default());
    let mut env = Vec::new();
    for e in c.env.iter().flatten() {
        if e.value_from.is_some() {
            bail!(ctx(&format!(
                "env {:?}: valueFrom needs the cluster (use a value)",
                e.name
            )));
        }
        env.push(format!(
            "{}={}",
            e.name,
            e.value.clone().unwrap_or_default()
        ));
    }
    let mut a = RunArgs {
        detach: true,
        name: Some(format!("{pod}-{}", c.name)),
        env,
        workdir: c.working_dir.clone(),
        entrypoint,
        image,
        command,
        pod: Some(pod.to_string()),
        cni: cni.clone(),
        ..RunArgs::default()
    };
    if let Some(sc) = &c.security_context {
        if let Some(uid) = sc.run_as_user {
            a.user = Some(match sc.run_as_group {
                Some(g) => format!("{uid}:{g}"),
                None => uid.to_string(),
            });
        }
        a.read_only = sc.read_only_root_filesystem.unwrap_or(false);
        if let Some(caps) = &sc.capabilities {
            a.cap_add = caps.add.clone().unwrap_or_default();
            a.cap_drop = caps.drop.clone().unwrap_or_default();
        }
        if sc.privileged == Some(true) {
            bail!(ctx(
                "privileged containers are not supported by `podlet pod run`"
            ));
        }
    }
    if let Some(limits) = c.resources.as_ref().and_then(|r| r.limits.as_ref()) {
        if let Some(m) = limits.get("memory") {
            a.memory = Some(
                (parse_quantity(&m.0).with_context(|| ctx("memory limit"))? as i64).to_string(),
            );
        }
        if let Some(cpu) = limits.get("cpu") {
            a.cpus = Some(parse_quantity(&cpu.0).with_context(|| ctx("cpu limit"))?);
        }
    }
    for p in c.ports.iter().flatten() {
        if let Some(hp) = p.host_port {
            let proto = match p.protocol.as_deref() {
                None | Some("TCP") => "",
                Some("UDP") => "/udp",
                Some(other) => bail!(ctx(&format!("port protocol {other:?} is not supported"))),
            };
            let ip = p
                .host_ip
                .as_deref()
                .map(|i| format!("{i}:"))
                .unwrap_or_default();
            a.publish
                .push(format!("{ip}{hp}:{}{proto}", p.container_port));
        }
    }
    Ok(a)
}

/// `podlet pod run -f FILE`.
pub fn run(p: Paths<'_>, file: &Path, network: &str, cni: &CniArgs) -> Result<ExitCode> {
    let pod = read_manifest(file)?;
    let meta = &pod.metadata;
    let name = match (&meta.name, &meta.generate_name) {
        (Some(n), _) if !n.is_empty() => n.clone(),
        (_, Some(g)) if !g.is_empty() => format!("{g}{}", crate::run_cli::random_id()),
        _ => bail!("{}: metadata.name is required", file.display()),
    };
    let spec = pod
        .spec
        .as_ref()
        .with_context(|| format!("{}: spec is required", file.display()))?;
    if spec.containers.is_empty() {
        bail!("{}: spec.containers must not be empty", file.display());
    }
    for v in spec.volumes.iter().flatten() {
        if v.host_path.is_none() {
            bail!(
                "{}: volume {:?}: only hostPath volumes are supported by `podlet pod run`",
                file.display(),
                v.name
            );
        }
    }
    let mut all_args = Vec::new();
    for (c, init) in spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| (c, true))
        .chain(spec.containers.iter().map(|c| (c, false)))
    {
        let mut a = run_args(&name, c, cni)?;
        for m in c.volume_mounts.iter().flatten() {
            let vol = spec
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == m.name)
                .with_context(|| {
                    format!(
                        "container {:?}: volumeMount {:?} names no volume",
                        c.name, m.name
                    )
                })?;
            let host = vol
                .host_path
                .as_ref()
                .map(|h| h.path.clone())
                .unwrap_or_default();
            let ro = if m.read_only == Some(true) { ":ro" } else { "" };
            a.volumes.push(format!("{host}:{}{ro}", m.mount_path));
        }
        if init {
            a.detach = false;
            a.rm = true;
        }
        all_args.push((a, init));
    }
    let mut labels = meta.labels.clone().unwrap_or_default();
    if let Some(ns) = &meta.namespace {
        labels.insert("io.kubernetes.pod.namespace".into(), ns.clone());
    }
    let network = if spec.host_network == Some(true) {
        "host"
    } else {
        network
    };
    let st = create_pod(
        p.state,
        &PodSpec {
            name: name.clone(),
            hostname: spec.hostname.clone(),
            network: cni.network(network)?,
            labels: labels.into_iter().collect(),
        },
    )?;
    let started = (|| -> Result<()> {
        for (a, init) in &all_args {
            let a = RunArgs {
                quiet: true,
                ..a.clone()
            };
            let code = crate::run_cli::run(p.root, p.state, p.cgroup_root, &a)?;
            if *init && code != ExitCode::SUCCESS {
                bail!(
                    "init container {:?} failed",
                    a.name.as_deref().unwrap_or("")
                );
            }
        }
        Ok(())
    })();
    if let Err(e) = started {
        let st = Pods::new(p.state).load(&st.name)?;
        let _ = crate::run_cli::stop_containers(p, &st.containers, 0);
        let _ = crate::run_cli::remove_containers(p, &st.containers);
        let _ = Pods::new(p.state).remove(&st.name);
        return Err(e);
    }
    println!("{}", st.name);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("128Mi").unwrap(), 134217728.0);
        assert_eq!(parse_quantity("1G").unwrap(), 1e9);
        assert_eq!(parse_quantity("500m").unwrap(), 0.5);
        assert_eq!(parse_quantity("2").unwrap(), 2.0);
        assert!(parse_quantity("lots").is_err());
        assert!(parse_quantity("-1").is_err());
        assert!(parse_quantity("Mi").is_err());
    }
}
