//! Guest processes: a guest's init in namespaces of its own, a command inside a running guest,
//! and a transient command in a stopped guest's root; and the guest's cgroups.
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

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::thread::UnshareFlags;

use crate::caps::{CapabilityProfile, restrict_capabilities, set_no_new_privs};
use crate::cgroup::CgroupSupport;
use crate::error::{Error, Result};
use crate::mount::{self, FileSystem};
use crate::namespaces;
use crate::net::{self, GuestNetwork};
use crate::safe_path::GuestRoot;
use crate::sys;

/// Exit code of a forked helper whose setup failed (the reason travels over a pipe).
const SETUP_FAILED: i32 = 125;
/// The search path inside a guest.
const GUEST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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
}

impl GuestLaunch {
    fn display(&self) -> String {
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
struct Failure {
    step: &'static str,
    errno: i32,
    message: String,
}

type Step<T> = std::result::Result<T, Failure>;

fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn step<T>(name: &'static str, result: Result<T>) -> Step<T> {
    result.map_err(|e| Failure {
        step: name,
        errno: e.errno().unwrap_or(0),
        message: chain(&e),
    })
}

fn step_io<T, E: Into<io::Error>>(
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
fn report(pipe: &OwnedFd, failure: &Failure) {
    let text = format!("{}\0{}\0{}", failure.step, failure.errno, failure.message);
    let _ = rustix::io::write(pipe, text.as_bytes());
}

/// Reads what a helper reported (nothing when it succeeded).
fn read_report(pipe: OwnedFd, command: &str) -> Result<()> {
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
fn ensure_single_threaded(command: &str) -> Result<()> {
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
fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        SETUP_FAILED
    }
}

fn command_for(launch: &GuestLaunch) -> Step<Command> {
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
fn command_in_new_session(launch: &GuestLaunch) -> Step<Command> {
    let mut command = command_for(launch)?;
    // SAFETY: the closure runs between fork and exec and only calls `setsid`, a system call that
    // is async-signal-safe; it touches no memory shared with other threads.
    unsafe {
        command.pre_exec(|| rustix::process::setsid().map(drop).map_err(Into::into));
    }
    Ok(command)
}

fn join_cgroups(cgroups: &[PathBuf]) -> Step<()> {
    for dir in cgroups {
        step_io(
            "join the guest's cgroup",
            fs::write(dir.join("cgroup.procs"), "0")
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
        )?;
    }
    Ok(())
}

/// Creates the guest's namespaces in the calling (launcher) process; its next child is pid 1.
fn unshare_guest_namespaces(launch: &GuestLaunch) -> Step<()> {
    join_cgroups(&launch.cgroups)?;
    let mut flags = UnshareFlags::NEWNS
        | UnshareFlags::NEWUTS
        | UnshareFlags::NEWIPC
        | UnshareFlags::NEWCGROUP
        | UnshareFlags::NEWPID;
    if launch.network.is_private() {
        flags |= UnshareFlags::NEWNET;
    }
    step(
        "create the guest's namespaces",
        namespaces::unshare(
            flags,
            "create mount, uts, ipc, cgroup, pid (and net) namespaces",
        ),
    )?;
    if launch.network.is_private() {
        step_io(
            "bring the guest's loopback interface up",
            net::set_interface_up("lo"),
        )?;
    }
    step("make all mounts private", mount::make_all_private())?;
    step_io(
        "set the host name",
        sys::sethostname(launch.hostname.as_bytes()),
    )
}

/// Builds the guest's file system view and makes it the root (see the module documentation).
/// Runs as pid 1 of the guest's pid namespace, in its private mount namespace.
fn enter_guest_root(root_path: &Path) -> Step<()> {
    let pinned = step("open the guest root", GuestRoot::open(root_path))?;
    let tree = step("clone the guest root", mount::clone_tree(root_path))?;
    step("protect the guest root", mount::set_nodev(&tree, root_path))?;
    step(
        "mount the guest root",
        mount::attach(&tree, pinned.as_fd(), root_path),
    )?;
    drop(pinned);
    // Reopened: the path now leads to the new mount.
    let root = step("open the guest root", GuestRoot::open(root_path))?;
    if step("inspect the guest's /proc", root.exists("/proc"))? {
        step(
            "mount the guest's /proc",
            mount::mount_into(&root, &FileSystem::Proc, "/proc"),
        )?;
    }
    if step("inspect the guest's /sys", root.exists("/sys"))? {
        step(
            "mount the guest's /sys",
            mount::mount_into(&root, &FileSystem::Sysfs, "/sys"),
        )?;
    }
    if step("inspect the guest's /dev", root.exists("/dev"))? {
        let target = step(
            "open the guest's /dev",
            root.resolve_dir_no_symlinks("mount a minimal /dev on", Path::new("/dev")),
        )?;
        step(
            "mount a minimal /dev in the guest",
            mount::mount_minimal_dev_on(target.as_fd(), Path::new("/dev")),
        )?;
    }
    if step("inspect the guest's /tmp", root.exists("/tmp"))? {
        step(
            "mount the guest's /tmp",
            mount::mount_into(
                &root,
                &FileSystem::Tmpfs {
                    mode: 0o1777,
                    size: None,
                },
                "/tmp",
            ),
        )?;
    }
    step_io(
        "enter the guest root",
        rustix::process::fchdir(root.as_fd()),
    )?;
    step_io(
        "pivot into the guest root",
        rustix::process::pivot_root(".", "."),
    )?;
    // The host's tree now lies on top of the guest root at `.`: detach it.
    step_io(
        "detach the host's tree",
        sys::umount2(c".", libc::MNT_DETACH),
    )?;
    step_io("change directory to /", rustix::process::chdir("/"))
}

/// Marks every descriptor above standard error close-on-exec: whatever the caller inherited
/// (from a shell, a job runner, a service manager) must not reach the guest.
fn cloexec_above_stderr() -> Step<()> {
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

fn confine(profile: CapabilityProfile) -> Step<()> {
    cloexec_above_stderr()?;
    step_io("drop capabilities", restrict_capabilities(profile.kept()))?;
    step_io("set no_new_privs", set_no_new_privs())
}

/// Starts a guest's init (see the module documentation) and returns once the init command has
/// been executed (or setup failed, reported as [`Error::Setup`]). The init is detached: it is not
/// the caller's child and outlives it.
pub fn start_guest_init(launch: &GuestLaunch) -> Result<GuestInit> {
    let display = launch.display();
    ensure_single_threaded(&display)?;
    let log = match &launch.log {
        Some(path) => Some(
            OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| Error::host("open the guest's log", path, e))?,
        ),
        None => None,
    };
    let (report_read, report_write) = sys::pipe().map_err(|e| Error::kernel("create a pipe", e))?;
    let (pid_read, pid_write) = sys::pipe().map_err(|e| Error::kernel("create a pipe", e))?;
    let (go_read, go_write) = sys::pipe().map_err(|e| Error::kernel("create a pipe", e))?;
    // SAFETY: the process is single-threaded (checked above), so the child may run any code.
    let launcher =
        unsafe { sys::fork() }.map_err(|e| Error::kernel("fork the guest launcher", e))?;
    if launcher == 0 {
        drop(report_read);
        drop(pid_read);
        drop(go_write);
        let result = launch_init(launch, log, pid_write, &report_write, go_read);
        if let Err(failure) = result {
            report(&report_write, &failure);
            sys::exit_immediately(SETUP_FAILED);
        }
        sys::exit_immediately(0);
    }
    drop(report_write);
    drop(pid_write);
    drop(go_read);
    drop(log);
    let (_, status) =
        sys::waitpid(launcher).map_err(|e| Error::kernel("wait for the guest launcher", e))?;
    let mut pid_text = String::new();
    File::from(pid_read)
        .read_to_string(&mut pid_text)
        .map_err(|e| Error::kernel("read the guest init's pid", e))?;
    let Ok(pid) = pid_text.trim().parse::<u32>() else {
        // The launcher failed before the init existed; the report says why.
        drop(go_write);
        read_report(report_read, &display)?;
        return Err(Error::Setup {
            command: display.clone(),
            step: "start the guest launcher".into(),
            errno: 0,
            message: format!("it ended without starting the init (wait status {status:#x})"),
        });
    };
    // The init waits for this before it executes anything of the guest. Dropping `go_write`
    // without a byte (on an error) makes it give up and exit.
    net::connect_to_bridge(pid, &launch.network)?;
    let released = rustix::io::write(&go_write, b"1");
    drop(go_write);
    // An init that failed its setup has closed the pipe: its report is the better answer.
    read_report(report_read, &display)?;
    released.map_err(|e| Error::kernel("release the guest init", e))?;
    let start_time = process_start_time(pid).ok_or_else(|| Error::Setup {
        command: display.clone(),
        step: "run the init".into(),
        errno: 0,
        message: "the init ended right after it started; see the guest's log".into(),
    })?;
    Ok(GuestInit { pid, start_time })
}

/// The launcher: namespaces, then fork the init and hand its pid to the caller.
fn launch_init(
    launch: &GuestLaunch,
    log: Option<File>,
    pid_pipe: OwnedFd,
    report_pipe: &OwnedFd,
    go_pipe: OwnedFd,
) -> Step<()> {
    unshare_guest_namespaces(launch)?;
    // SAFETY: the launcher is a fork of a single-threaded process, so single-threaded too.
    let init = step_io("fork the guest init", unsafe { sys::fork() })?;
    if init == 0 {
        // The caller reads the pid pipe to its end while the init waits for the go-ahead.
        drop(pid_pipe);
        let failure = run_init(launch, log, go_pipe);
        report(report_pipe, &failure);
        sys::exit_immediately(SETUP_FAILED);
    }
    step_io(
        "hand over the init's pid",
        rustix::io::write(&pid_pipe, init.to_string().as_bytes()),
    )
    .map(drop)
}

/// Pid 1 of the guest: returns only on failure.
fn run_init(launch: &GuestLaunch, log: Option<File>, go_pipe: OwnedFd) -> Failure {
    let run = || -> Step<std::convert::Infallible> {
        // No controlling terminal, a session of its own: the guest outlives the caller's shell.
        step_io("start a session", rustix::process::setsid())?;
        enter_guest_root(&launch.root)?;
        let mut go = [0u8; 1];
        if !matches!(rustix::io::read(&go_pipe, &mut go), Ok(1)) {
            return Err(Failure {
                step: "wait for the host to set up the guest",
                errno: libc::ECANCELED,
                message: "the host gave up".into(),
            });
        }
        drop(go_pipe);
        confine(launch.capabilities)?;
        let mut command = command_for(launch)?;
        command.stdin(Stdio::null());
        match log {
            Some(log) => {
                let err = step_io("duplicate the log", log.try_clone())?;
                command.stdout(log).stderr(err);
            }
            None => {
                command.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let error = command.exec();
        Err(Failure {
            step: "execute the init",
            errno: error.raw_os_error().unwrap_or(0),
            message: error.to_string(),
        })
    };
    match run() {
        Err(failure) => failure,
        Ok(never) => match never {},
    }
}

/// Runs a command in fresh namespaces in a (stopped) guest's root, as the child of a private
/// pid 1 that takes every leftover process with it when the command ends. Standard streams are
/// the caller's. Returns the command's exit code (128 + signal when killed).
pub fn run_transient(launch: &GuestLaunch) -> Result<i32> {
    let display = launch.display();
    ensure_single_threaded(&display)?;
    in_reporting_child(
        ("fork the guest launcher", "wait for the guest launcher"),
        &display,
        |report_pipe| transient_launcher(launch, report_pipe),
    )
}

/// Forks a child that runs `body` and exits with its code; a setup failure travels back over a
/// pipe and becomes the error. The caller must be single-threaded (the child runs any code).
fn in_reporting_child(
    (fork_op, wait_op): (&'static str, &'static str),
    display: &str,
    body: impl FnOnce(&OwnedFd) -> Step<i32>,
) -> Result<i32> {
    let (report_read, report_write) = sys::pipe().map_err(|e| Error::kernel("create a pipe", e))?;
    // SAFETY: the callers checked that the process is single-threaded.
    let child = unsafe { sys::fork() }.map_err(|e| Error::kernel(fork_op, e))?;
    if child == 0 {
        drop(report_read);
        let code = match body(&report_write) {
            Ok(code) => code,
            Err(failure) => {
                report(&report_write, &failure);
                SETUP_FAILED
            }
        };
        sys::exit_immediately(code);
    }
    drop(report_write);
    let (_, status) = sys::waitpid(child).map_err(|e| Error::kernel(wait_op, e))?;
    read_report(report_read, display)?;
    Ok(exit_code(status))
}

fn transient_launcher(launch: &GuestLaunch, report_pipe: &OwnedFd) -> Step<i32> {
    step_io(
        "set the parent-death signal",
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL)),
    )?;
    unshare_guest_namespaces(launch)?;
    // SAFETY: a fork of a single-threaded process is single-threaded.
    let init = step_io("fork the transient init", unsafe { sys::fork() })?;
    if init == 0 {
        let code = match transient_init(launch) {
            Ok(code) => code,
            Err(failure) => {
                report(report_pipe, &failure);
                SETUP_FAILED
            }
        };
        sys::exit_immediately(code);
    }
    let (_, status) = step_io("wait for the transient init", sys::waitpid(init))?;
    Ok(exit_code(status))
}

fn transient_init(launch: &GuestLaunch) -> Step<i32> {
    step_io(
        "set the parent-death signal",
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL)),
    )?;
    enter_guest_root(&launch.root)?;
    confine(launch.capabilities)?;
    run_to_end(&mut command_in_new_session(launch)?)
}

/// Runs a command inside the running guest behind `pidfd` (from [`open_guest_pidfd`]): joins its
/// cgroups, its mount, uts, ipc, net, cgroup and pid namespaces, drops to `launch.capabilities`
/// with `no_new_privs`, and runs the command as a process of the guest. Standard streams are the
/// caller's. Returns the command's exit code (128 + signal when killed).
pub fn exec_in_guest(pidfd: BorrowedFd<'_>, launch: &GuestLaunch) -> Result<i32> {
    let display = launch.display();
    ensure_single_threaded(&display)?;
    let root = GuestRoot::open(&launch.root)?;
    in_reporting_child(
        ("fork the guest joiner", "wait for the guest joiner"),
        &display,
        |_| join_and_run(pidfd, &root, launch),
    )
}

fn join_and_run(pidfd: BorrowedFd<'_>, root: &GuestRoot, launch: &GuestLaunch) -> Step<i32> {
    step_io(
        "set the parent-death signal",
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL)),
    )?;
    join_cgroups(&launch.cgroups)?;
    step(
        "enter the guest",
        crate::guest_context::enter_guest_context(root, Some(pidfd), launch.capabilities),
    )?;
    cloexec_above_stderr()?;
    run_to_end(&mut command_in_new_session(launch)?)
}

