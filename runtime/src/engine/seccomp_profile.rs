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
    fn the_profile_is_a_valid_oci_seccomp_object_that_compiles() {
        let p = runtime_default(&[]);
        let s: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(p).unwrap();
        crate::seccomp::compile(&s).unwrap();
    }
}
