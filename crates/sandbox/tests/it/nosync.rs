//! `SandboxCommand::skip_fsync`: the seccomp filter turns sync calls into successful no-ops and
//! leaves every other call alone.
//!
//! How "skipped" is proven without timing anything: the probe also calls the sync functions on a
//! descriptor that is not open (and `msync` on an unaligned address). The kernel's
//! implementations fail those with `EBADF` / `EINVAL`; a 0 can only come from the filter
//! answering before the kernel looked at the arguments. The same probe without the filter is the
//! control. `close` of the bad descriptor must still fail with `EBADF`, `msync(MS_ASYNC)` on the
//! bad address with `EINVAL` (only `MS_SYNC` is skipped), and a write must still reach the file.

use std::collections::BTreeMap;
use std::io::Write;

use vserver_sandbox::SandboxCommand;

use crate::support::{Outcome, require_root, run};

crate::tests![skip_fsync_makes_sync_calls_no_ops];

/// A descriptor number nothing has open.
const BAD_FD: libc::c_int = 987;

fn errno_of(ret: libc::c_long) -> i32 {
    if ret == -1 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    } else {
        0
    }
}

fn report(check: &str, errno: i32) {
    println!("RESULT {check} {errno}");
    let _ = std::io::stdout().flush();
}

/// Runs inside the sandbox (`--fsync-probe FILE`): prints `RESULT <check> <errno>` lines.
pub fn probe(path: &str) -> ! {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .unwrap();
    report(
        "write",
        file.write_all(b"written in the sandbox\n")
            .map_or_else(|e| e.raw_os_error().unwrap_or(-1), |()| 0),
    );
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    // An unaligned address: msync rejects it with EINVAL before touching any memory.
    let unaligned = std::ptr::without_provenance_mut::<libc::c_void>(1);
    // SAFETY: `fd` is open for the whole probe.
    let fsync_file = errno_of(unsafe { libc::fsync(fd) }.into());
    // SAFETY: as above.
    let fdatasync_file = errno_of(unsafe { libc::fdatasync(fd) }.into());
    // SAFETY: integer argument; the kernel answers EBADF for a descriptor that is not open.
    let fsync_bad = errno_of(unsafe { libc::fsync(BAD_FD) }.into());
    // SAFETY: as above.
    let fdatasync_bad = errno_of(unsafe { libc::fdatasync(BAD_FD) }.into());
    // SAFETY: as above.
    let syncfs_bad = errno_of(unsafe { libc::syncfs(BAD_FD) }.into());
    // SAFETY: as above.
    let range_bad = errno_of(
        unsafe { libc::sync_file_range(BAD_FD, 0, 0, libc::SYNC_FILE_RANGE_WRITE) }.into(),
    );
    // SAFETY: the address is unaligned, so the kernel fails the call without accessing memory.
    let msync_sync = errno_of(unsafe { libc::msync(unaligned, 4096, libc::MS_SYNC) }.into());
    // SAFETY: as above.
    let msync_async = errno_of(unsafe { libc::msync(unaligned, 4096, libc::MS_ASYNC) }.into());
    // SAFETY: closing a descriptor that is not open only yields EBADF.
    let close_bad = errno_of(unsafe { libc::close(BAD_FD) }.into());
    // SAFETY: `sync` takes no arguments and cannot fail.
    unsafe { libc::sync() };
    // Each errno is read right after its call, before anything else can change it.
    for (check, errno) in [
        ("fsync-file", fsync_file),
        ("fdatasync-file", fdatasync_file),
        ("fsync-bad-fd", fsync_bad),
        ("fdatasync-bad-fd", fdatasync_bad),
        ("syncfs-bad-fd", syncfs_bad),
        ("sync_file_range-bad-fd", range_bad),
        ("msync-sync-bad-address", msync_sync),
        ("msync-async-bad-address", msync_async),
        ("close-bad-fd", close_bad),
    ] {
        report(check, errno);
    }
    report("sync", 0);
    std::process::exit(0);
}

fn run_probe(file: &std::path::Path, skip: bool) -> BTreeMap<String, i32> {
    // Run a copy beside the probe file: the test binary itself may live below /tmp (a checkout
    // there), which the sandbox replaces with a private /tmp.
    let probe = file.parent().unwrap().join("fsync-probe");
    if !probe.exists() {
        std::fs::copy(std::env::current_exe().unwrap(), &probe).unwrap();
    }
    let finished = SandboxCommand::new(&probe)
        .arg("--fsync-probe")
        .arg(file)
        .writable(file.parent().unwrap())
        .skip_fsync(skip)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&finished.stderr);
    assert!(finished.status.success(), "{:?} {stderr}", finished.status);
    let results: BTreeMap<String, i32> = String::from_utf8_lossy(&finished.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("RESULT ")?.split(' ');
            Some((words.next()?.to_string(), words.next()?.parse().ok()?))
        })
        .collect();
    println!("  skip_fsync({skip}): {results:?}");
    assert_eq!(results.len(), 11, "{results:?} {stderr}");
    results
}

fn skip_fsync_makes_sync_calls_no_ops() -> Outcome {
    run(|| {
        require_root()?;
        // On disk (not tmpfs), as a real build would be.
        let dir = tempfile::Builder::new()
            .prefix("vserver-nosync-it")
            .tempdir_in("/var/tmp")
            .unwrap();
        let file = dir.path().join("probe");
        let (ebadf, einval) = (libc::EBADF, libc::EINVAL);

        let control = run_probe(&file, false);
        for (check, errno) in [
            ("write", 0),
            ("fsync-file", 0),
            ("fdatasync-file", 0),
            ("fsync-bad-fd", ebadf),
            ("fdatasync-bad-fd", ebadf),
            ("syncfs-bad-fd", ebadf),
            ("sync_file_range-bad-fd", ebadf),
            ("msync-sync-bad-address", einval),
            ("msync-async-bad-address", einval),
            ("close-bad-fd", ebadf),
        ] {
            assert_eq!(control.get(check), Some(&errno), "control {check}");
        }

        let skipped = run_probe(&file, true);
        for (check, errno) in [
            ("write", 0),
            ("fsync-file", 0),
            ("fdatasync-file", 0),
            // The kernel would have said EBADF / EINVAL: the calls never reached it.
            ("fsync-bad-fd", 0),
            ("fdatasync-bad-fd", 0),
            ("syncfs-bad-fd", 0),
            ("sync_file_range-bad-fd", 0),
            ("msync-sync-bad-address", 0),
            // Everything else still runs for real.
            ("msync-async-bad-address", einval),
            ("close-bad-fd", ebadf),
        ] {
            assert_eq!(skipped.get(check), Some(&errno), "skip_fsync {check}");
        }
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "written in the sandbox\n"
        );
        Ok(())
    })
}
