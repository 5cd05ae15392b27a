//! Device rules on cgroup v2: an eBPF `BPF_PROG_TYPE_CGROUP_DEVICE` program compiled from the
//! OCI rules and attached to the container's cgroup (v2 has no devices controller files).
//!
//! Semantics follow the v1 devices controller the rules were written for: rules apply in
//! order and a later rule overrides an earlier one, so the program checks them last to first
//! and the first match decides. An access no rule matches is denied (fail closed, as runc's
//! cgroup v2 filter does): a rule list without a leading deny-all does not become allow-all.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::CgroupError;

use crate::bpf::op::{
    ALU64_AND_K, ALU64_MOV_K, ALU64_MOV_X, ALU64_RSH_K, JMP_EXIT, JMP_JNE_K, LDX_MEM_W,
};
pub use crate::bpf::Insn;
use crate::bpf::{bpf, cmd, insn, Attr};

// bpf_cgroup_dev_ctx: access_type = (access << 16) | type; then major, minor.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

fn access_bits(access: &str) -> i32 {
    access.chars().fold(0, |a, c| {
        a | match c {
            'm' => ACC_MKNOD,
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            _ => 0,
        }
    })
}

/// Compiles `rules` into a device program.
pub fn compile(rules: &[LinuxDeviceCgroup]) -> Vec<Insn> {
    // r2 = access, r3 = type, r4 = major, r5 = minor.
    let mut prog = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU64_MOV_X, 3, 2, 0, 0),
        insn(ALU64_AND_K, 3, 0, 0, 0xffff),
        insn(ALU64_RSH_K, 2, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        let mut checks: Vec<Insn> = Vec::new();
        match rule.typ() {
            Some(LinuxDeviceType::B) => checks.push(insn(JMP_JNE_K, 3, 0, 0, DEV_BLOCK)),
            Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => {
                checks.push(insn(JMP_JNE_K, 3, 0, 0, DEV_CHAR))
            }
            // A fifo is not a device the controller sees: the rule can never match.
            Some(LinuxDeviceType::P) => continue,
            Some(LinuxDeviceType::A) | None => {}
        }
        let acc = access_bits(rule.access().as_deref().unwrap_or("rwm"));
        let mut pre = Vec::new();
        if acc != ACC_MKNOD | ACC_READ | ACC_WRITE {
            // Match only if every requested bit is in the rule: (access & ~acc) == 0.
            pre.push(insn(ALU64_MOV_X, 6, 2, 0, 0));
            pre.push(insn(ALU64_AND_K, 6, 0, 0, !acc & 7));
            checks.push(insn(JMP_JNE_K, 6, 0, 0, 0));
        }
        if let Some(major) = rule.major() {
            checks.push(insn(JMP_JNE_K, 4, 0, 0, major as i32));
        }
        if let Some(minor) = rule.minor() {
            checks.push(insn(JMP_JNE_K, 5, 0, 0, minor as i32));
        }
        let decide = [
            insn(ALU64_MOV_K, 0, 0, 0, i32::from(rule.allow())),
            insn(JMP_EXIT, 0, 0, 0, 0),
        ];
        // Each failed check jumps past the rest of this rule's block.
        let n = checks.len();
        prog.extend(pre);
        for (i, mut c) in checks.into_iter().enumerate() {
            c.off = (n - 1 - i + decide.len()) as i16;
            prog.push(c);
        }
        prog.extend(decide);
        if n == 0 {
            // A rule that matches everything decides alone; code after it would be
            // unreachable, which the verifier refuses.
            return prog;
        }
    }
    // No rule matched: deny.
    prog.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    prog.push(insn(JMP_EXIT, 0, 0, 0, 0));
    prog
}

const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl Fn(std::io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn load(prog: &[Insn]) -> std::io::Result<OwnedFd> {
    crate::bpf::load(BPF_PROG_TYPE_CGROUP_DEVICE, 0, prog)
}

/// Programs attached to `cgroup` as device filters.
fn attached(cgroup: &OwnedFd) -> std::io::Result<Vec<OwnedFd>> {
    crate::bpf::prog_query(cgroup, BPF_CGROUP_DEVICE)?
        .into_iter()
        .map(crate::bpf::prog_fd_by_id)
        .collect()
}

/// Loads the program for `rules` and makes it the only device filter of the cgroup v2
/// directory `dir` (earlier filters from a previous `update` are detached).
pub fn apply(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<(), CgroupError> {
    let prog = load(&compile(rules)).map_err(io_err(dir, "load device filter"))?;
    let cgroup: OwnedFd = std::fs::File::open(dir)
        .map_err(io_err(dir, "open cgroup"))?
        .into();
    let old = attached(&cgroup).map_err(io_err(dir, "query device filters"))?;
    let mut attr = Attr::new()
        .u32(0, cgroup.as_raw_fd() as u32)
        .u32(4, prog.as_raw_fd() as u32)
        .u32(8, BPF_CGROUP_DEVICE)
        .u32(12, BPF_F_ALLOW_MULTI);
    bpf(cmd::PROG_ATTACH, &mut attr).map_err(io_err(dir, "attach device filter"))?;
    for o in old {
        let mut attr = Attr::new()
            .u32(0, cgroup.as_raw_fd() as u32)
            .u32(4, o.as_raw_fd() as u32)
            .u32(8, BPF_CGROUP_DEVICE);
        bpf(cmd::PROG_DETACH, &mut attr).map_err(io_err(dir, "detach old device filter"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(json: &str) -> Vec<LinuxDeviceCgroup> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn jumps_land_on_the_next_rule() {
        let p = compile(&rules(
            r#"[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":3,"access":"rw"}]"#,
        ));
        // Header (6) + allow rule: mov, and, jne access, jne type… then the deny-all rule.
        let exits: Vec<usize> = p
            .iter()
            .enumerate()
            .filter(|(_, i)| i.code == JMP_EXIT)
            .map(|(n, _)| n)
            .collect();
        // The allow rule's exit, then the deny-all rule decides alone (no default after it).
        assert_eq!(exits.len(), 2, "{p:?}");
        for (n, i) in p.iter().enumerate() {
            if i.code == JMP_JNE_K {
                let target = n + 1 + i.off as usize;
                // Every failed check lands right after an exit (the next rule or the default).
                assert!(
                    exits.contains(&(target - 1)),
                    "jump at {n} lands at {target}: {p:?}"
                );
            }
        }
    }
}
