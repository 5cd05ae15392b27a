//! Turning a [`ContainerConfig`], the image's config and a snapshot into an OCI bundle config.

use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{Capability, Spec};
use serde_json::{json, Value};

use super::config::{ContainerConfig, Network, Seccomp};
use super::EngineError;
use crate::image::snapshot::Snapshot;
use crate::pod::{PodNetwork, PodState};

/// Capabilities a docker/podman container gets by default.
pub const DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// The `PATH` a container gets when its image sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn invalid(msg: impl Into<String>) -> EngineError {
    EngineError::Invalid(msg.into())
}

/// Looks `name` up in the image's `/etc/passwd` or `/etc/group` (top layer first).
fn lookup_id(layers: &[PathBuf], file: &str, name: &str) -> Option<(u32, Option<u32>)> {
    for layer in layers.iter().rev() {
        let Ok(text) = std::fs::read_to_string(layer.join("etc").join(file)) else {
            continue;
        };
        for line in text.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 3 && f[0] == name {
                let id = f[2].parse().ok()?;
                let gid = f.get(3).and_then(|g| g.parse().ok());
                return Some((id, gid));
            }
        }
        return None;
    }
    None
}

/// Resolves `USER[:GROUP]` (numbers or names from the image) to ids.
pub fn resolve_user(spec_user: &str, layers: &[PathBuf]) -> Result<(u32, u32), EngineError> {
    let (u, g) = match spec_user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec_user, None),
    };
    let (uid, default_gid) = match u.parse::<u32>() {
        Ok(n) => (n, None),
        Err(_) => match lookup_id(layers, "passwd", u) {
            Some((id, gid)) => (id, gid),
            None => {
                return Err(invalid(format!(
                    "user {u:?} not found in the image's /etc/passwd"
                )))
            }
        },
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup_id(layers, "group", g)
                .map(|(id, _)| id)
                .ok_or_else(|| {
                    invalid(format!("group {g:?} not found in the image's /etc/group"))
                })?,
        },
        None => default_gid.unwrap_or(uid),
    };
    Ok((uid, gid))
}

/// A capability name in the OCI form (`CAP_NET_ADMIN`), from `NET_ADMIN`, `cap_net_admin`, ….
pub fn parse_cap(name: &str) -> Result<String, EngineError> {
    let n = name.to_ascii_uppercase();
    let n = n.strip_prefix("CAP_").unwrap_or(&n).to_string();
    n.parse::<Capability>()
        .map_err(|_| invalid(format!("unknown capability {name:?}")))?;
    Ok(format!("CAP_{n}"))
}

/// The default capability set with `drop` then `add` applied (`ALL` allowed in both).
pub fn capabilities(add: &[String], drop: &[String]) -> Result<Vec<String>, EngineError> {
    let all: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    let mut set: Vec<String> = DEFAULT_CAPS.iter().map(|c| format!("CAP_{c}")).collect();
    for c in drop {
        if c.eq_ignore_ascii_case("all") {
            set.clear();
        } else {
            let c = parse_cap(c)?;
            set.retain(|x| *x != c);
        }
    }
    for c in add {
        if c.eq_ignore_ascii_case("all") {
            set = all.clone();
        } else {
            let c = parse_cap(c)?;
            if !set.contains(&c) {
                set.push(c);
            }
        }
    }
    Ok(set)
}

/// The image's environment with `overrides` (`KEY=VALUE`) applied, plus `PATH` and `HOSTNAME`
/// when missing.
pub fn environment(image_env: &[String], overrides: &[String], hostname: &str) -> Vec<String> {
    let mut env: Vec<String> = image_env.to_vec();
    for kv in overrides {
        let key = kv.split('=').next().unwrap_or("");
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(DEFAULT_PATH.into());
    }
    if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        env.push(format!("HOSTNAME={hostname}"));
    }
    env
}

/// The process arguments: entrypoint and command from the config or the image.
pub fn process_args(
    c: &ContainerConfig,
    cfg: &ImageConfiguration,
) -> Result<Vec<String>, EngineError> {
    let ic = cfg.config().clone().unwrap_or_default();
    let entrypoint: Vec<String> = match &c.entrypoint {
        Some(e) => e.clone(),
        None => ic.entrypoint().clone().unwrap_or_default(),
    };
    let cmd: Vec<String> = if !c.command.is_empty() {
        c.command.clone()
    } else if c.entrypoint.is_some() {
        vec![]
    } else {
        ic.cmd().clone().unwrap_or_default()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(invalid(format!(
            "no command: image {} has no Cmd or Entrypoint; give one after the image name",
            c.image
        )));
    }
    Ok(args)
}

