//! Host tier: the userspace port proxy forwards TCP and UDP from a loopback host port into
//! another network namespace (held by a process the test starts and kills), with no iptables.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command};
use std::time::Duration;

use podlet_runtime::ports::{bind, PortMapping};

/// A network namespace with `lo` up, held by `unshare --net`; killed on drop.
struct Netns(Child);

impl Netns {
    fn new() -> Netns {
        let child = Command::new("unshare")
            .args(["--net", "sh", "-c", "ip link set lo up && exec sleep 1000"])
            .spawn()
            .unwrap();
        // Ready once the shell has set lo up and exec'd sleep.
        for _ in 0..500 {
            let comm =
                std::fs::read_to_string(format!("/proc/{}/comm", child.id())).unwrap_or_default();
            if comm.trim() == "sleep" {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Netns(child)
    }

    fn path(&self) -> std::path::PathBuf {
        format!("/proc/{}/ns/net", self.0.id()).into()
    }

    /// Runs `f` on a thread inside the namespace.
    fn spawn_inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = std::fs::File::open(self.path()).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn tcp_and_udp_reach_the_other_namespace() {
    let ns = Netns::new();
    // Echo servers inside the namespace, on its loopback.
    let tcp = ns.spawn_inside(|| TcpListener::bind("127.0.0.1:7070").unwrap());
    std::thread::spawn(move || {
        for c in tcp.incoming().flatten() {
            let mut c = c;
            let mut buf = [0u8; 64];
            let n = c.read(&mut buf).unwrap_or(0);
            let _ = c.write_all(&[b"echo:", &buf[..n]].concat());
        }
    });
    let udp = ns.spawn_inside(|| UdpSocket::bind("127.0.0.1:7071").unwrap());
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&[b"udp:", &buf[..n]].concat(), from);
        }
    });
    // The same ports are not reachable from here directly: the namespaces are separate.
    assert!(TcpStream::connect("127.0.0.1:7070").is_err());

    let mappings = [
        PortMapping::parse("127.0.0.1:0:7070").unwrap(),
        PortMapping::parse("127.0.0.1:0:7071/udp").unwrap(),
    ];
    let bound = bind(&mappings).unwrap();
    let addrs = bound.local_addrs();
    bound.forward(ns.path());

    let mut c = TcpStream::connect(addrs[0]).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"hi").unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"echo:hi");

    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    u.send_to(b"ping", addrs[1]).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = u.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"udp:ping");

    // A port already taken on the host is refused, naming the mapping.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let spec = format!("127.0.0.1:{}:80", taken.local_addr().unwrap().port());
    let e = bind(&[PortMapping::parse(&spec).unwrap()])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains(&spec) && e.contains("cannot bind"), "{e}");
}
