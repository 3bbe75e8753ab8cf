//! Package scripts on a running guest: a spawner that starts each script *inside* the guest —
//! its pid, ipc, uts, network and cgroup namespaces, its cgroup, a private copy of its mount
//! namespace — while the package manager itself stays out of the guest's sight.
//!
//! # Why the package manager does not join the guest
//!
//! The guest's root is real uid 0 and holds `CAP_SETUID`; every user namespace of ours is owned
//! by a uid, so the guest's root can always act as the owner of the sandbox's user namespace and
//! so holds every capability in it, `CAP_SYS_PTRACE` included. A process of the sandbox that the
//! guest can *name* (one in the guest's pid namespace) is therefore a process the guest can
//! ptrace, or reach through `/proc/PID/root`, `/proc/PID/fd` and `/proc/PID/mem` — rpm with the
//! database open and mounted, say. So the package manager, its sandbox init and everything of
//! the operation run in a pid namespace of the sandbox's own, which the guest cannot see into,
//! and only the scripts enter the guest.
//!
//! # How a script gets into the guest
//!
//! The guest's pid namespace is not a descendant of the sandbox's, so a child of rpm or dpkg
//! cannot join it. The spawner can: it is forked by the sandbox process (real root, initial pid
//! namespace) before that process leaves the host's namespaces. It opens the guest's init
//! through a pidfd checked against its recorded start time, joins the guest's mount, uts, ipc,
//! network, cgroup and (for its children) pid namespaces, takes a private copy of the guest's
//! mount namespace (`unshare(CLONE_NEWNS)`, everything made private: nothing it mounts reaches
//! the guest), mounts there what the operation's scripts must see (dpkg's database, for Debian
//! guests; nothing for rpm, whose scriptlets never see the database) and a fresh `/proc` of the
//! guest's pid namespace, and then serves requests.
//!
//! The package manager's side is [`exec_in_running_guest`]: called in the forked child that
//! would execute a script (from the rpm plugin's and dpkg's exec hooks), it sends the program,
//! its arguments, environment, working directory and standard streams to the spawner
//! (`SOCK_SEQPACKET`, descriptors as `SCM_RIGHTS`), waits for the script's wait status and ends
//! with it, so that rpm and dpkg see their script end as usual. If that child is killed (the
//! operation's time limit, the caller killed), the spawner sees the reply socket close and kills
//! the script's process group.
//!
//! # What the script is, and what the guest can do to it
//!
//! A script starts as a child of a short-lived attendant in the guest's pid namespace, in the
//! guest's cgroup, with no controlling terminal, in the initial user namespace (like the guest's
//! own processes), with the confined capabilities, `no_new_privs` and the write boundary (every
//! path of its view: the guest). Its view is the guest's (its `/run`, `/tmp`, sockets, `/proc`)
//! plus the operation's mounts: nothing of the host and, for rpm, no database.
//!
//! The guest can signal it (its own loss), but cannot ptrace it or open its `/proc/PID/root`,
//! `fd`, `mem`, `environ` or `ns/*`: the script keeps one more capability than the guest holds
//! (`CAP_WAKE_ALARM`, else `CAP_BLOCK_SUSPEND`, whichever the guest's init lacks), and in one
//! user namespace the kernel lets a process without `CAP_SYS_PTRACE` trace only processes whose
//! permitted capabilities are a subset of its own. The spawner and attendants hold every
//! capability and are not dumpable, so the same holds for them.

use std::ffi::{CStr, CString};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::thread::{CapabilitySet, UnshareFlags};

use crate::caps::{CapabilityProfile, restrict_capabilities, set_no_new_privs};
use crate::error::{Error, Result};
use crate::mount::{self, Access, FileSystem};
use crate::namespaces::{self, Namespace};
use crate::safe_path::GuestRoot;
use crate::sys;