/// Runs the command and returns its exit code (128 + signal when killed). A program that is
/// missing or not executable is the command's failure, not vserver's: it is said on standard
/// error and gives 127 or 126, as a shell would.
fn run_to_end(command: &mut Command) -> Step<i32> {
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

/// The start time of a live process (not a zombie), from `/proc/PID/stat`.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; the fields after the last `)` do not.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X") | None) {
        return None;
    }
    // Field 22 of the whole line; `fields[0]` is field 3.
    fields.get(19)?.parse().ok()
}

/// Opens a pidfd for the recorded init `pid` if it is still the process that started at
/// `start_time`; `None` when it is gone (the record is stale).
pub fn open_guest_pidfd(pid: u32, start_time: u64) -> Result<Option<OwnedFd>> {
    if process_start_time(pid) != Some(start_time) {
        return Ok(None);
    }
    let pidfd = match namespaces::open_pidfd(pid) {
        Ok(fd) => fd,
        Err(e) if e.errno() == Some(libc::ESRCH) => return Ok(None),
        Err(e) => return Err(e),
    };
    // Checked again with the descriptor held: if the pid was reused in between, the start time
    // differs now, and the descriptor (which refers to the new process) is dropped.
    if process_start_time(pid) != Some(start_time) {
        return Ok(None);
    }
    Ok(Some(pidfd))
}

