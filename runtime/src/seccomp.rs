//! `linux.seccomp` compiled to a BPF filter with libseccomp, loaded into the calling process.
//!
//! Rules follow runc's reading of the spec: unknown syscall names are skipped (they do not
//! exist on this kernel/arch), rules whose action equals the default action are dropped,
//! several conditions on one argument become one rule per condition, and libseccomp is told
//! not to set `no_new_privs` itself (only `process.noNewPrivileges` decides that).

use std::os::fd::{FromRawFd, OwnedFd};
use std::str::FromStr;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

/// A `linux.seccomp` that cannot be compiled or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// An architecture libseccomp does not know.
    #[error("linux.seccomp.architectures: unknown architecture {0}")]
    Arch(String),
    /// A rule libseccomp refused.
    #[error("linux.seccomp.syscalls: rule for {syscall}: {reason}")]
    Rule {
        /// The syscall name.
        syscall: String,
        /// libseccomp's reason.
        reason: String,
    },
    /// `SCMP_ACT_NOTIFY` used where it cannot work.
    #[error("linux.seccomp: {0}")]
    Notify(&'static str),
    /// A flag this libseccomp cannot apply.
    #[error("linux.seccomp.flags: {0}")]
    Flag(String),
    /// libseccomp failed to build or load the filter.
    #[error("seccomp {0}: {1}")]
    Lib(&'static str, String),
}

/// The actions, operators and architectures `features` reports as supported.
pub const ACTIONS: &[&str] = &[
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_TRAP",
];

/// Comparison operators supported in `args`.
pub const OPERATORS: &[&str] = &[
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_LE",
    "SCMP_CMP_LT",
    "SCMP_CMP_MASKED_EQ",
    "SCMP_CMP_NE",
];

/// Filter flags supported in `flags`.
pub const FLAGS: &[&str] = &[
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_TSYNC",
];

/// Architectures accepted in `architectures`.
pub const ARCHES: &[&str] = &[
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
];

fn lib(what: &'static str) -> impl Fn(libseccomp::error::SeccompError) -> SeccompError {
    move |e| SeccompError::Lib(what, e.to_string())
}

/// Whether any rule (or the default) uses `SCMP_ACT_NOTIFY`.
pub fn uses_notify(seccomp: &LinuxSeccomp) -> bool {
    seccomp.default_action() == LinuxSeccompAction::ScmpActNotify
        || seccomp
            .syscalls()
            .iter()
            .flatten()
            .any(|s| s.action() == LinuxSeccompAction::ScmpActNotify)
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> ScmpAction {
    let errno = errno.map(|e| e as i32).unwrap_or(libc::EPERM);
    match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(errno as u16),
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
    }
}

fn operator(op: LinuxSeccompOperator, value: u64, value_two: u64) -> (ScmpCompareOp, u64) {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, value),
        LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, value),
        LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, value),
        LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, value),
        LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, value),
        LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, value),
        // The spec's value is the mask, valueTwo the datum compared after masking.
        LinuxSeccompOperator::ScmpCmpMaskedEq => (ScmpCompareOp::MaskedEqual(value), value_two),
    }
}

