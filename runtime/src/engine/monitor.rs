//! The per-container monitor (`podlet monitor`, like conmon or a containerd shim): a small
//! process in its own session that creates and starts one container as its child, owns its
//! stdout and stderr, writes them to `containers/<name>/ctr.log` (CRI log format), records the
//! exit status in `exit.json`, and with `remove` deletes the container afterwards. A detached
//! container therefore keeps running, logging and reporting its exit code after whoever
//! started it (the CLI, the agent) has gone.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{membership, EngineError};
use crate::cgroups::CgroupRoot;
use crate::container::{now_rfc3339, CreateOptions, Runtime};
use crate::image::snapshot::Snapshot;
use crate::state::StateRoot;

/// What the engine hands the monitor (`containers/<name>/monitor.json`).
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
    /// Published ports (`[IP:]HOSTPORT:PORT[/udp]`), proxied by the monitor while it runs.
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
    /// Whether the kernel's OOM killer ended it (its cgroup counted an OOM kill).
    #[serde(rename = "oomKilled", default)]
    pub oom_killed: bool,
}

/// The fd on which a starting monitor reports `ok` or the error (inherited from its parent).
pub const READY_FD: i32 = 3;

/// The monitor's configuration file in a snapshot directory.
pub const CONFIG_FILE: &str = "monitor.json";
/// The container's log in a snapshot directory.
pub const LOG_FILE: &str = "ctr.log";

/// Reads a finished container's exit record, if any.
pub fn exit_record(snapshot_dir: &Path) -> Option<ExitRecord> {
    let data = fs::read(snapshot_dir.join("exit.json")).ok()?;
    serde_json::from_slice(&data).ok()
}

fn sys(what: &'static str) -> impl Fn(nix::Error) -> EngineError {
    move |e| EngineError::Io {
        what,
        path: PathBuf::new(),
        source: std::io::Error::from(e),
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> EngineError + 'a {
    move |source| EngineError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), EngineError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))
}

/// Copies lines from `r` to the log in CRI format (`<time> <stream> <F|P> <line>`).
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

struct Running {
    rt: Runtime,
    cfg: MonitorConfig,
    pid: i32,
    pumps: [std::thread::JoinHandle<()>; 2],
}

fn start(snapshot_dir: &Path) -> Result<Running, EngineError> {
    let cfg_path = snapshot_dir.join(CONFIG_FILE);
    let cfg: MonitorConfig =
        serde_json::from_slice(&fs::read(&cfg_path).map_err(io("read", &cfg_path))?)
            .map_err(|e| EngineError::Invalid(format!("{}: {e}", cfg_path.display())))?;
    let store_root = snapshot_dir
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| EngineError::Invalid("snapshot directory layout".into()))?;
    let snap = Snapshot::open(&crate::image::ImageStore::open(store_root)?, &cfg.id)?;
    let rt = Runtime {
        state: StateRoot::new(&cfg.state),
        cgroups: CgroupRoot::discover(cfg.cgroup_root.as_deref())
            .map_err(crate::container::ContainerError::from)?,
    };
    let log_path = snapshot_dir.join(LOG_FILE);
    let log = Arc::new(Mutex::new(
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io("open the log", &log_path))?,
    ));
    // The container inherits fds 0-2: /dev/null and the two pipes.
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let null = fs::File::open("/dev/null").map_err(io("open", Path::new("/dev/null")))?;
    nix::unistd::dup2(null.as_raw_fd(), 0).map_err(sys("dup2"))?;
    nix::unistd::dup2(out_w.as_raw_fd(), 1).map_err(sys("dup2"))?;
    nix::unistd::dup2(err_w.as_raw_fd(), 2).map_err(sys("dup2"))?;
    drop((out_w, err_w));
    let mappings = cfg
        .ports
        .iter()
        .map(|p| crate::ports::PortMapping::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    let bound = crate::ports::bind(&mappings)?;
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
    nix::unistd::dup2(null.as_raw_fd(), 1).map_err(sys("dup2"))?;
    nix::unistd::dup2(null.as_raw_fd(), 2).map_err(sys("dup2"))?;
    let pumps = [
        pump(out_r, "stdout", log.clone()),
        pump(err_r, "stderr", log),
    ];
    Ok(Running {
        rt,
        cfg,
        pid: st.pid,
        pumps,
    })
}

/// Runs the monitor for the container whose snapshot is `snapshot_dir`; returns the
/// container's exit code (125 if it could not be started, after reporting why on
/// [`READY_FD`]).
pub fn run(snapshot_dir: &Path) -> Result<i32, EngineError> {
    // SAFETY: the parent passed fd 3 open for writing; nothing else owns it in this process.
    let ready = unsafe { OwnedFd::from_raw_fd(READY_FD) };
    let mut ready = fs::File::from(ready);
    let Running {
        rt,
        cfg,
        pid,
        pumps,
    } = match start(snapshot_dir) {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.write_all(e.to_string().as_bytes());
            return Ok(125);
        }
    };
    let _ = ready.write_all(b"ok");
    drop(ready);
    let code = rt.wait_child(pid);
    let oom_killed = rt.oom_kills(&cfg.id).map(|n| n > 0).unwrap_or(false);
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
        oom_killed,
    };
    let tmp = snapshot_dir.join("exit.json.tmp");
    let data = serde_json::to_vec(&record).map_err(|e| EngineError::Invalid(e.to_string()))?;
    fs::write(&tmp, data).map_err(io("write", &tmp))?;
    fs::rename(&tmp, snapshot_dir.join("exit.json")).map_err(io("rename", &tmp))?;
    if cfg.remove {
        let _ = rt.delete(&cfg.id, true);
        if let Err(e) = membership::leave(&cfg.state, snapshot_dir, &cfg.id) {
            tracing::warn!(error = %e, "leaving the pod");
        }
        let _ = fs::remove_dir_all(snapshot_dir);
    }
    Ok(code)
}