/// Sends `signal` to the process behind `pidfd`.
pub fn signal_pidfd(pidfd: BorrowedFd<'_>, signal: rustix::process::Signal) -> Result<()> {
    match rustix::process::pidfd_send_signal(pidfd, signal) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(Error::kernel("signal the guest's init", e)),
    }
}

/// Waits up to `timeout` for the process behind `pidfd` to end; whether it did.
pub fn wait_pidfd_exit(pidfd: BorrowedFd<'_>, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut poll = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&pidfd),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `poll` points at one live, initialised pollfd; the count says one.
        let ready = unsafe { libc::poll(&mut poll, 1, millis) };
        if ready > 0 {
            return Ok(true);
        }
        if ready == 0 {
            return Ok(false);
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINTR) {
            return Err(Error::kernel("wait for the guest's init", error));
        }
    }
}

/// Resource limits for a guest's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuestLimits {
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// Most processes (and threads) at once.
    pub pids: Option<u64>,
    /// CPU time in thousandths of one CPU (`500` is half a CPU), enforced as a CFS quota per
    /// period of [`CPU_PERIOD_MICROS`]: `cpu.max` in v2, `cpu.cfs_quota_us` in v1.
    pub cpu_millis: Option<u64>,
}

/// The CFS period a CPU limit is enforced over (the kernel's default, 100 ms).
pub const CPU_PERIOD_MICROS: u64 = 100_000;

