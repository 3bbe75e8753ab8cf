//! Launching: a guest's init in namespaces of its own, a transient command in a stopped guest's
//! root, and a command joining a running guest (see the parent module).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;

use rustix::thread::UnshareFlags;

use super::pidfd::process_start_time;
use super::{
    Failure, GuestInit, GuestLaunch, InitSetup, SETUP_FAILED, Step, command_for,
    command_in_new_session, confine, ensure_single_threaded, exit_code, join_cgroups, join_guest,
    read_report, report, run_to_end, step, step_io,
};
use crate::error::{Error, Result};
use crate::mount::{self, FileSystem};
use crate::namespaces;
use crate::net;
use crate::safe_path::GuestRoot;
use crate::sys;

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
fn enter_guest_root(root_path: &Path, setup: &InitSetup) -> Step<()> {
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
        if setup.cgroup_fs {
            step(
                "mount the guest's /sys/fs/cgroup",
                mount::mount_into(&root, &FileSystem::Cgroup2, "/sys/fs/cgroup"),
            )?;
        }
    }
    mount::mount_minimal_dev_in_guest(&root).or_else(|(name, e)| step(name, Err(e)))?;
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
    if setup.run_tmpfs {
        mount_run(&root, setup)?;
    }
    for (path, mode) in &setup.tmpfs {
        if !step("inspect a tmpfs mount point", root.exists(path))? {
            step("create a tmpfs mount point", root.mkdir_all(path, 0o755))?;
        }
        step(
            "mount a tmpfs in the guest",
            mount::mount_into(
                &root,
                &FileSystem::Tmpfs {
                    mode: *mode,
                    size: None,
                },
                path,
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

/// Where [`InitSetup::notify_dir`] appears in the guest.
pub const NOTIFY_DIR_IN_GUEST: &str = "/run/host/notify";

/// A fresh `/run` with what `setup` puts there. The tmpfs is new, so nothing in it is the
/// guest's yet; paths are still resolved without following symlinks.
fn mount_run(root: &GuestRoot, setup: &InitSetup) -> Step<()> {
    if !step("inspect the guest's /run", root.exists("/run"))? {
        step("create the guest's /run", root.mkdir_all("/run", 0o755))?;
    }
    step(
        "mount the guest's /run",
        mount::mount_into(
            root,
            &FileSystem::Tmpfs {
                mode: 0o755,
                size: None,
            },
            "/run",
        ),
    )?;
    if let Some(dir) = &setup.notify_dir {
        step(
            "create the guest's notify directory",
            root.mkdir_all(NOTIFY_DIR_IN_GUEST, 0o755),
        )?;
        step(
            "bind the notify socket into the guest",
            mount::bind_into(root, dir, NOTIFY_DIR_IN_GUEST, crate::Access::ReadOnly),
        )?;
    }
    for (path, contents) in &setup.run_files {
        let path = Path::new("/run").join(path);
        if let Some(parent) = path.parent() {
            step("create a directory in /run", root.mkdir_all(parent, 0o755))?;
        }
        step(
            "write a file in /run",
            root.write_atomic(&path, contents, 0o644),
        )?;
    }
    Ok(())
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
        enter_guest_root(&launch.root, &launch.setup)?;
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
    enter_guest_root(&launch.root, &InitSetup::default())?;
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
    join_guest(pidfd, root, launch)?;
    run_to_end(&mut command_in_new_session(launch)?)
}