/// Writes the container's own `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` into the
/// snapshot directory; returns their bind mounts.
fn etc_files(snap_dir: &Path, hostname: &str, resolv: &str) -> Result<Vec<Value>, EngineError> {
    let etc = snap_dir.join("etc");
    let io = |e| EngineError::Io {
        what: "write the container's /etc files",
        path: etc.clone(),
        source: e,
    };
    std::fs::create_dir_all(&etc).map_err(io)?;
    std::fs::write(etc.join("hostname"), format!("{hostname}\n")).map_err(io)?;
    std::fs::write(
        etc.join("hosts"),
        format!("127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{hostname}\n"),
    )
    .map_err(io)?;
    std::fs::write(etc.join("resolv.conf"), resolv).map_err(io)?;
    Ok(["hostname", "hosts", "resolv.conf"]
        .iter()
        .map(|f| {
            json!({"destination": format!("/etc/{f}"), "type": "bind",
                "source": etc.join(f),
                "options": ["bind", "rprivate", "nosuid", "nodev", "noexec"]})
        })
        .collect())
}

/// Builds the container's OCI config (as JSON) and writes its `/etc` files.
pub fn build(
    c: &ContainerConfig,
    id: &str,
    cfg: &ImageConfiguration,
    snap: &Snapshot,
    pod: Option<&PodState>,
) -> Result<Value, EngineError> {
    let ic = cfg.config().clone().unwrap_or_default();
    let args = process_args(c, cfg)?;
    let (uid, gid) = match c
        .user
        .as_deref()
        .or(ic.user().as_deref())
        .filter(|u| !u.is_empty())
    {
        Some(u) => resolve_user(u, &snap.layers)?,
        None => (0, 0),
    };
    let hostname = match pod {
        Some(p) => p.hostname.clone(),
        None => c
            .hostname
            .clone()
            .unwrap_or_else(|| id.chars().take(12).collect()),
    };
    let pod_network = pod.map(|p| p.network.clone());
    let host_network = c.network == Network::Host || pod_network == Some(PodNetwork::Host);
    let env = environment(ic.env().as_deref().unwrap_or_default(), &c.env, &hostname);
    let cwd = c
        .workdir
        .clone()
        .or(ic.working_dir().clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(invalid(format!(
            "working directory {cwd:?}: must be an absolute path"
        )));
    }
    let caps = capabilities(&c.cap_add, &c.cap_drop)?;
    let mut spec = serde_json::to_value(Spec::default()).map_err(|e| invalid(e.to_string()))?;
    spec["linux"]["maskedPaths"] = json!(crate::spec::DEFAULT_MASKED_PATHS);
    spec["root"] = json!({"path": snap.rootfs(), "readonly": c.read_only});
    spec["hostname"] = json!(hostname);
    let mut user = json!({"uid": uid, "gid": gid});
    if !c.additional_gids.is_empty() {
        user["additionalGids"] = json!(c.additional_gids);
    }
    spec["process"] = json!({
        "terminal": c.tty,
        "user": user,
        "args": args,
        "env": env,
        "cwd": cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": c.no_new_privileges,
    });
    let resolv = if let Some(r) = &c.resolv_conf {
        r.clone()
    } else if host_network || matches!(pod_network, Some(PodNetwork::Cni { .. })) {
        std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
    } else {
        String::new()
    };
    let etc = etc_files(&snap.dir, &hostname, &resolv)?;
    let mounts = spec["mounts"]
        .as_array_mut()
        .ok_or_else(|| invalid("the default spec has no mounts"))?;
    mounts.extend(etc);
    for m in &c.mounts {
        if !m.destination.starts_with('/') {
            return Err(invalid(format!(
                "mount destination {:?} must be absolute",
                m.destination
            )));
        }
        let mut opts = vec!["rbind", "rprivate"];
        if m.readonly {
            opts.push("ro");
        }
        mounts.push(json!({"destination": m.destination, "type": "bind",
            "source": m.source, "options": opts}));
    }
    if let Some(p) = pod {
        p.join(&mut spec);
    }
    if c.privileged {
        for m in spec["mounts"].as_array_mut().into_iter().flatten() {
            if matches!(m["destination"].as_str(), Some("/sys" | "/sys/fs/cgroup")) {
                if let Some(opts) = m["options"].as_array_mut() {
                    opts.retain(|o| o != "ro");
                }
            }
        }
        spec["linux"]["maskedPaths"] = json!([]);
        spec["linux"]["readonlyPaths"] = json!([]);
    }
    let linux = &mut spec["linux"];
    if host_network {
        if let Some(ns) = linux["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != "network");
        }
    }
    let mut resources = json!({});
    if c.privileged {
        // Kubernetes' privileged: every device, as runc gives `--privileged` containers.
        resources["devices"] = json!([{"allow": true, "access": "rwm"}]);
    }
    let r = &c.resources;
    if let Some(m) = r.memory_bytes {
        resources["memory"] = json!({"limit": m});
    }
    if let Some(cpus) = r.cpus {
        if cpus <= 0.0 {
            return Err(invalid(format!("cpu limit {cpus}: must be positive")));
        }
        resources["cpu"] = json!({"quota": (cpus * 100_000.0) as i64, "period": 100_000});
    }
    if let Some(shares) = r.cpu_shares {
        resources["cpu"]["shares"] = json!(shares.clamp(2, 262_144));
    }
    // A pod with a pod-wide pids limit: the container nests in the pod's cgroup, and takes
    // the limit too, so that it joins the pids hierarchy below the pod's on cgroup v1.
    let pod_pids = pod.and_then(|p| p.pids_limit);
    let pids = match (r.pids, pod_pids) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if let Some(p) = pids {
        resources["pids"] = json!({"limit": p});
    }
    linux["resources"] = resources;
    match &c.seccomp {
        Seccomp::Unconfined => {}
        Seccomp::RuntimeDefault => {
            let caps = capabilities(&c.cap_add, &c.cap_drop)?;
            linux["seccomp"] = super::seccomp_profile::runtime_default(&caps);
        }
        Seccomp::Profile(p) => {
            let caps = capabilities(&c.cap_add, &c.cap_drop)?;
            let p = super::seccomp_profile::from_user_profile(p, &caps).map_err(invalid)?;
            serde_json::from_value::<oci_spec::runtime::LinuxSeccomp>(p.clone()).map_err(|e| {
                invalid(format!(
                    "seccomp profile is not a valid OCI linux.seccomp object: {e}"
                ))
            })?;
            linux["seccomp"] = p;
        }
    }
    linux["cgroupsPath"] = match pod.filter(|p| p.pids_limit.is_some()) {
        Some(p) => json!(format!("{}/{id}", super::pod_cgroup(&p.name))),
        None => json!(format!("containers/{id}")),
    };
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_replace_and_defaults_fill_in() {
        let env = environment(
            &["A=1".into(), "B=2".into()],
            &["A=3".into(), "C=4".into()],
            "h",
        );
        assert_eq!(env, vec!["B=2", "A=3", "C=4", DEFAULT_PATH, "HOSTNAME=h"]);
        let env = environment(&["PATH=/x".into()], &["HOSTNAME=y".into()], "h");
        assert_eq!(env, vec!["PATH=/x", "HOSTNAME=y"]);
    }

    #[test]
    fn capability_sets_follow_drop_then_add() {
        let c = capabilities(&["net_admin".into()], &["ALL".into()]).unwrap();
        assert_eq!(c, vec!["CAP_NET_ADMIN"]);
        let c = capabilities(&[], &["CAP_MKNOD".into()]).unwrap();
        assert!(!c.contains(&"CAP_MKNOD".to_string()) && c.contains(&"CAP_KILL".to_string()));
        let err = capabilities(&["FLY".into()], &[]).unwrap_err();
        assert!(
            err.to_string().contains("unknown capability \"FLY\""),
            "{err}"
        );
    }

    #[test]
    fn users_resolve_from_numbers_and_the_image() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "app:x:1000:1001::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "staff:x:50:\n").unwrap();
        let layers = vec![dir.path().to_path_buf()];
        assert_eq!(resolve_user("7", &layers).unwrap(), (7, 7));
        assert_eq!(resolve_user("app", &layers).unwrap(), (1000, 1001));
        assert_eq!(resolve_user("app:staff", &layers).unwrap(), (1000, 50));
        assert!(resolve_user("ghost", &layers)
            .unwrap_err()
            .to_string()
            .contains("ghost"));
    }
}
