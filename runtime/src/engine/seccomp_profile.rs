//! The runtime's default seccomp profile (Kubernetes' `RuntimeDefault`), as an OCI
//! `linux.seccomp` object. It has the effect of Docker's and containerd's default profile for
//! an unprivileged container: every call is allowed except the ones that reach kernel state a
//! container must not touch — keyrings, eBPF, kernel modules, kexec, mounts and
//! namespaces (`unshare`/`clone` with `CLONE_NEWUSER` included), time, tracing other
//! processes, `userfaultfd`, `open_by_handle_at`, io_uring — which fail with `EPERM`.
//! `clone3` fails with `ENOSYS` (its flags sit in memory a filter cannot read; libc then
//! falls back to `clone`, whose flags are checked). As in Docker, a capability the container
//! was given (`CAP_SYS_ADMIN`, `CAP_SYS_PTRACE`, …) lifts the rules that capability is for.

use serde_json::{json, Value};

/// `CLONE_NEWUSER`.
const CLONE_NEWUSER: u64 = 0x1000_0000;
/// Calls denied unless the container holds the capability that governs them (`None`: always).
const DENIED: &[(&[&str], Option<&str>)] = &[
    (&["add_key", "keyctl", "request_key"], None),
    (&["userfaultfd"], None),
    (
        &["io_uring_setup", "io_uring_enter", "io_uring_register"],
        None,
    ),
    (
        &[
            "uselib",
            "ustat",
            "sysfs",
            "_sysctl",
            "nfsservctl",
            "vm86",
            "vm86old",
            "lookup_dcookie",
        ],
        None,
    ),
    (&["create_module", "get_kernel_syms", "query_module"], None),
    (
        &["init_module", "finit_module", "delete_module"],
        Some("CAP_SYS_MODULE"),
    ),
    (
        &["kexec_load", "kexec_file_load", "reboot"],
        Some("CAP_SYS_BOOT"),
    ),
    (
        &[
            "mount",
            "umount",
            "umount2",
            "pivot_root",
            "setns",
            "swapon",
            "swapoff",
            "quotactl",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "move_mount",
            "open_tree",
            "mount_setattr",
            "name_to_handle_at",
            "bpf",
            "perf_event_open",
            "fanotify_init",
        ],
        Some("CAP_SYS_ADMIN"),
    ),
    (&["open_by_handle_at"], Some("CAP_DAC_READ_SEARCH")),
    (
        &[
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "kcmp",
            "pidfd_getfd",
        ],
        Some("CAP_SYS_PTRACE"),
    ),
    (
        &[
            "settimeofday",
            "stime",
            "clock_settime",
            "clock_adjtime",
            "adjtimex",
        ],
        Some("CAP_SYS_TIME"),
    ),
    (&["acct"], Some("CAP_SYS_PACCT")),
    (&["iopl", "ioperm"], Some("CAP_SYS_RAWIO")),
    (&["syslog"], Some("CAP_SYSLOG")),
    (
        &["mbind", "set_mempolicy", "move_pages", "migrate_pages"],
        Some("CAP_SYS_NICE"),
    ),
];

/// The default profile for a container whose capability set is `caps` (`CAP_…` names).
pub fn runtime_default(caps: &[String]) -> Value {
    let has = |c: &str| caps.iter().any(|x| x == c);
    let mut names: Vec<&str> = Vec::new();
    for (calls, cap) in DENIED {
        if cap.is_none_or(|c| !has(c)) {
            names.extend_from_slice(calls);
        }
    }
    let eperm = libc::EPERM as u32;
    let mut syscalls = vec![
        json!({"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": eperm}),
        json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS as u32}),
    ];
    // New namespaces: only CLONE_NEWUSER can succeed without CAP_SYS_ADMIN, and it is the
    // door to most kernel attack surface; with CAP_SYS_ADMIN all are allowed, as in Docker.
    if !has("CAP_SYS_ADMIN") {
        let mask = |index: u32, bits: u64| json!({"index": index, "value": bits, "valueTwo": bits, "op": "SCMP_CMP_MASKED_EQ"});
        syscalls.push(json!({
            "names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": eperm,
            "args": [mask(0, CLONE_NEWUSER)]
        }));
        // clone(flags, …) on x86_64 and most others; s390x swaps the first two arguments.
        syscalls.push(json!({
            "names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": eperm,
            "args": [mask(0, CLONE_NEWUSER)]
        }));
    }
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "syscalls": syscalls,
    })
}