/// A guest's cgroups: one in the v2 tree (freezing, killing, counting processes) and, on a hybrid
/// host, one in each v1 hierarchy that holds a controller the limits need. Paths are
/// `<hierarchy>/vserver/<guest>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestCgroup {
    /// Every directory made, v2 first.
    pub dirs: Vec<PathBuf>,
    /// The v2 directory, if there is a v2 tree.
    pub unified: Option<PathBuf>,
    /// Limits that could not be applied, with the reason (for the user).
    pub notes: Vec<String>,
}

fn write_file(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|e| Error::host("write", path, e))
}

impl GuestCgroup {
    /// Where guest `name`'s cgroups are (or would be) on this host.
    pub fn locate(support: &CgroupSupport, name: &str) -> GuestCgroup {
        let mut cgroup = GuestCgroup::default();
        if let Some(unified) = &support.unified {
            let dir = unified.join("vserver").join(name);
            cgroup.unified = Some(dir.clone());
            cgroup.dirs.push(dir);
        }
        for controller in ["memory", "pids", "cpu", "freezer"] {
            if support.unified_has(controller) {
                continue;
            }
            // Without a v2 tree, package operations freeze the guest through the v1 freezer.
            if controller == "freezer" && support.unified.is_some() {
                continue;
            }
            if let Some(hierarchy) = support.v1_hierarchy(controller) {
                cgroup.dirs.push(hierarchy.join("vserver").join(name));
            }
        }
        cgroup
    }

