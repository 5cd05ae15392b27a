//! A thin layer over the `bpf()` system call: instructions, program loading, maps and links.
//! Used by the cgroup v2 device filter and by the agent's Service proxy (`sk_lookup`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// One eBPF instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    regs: u8,
    /// Offset (jump distance, memory offset).
    pub off: i16,
    /// Immediate.
    pub imm: i32,
}

/// Builds one instruction.
pub const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// Opcodes (linux/bpf_common.h, linux/bpf.h).
pub mod op {
    /// `dst = *(u32 *)(src + off)`.
    pub const LDX_MEM_W: u8 = 0x61;
    /// `*(u32 *)(dst + off) = src`.
    pub const STX_MEM_W: u8 = 0x63;
    /// `*(u16 *)(dst + off) = src`.
    pub const STX_MEM_H: u8 = 0x6b;
    /// `*(u32 *)(dst + off) = imm`.
    pub const ST_MEM_W: u8 = 0x62;
    /// `dst += imm`.
    pub const ALU64_ADD_K: u8 = 0x07;
    /// `dst &= imm`.
    pub const ALU64_AND_K: u8 = 0x57;
    /// `dst >>= imm`.
    pub const ALU64_RSH_K: u8 = 0x77;
    /// `dst = imm`.
    pub const ALU64_MOV_K: u8 = 0xb7;
    /// `dst = src`.
    pub const ALU64_MOV_X: u8 = 0xbf;
    /// `if dst != imm goto +off`.
    pub const JMP_JNE_K: u8 = 0x55;
    /// `if dst == imm goto +off`.
    pub const JMP_JEQ_K: u8 = 0x15;
    /// `call imm` (a helper).
    pub const JMP_CALL: u8 = 0x85;
    /// `return r0`.
    pub const JMP_EXIT: u8 = 0x95;
    /// A 64-bit immediate load (two instructions); with source register 1 the immediate is a
    /// map file descriptor.
    pub const LD_IMM64: u8 = 0x18;
}

/// `r<dst> = the map behind fd` (two instructions).
pub fn load_map_fd(dst: u8, map: &OwnedFd) -> [Insn; 2] {
    const BPF_PSEUDO_MAP_FD: u8 = 1;
    [
        insn(op::LD_IMM64, dst, BPF_PSEUDO_MAP_FD, 0, map.as_raw_fd()),
        insn(0, 0, 0, 0, 0),
    ]
}

/// `bpf()` commands used here.
pub mod cmd {
    /// Creates a map.
    pub const MAP_CREATE: libc::c_long = 0;
    /// Stores an element.
    pub const MAP_UPDATE_ELEM: libc::c_long = 2;
    /// Removes an element.
    pub const MAP_DELETE_ELEM: libc::c_long = 3;
    /// Loads a program.
    pub const PROG_LOAD: libc::c_long = 5;
    /// Attaches a program to a cgroup.
    pub const PROG_ATTACH: libc::c_long = 8;
    /// Detaches a program from a cgroup.
    pub const PROG_DETACH: libc::c_long = 9;
    /// A program's fd from its id.
    pub const PROG_GET_FD_BY_ID: libc::c_long = 13;
    /// The programs attached to a cgroup.
    pub const PROG_QUERY: libc::c_long = 16;
    /// Attaches a program by a link that lives as long as its fd.
    pub const LINK_CREATE: libc::c_long = 28;
}

/// A zeroed `union bpf_attr` with fields written at their byte offsets.
pub struct Attr(pub [u8; 128]);

impl Default for Attr {
    fn default() -> Self {
        Attr([0; 128])
    }
}

impl Attr {
    /// A zeroed attribute block.
    pub fn new() -> Self {
        Self::default()
    }
    /// Writes a `u32` at byte `off`.
    pub fn u32(mut self, off: usize, v: u32) -> Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    /// Writes a `u64` at byte `off`.
    pub fn u64(mut self, off: usize, v: u64) -> Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    /// Reads the `u32` at byte `off`.
    pub fn get_u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes([
            self.0[off],
            self.0[off + 1],
            self.0[off + 2],
            self.0[off + 3],
        ])
    }
}

