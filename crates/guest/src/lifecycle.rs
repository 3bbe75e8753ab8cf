//! Guest lifecycle: `vserver G start|stop|status|exec|enter|delete` and `vserver --list`.
//!
//! A running guest is its init process (pid 1 of the guest's own pid namespace, in new mount,
//! uts, ipc, cgroup and — unless `net = "host"` — network namespaces, pivoted into the guest root
//! with proc and sysfs read-only, a minimal `/dev` with a private devpts, and a tmpfs `/tmp`; see
//! `vserver_sandbox::start_guest_init`) plus its cgroups (`<hierarchy>/vserver/G`, with the
//! memory, pids and cpu limits of `[limits]`). What runs as init, the network, the limits and
//! the stop sequence come from `config.toml` (module `runtime`). `start` records the guest in the
//! run directory (`/run/vservers/G.toml`, `VSERVER_RUNDIR`) as pid *and* start time: a record
//! whose process is gone, or whose pid now belongs to another process, is stale and treated as
//! "stopped", never signalled. Every later operation reaches the init through a pidfd opened and
//! then re-verified against that record.
//!
//! Host-side package operations find a running guest here too ([`running_guest`]): they freeze
//! it for the duration and run the package manager and its scripts in its pid, uts and ipc
//! namespaces.
//!
//! What runs as init, and what its view needs beyond the basics (systemd's container interface,
//! a `/run` for sysv), is decided by module `init`; `start` returns only once that init is up
//! (systemd's `READY=1` on a host socket bound into the guest, sysv's rc finished, any other
//! still running a moment later), within `start_timeout`. An init that ends first, or is not up
//! in time, is a failed start: everything is taken down and the error carries the last lines of
//! its log. A running guest's record ([`running_record`]) names its init's kind and the cgroups a
//! process joins to become part of it ([`RunRecord::joined_cgroups`]).
//!
//! The init's standard output and error go to `/run/vservers/G.log`, started afresh by every
//! start.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
pub use vserver_sandbox::GuestLimits;
use vserver_sandbox::{
    CapabilityProfile, CgroupSupport, GuestCgroup, GuestLaunch, GuestNetwork, InitSetup,
};

use crate::config::{GuestConfig, PackageManagement, list_guests, load_guest};
use crate::init::{InitKind, NOTIFY_SOCKET_NAME, Readiness};
use crate::roots::HostRoots;
use crate::runtime::{DEFAULT_START_TIMEOUT, DEFAULT_STOP_TIMEOUT, NetConfig, parse_signal};

/// How long `stop` waits for processes to die after `SIGKILL`, and cgroups to empty.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong in a lifecycle operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// Loading the guest's configuration failed (unknown guest, bad file…).
    #[error(transparent)]
    Guest(#[from] crate::Error),
    /// A kernel operation on the guest failed.
    #[error("guest `{guest}`: cannot {op}")]
    Sandbox {
        /// The guest.
        guest: String,
        /// What we tried.
        op: &'static str,
        /// Why it failed.
        #[source]
        source: vserver_sandbox::Error,
    },
    /// A host file (run record, log) could not be read or written.
    #[error("cannot {op} `{path}`")]
    Io {
        /// What we tried.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The guest is not running (or its record is stale).
    #[error("guest `{guest}` is not running")]
    NotRunning {
        /// The guest.
        guest: String,
    },
    /// The guest is already running.
    #[error("guest `{guest}` is already running (init pid {pid})")]
    AlreadyRunning {
        /// The guest.
        guest: String,
        /// Its init's host pid.
        pid: u32,
    },
    /// A run record cannot be parsed.
    #[error("cannot parse the run record `{path}`")]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        #[source]
        source: toml::de::Error,
    },
    /// The guest's cgroup holds processes although no running guest is recorded.
    #[error(
        "guest `{guest}`: cgroup `{dir}` still holds processes but no running guest is recorded"
    )]
    CgroupInUse {
        /// The guest.
        guest: String,
        /// The cgroup directory.
        dir: PathBuf,
    },
    /// A setting of the guest's configuration cannot be used.
    #[error("guest `{guest}`: bad setting `{setting}`: {problem}")]
    BadSetting {
        /// The guest.
        guest: String,
        /// The setting.
        setting: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The init ended, or was not up in time, during `start`; everything started was taken down.
    #[error("guest `{guest}`: {problem}; nothing was left running")]
    StartFailed {
        /// The guest.
        guest: String,
        /// What happened.
        problem: String,
        /// The last lines of the init's log.
        log_tail: String,
    },
    /// The guest's root is not a path vserver would delete.
    #[error("guest `{guest}`: refusing to delete root `{root}`")]
    UnsafeRoot {
        /// The guest.
        guest: String,
        /// The configured root.
        root: PathBuf,
    },
}

