//! `FIDEDUPERANGE`: asking the kernel to share the extents of two files whose bytes are the
//! same. The kernel locks both ranges, compares them byte for byte and only then shares them,
//! so a range that differs (a guest changed its file since we looked) is left alone; a later
//! write to either file copies on write. Each call is atomic: a kill leaves a file shared or
//! untouched.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `_IOWR(0x94, 54, struct file_dedupe_range)`.
const FIDEDUPERANGE: libc::c_ulong = 0xC018_9436;
/// The kernel's `FILE_DEDUPE_RANGE_DIFFERS`.
const DIFFERS: i32 = 1;
/// Bytes asked for per call: file systems cap a call (xfs and btrfs at 16 MiB).
const CHUNK: u64 = 16 << 20;

/// `struct file_dedupe_range` with room for one destination.
#[repr(C)]
struct DedupeRange {
    src_offset: u64,
    src_length: u64,
    dest_count: u16,
    reserved1: u16,
    reserved2: u32,
    info: DedupeRangeInfo,
}

/// `struct file_dedupe_range_info`.
#[repr(C)]
struct DedupeRangeInfo {
    dest_fd: i64,
    dest_offset: u64,
    bytes_deduped: u64,
    status: i32,
    reserved: u32,
}

/// What a deduplication did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dedupe {
    /// The whole length is shared now.
    Shared,
    /// The bytes differ: nothing was changed.
    Differs,
}

/// Shares the first `length` bytes of `destination` with those of `source` if they are the
/// same. `EOPNOTSUPP`/`EINVAL`/`EXDEV`: the file system cannot (ext4), or they lie on two.
pub fn dedupe_file(source: &File, destination: &File, length: u64) -> io::Result<Dedupe> {
    let mut offset = 0;
    while offset < length {
        let chunk = CHUNK.min(length - offset);
        let mut range = DedupeRange {
            src_offset: offset,
            src_length: chunk,
            dest_count: 1,
            reserved1: 0,
            reserved2: 0,
            info: DedupeRangeInfo {
                dest_fd: i64::from(destination.as_raw_fd()),
                dest_offset: offset,
                bytes_deduped: 0,
                status: 0,
                reserved: 0,
            },
        };
        // SAFETY: `range` is a live `struct file_dedupe_range` followed by exactly the one
        // `file_dedupe_range_info` that `dest_count` announces; the kernel reads and writes only
        // that, during the call, and both descriptors stay open until it returns.
        let ret = unsafe {
            libc::ioctl(
                source.as_raw_fd(),
                FIDEDUPERANGE,
                &mut range as *mut DedupeRange,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        match range.info.status {
            0 => {}
            DIFFERS => return Ok(Dedupe::Differs),
            errno if errno < 0 => return Err(io::Error::from_raw_os_error(-errno)),
            _ => return Err(io::Error::other("unknown FIDEDUPERANGE status")),
        }
        if range.info.bytes_deduped == 0 {
            return Ok(Dedupe::Differs);
        }
        offset += range.info.bytes_deduped;
    }
    Ok(Dedupe::Shared)
}
