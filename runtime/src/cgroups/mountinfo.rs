use std::path::PathBuf;

use super::CgroupError;

/// A cgroup filesystem mount found in `/proc/<pid>/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// Where the hierarchy is mounted.
    pub mount_point: PathBuf,
    /// The cgroup of the hierarchy that appears at the mount point.
    pub root: PathBuf,
    /// True for `cgroup2`, false for a v1 `cgroup` mount.
    pub unified: bool,
    /// For v1: the controllers and `name=` options of the mount.
    pub controllers: Vec<String>,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Options of a v1 cgroup mount that are not controllers.
const GENERIC_OPTIONS: &[&str] = &[
    "rw",
    "ro",
    "nosuid",
    "nodev",
    "noexec",
    "relatime",
    "clone_children",
    "noprefix",
    "xattr",
];

/// Extracts every cgroup (v1 and v2) mount from the text of `/proc/<pid>/mountinfo`.
pub fn parse_cgroup_mounts(text: &str) -> Result<Vec<CgroupMount>, CgroupError> {
    let mut out = Vec::new();
    for (idx, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let malformed = || CgroupError::MalformedMountinfo {
            line: idx + 1,
            text: line.to_string(),
        };
        let (left, right) = line.split_once(" - ").ok_or_else(malformed)?;
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left.len() < 6 || right.len() < 3 {
            return Err(malformed());
        }
        let fstype = right[0];
        let unified = match fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        let controllers = if unified {
            Vec::new()
        } else {
            right[2]
                .split(',')
                .filter(|o| !GENERIC_OPTIONS.contains(o) && !o.starts_with("release_agent="))
                .map(str::to_string)
                .collect()
        };
        out.push(CgroupMount {
            mount_point: PathBuf::from(unescape(left[4])),
            root: PathBuf::from(unescape(left[3])),
            unified,
            controllers,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 0:23 / /sys rw,nosuid shared:7 - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup rw shared:9 - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
34 30 0:30 / /sys/fs/cgroup/memory rw,nosuid shared:14 - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw shared:15 - cgroup cgroup rw,cpu,cpuacct
36 30 0:32 /sub /mnt/with\\040space rw - cgroup cgroup rw,name=systemd,xattr,release_agent=/x
";

    #[test]
    fn finds_v1_and_v2_mounts() {
        let m = parse_cgroup_mounts(HYBRID).unwrap();
        assert_eq!(m.len(), 4);
        assert!(m[0].unified);
        assert_eq!(m[0].mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(m[1].controllers, vec!["memory"]);
        assert_eq!(m[2].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(m[3].controllers, vec!["name=systemd"]);
        assert_eq!(m[3].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(m[3].root, PathBuf::from("/sub"));
    }

    #[test]
    fn rejects_lines_without_separator() {
        let err = parse_cgroup_mounts("1 2 3 / /x rw cgroup2\n").unwrap_err();
        assert!(err.to_string().contains("line 1"));
    }
}