/// Names, in the package manager's environment, the descriptor of the spawner's socket.
pub const SPAWNER_VAR: &str = "VSERVER_GUEST_SPAWNER";
/// The descriptor number the spawner's socket has in the program: fixed, so that apt can be told
/// to keep it open for dpkg (`APT::Keep-Fds`).
pub const SPAWNER_FD: RawFd = 87;

/// The first word of every request.
const MAGIC: u32 = 0x5653_5031;
/// Request flag: look the program up in `PATH` (`execvp`).
const SEARCH_PATH: u32 = 1;
/// At most this many arguments plus environment entries.
const MAX_STRINGS: usize = 1000;
/// At most this many bytes in one request.
const MAX_REQUEST: usize = 200 * 1024;

/// A bind the scripts see in their copy of the guest's mount namespace.
#[derive(Debug, Clone)]
pub(crate) struct ScriptBind {
    pub(crate) host: PathBuf,
    pub(crate) guest: PathBuf,
    pub(crate) access: Access,
}

/// What the spawner needs.
#[derive(Debug, Clone)]
pub(crate) struct SpawnerSpec {
    pub(crate) pid: u32,
    pub(crate) start_time: u64,
    pub(crate) binds: Vec<ScriptBind>,
    pub(crate) package_state: Option<PathBuf>,
    /// Descriptors of the sandbox process that the spawner must not keep (the channel to the
    /// caller, the guardian's pipe).
    pub(crate) close: Vec<RawFd>,
}

/// Why the spawner could not start.
pub(crate) struct SpawnerFailure {
    pub(crate) step: &'static str,
    pub(crate) error: Error,
}

fn fail<T>(step: &'static str, result: Result<T>) -> std::result::Result<T, SpawnerFailure> {
    result.map_err(|error| SpawnerFailure { step, error })
}

fn fail_io<T>(step: &'static str, result: io::Result<T>) -> std::result::Result<T, SpawnerFailure> {
    result.map_err(|e| SpawnerFailure {
        step,
        error: Error::kernel(step, e),
    })
}