fn spec_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Compiles `seccomp` into a libseccomp filter (not yet loaded).
pub fn compile(seccomp: &LinuxSeccomp) -> Result<ScmpFilterContext, SeccompError> {
    if seccomp.default_action() == LinuxSeccompAction::ScmpActNotify {
        return Err(SeccompError::Notify(
            "defaultAction SCMP_ACT_NOTIFY would also trap the runtime's own calls",
        ));
    }
    if uses_notify(seccomp) && seccomp.listener_path().is_none() {
        return Err(SeccompError::Notify(
            "SCMP_ACT_NOTIFY needs listenerPath to hand the notify fd to",
        ));
    }
    let default = action(seccomp.default_action(), seccomp.default_errno_ret());
    let mut ctx = ScmpFilterContext::new(default).map_err(lib("init"))?;
    ctx.set_ctl_nnp(false)
        .map_err(lib("no_new_privs control"))?;
    for arch in seccomp.architectures().iter().flatten() {
        let name = spec_name(arch);
        let a = ScmpArch::from_str(&name).map_err(|_| SeccompError::Arch(name.clone()))?;
        if !ctx.is_arch_present(a).map_err(lib("arch"))? {
            ctx.add_arch(a)
                .map_err(|e| SeccompError::Lib("add arch", format!("{name}: {e}")))?;
        }
    }
    for flag in seccomp.flags().iter().flatten() {
        match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => ctx.set_ctl_log(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => ctx.set_ctl_tsync(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => ctx.set_ctl_ssb(true),
            // Needs libseccomp 2.6 (Debian 12 has 2.5): refuse rather than ignore.
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                return Err(SeccompError::Flag(
                    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs libseccomp >= 2.6".into(),
                ))
            }
        }
        .map_err(|e| SeccompError::Flag(format!("{}: {e}", spec_name(flag))))?;
    }
    for rule in seccomp.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret());
        if act == default {
            continue;
        }
        let mut conds = Vec::new();
        for arg in rule.args().iter().flatten() {
            let (op, datum) = operator(arg.op(), arg.value(), arg.value_two().unwrap_or(0));
            conds.push(ScmpArgCompare::new(arg.index() as u32, op, datum));
        }
        // libseccomp cannot AND two conditions on one argument; like runc, each becomes its
        // own rule (an OR).
        let mut seen = std::collections::HashSet::new();
        let split = !rule.args().iter().flatten().all(|a| seen.insert(a.index()));
        for name in rule.names() {
            let Ok(sys) = ScmpSyscall::from_name(name) else {
                tracing::debug!(syscall = %name, "seccomp: unknown syscall skipped");
                continue;
            };
            let rule_err = |e: libseccomp::error::SeccompError| SeccompError::Rule {
                syscall: name.clone(),
                reason: e.to_string(),
            };
            if split {
                for c in &conds {
                    ctx.add_rule_conditional(act, sys, std::slice::from_ref(c))
                        .map_err(rule_err)?;
                }
            } else if conds.is_empty() {
                ctx.add_rule(act, sys).map_err(rule_err)?;
            } else {
                ctx.add_rule_conditional(act, sys, &conds)
                    .map_err(rule_err)?;
            }
        }
    }
    Ok(ctx)
}

/// Loads a compiled filter into this thread. Returns the notify fd when the filter uses
/// `SCMP_ACT_NOTIFY`.
pub fn load(ctx: &ScmpFilterContext, notify: bool) -> Result<Option<OwnedFd>, SeccompError> {
    ctx.load().map_err(lib("load"))?;
    if !notify {
        return Ok(None);
    }
    let fd = ctx.get_notify_fd().map_err(lib("notify fd"))?;
    // SAFETY: libseccomp returned a new fd that this process owns from now on.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).expect("valid seccomp json")
    }

    #[test]
    fn compiles_rules_with_args_and_skips_unknown_syscalls() {
        let s = spec(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],
                "syscalls":[{"names":["mkdir","no_such_syscall_xyz"],"action":"SCMP_ACT_ERRNO","errnoRet":1},
                            {"names":["personality"],"action":"SCMP_ACT_ERRNO",
                             "args":[{"index":0,"value":8,"op":"SCMP_CMP_NE"},{"index":0,"value":0,"op":"SCMP_CMP_NE"}]},
                            {"names":["getpid"],"action":"SCMP_ACT_ALLOW"}]}"#,
        );
        let ctx = compile(&s).expect("compiles");
        let out = tempfile::tempfile().unwrap();
        ctx.export_bpf(&out).expect("export");
        let len = out.metadata().unwrap().len();
        // BPF instructions are 8 bytes each; a filter with these rules is more than a handful.
        assert!(len > 8 * 8 && len.is_multiple_of(8), "{len}");
    }

    #[test]
    fn notify_without_listener_is_refused() {
        let s = spec(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        );
        let e = compile(&s).unwrap_err().to_string();
        assert!(e.contains("listenerPath"), "{e}");
        let s = spec(r#"{"defaultAction":"SCMP_ACT_NOTIFY","listenerPath":"/x"}"#);
        assert!(compile(&s).is_err());
    }

    #[test]
    fn unknown_architecture_is_named() {
        // oci-spec refuses unknown names at parse time, so this exercises a name libseccomp
        // might not support; every spec name must map.
        for name in ARCHES {
            assert!(ScmpArch::from_str(name).is_ok(), "{name}");
        }
        let s: Result<LinuxSeccomp, _> = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_VAX"]}"#,
        );
        assert!(s.is_err());
    }
}
