//! Loading and validating an OCI bundle's `config.json`.
//!
//! Parsing is done by `oci-spec`; this module adds the checks a runtime must make before it
//! touches the kernel, each error naming the field at fault.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// Why a bundle cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// `config.json` could not be read.
    #[error("bundle {bundle}: cannot read config.json: {source}")]
    Read {
        /// The bundle directory.
        bundle: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `config.json` is not valid JSON or has fields of the wrong type.
    #[error("bundle {bundle}: config.json: {detail}")]
    Parse {
        /// The bundle directory.
        bundle: PathBuf,
        /// The parser's message, with line and column.
        detail: String,
    },
    /// A field holds a value the runtime cannot accept.
    #[error("config.json: {field}: {reason}")]
    Invalid {
        /// The JSON path of the field, e.g. `process.args`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A loaded, validated bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The bundle directory (absolute).
    pub dir: PathBuf,
    /// The parsed configuration.
    pub spec: Spec,
    /// The root filesystem (absolute, canonical).
    pub rootfs: PathBuf,
}

/// Reads and validates `<bundle>/config.json`.
pub fn load_bundle(bundle: &Path) -> Result<Bundle, SpecError> {
    let dir = std::path::absolute(bundle).map_err(|source| SpecError::Read {
        bundle: bundle.to_path_buf(),
        source,
    })?;
    let text = std::fs::read(dir.join("config.json")).map_err(|source| SpecError::Read {
        bundle: dir.clone(),
        source,
    })?;
    let spec: Spec = serde_json::from_slice(&text).map_err(|e| SpecError::Parse {
        bundle: dir.clone(),
        detail: e.to_string(),
    })?;
    let rootfs = validate(&spec, &dir)?;
    Ok(Bundle { dir, spec, rootfs })
}

/// Checks `spec` for a bundle at `dir`; returns the canonical rootfs path.
pub fn validate(spec: &Spec, dir: &Path) -> Result<PathBuf, SpecError> {
    let version = spec.version();
    if !version.starts_with("1.") || version.split('.').count() < 2 {
        return Err(invalid(
            "ociVersion",
            format!("{version:?} is not a 1.x version"),
        ));
    }
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| invalid("root", "missing; a Linux container needs a root filesystem"))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        dir.join(root.path())
    };
    let rootfs = rootfs
        .canonicalize()
        .map_err(|e| invalid("root.path", format!("{}: {e}", rootfs.display())))?;
    if !rootfs.is_dir() {
        return Err(invalid(
            "root.path",
            format!("{} is not a directory", rootfs.display()),
        ));
    }
    // A bundle without `process` can be created (the spec only needs it for `start`).
    if let Some(process) = spec.process() {
        match process.args() {
            Some(args) if !args.is_empty() && !args[0].is_empty() => {}
            _ => return Err(invalid("process.args", "must name a program to run")),
        }
        if !process.cwd().is_absolute() {
            return Err(invalid(
                "process.cwd",
                format!("{:?} must be an absolute path", process.cwd()),
            ));
        }
        for (i, kv) in process.env().iter().flatten().enumerate() {
            if !kv.contains('=') {
                return Err(invalid(
                    format!("process.env[{i}]"),
                    format!("{kv:?} is not KEY=VALUE"),
                ));
            }
        }
    }
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        if !m.destination().is_absolute() {
            return Err(invalid(
                format!("mounts[{i}].destination"),
                format!("{:?} must be absolute", m.destination()),
            ));
        }
    }
    if let Some(linux) = spec.linux() {
        let mut seen = HashSet::new();
        for (i, ns) in linux.namespaces().iter().flatten().enumerate() {
            if !seen.insert(ns.typ()) {
                return Err(invalid(
                    format!("linux.namespaces[{i}]"),
                    format!("duplicate namespace {:?}", ns.typ()),
                ));
            }
            if let Some(p) = ns.path() {
                if !p.is_absolute() {
                    return Err(invalid(
                        format!("linux.namespaces[{i}].path"),
                        format!("{p:?} must be absolute"),
                    ));
                }
                if !p.exists() {
                    return Err(invalid(
                        format!("linux.namespaces[{i}].path"),
                        format!("{} does not exist", p.display()),
                    ));
                }
            }
        }
        let has_user = seen.contains(&LinuxNamespaceType::User);
        let maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
            || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
        if maps && !has_user {
            return Err(invalid(
                "linux.uidMappings",
                "mappings given without a user namespace",
            ));
        }
        let new_time_ns = linux
            .namespaces()
            .iter()
            .flatten()
            .any(|n| n.typ() == LinuxNamespaceType::Time && n.path().is_none());
        if linux.time_offsets().as_ref().is_some_and(|o| !o.is_empty()) && !new_time_ns {
            return Err(invalid(
                "linux.timeOffsets",
                "clock offsets need a new time namespace (a \"time\" entry without a path)",
            ));
        }
        if let Some(p) = linux.rootfs_propagation() {
            if ![
                "",
                "private",
                "rprivate",
                "slave",
                "rslave",
                "shared",
                "rshared",
                "unbindable",
                "runbindable",
            ]
            .contains(&p.as_str())
            {
                return Err(invalid(
                    "linux.rootfsPropagation",
                    format!("unknown propagation {p:?}"),
                ));
            }
        }
        if spec.hostname().as_ref().is_some_and(|h| !h.is_empty())
            && !seen.contains(&LinuxNamespaceType::Uts)
        {
            return Err(invalid(
                "hostname",
                "setting a hostname needs a new uts namespace",
            ));
        }
        for key in linux.sysctl().iter().flatten().map(|(k, _)| k) {
            check_sysctl(key, linux.namespaces().as_deref().unwrap_or_default())?;
        }
    }
    check_process(spec.process().as_ref(), spec.linux().as_ref())?;
    let new_mount_ns = spec
        .linux()
        .iter()
        .flat_map(|l| l.namespaces().iter().flatten())
        .any(|ns| ns.typ() == LinuxNamespaceType::Mount && is_foreign_mount_ns(ns));
    if !new_mount_ns {
        return Err(invalid(
            "linux.namespaces",
            "podlet needs a mount namespace of the container's own (a \"mount\" entry without a path, or a path to a namespace other than the runtime's) to build the rootfs without touching the host's mounts",
        ));
    }
    Ok(rootfs)
}

