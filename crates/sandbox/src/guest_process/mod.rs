//! Guest processes: a guest's init in namespaces of its own, a command inside a running guest,
//! and a transient command in a stopped guest's root.
//!
//! One submodule per job: `launch` (starting an init, a transient command, joining a running
//! guest), `pidfd` (the identity of a running init, signals), `pty` (the terminal of
//! `vserver G enter`). The guest's cgroups ([`crate::GuestCgroup`]) live in module `cgroup`.
//!
//! # Processes
//!
//! ```text
//! start:     caller ── launcher (joins the cgroups, unshares mount/uts/ipc/cgroup/pid, exits)
//!                          └── init (pid 1): mounts, pivot_root, capabilities, exec the init
//! exec:      caller ── joiner (joins cgroups and namespaces through a pidfd) ── command
//! transient: caller ── launcher (unshares) ── pid 1 (mounts, pivot_root) ── command
//! ```
//!
//! Unlike the per-operation sandbox (module `process`), these fork instead of re-executing: the
//! guest's init must outlive the caller and be a plain child of the host, and the work between
//! `fork` and `exec` is ordinary Rust code. That is sound only in a single-threaded caller, which
//! every entry point checks (`/proc/self/status`) before it forks; the `vserver` binary and the
//! `harness = false` tests are single-threaded.
//!
//! # The guest's file system view
//!
//! The guest root is cloned onto itself (`open_tree`, with `nodev`, so device nodes a guest
//! planted in its root open nothing), a fresh proc is mounted on its `/proc`, a minimal tmpfs
//! `/dev` with a private devpts on its `/dev`, a tmpfs on `/tmp`, each onto a directory pinned
//! with `RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS` ([`crate::mount_into`]) so planted symlinks
//! cannot redirect a mount to the host. Then `pivot_root` makes the guest root `/` and the host's
//! tree is detached: unlike a `chroot`, nothing of the host stays reachable, and a process that
//! later joins the mount namespace (`exec`) lands in the guest root too. All of it lives in the
//! guest's private mount namespace and disappears with its last process: a stopped guest leaves no
//! mount behind on the host.
//!
//! # Identity of a running init
//!
//! A pid alone can be reused after the init exits. A guest is recorded as its init's pid plus the
//! process's start time (field 22 of `/proc/PID/stat`); [`open_guest_pidfd`] opens a pidfd and
//! checks the start time again *after* opening it, so the descriptor provably refers to the
//! recorded process, and every later signal or `setns` goes through that descriptor.

mod launch;
mod pidfd;
mod pty;

pub use launch::{NOTIFY_DIR_IN_GUEST, exec_in_guest, run_transient, start_guest_init};
pub use pidfd::{
    Wakeup, open_guest_pidfd, process_start_time, signal_by_name, signal_pidfd, wait_pidfd_exit,
    wait_pidfd_or_readable,
};
pub use pty::exec_in_guest_on_pty;

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use crate::caps::{CapabilityProfile, restrict_capabilities, set_no_new_privs};
use crate::error::{Error, Result};
use crate::net::GuestNetwork;

/// Exit code of a forked helper whose setup failed (the reason travels over a pipe).
pub(super) const SETUP_FAILED: i32 = 125;
/// The search path inside a guest.
pub(super) const GUEST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How to run a process in a guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestLaunch {
    /// The guest root on the host (a trusted path such as `/vservers/G`).
    pub root: PathBuf,
    /// The host name inside the guest's uts namespace.
    pub hostname: String,
    /// The program and its arguments (the program is looked up in the guest's `PATH`).
    pub command: Vec<OsString>,
    /// Extra environment variables (the environment is otherwise empty but for `PATH`, `HOME`
    /// and `TERM`).
    pub env: Vec<(OsString, OsString)>,
    /// Cgroup directories the process joins before it creates its cgroup namespace.
    pub cgroups: Vec<PathBuf>,
    /// Where the init's standard output and error go (`/dev/null` if `None`); only for
    /// [`start_guest_init`], a transient command inherits the caller's streams.
    pub log: Option<PathBuf>,
    /// What the guest's processes keep.
    pub capabilities: CapabilityProfile,
    /// Its network: the host's, or a namespace of its own (only when the guest's processes are
    /// created, by [`start_guest_init`] and [`run_transient`]; a command joining a running guest
    /// gets the guest's).
    pub network: GuestNetwork,
    /// What the init needs of its file system view beyond the basics (only for
    /// [`start_guest_init`]).
    pub setup: InitSetup,
}

