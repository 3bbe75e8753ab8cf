//! A seccomp filter that turns the durability system calls (`fsync`, `fdatasync`, `syncfs`,
//! `sync`, `sync_file_range`, `msync` with `MS_SYNC`) into no-ops that report success.
//!
//! # Why
//!
//! Building a guest installs thousands of packages into a directory nobody else uses yet; rpm's
//! sqlite database and dnf's history commit (and `fdatasync`) several times per package, and on a
//! real disk those waits dominate the build. None of them buys anything there: the caller syncs
//! the guest's file systems once, outside the filter, before it reports the build as done, and a
//! build that dies half-way is removed anyway. No rpm or dnf option removes those calls (see
//! docs/security.md), so the kernel is asked to skip them for the sandboxed program and
//! everything it starts (seccomp filters are inherited across `fork` and `exec`).
//!
//! # How
//!
//! A classic BPF program checked by the kernel on every system call:
//!
//! 1. The architecture must be `AUDIT_ARCH_X86_64`; any other (a 32-bit program entering through
//!    `int 0x80`) is **allowed unchanged**. The filter is an optimisation, not a security
//!    boundary: letting a foreign-ABI sync through costs time, never correctness, while killing it
//!    would break a 32-bit scriptlet for no gain. x32 system calls (number with bit 30 set) match
//!    none of the numbers below and are allowed unchanged for the same reason.
//! 2. `fsync`, `fdatasync`, `syncfs`, `sync`, `sync_file_range`: `SECCOMP_RET_ERRNO` with errno 0,
//!    so the call returns 0 without reaching the kernel's implementation.
//! 3. `msync`: skipped the same way only when its flags contain `MS_SYNC`; `MS_ASYNC` and
//!    `MS_INVALIDATE` alone run as usual.
//! 4. Everything else: allowed.
//!
//! On other architectures [`sync_skipping_filter`] returns `None` and the option does nothing
//! (fsync keeps working; only the speed-up is missing).

use std::io;

/// Classic BPF opcodes (`<linux/bpf_common.h>`): `BPF_LD|BPF_W|BPF_ABS` (0x00|0x00|0x20),
/// `BPF_JMP|BPF_JEQ|BPF_K` (0x05|0x10|0x00), `BPF_JMP|BPF_JSET|BPF_K` (0x05|0x40|0x00),
/// `BPF_RET|BPF_K` (0x06|0x00).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_JMP_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;

/// Offsets into `struct seccomp_data` (`<linux/seccomp.h>`): `int nr; __u32 arch; __u64
/// instruction_pointer; __u64 args[6];`, little-endian, so the low half of `args[2]` is at 32.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARG2_LOW: u32 = 16 + 2 * 8;

/// `AUDIT_ARCH_X86_64` (`EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`).
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_NATIVE: u32 = 0xC000_003E;

/// A compiled filter, ready for [`install`].
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    program: Vec<libc::sock_filter>,
}

fn statement(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The system-call numbers skipped unconditionally on this architecture.
#[cfg(target_arch = "x86_64")]
fn skipped_calls() -> [u32; 5] {
    [
        libc::SYS_fsync,
        libc::SYS_fdatasync,
        libc::SYS_syncfs,
        libc::SYS_sync,
        libc::SYS_sync_file_range,
    ]
    .map(|nr| nr as u32)
}

/// The filter that skips durability calls, or `None` on an architecture it does not know.
#[cfg(target_arch = "x86_64")]
pub(crate) fn sync_skipping_filter() -> Option<Filter> {
    let skipped = skipped_calls();
    // Layout (indices): 0 load arch, 1 check arch, 2 load nr, 3.. one jeq per skipped call, then
    // jeq msync, load flags, jset MS_SYNC, ALLOW, SKIP. Jump offsets count from the next
    // instruction.
    let n = skipped.len();
    let allow_at = 3 + n + 3;
    let skip_at = allow_at + 1;
    let offset = |from: usize, to: usize| -> u8 {
        // At most a dozen instructions: always fits.
        u8::try_from(to - from - 1).unwrap_or(u8::MAX)
    };
    let mut program = vec![
        statement(BPF_LD_W_ABS, DATA_ARCH),
        jump(BPF_JMP_JEQ_K, AUDIT_ARCH_NATIVE, 0, offset(1, allow_at)),
        statement(BPF_LD_W_ABS, DATA_NR),
    ];
    for nr in skipped {
        let at = program.len();
        program.push(jump(BPF_JMP_JEQ_K, nr, offset(at, skip_at), 0));
    }
    let at = program.len();
    program.push(jump(
        BPF_JMP_JEQ_K,
        libc::SYS_msync as u32,
        0,
        offset(at, allow_at),
    ));
    program.push(statement(BPF_LD_W_ABS, DATA_ARG2_LOW));
    let at = program.len();
    program.push(jump(
        BPF_JMP_JSET_K,
        libc::MS_SYNC as u32,
        offset(at, skip_at),
        0,
    ));
    debug_assert_eq!(program.len(), allow_at);
    program.push(statement(BPF_RET_K, libc::SECCOMP_RET_ALLOW));
    // errno 0: the call "succeeds" without running.
    program.push(statement(BPF_RET_K, libc::SECCOMP_RET_ERRNO));
    Some(Filter { program })
}

/// The filter that skips durability calls, or `None` on an architecture it does not know.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn sync_skipping_filter() -> Option<Filter> {
    None
}

/// Installs `filter` on the calling thread (inherited by its children and kept across `exec`).
///
/// `no_new_privs` must be set first (or the caller must hold `CAP_SYS_ADMIN`). Allocation-free.
pub(crate) fn install(filter: &Filter) -> io::Result<()> {
    let program = libc::sock_fprog {
        len: u16::try_from(filter.program.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
        filter: filter.program.as_ptr().cast_mut(),
    };
    // SAFETY: `program` points at `len` live, initialised `sock_filter` instructions owned by
    // `filter`, which outlives the call; the kernel copies the program before returning and
    // never writes through the pointer.
    let ret = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &program as *const libc::sock_fprog,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
