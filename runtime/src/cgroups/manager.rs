//! Placing a container in cgroups below podlet's root and applying its resources.
//!
//! podlet does not use libcgroups' managers: they enable controllers from the hierarchy root
//! down (writing `cgroup.subtree_control` above the delegated subtree), which podlet's cgroup
//! rule forbids. This manager only writes at or below podlet's root.

use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use super::{CgroupError, CgroupRoot, HierarchyRoot};

/// The cgroups made for one container.
#[derive(Debug, Clone)]
pub struct ContainerCgroups {
    /// (hierarchy, directory) pairs; the v2 one first when present.
    pub dirs: Vec<(HierarchyRoot, PathBuf)>,
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    fs::write(dir.join(file), value).map_err(|source| CgroupError::Io {
        op: "write",
        path: dir.join(file),
        source,
    })
}

/// v2 resource files and values for `res` (only the ones the spec sets).
pub fn v2_settings(res: &LinuxResources) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(m) = res.memory() {
        if let Some(l) = m.limit() {
            out.push((
                "memory.max".to_string(),
                if l < 0 { "max".into() } else { l.to_string() },
            ));
        }
        if let Some(r) = m.reservation() {
            out.push(("memory.low".to_string(), r.to_string()));
        }
        if let (Some(swap), Some(limit)) = (m.swap(), m.limit()) {
            // OCI swap is memory+swap; v2 wants swap alone.
            let v = if swap < 0 {
                "max".to_string()
            } else {
                (swap - limit).max(0).to_string()
            };
            out.push(("memory.swap.max".to_string(), v));
        }
    }
    if let Some(p) = res.pids() {
        let l = p.limit();
        out.push((
            "pids.max".to_string(),
            if l <= 0 { "max".into() } else { l.to_string() },
        ));
    }
    if let Some(c) = res.cpu() {
        if let Some(shares) = c.shares() {
            // The conversion runc and crun use from cpu.shares [2, 262144] to cpu.weight [1, 10000].
            let w = if shares == 0 {
                100
            } else {
                1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
            };
            out.push(("cpu.weight".to_string(), w.to_string()));
        }
        if c.quota().is_some() || c.period().is_some() {
            let quota = match c.quota() {
                Some(q) if q > 0 => q.to_string(),
                _ => "max".into(),
            };
            out.push((
                "cpu.max".to_string(),
                format!("{quota} {}", c.period().unwrap_or(100_000)),
            ));
        }
        if let Some(cpus) = c.cpus() {
            out.push(("cpuset.cpus".to_string(), cpus.clone()));
        }
        if let Some(mems) = c.mems() {
            out.push(("cpuset.mems".to_string(), mems.clone()));
        }
    }
    if let Some(io) = res.block_io() {
        if let Some(w) = io.weight() {
            // blkio.weight [10, 1000] → io.weight [1, 10000], as runc converts.
            let w = 1 + (u64::from(w.clamp(10, 1000)) - 10) * 9999 / 990;
            out.push(("io.weight".to_string(), format!("default {w}")));
        }
        let throttles = [
            (io.throttle_read_bps_device(), "rbps"),
            (io.throttle_write_bps_device(), "wbps"),
            (io.throttle_read_iops_device(), "riops"),
            (io.throttle_write_iops_device(), "wiops"),
        ];
        for (devs, key) in throttles {
            for d in devs.iter().flatten() {
                out.push((
                    "io.max".to_string(),
                    format!("{}:{} {key}={}", d.major(), d.minor(), d.rate()),
                ));
            }
        }
    }
    for h in res.hugepage_limits().iter().flatten() {
        out.push((
            format!("hugetlb.{}.max", h.page_size()),
            h.limit().to_string(),
        ));
    }
    for (k, v) in res.unified().iter().flatten() {
        if !k.contains('/') && !k.starts_with('.') {
            out.push((k.clone(), v.clone()));
        }
    }
    out
}

