//! The cgroup v2 tier: run a program inside a small Linux VM that has real cgroup v2 controllers.
//!
//! The host's cgroups are hybrid with no v2 controllers, so real cgroup v2 limits are tested in a
//! guest kernel that boots with the host filesystem as its root, mounts cgroup2 with
//! `cpu io memory pids` enabled, runs one program, writes its exit status to a file and powers
//! off. Two backends boot the same init script:
//!
//! - [`Backend::Uml`]: Debian's User-Mode Linux (`hostfs` root, ~1.6 s to boot). It panics at
//!   boot on CPUs with AMX ("ptrace set fp regs failed").
//! - [`Backend::Qemu`]: Debian's kernel under QEMU/TCG with the host's `/` shared read-only over
//!   9p and the run directory shared read-write (~10-15 s to boot, boots on every CPU).
//!
//! Which one is used is probed once per test run ([`selected_backend`]) or forced with
//! `PODLET_TEST_VM=uml|qemu`. A guest that does not boot is an error, never a skip.
//!
//! Inside the guest, `PODLET_IN_VM=1` is set; [`in_vm`] reads it.

pub mod cpio;
mod probe;
mod qemu;
mod uml;

use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use probe::{selected_backend, BACKEND_VAR};

/// The kind of VM a test runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// User-Mode Linux (`/usr/bin/linux.uml`).
    Uml,
    /// QEMU under TCG with a Debian kernel from `/boot`.
    Qemu,
}

