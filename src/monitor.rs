//! The per-container monitor (`podlet monitor`, like conmon or a containerd shim): a small
//! process in its own session that creates and starts one container as its child, owns its
//! stdout and stderr, writes them to `containers/<name>/ctr.log` (CRI log format), records the
//! exit status in `exit.json`, and with `--rm` removes the container afterwards. A detached
//! container therefore keeps running, logging and reporting its exit code after the `podlet`
//! CLI has gone.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use podlet_runtime::cgroups::CgroupRoot;
use podlet_runtime::container::{now_rfc3339, CreateOptions, Runtime};
use podlet_runtime::image::snapshot::Snapshot;
use podlet_runtime::state::StateRoot;
use serde::{Deserialize, Serialize};

/// What the CLI hands the monitor (`containers/<name>/monitor.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MonitorConfig {
    /// Container id.
    pub id: String,
    /// Runtime state root.
    pub state: PathBuf,
    /// Cgroup root override.
    pub cgroup_root: Option<PathBuf>,
    /// Remove the container and its snapshot when it exits.
    pub remove: bool,
    /// Published ports (`-p`), proxied by the monitor while the container runs.
    #[serde(default)]
    pub ports: Vec<String>,
}

/// How a container ended (`exit.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Shell-style exit code (128+N for signal N).
    #[serde(rename = "exitCode")]
    pub exit_code: i32,
    /// When the monitor saw it exit.
    #[serde(rename = "finishedAt")]
    pub finished_at: String,
}

/// The fd on which a starting monitor reports `ok` or the error (inherited from the CLI).
pub const READY_FD: i32 = 3;

/// Reads a finished container's exit record, if any.
pub fn exit_record(snapshot_dir: &Path) -> Option<ExitRecord> {
    let data = fs::read(snapshot_dir.join("exit.json")).ok()?;
    serde_json::from_slice(&data).ok()
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((r, w))
}

/// Copies lines from `r` to the log in CRI format (`<time> <stream> F <line>`).
fn pump(
    r: OwnedFd,
    stream: &'static str,
    log: Arc<Mutex<fs::File>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(fs::File::from(r));
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let partial = !line.ends_with(b"\n");
                    if !partial {
                        line.pop();
                    }
                    let tag = if partial { "P" } else { "F" };
                    let mut entry = format!("{} {stream} {tag} ", now_rfc3339()).into_bytes();
                    entry.extend_from_slice(&line);
                    entry.push(b'\n');
                    if let Ok(mut f) = log.lock() {
                        let _ = f.write_all(&entry);
                    }
                }
            }
        }
    })
}

/// `podlet monitor SNAPSHOT_DIR`: never returns to a caller that could outlive it usefully;
/// the exit code is the container's.
pub fn run(snapshot_dir: &Path) -> Result<i32> {
    // SAFETY: the CLI passed fd 3 open for writing; nothing else owns it in this process.
    let ready = unsafe { OwnedFd::from_raw_fd(READY_FD) };
    let mut ready = fs::File::from(ready);
    let report = |ready: &mut fs::File, msg: &str| {
        let _ = ready.write_all(msg.as_bytes());
    };
    let started = (|| -> Result<(Runtime, MonitorConfig, i32, [std::thread::JoinHandle<()>; 2])> {
        let cfg: MonitorConfig = serde_json::from_slice(
            &fs::read(snapshot_dir.join("monitor.json")).context("monitor.json")?,
        )?;
        let snap = Snapshot::open(&podlet_runtime::image::ImageStore::open(
            snapshot_dir
                .parent()
                .and_then(Path::parent)
                .context("snapshot directory layout")?,
        )?, &cfg.id)?;
        let rt = Runtime {
            state: StateRoot::new(&cfg.state),
            cgroups: CgroupRoot::discover(cfg.cgroup_root.as_deref())?,
        };
        let log = Arc::new(Mutex::new(
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(snapshot_dir.join("ctr.log"))?,
        ));
        // The container inherits fds 0-2: /dev/null and the two pipes.
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let null = fs::File::open("/dev/null")?;
        nix::unistd::dup2(null.as_raw_fd(), 0)?;
        nix::unistd::dup2(out_w.as_raw_fd(), 1)?;
        nix::unistd::dup2(err_w.as_raw_fd(), 2)?;
        drop((out_w, err_w));
        let mappings = cfg
            .ports
            .iter()
            .map(|p| podlet_runtime::ports::PortMapping::parse(p))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let bound = podlet_runtime::ports::bind(&mappings)?;
        let opts = CreateOptions {
            overlay: Some(snap.overlay_data()),
            ..CreateOptions::default()
        };
        let st = rt.create(&cfg.id, &snap.dir, &opts)?;
        bound.forward(PathBuf::from(format!("/proc/{}/ns/net", st.pid)));
        if let Err(e) = rt.start(&cfg.id) {
            let _ = rt.delete(&cfg.id, true);
            return Err(e.into());
        }
        // Only the container keeps the write ends now: EOF when its processes are gone.
        nix::unistd::dup2(null.as_raw_fd(), 1)?;
        nix::unistd::dup2(null.as_raw_fd(), 2)?;
        let pumps = [pump(out_r, "stdout", log.clone()), pump(err_r, "stderr", log)];
        Ok((rt, cfg, st.pid, pumps))
    })();
    let (rt, cfg, pid, pumps) = match started {
        Ok(x) => x,
        Err(e) => {
            report(&mut ready, &format!("{e:#}"));
            return Ok(125);
        }
    };
    report(&mut ready, "ok");
    drop(ready);
    let code = rt.wait_child(pid);
    // Give the log pumps a moment to drain; processes outside a pid namespace may keep the
    // pipes open, and the record must not wait for them.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    for p in pumps {
        while !p.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let record = ExitRecord {
        exit_code: code,
        finished_at: now_rfc3339(),
    };
    let tmp = snapshot_dir.join("exit.json.tmp");
    fs::write(&tmp, serde_json::to_vec(&record)?)?;
    fs::rename(&tmp, snapshot_dir.join("exit.json"))?;
    if cfg.remove {
        let _ = rt.delete(&cfg.id, true);
        if let Err(e) = crate::pod_cli::leave_pod(&cfg.state, snapshot_dir, &cfg.id) {
            tracing::warn!(error = %e, "leaving the pod");
        }
        let _ = fs::remove_dir_all(snapshot_dir);
    }
    Ok(code)
}