impl ContainerCgroups {
    /// Creates the container's cgroup (`cgroups_path` resolved below podlet's root) in the v2
    /// hierarchy, plus the v1 memory and pids hierarchies when limits need them and v2 lacks
    /// the controllers (hybrid hosts).
    pub fn create(
        root: &CgroupRoot,
        cgroups_path: &str,
        res: Option<&LinuxResources>,
    ) -> Result<Self, CgroupError> {
        let mut dirs = Vec::new();
        let settings = res.map(v2_settings).unwrap_or_default();
        let result = (|| {
            if let Some(v2) = root.unified() {
                let dir = v2.container_dir(cgroups_path)?;
                // Enable the controllers the settings need, from podlet's root down only.
                let available = fs::read_to_string(v2.own_dir.join("cgroup.subtree_control"))
                    .unwrap_or_default();
                let wanted: Vec<&str> = ["cpu", "memory", "pids", "cpuset", "io"]
                    .into_iter()
                    .filter(|c| {
                        settings
                            .iter()
                            .any(|(f, _)| f.starts_with(&format!("{c}.")))
                            && available.split_whitespace().any(|a| a == *c)
                    })
                    .collect();
                v2.create_dir(&dir)?;
                dirs.push((v2.clone(), dir.clone()));
                if !wanted.is_empty() {
                    let mut cur = v2.root_dir.clone();
                    let rel = dir
                        .strip_prefix(&v2.root_dir)
                        .unwrap_or(Path::new(""))
                        .to_path_buf();
                    let enable = wanted
                        .iter()
                        .map(|c| format!("+{c}"))
                        .collect::<Vec<_>>()
                        .join(" ");
                    for comp in rel.components() {
                        write(&cur, "cgroup.subtree_control", &enable)?;
                        cur.push(comp);
                    }
                }
                for (file, value) in &settings {
                    if dir.join(file).exists() {
                        write(&dir, file, value)?;
                    } else if file.starts_with("memory.max") || file.starts_with("pids.max") {
                        // Hybrid host: handled in v1 below.
                    } else if file.starts_with("memory.low")
                        || file.starts_with("memory.swap")
                        || file.starts_with("cpu")
                        || file.starts_with("io.")
                        || file.starts_with("hugetlb.")
                    {
                        tracing::warn!(file, "cgroup v2 controller unavailable; setting skipped");
                    } else {
                        return Err(CgroupError::Io {
                            op: "write",
                            path: dir.join(file),
                            source: std::io::Error::new(
                                std::io::ErrorKind::NotFound,
                                "no such cgroup file (controller not enabled?)",
                            ),
                        });
                    }
                }
            }
            let v2_dir = dirs
                .first()
                .map(|(_, d): &(HierarchyRoot, PathBuf)| d.clone());
            let v2_has = |f: &str| v2_dir.as_ref().is_some_and(|d| d.join(f).exists());
            for (file, ctrl, v1file) in [
                ("memory.max", "memory", "memory.limit_in_bytes"),
                ("pids.max", "pids", "pids.max"),
            ] {
                let Some((_, value)) = settings.iter().find(|(f, _)| f.as_str() == file) else {
                    continue;
                };
                if v2_has(file) {
                    continue;
                }
                let Some(h) = root.v1_controller(ctrl) else {
                    return Err(CgroupError::ControllerUnavailable {
                        setting: file.to_string(),
                        controller: ctrl,
                    });
                };
                let dir = h.container_dir(cgroups_path)?;
                h.create_dir(&dir)?;
                dirs.push((h.clone(), dir.clone()));
                let v = if value == "max" && ctrl == "memory" {
                    "-1".to_string()
                } else {
                    value.clone()
                };
                write(&dir, v1file, &v)?;
            }
            Ok(())
        })();
        let made = ContainerCgroups { dirs };
        if let Err(e) = result {
            made.remove();
            return Err(e);
        }
        Ok(made)
    }