impl LifecycleError {
    /// A hint for the user, when there is an obvious next step.
    pub fn hint(&self) -> Option<String> {
        match self {
            LifecycleError::NotRunning { guest } => Some(format!(
                "start it with `vserver {guest} start`, or run a command in a stopped guest with `vserver {guest} exec --transient CMD…`"
            )),
            LifecycleError::AlreadyRunning { guest, .. } => {
                Some(format!("stop it first with `vserver {guest} stop`"))
            }
            LifecycleError::StartFailed { log_tail, .. } if !log_tail.is_empty() => Some(format!(
                "the last lines of its log:\n{}",
                log_tail.trim_end()
            )),
            _ => None,
        }
    }
}

/// Shorthand for lifecycle results.
pub type LifecycleResult<T> = std::result::Result<T, LifecycleError>;

fn sandbox_err(
    guest: &str,
    op: &'static str,
) -> impl FnOnce(vserver_sandbox::Error) -> LifecycleError {
    let guest = guest.to_string();
    move |source| LifecycleError::Sandbox { guest, op, source }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LifecycleError {
    let path = path.to_path_buf();
    move |source| LifecycleError::Io { op, path, source }
}

/// The run directory: `VSERVER_RUNDIR` if set, else `/run/vservers`.
pub fn default_run_dir() -> PathBuf {
    std::env::var_os("VSERVER_RUNDIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/vservers"))
}

/// A running guest, as recorded by `start` in `RUNDIR/G.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The guest.
    pub guest: String,
    /// Its init's host pid.
    pub pid: u32,
    /// The init's start time (`/proc/PID/stat` field 22), which makes the pid unambiguous.
    pub start_time: u64,
    /// When it started (seconds since the epoch).
    pub started_at: u64,
    /// The guest root it runs in.
    pub root: PathBuf,
    /// Its cgroup directories (the v2 one first, when there is a v2 tree).
    pub cgroups: Vec<PathBuf>,
    /// The v2 cgroup directory.
    pub unified_cgroup: Option<PathBuf>,
    /// The kind of init it runs (absent in records of older versions: plain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<InitKind>,
}

impl RunRecord {
    fn path(run_dir: &Path, guest: &str) -> PathBuf {
        run_dir.join(format!("{guest}.toml"))
    }

    fn load(run_dir: &Path, guest: &str) -> LifecycleResult<Option<RunRecord>> {
        let path = Self::path(run_dir, guest);
        let text = match fs_err::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        toml::from_str(&text)
            .map(Some)
            .map_err(|source| LifecycleError::BadRecord { path, source })
    }

    fn save(&self, run_dir: &Path) -> LifecycleResult<()> {
        let path = Self::path(run_dir, &self.guest);
        let text = toml::to_string(self).map_err(|e| {
            io_err("serialise", &path)(io::Error::new(io::ErrorKind::InvalidData, e))
        })?;
        let temp = run_dir.join(format!(".{}.toml.new", self.guest));
        fs_err::write(&temp, text).map_err(io_err("write", &temp))?;
        fs_err::rename(&temp, &path).map_err(io_err("rename into", &path))
    }

    fn cgroup(&self) -> GuestCgroup {
        GuestCgroup {
            dirs: self.cgroups.clone(),
            unified: self.unified_cgroup.clone(),
            notes: Vec::new(),
        }
    }

    /// The cgroup directories a process joins to become part of this guest: for an init that
    /// manages its own cgroups (systemd), the cgroup delegated to it, so that the process lands
    /// inside the guest's cgroup namespace root and not above it.
    pub fn joined_cgroups(&self) -> Vec<PathBuf> {
        let cgroup = self.cgroup();
        match self.init.map(|kind| kind.needs().delegate_cgroup) {
            Some(true) => cgroup.delegated_dirs(),
            _ => cgroup.dirs,
        }
    }

