//! The narrowing entry point: a run of any sandbox-aware binary (one that calls
//! [`crate::run_if_sandbox_child`] first) that restricts its own writes further, then runs a
//! program. apt runs dpkg this way (`Dir::Bin::dpkg` names the vserver binary; apt passes its
//! environment on), so dpkg and its maintainer scripts get a narrower write boundary than apt.
//!
//! # The gate: a confinement that cannot silently not apply
//!
//! dpkg's maintainer scripts are confined by a library preloaded into dpkg (`LD_PRELOAD`), and
//! `ld.so` skips a preload it cannot load with nothing but a line on standard error. So with a
//! gate lock (the dpkg database's `lock`), the entry point does not execute dpkg in its own
//! place: it takes that lock (an `fcntl` write lock, which dpkg takes itself before it changes
//! anything, and so before it runs any script), starts dpkg as its child with one end of a socket
//! named in [`GATE_VAR`], and waits. The preloaded library's constructor, which runs before
//! dpkg's `main`, says "loaded" on the socket; only then does the entry point release the lock
//! and let the constructor return. Without the library dpkg finds its database locked and stops
//! before running anything, and the entry point says why. Read-only dpkg commands (`-l`, `-L`,
//! `--verify`) take no lock and run no scripts; they run either way.

use std::ffi::{CString, OsStr, OsString};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sys;

/// Marks an entry point run; the value is JSON ([`EntryPoint`]).
const ENTRY_VAR: &str = "VSERVER_NARROW_EXEC";

/// Names, in the program's environment, the descriptor on which its preloaded confinement
/// library reports that it is loaded (see the module documentation).
pub const GATE_VAR: &str = "VSERVER_EXEC_GATE";

/// What the library sends once loaded, and what it waits for before the program may go on.
pub const GATE_LOADED: u8 = b'L';
/// See [`GATE_LOADED`].
pub const GATE_OPEN: u8 = b'G';

#[derive(Debug, Serialize, Deserialize)]
struct EntryPoint {
    program: PathBuf,
    writable: Vec<PathBuf>,
    #[serde(default)]
    gate_lock: Option<PathBuf>,
}

/// The environment variable and value that make a sandbox-aware binary restrict its writes to
/// beneath `writable` (plus `/dev`) and run `program` with the arguments it was given, holding
/// `gate_lock` until the program's preloaded library reports in (module documentation).
pub fn narrow_exec_env(
    program: &Path,
    writable: &[PathBuf],
    gate_lock: Option<&Path>,
) -> (OsString, OsString) {
    let spec = EntryPoint {
        program: program.to_path_buf(),
        writable: writable.to_vec(),
        gate_lock: gate_lock.map(Path::to_path_buf),
    };
    let value = serde_json::to_string(&spec).unwrap_or_default();
    (ENTRY_VAR.into(), value.into())
}

/// Runs the entry point when this process was started as one; never returns then.
pub(crate) fn run_if_entry_point() {
    if let Some(value) = std::env::var_os(ENTRY_VAR) {
        run(&value);
    }
}

/// Refuses to run the program: one line on standard error, exit 126 (as a shell does for a
/// command it cannot execute).
fn refuse(why: impl std::fmt::Display) -> ! {
    let _ = writeln!(io::stderr(), "vserver: refusing to run the program: {why}");
    std::process::exit(126)
}

fn run(value: &OsStr) -> ! {
    let spec: EntryPoint = match serde_json::from_slice(value.as_bytes()) {
        Ok(spec) => spec,
        Err(e) => refuse(format_args!("bad {ENTRY_VAR}: {e}")),
    };
    if crate::landlock::write_boundary_available() {
        let mut dirs: Vec<PathBuf> = crate::landlock::always_writable()
            .iter()
            .map(|p| p.to_path_buf())
            .collect();
        dirs.extend(spec.writable.iter().cloned());
        if let Err(e) = crate::landlock::restrict_writes_beneath(&dirs) {
            refuse(format_args!("cannot set its write boundary: {e}"));
        }
    } else if !crate::landlock::opted_out() {
        refuse("this kernel has no Landlock for its write boundary");
    }
    let cstring = |bytes: &[u8]| CString::new(bytes).unwrap_or_default();
    let program = cstring(spec.program.as_os_str().as_bytes());
    let name = spec.program.file_name().unwrap_or(spec.program.as_os_str());
    let argv: Vec<CString> = std::iter::once(cstring(name.as_bytes()))
        .chain(std::env::args_os().skip(1).map(|a| cstring(a.as_bytes())))
        .collect();
    let mut envp: Vec<CString> = std::env::vars_os()
        .filter(|(key, _)| key != ENTRY_VAR && key != GATE_VAR)
        .map(|(key, value)| {
            let mut entry = key.into_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            cstring(&entry)
        })
        .collect();
    let Some(lock_path) = &spec.gate_lock else {
        let error = sys::execve(&program, &pointers(&argv), &pointers(&envp));
        refuse(format_args!(
            "cannot execute `{}`: {error}",
            spec.program.display()
        ))
    };
    let lock = match hold_lock(lock_path) {
        Ok(lock) => lock,
        Err(e) => refuse(format_args!("cannot lock `{}`: {e}", lock_path.display())),
    };
    let (ours, theirs) = match rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    ) {
        Ok(pair) => pair,
        Err(e) => refuse(format_args!("cannot create the gate socket: {e}")),
    };
    envp.push(cstring(
        format!("{GATE_VAR}={}", theirs.as_raw_fd()).as_bytes(),
    ));
    let (argv_ptrs, envp_ptrs) = (pointers(&argv), pointers(&envp));
    // SAFETY: this process is single-threaded (it runs before anything else in `main`).
    let child = match unsafe { sys::fork() } {
        Ok(pid) => pid,
        Err(e) => refuse(format_args!("cannot fork: {e}")),
    };
    if child == 0 {
        let _ =
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
        if sys::clear_cloexec(theirs.as_raw_fd()).is_ok() {
            let _ = sys::execve(&program, &argv_ptrs, &envp_ptrs);
        }
        sys::exit_immediately(127);
    }
    drop(theirs);
    // The program gets the terminal's signals itself (same process group) and decides what they
    // mean; this process only waits for it, and must not take it down with a SIGKILL by dying.
    for signal in [libc::SIGINT, libc::SIGQUIT, libc::SIGTERM, libc::SIGHUP] {
        sys::set_signal_ignored(signal, true);
    }
    let mut byte = [0u8; 1];
    let loaded = matches!(rustix::io::read(&ours, &mut byte), Ok(1) if byte[0] == GATE_LOADED);
    if loaded {
        // The library is in: dpkg may take its lock and run what it runs.
        drop(lock);
        let _ = rustix::io::write(&ours, &[GATE_OPEN]);
    }
    drop(ours);
    let status = match sys::waitpid(child) {
        Ok((_, status)) => status,
        Err(e) => refuse(format_args!(
            "cannot wait for `{}`: {e}",
            spec.program.display()
        )),
    };
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    if !loaded && code != 0 {
        let _ = writeln!(
            io::stderr(),
            "vserver: the library that confines maintainer scripts did not load into `{}`: it \
             found its database locked and ran nothing",
            spec.program.display()
        );
    }
    std::process::exit(code)
}

/// Opens `path` (a regular file, created if missing, never through a symlink) and takes an
/// `fcntl` write lock on it, as dpkg does; released when the descriptor is closed.
fn hold_lock(path: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{FileType, Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o640),
    )?;
    let stat = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(io::Error::other("not a regular file"));
    }
    sys::fcntl_write_lock(fd.as_fd())?;
    Ok(fd)
}

fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}
