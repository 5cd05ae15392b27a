//! Scheduling and memory settings of a container process: `process.scheduler`,
//! `process.ioPriority`, `process.execCPUAffinity`, `linux.memoryPolicy` and
//! `linux.personality`. [`check`] validates them before anything is forked (each error names
//! its field); the `apply_*` functions make the calls from the process being set up.

use oci_spec::runtime::{
    IOPriorityClass, Linux, LinuxMemoryPolicy, LinuxPersonalityDomain, LinuxSchedulerFlag,
    LinuxSchedulerPolicy, MemoryPolicyFlagType, MemoryPolicyModeType, Process, Scheduler,
};

/// The scheduling policies [`apply_process`] sets, by their spec names.
pub const POLICIES: &[&str] = &[
    "SCHED_OTHER",
    "SCHED_FIFO",
    "SCHED_RR",
    "SCHED_BATCH",
    "SCHED_IDLE",
    "SCHED_DEADLINE",
];

/// The scheduler flags [`apply_process`] passes on, as `config.json` spells them.
pub fn scheduler_flag_names() -> Vec<String> {
    use LinuxSchedulerFlag::*;
    [
        SchedResetOnFork,
        SchedFlagReclaim,
        SchedFlagDLOverrun,
        SchedFlagKeepPolicy,
        SchedFlagKeepParams,
        SchedFlagUtilClampMin,
        SchedFlagUtilClampMax,
    ]
    .iter()
    .filter_map(|f| serde_json::to_value(f).ok()?.as_str().map(str::to_string))
    .collect()
}

/// The memory policy modes [`apply_linux`] sets.
pub const MEMORY_POLICY_MODES: &[&str] = &[
    "MPOL_DEFAULT",
    "MPOL_BIND",
    "MPOL_INTERLEAVE",
    "MPOL_WEIGHTED_INTERLEAVE",
    "MPOL_PREFERRED",
    "MPOL_PREFERRED_MANY",
    "MPOL_LOCAL",
];

/// The memory policy flags [`apply_linux`] passes on.
pub const MEMORY_POLICY_FLAGS: &[&str] = &[
    "MPOL_F_NUMA_BALANCING",
    "MPOL_F_RELATIVE_NODES",
    "MPOL_F_STATIC_NODES",
];

/// Parses a CPU or NUMA node list (`0-3,7`) into its members, ascending.
pub fn parse_list(text: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim) {
        let num = |s: &str| {
            s.parse::<usize>()
                .map_err(|_| format!("{text:?}: {s:?} is not a number"))
        };
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let n = num(part)?;
                (n, n)
            }
        };
        if lo > hi || hi >= 1 << 16 {
            return Err(format!("{text:?}: bad range {part:?}"));
        }
        out.extend(lo..=hi);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn policy_number(p: LinuxSchedulerPolicy) -> Result<u32, String> {
    Ok(match p {
        LinuxSchedulerPolicy::SchedOther => 0,
        LinuxSchedulerPolicy::SchedFifo => 1,
        LinuxSchedulerPolicy::SchedRr => 2,
        LinuxSchedulerPolicy::SchedBatch => 3,
        LinuxSchedulerPolicy::SchedIdle => 5,
        LinuxSchedulerPolicy::SchedDeadline => 6,
        LinuxSchedulerPolicy::SchedIso => {
            return Err("SCHED_ISO is not a Linux scheduling policy".into())
        }
    })
}

fn flag_bits(f: LinuxSchedulerFlag) -> u64 {
    match f {
        LinuxSchedulerFlag::SchedResetOnFork => 0x01,
        LinuxSchedulerFlag::SchedFlagReclaim => 0x02,
        LinuxSchedulerFlag::SchedFlagDLOverrun => 0x04,
        LinuxSchedulerFlag::SchedFlagKeepPolicy => 0x08,
        LinuxSchedulerFlag::SchedFlagKeepParams => 0x10,
        LinuxSchedulerFlag::SchedFlagUtilClampMin => 0x20,
        LinuxSchedulerFlag::SchedFlagUtilClampMax => 0x40,
    }
}

