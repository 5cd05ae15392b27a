//! Steering Service traffic to the proxy's one TCP listener without a socket per port and
//! without NAT rules: an eBPF `sk_lookup` program attached to the node's network namespace
//! (Cloudflare's approach for serving many addresses from one socket).
//!
//! For each TCP connection the kernel is about to deliver locally, the program looks the
//! destination `(address, port, protocol)` up in a hash map of the Service frontends (then
//! `(0.0.0.0, port, protocol)`, NodePorts on every address) and, on a hit, hands the
//! connection to the socket stored in a sockmap. The proxy's `accept()` then sees the
//! original destination as the accepted socket's local address. A miss leaves the kernel's
//! usual lookup alone (nothing listens on a ClusterIP, so the client gets a reset, as it
//! would for a Service port that does not exist).
//!
//! The link lives as long as its fd: when the agent exits, the steering goes with it.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd};

use podlet_runtime::bpf::op::*;
use podlet_runtime::bpf::{self, insn, load_map_fd, Insn};

/// Why steering could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    /// A `bpf()` step failed (the kernel's reason, with the verifier's for a load).
    #[error("sk_lookup steering: {what}: {source}")]
    Bpf {
        /// The step.
        what: &'static str,
        /// The kernel's error.
        source: std::io::Error,
    },
}

fn err(what: &'static str) -> impl FnOnce(std::io::Error) -> SteerError {
    move |source| SteerError::Bpf { what, source }
}

const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_SOCKMAP: u32 = 15;
const BPF_PROG_TYPE_SK_LOOKUP: u32 = 30;
const BPF_SK_LOOKUP: u32 = 36;
const FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const FUNC_SK_RELEASE: i32 = 86;
const FUNC_SK_ASSIGN: i32 = 124;
const SK_PASS: i32 = 1;

/// The most frontends (ClusterIP ports and NodePorts) one node can steer.
pub const MAX_FRONTENDS: u32 = 65_536;
/// The sockmap slot of the proxy's TCP listener.
const TCP_SLOT: u32 = 0;

/// A frontend as the program matches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SteerKey {
    /// The destination address (`0.0.0.0`: any local address, for NodePorts).
    pub ip: Ipv4Addr,
    /// The destination port.
    pub port: u16,
    /// The IP protocol number (6: TCP).
    pub protocol: u8,
}

impl SteerKey {
    /// The map key: the address as it sits in the packet, then port and protocol as the
    /// program stores them (native 16-bit words).
    fn bytes(&self) -> [u8; 8] {
        let mut k = [0u8; 8];
        k[..4].copy_from_slice(&self.ip.octets());
        k[4..6].copy_from_slice(&self.port.to_ne_bytes());
        k[6..8].copy_from_slice(&u16::from(self.protocol).to_ne_bytes());
        k
    }
}

