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

/// Destinations per call (the kernel takes as many as fit in a page).
pub const MAX_DESTINATIONS: usize = 64;

/// `struct file_dedupe_range` with room for [`MAX_DESTINATIONS`] destinations.
#[repr(C)]
struct DedupeRange {
    src_offset: u64,
    src_length: u64,
    dest_count: u16,
    reserved1: u16,
    reserved2: u32,
    info: [DedupeRangeInfo; MAX_DESTINATIONS],
}

/// `struct file_dedupe_range_info`.
#[repr(C)]
#[derive(Clone, Copy)]
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
    dedupe_files(source, &[destination], length)?
        .into_iter()
        .next()
        .unwrap_or(Ok(Dedupe::Differs))
}

/// [`dedupe_file`] for up to [`MAX_DESTINATIONS`] destinations at once (one call per 16 MiB
/// for all of them: the source is locked and read once per call); one result per destination,
/// in order. An error of the call itself (the file system cannot) is the outer error.
pub fn dedupe_files(
    source: &File,
    destinations: &[&File],
    length: u64,
) -> io::Result<Vec<io::Result<Dedupe>>> {
    if destinations.len() > MAX_DESTINATIONS {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let unused = DedupeRangeInfo {
        dest_fd: -1,
        dest_offset: 0,
        bytes_deduped: 0,
        status: 0,
        reserved: 0,
    };
    // Per destination: still the same so far (`None`), or settled.
    let mut results: Vec<Option<io::Result<Dedupe>>> = destinations.iter().map(|_| None).collect();
    let mut offset = 0;
    while offset < length {
        let open: Vec<usize> = (0..destinations.len())
            .filter(|&i| results[i].is_none())
            .collect();
        if open.is_empty() {
            break;
        }
        let chunk = CHUNK.min(length - offset);
        // The kernel's compare reads one page at a time and waits for each: have every file's
        // range read ahead at once, in large requests, so that the compare finds it cached
        // (twice as fast on large files). Only a hint: if it fails, the compare still reads.
        for file in std::iter::once(source).chain(open.iter().map(|&i| destinations[i])) {
            let _ = rustix::fs::fadvise(
                file,
                offset,
                std::num::NonZeroU64::new(chunk),
                rustix::fs::Advice::WillNeed,
            );
        }
        let mut range = DedupeRange {
            src_offset: offset,
            src_length: chunk,
            dest_count: u16::try_from(open.len()).unwrap_or(0),
            reserved1: 0,
            reserved2: 0,
            info: [unused; MAX_DESTINATIONS],
        };
        for (slot, &i) in open.iter().enumerate() {
            range.info[slot].dest_fd = i64::from(destinations[i].as_raw_fd());
            range.info[slot].dest_offset = offset;
        }
        // SAFETY: `range` is a live `struct file_dedupe_range` whose trailing array holds at
        // least the `dest_count` `file_dedupe_range_info` entries it announces; the kernel reads
        // and writes only those, during the call, and every descriptor stays open until it
        // returns.
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
        for (slot, &i) in open.iter().enumerate() {
            let info = range.info[slot];
            results[i] = match info.status {
                0 if info.bytes_deduped > 0 => None,
                0 | DIFFERS => Some(Ok(Dedupe::Differs)),
                errno if errno < 0 => Some(Err(io::Error::from_raw_os_error(-errno))),
                _ => Some(Err(io::Error::other("unknown FIDEDUPERANGE status"))),
            };
        }
        offset += chunk;
    }
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or(Ok(Dedupe::Shared)))
        .collect())
}