/// The parts of a guest's file system view that only some inits need (see the module
/// documentation): systemd wants what systemd-nspawn gives it, a sysv `rc` wants `/run`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitSetup {
    /// A fresh tmpfs (0755) on `/run`.
    pub run_tmpfs: bool,
    /// A writable `cgroup2` on `/sys/fs/cgroup`, mounted from inside the guest's cgroup
    /// namespace: the guest sees its own cgroup as the root and may create cgroups below it
    /// (systemd's delegation), nothing above, and none of the v1 hierarchies that hold its
    /// limits. Join a cgroup *below* the guest's own (see [`crate::GuestCgroup::delegate`]) so
    /// that the files of the guest's cgroup itself (`cgroup.freeze`, the limits) stay out of
    /// the guest's reach.
    pub cgroup_fs: bool,
    /// A host directory bound read-only onto `/run/host/notify` (needs `run_tmpfs`): where the
    /// host's end of an `sd_notify` socket is, as systemd-nspawn arranges it. A read-only mount
    /// still lets the guest connect to a socket in it, but not create files there.
    pub notify_dir: Option<PathBuf>,
    /// More tmpfs mounts (guest path, root mode), made after `/run`: systemd refuses to boot
    /// unless `/run/lock` and `/dev/shm` are mount points it need not mount itself.
    pub tmpfs: Vec<(PathBuf, u32)>,
    /// Files written into the guest's fresh `/run` (path below `/run`, contents), such as
    /// `systemd/container`.
    pub run_files: Vec<(PathBuf, Vec<u8>)>,
}

impl GuestLaunch {
    pub(super) fn display(&self) -> String {
        self.command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A running guest as a host-side package operation sees it (see
/// [`crate::SandboxCommand::running_guest`]): its init, and the freezer of its cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningGuest {
    /// The init's host pid.
    pub pid: u32,
    /// The init's start time (`/proc/PID/stat` field 22), which makes the pid unambiguous.
    pub start_time: u64,
    /// The freezer of its cgroup (`None`: the host has no freezer; it then runs on).
    pub freezer: Option<crate::Freezer>,
}

/// A started guest init: its host pid and start time (clock ticks after boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestInit {
    /// The init's pid as the host sees it.
    pub pid: u32,
    /// Its start time, from `/proc/PID/stat`.
    pub start_time: u64,
}

/// A setup step that failed in a forked helper.
pub(super) struct Failure {
    pub(super) step: &'static str,
    pub(super) errno: i32,
    pub(super) message: String,
}

pub(super) type Step<T> = std::result::Result<T, Failure>;

pub(super) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub(super) fn step<T>(name: &'static str, result: Result<T>) -> Step<T> {
    result.map_err(|e| Failure {
        step: name,
        errno: e.errno().unwrap_or(0),
        message: chain(&e),
    })
}

pub(super) fn step_io<T, E: Into<io::Error>>(
    name: &'static str,
    result: std::result::Result<T, E>,
) -> Step<T> {
    result.map_err(|e| {
        let e: io::Error = e.into();
        Failure {
            step: name,
            errno: e.raw_os_error().unwrap_or(0),
            message: e.to_string(),
        }
    })
}

/// Sends a failure to the caller: `step NUL errno NUL message`.
pub(super) fn report(pipe: &OwnedFd, failure: &Failure) {
    let text = format!("{}\0{}\0{}", failure.step, failure.errno, failure.message);
    let _ = rustix::io::write(pipe, text.as_bytes());
}

/// Reads what a helper reported (nothing when it succeeded).
pub(super) fn read_report(pipe: OwnedFd, command: &str) -> Result<()> {
    let mut text = String::new();
    let mut file = File::from(pipe);
    file.read_to_string(&mut text)
        .map_err(|e| Error::kernel("read a guest helper's report", e))?;
    if text.is_empty() {
        return Ok(());
    }
    let mut parts = text.splitn(3, '\0');
    let step = parts.next().unwrap_or_default().to_string();
    let errno = parts.next().and_then(|e| e.parse().ok()).unwrap_or(0);
    let message = parts.next().unwrap_or_default().to_string();
    Err(Error::Setup {
        command: command.to_string(),
        step,
        errno,
        message,
    })
}

/// Refuses to fork from a multi-threaded process (see the module documentation).
pub(super) fn ensure_single_threaded(command: &str) -> Result<()> {
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|e| Error::host("read", "/proc/self/status", e))?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .map(str::trim);
    if threads == Some("1") {
        return Ok(());
    }
    Err(Error::Setup {
        command: command.to_string(),
        step: "check that the caller is single-threaded".into(),
        errno: libc::EINVAL,
        message: format!(
            "{} threads: guest processes are forked, call this before starting threads",
            threads.unwrap_or("unknown")
        ),
    })
}

