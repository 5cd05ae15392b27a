//! `podlet-test-workload`: small, predictable programs that tests run inside namespaces,
//! cgroups and UML.
//!
//! - `alloc MIB`: allocates and touches MIB mebibytes, 1 MiB at a time, printing progress.
//! - `fork N`: forks N sleeping children, prints how many succeeded, reaps them; exit 3 if a
//!   fork failed.
//! - `spin MS`: keeps one CPU busy for MS milliseconds of wall time, then prints `spun`.
//! - `netns-holder`: unshares a network namespace, prints `ready`, and sleeps until killed.
//! - `sleep`: sleeps until killed.

use std::io::Write;
use std::process::ExitCode;

fn alloc(mib: usize) -> ExitCode {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    for i in 1..=mib {
        // Every byte written, so the pages are really charged to the cgroup.
        chunks.push(vec![0xa5u8; 1 << 20]);
        println!("allocated {i} MiB");
        let _ = std::io::stdout().flush();
    }
    println!("done: {} MiB held", chunks.len());
    ExitCode::SUCCESS
}

fn fork_children(n: usize) -> ExitCode {
    let mut children = Vec::new();
    let mut failure = None;
    for _ in 0..n {
        // SAFETY: the child only calls pause/_exit-class async-signal-safe functions.
        match unsafe { libc::fork() } {
            0 => loop {
                // SAFETY: pause(2) has no memory effects; the parent kills us.
                unsafe { libc::pause() };
            },
            -1 => {
                failure = Some(std::io::Error::last_os_error());
                break;
            }
            pid => children.push(pid),
        }
    }
    println!("forked {} of {n}", children.len());
    if let Some(e) = &failure {
        println!("fork failed: {e}");
    }
    for pid in &children {
        // SAFETY: signals and reaps only children this process forked.
        unsafe {
            libc::kill(*pid, libc::SIGKILL);
            libc::waitpid(*pid, std::ptr::null_mut(), 0);
        }
    }
    if failure.is_some() {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

fn spin(ms: usize) -> ExitCode {
    let until = std::time::Instant::now() + std::time::Duration::from_millis(ms as u64);
    let mut n: u64 = 0;
    while std::time::Instant::now() < until {
        n = std::hint::black_box(n.wrapping_add(1));
    }
    println!("spun {n} iterations");
    ExitCode::SUCCESS
}

fn sleep_forever() -> ExitCode {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |s: Option<&String>| s.and_then(|v| v.parse::<usize>().ok());
    match args.first().map(String::as_str) {
        Some("alloc") => match num(args.get(1)) {
            Some(m) => alloc(m),
            None => usage(),
        },
        Some("fork") => match num(args.get(1)) {
            Some(n) => fork_children(n),
            None => usage(),
        },
        Some("spin") => match num(args.get(1)) {
            Some(ms) => spin(ms),
            None => usage(),
        },
        Some("netns-holder") => {
            if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                eprintln!("podlet-test-workload: unshare(CLONE_NEWNET): {e}");
                return ExitCode::from(1);
            }
            println!("ready");
            let _ = std::io::stdout().flush();
            sleep_forever()
        }
        Some("sleep") => sleep_forever(),
        _ => usage(),
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: podlet-test-workload alloc MIB | fork N | spin MS | netns-holder | sleep");
    ExitCode::from(2)
}