    fn launch(&self, hostname: String, command: Vec<OsString>) -> GuestLaunch {
        GuestLaunch {
            root: self.root.clone(),
            hostname,
            command,
            env: vec![("container".into(), "vserver".into())],
            cgroups: self.joined_cgroups(),
            log: None,
            capabilities: CapabilityProfile::Confined,
            // Unused: a joining command gets the running guest's network namespace.
            network: GuestNetwork::Host,
            setup: InitSetup::default(),
        }
    }
}

/// A verified running guest: its record and a pidfd for its init.
struct Running {
    record: RunRecord,
    pidfd: std::os::fd::OwnedFd,
}

/// The record of `guest` if its init still runs; a stale record is left for the caller.
fn find_running(
    run_dir: &Path,
    guest: &str,
) -> LifecycleResult<(Option<RunRecord>, Option<Running>)> {
    let Some(record) = RunRecord::load(run_dir, guest)? else {
        return Ok((None, None));
    };
    let pidfd = vserver_sandbox::open_guest_pidfd(record.pid, record.start_time)
        .map_err(sandbox_err(guest, "open the init's pidfd"))?;
    Ok(match pidfd {
        Some(pidfd) => (None, Some(Running { record, pidfd })),
        None => (Some(record), None),
    })
}

/// Guest `name` as a host-side package operation works on it, if it is running: its init (pid
/// and start time, re-verified by the sandbox through a pidfd) and the freezer of its cgroup.
/// `vrpm`, `vyum`, `vapt-get` and `vdpkg` start its package scripts inside it, or with
/// `--freeze` freeze it for the duration ([`vserver_sandbox::SandboxCommand::running_guest`]).
pub fn running_guest(
    run_dir: &Path,
    name: &str,
) -> LifecycleResult<Option<vserver_sandbox::RunningGuest>> {
    let (_, running) = find_running(run_dir, name)?;
    Ok(running.map(|running| vserver_sandbox::RunningGuest {
        pid: running.record.pid,
        start_time: running.record.start_time,
        // The v2 directory's `cgroup.freeze`, else a v1 freezer hierarchy's `freezer.state`.
        freezer: running
            .record
            .unified_cgroup
            .iter()
            .chain(&running.record.cgroups)
            .find_map(|dir| vserver_sandbox::Freezer::for_cgroup(dir).ok()),
    }))
}

/// The run record of guest `name` if it is running (its init verified through a pidfd, as
/// [`running_guest`] does): the init's pid and start time, its kind, and its cgroups
/// ([`RunRecord::joined_cgroups`] are those a process joins to become part of the guest).
pub fn running_record(run_dir: &Path, name: &str) -> LifecycleResult<Option<RunRecord>> {
    let (_, running) = find_running(run_dir, name)?;
    Ok(running.map(|running| running.record))
}

/// [`running_guest`] for the back ends: in the default run directory, as a crate error.
pub(crate) fn running_guest_for_backend(
    name: &str,
) -> crate::Result<Option<vserver_sandbox::RunningGuest>> {
    running_guest(&default_run_dir(), name).map_err(|error| crate::Error::BadRequest {
        guest: name.to_string(),
        problem: format!("cannot tell whether it is running: {error}"),
    })
}

/// Removes what a guest that is gone left behind: its cgroups and its record.
fn clean_up(run_dir: &Path, record: &RunRecord) -> LifecycleResult<()> {
    record
        .cgroup()
        .kill_and_remove(KILL_TIMEOUT)
        .map_err(sandbox_err(&record.guest, "remove the guest's cgroups"))?;
    remove_notify_dir(run_dir, &record.guest)?;
    let path = RunRecord::path(run_dir, &record.guest);
    match fs_err::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", &path)(e)),
    }
}

fn hostname_of(config: &GuestConfig) -> String {
    if config.hostname.is_empty() {
        config.name.clone()
    } else {
        config.hostname.clone()
    }
}

/// The guest's cgroup directory name: the guest's name with the default run directory; with
/// another one (tests, a second installation), the name plus a hash of that directory, so that
/// guests of the same name under different roots never share a cgroup.
fn cgroup_name(run_dir: &Path, guest: &str) -> String {
    if run_dir == Path::new("/run/vservers") {
        return guest.to_string();
    }
    use std::hash::{Hash, Hasher};
    // `DefaultHasher::new()` uses fixed keys: the same directory gives the same name in every
    // process of one build.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    run_dir.hash(&mut hasher);
    format!("{guest}.{:016x}", hasher.finish())
}