    /// Creates the directories and writes the limits. A limit whose controller exists nowhere is
    /// left out and noted in [`GuestCgroup::notes`].
    pub fn create(support: &CgroupSupport, name: &str, limits: GuestLimits) -> Result<GuestCgroup> {
        let mut cgroup = Self::locate(support, name);
        for dir in &cgroup.dirs {
            match fs::create_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::host("create cgroup", dir, e)),
            }
        }
        let limit_file = |controller: &str, v2: &str, v1: &str| -> Option<PathBuf> {
            if support.unified_has(controller) {
                return cgroup.unified.as_ref().map(|d| d.join(v2));
            }
            let hierarchy = support.v1_hierarchy(controller)?;
            Some(hierarchy.join("vserver").join(name).join(v1))
        };
        let mut notes = Vec::new();
        if let Some(bytes) = limits.memory {
            match limit_file("memory", "memory.max", "memory.limit_in_bytes") {
                Some(file) => write_file(&file, &bytes.to_string())?,
                None => notes.push("memory limit not applied: no memory controller".to_string()),
            }
        }
        if let Some(count) = limits.pids {
            match limit_file("pids", "pids.max", "pids.max") {
                Some(file) => write_file(&file, &count.to_string())?,
                None => notes.push("pids limit not applied: no pids controller".to_string()),
            }
        }
        if let Some(millis) = limits.cpu_millis {
            // At least 1 ms per period: the kernel refuses a smaller quota.
            let quota = (millis.saturating_mul(CPU_PERIOD_MICROS) / 1000).max(1000);
            if support.unified_has("cpu") {
                if let Some(dir) = &cgroup.unified {
                    write_file(
                        &dir.join("cpu.max"),
                        &format!("{quota} {CPU_PERIOD_MICROS}"),
                    )?;
                }
            } else if let Some(hierarchy) = support.v1_hierarchy("cpu") {
                let dir = hierarchy.join("vserver").join(name);
                write_file(
                    &dir.join("cpu.cfs_period_us"),
                    &CPU_PERIOD_MICROS.to_string(),
                )?;
                write_file(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
            } else {
                notes.push("cpu limit not applied: no cpu controller".to_string());
            }
        }
        cgroup.notes = notes;
        Ok(cgroup)
    }

    /// The processes in the guest's cgroup (v2 if present, else the first hierarchy).
    pub fn processes(&self) -> Vec<u32> {
        let Some(dir) = self.unified.as_ref().or(self.dirs.first()) else {
            return Vec::new();
        };
        fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Memory in use (bytes), where a memory controller counts it.
    pub fn memory_usage(&self) -> Option<u64> {
        self.dirs.iter().find_map(|dir| {
            ["memory.current", "memory.usage_in_bytes"]
                .iter()
                .find_map(|file| fs::read_to_string(dir.join(file)).ok())
                .and_then(|text| text.trim().parse().ok())
        })
    }

    /// Kills every process left (`cgroup.kill` in v2, else `SIGKILL` to each listed process in
    /// a loop), waits up to `timeout` for the cgroups to empty, and removes them.
    pub fn kill_and_remove(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        if let Some(dir) = &self.unified
            && dir.exists()
        {
            let _ = write_file(&dir.join("cgroup.kill"), "1");
        }
        for dir in &self.dirs {
            if !dir.exists() {
                continue;
            }
            loop {
                let procs: Vec<i32> = fs::read_to_string(dir.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect();
                if procs.is_empty() {
                    break;
                }
                for pid in procs {
                    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                }
                if Instant::now() >= deadline {
                    return Err(Error::host(
                        "empty cgroup",
                        dir,
                        io::Error::from_raw_os_error(libc::ETIMEDOUT),
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            // A cgroup whose last process just died can stay busy for a moment.
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(Error::host("remove cgroup", dir, e)),
                }
            }
        }
        Ok(())
    }
}

/// Like [`exec_in_guest`], but on a new pseudo-terminal: the command gets the terminal's slave as
/// its standard streams and controlling terminal (in a session of its own), and the caller's
/// `input` and `output` are relayed to and from the master until the command ends. When `input`
/// is a terminal it is put in raw mode for the duration (keys such as Ctrl-C then reach the
/// guest's shell) and its window size is copied. The guest never gets a descriptor of the
/// caller's own terminal. This is `vserver G enter`.
pub fn exec_in_guest_on_pty(
    pidfd: BorrowedFd<'_>,
    launch: &GuestLaunch,
    input: BorrowedFd<'_>,
    output: BorrowedFd<'_>,
) -> Result<i32> {
    let display = launch.display();
    ensure_single_threaded(&display)?;
    let root = GuestRoot::open(&launch.root)?;
    let (master, slave) = match open_guest_pty(pidfd)? {
        Some(pair) => pair,
        None => open_pty()?,
    };
    let raw = RawMode::enter(input);
    if let Some(size) = raw.window_size() {
        // SAFETY: TIOCSWINSZ reads one winsize from the live local; `master` is open.
        unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&master),
                libc::TIOCSWINSZ,
                &size,
            )
        };
    }
    let (report_read, report_write) = sys::pipe().map_err(|e| Error::kernel("create a pipe", e))?;
    // SAFETY: the process is single-threaded (checked above).
    let joiner = unsafe { sys::fork() }.map_err(|e| Error::kernel("fork the guest joiner", e))?;
    if joiner == 0 {
        drop(report_read);
        drop(master);
        let code = match join_and_run_on(pidfd, &root, launch, slave) {
            Ok(code) => code,
            Err(failure) => {
                report(&report_write, &failure);
                SETUP_FAILED
            }
        };
        sys::exit_immediately(code);
    }
    drop(report_write);
    drop(slave);
    let status = relay(&master, input, output, joiner);
    drop(raw);
    let status = status?;
    read_report(report_read, &display)?;
    Ok(exit_code(status))
}