/// Forks the spawner (call in the single-threaded sandbox process, before it leaves the host's
/// namespaces). Returns its pid and the client end of its socket. The spawner reports a failed
/// setup on `report` (one line, then it exits) and writes `ready` once it serves.
pub(crate) fn start(
    spec: &SpawnerSpec,
    report: OwnedFd,
) -> io::Result<(libc::pid_t, OwnedFd, OwnedFd)> {
    let (server, client) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    let (ready_read, ready_write) = sys::pipe()?;
    // SAFETY: the caller is the single-threaded sandbox process.
    let pid = unsafe { sys::fork() }?;
    if pid == 0 {
        drop(client);
        drop(ready_read);
        for fd in &spec.close {
            // SAFETY: closing descriptors inherited from the sandbox process that this process
            // never uses (their owners live in the parent; this child exits without unwinding).
            unsafe { libc::close(*fd) };
        }
        match set_up(spec) {
            Ok(setup) => {
                let _ = rustix::io::write(&ready_write, b"1");
                drop(ready_write);
                drop(report);
                let attendants = serve(&server, &setup);
                drop(server);
                outlive(&attendants);
                sys::exit_immediately(0);
            }
            Err(failure) => {
                let mut text = format!("{}: {}", failure.step, failure.error);
                let mut source = std::error::Error::source(&failure.error);
                while let Some(cause) = source {
                    text.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                let errno = failure.error.errno().unwrap_or(0);
                let _ = std::fs::File::from(report)
                    .write_all(format!("{errno}\n{}\n{text}", failure.step).as_bytes());
                sys::exit_immediately(125);
            }
        }
    }
    drop(server);
    drop(ready_write);
    Ok((pid, client, ready_read))
}

/// Waits for the spawner to be ready; its failure report otherwise (errno, step, text).
pub(crate) fn wait_ready(
    ready: OwnedFd,
    report: OwnedFd,
) -> std::result::Result<(), (i32, String, String)> {
    let mut byte = [0u8; 1];
    if matches!(rustix::io::read(&ready, &mut byte), Ok(1)) {
        return Ok(());
    }
    let mut text = String::new();
    let _ = std::fs::File::from(report).read_to_string(&mut text);
    let mut lines = text.splitn(3, '\n');
    let errno = lines.next().and_then(|l| l.parse().ok()).unwrap_or(0);
    let step = lines
        .next()
        .unwrap_or("start the guest spawner")
        .to_string();
    let message = lines
        .next()
        .unwrap_or("the spawner ended before it was ready")
        .to_string();
    Err((errno, step, message))
}

/// What the spawner prepared for each script.
struct Setup {
    /// The guest's cgroup directories (opened on the host's cgroup mounts).
    cgroups: Vec<OwnedFd>,
    /// What scripts keep: the confined set, plus one capability the guest lacks.
    capabilities: CapabilitySet,
}

fn set_up(spec: &SpawnerSpec) -> std::result::Result<Setup, SpawnerFailure> {
    // No parent-death signal: its attendants live in the guest's pid namespace, whose init
    // would inherit them (and, if it never reaps, keep them as zombies) were the spawner to end
    // before them. It ends when every holder of the client socket is gone (the program's
    // processes, killed with the operation), after the last attendant.
    for signal in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGPIPE,
    ] {
        sys::set_signal_ignored(signal, true);
    }
    // No controlling terminal: a script must not reach the caller's terminal as its own.
    let _ = rustix::process::setsid();
    // The host's (the guest's /dev is the guest's to replace).
    let null = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ok();
    let pidfd = fail(
        "open the guest's pidfd",
        crate::open_guest_pidfd(spec.pid, spec.start_time),
    )?
    .ok_or_else(|| SpawnerFailure {
        step: "open the guest's pidfd",
        error: Error::kernel(
            "open the guest's pidfd",
            io::Error::from_raw_os_error(libc::ESRCH),
        ),
    })?;
    let cgroups = fail("find the guest's cgroup", guest_cgroups(spec.pid))?;
    let guest_bounding = fail("read the guest's capabilities", bounding_set(spec.pid))?;
    // Read through the pid: it must still be the recorded init afterwards (the pidfd we hold
    // keeps the number from being reused while it lives, but not a zombie's).
    if crate::process_start_time(spec.pid) != Some(spec.start_time) {
        return Err(SpawnerFailure {
            step: "check the guest's init",
            error: Error::kernel(
                "check the guest's init",
                io::Error::from_raw_os_error(libc::ESRCH),
            ),
        });
    }
    let mut capabilities = CapabilityProfile::Confined.kept();
    if let Some(shield) = [CapabilitySet::WAKE_ALARM, CapabilitySet::BLOCK_SUSPEND]
        .into_iter()
        .find(|cap| !guest_bounding.contains(*cap))
    {
        capabilities |= shield;
    }
    // The sources of the scripts' mounts, cloned while the host's view is still ours.
    let package_state = match &spec.package_state {
        Some(dir) => Some(fail("open the package state", GuestRoot::open(dir))?),
        None => None,
    };
    let trees = mount::clone_database_trees(
        package_state.as_ref(),
        spec.binds
            .iter()
            .map(|bind| (bind.host.as_path(), bind.access)),
    )
    .map_err(|(step, error)| SpawnerFailure { step, error })?;
    drop(package_state);
    fail(
        "join the guest's namespaces",
        namespaces::join_namespaces(
            pidfd.as_fd(),
            &[
                Namespace::Mount,
                Namespace::Uts,
                Namespace::Ipc,
                Namespace::Net,
                Namespace::Cgroup,
                Namespace::Pid,
            ],
        ),
    )?;
    drop(pidfd);
    fail(
        "copy the guest's mount namespace",
        namespaces::unshare(UnshareFlags::NEWNS, "create a mount namespace"),
    )?;
    fail("make all mounts private", mount::make_all_private())?;
    let root = fail("open the guest's root", GuestRoot::open("/"))?;
    for (bind, tree) in spec.binds.iter().zip(&trees) {
        fail(
            "bind-mount into the guest",
            mount::attach_into(&root, tree, &bind.guest, &bind.host),
        )?;
    }
    if fail("inspect the guest's /proc", root.exists("/proc"))? {
        mount_guest_proc(&root)?;
    }
    drop(root);
    // Its children are processes of the guest's pid namespace, which the guest can name: it
    // must not reach them through /proc (they hold every capability, too).
    fail_io("make the spawner not dumpable", sys::set_not_dumpable())?;
    // Its standard streams are the caller's (pipes the caller reads to their end): the spawner
    // must not hold them; each script gets its own from its request.
    if let Some(null) = &null {
        for target in 0..3 {
            // SAFETY: dup2 onto the standard descriptors of this single-threaded process.
            unsafe { libc::dup2(null.as_raw_fd(), target) };
        }
    }
    // Attendants are reaped by the kernel.
    // SAFETY: setting SIGCHLD's disposition to SIG_IGN in this single-threaded process.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    Ok(Setup {
        cgroups,
        capabilities,
    })
}

