//! The User-Mode Linux backend: Debian's `linux.uml` with the host's `/` as its root (`hostfs`).

use std::path::Path;
use std::process::Command;

/// The command that boots UML with `init` as its first process.
pub(super) fn command(kernel: &Path, memory_mib: u32, init: &Path, run_dir: &Path) -> Command {
    let mut cmd = Command::new(kernel);
    cmd.arg(format!("mem={memory_mib}M"))
        .args(["rootfstype=hostfs", "rootflags=/", "rw", "quiet"])
        .arg(format!("init={}", init.display()))
        .args(["con0=fd:0,fd:1", "con=null"])
        // UML keeps its guest memory in a file under TMPDIR; keep it away from shared dirs.
        .env("TMPDIR", run_dir);
    cmd
}

/// True when this CPU has AMX tiles, on which `linux.uml` panics at boot
/// ("ptrace set fp regs failed"): its extended FPU state is too large for UML's ptrace layer.
pub(super) fn cpu_has_amx() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| cpuinfo_has_amx(&s))
        .unwrap_or(false)
}

fn cpuinfo_has_amx(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "amx_tile"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amx_is_read_from_the_flags_line() {
        assert!(cpuinfo_has_amx(
            "flags\t\t: fpu sse2 amx_bf16 amx_tile amx_int8\n"
        ));
        assert!(!cpuinfo_has_amx(
            "flags\t\t: fpu sse2 avx512f\nmodel name: amx_tile-ish\n"
        ));
    }
}