/// Runs one `bpf()` command.
pub fn bpf(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<libc::c_long> {
    // SAFETY: attr is a live, writable 128-byte bpf_attr; the kernel reads/writes only that,
    // and any pointers written into it by the callers point at buffers they keep alive.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            attr.0.len() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Takes ownership of an fd a `bpf()` command returned.
fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: the bpf() command returned a new fd that this process owns and nothing else holds.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// Loads `prog` as a program of `prog_type` (with `expected_attach_type`, 0 when the type needs
/// none); a verifier refusal carries the verifier's last line.
pub fn load(prog_type: u32, expected_attach_type: u32, prog: &[Insn]) -> std::io::Result<OwnedFd> {
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = Attr::new()
        .u32(0, prog_type)
        .u32(4, prog.len() as u32)
        .u64(8, prog.as_ptr() as u64)
        .u64(16, license.as_ptr() as u64)
        .u32(24, 1)
        .u32(28, log.len() as u32)
        .u64(32, log.as_mut_ptr() as u64)
        .u32(68, expected_attach_type);
    let fd = bpf(cmd::PROG_LOAD, &mut attr).map_err(|e| {
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        let text = String::from_utf8_lossy(&log[..end]);
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        std::io::Error::new(e.kind(), format!("{e}; verifier: {last}"))
    })?;
    Ok(owned(fd))
}

/// Creates a map.
pub fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> std::io::Result<OwnedFd> {
    let mut attr = Attr::new()
        .u32(0, map_type)
        .u32(4, key_size)
        .u32(8, value_size)
        .u32(12, max_entries);
    bpf(cmd::MAP_CREATE, &mut attr).map(owned)
}

/// Stores `value` under `key` (`BPF_ANY`).
pub fn map_update(map: &OwnedFd, key: &[u8], value: &[u8]) -> std::io::Result<()> {
    let mut attr = Attr::new()
        .u32(0, map.as_raw_fd() as u32)
        .u64(8, key.as_ptr() as u64)
        .u64(16, value.as_ptr() as u64);
    bpf(cmd::MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// Removes `key`; a key that is not there is not an error.
pub fn map_delete(map: &OwnedFd, key: &[u8]) -> std::io::Result<()> {
    let mut attr = Attr::new()
        .u32(0, map.as_raw_fd() as u32)
        .u64(8, key.as_ptr() as u64);
    match bpf(cmd::MAP_DELETE_ELEM, &mut attr) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r.map(drop),
    }
}

/// Attaches `prog` to `target` (a network namespace, a cgroup…) as `attach_type`; detached
/// when the returned link fd is closed.
pub fn link_create(prog: &OwnedFd, target: &OwnedFd, attach_type: u32) -> std::io::Result<OwnedFd> {
    let mut attr = Attr::new()
        .u32(0, prog.as_raw_fd() as u32)
        .u32(4, target.as_raw_fd() as u32)
        .u32(8, attach_type);
    bpf(cmd::LINK_CREATE, &mut attr).map(owned)
}

/// The program ids attached to `target` as `attach_type` (at most 64).
pub fn prog_query(target: &OwnedFd, attach_type: u32) -> std::io::Result<Vec<u32>> {
    let mut ids = [0u32; 64];
    let mut attr = Attr::new()
        .u32(0, target.as_raw_fd() as u32)
        .u32(4, attach_type)
        .u64(16, ids.as_mut_ptr() as u64)
        .u32(24, ids.len() as u32);
    bpf(cmd::PROG_QUERY, &mut attr)?;
    let count = (attr.get_u32(24) as usize).min(ids.len());
    Ok(ids[..count].to_vec())
}

/// A program's fd from its id.
pub fn prog_fd_by_id(id: u32) -> std::io::Result<OwnedFd> {
    let mut attr = Attr::new().u32(0, id);
    bpf(cmd::PROG_GET_FD_BY_ID, &mut attr).map(owned)
}