/// The devpts file system's magic number (`statfs.f_type`).
const DEVPTS_SUPER_MAGIC: i64 = 0x1cd1;

/// A new pseudo-terminal pair from the running guest's own devpts (`/dev/pts/ptmx` in its
/// mount namespace), so that inside the guest the terminal has a name (`tty`, `ttyname(3)`
/// work) — a terminal of the host's devpts has none there. `None` when the guest has no
/// devpts at `/dev/pts`. The guest cannot substitute anything: the path is resolved in the
/// init's root without following symlinks, the file must lie on a devpts, and the slave is
/// reached through the master (`TIOCGPTPEER`), not by name.
fn open_guest_pty(pidfd: BorrowedFd<'_>) -> Result<Option<(OwnedFd, File)>> {
    let fdinfo = format!(
        "/proc/self/fdinfo/{}",
        std::os::fd::AsRawFd::as_raw_fd(&pidfd)
    );
    let info = fs::read_to_string(&fdinfo).map_err(|e| Error::host("read", &fdinfo, e))?;
    let Some(pid) = info
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|p| p.trim().parse::<i32>().ok())
        .filter(|p| *p > 0)
    else {
        return Ok(None);
    };
    let root = GuestRoot::open(format!("/proc/{pid}/root"))?;
    let Ok(pts) = root.resolve_dir_no_symlinks("open", Path::new("/dev/pts")) else {
        return Ok(None);
    };
    let master = match rustix::fs::openat(
        &pts,
        "ptmx",
        rustix::fs::OFlags::RDWR
            | rustix::fs::OFlags::NOCTTY
            | rustix::fs::OFlags::CLOEXEC
            | rustix::fs::OFlags::NOFOLLOW,
        rustix::fs::Mode::empty(),
    ) {
        Ok(master) => master,
        Err(_) => return Ok(None),
    };
    let on_devpts = rustix::fs::fstatfs(&master).is_ok_and(|fs| fs.f_type == DEVPTS_SUPER_MAGIC);
    if !on_devpts {
        return Ok(None);
    }
    let raw = std::os::fd::AsRawFd::as_raw_fd(&master);
    let mut unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from the live local; `raw` is the open master.
    if unsafe { libc::ioctl(raw, libc::TIOCSPTLCK, &mut unlock) } == -1 {
        return Err(Error::kernel(
            "unlock a pseudo-terminal of the guest",
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: TIOCGPTPEER takes open flags by value and returns a new descriptor; `raw` is the
    // open master.
    let slave = unsafe {
        libc::ioctl(
            raw,
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave == -1 {
        return Err(Error::kernel(
            "open a pseudo-terminal of the guest",
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: `slave` is a descriptor the kernel just returned and nothing else owns.
    let slave = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(slave) };
    Ok(Some((master, slave)))
}

/// A new pseudo-terminal pair from the host's `/dev/ptmx` (master, slave), both close-on-exec.
fn open_pty() -> Result<(OwnedFd, File)> {
    let master = rustix::fs::open(
        "/dev/ptmx",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| Error::host("open", "/dev/ptmx", e))?;
    let raw = std::os::fd::AsRawFd::as_raw_fd(&master);
    let mut unlock: libc::c_int = 0;
    let mut number: libc::c_uint = 0;
    // SAFETY: TIOCSPTLCK reads one int and TIOCGPTN writes one unsigned int, both live locals;
    // `raw` is the open master descriptor.
    let failed = unsafe {
        libc::ioctl(raw, libc::TIOCSPTLCK, &mut unlock) == -1
            || libc::ioctl(raw, libc::TIOCGPTN, &mut number) == -1
    };
    if failed {
        return Err(Error::host(
            "unlock a pseudo-terminal from",
            "/dev/ptmx",
            io::Error::last_os_error(),
        ));
    }
    let path = PathBuf::from(format!("/dev/pts/{number}"));
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&path)
        .map_err(|e| Error::host("open", &path, e))?;
    Ok((master, slave))
}

/// Raw mode on a terminal, undone on drop (nothing when `fd` is no terminal).
struct RawMode {
    fd: i32,
    saved: Option<libc::termios>,
}

impl RawMode {
    fn enter(fd: BorrowedFd<'_>) -> RawMode {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&fd);
        // SAFETY: an all-zero termios is a valid value of this plain C struct.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a live termios the call fills in; a non-terminal `fd` yields ENOTTY.
        if unsafe { libc::tcgetattr(fd, &mut saved) } == -1 {
            return RawMode { fd, saved: None };
        }
        let mut raw = saved;
        // SAFETY: `raw` is a live, initialised termios.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: `raw` is a live, initialised termios; `fd` is a terminal (tcgetattr succeeded).
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) };
        RawMode {
            fd,
            saved: Some(saved),
        }
    }

    fn window_size(&self) -> Option<libc::winsize> {
        self.saved?;
        // SAFETY: an all-zero winsize is a valid value of this plain C struct.
        let mut size: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes one winsize into the live local.
        (unsafe { libc::ioctl(self.fd, libc::TIOCGWINSZ, &mut size) } != -1).then_some(size)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            // SAFETY: `saved` is the terminal's own earlier state, a live termios.
            unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, saved) };
        }
    }
}