/// Mounts a fresh proc of the guest's pid namespace on the copy's `/proc`: a proc instance
/// belongs to the pid namespace of the process that mounts it, so a child (the first process of
/// ours in the guest's pid namespace) does it.
fn mount_guest_proc(root: &GuestRoot) -> std::result::Result<(), SpawnerFailure> {
    // SAFETY: the spawner is single-threaded (a fork of the sandbox process).
    let child = fail_io("fork to mount /proc", unsafe { sys::fork() })?;
    if child == 0 {
        let _ = sys::set_not_dumpable();
        let code = match mount::mount_into(root, &FileSystem::Proc, "/proc") {
            Ok(_) => 0,
            Err(_) => 1,
        };
        sys::exit_immediately(code);
    }
    let (_, status) = fail_io("wait for the /proc mount", sys::waitpid(child))?;
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(SpawnerFailure {
            step: "mount the guest's /proc",
            error: Error::kernel(
                "mount the guest's /proc",
                io::Error::from_raw_os_error(libc::EIO),
            ),
        });
    }
    Ok(())
}

/// The cgroup v2 directory of the process `pid` (its init): from `/proc/PID/cgroup`, relative to
/// our cgroup namespace, below the host's v2 mount. Without a v2 tree: none.
fn guest_cgroups(pid: u32) -> Result<Vec<OwnedFd>> {
    let support = crate::CgroupSupport::detect()?;
    let Some(unified) = support.unified else {
        return Ok(Vec::new());
    };
    let path = format!("/proc/{pid}/cgroup");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::host("read", &path, e))?;
    let mut dirs = Vec::new();
    for line in text.lines() {
        let Some(relative) = line.strip_prefix("0::/") else {
            continue;
        };
        let dir = unified.join(relative);
        // Kernel-written names; still, nothing but plain components below the mount.
        if !Path::new(relative)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            return Err(Error::host(
                "use the guest's cgroup",
                &dir,
                io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        let fd = rustix::fs::open(
            &dir,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| Error::host("open the guest's cgroup", &dir, e))?;
        dirs.push(fd);
    }
    Ok(dirs)
}

/// The capability bounding set of process `pid` (`CapBnd` of `/proc/PID/status`).
fn bounding_set(pid: u32) -> Result<CapabilitySet> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::host("read", &path, e))?;
    let bits = text
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or_else(|| Error::host("read", &path, io::Error::from_raw_os_error(libc::EINVAL)))?;
    Ok(CapabilitySet::from_bits_retain(bits))
}

