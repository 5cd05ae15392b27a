use std::path::PathBuf;

use super::CgroupError;

/// One line of `/proc/<pid>/cgroup`: a hierarchy and the process's cgroup in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMembership {
    /// Hierarchy id; `0` is the cgroup v2 unified hierarchy.
    pub hierarchy_id: u32,
    /// Controllers bound to the hierarchy (`memory`, `cpu`, `name=systemd`); empty for v2.
    pub controllers: Vec<String>,
    /// The cgroup path, absolute within the hierarchy.
    pub path: PathBuf,
}

impl CgroupMembership {
    /// True for the cgroup v2 unified hierarchy.
    pub fn is_unified(&self) -> bool {
        self.hierarchy_id == 0 && self.controllers.is_empty()
    }

    /// A human name for the hierarchy: `cgroup2` or its controllers joined by commas.
    pub fn hierarchy_name(&self) -> String {
        if self.is_unified() {
            "cgroup2".to_string()
        } else {
            self.controllers.join(",")
        }
    }
}

/// Parses the text of `/proc/<pid>/cgroup`.
pub fn parse_proc_cgroup(text: &str) -> Result<Vec<CgroupMembership>, CgroupError> {
    let mut out = Vec::new();
    for (idx, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let malformed = || CgroupError::MalformedMembership {
            line: idx + 1,
            text: line.to_string(),
        };
        let mut parts = line.splitn(3, ':');
        let id = parts.next().ok_or_else(malformed)?;
        let controllers = parts.next().ok_or_else(malformed)?;
        let path = parts.next().ok_or_else(malformed)?;
        let hierarchy_id: u32 = id.parse().map_err(|_| malformed())?;
        if !path.starts_with('/') {
            return Err(malformed());
        }
        let controllers = controllers
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        out.push(CgroupMembership {
            hierarchy_id,
            controllers,
            path: PathBuf::from(path),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hybrid_layout() {
        let text = "9:name=systemd:/\n4:memory:/process_api/abc\n2:cpu,cpuacct:/x\n0::/\n";
        let m = parse_proc_cgroup(text).unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].controllers, vec!["name=systemd"]);
        assert_eq!(m[1].path, PathBuf::from("/process_api/abc"));
        assert_eq!(m[2].controllers, vec!["cpu", "cpuacct"]);
        assert!(m[3].is_unified());
        assert_eq!(m[3].hierarchy_name(), "cgroup2");
        assert_eq!(m[2].hierarchy_name(), "cpu,cpuacct");
    }

    #[test]
    fn keeps_colons_inside_paths() {
        let m = parse_proc_cgroup("0::/a:b/c\n").unwrap();
        assert_eq!(m[0].path, PathBuf::from("/a:b/c"));
    }

    #[test]
    fn rejects_garbage_with_line_number() {
        let err = parse_proc_cgroup("0::/\nnot-a-line\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(parse_proc_cgroup("x::/\n").is_err());
        assert!(parse_proc_cgroup("0::relative\n").is_err());
    }
}
