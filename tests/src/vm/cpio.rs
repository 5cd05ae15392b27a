//! A minimal writer for the `newc` cpio format the Linux kernel unpacks as an initramfs.
//!
//! Only what an initramfs needs: directories, regular files and symlinks, all owned by root.

use std::io::{self, Write};

/// What one archive entry is.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A directory with the given permission bits.
    Dir {
        /// Permission bits (e.g. `0o755`).
        mode: u32,
    },
    /// A regular file with its contents.
    File {
        /// Permission bits.
        mode: u32,
        /// The file's bytes.
        data: Vec<u8>,
    },
    /// A symbolic link to `target`.
    Symlink {
        /// Where the link points.
        target: String,
    },
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

fn pad4(out: &mut impl Write, len: usize) -> io::Result<()> {
    let pad = (4 - len % 4) % 4;
    out.write_all(&[0u8; 3][..pad])
}

fn header(
    out: &mut impl Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: usize,
    name: &str,
) -> io::Result<()> {
    let fields = [ino, mode, 0, 0, nlink, 0, size as u32, 0, 0, 0, 0];
    let mut h = String::from("070701");
    for f in fields {
        h.push_str(&format!("{f:08x}"));
    }
    h.push_str(&format!("{:08x}{:08x}", name.len() + 1, 0));
    out.write_all(h.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    pad4(out, 110 + name.len() + 1)
}

/// Writes `entries` (paths relative to the archive root, no leading `/`) and the trailer.
///
/// Parents must come before their children, as the kernel creates entries in order.
pub fn write(out: &mut impl Write, entries: &[(String, Entry)]) -> io::Result<()> {
    for (i, (name, entry)) in entries.iter().enumerate() {
        let ino = i as u32 + 1;
        let (mode, nlink, data): (u32, u32, &[u8]) = match entry {
            Entry::Dir { mode } => (S_IFDIR | mode, 2, &[]),
            Entry::File { mode, data } => (S_IFREG | mode, 1, data),
            Entry::Symlink { target } => (S_IFLNK | 0o777, 1, target.as_bytes()),
        };
        header(out, ino, mode, nlink, data.len(), name)?;
        out.write_all(data)?;
        pad4(out, data.len())?;
    }
    header(out, 0, 0, 1, 0, "TRAILER!!!")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_and_end_with_the_trailer() {
        let mut buf = Vec::new();
        write(
            &mut buf,
            &[
                ("bin".into(), Entry::Dir { mode: 0o755 }),
                (
                    "init".into(),
                    Entry::File {
                        mode: 0o755,
                        data: b"#!/bin/sh\n".to_vec(),
                    },
                ),
                (
                    "sh".into(),
                    Entry::Symlink {
                        target: "bin/busybox".into(),
                    },
                ),
            ],
        )
        .unwrap();
        assert_eq!(buf.len() % 4, 0);
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("070701"));
        assert_eq!(
            text.matches("070701").count(),
            4,
            "three entries and a trailer"
        );
        assert!(text.contains("TRAILER!!!"));
        // The file's header: mode 0100755, size 10, name "init" + NUL = 5 bytes.
        let at = text.find("init").unwrap();
        let h = &text[at - 110..at];
        assert_eq!(&h[14..22], "000081ed");
        assert_eq!(&h[54..62], "0000000a");
        assert_eq!(&h[94..102], "00000005");
        // Data starts 4-aligned after the name.
        let data_at = text.find("#!/bin/sh").unwrap();
        assert_eq!(data_at % 4, 0);
    }
}