/// The network namespace `config` asks for; `cgroup_name` names the host's end of a veth pair.
fn network_of(config: &GuestConfig, cgroup_name: &str) -> GuestNetwork {
    match &config.net {
        NetConfig::None => GuestNetwork::Isolated,
        NetConfig::Host => GuestNetwork::Host,
        NetConfig::Bridge {
            bridge,
            interface,
            address,
            gateway,
        } => {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            cgroup_name.hash(&mut hasher);
            // "vs" + 13 hex digits: the 15 bytes an interface name may have, unique per guest.
            let host_interface = format!("vs{:013x}", hasher.finish() & ((1 << 52) - 1));
            GuestNetwork::Bridge {
                bridge: bridge.clone(),
                host_interface,
                guest_interface: interface.clone().unwrap_or_else(|| "eth0".into()),
                address: address.clone(),
                gateway: gateway.clone(),
            }
        }
    }
}

/// How to start a guest; what is not set here comes from its `config.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartOptions {
    /// The init command (empty: the configured `init`, by default the guest's `/sbin/init`).
    pub init: Vec<OsString>,
    /// Limits for its cgroup; each one not set here is taken from `[limits]`.
    pub limits: GuestLimits,
}

/// The limits of `options`, completed from the configuration.
fn limits_of(config: &GuestConfig, options: &StartOptions) -> GuestLimits {
    let configured = config.limits.to_limits();
    GuestLimits {
        memory: options.limits.memory.or(configured.memory),
        pids: options.limits.pids.or(configured.pids),
        cpu_millis: options.limits.cpu_millis.or(configured.cpu_millis),
    }
}

/// A started guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// What was recorded.
    pub record: RunRecord,
    /// Limits that could not be applied, with the reason.
    pub notes: Vec<String>,
}

/// Starts guest `name` (see the module documentation).
pub fn start(
    roots: &HostRoots,
    run_dir: &Path,
    name: &str,
    options: &StartOptions,
) -> LifecycleResult<Started> {
    let config = load_guest(roots, name)?;
    crate::transaction::refuse_if_not_whole(roots, name)?;
    fs_err::create_dir_all(run_dir).map_err(io_err("create", run_dir))?;
    match find_running(run_dir, name)? {
        (_, Some(running)) => {
            return Err(LifecycleError::AlreadyRunning {
                guest: name.to_string(),
                pid: running.record.pid,
            });
        }
        (Some(stale), None) => clean_up(run_dir, &stale)?,
        (None, None) => {}
    }
    let support = CgroupSupport::detect().map_err(sandbox_err(name, "inspect cgroups"))?;
    let cgroup_name = cgroup_name(run_dir, name);
    // Processes in the cgroup without a live record: not ours to kill (a guest of another run
    // directory by the same name, or a start still under way).
    let old = GuestCgroup::locate(&support, &cgroup_name);
    if let Some(dir) = old.dirs.first().filter(|_| !old.processes().is_empty()) {
        return Err(LifecycleError::CgroupInUse {
            guest: name.to_string(),
            dir: dir.clone(),
        });
    }
    old.kill_and_remove(KILL_TIMEOUT)
        .map_err(sandbox_err(name, "remove the guest's old cgroups"))?;
    let plan = crate::init::plan(&config, &options.init)?;
    let needs = plan.kind.needs();
    let cgroup = GuestCgroup::create(&support, &cgroup_name, limits_of(&config, options))
        .map_err(sandbox_err(name, "create the guest's cgroups"))?;
    let undo = |error: LifecycleError| {
        let _ = cgroup.kill_and_remove(KILL_TIMEOUT);
        let _ = remove_notify_dir(run_dir, name);
        error
    };
    let joined = if needs.delegate_cgroup {
        cgroup
            .delegate()
            .map_err(sandbox_err(name, "delegate a cgroup to the guest"))
            .map_err(undo)?
    } else {
        cgroup.dirs.clone()
    };
    let notify = match needs.readiness {
        Readiness::Notify => Some(bind_notify_socket(run_dir, name).map_err(undo)?),
        _ => None,
    };
    let mut setup = needs.setup;
    setup.run_files.extend(plan.run_files);
    setup.notify_dir = notify.as_ref().map(|_| notify_dir(run_dir, name));
    let log = run_dir.join(format!("{name}.log"));
    // A fresh log per start: its tail is what a failed start shows.
    let _ = fs_err::remove_file(&log);
    let launch = GuestLaunch {
        root: config.root.clone(),
        hostname: hostname_of(&config),
        command: plan.command,
        env: needs.env,
        cgroups: joined,
        log: Some(log.clone()),
        capabilities: needs.capabilities,
        network: network_of(&config, &cgroup_name),
        setup,
    };
    let init = match vserver_sandbox::start_guest_init(&launch) {
        Ok(init) => init,
        Err(source) => {
            // An init that died at once (before its start was even recorded) has said why in
            // its log, as one that dies later does; a setup failure has written nothing there.
            let tail = log_tail(&log, 20);
            let error = if tail.is_empty() {
                sandbox_err(name, "start the guest's init")(source)
            } else {
                LifecycleError::StartFailed {
                    guest: name.to_string(),
                    problem: "its init exited during start".into(),
                    log_tail: tail,
                }
            };
            return Err(undo(error));
        }
    };
    let record = RunRecord {
        guest: name.to_string(),
        pid: init.pid,
        start_time: init.start_time,
        started_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        root: config.root.clone(),
        cgroups: cgroup.dirs.clone(),
        unified_cgroup: cgroup.unified.clone(),
        init: Some(plan.kind),
    };
    if let Err(error) = record.save(run_dir) {
        // Unrecorded, the guest could never be found again: take it down.
        return Err(undo(error));
    }
    let timeout = config
        .start_timeout
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_START_TIMEOUT);
    if let Err(problem) = wait_until_up(init, needs.readiness, notify.as_ref(), timeout) {
        let _ = clean_up(run_dir, &record);
        return Err(LifecycleError::StartFailed {
            guest: name.to_string(),
            problem,
            log_tail: log_tail(&log, 20),
        });
    }
    drop(notify);
    Ok(Started {
        record,
        notes: cgroup.notes,
    })
}