/// Copies `input` to the master and the master to `output` until `child` has ended and the
/// master has nothing more to say; returns the child's raw wait status.
fn relay(
    master: &OwnedFd,
    input: BorrowedFd<'_>,
    output: BorrowedFd<'_>,
    child: libc::pid_t,
) -> Result<i32> {
    let master_raw = std::os::fd::AsRawFd::as_raw_fd(master);
    let mut input_open = true;
    let mut buffer = [0u8; 8192];
    let mut exited: Option<i32> = None;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: master_raw,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if input_open {
                    std::os::fd::AsRawFd::as_raw_fd(&input)
                } else {
                    -1
                },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a live array of two initialised pollfd; the count says two.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, 50) };
        if ready == -1 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EINTR) {
                return Err(Error::kernel("relay a pseudo-terminal", error));
            }
            continue;
        }
        let mut master_done = false;
        if fds[0].revents != 0 {
            match rustix::io::read(master, &mut buffer) {
                Ok(0) | Err(_) => master_done = true,
                Ok(n) => write_all(output, &buffer[..n])?,
            }
        }
        if input_open && fds[1].revents != 0 {
            match rustix::io::read(input, &mut buffer) {
                Ok(0) | Err(_) => {
                    // End of a scripted input: an end-of-file character for the shell.
                    input_open = false;
                    let _ = write_all(master.as_fd(), b"\x04");
                }
                Ok(n) => write_all(master.as_fd(), &buffer[..n])?,
            }
        }
        if exited.is_none() {
            let mut status: libc::c_int = 0;
            // SAFETY: `status` is a live integer the kernel writes the wait status into.
            if unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) } == child {
                exited = Some(status);
            }
        }
        // Leftovers of the command may hold the slave open: the command's end is what counts,
        // once the master has been drained.
        if let Some(status) = exited
            && (master_done || ready == 0 || fds[0].revents == 0)
        {
            return Ok(status);
        }
    }
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> Result<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(Error::kernel("relay a pseudo-terminal", e)),
        }
    }
    Ok(())
}

