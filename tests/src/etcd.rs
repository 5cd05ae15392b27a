//! A throwaway etcd (Debian's `etcd-server`) on free loopback ports, for store and master
//! tests: its data lives in a temporary directory, and it is killed by pid when dropped.

use std::process::{Child, Command, Stdio};

/// A running etcd.
#[derive(Debug)]
pub struct Etcd {
    child: Child,
    /// The client URL (`http://127.0.0.1:PORT`).
    pub endpoint: String,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Etcd {
    /// Starts etcd; None when it is not installed.
    pub fn start() -> Option<Etcd> {
        if Command::new("etcd").arg("--version").output().is_err() {
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).ok()?;
        let child = Command::new("etcd")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--name", "test"])
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("test={peer_url}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .ok()?;
        Some(Etcd {
            child,
            endpoint,
            dir,
        })
    }

    /// Waits until etcd answers on its client port (up to 10 s).
    pub fn wait_ready(&self) -> bool {
        let addr = self.endpoint.trim_start_matches("http://").to_string();
        for _ in 0..200 {
            if std::net::TcpStream::connect(&addr).is_ok() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        false
    }

    /// Its log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
