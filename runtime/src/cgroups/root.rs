use std::fs;
use std::path::{Component, Path, PathBuf};

use super::membership::{parse_proc_cgroup, CgroupMembership};
use super::mountinfo::{parse_cgroup_mounts, CgroupMount};
use super::CgroupError;

/// The default cgroup root, relative to the cgroup podlet was started in.
pub const DEFAULT_CGROUP_ROOT: &str = "podlet";

/// Which cgroup version a hierarchy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    /// A cgroup v1 hierarchy with its own controllers.
    V1,
    /// The cgroup v2 unified hierarchy.
    V2,
}

/// podlet's cgroup root in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HierarchyRoot {
    /// v1 or v2.
    pub version: CgroupVersion,
    /// Controllers of a v1 hierarchy; empty for v2.
    pub controllers: Vec<String>,
    /// The cgroup podlet was started in (hierarchy-absolute).
    pub own_cgroup: PathBuf,
    /// podlet's cgroup root (hierarchy-absolute), strictly below `own_cgroup`.
    pub root_cgroup: PathBuf,
    /// Filesystem directory of `own_cgroup`.
    pub own_dir: PathBuf,
    /// Filesystem directory of `root_cgroup`.
    pub root_dir: PathBuf,
    /// Where the hierarchy is mounted.
    pub mount_point: PathBuf,
}

/// podlet's cgroup root in every hierarchy the process belongs to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CgroupRoot {
    /// One entry per mounted hierarchy.
    pub hierarchies: Vec<HierarchyRoot>,
}

/// Checks that `path` has only plain components and returns them joined as a relative path.
fn plain_relative(what: &'static str, path: &Path) -> Result<PathBuf, CgroupError> {
    let invalid = || CgroupError::InvalidPath {
        what,
        path: path.display().to_string(),
    };
    let mut out = PathBuf::new();
    for comp in path.components() {
        match comp {
            Component::RootDir => {}
            Component::Normal(c) => out.push(c),
            _ => return Err(invalid()),
        }
    }
    // `Path::components` silently drops `.` in the middle; reject it explicitly.
    if path
        .to_string_lossy()
        .split('/')
        .any(|c| c == "." || c == "..")
    {
        return Err(invalid());
    }
    Ok(out)
}

fn mount_for<'a>(member: &CgroupMembership, mounts: &'a [CgroupMount]) -> Option<&'a CgroupMount> {
    mounts.iter().find(|m| {
        if member.is_unified() {
            m.unified
        } else if m.unified {
            false
        } else {
            let mut a = m.controllers.clone();
            let mut b = member.controllers.clone();
            a.sort();
            b.sort();
            a == b
        }
    })
}

impl CgroupRoot {
    /// Discovers podlet's cgroup root from `/proc/self/cgroup` and `/proc/self/mountinfo`.
    ///
    /// `requested` is the `--cgroup-root` flag: a relative path is taken below the process's
    /// own cgroup; an absolute one must lie strictly below it in every hierarchy.
    pub fn discover(requested: Option<&Path>) -> Result<Self, CgroupError> {
        let read = |p: &str| {
            fs::read_to_string(p).map_err(|source| CgroupError::Io {
                op: "read",
                path: PathBuf::from(p),
                source,
            })
        };
        Self::from_sources(
            &read("/proc/self/cgroup")?,
            &read("/proc/self/mountinfo")?,
            requested,
        )
    }