/// A request as received.
struct Request {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
    search_path: bool,
    /// Standard input, output, error, and the reply socket.
    fds: Vec<OwnedFd>,
}

/// The spawner's loop: one attendant per request, until every client is gone; returns the
/// attendants' pids.
fn serve(socket: &OwnedFd, setup: &Setup) -> Vec<libc::pid_t> {
    let mut buffer = vec![0u8; MAX_REQUEST];
    let mut attendants = Vec::new();
    loop {
        let request = match receive(socket, &mut buffer) {
            Ok(Some(request)) => request,
            // A malformed request (its descriptors are closed): the client gets EOF.
            Ok(None) => continue,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            // EOF: the operation is over.
            Err(_) => return attendants,
        };
        // SAFETY: the spawner is single-threaded.
        match unsafe { sys::fork() } {
            Ok(0) => attend(request, setup),
            Ok(pid) => {
                attendants.retain(|&p| {
                    // SAFETY: signal 0 only checks that the process exists.
                    unsafe { libc::kill(p, 0) == 0 }
                });
                attendants.push(pid);
                drop(request);
            }
            Err(_) => drop(request),
        }
    }
}

/// Once the operation is over: waits until every attendant has ended (each kills and reaps its
/// script when its client is gone), waking any that a script stopped; after 10 s, kills them.
fn outlive(attendants: &[libc::pid_t]) {
    // From now on attendants that end stay zombies until reaped here (before, the kernel
    // reaped them).
    // SAFETY: restoring SIGCHLD's default disposition in this single-threaded process.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut status = 0;
        let reaped = loop {
            // SAFETY: a non-blocking wait for our own children, into a local.
            let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if r <= 0 {
                break r;
            }
        };
        if reaped < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
            return;
        }
        let late = std::time::Instant::now() > deadline;
        for &pid in attendants {
            // SAFETY: signalling our own children (a pid stays ours until we reap it).
            unsafe {
                libc::kill(pid, if late { libc::SIGKILL } else { libc::SIGCONT });
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn receive(socket: &OwnedFd, buffer: &mut [u8]) -> io::Result<Option<Request>> {
    let mut space = [0u8; 128];
    let mut iov = [libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: buffer.len(),
    }];
    // SAFETY: a zeroed msghdr is a valid empty one; the pointers set below live across the call.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = iov.as_mut_ptr();
    header.msg_iovlen = 1;
    header.msg_control = space.as_mut_ptr().cast();
    header.msg_controllen = space.len();
    // SAFETY: recvmsg on our socket with buffers that outlive the call.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut header, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n == 0 {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
    }
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote into `space`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&header, cmsg);
        }
    }
    let truncated = header.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0;
    if truncated || fds.len() != 4 {
        return Ok(None);
    }
    Ok(
        parse(&buffer[..n as usize]).map(|(program, argv, envp, cwd, search_path)| Request {
            program,
            argv,
            envp,
            cwd,
            search_path,
            fds,
        }),
    )
}

type Parsed = (CString, Vec<CString>, Vec<CString>, CString, bool);

/// `[magic, flags, argc, envc]` (u32, native order), then NUL-terminated: program, arguments,
/// environment, working directory.
fn parse(data: &[u8]) -> Option<Parsed> {
    let word = |i: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(
            data.get(i * 4..i * 4 + 4)?.try_into().ok()?,
        ))
    };
    if word(0)? != MAGIC {
        return None;
    }
    let flags = word(1)?;
    let argc = word(2)? as usize;
    let envc = word(3)? as usize;
    if argc + envc > MAX_STRINGS {
        return None;
    }
    let mut strings = data.get(16..)?.split_inclusive(|&b| b == 0);
    let mut next = || -> Option<CString> {
        CStr::from_bytes_with_nul(strings.next()?)
            .ok()
            .map(CStr::to_owned)
    };
    let program = next()?;
    let argv = (0..argc).map(|_| next()).collect::<Option<Vec<_>>>()?;
    let envp = (0..envc).map(|_| next()).collect::<Option<Vec<_>>>()?;
    let cwd = next()?;
    if program.as_bytes().is_empty() || !cwd.as_bytes().starts_with(b"/") {
        return None;
    }
    Some((program, argv, envp, cwd, flags & SEARCH_PATH != 0))
}