    /// Applies new resource limits to a live container (`update`). Limits that cgroup v2 cannot
    /// take here go to the v1 memory/pids hierarchies, creating the container's cgroup there and
    /// moving its processes in when it had none.
    pub fn update(
        &mut self,
        root: &CgroupRoot,
        cgroups_path: &str,
        res: &LinuxResources,
    ) -> Result<(), CgroupError> {
        let settings = v2_settings(res);
        let v2_dir = self.unified_dir().map(Path::to_path_buf);
        let pids = self.pids();
        for (file, value) in &settings {
            if let Some(d) = v2_dir.as_ref().filter(|d| d.join(file).exists()) {
                write(d, file, value)?;
                continue;
            }
            let v1 = match file.as_str() {
                "memory.max" => Some(("memory", "memory.limit_in_bytes")),
                "pids.max" => Some(("pids", "pids.max")),
                _ => None,
            };
            let Some((ctrl, v1file)) = v1 else {
                tracing::warn!(file, "cgroup controller unavailable; setting skipped");
                continue;
            };
            let h = root
                .v1_controller(ctrl)
                .ok_or_else(|| CgroupError::ControllerUnavailable {
                    setting: file.clone(),
                    controller: ctrl,
                })?
                .clone();
            let dir = match self.dirs.iter().find(|(hh, _)| hh.root_dir == h.root_dir) {
                Some((_, d)) => d.clone(),
                None => {
                    let d = h.container_dir(cgroups_path)?;
                    h.create_dir(&d)?;
                    self.dirs.push((h.clone(), d.clone()));
                    for pid in &pids {
                        write(&d, "cgroup.procs", &pid.to_string())?;
                    }
                    d
                }
            };
            let v = if value == "max" && ctrl == "memory" {
                "-1".to_string()
            } else {
                value.clone()
            };
            write(&dir, v1file, &v)?;
        }
        Ok(())
    }

    /// The directory of the container in the hierarchy that has `controller` (v2 first).
    pub fn dir_with(&self, file: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .map(|(_, d)| d.as_path())
            .find(|d| d.join(file).exists())
    }

    /// Moves `pid` into every cgroup of the container.
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        for (_, dir) in &self.dirs {
            write(dir, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// Removes every cgroup of the container (and podlet's root when it becomes empty).
    pub fn remove(&self) {
        for (h, dir) in &self.dirs {
            for _ in 0..50 {
                if h.remove_dir(dir).is_ok() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }

    /// Rebuilds the handle from saved directories.
    pub fn from_dirs(root: &CgroupRoot, saved: &[PathBuf]) -> Self {
        let dirs = saved
            .iter()
            .filter_map(|d| {
                root.hierarchies
                    .iter()
                    .find(|h| d.starts_with(&h.root_dir))
                    .map(|h| (h.clone(), d.clone()))
            })
            .collect();
        ContainerCgroups { dirs }
    }

    /// The v2 directory, if any.
    pub fn unified_dir(&self) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(h, _)| h.version == super::CgroupVersion::V2)
            .map(|(_, d)| d.as_path())
    }

    /// Pids in the container's cgroup (v2 when present).
    pub fn pids(&self) -> Vec<i32> {
        let Some((_, dir)) = self.dirs.first() else {
            return Vec::new();
        };
        fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Freezes (`true`) or thaws the container with cgroup v2's `cgroup.freeze`.
    pub fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        let dir = self
            .unified_dir()
            .ok_or_else(|| CgroupError::HierarchyNotMounted {
                hierarchy: "cgroup2".into(),
            })?;
        write(dir, "cgroup.freeze", if frozen { "1" } else { "0" })
    }

    /// True if `cgroup.freeze` reads 1.
    pub fn is_frozen(&self) -> bool {
        self.unified_dir()
            .and_then(|d| fs::read_to_string(d.join("cgroup.freeze")).ok())
            .is_some_and(|s| s.trim() == "1")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_oci_resources_to_v2_files() {
        let res: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":33554432,"swap":33554432},"pids":{"limit":16},"cpu":{"shares":1024,"quota":50000,"period":100000},"unified":{"memory.high":"30000000"}}"#,
        )
        .unwrap();
        let s = v2_settings(&res);
        let get = |k: &str| {
            s.iter()
                .find(|(f, _)| f.as_str() == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("memory.max"), Some("33554432"));
        assert_eq!(get("memory.swap.max"), Some("0"));
        assert_eq!(get("pids.max"), Some("16"));
        assert_eq!(get("cpu.max"), Some("50000 100000"));
        assert_eq!(get("cpu.weight"), Some("39"));
        assert_eq!(get("memory.high"), Some("30000000"));
    }
}
