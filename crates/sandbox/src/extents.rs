//! `FS_IOC_FIEMAP`: where a file's bytes lie on disk, so that files whose extents are all
//! shared (after `vserver --all unify`) are known to hold the same bytes without reading them
//! twice.
//!
//! Two files of one file system whose size and complete extent lists (logical offset, physical
//! address, length) are equal read the same bytes: the holes are the same and every byte comes
//! from the same block. The map is taken with `FIEMAP_FLAG_SYNC`, so data a guest wrote and the
//! kernel has not yet written back is placed first (a write to a shared extent copies it on
//! write: the file gets new extents and no longer matches). Only maps made entirely of plain
//! shared extents count: anything delayed, unwritten, inline, encoded or of unknown place is
//! `None`, and the caller reads the file.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `_IOWR('f', 11, struct fiemap)`.
const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
/// `FIEMAP_FLAG_SYNC`: write dirty data back before mapping.
const FLAG_SYNC: u32 = 0x1;
/// `FIEMAP_EXTENT_LAST`.
const EXTENT_LAST: u32 = 0x1;
/// `FIEMAP_EXTENT_SHARED`.
const EXTENT_SHARED: u32 = 0x2000;
/// Flags that make a map unusable as a content key: UNKNOWN, DELALLOC, ENCODED,
/// DATA_ENCRYPTED, NOT_ALIGNED, DATA_INLINE, DATA_TAIL, UNWRITTEN, MERGED.
const EXTENT_UNUSABLE: u32 = 0x2 | 0x4 | 0x8 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800 | 0x1000;
/// Extents asked for per call.
const BATCH: usize = 64;
/// Files with more extents than this are read instead (their map costs more than it saves).
const MAX_EXTENTS: usize = 4096;

/// `struct fiemap` with room for [`BATCH`] extents.
#[repr(C)]
struct Fiemap {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
    extents: [FiemapExtent; BATCH],
}

/// `struct fiemap_extent`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapExtent {
    logical: u64,
    physical: u64,
    length: u64,
    reserved64: [u64; 2],
    flags: u32,
    reserved: [u32; 3],
}

/// Where a file's bytes lie, when all of them lie in shared extents: equal keys, equal bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SharedExtents {
    device: u64,
    size: u64,
    /// (logical offset, physical address, length) of each extent, in order.
    extents: Vec<(u64, u64, u64)>,
}

/// The shared-extent key of `file`, or `None` when any of its bytes lies elsewhere (or the file
/// system cannot say).
pub fn shared_extents(file: &File) -> io::Result<Option<SharedExtents>> {
    let stat = rustix::fs::fstat(file)?;
    let size = u64::try_from(stat.st_size).unwrap_or(0);
    if size == 0 {
        return Ok(None);
    }
    let mut extents = Vec::new();
    let mut start = 0u64;
    loop {
        let mut map = Fiemap {
            start,
            length: u64::MAX - start,
            flags: FLAG_SYNC,
            mapped_extents: 0,
            extent_count: BATCH as u32,
            reserved: 0,
            extents: [FiemapExtent::default(); BATCH],
        };
        // SAFETY: `map` is a live `struct fiemap` whose trailing array holds the
        // `extent_count` extents it announces; the kernel writes at most that many, during the
        // call, and the descriptor stays open until it returns.
        let ret = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP, &mut map as *mut Fiemap) };
        if ret < 0 {
            let error = io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::EOPNOTSUPP) | Some(libc::ENOTTY) | Some(libc::EINVAL) => Ok(None),
                _ => Err(error),
            };
        }
        let mapped = (map.mapped_extents as usize).min(BATCH);
        if mapped == 0 {
            // A file of holes only, or one that shrank under us.
            return Ok(None);
        }
        for extent in &map.extents[..mapped] {
            if extent.flags & EXTENT_SHARED == 0 || extent.flags & EXTENT_UNUSABLE != 0 {
                return Ok(None);
            }
            extents.push((extent.logical, extent.physical, extent.length));
            if extents.len() > MAX_EXTENTS {
                return Ok(None);
            }
        }
        let last = map.extents[mapped - 1];
        if last.flags & EXTENT_LAST != 0 {
            break;
        }
        start = last.logical.saturating_add(last.length);
    }
    let covered = extents
        .last()
        .map(|&(logical, _, length)| logical.saturating_add(length))
        .unwrap_or(0);
    if covered < size {
        // The tail is not mapped: not a file this key can speak for.
        return Ok(None);
    }
    Ok(Some(SharedExtents {
        device: stat.st_dev,
        size,
        extents,
    }))
}