/// An attendant: starts the script, then waits for it or for the client to go away (then kills
/// the script's process group); sends the wait status back.
fn attend(request: Request, setup: &Setup) -> ! {
    // No parent-death signal either: it ends only after its script, which it reaps (see the
    // spawner's), once the script ends or the client goes away. A subreaper: what the script
    // leaves behind when it is killed dies here and is reaped here, not under the guest's init
    // (which may never reap). What keeps running (a daemon a script started) goes on to the
    // guest's init when the attendant ends.
    let _ = sys::set_child_subreaper();
    // SAFETY: the attendant is single-threaded (a fork of the spawner).
    let script = match unsafe { sys::fork() } {
        Ok(0) => run_script(&request, setup),
        Ok(pid) => pid,
        Err(_) => sys::exit_immediately(1),
    };
    // Only the reply socket stays open here.
    let mut fds = request.fds;
    let Some(reply) = fds.pop() else {
        sys::exit_immediately(1)
    };
    drop(fds);
    let reply = &reply;
    let _ = rustix::process::setpgid(
        rustix::process::Pid::from_raw(script),
        rustix::process::Pid::from_raw(script),
    );
    // SAFETY: restoring SIGCHLD's default so that waitpid sees the script.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    let pidfd = namespaces::open_pidfd(script as u32).ok();
    loop {
        let mut polls = vec![libc::pollfd {
            fd: reply.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(fd) = &pidfd {
            polls.push(libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: poll on descriptors this process owns, with a correctly sized array.
        let ready = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, 500) };
        if ready < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
        if polls[0].revents != 0 {
            // The client went away (killed): so does the script, with its process group.
            // SAFETY: signalling the script's process group, which this process created.
            unsafe { libc::kill(-script, libc::SIGKILL) };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            loop {
                reap_available();
                // SAFETY: signal 0 only asks whether the group still has members.
                let gone = unsafe { libc::kill(-script, 0) } != 0;
                if gone || std::time::Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            reap_available();
            sys::exit_immediately(0);
        }
        let mut status = 0;
        // SAFETY: non-blocking wait for our own child, into a local.
        let done = unsafe { libc::waitpid(script, &mut status, libc::WNOHANG) };
        if done == script {
            let _ = rustix::io::write(reply, &status.to_ne_bytes());
            reap_available();
            sys::exit_immediately(0);
        }
        if done < 0 {
            break;
        }
    }
    sys::exit_immediately(1)
}

/// Reaps every child that has ended, without waiting.
fn reap_available() {
    let mut status = 0;
    // SAFETY: non-blocking waits for our own children, into a local.
    while unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } > 0 {}
}

/// The script's process: the guest's cgroup, standard streams, confinement, exec.
fn run_script(request: &Request, setup: &Setup) -> ! {
    let complain = |what: &str, error: io::Error| -> ! {
        let _ = writeln!(
            io::stderr(),
            "vserver: cannot start a package script in the running guest: {what}: {error}"
        );
        sys::exit_immediately(126)
    };
    let _ = rustix::process::setpgid(None, None);
    // Dies with its attendant, should the guest kill that; what it starts does not.
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    for (target, fd) in request.fds[..3].iter().enumerate() {
        // SAFETY: dup2 onto the standard descriptors; the sources stay open until exec.
        if unsafe { libc::dup2(fd.as_raw_fd(), target as RawFd) } < 0 {
            complain("set up standard streams", io::Error::last_os_error());
        }
    }
    for dir in &setup.cgroups {
        let joined = rustix::fs::openat(
            dir,
            "cgroup.procs",
            rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(io::Error::from)
        .and_then(|fd| std::fs::File::from(fd).write_all(b"0"));
        if let Err(e) = joined {
            complain("join the guest's cgroup", e);
        }
    }
    // SAFETY: marks every descriptor above standard error close-on-exec; closes nothing.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if let Err(e) = rustix::process::chdir(request.cwd.as_c_str()) {
        complain("change directory", e.into());
    }
    let _ = sys::unblock_all_signals();
    for signal in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGPIPE,
        libc::SIGCHLD,
    ] {
        sys::set_signal_ignored(signal, false);
    }
    if let Err(e) = restrict_capabilities(setup.capabilities) {
        complain("drop capabilities", e);
    }
    if let Err(e) = set_no_new_privs() {
        complain("set no_new_privs", e);
    }
    if crate::landlock::write_boundary_available() {
        let dirs = [PathBuf::from("/")];
        if let Err(e) = crate::landlock::restrict_writes_beneath(&dirs) {
            complain("set the write boundary", e);
        }
    } else if !crate::landlock::opted_out() {
        complain(
            "set the write boundary",
            io::Error::from_raw_os_error(libc::EOPNOTSUPP),
        );
    }
    let pointers = |strings: &[CString]| -> Vec<*const libc::c_char> {
        strings
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let argv = pointers(&request.argv);
    let envp = pointers(&request.envp);
    // SAFETY: exec with NUL-terminated strings and null-terminated arrays that live until the
    // call (which only returns on failure).
    unsafe {
        if request.search_path {
            libc::execvpe(request.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
        } else {
            libc::execve(request.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
        }
    }
    let error = io::Error::last_os_error();
    let _ = writeln!(
        io::stderr(),
        "vserver: cannot execute `{}` in the running guest: {error}",
        Path::new(std::ffi::OsStr::from_bytes(request.program.as_bytes())).display()
    );
    sys::exit_immediately(if error.raw_os_error() == Some(libc::ENOENT) {
        127
    } else {
        126
    })
}

// ------------------------------------------------------------------------------------------
// The client side: in a forked child of a (possibly multi-threaded) package manager. System
// calls only, no allocation.
// ------------------------------------------------------------------------------------------

/// The spawner's descriptor from [`SPAWNER_VAR`], read without allocating; `None` when the
/// variable is not set (the operation does not act on a running guest).
pub fn spawner_from_environment() -> Option<RawFd> {
    // SAFETY: getenv with a NUL-terminated name; the string lives in the environment.
    let value = unsafe { libc::getenv(c"VSERVER_GUEST_SPAWNER".as_ptr()) };
    if value.is_null() {
        return None;
    }
    // SAFETY: getenv returned a NUL-terminated string.
    let digits = unsafe { CStr::from_ptr(value) }.to_bytes();
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0, |n: RawFd, d| n * 10 + RawFd::from(d - b'0')),
    )
}

/// Runs the script `program` (`argv`, `envp`: null-terminated arrays) in the running guest
/// through the spawner at `spawner`, waits for it and ends the calling process with its status
/// (exit code, or the same signal). Returns only if the request could not be made; the caller
/// must then not run the script itself.
///
/// # Safety
///
/// `program` must be a NUL-terminated string, `argv` and `envp` null-terminated arrays of them
/// (or null for an empty array), valid for the duration of the call.
pub unsafe fn exec_in_running_guest(
    spawner: RawFd,
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    search_path: bool,
) -> io::Error {
    const MAX_IOV: usize = MAX_STRINGS + 8;
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_IOV];
    let mut cwd = [0u8; 4096];
    // SAFETY: getcwd into a stack buffer of the given size.
    if unsafe { libc::getcwd(cwd.as_mut_ptr().cast(), cwd.len()) }.is_null() {
        return io::Error::last_os_error();
    }
    let count = |array: *const *const libc::c_char| -> usize {
        let mut n = 0;
        if !array.is_null() {
            // SAFETY: the caller promises a null-terminated array.
            while unsafe { !(*array.add(n)).is_null() } {
                n += 1;
            }
        }
        n
    };
    let (argc, envc) = (count(argv), count(envp));
    if argc + envc > MAX_STRINGS || program.is_null() {
        return io::Error::from_raw_os_error(libc::E2BIG);
    }
    let header: [u32; 4] = [
        MAGIC,
        if search_path { SEARCH_PATH } else { 0 },
        argc as u32,
        envc as u32,
    ];
    let string = |s: *const libc::c_char| libc::iovec {
        iov_base: s as *mut libc::c_void,
        // SAFETY: a NUL-terminated string (the caller's promise, or our own buffer).
        iov_len: unsafe { libc::strlen(s) } + 1,
    };
    let mut n = 0;
    iov[n] = libc::iovec {
        iov_base: header.as_ptr() as *mut libc::c_void,
        iov_len: std::mem::size_of_val(&header),
    };
    n += 1;
    iov[n] = string(program);
    n += 1;
    for i in 0..argc {
        // SAFETY: within the counted part of the caller's array.
        iov[n] = string(unsafe { *argv.add(i) });
        n += 1;
    }
    for i in 0..envc {
        // SAFETY: as above.
        iov[n] = string(unsafe { *envp.add(i) });
        n += 1;
    }
    iov[n] = string(cwd.as_ptr().cast());
    n += 1;
    let mut pair = [0 as RawFd; 2];
    // SAFETY: socketpair into a two-element array.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        )
    } < 0
    {
        return io::Error::last_os_error();
    }
    let fds: [RawFd; 4] = [0, 1, 2, pair[1]];
    // Room for one SCM_RIGHTS message of four descriptors, aligned for cmsghdr.
    let mut space = [0u64; 8];
    // SAFETY: a zeroed msghdr is a valid empty one; every pointer set lives across sendmsg.
    let sent = unsafe {
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_iov = iov.as_mut_ptr();
        message.msg_iovlen = n;
        message.msg_control = space.as_mut_ptr().cast();
        message.msg_controllen = libc::CMSG_SPACE(std::mem::size_of_val(&fds) as u32) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&message);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(&fds) as u32) as usize;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast::<RawFd>(), 4);
        libc::sendmsg(spawner, &message, libc::MSG_NOSIGNAL)
    };
    // SAFETY: closing the end we handed over, and (below) our end once it is read.
    unsafe { libc::close(pair[1]) };
    if sent < 0 {
        let error = io::Error::last_os_error();
        // SAFETY: as above.
        unsafe { libc::close(pair[0]) };
        return error;
    }
    let mut status = [0u8; 4];
    let got = loop {
        // SAFETY: reading into a four-byte stack buffer.
        let r = unsafe { libc::read(pair[0], status.as_mut_ptr().cast(), 4) };
        if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        break r;
    };
    if got != 4 {
        // The spawner or the attendant went away: the script was killed with it.
        sys::exit_immediately(126);
    }
    let status = i32::from_ne_bytes(status);
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        // SAFETY: resetting one signal's disposition and raising it in this process, which
        // ends here either way.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::kill(libc::getpid(), signal);
        }
        sys::exit_immediately(128 + signal);
    }
    sys::exit_immediately(libc::WEXITSTATUS(status))
}

/// Lets `fd` (the spawner's socket) survive exec in the program.
pub(crate) fn hand_to_program(client: &OwnedFd) -> io::Result<()> {
    if client.as_raw_fd() != SPAWNER_FD {
        // SAFETY: dup2 onto a fixed number; whatever was there is replaced, as intended (the
        // program's process has nothing open there that it needs).
        if unsafe { libc::dup2(client.as_raw_fd(), SPAWNER_FD) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    sys::clear_cloexec(SPAWNER_FD)
}