    /// Like [`CgroupRoot::discover`], from the given file contents (for tests and other pids).
    pub fn from_sources(
        proc_cgroup: &str,
        mountinfo: &str,
        requested: Option<&Path>,
    ) -> Result<Self, CgroupError> {
        let members = parse_proc_cgroup(proc_cgroup)?;
        let mounts = parse_cgroup_mounts(mountinfo)?;
        let requested = requested.unwrap_or(Path::new(DEFAULT_CGROUP_ROOT));
        let mut hierarchies = Vec::new();
        for member in &members {
            // A v2 line on a v1-only host (no cgroup2 mounted) is not an error: skip it.
            let Some(mount) = mount_for(member, &mounts) else {
                if member.is_unified() {
                    continue;
                }
                return Err(CgroupError::HierarchyNotMounted {
                    hierarchy: member.hierarchy_name(),
                });
            };
            let visible = member
                .path
                .strip_prefix(&mount.root)
                .map_err(|_| CgroupError::OwnCgroupNotVisible {
                    cgroup: member.path.clone(),
                    mount_root: mount.root.clone(),
                })?
                .to_path_buf();
            let own_dir = mount.mount_point.join(&visible);
            let relative = if requested.is_absolute() {
                let rel = requested.strip_prefix(&member.path).map_err(|_| {
                    CgroupError::RootOutsideOwnSubtree {
                        requested: requested.to_path_buf(),
                        own: member.path.clone(),
                    }
                })?;
                plain_relative("cgroup root", rel)?
            } else {
                plain_relative("cgroup root", requested)?
            };
            if relative.as_os_str().is_empty() {
                return Err(CgroupError::RootOutsideOwnSubtree {
                    requested: requested.to_path_buf(),
                    own: member.path.clone(),
                });
            }
            hierarchies.push(HierarchyRoot {
                version: if member.is_unified() {
                    CgroupVersion::V2
                } else {
                    CgroupVersion::V1
                },
                controllers: member.controllers.clone(),
                own_cgroup: member.path.clone(),
                root_cgroup: member.path.join(&relative),
                root_dir: own_dir.join(&relative),
                own_dir,
                mount_point: mount.mount_point.clone(),
            });
        }
        Ok(CgroupRoot { hierarchies })
    }

    /// The cgroup v2 unified hierarchy, if mounted.
    pub fn unified(&self) -> Option<&HierarchyRoot> {
        self.hierarchies
            .iter()
            .find(|h| h.version == CgroupVersion::V2)
    }

    /// The v1 hierarchy carrying `controller`, if any.
    pub fn v1_controller(&self, controller: &str) -> Option<&HierarchyRoot> {
        self.hierarchies.iter().find(|h| {
            h.version == CgroupVersion::V1 && h.controllers.iter().any(|c| c == controller)
        })
    }
}

impl HierarchyRoot {
    /// Resolves an OCI `cgroupsPath` to a directory below podlet's root.
    ///
    /// Absolute and relative paths both land below the root: a bundle can never name a cgroup
    /// outside the delegated subtree. `..` and `.` are refused.
    pub fn container_dir(&self, cgroups_path: &str) -> Result<PathBuf, CgroupError> {
        let rel = plain_relative("cgroupsPath", Path::new(cgroups_path))?;
        if rel.as_os_str().is_empty() {
            return Err(CgroupError::InvalidPath {
                what: "cgroupsPath",
                path: cgroups_path.to_string(),
            });
        }
        Ok(self.root_dir.join(rel))
    }

    /// Creates `dir` and its missing parents, refusing anything not strictly below the own cgroup.
    pub fn create_dir(&self, dir: &Path) -> Result<(), CgroupError> {
        self.check_inside(dir)?;
        fs::create_dir_all(dir).map_err(|source| CgroupError::Io {
            op: "create cgroup",
            path: dir.to_path_buf(),
            source,
        })
    }

