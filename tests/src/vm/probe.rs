//! Choosing the VM backend: forced by `PODLET_TEST_VM`, or probed once per test run.
//!
//! The probe boots UML with a trivial program; if it runs, UML is used (1.6 s boots), otherwise
//! QEMU. The answer is cached in the process and, when `PODLET_TEST_RUN` names a run (as
//! `make test` does), in a file shared by that run's test binaries.

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use super::{qemu, uml, Backend, VmConfig, VmError};

/// The environment variable that forces a backend (`uml` or `qemu`).
pub const BACKEND_VAR: &str = "PODLET_TEST_VM";

static SELECTED: OnceLock<Result<Backend, String>> = OnceLock::new();

/// The backend this test run uses: forced by `PODLET_TEST_VM`, else probed (and cached).
pub fn selected_backend() -> Result<Backend, VmError> {
    SELECTED
        .get_or_init(select)
        .clone()
        .map_err(VmError::NoBackend)
}

fn cache_file() -> Option<PathBuf> {
    let run = std::env::var(crate::leaks::RUN_TOKEN_VAR).ok()?;
    let safe: String = run
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    Some(
        crate::bins::target_profile_dir()
            .join("podlet-vm-cache")
            .join(format!("backend-{safe}")),
    )
}

/// Checks that a forced backend can work here, failing fast with the reason when it cannot.
fn check_forced(backend: Backend, config: &VmConfig, has_amx: bool) -> Result<Backend, String> {
    match backend {
        Backend::Uml => {
            if has_amx {
                return Err(format!(
                    "{BACKEND_VAR}=uml, but this CPU has AMX (amx_tile in /proc/cpuinfo) and \
                     User-Mode Linux panics at boot on it (\"ptrace set fp regs failed\"); \
                     use {BACKEND_VAR}=qemu"
                ));
            }
            if !config.uml_kernel.is_file() {
                return Err(format!(
                    "{BACKEND_VAR}=uml, but {} is missing (install Debian's user-mode-linux)",
                    config.uml_kernel.display()
                ));
            }
        }
        Backend::Qemu => qemu_ready(config)?,
    }
    Ok(backend)
}

fn qemu_ready(config: &VmConfig) -> Result<(), String> {
    if !config.qemu.is_file() {
        return Err(format!(
            "{} is missing (install Debian's qemu-system-x86)",
            config.qemu.display()
        ));
    }
    qemu::find_kernel().map(|_| ())
}

/// Boots UML once with `/bin/true`; `Ok` if the program ran.
fn uml_boots(config: &VmConfig) -> Result<(), String> {
    if uml::cpu_has_amx() {
        return Err("this CPU has AMX, on which User-Mode Linux panics at boot".into());
    }
    let probe = VmConfig {
        backend: Some(Backend::Uml),
        timeout: Some(Duration::from_secs(60)),
        ..config.clone()
    };
    super::run(Path::new("/bin/true"), &[], &probe)
        .map(|_| ())
        .map_err(|e| {
            let text = e.to_string();
            text.lines().next().unwrap_or(&text).to_string()
        })
}

fn probe(config: &VmConfig) -> Result<Backend, String> {
    let uml_why = match uml_boots(config) {
        Ok(()) => return Ok(Backend::Uml),
        Err(why) => why,
    };
    match qemu_ready(config) {
        Ok(()) => Ok(Backend::Qemu),
        Err(qemu_why) => Err(format!("UML: {uml_why}; QEMU: {qemu_why}")),
    }
}

fn select() -> Result<Backend, String> {
    let config = VmConfig::default();
    if let Ok(forced) = std::env::var(BACKEND_VAR) {
        let backend = Backend::parse(&forced).ok_or_else(|| {
            format!("{BACKEND_VAR}={forced:?} is not a backend (use uml or qemu)")
        })?;
        let chosen = check_forced(backend, &config, uml::cpu_has_amx())?;
        if let Some(file) = cache_file() {
            record(&file, chosen)?;
        }
        return Ok(chosen);
    }
    let Some(file) = cache_file() else {
        return probe(&config);
    };
    let parent = file.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    // One probe per run even when test binaries run concurrently: the first takes the lock.
    let lock_path = file.with_extension("lock");
    let lock = fs::File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    // SAFETY: flock(2) on an fd this function owns; released when `lock` is dropped.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    if let Some(b) = fs::read_to_string(&file)
        .ok()
        .and_then(|s| Backend::parse(s.trim()))
    {
        return Ok(b);
    }
    let chosen = probe(&config)?;
    record(&file, chosen)?;
    Ok(chosen)
}

/// Writes the run's backend where later test binaries (and `make test`'s summary) read it.
fn record(file: &Path, chosen: Backend) -> Result<(), String> {
    if let Some(parent) = file.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let mut f = fs::File::create(file).map_err(|e| format!("{}: {e}", file.display()))?;
    writeln!(f, "{chosen}").map_err(|e| format!("{}: {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forcing_uml_on_an_amx_cpu_fails_at_once_naming_the_cause() {
        let err = check_forced(Backend::Uml, &VmConfig::default(), true).unwrap_err();
        assert!(
            err.contains("AMX") && err.contains("PODLET_TEST_VM=qemu"),
            "{err}"
        );
    }

    #[test]
    fn a_forced_backend_that_is_not_installed_names_the_package() {
        let config = VmConfig {
            uml_kernel: "/nonexistent/linux.uml".into(),
            qemu: "/nonexistent/qemu".into(),
            ..VmConfig::default()
        };
        let err = check_forced(Backend::Uml, &config, false).unwrap_err();
        assert!(err.contains("user-mode-linux"), "{err}");
        let err = check_forced(Backend::Qemu, &config, false).unwrap_err();
        assert!(err.contains("qemu-system-x86"), "{err}");
    }
}
