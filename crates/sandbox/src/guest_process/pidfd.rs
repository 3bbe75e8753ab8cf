//! The identity of a running init: its pid plus start time, a verified pidfd, signals.

use std::fs;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::namespaces;

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

/// What ended a [`wait_pidfd_or_readable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wakeup {
    /// The process ended.
    Exited,
    /// The other descriptor has something to read.
    Readable,
    /// Neither, within the time given.
    TimedOut,
}

/// Waits up to `timeout` for the process behind `pidfd` to end or `other` to become readable.
pub fn wait_pidfd_or_readable(
    pidfd: BorrowedFd<'_>,
    other: Option<BorrowedFd<'_>>,
    timeout: Duration,
) -> Result<Wakeup> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [
            libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(&pidfd),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: other.map_or(-1, |fd| std::os::fd::AsRawFd::as_raw_fd(&fd)),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let millis = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fds` is a live array of two initialised pollfd (a negative fd is ignored);
        // the count says two.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, millis) };
        if ready > 0 {
            if fds[0].revents != 0 {
                return Ok(Wakeup::Exited);
            }
            return Ok(Wakeup::Readable);
        }
        if ready == 0 {
            return Ok(Wakeup::TimedOut);
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINTR) {
            return Err(Error::kernel("wait for the guest's init", error));
        }
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
