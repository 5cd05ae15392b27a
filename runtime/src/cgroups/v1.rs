//! OCI resources as cgroup v1 files, for hybrid hosts whose cgroup2 lacks the controllers.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};

/// One v1 write: controller, file, value. Order matters (e.g. memsw after the memory limit).
pub type V1Setting = (&'static str, String, String);

fn device_rule(d: &LinuxDeviceCgroup) -> String {
    let typ = match d.typ() {
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => 'c',
        Some(LinuxDeviceType::B) => 'b',
        Some(LinuxDeviceType::P) => 'p',
        Some(LinuxDeviceType::A) | None => 'a',
    };
    let num = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_else(|| "*".into());
    format!(
        "{typ} {}:{} {}",
        num(d.major()),
        num(d.minor()),
        d.access().clone().unwrap_or_else(|| "rwm".into())
    )
}

/// Device rules every container keeps, as runc allows them: the default device nodes and
/// pseudo-terminals.
pub const DEFAULT_ALLOWED_DEVICES: &[&str] = &[
    "c 1:3 rwm",   // null
    "c 1:5 rwm",   // zero
    "c 1:7 rwm",   // full
    "c 1:8 rwm",   // random
    "c 1:9 rwm",   // urandom
    "c 5:0 rwm",   // tty
    "c 5:1 rwm",   // console
    "c 5:2 rwm",   // ptmx
    "c 136:* rwm", // pts
];

/// [`DEFAULT_ALLOWED_DEVICES`] as OCI rules.
pub fn default_allowed_rules() -> Vec<LinuxDeviceCgroup> {
    DEFAULT_ALLOWED_DEVICES
        .iter()
        .filter_map(|r| {
            let mut parts = r.split(' ');
            let (typ, nums, access) = (parts.next()?, parts.next()?, parts.next()?);
            let (major, minor) = nums.split_once(':')?;
            let num = |n: &str| n.parse::<i64>().ok();
            serde_json::from_value(serde_json::json!({
                "allow": true, "type": typ, "major": num(major), "minor": num(minor), "access": access,
            }))
            .ok()
        })
        .collect()
}

/// The v1 writes for `res`, in the order they must happen.
pub fn v1_settings(res: &LinuxResources) -> Vec<V1Setting> {
    let mut out: Vec<V1Setting> = Vec::new();
    let mut put = |c: &'static str, f: &str, v: String| out.push((c, f.to_string(), v));
    if let Some(m) = res.memory() {
        if let Some(l) = m.limit() {
            put("memory", "memory.limit_in_bytes", l.to_string());
        }
        if let Some(r) = m.reservation() {
            put("memory", "memory.soft_limit_in_bytes", r.to_string());
        }
        if let Some(s) = m.swap() {
            put("memory", "memory.memsw.limit_in_bytes", s.to_string());
        }
        #[allow(deprecated)]
        if let Some(k) = m.kernel() {
            put("memory", "memory.kmem.limit_in_bytes", k.to_string());
        }
        if let Some(k) = m.kernel_tcp() {
            put("memory", "memory.kmem.tcp.limit_in_bytes", k.to_string());
        }
        if let Some(s) = m.swappiness() {
            put("memory", "memory.swappiness", s.to_string());
        }
        if let Some(d) = m.disable_oom_killer() {
            put("memory", "memory.oom_control", u8::from(d).to_string());
        }
    }
    if let Some(p) = res.pids() {
        let l = p.limit();
        put(
            "pids",
            "pids.max",
            if l <= 0 { "max".into() } else { l.to_string() },
        );
    }
    if let Some(c) = res.cpu() {
        if let Some(s) = c.shares() {
            put("cpu", "cpu.shares", s.to_string());
        }
        if let Some(p) = c.period() {
            put("cpu", "cpu.cfs_period_us", p.to_string());
        }
        if let Some(q) = c.quota() {
            put("cpu", "cpu.cfs_quota_us", q.to_string());
        }
        if let Some(p) = c.realtime_period() {
            put("cpu", "cpu.rt_period_us", p.to_string());
        }
        if let Some(r) = c.realtime_runtime() {
            put("cpu", "cpu.rt_runtime_us", r.to_string());
        }
        if let Some(cpus) = c.cpus() {
            put("cpuset", "cpuset.cpus", cpus.clone());
        }
        if let Some(mems) = c.mems() {
            put("cpuset", "cpuset.mems", mems.clone());
        }
    }
    if let Some(io) = res.block_io() {
        if let Some(w) = io.weight() {
            put("blkio", "blkio.weight", w.to_string());
        }
        if let Some(w) = io.leaf_weight() {
            put("blkio", "blkio.leaf_weight", w.to_string());
        }
        for d in io.weight_device().iter().flatten() {
            if let Some(w) = d.weight() {
                put(
                    "blkio",
                    "blkio.weight_device",
                    format!("{}:{} {w}", d.major(), d.minor()),
                );
            }
        }
        let throttles = [
            (
                io.throttle_read_bps_device(),
                "blkio.throttle.read_bps_device",
            ),
            (
                io.throttle_write_bps_device(),
                "blkio.throttle.write_bps_device",
            ),
            (
                io.throttle_read_iops_device(),
                "blkio.throttle.read_iops_device",
            ),
            (
                io.throttle_write_iops_device(),
                "blkio.throttle.write_iops_device",
            ),
        ];
        for (devs, file) in throttles {
            for d in devs.iter().flatten() {
                put(
                    "blkio",
                    file,
                    format!("{}:{} {}", d.major(), d.minor(), d.rate()),
                );
            }
        }
    }
    for h in res.hugepage_limits().iter().flatten() {
        put(
            "hugetlb",
            &format!("hugetlb.{}.limit_in_bytes", h.page_size()),
            h.limit().to_string(),
        );
    }
    if let Some(n) = res.network() {
        if let Some(id) = n.class_id() {
            put("net_cls", "net_cls.classid", id.to_string());
        }
        for p in n.priorities().iter().flatten() {
            put(
                "net_prio",
                "net_prio.ifpriomap",
                format!("{} {}", p.name(), p.priority()),
            );
        }
    }
    if let Some(devs) = res.devices() {
        // v1 device rules know block and character devices only; a fifo needs no rule.
        for d in devs.iter().filter(|d| d.typ() != Some(LinuxDeviceType::P)) {
            let file = if d.allow() {
                "devices.allow"
            } else {
                "devices.deny"
            };
            put("devices", file, device_rule(d));
        }
        if !devs.is_empty() {
            for rule in DEFAULT_ALLOWED_DEVICES {
                put("devices", "devices.allow", rule.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_resources_to_v1_files_in_order() {
        let res: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":1048576,"reservation":524288,"swap":2097152,"swappiness":10,"disableOOMKiller":true},
                "pids":{"limit":0},
                "cpu":{"shares":512,"quota":50000,"period":100000,"cpus":"0"},
                "devices":[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":10,"minor":200,"access":"rw"}]}"#,
        )
        .unwrap();
        let s = v1_settings(&res);
        let find = |f: &str| {
            s.iter()
                .find(|(_, ff, _)| ff == f)
                .map(|(_, _, v)| v.clone())
        };
        assert_eq!(find("memory.limit_in_bytes").as_deref(), Some("1048576"));
        assert_eq!(
            find("memory.memsw.limit_in_bytes").as_deref(),
            Some("2097152")
        );
        assert_eq!(find("memory.oom_control").as_deref(), Some("1"));
        assert_eq!(find("pids.max").as_deref(), Some("max"));
        assert_eq!(find("cpu.cfs_quota_us").as_deref(), Some("50000"));
        assert_eq!(find("cpuset.cpus").as_deref(), Some("0"));
        let limit = s
            .iter()
            .position(|x| x.1 == "memory.limit_in_bytes")
            .unwrap();
        let memsw = s
            .iter()
            .position(|x| x.1 == "memory.memsw.limit_in_bytes")
            .unwrap();
        assert!(limit < memsw, "memsw must follow the limit");
        let devices: Vec<_> = s.iter().filter(|x| x.0 == "devices").collect();
        assert_eq!(devices[0].1, "devices.deny");
        assert_eq!(devices[0].2, "a *:* rwm");
        assert_eq!(devices[1].2, "c 10:200 rw");
        assert!(devices.iter().any(|d| d.2 == "c 1:3 rwm"));
    }
}