/// The program: `struct bpf_sk_lookup` offsets are family 8, protocol 12, local_ip4 40,
/// local_port 60 (host order).
fn program(frontends: &OwnedFd, sockets: &OwnedFd) -> Vec<Insn> {
    let mut p = vec![
        insn(ALU64_MOV_X, 6, 1, 0, 0), // 0: r6 = ctx
        insn(LDX_MEM_W, 2, 6, 8, 0),   // 1: r2 = family
        insn(JMP_JNE_K, 2, 0, 34, 2),  // 2: not AF_INET → pass (37)
        insn(LDX_MEM_W, 2, 6, 40, 0),  // 3: r2 = local_ip4
        insn(STX_MEM_W, 10, 2, -8, 0), // 4: key.ip
        insn(LDX_MEM_W, 2, 6, 60, 0),  // 5: r2 = local_port
        insn(STX_MEM_H, 10, 2, -4, 0), // 6: key.port
        insn(LDX_MEM_W, 2, 6, 12, 0),  // 7: r2 = protocol
        insn(STX_MEM_H, 10, 2, -2, 0), // 8: key.protocol
    ];
    p.extend(load_map_fd(1, frontends)); // 9-10
    p.extend([
        insn(ALU64_MOV_X, 2, 10, 0, 0),                // 11
        insn(ALU64_ADD_K, 2, 0, 0, -8),                // 12: r2 = &key
        insn(JMP_CALL, 0, 0, 0, FUNC_MAP_LOOKUP_ELEM), // 13
        insn(JMP_JNE_K, 0, 0, 7, 0),                   // 14: found → 22
        insn(ST_MEM_W, 10, 0, -8, 0),                  // 15: key.ip = 0.0.0.0
    ]);
    p.extend(load_map_fd(1, frontends)); // 16-17
    p.extend([
        insn(ALU64_MOV_X, 2, 10, 0, 0),                // 18
        insn(ALU64_ADD_K, 2, 0, 0, -8),                // 19
        insn(JMP_CALL, 0, 0, 0, FUNC_MAP_LOOKUP_ELEM), // 20
        insn(JMP_JEQ_K, 0, 0, 15, 0),                  // 21: miss → pass (37)
        insn(LDX_MEM_W, 2, 0, 0, 0),                   // 22: r2 = socket slot
        insn(STX_MEM_W, 10, 2, -12, 0),                // 23
    ]);
    p.extend(load_map_fd(1, sockets)); // 24-25
    p.extend([
        insn(ALU64_MOV_X, 2, 10, 0, 0),                // 26
        insn(ALU64_ADD_K, 2, 0, 0, -12),               // 27: r2 = &slot
        insn(JMP_CALL, 0, 0, 0, FUNC_MAP_LOOKUP_ELEM), // 28: r0 = socket or NULL
        insn(JMP_JEQ_K, 0, 0, 7, 0),                   // 29: none → pass (37)
        insn(ALU64_MOV_X, 7, 0, 0, 0),                 // 30: r7 = socket
        insn(ALU64_MOV_X, 1, 6, 0, 0),                 // 31
        insn(ALU64_MOV_X, 2, 7, 0, 0),                 // 32
        insn(ALU64_MOV_K, 3, 0, 0, 0),                 // 33
        insn(JMP_CALL, 0, 0, 0, FUNC_SK_ASSIGN),       // 34: bpf_sk_assign(ctx, sk, 0)
        insn(ALU64_MOV_X, 1, 7, 0, 0),                 // 35
        insn(JMP_CALL, 0, 0, 0, FUNC_SK_RELEASE),      // 36
        insn(ALU64_MOV_K, 0, 0, 0, SK_PASS),           // 37: pass
        insn(JMP_EXIT, 0, 0, 0, 0),                    // 38
    ]);
    p
}

/// The attached program and its maps; dropping it detaches the program.
#[derive(Debug)]
pub struct Steering {
    frontends: OwnedFd,
    _sockets: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
    installed: HashSet<SteerKey>,
}

impl Steering {
    /// Loads the program and attaches it to the calling thread's network namespace, steering
    /// matched TCP connections to `listener`.
    pub fn attach(listener: &TcpListener) -> Result<Steering, SteerError> {
        let frontends = bpf::map_create(BPF_MAP_TYPE_HASH, 8, 4, MAX_FRONTENDS)
            .map_err(err("create the frontend map"))?;
        let sockets =
            bpf::map_create(BPF_MAP_TYPE_SOCKMAP, 4, 8, 1).map_err(err("create the socket map"))?;
        let fd = listener.as_raw_fd() as u64;
        bpf::map_update(&sockets, &TCP_SLOT.to_ne_bytes(), &fd.to_ne_bytes())
            .map_err(err("put the listener in the socket map"))?;
        let prog = bpf::load(
            BPF_PROG_TYPE_SK_LOOKUP,
            BPF_SK_LOOKUP,
            &program(&frontends, &sockets),
        )
        .map_err(err("load the sk_lookup program"))?;
        let netns: OwnedFd = std::fs::File::open("/proc/thread-self/ns/net")
            .map_err(err("open the network namespace"))?
            .into();
        let link = bpf::link_create(&prog, &netns, BPF_SK_LOOKUP)
            .map_err(err("attach the program to the network namespace"))?;
        Ok(Steering {
            frontends,
            _sockets: sockets,
            _prog: prog,
            _link: link,
            installed: HashSet::new(),
        })
    }