/// This machine's architecture in the names Docker profiles use (`includes.arches`).
fn native_arches() -> (&'static str, &'static [&'static str]) {
    match std::env::consts::ARCH {
        "x86_64" => ("SCMP_ARCH_X86_64", &["amd64", "x86_64"]),
        "aarch64" => ("SCMP_ARCH_AARCH64", &["arm64", "aarch64"]),
        "x86" => ("SCMP_ARCH_X86", &["386", "x86"]),
        "arm" => ("SCMP_ARCH_ARM", &["arm"]),
        "s390x" => ("SCMP_ARCH_S390X", &["s390x"]),
        "powerpc64" => ("SCMP_ARCH_PPC64LE", &["ppc64le"]),
        "riscv64" => ("SCMP_ARCH_RISCV64", &["riscv64"]),
        _ => ("", &[]),
    }
}

/// `major.minor` of the running kernel.
fn kernel_version() -> (u32, u32) {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let mut next = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (next(), next())
}

/// Whether a Docker-format rule applies: every `includes` condition holds (all its caps held,
/// this architecture listed, the kernel new enough) and no `excludes` condition does (none of
/// its caps held, this architecture not listed, the kernel not new enough).
fn rule_applies(rule: &Value, caps: &[String]) -> Result<bool, String> {
    let list = |v: &Value, k: &str| -> Vec<String> {
        v.get(k)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    };
    let (_, arch_names) = native_arches();
    let kernel = kernel_version();
    let min_kernel = |v: &Value| -> Result<Option<bool>, String> {
        match v
            .get("minKernel")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            None => Ok(None),
            Some(text) => {
                let mut it = text.split('.');
                let mut parse = || {
                    it.next()
                        .and_then(|x| x.parse::<u32>().ok())
                        .ok_or_else(|| {
                            format!("seccomp profile: minKernel {text:?} is not MAJOR.MINOR")
                        })
                };
                Ok(Some(kernel >= (parse()?, parse()?)))
            }
        }
    };
    let known = ["caps", "arches", "minKernel"];
    for key in ["includes", "excludes"] {
        if let Some(obj) = rule.get(key).and_then(Value::as_object) {
            if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
                return Err(format!("seccomp profile: unknown {key} condition {k:?}"));
            }
        }
    }
    if let Some(inc) = rule.get("includes") {
        if !list(inc, "caps").iter().all(|c| caps.contains(c)) {
            return Ok(false);
        }
        let arches = list(inc, "arches");
        if !arches.is_empty() && !arches.iter().any(|a| arch_names.contains(&a.as_str())) {
            return Ok(false);
        }
        if min_kernel(inc)? == Some(false) {
            return Ok(false);
        }
    }
    if let Some(exc) = rule.get("excludes") {
        if list(exc, "caps").iter().any(|c| caps.contains(c)) {
            return Ok(false);
        }
        if list(exc, "arches")
            .iter()
            .any(|a| arch_names.contains(&a.as_str()))
        {
            return Ok(false);
        }
        if min_kernel(exc)? == Some(true) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A user's seccomp profile as an OCI `linux.seccomp` object. OCI objects pass through;
/// Docker/podman-format profiles (`archMap`, rules with `includes`/`excludes` on capabilities,
/// architectures and kernel versions, `name` for one call, `comment`) are resolved for a
/// container holding `caps`, as Docker and podman do when they load them.
pub fn from_user_profile(profile: &Value, caps: &[String]) -> Result<Value, String> {
    let obj = profile
        .as_object()
        .ok_or("seccomp profile: not a JSON object")?;
    let mut out = serde_json::Map::new();
    for (k, v) in obj {
        match k.as_str() {
            "archMap" | "syscalls" | "comment" => {}
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(map) = obj.get("archMap").and_then(Value::as_array) {
        let (native, _) = native_arches();
        let mut arches = Vec::new();
        for entry in map {
            if entry.get("architecture").and_then(Value::as_str) == Some(native) {
                arches.push(json!(native));
                arches.extend(
                    entry
                        .get("subArchitectures")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .cloned(),
                );
            }
        }
        out.insert("architectures".into(), json!(arches));
    }
    let mut syscalls = Vec::new();
    for rule in obj
        .get("syscalls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if !rule_applies(rule, caps)? {
            continue;
        }
        let mut r = serde_json::Map::new();
        for (k, v) in rule.as_object().into_iter().flatten() {
            match k.as_str() {
                "includes" | "excludes" | "comment" => {}
                "name" => {
                    r.insert("names".into(), json!([v]));
                }
                _ => {
                    r.insert(k.clone(), v.clone());
                }
            }
        }
        syscalls.push(Value::Object(r));
    }
    out.insert("syscalls".into(), json!(syscalls));
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(p: &Value) -> Vec<String> {
        p["syscalls"][0]["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn capabilities_lift_only_their_own_rules() {
        let p = runtime_default(&[]);
        let d = denied(&p);
        for call in [
            "keyctl",
            "bpf",
            "mount",
            "ptrace",
            "kexec_load",
            "open_by_handle_at",
        ] {
            assert!(d.iter().any(|n| n == call), "{call} not denied");
        }
        assert!(!d.iter().any(|n| n == "read" || n == "clone"));
        assert_eq!(p["syscalls"].as_array().unwrap().len(), 4);
        let p = runtime_default(&["CAP_SYS_PTRACE".into()]);
        let d = denied(&p);
        assert!(!d.iter().any(|n| n == "ptrace") && d.iter().any(|n| n == "mount"));
        // With CAP_SYS_ADMIN: mounts and namespaces allowed, keyrings still not.
        let p = runtime_default(&["CAP_SYS_ADMIN".into()]);
        let d = denied(&p);
        assert!(!d.iter().any(|n| n == "mount") && d.iter().any(|n| n == "keyctl"));
        assert_eq!(p["syscalls"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn docker_profiles_resolve_for_the_containers_capabilities() {
        let docker = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "archMap": [
                {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
                {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
            ],
            "syscalls": [
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "comment": "x",
                 "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"name": "ptrace", "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_PTRACE"]}},
                {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO", "includes": {"minKernel": "99.0"}}
            ]
        });
        let p = from_user_profile(&docker, &[]).unwrap();
        assert!(p.get("archMap").is_none());
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(
                p["architectures"],
                json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"])
            );
        }
        let names: Vec<&Value> = p["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| &r["names"])
            .collect();
        assert_eq!(names, vec![&json!(["mkdir"])]);
        assert!(p["syscalls"][0].get("comment").is_none());
        let p =
            from_user_profile(&docker, &["CAP_SYS_ADMIN".into(), "CAP_SYS_PTRACE".into()]).unwrap();
        assert_eq!(
            p["syscalls"],
            json!([{"names": ["ptrace"], "action": "SCMP_ACT_ALLOW"}])
        );
        let s: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(p).unwrap();
        crate::seccomp::compile(&s).unwrap();
        let bad = json!({"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "includes": {"fly": 1}}]});
        assert!(from_user_profile(&bad, &[])
            .unwrap_err()
            .contains("\"fly\""));
        // An OCI object passes through unchanged.
        let oci = runtime_default(&[]);
        assert_eq!(from_user_profile(&oci, &[]).unwrap(), oci);
    }

    #[test]
    fn the_profile_is_a_valid_oci_seccomp_object_that_compiles() {
        let p = runtime_default(&[]);
        let s: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(p).unwrap();
        crate::seccomp::compile(&s).unwrap();
    }
}