/// runc's rules for `process.scheduler`.
fn check_scheduler(s: &Scheduler) -> Result<(), String> {
    policy_number(*s.policy())?;
    let nice = s.nice().unwrap_or(0);
    if !(-20..=19).contains(&nice) {
        return Err(format!("nice {nice} is outside -20..19"));
    }
    let realtime = matches!(
        s.policy(),
        LinuxSchedulerPolicy::SchedFifo | LinuxSchedulerPolicy::SchedRr
    );
    if s.priority().unwrap_or(0) != 0 && !realtime {
        return Err("priority can only be given for SCHED_FIFO or SCHED_RR".into());
    }
    let deadline = *s.policy() == LinuxSchedulerPolicy::SchedDeadline;
    let times = [s.runtime(), s.deadline(), s.period()];
    if !deadline && times.iter().any(|t| t.unwrap_or(0) != 0) {
        return Err("runtime, deadline and period are for SCHED_DEADLINE only".into());
    }
    if deadline && times.iter().any(|t| t.unwrap_or(0) == 0) {
        return Err("SCHED_DEADLINE needs runtime, deadline and period".into());
    }
    Ok(())
}

fn mode_number(m: MemoryPolicyModeType) -> i32 {
    match m {
        MemoryPolicyModeType::MpolDefault => 0,
        MemoryPolicyModeType::MpolPreferred => 1,
        MemoryPolicyModeType::MpolBind => 2,
        MemoryPolicyModeType::MpolInterleave => 3,
        MemoryPolicyModeType::MpolLocal => 4,
        MemoryPolicyModeType::MpolPreferredMany => 5,
        MemoryPolicyModeType::MpolWeightedInterleave => 6,
    }
}

fn mode_flag(f: MemoryPolicyFlagType) -> i32 {
    match f {
        MemoryPolicyFlagType::MpolFNumaBalancing => 1 << 13,
        MemoryPolicyFlagType::MpolFRelativeNodes => 1 << 14,
        MemoryPolicyFlagType::MpolFStaticNodes => 1 << 15,
    }
}

/// The nodes of a memory policy (empty when none are given).
fn policy_nodes(p: &LinuxMemoryPolicy) -> Result<Vec<usize>, String> {
    match p.nodes().as_deref().map(str::trim) {
        None | Some("") => Ok(Vec::new()),
        Some(text) => parse_list(text),
    }
}

/// runc's rules for `linux.memoryPolicy`.
fn check_memory_policy(p: &LinuxMemoryPolicy) -> Result<(), String> {
    let nodes = policy_nodes(p)?;
    match p.mode() {
        MemoryPolicyModeType::MpolDefault | MemoryPolicyModeType::MpolLocal => {
            if !nodes.is_empty() {
                return Err(format!("{} takes no nodes", p.mode()));
            }
        }
        MemoryPolicyModeType::MpolPreferred => {}
        mode => {
            if nodes.is_empty() {
                return Err(format!("{mode} needs nodes"));
            }
        }
    }
    let flags = p.flags().clone().unwrap_or_default();
    if flags.contains(&MemoryPolicyFlagType::MpolFRelativeNodes)
        && flags.contains(&MemoryPolicyFlagType::MpolFStaticNodes)
    {
        return Err("MPOL_F_RELATIVE_NODES and MPOL_F_STATIC_NODES exclude each other".into());
    }
    Ok(())
}