    /// Makes the steered set exactly `want`: adds what is new, removes what is gone.
    pub fn set(&mut self, want: &HashSet<SteerKey>) -> Result<(), SteerError> {
        for k in want.difference(&self.installed.clone()) {
            bpf::map_update(&self.frontends, &k.bytes(), &TCP_SLOT.to_ne_bytes())
                .map_err(err("add a frontend"))?;
            self.installed.insert(*k);
        }
        let gone: Vec<SteerKey> = self.installed.difference(want).copied().collect();
        for k in gone {
            bpf::map_delete(&self.frontends, &k.bytes()).map_err(err("remove a frontend"))?;
            self.installed.remove(&k);
        }
        Ok(())
    }

    /// The frontends steered now.
    pub fn installed(&self) -> &HashSet<SteerKey> {
        &self.installed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_the_programs_layout() {
        let k = SteerKey {
            ip: Ipv4Addr::new(10, 43, 0, 7),
            port: 8080,
            protocol: 6,
        };
        let b = k.bytes();
        assert_eq!(&b[..4], &[10, 43, 0, 7]);
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), 8080);
        assert_eq!(u16::from_ne_bytes([b[6], b[7]]), 6);
    }

    #[test]
    fn every_jump_lands_inside_the_program() {
        let frontends = bpf::map_create(BPF_MAP_TYPE_HASH, 8, 4, 4).unwrap();
        let sockets = bpf::map_create(BPF_MAP_TYPE_SOCKMAP, 4, 8, 1).unwrap();
        let p = program(&frontends, &sockets);
        for (n, i) in p.iter().enumerate() {
            if matches!(i.code, JMP_JNE_K | JMP_JEQ_K) {
                let target = n as i64 + 1 + i64::from(i.off);
                assert_eq!(
                    p[target as usize].code,
                    if target == 37 { ALU64_MOV_K } else { LDX_MEM_W },
                    "jump at {n}"
                );
            }
        }
        assert_eq!(p.len(), 39);
    }

    /// Real steering in a network namespace of the test's own (gone with its thread).
    #[test]
    fn connections_to_steered_addresses_reach_the_one_listener() {
        use std::net::{SocketAddr, TcpStream};
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let up = std::process::Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .unwrap();
            assert!(up.success());
            podlet_cni::routing::ensure_local_range(
                podlet_cni::ipam::Subnet::parse("10.43.0.0/16").unwrap(),
            )
            .unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let mut steering = Steering::attach(&listener).unwrap();
            let key = |ip: [u8; 4], port| SteerKey {
                ip: Ipv4Addr::from(ip),
                port,
                protocol: 6,
            };
            let want: HashSet<SteerKey> =
                [key([10, 43, 0, 7], 80), key([0, 0, 0, 0], 30080)].into();
            steering.set(&want).unwrap();
            assert_eq!(steering.installed(), &want);
            for target in ["10.43.0.7:80", "127.0.0.1:30080"] {
                let dst: SocketAddr = target.parse().unwrap();
                let _c = TcpStream::connect(dst).unwrap();
                let (accepted, _) = listener.accept().unwrap();
                assert_eq!(
                    accepted.local_addr().unwrap(),
                    dst,
                    "the original destination"
                );
            }
            // Not a frontend: the kernel's own lookup finds nothing and refuses.
            let refused = TcpStream::connect("10.43.0.7:81").unwrap_err();
            assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
            steering.set(&HashSet::new()).unwrap();
            let gone = TcpStream::connect("10.43.0.7:80").unwrap_err();
            assert_eq!(gone.kind(), std::io::ErrorKind::ConnectionRefused);
        })
        .join()
        .unwrap();
    }
}