fn join_and_run_on(
    pidfd: BorrowedFd<'_>,
    root: &GuestRoot,
    launch: &GuestLaunch,
    terminal: File,
) -> Step<i32> {
    step_io(
        "set the parent-death signal",
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL)),
    )?;
    join_cgroups(&launch.cgroups)?;
    step(
        "enter the guest",
        crate::guest_context::enter_guest_context(root, Some(pidfd), launch.capabilities),
    )?;
    cloexec_above_stderr()?;
    let mut command = command_for(launch)?;
    let out = step_io("duplicate the terminal", terminal.try_clone())?;
    let err = step_io("duplicate the terminal", terminal.try_clone())?;
    command.stdin(terminal).stdout(out).stderr(err);
    // SAFETY: the closure runs between fork and exec and only calls `setsid` and `ioctl`, which
    // are async-signal-safe system calls; it touches no memory shared with other threads.
    unsafe {
        command.pre_exec(|| {
            rustix::process::setsid()?;
            if libc::ioctl(0, libc::TIOCSCTTY, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    run_to_end(&mut command)
}

/// A signal by name (`TERM`, `SIGTERM`, `pwr`, `RTMIN+3`) or number (`15`), for a configured
/// stop signal; `None` for anything else. Real-time signals are counted from the C library's
/// `SIGRTMIN` (systemd halts on `RTMIN+3`).
pub fn signal_by_name(text: &str) -> Option<rustix::process::Signal> {
    let text = text.trim();
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let number = if let Ok(number) = name.parse::<i32>() {
        number
    } else if let Some(offset) = name.strip_prefix("RTMIN") {
        let offset = match offset.strip_prefix('+') {
            Some(n) => n.parse::<i32>().ok()?,
            None if offset.is_empty() => 0,
            None => return None,
        };
        libc::SIGRTMIN().checked_add(offset)?
    } else {
        match name {
            "HUP" => libc::SIGHUP,
            "INT" => libc::SIGINT,
            "QUIT" => libc::SIGQUIT,
            "KILL" => libc::SIGKILL,
            "USR1" => libc::SIGUSR1,
            "USR2" => libc::SIGUSR2,
            "TERM" => libc::SIGTERM,
            "PWR" => libc::SIGPWR,
            "WINCH" => libc::SIGWINCH,
            _ => return None,
        }
    };
    if let Some(signal) = rustix::process::Signal::from_named_raw(number) {
        return Some(signal);
    }
    if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&number) {
        // SAFETY: `number` is a real-time signal between the C library's SIGRTMIN and
        // SIGRTMAX: a valid signal number that the C library does not reserve for itself.
        return Some(unsafe { rustix::process::Signal::from_raw_unchecked(number) });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::signal_by_name;

    #[test]
    fn signal_names() {
        assert_eq!(
            signal_by_name("TERM").map(|s| s.as_raw()),
            Some(libc::SIGTERM)
        );
        assert_eq!(
            signal_by_name("sigpwr").map(|s| s.as_raw()),
            Some(libc::SIGPWR)
        );
        assert_eq!(signal_by_name("9").map(|s| s.as_raw()), Some(9));
        assert_eq!(
            signal_by_name("RTMIN+3").map(|s| s.as_raw()),
            Some(libc::SIGRTMIN() + 3)
        );
        assert_eq!(signal_by_name("NOPE"), None);
        assert_eq!(signal_by_name("0"), None);
        assert_eq!(signal_by_name("RTMIN+1000"), None);
    }
}