/// The host directory bound into a systemd guest at [`vserver_sandbox::NOTIFY_DIR_IN_GUEST`].
fn notify_dir(run_dir: &Path, guest: &str) -> PathBuf {
    run_dir.join(format!("{guest}.notify"))
}

fn remove_notify_dir(run_dir: &Path, guest: &str) -> LifecycleResult<()> {
    let dir = notify_dir(run_dir, guest);
    match fs_err::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", &dir)(e)),
    }
}

/// The host's end of the guest's `NOTIFY_SOCKET`: a datagram socket in a directory of the run
/// directory (host-owned; the guest sees it read-only and can only send to the socket).
fn bind_notify_socket(
    run_dir: &Path,
    guest: &str,
) -> LifecycleResult<std::os::unix::net::UnixDatagram> {
    remove_notify_dir(run_dir, guest)?;
    let dir = notify_dir(run_dir, guest);
    fs_err::create_dir(&dir).map_err(io_err("create", &dir))?;
    let path = dir.join(NOTIFY_SOCKET_NAME);
    let socket = std::os::unix::net::UnixDatagram::bind(&path).map_err(io_err("bind", &path))?;
    socket
        .set_nonblocking(true)
        .map_err(io_err("configure", &path))?;
    Ok(socket)
}

/// Waits until the init is up as `readiness` says; the reason when it ended or was not up
/// within `timeout`.
fn wait_until_up(
    init: vserver_sandbox::GuestInit,
    readiness: Readiness,
    notify: Option<&std::os::unix::net::UnixDatagram>,
    timeout: Duration,
) -> Result<(), String> {
    use std::os::fd::AsFd;
    use vserver_sandbox::Wakeup;
    let exited = || "its init exited during start".to_string();
    let pidfd = match vserver_sandbox::open_guest_pidfd(init.pid, init.start_time) {
        Ok(Some(pidfd)) => pidfd,
        Ok(None) => return Err(exited()),
        Err(e) => return Err(format!("cannot watch its init: {e}")),
    };
    let deadline = std::time::Instant::now() + timeout;
    // A plain init is up when it still runs a moment after it started.
    let tick = match readiness {
        Readiness::Running => Duration::from_millis(300),
        Readiness::Notify | Readiness::File(_) => Duration::from_millis(100),
    };
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(format!(
                "its init was not up within {} s (`start_timeout`)",
                timeout.as_secs()
            ));
        }
        let wakeup = vserver_sandbox::wait_pidfd_or_readable(
            pidfd.as_fd(),
            notify.map(|s| s.as_fd()),
            left.min(tick),
        )
        .map_err(|e| format!("cannot watch its init: {e}"))?;
        match (wakeup, readiness) {
            (Wakeup::Exited, _) => return Err(exited()),
            (Wakeup::TimedOut, Readiness::Running) => return Ok(()),
            (Wakeup::Readable, Readiness::Notify) => {
                let mut buffer = [0u8; 4096];
                if let Some(socket) = notify
                    && let Ok(n) = socket.recv(&mut buffer)
                    && buffer[..n].split(|b| *b == b'\n').any(|l| l == b"READY=1")
                {
                    return Ok(());
                }
            }
            (Wakeup::TimedOut, Readiness::File(path)) => {
                let root = vserver_sandbox::GuestRoot::open(format!("/proc/{}/root", init.pid));
                if root.is_ok_and(|root| root.exists(path).unwrap_or(false)) {
                    return Ok(());
                }
            }
            _ => {}
        }
    }
}