/// Checks a process (the container's, or one given to `exec`) and the container's `linux`
/// settings that apply to it: scheduling, I/O priority, CPU affinity, memory policy,
/// personality, and capability sets that the bounding set allows.
pub fn check_process(
    process: Option<&oci_spec::runtime::Process>,
    linux: Option<&oci_spec::runtime::Linux>,
) -> Result<(), SpecError> {
    crate::process::sched::check(process, linux)
        .map_err(|(field, reason)| invalid(field, reason))?;
    let Some(caps) = process.and_then(|p| p.capabilities().as_ref()) else {
        return Ok(());
    };
    // A capability outside the bounding set cannot be held across exec: refuse the spec
    // instead of dropping it silently.
    if let Some(bounding) = caps.bounding() {
        for (name, set) in [
            ("effective", caps.effective()),
            ("permitted", caps.permitted()),
            ("inheritable", caps.inheritable()),
            ("ambient", caps.ambient()),
        ] {
            let mut missing: Vec<String> = set
                .iter()
                .flatten()
                .filter(|c| !bounding.contains(c))
                .map(|c| format!("CAP_{c}"))
                .collect();
            missing.sort();
            if !missing.is_empty() {
                return Err(invalid(
                    format!("process.capabilities.{name}"),
                    format!("{} not in the bounding set", missing.join(", ")),
                ));
            }
        }
    }
    Ok(())
}