impl Backend {
    /// The name `PODLET_TEST_VM` takes for this backend.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Uml => "uml",
            Backend::Qemu => "qemu",
        }
    }

    /// Parses a `PODLET_TEST_VM` value.
    pub fn parse(s: &str) -> Option<Backend> {
        match s {
            "uml" => Some(Backend::Uml),
            "qemu" => Some(Backend::Qemu),
            _ => None,
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a VM run could not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// No backend can be used on this machine (or the forced one cannot).
    #[error("no VM backend for the cgroup v2 tier: {0}")]
    NoBackend(String),
    /// The kernel or emulator could not be started.
    #[error("cannot start {backend} ({program}): {source}")]
    Spawn {
        /// The backend.
        backend: Backend,
        /// The executable tried.
        program: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The guest never reached the init script.
    #[error("{backend} guest did not boot (init never ran){hint}; console:\n{console}")]
    NoBoot {
        /// The backend.
        backend: Backend,
        /// A known cause recognised in the console, if any.
        hint: String,
        /// What the kernel printed.
        console: String,
    },
    /// The guest booted but the program's status never appeared.
    #[error("{backend} guest booted but the program did not finish{timeout}; output:\n{output}\nconsole:\n{console}")]
    NoStatus {
        /// The backend.
        backend: Backend,
        /// " (timed out)" when the deadline passed.
        timeout: &'static str,
        /// The program's output so far.
        output: String,
        /// What the kernel printed.
        console: String,
    },
    /// Preparing or reading the run directory (or the guest's boot files) failed.
    #[error("VM run file {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// What a finished program inside the guest returned.
#[derive(Debug, Clone)]
pub struct VmOutcome {
    /// The backend that ran it.
    pub backend: Backend,
    /// The program's exit status inside the guest.
    pub status: i32,
    /// Its stdout and stderr, interleaved.
    pub output: String,
    /// How long the whole run took, boot included.
    pub elapsed: Duration,
}

impl VmOutcome {
    /// True if the program exited 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// How to boot the guest.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The backend; `None` uses [`selected_backend`].
    pub backend: Option<Backend>,
    /// The UML kernel executable.
    pub uml_kernel: PathBuf,
    /// The QEMU system emulator.
    pub qemu: PathBuf,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Give up after this long; `None` picks per backend (UML 240 s, QEMU 900 s: TCG runs code
    /// 10-15x slower than the host).
    pub timeout: Option<Duration>,
    /// Extra environment for the program inside.
    pub env: Vec<(String, String)>,
    /// Where run directories go; must not be under `/tmp` (the guest mounts a tmpfs there).
    pub work_root: PathBuf,
    /// Overrides the init script path given to the guest (for testing the harness itself).
    pub init_override: Option<PathBuf>,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            backend: None,
            uml_kernel: PathBuf::from("/usr/bin/linux.uml"),
            qemu: PathBuf::from("/usr/bin/qemu-system-x86_64"),
            memory_mib: 512,
            timeout: None,
            env: Vec::new(),
            work_root: crate::bins::target_profile_dir().join("podlet-vm"),
            init_override: None,
        }
    }
}

impl VmConfig {
    fn timeout_for(&self, backend: Backend) -> Duration {
        self.timeout.unwrap_or(match backend {
            Backend::Uml => Duration::from_secs(240),
            Backend::Qemu => Duration::from_secs(900),
        })
    }
}

/// The environment variable set for programs inside the guest.
pub const IN_VM_VAR: &str = "PODLET_IN_VM";

/// True when running inside a guest started by this harness.
pub fn in_vm() -> bool {
    std::env::var_os(IN_VM_VAR).is_some_and(|v| v == "1")
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> VmError + '_ {
    move |source| VmError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The init script both backends run as the guest's first process (after QEMU's initramfs has
/// mounted the root): it mounts the kernel filesystems and cgroup2, runs the program with its
/// output and exit status in `dir`, and powers off.
fn init_script(dir: &Path, program: &Path, args: &[&str], env: &[(String, String)]) -> String {
    let d = shell_quote(&dir.display().to_string());
    let mut cmd = format!("env {IN_VM_VAR}=1 RUST_BACKTRACE=1");
    for (k, v) in env {
        cmd.push_str(&format!(" {}={}", k, shell_quote(v)));
    }
    cmd.push(' ');
    cmd.push_str(&shell_quote(&program.display().to_string()));
    for a in args {
        cmd.push(' ');
        cmd.push_str(&shell_quote(a));
    }
    format!(
        "#!/bin/sh\n\
         # Generated by podlet-testkit: init for one cgroup v2 tier run.\n\
         export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t tmpfs tmpfs /tmp\n\
         mount -t tmpfs tmpfs /run\n\
         mount -t cgroup2 cgroup2 /sys/fs/cgroup\n\
         echo '+cpu +memory +pids +io' > /sys/fs/cgroup/cgroup.subtree_control\n\
         ip link set lo up\n\
         # overlayfs for image snapshots: QEMU's kernel loads it from the host's /lib/modules;\n\
         # UML's modules live in /usr/lib/uml/modules.\n\
         modprobe overlay 2>/dev/null || insmod /usr/lib/uml/modules/$(uname -r)/kernel/fs/overlayfs/overlay.ko 2>/dev/null\n\
         echo booted > {d}/booted\n\
         cd {d}\n\
         {cmd} > {d}/output 2>&1 < /dev/null\n\
         echo $? > {d}/status.tmp && mv {d}/status.tmp {d}/status\n\
         sync\n\
         /bin/busybox poweroff -f\n"
    )
}

static RUN_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Boots a guest, runs `program args…` inside it as root, and returns its status and output.
pub fn run(program: &Path, args: &[&str], config: &VmConfig) -> Result<VmOutcome, VmError> {
    let backend = match config.backend {
        Some(b) => b,
        None => selected_backend()?,
    };
    let n = RUN_COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = config
        .work_root
        .join(format!("run-{}-{}", std::process::id(), n));
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let result = run_in_dir(backend, &dir, program, args, config);
    // The run directory is removed whatever happened; its contents are in the result or error.
    let _ = fs::remove_dir_all(&dir);
    let _ = fs::remove_dir(&config.work_root);
    result
}

fn read_lossy(path: &Path) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Names a known cause of a boot failure from what the guest kernel printed.
fn boot_failure_hint(backend: Backend, console: &str) -> String {
    if backend == Backend::Uml && console.contains("ptrace set fp regs failed") {
        return " (User-Mode Linux cannot restore this CPU's extended FPU state: AMX CPUs make \
                 it panic; use PODLET_TEST_VM=qemu)"
            .into();
    }
    String::new()
}

fn run_in_dir(
    backend: Backend,
    dir: &Path,
    program: &Path,
    args: &[&str],
    config: &VmConfig,
) -> Result<VmOutcome, VmError> {
    let started = Instant::now();
    let init = dir.join("init.sh");
    fs::write(&init, init_script(dir, program, args, &config.env)).map_err(io_err(&init))?;
    fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(io_err(&init))?;
    let console_path = dir.join("console");
    let console = fs::File::create(&console_path).map_err(io_err(&console_path))?;
    let console_err = console.try_clone().map_err(io_err(&console_path))?;
    let init_arg = config.init_override.as_deref().unwrap_or(&init);
    let (program_path, mut cmd) = match backend {
        Backend::Uml => (
            config.uml_kernel.clone(),
            uml::command(&config.uml_kernel, config.memory_mib, init_arg, dir),
        ),
        Backend::Qemu => (
            config.qemu.clone(),
            qemu::command(
                &config.qemu,
                config.memory_mib,
                init_arg,
                dir,
                &config.work_root,
            )?,
        ),
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(console)
        .stderr(console_err)
        // Its own process group, so a hung guest (UML forks helper processes) is killed whole.
        .process_group(0)
        .spawn()
        .map_err(|source| VmError::Spawn {
            backend,
            program: program_path.clone(),
            source,
        })?;
    let pgid = child.id() as i32;
    let deadline = started + config.timeout_for(backend);
    let mut timed_out = false;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                // SAFETY: kill(2) on the process group this function created; no memory involved.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                let _ = child.wait();
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(source) => {
                return Err(VmError::Io {
                    path: program_path,
                    source,
                })
            }
        }
    }
    // UML's helper processes can outlive the main one by a moment; make sure none remain.
    // SAFETY: as above, signals only our own process group.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let console = read_lossy(&console_path);
    if !dir.join("booted").exists() {
        return Err(VmError::NoBoot {
            backend,
            hint: boot_failure_hint(backend, &console),
            console,
        });
    }
    let output = read_lossy(&dir.join("output"));
    let status = fs::read_to_string(dir.join("status"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    match status {
        Some(status) => Ok(VmOutcome {
            backend,
            status,
            output,
            elapsed: started.elapsed(),
        }),
        None => Err(VmError::NoStatus {
            backend,
            timeout: if timed_out { " (timed out)" } else { "" },
            output,
            console,
        }),
    }
}

/// Runs tests of the calling test binary inside one guest boot
/// (`NAME… --exact --include-ignored`), so that a binary's cgroup v2 checks share a boot.
///
/// The inside tests are usually `#[ignore]`d on the host and check [`in_vm`] themselves.
pub fn run_tests(test_names: &[&str], config: &VmConfig) -> Result<VmOutcome, VmError> {
    let exe = std::env::current_exe().map_err(|source| VmError::Io {
        path: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    let mut args: Vec<&str> = test_names.to_vec();
    args.extend([
        "--exact",
        "--include-ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    let outcome = run(&exe, &args, config)?;
    eprintln!(
        "cgroup v2 tier: {} ran {} in {:.1} s",
        outcome.backend,
        test_names.join(", "),
        outcome.elapsed.as_secs_f64()
    );
    Ok(outcome)
}

/// Runs `test_name` of the calling test binary inside the guest and panics, with its output,
/// unless it ran and passed there (the driver side of a cgroup v2 tier test).
pub fn assert_passes_inside(test_name: &str) {
    let outcome = run_test(test_name, &VmConfig::default()).expect("the cgroup v2 VM must boot");
    assert!(
        outcome.success() && outcome.output.contains("1 passed"),
        "{test_name} inside {} (status {}):\n{}",
        outcome.backend,
        outcome.status,
        outcome.output
    );
}

/// Runs one test of the calling test binary inside the guest; see [`run_tests`].
pub fn run_test(test_name: &str, config: &VmConfig) -> Result<VmOutcome, VmError> {
    run_tests(&[test_name], config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_script_quotes_arguments_and_reports_status() {
        let s = init_script(
            Path::new("/w/d"),
            Path::new("/bin/x"),
            &["a b", "it's"],
            &[("K".into(), "v v".into())],
        );
        assert!(s.contains("'/bin/x' 'a b' 'it'\\''s'"), "{s}");
        assert!(s.contains("K='v v'"));
        assert!(s.contains("PODLET_IN_VM=1"));
        assert!(s.contains("mount -t cgroup2 cgroup2 /sys/fs/cgroup"));
        assert!(s.contains("> '/w/d'/status.tmp"));
        assert!(s.trim_end().ends_with("poweroff -f"));
    }

    #[test]
    fn the_amx_panic_is_named() {
        let console = "userspace - ptrace set fp regs failed, errno = 14\nKernel panic";
        assert!(boot_failure_hint(Backend::Uml, console).contains("AMX"));
        assert!(boot_failure_hint(Backend::Uml, "other panic").is_empty());
    }

    #[test]
    fn backend_names_round_trip() {
        for b in [Backend::Uml, Backend::Qemu] {
            assert_eq!(Backend::parse(b.name()), Some(b));
        }
        assert_eq!(Backend::parse("kvm"), None);
    }
}
