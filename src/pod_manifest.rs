//! `podlet pod run -f pod.yaml`: a Kubernetes Pod manifest (the `k8s-openapi` type, so what
//! `kubectl` accepts reads the same here) turned into a pod and its containers. Init containers
//! run to completion first, in order; then every container starts detached.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{Container, Pod};
use podlet_runtime::engine::{BindMount, ContainerConfig};
use podlet_runtime::pod::PodSpec;
use podlet_runtime::ports::PortMapping;

use crate::pod_cli::{CniArgs, Paths};

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

/// The engine's config for one container of the pod.
fn container_config(pod: &str, c: &Container) -> Result<ContainerConfig> {
    let ctx = |what: &str| format!("container {:?}: {what}", c.name);
    let image = c
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .with_context(|| ctx("missing image"))?;
    let (entrypoint, mut command) = match c.command.as_deref() {
        Some([first, rest @ ..]) => (Some(vec![first.clone()]), rest.to_vec()),
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
    if let Some(w) = &c.working_dir {
        if !w.starts_with('/') {
            bail!(ctx(&format!("workingDir {w:?}: must be an absolute path")));
        }
    }
    let mut cfg = ContainerConfig {
        name: Some(format!("{pod}-{}", c.name)),
        image,
        entrypoint,
        command,
        env,
        workdir: c.working_dir.clone(),
        pod: Some(pod.to_string()),
        ..ContainerConfig::default()
    };
    if let Some(sc) = &c.security_context {
        if let Some(uid) = sc.run_as_user {
            cfg.user = Some(match sc.run_as_group {
                Some(g) => format!("{uid}:{g}"),
                None => uid.to_string(),
            });
        }
        cfg.read_only = sc.read_only_root_filesystem.unwrap_or(false);
        cfg.no_new_privileges = sc.allow_privilege_escalation == Some(false);
        if let Some(caps) = &sc.capabilities {
            cfg.cap_add = caps.add.clone().unwrap_or_default();
            cfg.cap_drop = caps.drop.clone().unwrap_or_default();
        }
        if sc.privileged == Some(true) {
            bail!(ctx(
                "privileged containers are not supported by `podlet pod run`"
            ));
        }
    }
    if let Some(limits) = c.resources.as_ref().and_then(|r| r.limits.as_ref()) {
        if let Some(m) = limits.get("memory") {
            cfg.resources.memory_bytes =
                Some(parse_quantity(&m.0).with_context(|| ctx("memory limit"))? as i64);
        }
        if let Some(cpu) = limits.get("cpu") {
            let cpus = parse_quantity(&cpu.0).with_context(|| ctx("cpu limit"))?;
            if cpus <= 0.0 {
                bail!(ctx("cpu limit must be positive"));
            }
            cfg.resources.cpus = Some(cpus);
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
            cfg.ports.push(PortMapping::parse(&format!(
                "{ip}{hp}:{}{proto}",
                p.container_port
            ))?);
        }
    }
    Ok(cfg)
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
    let mut configs = Vec::new();
    for (c, init) in spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| (c, true))
        .chain(spec.containers.iter().map(|c| (c, false)))
    {
        let mut cfg = container_config(&name, c)?;
        // seccompProfile as the node agent reads it (Localhost profiles below
        // `<root>/seccomp`), RuntimeDefault when none is set, as podman's `kube play` does.
        cfg.seccomp = podlet_agent::pods::convert::seccomp(&pod, c, true, &p.root.join("seccomp"))
            .map_err(|e| anyhow::anyhow!("container {:?}: {e}", c.name))?;
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
            if !m.mount_path.starts_with('/') {
                bail!(
                    "container {:?}: volumeMount {:?}: mountPath must be absolute",
                    c.name,
                    m.name
                );
            }
            cfg.mounts.push(BindMount {
                source: std::fs::canonicalize(&host)
                    .with_context(|| format!("container {:?}: hostPath {host:?}", c.name))?,
                destination: m.mount_path.clone(),
                readonly: m.read_only == Some(true),
            });
        }
        cfg.remove = init;
        configs.push((cfg, init));
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
    let engine = crate::run_cli::engine(p.root, p.state, p.cgroup_root)?;
    let st = engine.create_pod(&PodSpec {
        name: name.clone(),
        hostname: spec.hostname.clone(),
        network: cni.network(network)?,
        labels: labels.into_iter().collect(),
        pids_limit: None,
    })?;
    // Init containers run in the foreground and must not read the terminal.
    let null = std::fs::File::open("/dev/null")?;
    nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0)?;
    let started = (|| -> Result<()> {
        for (cfg, init) in &configs {
            let prepared = engine.prepare(cfg)?;
            if *init {
                // Runs to completion in the foreground, then is removed.
                let code = (|| -> Result<i32> {
                    let created = engine.create(&prepared, None)?;
                    engine.start(&prepared.id)?;
                    Ok(engine.wait(created.pid))
                })();
                engine.discard(&prepared);
                if code? != 0 {
                    bail!("init container {:?} failed", prepared.id);
                }
            } else if let Err(e) = engine.start_detached(&prepared) {
                engine.discard(&prepared);
                return Err(e.into());
            }
        }
        Ok(())
    })();
    if let Err(e) = started {
        let _ = engine.remove_pod(&st.name, true);
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