/// The container's cgroup resources, with an allow rule added for every `linux.devices` node
/// (device rules fail closed, so the container must be allowed the devices it is given).
pub fn effective_resources(
    linux: &oci_spec::runtime::Linux,
) -> Option<oci_spec::runtime::LinuxResources> {
    let nodes = linux.devices().as_deref().unwrap_or_default();
    let mut res = match linux.resources().clone() {
        Some(r) => r,
        None if !nodes.is_empty() => oci_spec::runtime::LinuxResources::default(),
        None => return None,
    };
    if !nodes.is_empty() {
        let mut rules = res.devices().clone().unwrap_or_default();
        for d in nodes {
            let rule = serde_json::json!({
                "allow": true,
                "type": d.typ(),
                "major": d.major(),
                "minor": d.minor(),
                "access": "rwm",
            });
            if let Ok(r) = serde_json::from_value(rule) {
                rules.push(r);
            }
        }
        res.set_devices(Some(rules));
    }
    Some(res)
}

/// True for a new mount namespace, or a path to one that is not the runtime's own.
fn is_foreign_mount_ns(ns: &oci_spec::runtime::LinuxNamespace) -> bool {
    is_foreign_ns(ns, "mnt")
}

/// Whether `ns` is a namespace other than the runtime's own of `kind` (`mnt`, `net`…): a new
/// one, or a path to another.
fn is_foreign_ns(ns: &oci_spec::runtime::LinuxNamespace, kind: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(path) = ns.path() else { return true };
    match (
        std::fs::metadata(path),
        std::fs::metadata(format!("/proc/self/ns/{kind}")),
    ) {
        (Ok(theirs), Ok(ours)) => (theirs.dev(), theirs.ino()) != (ours.dev(), ours.ino()),
        // A path that cannot be read fails later, when it is opened, with its own error.
        (Err(_), _) => true,
        (_, Err(_)) => false,
    }
}