/// The last `lines` lines of a guest's log, from at most its last 64 KiB: the guest writes the
/// log and may have made it as large as it likes. Empty when there is none.
fn log_tail(path: &Path, lines: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    const MOST: u64 = 64 * 1024;
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut bytes = Vec::new();
    if file
        .seek(SeekFrom::Start(size.saturating_sub(MOST)))
        .is_err()
        || file.take(MOST).read_to_end(&mut bytes).is_err()
    {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// How to stop a guest; what is not set here comes from its `config.toml` (`stop_signal`,
/// `stop_timeout`), else `SIGTERM` and 10 seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StopOptions {
    /// The signal asking init to shut down.
    pub signal: Option<rustix::process::Signal>,
    /// How long init may take before everything is killed.
    pub timeout: Option<Duration>,
}

/// Stops guest `name`: the stop signal to init, a wait of up to the stop timeout, then `SIGKILL`
/// to init (which takes the guest's pid namespace with it) and to whatever is left in its cgroups
/// (`cgroup.kill` where there is one); removes the cgroups and the record. The guest's mounts
/// lived only in its mount namespace and are gone with it. Returns whether it was running.
pub fn stop(
    roots: &HostRoots,
    run_dir: &Path,
    name: &str,
    options: StopOptions,
) -> LifecycleResult<bool> {
    let config = load_guest(roots, name)?;
    let signal = match (options.signal, &config.stop_signal) {
        (Some(signal), _) => signal,
        (None, Some(text)) => parse_signal(text).ok_or_else(|| LifecycleError::BadSetting {
            guest: name.to_string(),
            setting: "stop_signal",
            problem: format!("unknown signal `{text}`"),
        })?,
        (None, None) => {
            let kind = RunRecord::load(run_dir, name)?
                .and_then(|r| r.init)
                .unwrap_or(InitKind::Plain);
            parse_signal(kind.needs().stop_signal).unwrap_or(rustix::process::Signal::TERM)
        }
    };
    let timeout = options
        .timeout
        .or(config.stop_timeout.map(Duration::from_secs))
        .unwrap_or(DEFAULT_STOP_TIMEOUT);
    let running = match find_running(run_dir, name)? {
        (_, Some(running)) => running,
        (Some(stale), None) => {
            clean_up(run_dir, &stale)?;
            return Ok(false);
        }
        (None, None) => return Ok(false),
    };
    use std::os::fd::AsFd;
    let pidfd = running.pidfd.as_fd();
    vserver_sandbox::signal_pidfd(pidfd, signal).map_err(sandbox_err(name, "signal the init"))?;
    let ended = vserver_sandbox::wait_pidfd_exit(pidfd, timeout)
        .map_err(sandbox_err(name, "wait for the init"))?;
    if !ended {
        vserver_sandbox::signal_pidfd(pidfd, rustix::process::Signal::KILL)
            .map_err(sandbox_err(name, "kill the init"))?;
        vserver_sandbox::wait_pidfd_exit(pidfd, KILL_TIMEOUT)
            .map_err(sandbox_err(name, "wait for the init"))?;
    }
    clean_up(run_dir, &running.record)?;
    Ok(true)
}

/// Runs `command` in guest `name` and returns its exit code (128 + signal when killed): inside the
/// running guest, or with `transient`, in fresh namespaces in a stopped guest's root.
pub fn exec(
    roots: &HostRoots,
    run_dir: &Path,
    name: &str,
    command: &[OsString],
    transient: bool,
) -> LifecycleResult<i32> {
    let config = load_guest(roots, name)?;
    let (_, running) = find_running(run_dir, name)?;
    match (running, transient) {
        (Some(running), false) => {
            let launch = running
                .record
                .launch(hostname_of(&config), command.to_vec());
            use std::os::fd::AsFd;
            vserver_sandbox::exec_in_guest(running.pidfd.as_fd(), &launch)
                .map_err(sandbox_err(name, "run a command in the guest"))
        }
        (None, true) => {
            let launch = GuestLaunch {
                root: config.root.clone(),
                hostname: hostname_of(&config),
                command: command.to_vec(),
                env: vec![("container".into(), "vserver".into())],
                cgroups: Vec::new(),
                log: None,
                capabilities: CapabilityProfile::Confined,
                network: match config.net {
                    NetConfig::Host => GuestNetwork::Host,
                    // No veth for a single command: loopback only.
                    NetConfig::None | NetConfig::Bridge { .. } => GuestNetwork::Isolated,
                },
                setup: InitSetup::default(),
            };
            vserver_sandbox::run_transient(&launch)
                .map_err(sandbox_err(name, "run a transient command in the guest"))
        }
        (Some(running), true) => Err(LifecycleError::AlreadyRunning {
            guest: name.to_string(),
            pid: running.record.pid,
        }),
        (None, false) => Err(LifecycleError::NotRunning {
            guest: name.to_string(),
        }),
    }
}

/// Runs `command` (default: a login shell) inside running guest `name` on a new
/// pseudo-terminal, relaying `input` and `output` (the caller's terminal: put in raw mode for
/// the duration); returns its exit code. This is `vserver G enter`.
pub fn enter(
    roots: &HostRoots,
    run_dir: &Path,
    name: &str,
    command: &[OsString],
    input: std::os::fd::BorrowedFd<'_>,
    output: std::os::fd::BorrowedFd<'_>,
) -> LifecycleResult<i32> {
    let config = load_guest(roots, name)?;
    let (_, running) = find_running(run_dir, name)?;
    let Some(running) = running else {
        return Err(LifecycleError::NotRunning {
            guest: name.to_string(),
        });
    };
    let command = if command.is_empty() {
        vec![OsString::from("/bin/sh"), OsString::from("-l")]
    } else {
        command.to_vec()
    };
    let launch = running.record.launch(hostname_of(&config), command);
    use std::os::fd::AsFd;
    vserver_sandbox::exec_in_guest_on_pty(running.pidfd.as_fd(), &launch, input, output)
        .map_err(sandbox_err(name, "enter the guest"))
}

/// A running guest's vital signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunningInfo {
    /// The init's host pid.
    pub pid: u32,
    /// Seconds since start.
    pub uptime: u64,
    /// Processes in its cgroup.
    pub processes: usize,
    /// Memory in use, where a memory controller counts it.
    pub memory: Option<u64>,
    /// Its cgroup directories.
    pub cgroups: Vec<PathBuf>,
}