/// The raw wait status as an exit code: the code, or 128 + the signal.
pub(super) fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        SETUP_FAILED
    }
}

pub(super) fn command_for(launch: &GuestLaunch) -> Step<Command> {
    let (program, args) = launch.command.split_first().ok_or(Failure {
        step: "prepare the command",
        errno: libc::EINVAL,
        message: "no command given".into(),
    })?;
    let mut command = Command::new(program);
    command.args(args).env_clear().current_dir("/");
    command.env("PATH", GUEST_PATH).env("HOME", "/");
    if let Some(term) = std::env::var_os("TERM") {
        command.env("TERM", term);
    }
    command.envs(launch.env.iter().map(|(k, v)| (k, v)));
    Ok(command)
}

/// The command for `exec` and `--transient`: in a session of its own, so that a terminal it
/// inherited is not its controlling terminal and `TIOCSTI` (which the kernel here still allows
/// on one's controlling terminal) cannot push keystrokes into the host's shell.
pub(super) fn command_in_new_session(launch: &GuestLaunch) -> Step<Command> {
    let mut command = command_for(launch)?;
    // SAFETY: the closure runs between fork and exec and only calls `setsid`, a system call that
    // is async-signal-safe; it touches no memory shared with other threads.
    unsafe {
        command.pre_exec(|| rustix::process::setsid().map(drop).map_err(Into::into));
    }
    Ok(command)
}

pub(super) fn join_cgroups(cgroups: &[PathBuf]) -> Step<()> {
    for dir in cgroups {
        step_io(
            "join the guest's cgroup",
            fs::write(dir.join("cgroup.procs"), "0")
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
        )?;
    }
    Ok(())
}

/// Makes the calling child (of a `vserver` command joining a running guest) part of the guest:
/// killed with its parent, in the guest's cgroups, namespaces and root (through `pidfd`, its
/// init) with `launch.capabilities`, and nothing inherited above standard error.
pub(super) fn join_guest(
    pidfd: std::os::fd::BorrowedFd<'_>,
    root: &crate::safe_path::GuestRoot,
    launch: &GuestLaunch,
) -> Step<()> {
    step_io(
        "set the parent-death signal",
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL)),
    )?;
    join_cgroups(&launch.cgroups)?;
    step(
        "enter the guest",
        crate::guest_context::enter_guest_context(root, Some(pidfd), launch.capabilities),
    )?;
    cloexec_above_stderr()
}

/// Marks every descriptor above standard error close-on-exec: whatever the caller inherited
/// (from a shell, a job runner, a service manager) must not reach the guest.
pub(super) fn cloexec_above_stderr() -> Step<()> {
    // SAFETY: `close_range` with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors; it closes
    // nothing, so no descriptor owned elsewhere in this process becomes invalid.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if ret == -1 {
        return step_io(
            "mark inherited descriptors close-on-exec",
            Err(io::Error::last_os_error()),
        );
    }
    Ok(())
}

pub(super) fn confine(profile: CapabilityProfile) -> Step<()> {
    cloexec_above_stderr()?;
    step_io("drop capabilities", restrict_capabilities(profile.kept()))?;
    step_io("set no_new_privs", set_no_new_privs())
}

/// Runs the command and returns its exit code (128 + signal when killed). A program that is
/// missing or not executable is the command's failure, not vserver's: it is said on standard
/// error and gives 127 or 126, as a shell would.
pub(super) fn run_to_end(command: &mut Command) -> Step<i32> {
    match command.status() {
        Ok(status) => Ok(status.code().unwrap_or_else(|| {
            128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
        })),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
            ) =>
        {
            eprintln!(
                "vserver: {}: {}",
                command.get_program().to_string_lossy(),
                if e.kind() == io::ErrorKind::NotFound {
                    "not found in the guest"
                } else {
                    "not executable"
                }
            );
            Ok(if e.kind() == io::ErrorKind::NotFound {
                127
            } else {
                126
            })
        }
        Err(e) => step_io("run the command", Err(e)),
    }
}
