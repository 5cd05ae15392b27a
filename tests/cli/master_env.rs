//! Shared by the master tests: a `podlet master` process on a loopback port with its own data
//! directory, killed (by pid) when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running `podlet master`.
#[allow(dead_code)] // each test binary uses a different part of it
pub struct Master {
    child: Child,
    /// The API address (`127.0.0.1:PORT`).
    pub addr: String,
    /// Its data directory.
    pub data: PathBuf,
}

impl Master {
    /// Starts a master on a free loopback port, with `extra` flags, keeping state in `data`.
    #[allow(dead_code)] // the agent tests start theirs inside a namespace
    pub fn start(data: &Path, extra: &[&str]) -> Master {
        Master::start_on(data, "127.0.0.1:0", extra)
    }

    /// Starts a master on `listen`.
    #[allow(dead_code)]
    pub fn start_on(data: &Path, listen: &str, extra: &[&str]) -> Master {
        Master::start_with(
            Command::new(env!("CARGO_BIN_EXE_podlet")),
            data,
            listen,
            extra,
        )
    }

    /// Starts a master with `program` (e.g. `nsenter --net=… podlet`, to serve from inside a
    /// test's network namespace), without its own node agent.
    pub fn start_with(program: Command, data: &Path, listen: &str, extra: &[&str]) -> Master {
        let mut args = vec!["--disable-agent"];
        args.extend_from_slice(extra);
        Master::start_with_agent(program, data, listen, &args)
    }

    /// Starts a master that also runs its node agent (unless `extra` disables it); it must run
    /// inside a test's network namespace, where its pod network may be made.
    pub fn start_with_agent(
        mut program: Command,
        data: &Path,
        listen: &str,
        extra: &[&str],
    ) -> Master {
        let mut child = program
            .args(["master", "--listen", listen, "--data-dir"])
            .arg(data)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start podlet master");
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut addr = String::new();
        // The lines end with the join token's path (a node agent's line may follow, later).
        for _ in 0..4 {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            if let Some(rest) = line.trim().strip_prefix("podlet master: serving https://") {
                addr = rest.split_whitespace().next().unwrap_or("").to_string();
            }
            if line.starts_with("podlet master: node join token:") {
                break;
            }
        }
        // Keep draining stdout so the master never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while reader.read_line(&mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        assert!(!addr.is_empty(), "podlet master did not report its address");
        Master {
            child,
            addr,
            data: data.to_path_buf(),
        }
    }

    /// The admin kubeconfig it wrote.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data.join("admin.kubeconfig")
    }

    /// Its pid.
    #[allow(dead_code)] // used by the benchmark, not by every test
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory (`VmRSS`) in MiB; 0 once it is gone.
    #[allow(dead_code)] // used by the benchmarks, not by the tests
    pub fn rss_mib(&self) -> f64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|k| k.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Master {
    /// A kube-rs client with the admin kubeconfig the master wrote.
    #[allow(dead_code)] // not every test binary talks to the API through kube-rs
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(self.kubeconfig()).unwrap();
        let opts = kube::config::KubeConfigOptions::default();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &opts)
            .await
            .unwrap();
        kube::Client::try_from(cfg).unwrap()
    }
}

/// Now as a Kubernetes MicroTime (a Lease's `renewTime`).
#[allow(dead_code)] // used where Leases are renewed
pub fn micro_now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

impl Drop for Master {
    fn drop(&mut self) {
        self.kill9();
    }
}