/// Validates the scheduling and memory settings of `process` and `linux`.
pub fn check(process: Option<&Process>, linux: Option<&Linux>) -> Result<(), (String, String)> {
    if let Some(p) = process {
        if let Some(s) = p.scheduler() {
            check_scheduler(s).map_err(|e| ("process.scheduler".to_string(), e))?;
        }
        if let Some(io) = p.io_priority() {
            if !(0..=7).contains(&io.priority()) {
                return Err((
                    "process.ioPriority.priority".into(),
                    format!("{} is outside 0..7", io.priority()),
                ));
            }
        }
        if let Some(a) = p.exec_cpu_affinity() {
            for (name, list) in [("initial", a.initial()), ("final", a.cpu_affinity_final())] {
                if let Some(text) = list.as_deref().filter(|t| !t.is_empty()) {
                    parse_list(text).map_err(|e| (format!("process.execCPUAffinity.{name}"), e))?;
                }
            }
        }
    }
    if let Some(l) = linux {
        if let Some(p) = l.memory_policy() {
            check_memory_policy(p).map_err(|e| ("linux.memoryPolicy".to_string(), e))?;
        }
        if let Some(p) = l.personality() {
            if p.flags().as_ref().is_some_and(|f| !f.is_empty()) {
                return Err((
                    "linux.personality.flags".into(),
                    "no personality flags are supported".into(),
                ));
            }
        }
    }
    Ok(())
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// `struct sched_attr` (SCHED_ATTR_SIZE_VER1).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

/// Sets the calling process's scheduler and I/O priority from `process`.
pub fn apply_process(process: &Process) -> Result<(), String> {
    if let Some(s) = process.scheduler() {
        let policy = policy_number(*s.policy()).map_err(|e| format!("process.scheduler: {e}"))?;
        let attr = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            policy,
            flags: s.flags().iter().flatten().map(|f| flag_bits(*f)).sum(),
            nice: s.nice().unwrap_or(0),
            priority: s.priority().unwrap_or(0).max(0) as u32,
            runtime: s.runtime().unwrap_or(0),
            deadline: s.deadline().unwrap_or(0),
            period: s.period().unwrap_or(0),
            ..SchedAttr::default()
        };
        // SAFETY: sched_setattr reads a live sched_attr whose size field is correct.
        let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
        if r != 0 {
            return Err(os_err("process.scheduler: sched_setattr"));
        }
    }
    if let Some(io) = process.io_priority() {
        let class: i64 = match io.class() {
            IOPriorityClass::IoprioClassRt => 1,
            IOPriorityClass::IoprioClassBe => 2,
            IOPriorityClass::IoprioClassIdle => 3,
        };
        const IOPRIO_WHO_PROCESS: i64 = 1;
        let value = (class << 13) | io.priority();
        // SAFETY: ioprio_set takes integers only.
        let r = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, value) };
        if r != 0 {
            return Err(os_err("process.ioPriority: ioprio_set"));
        }
    }
    Ok(())
}

/// Sets the calling process's memory policy and personality from `linux`.
pub fn apply_linux(linux: &Linux) -> Result<(), String> {
    if let Some(p) = linux.memory_policy() {
        let nodes = policy_nodes(p).map_err(|e| format!("linux.memoryPolicy: {e}"))?;
        let words = nodes.last().map_or(1, |n| n / 64 + 1);
        let mut mask: Vec<libc::c_ulong> = vec![0; words];
        for n in &nodes {
            mask[n / 64] |= 1 << (n % 64);
        }
        let mode = mode_number(p.mode())
            | p.flags()
                .iter()
                .flatten()
                .map(|f| mode_flag(*f))
                .sum::<i32>();
        let (ptr, maxnode) = if nodes.is_empty() {
            (std::ptr::null(), 0)
        } else {
            // The kernel reads maxnode - 1 bits.
            (mask.as_ptr(), words * 64 + 1)
        };
        // SAFETY: set_mempolicy reads `maxnode - 1` bits from a live mask of that many bits.
        let r = unsafe { libc::syscall(libc::SYS_set_mempolicy, mode, ptr, maxnode) };
        if r != 0 {
            return Err(os_err("linux.memoryPolicy: set_mempolicy"));
        }
    }
    if let Some(p) = linux.personality() {
        let persona: libc::c_ulong = match p.domain() {
            LinuxPersonalityDomain::PerLinux => 0x0000,
            LinuxPersonalityDomain::PerLinux32 => 0x0008,
        };
        // SAFETY: personality takes an integer.
        if unsafe { libc::personality(persona) } < 0 {
            return Err(os_err("linux.personality"));
        }
    }
    Ok(())
}

