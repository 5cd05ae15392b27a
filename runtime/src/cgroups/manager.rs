//! Placing a container in cgroups below podlet's root and applying its resources.
//!
//! podlet does not use libcgroups' managers: they enable controllers from the hierarchy root
//! down (writing `cgroup.subtree_control` above the delegated subtree), which podlet's cgroup
//! rule forbids. This manager only writes at or below podlet's root. On hybrid hosts the
//! container also gets a cgroup in every v1 hierarchy, like runc, and settings whose v2
//! controller is missing go to v1 ([`super::v1`]).

use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use super::{CgroupError, CgroupRoot, HierarchyRoot};

/// Removes every cgroup below `dir` (not `dir` itself), deepest first; busy ones stay.
fn remove_children(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let child = e.path();
            remove_children(&child);
            let _ = fs::remove_dir(&child);
        }
    }
}

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

/// The v2 controller that serves a v1 controller's settings.
fn v2_equivalent(v1: &str) -> &str {
    match v1 {
        "blkio" => "io",
        other => other,
    }
}

/// v1 settings that some kernels lack (no swap accounting, no CFQ, kmem limits removed): a
/// warning, not an error, when they cannot be applied.
fn optional_v1(file: &str) -> bool {
    file.starts_with("memory.memsw")
        || file.starts_with("memory.kmem")
        || file.starts_with("blkio.weight")
        || file.starts_with("blkio.leaf_weight")
}

/// Gives a new v1 cpuset cgroup (and any new parents) the parent's cpus and mems: v1 refuses
/// tasks in a cpuset that has none.
fn init_cpuset(h: &HierarchyRoot, dir: &Path) -> Result<(), CgroupError> {
    let rel = dir.strip_prefix(&h.own_dir).unwrap_or(Path::new(""));
    let mut cur = h.own_dir.clone();
    for comp in rel.components() {
        let parent = cur.clone();
        cur.push(comp);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let mine = fs::read_to_string(cur.join(file)).unwrap_or_default();
            if mine.trim().is_empty() {
                let theirs = fs::read_to_string(parent.join(file)).unwrap_or_default();
                write(&cur, file, theirs.trim())?;
            }
        }
    }
    Ok(())
}