    /// Removes `dir` and then each now-empty parent up to, but never including, the own cgroup.
    pub fn remove_dir(&self, dir: &Path) -> Result<(), CgroupError> {
        self.check_inside(dir)?;
        let mut cur = dir.to_path_buf();
        while cur.starts_with(&self.own_dir) && cur != self.own_dir {
            match fs::remove_dir(&cur) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // A parent still holding other cgroups is where we stop.
                Err(_) if cur != dir => break,
                Err(source) => {
                    return Err(CgroupError::Io {
                        op: "remove cgroup",
                        path: cur,
                        source,
                    })
                }
            }
            if cur == self.root_dir {
                break;
            }
            if !cur.pop() {
                break;
            }
        }
        Ok(())
    }

    fn check_inside(&self, dir: &Path) -> Result<(), CgroupError> {
        let rel =
            dir.strip_prefix(&self.own_dir)
                .map_err(|_| CgroupError::RootOutsideOwnSubtree {
                    requested: dir.to_path_buf(),
                    own: self.own_dir.clone(),
                })?;
        let rel = plain_relative("cgroup directory", rel)?;
        if rel.as_os_str().is_empty() {
            return Err(CgroupError::RootOutsideOwnSubtree {
                requested: dir.to_path_buf(),
                own: self.own_dir.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CGROUP: &str = "4:memory:/process_api/abc\n2:cpu,cpuacct:/\n0::/\n";
    const MOUNTS: &str = "\
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
34 30 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpuacct,cpu
";

    #[test]
    fn default_root_is_a_child_of_own_cgroup_in_every_hierarchy() {
        let root = CgroupRoot::from_sources(CGROUP, MOUNTS, None).unwrap();
        assert_eq!(root.hierarchies.len(), 3);
        let mem = root.v1_controller("memory").unwrap();
        assert_eq!(
            mem.root_dir,
            PathBuf::from("/sys/fs/cgroup/memory/process_api/abc/podlet")
        );
        assert_eq!(
            mem.own_dir,
            PathBuf::from("/sys/fs/cgroup/memory/process_api/abc")
        );
        let cpu = root.v1_controller("cpu").unwrap();
        assert_eq!(
            cpu.root_dir,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/podlet")
        );
        let v2 = root.unified().unwrap();
        assert_eq!(v2.root_cgroup, PathBuf::from("/podlet"));
        for h in &root.hierarchies {
            assert_ne!(h.root_dir, h.mount_point);
            assert!(h.root_dir.starts_with(&h.own_dir));
        }
    }

    #[test]
    fn absolute_cgroups_path_lands_under_root() {
        let root = CgroupRoot::from_sources(CGROUP, MOUNTS, None).unwrap();
        let mem = root.v1_controller("memory").unwrap();
        assert_eq!(
            mem.container_dir("/machine/ctr1").unwrap(),
            PathBuf::from("/sys/fs/cgroup/memory/process_api/abc/podlet/machine/ctr1")
        );
        assert_eq!(
            mem.container_dir("ctr1").unwrap(),
            mem.root_dir.join("ctr1")
        );
        for bad in ["/../../etc", "a/../b", "./a", "/", ""] {
            assert!(mem.container_dir(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn requested_roots_must_stay_below_own_cgroup() {
        let ok = CgroupRoot::from_sources(CGROUP, MOUNTS, Some(Path::new("a/b"))).unwrap();
        assert_eq!(ok.unified().unwrap().root_cgroup, PathBuf::from("/a/b"));
        assert!(CgroupRoot::from_sources(CGROUP, MOUNTS, Some(Path::new("/"))).is_err());
        assert!(CgroupRoot::from_sources(CGROUP, MOUNTS, Some(Path::new("../x"))).is_err());
        assert!(CgroupRoot::from_sources(CGROUP, MOUNTS, Some(Path::new("."))).is_err());
        // Absolute: fine only where it lies below the own cgroup of every hierarchy.
        let abs = CgroupRoot::from_sources(CGROUP, MOUNTS, Some(Path::new("/process_api/abc/p")))
            .unwrap();
        assert_eq!(
            abs.v1_controller("memory").unwrap().root_dir,
            PathBuf::from("/sys/fs/cgroup/memory/process_api/abc/p")
        );
        let err =
            CgroupRoot::from_sources(CGROUP, MOUNTS, Some(Path::new("/elsewhere"))).unwrap_err();
        assert!(err.to_string().contains("/process_api/abc"), "{err}");
    }

    #[test]
    fn namespaced_mount_roots_are_stripped() {
        let cg = "0::/outer/inner\n";
        let mi = "1 0 0:1 /outer /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let root = CgroupRoot::from_sources(cg, mi, None).unwrap();
        assert_eq!(
            root.unified().unwrap().root_dir,
            PathBuf::from("/sys/fs/cgroup/inner/podlet")
        );
        let hidden = "1 0 0:1 /other /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert!(CgroupRoot::from_sources(cg, hidden, None).is_err());
    }

    #[test]
    fn unmounted_v1_hierarchy_is_an_error() {
        let err = CgroupRoot::from_sources("3:pids:/\n", MOUNTS, None).unwrap_err();
        assert!(err.to_string().contains("pids"), "{err}");
    }

    #[test]
    fn create_and_remove_refuse_to_leave_the_subtree() {
        let tmp = tempfile::tempdir().unwrap();
        let own = tmp.path().join("own");
        fs::create_dir(&own).unwrap();
        let h = HierarchyRoot {
            version: CgroupVersion::V2,
            controllers: vec![],
            own_cgroup: PathBuf::from("/"),
            root_cgroup: PathBuf::from("/podlet"),
            own_dir: own.clone(),
            root_dir: own.join("podlet"),
            mount_point: own.clone(),
        };
        let ctr = h.container_dir("/a/b").unwrap();
        h.create_dir(&ctr).unwrap();
        assert!(ctr.is_dir());
        assert!(h.create_dir(&own).is_err());
        assert!(h.create_dir(tmp.path()).is_err());
        assert!(h.create_dir(&own.join("x/../../y")).is_err());
        h.remove_dir(&ctr).unwrap();
        assert!(!own.join("podlet").exists());
        assert!(own.is_dir(), "own cgroup must never be removed");
    }
}