/// One guest's state, for `status` and `--list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuestStatus {
    /// The guest.
    pub guest: String,
    /// Its distribution (empty for a skeleton).
    pub distribution: String,
    /// Where its package database is.
    pub package_management: PackageManagement,
    /// `running`, `stopped`, or `incomplete` (a build runs, or failed and was kept).
    pub state: &'static str,
    /// Details when running.
    pub running: Option<RunningInfo>,
    /// A guest operation running on it, or the kept build that makes it incomplete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
}

/// `state` and `operation` of a guest with a pending journal.
fn pending_state(roots: &HostRoots, name: &str) -> LifecycleResult<Option<(bool, String)>> {
    use crate::transaction::Pending;
    Ok(
        crate::transaction::pending(roots, name)?.map(|pending| match pending {
            Pending::Running {
                operation,
                pid,
                phase,
            } => {
                let phase = if phase.is_empty() {
                    String::new()
                } else {
                    format!(", {phase}")
                };
                (
                    operation == "build",
                    format!("{operation} running (pid {pid}{phase})"),
                )
            }
            Pending::Incomplete { phase } => (
                true,
                format!("build failed during {phase}, kept with --keep"),
            ),
            Pending::Interrupted { operation } => (
                operation == "build",
                format!("{operation} interrupted, recovered by the next command"),
            ),
        }),
    )
}

