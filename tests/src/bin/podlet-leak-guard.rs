//! `podlet-leak-guard snapshot|check [FILE]`: fails a test run that left things behind.
//!
//! `make test` takes a snapshot before the suite and checks after it; `check` exits 1 and lists
//! every leaked namespace, link, mount, cgroup or process.

use std::path::PathBuf;
use std::process::ExitCode;

use podlet_testkit::leaks::{
    default_snapshot_path, read_snapshot, write_snapshot, Snapshot, RUN_TOKEN_VAR,
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, file) = match args.as_slice() {
        [cmd] => (cmd.as_str(), default_snapshot_path()),
        [cmd, file] => (cmd.as_str(), PathBuf::from(file)),
        _ => {
            eprintln!("usage: podlet-leak-guard snapshot|check [FILE]");
            return ExitCode::from(2);
        }
    };
    let token = std::env::var(RUN_TOKEN_VAR).unwrap_or_default();
    match cmd {
        "snapshot" => {
            if token.is_empty() {
                eprintln!("podlet-leak-guard: {RUN_TOKEN_VAR} must be set so the run's processes can be recognised");
                return ExitCode::from(2);
            }
            match write_snapshot(&file, &Snapshot::take(&token)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("podlet-leak-guard: writing {}: {e}", file.display());
                    ExitCode::from(2)
                }
            }
        }
        "check" => {
            let before = match read_snapshot(&file) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("podlet-leak-guard: reading {}: {e}", file.display());
                    return ExitCode::from(2);
                }
            };
            let mut leaks = Vec::new();
            // Processes that are exiting may take a moment to disappear; look a few times.
            for _ in 0..10 {
                leaks = before.leaks_since(&Snapshot::take(&before.token));
                if leaks.is_empty() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
            let _ = std::fs::remove_file(&file);
            if leaks.is_empty() {
                println!("leak guard: clean (no namespaces, links, mounts, cgroups or processes left behind)");
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "leak guard: the test run left {} object(s) behind:",
                    leaks.len()
                );
                for l in &leaks {
                    eprintln!("  - {l}");
                }
                ExitCode::from(1)
            }
        }
        other => {
            eprintln!("podlet-leak-guard: unknown command {other:?} (expected snapshot or check)");
            ExitCode::from(2)
        }
    }
}