/// The paths runc's default configuration masks (runc 1.2/1.3 `runc spec`): kernel memory,
/// keys, timers, ACPI, sound, SCSI, firmware and the RAPL power-capping counters.
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// runc's rule for `linux.sysctl`: only keys the container's own namespaces isolate — IPC
/// (`kernel.msg*`, `kernel.sem`, `kernel.shm*`, `fs.mqueue.*`), network (`net.*`, never in the
/// host's network namespace) and UTS (`kernel.domainname`); anything else (e.g.
/// `kernel.core_pattern`) would change the host and is refused.
fn check_sysctl(
    key: &str,
    namespaces: &[oci_spec::runtime::LinuxNamespace],
) -> Result<(), SpecError> {
    let field = format!("linux.sysctl[{key}]");
    let norm = key.replace('/', ".");
    if norm.split('.').any(|seg| seg.is_empty() || seg == "..")
        || !norm
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-*".contains(&b))
    {
        return Err(invalid(field, "not a sysctl name"));
    }
    let find = |t: LinuxNamespaceType| namespaces.iter().find(|n| n.typ() == t);
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if IPC.contains(&norm.as_str()) || norm.starts_with("fs.mqueue.") {
        return match find(LinuxNamespaceType::Ipc) {
            Some(_) => Ok(()),
            None => Err(invalid(
                field,
                "needs an ipc namespace of the container's own",
            )),
        };
    }
    if norm.starts_with("net.") {
        return match find(LinuxNamespaceType::Network) {
            Some(ns) if is_foreign_ns(ns, "net") => Ok(()),
            Some(_) => Err(invalid(
                field,
                "not allowed in the host's network namespace",
            )),
            None => Err(invalid(
                field,
                "needs a network namespace of the container's own",
            )),
        };
    }
    if norm == "kernel.domainname" {
        return match find(LinuxNamespaceType::Uts) {
            Some(_) => Ok(()),
            None => Err(invalid(
                field,
                "needs a uts namespace of the container's own",
            )),
        };
    }
    if norm == "kernel.hostname" {
        return Err(invalid(
            field,
            "not allowed: set the container's hostname with \"hostname\"",
        ));
    }
    Err(invalid(
        field,
        "is not in a separate kernel namespace: it would change the host",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_namespaced_sysctls_are_allowed() {
        let ns = |t: &str, path: Option<&str>| {
            let mut v = serde_json::json!({"type": t});
            if let Some(p) = path {
                v["path"] = serde_json::json!(p);
            }
            serde_json::from_value::<oci_spec::runtime::LinuxNamespace>(v).unwrap()
        };
        let own = [ns("ipc", None), ns("network", None), ns("uts", None)];
        for ok in [
            "kernel.shmmax",
            "fs.mqueue.msg_max",
            "net.ipv4.ip_forward",
            "net/ipv4/ping_group_range",
            "kernel.domainname",
        ] {
            assert!(check_sysctl(ok, &own).is_ok(), "{ok}");
        }
        let refused = |key: &str, nss: &[oci_spec::runtime::LinuxNamespace]| {
            check_sysctl(key, nss).unwrap_err().to_string()
        };
        assert!(refused("kernel.core_pattern", &own).contains("would change the host"));
        assert!(refused("vm.overcommit_memory", &own).contains("would change the host"));
        assert!(refused("kernel.hostname", &own).contains("hostname"));
        assert!(refused("net.ipv4.ip_forward", &[]).contains("network namespace"));
        assert!(refused("kernel.shmmax", &[]).contains("ipc namespace"));
        let host_net = [ns("network", Some("/proc/self/ns/net"))];
        assert!(refused("net.ipv4.ip_forward", &host_net).contains("host's network namespace"));
        assert!(refused("net/../../kernel/core_pattern", &own).contains("not a sysctl name"));
        // Through bundle validation, as `create` sees it.
        let hostile = GOOD.replace(
            r#""linux":{"#,
            r#""linux":{"sysctl":{"kernel.core_pattern":"|/tmp/x"},"#,
        );
        let (_d, r) = bundle_with(&hostile);
        let Err(err) = r else {
            panic!("kernel.core_pattern was accepted")
        };
        let err = err.to_string();
        assert!(err.contains("linux.sysctl[kernel.core_pattern]"), "{err}");
    }

    fn bundle_with(config: &str) -> (tempfile::TempDir, Result<Bundle, SpecError>) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("rootfs")).unwrap();
        std::fs::write(d.path().join("config.json"), config).unwrap();
        let r = load_bundle(d.path());
        (d, r)
    }

    const GOOD: &str = r#"{"ociVersion":"1.2.0","root":{"path":"rootfs"},"process":{"cwd":"/","args":["sh"],"user":{"uid":0,"gid":0}},
        "linux":{"namespaces":[{"type":"pid"},{"type":"mount"}]}}"#;

    #[test]
    fn accepts_a_minimal_bundle() {
        let (d, r) = bundle_with(GOOD);
        let b = r.unwrap();
        assert_eq!(b.rootfs, d.path().join("rootfs").canonicalize().unwrap());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (GOOD.replace("1.2.0", "0.9.0"), "ociVersion"),
            (
                GOOD.replace(r#""args":["sh"]"#, r#""args":[]"#),
                "process.args",
            ),
            (
                GOOD.replace(r#""path":"rootfs""#, r#""path":"nope""#),
                "root.path",
            ),
            (
                GOOD.replace(r#"{"type":"mount"}"#, r#"{"type":"pid"}"#),
                "linux.namespaces[1]",
            ),
            (
                GOOD.replace(r#""cwd":"/""#, r#""cwd":"rel""#),
                "process.cwd",
            ),
            (
                GOOD.replace(
                    r#"{"type":"mount"}"#,
                    r#"{"type":"network","path":"/nonexistent/ns"}"#,
                ),
                "linux.namespaces[1].path",
            ),
        ];
        for (config, field) in cases {
            let (_d, r) = bundle_with(&config);
            let e = r.unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn malformed_json_and_unknown_namespaces_are_parse_errors() {
        let (_d, r) = bundle_with("{not json");
        assert!(matches!(r, Err(SpecError::Parse { .. })));
        let (_d, r) = bundle_with(&GOOD.replace(r#"{"type":"mount"}"#, r#"{"type":"bogus"}"#));
        let e = r.unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
    }
}