/// The state of guest `name`.
pub fn status(roots: &HostRoots, run_dir: &Path, name: &str) -> LifecycleResult<GuestStatus> {
    let config = load_guest(roots, name)?;
    let (_, running) = find_running(run_dir, name)?;
    let running = running.map(|running| {
        let record = running.record;
        let cgroup = record.cgroup();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        RunningInfo {
            pid: record.pid,
            uptime: now.saturating_sub(record.started_at),
            processes: cgroup.processes().len(),
            memory: cgroup.memory_usage(),
            cgroups: record.cgroups.clone(),
        }
    });
    let pending = pending_state(roots, name)?;
    Ok(GuestStatus {
        guest: config.name,
        distribution: config.distribution,
        package_management: config.package_management,
        state: match (&running, &pending) {
            (Some(_), _) => "running",
            (None, Some((true, _))) => "incomplete",
            (None, _) => "stopped",
        },
        running,
        operation: pending.map(|(_, operation)| operation),
    })
}

/// The state of every configured guest, and of every guest a build is making, sorted by name.
pub fn list(roots: &HostRoots, run_dir: &Path) -> LifecycleResult<Vec<GuestStatus>> {
    let configured = list_guests(roots)?;
    let mut statuses = configured
        .iter()
        .map(|name| status(roots, run_dir, name))
        .collect::<LifecycleResult<Vec<_>>>()?;
    // A build that has not written the configuration yet.
    for name in crate::transaction::journaled_guests(roots)? {
        if configured.contains(&name) {
            continue;
        }
        if let Some((true, operation)) = pending_state(roots, &name)? {
            statuses.push(GuestStatus {
                guest: name,
                distribution: String::new(),
                package_management: PackageManagement::None,
                state: "incomplete",
                running: None,
                operation: Some(operation),
            });
        }
    }
    statuses.sort_by(|a, b| a.guest.cmp(&b.guest));
    Ok(statuses)
}

/// Deletes guest `name`: checks that its configuration, root and `.pkg` state belong to it
/// (module `identity`), stops it, then removes its root, its `.pkg` state, its run record and
/// log and its configuration, in that order, under a journal that lets the next command finish
/// a delete that was killed. Each removal goes through [`vserver_sandbox::GuestRoot::remove_all`], which follows
/// no symlink, so a link the guest planted is removed as a link and its target stays. A failed
/// build kept with `--keep` is undone instead (the guest it replaced, if any, comes back).
pub fn delete(roots: &HostRoots, run_dir: &Path, name: &str) -> LifecycleResult<()> {
    crate::error::check_name("guest", name)?;
    // A failed build kept with `--keep` is undone, not deleted: a guest it replaced comes back.
    if let Some(crate::transaction::Pending::Incomplete { .. }) =
        crate::transaction::pending(roots, name)?
    {
        crate::transaction::recover_journal(roots, name, true)?;
        return Ok(());
    }
    let config = load_guest(roots, name)?;
    crate::identity::check(roots, name, &config)?;
    if !config.root.is_absolute() || config.root.parent().is_none_or(|p| p == Path::new("/")) {
        return Err(LifecycleError::UnsafeRoot {
            guest: name.to_string(),
            root: config.root.clone(),
        });
    }
    let mut transaction =
        crate::transaction::Transaction::begin(roots, name, crate::transaction::Operation::Delete)?;
    stop(roots, run_dir, name, StopOptions::default())?;
    // The configuration last: until then, a delete that failed can be retried by name.
    let paths = [
        config.root.clone(),
        roots.pkgdir.join(name),
        run_dir.join(format!("{name}.toml")),
        run_dir.join(format!("{name}.log")),
        roots.confdir.join(name),
    ];
    transaction.will_remove(&paths)?;
    for path in &paths {
        crate::transaction::remove_host_tree(path)?;
        vserver_pkgmgmt::checkpoint();
    }
    transaction.finish()?;
    Ok(())
}

/// `vserver G enable|disable`: marks guest `name` for start at boot (`start_at_boot` in its
/// configuration) or clears the mark; whether anything changed.
pub fn set_start_at_boot(roots: &HostRoots, name: &str, on: bool) -> LifecycleResult<bool> {
    let mut config = load_guest(roots, name)?;
    if config.start_at_boot == on {
        return Ok(false);
    }
    config.start_at_boot = on;
    config.save(roots)?;
    Ok(true)
}

/// The guests marked for start at boot, sorted by name.
pub fn marked_guests(roots: &HostRoots) -> LifecycleResult<Vec<String>> {
    let mut marked = Vec::new();
    for name in list_guests(roots)? {
        if load_guest(roots, &name)?.start_at_boot {
            marked.push(name);
        }
    }
    Ok(marked)
}
