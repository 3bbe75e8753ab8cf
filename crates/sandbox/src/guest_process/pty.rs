//! The pseudo-terminal of `vserver G enter`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use super::{
    GuestLaunch, SETUP_FAILED, Step, command_for, ensure_single_threaded, exit_code, join_guest,
    read_report, report, run_to_end, step_io,
};
use crate::error::{Error, Result};
use crate::safe_path::GuestRoot;
use crate::sys;

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
    join_guest(pidfd, root, launch)?;
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