/// Sets the calling process's CPU affinity to the CPUs in `list`.
pub fn set_affinity(field: &str, list: &str) -> Result<(), String> {
    let cpus = parse_list(list).map_err(|e| format!("{field}: {e}"))?;
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for c in cpus {
        if c >= libc::CPU_SETSIZE as usize {
            return Err(format!("{field}: CPU {c} is beyond this system's limit"));
        }
        // SAFETY: c is below CPU_SETSIZE (checked above), so the bit lies inside `set`.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: sched_setaffinity reads a live cpu_set_t of the size given.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(os_err(&format!("{field}: sched_setaffinity")));
    }
    Ok(())
}

/// The `initial` and `final` CPU lists of `process.execCPUAffinity`, empty ones left out.
pub fn exec_affinity(process: &Process) -> (Option<String>, Option<String>) {
    let Some(a) = process.exec_cpu_affinity() else {
        return (None, None);
    };
    let keep = |s: &Option<String>| s.clone().filter(|t| !t.trim().is_empty());
    (keep(a.initial()), keep(a.cpu_affinity_final()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_ranges_and_refuse_junk() {
        assert_eq!(parse_list("0-3,7").unwrap(), vec![0, 1, 2, 3, 7]);
        assert_eq!(parse_list("5,1,1").unwrap(), vec![1, 5]);
        assert!(parse_list("3-1").unwrap_err().contains("bad range"));
        assert!(parse_list("0-x").unwrap_err().contains("\"x\""));
        assert!(parse_list("").is_err());
    }

    fn sched(json: &str) -> Result<(), String> {
        check_scheduler(&serde_json::from_str(json).unwrap())
    }

    #[test]
    fn scheduler_rules_follow_runc() {
        assert!(sched(r#"{"policy":"SCHED_BATCH","nice":7}"#).is_ok());
        assert!(sched(r#"{"policy":"SCHED_OTHER","nice":20}"#)
            .unwrap_err()
            .contains("nice"));
        assert!(sched(r#"{"policy":"SCHED_OTHER","priority":3}"#)
            .unwrap_err()
            .contains("SCHED_FIFO"));
        assert!(sched(r#"{"policy":"SCHED_FIFO","priority":3}"#).is_ok());
        assert!(sched(r#"{"policy":"SCHED_DEADLINE"}"#)
            .unwrap_err()
            .contains("needs runtime"));
        assert!(sched(r#"{"policy":"SCHED_BATCH","period":5}"#)
            .unwrap_err()
            .contains("SCHED_DEADLINE only"));
    }

    fn mempolicy(json: &str) -> Result<(), String> {
        check_memory_policy(&serde_json::from_str(json).unwrap())
    }

    #[test]
    fn memory_policy_rules() {
        assert!(mempolicy(r#"{"mode":"MPOL_INTERLEAVE","nodes":"0"}"#).is_ok());
        assert!(mempolicy(r#"{"mode":"MPOL_BIND"}"#)
            .unwrap_err()
            .contains("needs nodes"));
        assert!(mempolicy(r#"{"mode":"MPOL_LOCAL","nodes":"0"}"#)
            .unwrap_err()
            .contains("takes no nodes"));
        assert!(mempolicy(
            r#"{"mode":"MPOL_BIND","nodes":"0","flags":["MPOL_F_RELATIVE_NODES","MPOL_F_STATIC_NODES"]}"#
        )
        .unwrap_err()
        .contains("exclude"));
    }
}