impl ContainerCgroups {
    /// Creates the container's cgroup (`cgroups_path` resolved below podlet's root) in the v2
    /// hierarchy, then applies `res` ([`ContainerCgroups::apply`]), which adds v1 cgroups
    /// only for settings cgroup v2 cannot take here.
    pub fn create(
        root: &CgroupRoot,
        cgroups_path: &str,
        res: Option<&LinuxResources>,
    ) -> Result<Self, CgroupError> {
        let mut made = ContainerCgroups { dirs: Vec::new() };
        let result = (|| {
            let settings = res.map(v2_settings).unwrap_or_default();
            if let Some(v2) = root.unified() {
                let dir = v2.container_dir(cgroups_path)?;
                // Enable the controllers the settings need, from podlet's root down only.
                let available = fs::read_to_string(v2.own_dir.join("cgroup.subtree_control"))
                    .unwrap_or_default();
                let wanted: Vec<&str> = ["cpu", "memory", "pids", "cpuset", "io", "hugetlb"]
                    .into_iter()
                    .filter(|c| {
                        settings
                            .iter()
                            .any(|(f, _)| f.starts_with(&format!("{c}.")))
                            && available.split_whitespace().any(|a| a == *c)
                    })
                    .collect();
                v2.create_dir(&dir)?;
                made.dirs.push((v2.clone(), dir.clone()));
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
            }
            if let Some(r) = res {
                made.apply(root, cgroups_path, r)?;
            }
            // Devices fail closed: a container whose spec has no device rules still gets the
            // default allow-list and nothing else.
            if res.and_then(|r| r.devices().as_ref()).is_none() {
                if let Some(d) = made.unified_dir().map(Path::to_path_buf) {
                    made.apply_device_rules(&d, &[])?;
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            made.remove();
            return Err(e);
        }
        Ok(made)
    }

    /// Writes `res` to the container's cgroups: v2 files where the v2 controller exists, the v1
    /// equivalents otherwise (joining the container's processes to a v1 hierarchy the first
    /// time one of its settings appears). Device rules become an eBPF filter whenever there is
    /// a v2 cgroup, v1 `devices.*` files only without one. A limit that no hierarchy can take
    /// (memory, pids) is an error.
    pub fn apply(
        &mut self,
        root: &CgroupRoot,
        cgroups_path: &str,
        res: &LinuxResources,
    ) -> Result<(), CgroupError> {
        let v2_dir = self.unified_dir().map(Path::to_path_buf);
        let mut served = std::collections::HashSet::new();
        let mut unserved = Vec::new();
        for (file, value) in v2_settings(res) {
            let ctrl = file.split('.').next().unwrap_or("").to_string();
            match v2_dir.as_ref().filter(|d| d.join(&file).exists()) {
                Some(d) => {
                    write(d, &file, &value)?;
                    served.insert(ctrl);
                }
                None => unserved.push((ctrl, file)),
            }
        }
        if let (Some(rules), Some(d)) = (res.devices().as_ref(), v2_dir.as_ref()) {
            self.apply_device_rules(d, rules)?;
            served.insert("devices".to_string());
        }
        // Join the v1 hierarchies the remaining settings need.
        let pids = self.pids();
        for (ctrl, _, _) in super::v1::v1_settings(res) {
            if served.contains(v2_equivalent(ctrl))
                || self
                    .dirs
                    .iter()
                    .any(|(h, _)| h.controllers.iter().any(|c| c == ctrl))
            {
                continue;
            }
            let Some(h) = root.v1_controller(ctrl) else {
                continue;
            };
            let h = h.clone();
            let dir = h.container_dir(cgroups_path)?;
            h.create_dir(&dir)?;
            self.dirs.push((h.clone(), dir.clone()));
            if h.controllers.iter().any(|c| c == "cpuset") {
                init_cpuset(&h, &dir)?;
            }
            for pid in &pids {
                write(&dir, "cgroup.procs", &pid.to_string())?;
            }
        }
        let mut v1_done = std::collections::HashSet::new();
        for (ctrl, file, value) in super::v1::v1_settings(res) {
            if served.contains(v2_equivalent(ctrl)) {
                continue;
            }
            let dir = self
                .dirs
                .iter()
                .find(|(h, _)| h.controllers.iter().any(|c| c == ctrl))
                .map(|(_, d)| d.clone());
            let Some(dir) = dir else {
                if matches!(ctrl, "memory" | "pids") {
                    return Err(CgroupError::ControllerUnavailable {
                        setting: file,
                        controller: ctrl,
                    });
                }
                tracing::warn!(file, "cgroup controller unavailable; setting skipped");
                continue;
            };
            match write(&dir, &file, &value) {
                Ok(()) => {
                    v1_done.insert(v2_equivalent(ctrl).to_string());
                }
                Err(e) if optional_v1(&file) => {
                    tracing::warn!(file, "cgroup v1 setting not supported here: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        // A raw `unified` key names a v2 file directly: without it the bundle cannot run as
        // written. Other settings whose controller exists nowhere are skipped with a warning.
        let unified: std::collections::HashSet<&String> =
            res.unified().iter().flatten().map(|(k, _)| k).collect();
        for (ctrl, file) in unserved {
            if v1_done.contains(&ctrl) || served.contains(&ctrl) {
                continue;
            }
            if let (true, Some(d)) = (unified.contains(&file), v2_dir.as_ref()) {
                return Err(CgroupError::Io {
                    op: "write",
                    path: d.join(&file),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no such cgroup file (controller not enabled?)",
                    ),
                });
            }
            tracing::warn!(file, "cgroup v2 controller unavailable; setting skipped");
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

    /// Moves `pid` into the container's cgroups, skipping the v2 one when the process was
    /// born there (`CLONE_INTO_CGROUP`).
    pub fn add_process_placed(&self, pid: i32, in_v2: bool) -> Result<(), CgroupError> {
        for (h, dir) in &self.dirs {
            if in_v2 && h.version == super::CgroupVersion::V2 {
                continue;
            }
            write(dir, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
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
                // Sub-cgroups made inside the container's (by it, or for `exec --cgroup`) go
                // first, deepest first: a cgroup with children cannot be removed.
                remove_children(dir);
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

    /// Attaches the device filter for `rules` followed by the default allow-list (null, zero,
    /// full, random, urandom, tty, console, ptmx, pts); anything else is denied.
    fn apply_device_rules(
        &self,
        dir: &Path,
        rules: &[oci_spec::runtime::LinuxDeviceCgroup],
    ) -> Result<(), CgroupError> {
        let mut all = rules.to_vec();
        all.extend(super::v1::default_allowed_rules());
        super::devices_bpf::apply(dir, &all)
    }

    /// The v2 directory, if any.
    pub fn unified_dir(&self) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(h, _)| h.version == super::CgroupVersion::V2)
            .map(|(_, d)| d.as_path())
    }

    /// The container's cgroups with some moved to existing sub-cgroups, for `exec --cgroup`:
    /// each spec is `[CONTROLLER[,CONTROLLER…]:]PATH`; a bare PATH applies to every hierarchy,
    /// `CONTROLLER:PATH` to the v1 hierarchies holding that controller (`unified:PATH` to the v2
    /// one). PATH is relative, made of plain components (no `..`), and must exist: nothing is
    /// created and nothing outside the container's cgroup can be named.
    pub fn sub_cgroups(&self, specs: &[String]) -> Result<ContainerCgroups, CgroupError> {
        let mut out = self.clone();
        for spec in specs {
            let (controllers, path) = match spec.split_once(':') {
                Some((c, p)) => (Some(c.split(',').collect::<Vec<_>>()), p),
                None => (None, spec.as_str()),
            };
            let plain = !path.is_empty()
                && !path.starts_with('/')
                && Path::new(path)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !plain {
                return Err(CgroupError::InvalidPath {
                    what: "exec --cgroup",
                    path: spec.clone(),
                });
            }
            let mut matched = false;
            for (h, dir) in out.dirs.iter_mut() {
                let wanted = match &controllers {
                    None => true,
                    Some(cs) => match h.version {
                        super::CgroupVersion::V2 => cs.contains(&"unified"),
                        super::CgroupVersion::V1 => {
                            cs.iter().any(|c| h.controllers.iter().any(|hc| hc == c))
                        }
                    },
                };
                if !wanted {
                    continue;
                }
                matched = true;
                let sub = dir.join(path);
                if !sub.is_dir() {
                    return Err(CgroupError::Io {
                        op: "exec --cgroup: find sub-cgroup",
                        path: sub,
                        source: std::io::Error::from(std::io::ErrorKind::NotFound),
                    });
                }
                *dir = sub;
            }
            if !matched {
                return Err(CgroupError::InvalidPath {
                    what: "exec --cgroup (no hierarchy has that controller)",
                    path: spec.clone(),
                });
            }
        }
        Ok(out)
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
