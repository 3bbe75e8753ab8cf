//! The per-operation sandbox: run a host program (rpm, dnf, dpkg, apt-get…) against a guest root
//! with the host read-only, the guest's database mounted for this operation only, fresh
//! namespaces and reduced capabilities; on a running guest, either its scripts start inside the
//! guest (the guest spawner, module `guest_spawn`, forked before the sandbox leaves the host's
//! namespaces) or the guest is frozen and joined.
//!
//! # Why re-execute instead of `fork` + `pre_exec`
//!
//! Creating a user namespace requires a single-threaded process, and the setup needs plenty of
//! allocation and error reporting; a forked child of a multi-threaded caller (the test harness,
//! a progress-bar thread) may only call async-signal-safe functions. So the caller starts
//! `/proc/self/exe` again with the environment variable `VSERVER_SANDBOX_CHANNEL` naming an
//! inherited socket; every binary calls [`run_if_sandbox_child`] first thing in `main`, which
//! notices the variable, reads the serialized specification from the socket and does the setup in
//! a fresh, single-threaded process with ordinary Rust code. Setup failures come back over the
//! same socket as a typed message (step, `errno`, text) and become [`Error::Setup`].
//!
//! # Processes and layout
//!
//! ```text
//! caller ── sandbox (S, real root) ──┬── guardian: waits for EOF, then kills the sandbox cgroup
//!                                     │             and thaws the guest (any exit, even SIGKILL)
//!                                     └── init (pid 1 of a new pid ns; user ns root) ── program
//! ```
//!
//! # Killing the caller kills the operation
//!
//! Each process has a parent-death signal: S dies with the caller, the program with the init.
//! The init's is a blocked signal it waits for: it then kills the program's own cgroup (a child
//! of the sandbox cgroup holding the program and all it starts) and reaps everything before it
//! exits. It is a child subreaper, so in a joined guest's pid namespace nothing of the operation
//! ends up under the guest's pid 1, which may never reap (see `end_operation`). The guardian
//! then kills whatever is left in the sandbox cgroup and thaws the guest. Both leave the
//! caller's process group, so a SIGKILL to the whole group does not take the clean-up with it;
//! should the guardian be killed all the same, the next sandbox removes the orphaned cgroup
//! ([`SandboxCgroup::remove_orphans`]).
//!
//! S unshares mount, uts, ipc and pid namespaces, makes every mount private, clones the guest
//! root and each writable host path (`open_tree`), makes `/` read-only recursively
//! (`mount_setattr`), and puts the writable clones back on their own paths. So the program sees
//! the whole host read-only, except the guest root **at its own host path** (`rpm --root
//! /vservers/G` works unchanged) and the paths it was given as writable. S then forks the init,
//! which mounts a fresh `/proc`, unshares a user namespace (identity map written by S) together
//! with a new mount namespace — from now on the read-only flags and the mounts made so far are
//! locked — and only then bind-mounts the guest's database into the guest root ([`bind_into`]),
//! so that the rpm plugin's scriptlet hook is able to unmount it again in its own namespace. The
//! program runs with the [`CapabilityProfile`] given, `no_new_privs`, default signal handling.
//!
//! # Time limit
//!
//! A run may be given a time limit ([`SandboxCommand::time_limit`]). The caller enforces it, not
//! a sandbox process: everything in the sandbox may be stopped or hostile. At the limit,
//! [`SandboxChild::wait`] reads from `/proc` what runs below the program (module
//! `time_limit`), sends `SIGKILL` to S through a pidfd and lets the layout above do the rest:
//! the init's parent-death signal makes it kill and reap the program's cgroup (which also holds
//! what the program started in a joined guest's pid namespace), and the guardian, seeing the
//! pipe's end, kills what is left in the sandbox cgroup and thaws the guest.
//!
//! [`bind_into`]: crate::bind_into

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::thread::UnshareFlags;
use serde::{Deserialize, Serialize};

use crate::caps::{CapabilityProfile, restrict_capabilities, set_no_new_privs};
use crate::cgroup::{CgroupSupport, Freezer, SandboxCgroup};
use crate::error::{Error, Result};
use crate::mount::{self, Access, FileSystem};
use crate::namespaces::{self, Namespace};
use crate::safe_path::GuestRoot;
use crate::{seccomp, sys};

/// The environment variable that marks a sandbox child and names its channel descriptor.
const CHANNEL_VAR: &str = "VSERVER_SANDBOX_CHANNEL";
/// Exit code of a sandbox process whose setup failed (the parent reports the real error).
const SETUP_FAILED: i32 = 125;
/// The init's step that fails only when the sandbox process failed first.
const WAIT_FOR_ID_MAP: &str = "wait for the id map";
/// How long a guest may take to freeze, and leftovers to die.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);
/// The search path used when the program is given without a directory and no `PATH` is set.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where a standard stream of the program goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StdioMode {
    /// The caller's stream.
    #[default]
    Inherit,
    /// `/dev/null`.
    Null,
    /// Captured and returned in [`Finished`].
    Capture,
}

/// Hears each line of a captured standard output as it arrives (without its line break), from
/// a thread of [`SandboxChild::wait`]: progress of a long operation, drawn by the caller. The
/// output is captured whole all the same.
#[derive(Clone)]
pub struct LineObserver(pub std::sync::Arc<LineFn>);

/// What a [`LineObserver`] calls.
pub type LineFn = dyn Fn(&[u8]) + Send + Sync;

impl fmt::Debug for LineObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LineObserver")
    }
}

/// A host directory bind-mounted into the guest root for the operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Bind {
    host: PathBuf,
    guest: PathBuf,
    access: Access,
}

/// A host directory of tool state shown at a neutral path below [`OPERATION_DIR`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StateMount {
    host: PathBuf,
    /// Relative path below [`OPERATION_DIR`].
    name: PathBuf,
    access: Access,
}

/// Where the sandbox shows the operation's tool state ([`SandboxCommand::state`]): a directory of
/// a fresh, read-only tmpfs that holds nothing but the mounts the command asked for. Neutral: the
/// host paths of the state are hidden in the sandbox, so a script that learnt them (mountinfo
/// shows the source paths) finds nothing there.
pub const OPERATION_DIR: &str = "/run/vserver-op";

/// The path at which [`SandboxCommand::state`] shows `name` inside the sandbox.
pub fn operation_path(name: impl AsRef<Path>) -> PathBuf {
    Path::new(OPERATION_DIR).join(name)
}

/// Everything the sandbox child needs, sent over the channel as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Spec {
    display: String,
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
    guest_root: Option<PathBuf>,
    binds: Vec<Bind>,
    writable: Vec<PathBuf>,
    private_tmp: bool,
    guest_proc: bool,
    guest_dev: bool,
    hostname: Option<String>,
    freeze: Option<Freezer>,
    join_guest: Option<u32>,
    /// The joined guest's init's start time, checked after its pidfd is opened.
    #[serde(default)]
    join_guest_start_time: Option<u64>,
    capabilities: CapabilityProfile,
    skip_fsync: bool,
    /// Paths whose siblings are hidden ([`crate::hide`]).
    #[serde(default)]
    hide_siblings: Vec<PathBuf>,
    /// A network namespace of its own (only loopback, down).
    #[serde(default)]
    no_network: bool,
    /// Tool state shown below [`OPERATION_DIR`].
    #[serde(default)]
    state: Vec<StateMount>,
    /// The guest's package state directory (`.pkg/G`): hidden, and the sources of binds and
    /// state below it are resolved beneath it without following symlinks.
    #[serde(default)]
    package_state: Option<PathBuf>,
    /// Writes only beneath these (plus `/dev`), instead of everything the command made writable.
    #[serde(default)]
    writes_only_beneath: Option<Vec<PathBuf>>,
    /// Run without a write boundary when the kernel has no Landlock (the administrator's
    /// explicit choice, [`crate::LANDLOCK_OPT_OUT_VAR`]).
    #[serde(default)]
    allow_no_write_boundary: bool,
    /// Prepare a mount namespace without the binds for the program's scripts.
    #[serde(default)]
    scriptlet_namespace: bool,
    /// The running guest (init pid, start time) whose namespaces the program's scripts enter
    /// through the guest spawner ([`SandboxCommand::scripts_in_running_guest`]).
    #[serde(default)]
    script_guest: Option<(u32, u64)>,
}

/// Messages from the sandbox processes to the caller, one JSON document per line.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Message {
    /// Something the user should know that is not an error (a missing cgroup feature).
    Note(String),
    /// Setup failed before the program ran.
    Failed {
        step: String,
        errno: i32,
        message: String,
    },
    /// The program ended with this raw wait status.
    Exited(i32),
}

/// The result of a sandboxed run.
#[derive(Debug, Clone)]
pub struct Finished {
    /// How the program ended.
    pub status: ExitStatus,
    /// Its standard output, when captured.
    pub stdout: Vec<u8>,
    /// Its standard error, when captured.
    pub stderr: Vec<u8>,
    /// Notes from the sandbox (features the host lacks and how they were worked around).
    pub notes: Vec<String>,
}

/// A program to run in the per-operation sandbox, built like `std::process::Command`.
///
/// `Display` shows the command line, shell-quoted, preceded by the variables set on it.
#[derive(Debug, Clone)]
pub struct SandboxCommand {
    program: OsString,
    args: Vec<OsString>,
    env: BTreeMap<OsString, Option<OsString>>,
    env_clear: bool,
    cwd: Option<PathBuf>,
    guest_root: Option<PathBuf>,
    binds: Vec<Bind>,
    writable: Vec<PathBuf>,
    private_tmp: bool,
    guest_proc: bool,
    guest_dev: bool,
    hostname: Option<String>,
    freeze: Option<Freezer>,
    join_guest: Option<u32>,
    join_guest_start_time: Option<u64>,
    capabilities: CapabilityProfile,
    skip_fsync: bool,
    hide_siblings: Vec<PathBuf>,
    no_network: bool,
    state: Vec<StateMount>,
    package_state: Option<PathBuf>,
    writes_only_beneath: Option<Vec<PathBuf>>,
    scriptlet_namespace: bool,
    script_guest: Option<(u32, u64)>,
    stdin: StdioMode,
    stdout: StdioMode,
    stderr: StdioMode,
    time_limit: Option<Duration>,
    stdout_lines: Option<LineObserver>,
}

impl SandboxCommand {
    /// A command running `program` (a path, or a name looked up in `PATH` inside the sandbox).
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        SandboxCommand {
            program: program.as_ref().to_os_string(),
            args: Vec::new(),
            env: BTreeMap::new(),
            env_clear: false,
            cwd: None,
            guest_root: None,
            binds: Vec::new(),
            writable: Vec::new(),
            private_tmp: true,
            guest_proc: false,
            guest_dev: true,
            hostname: None,
            freeze: None,
            join_guest: None,
            join_guest_start_time: None,
            capabilities: CapabilityProfile::default(),
            skip_fsync: false,
            hide_siblings: Vec::new(),
            no_network: false,
            state: Vec::new(),
            package_state: None,
            writes_only_beneath: None,
            scriptlet_namespace: false,
            script_guest: None,
            stdin: StdioMode::Inherit,
            stdout: StdioMode::Inherit,
            stderr: StdioMode::Inherit,
            time_limit: None,
            stdout_lines: None,
        }
    }

    /// Adds an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    /// Adds arguments.
    pub fn args(&mut self, args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> &mut Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Sets an environment variable for the program.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.env.insert(
            key.as_ref().to_os_string(),
            Some(value.as_ref().to_os_string()),
        );
        self
    }

    /// Removes an environment variable for the program.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Self {
        self.env.insert(key.as_ref().to_os_string(), None);
        self
    }

    /// Starts the program with only the variables set through [`SandboxCommand::env`].
    pub fn env_clear(&mut self) -> &mut Self {
        self.env_clear = true;
        self.env.retain(|_, value| value.is_some());
        self
    }

    /// The program's working directory (a path as the sandbox sees it; default: the guest root,
    /// or `/`).
    pub fn cwd(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.cwd = Some(dir.into());
        self
    }

    /// The guest root (a trusted host path such as `/vservers/G`): writable in the sandbox, at
    /// the same path.
    pub fn guest_root(&mut self, root: impl Into<PathBuf>) -> &mut Self {
        self.guest_root = Some(root.into());
        self
    }

    /// Bind-mounts the host directory `host` onto the existing directory `guest` inside the guest
    /// root, securely (the target is resolved as by [`crate::bind_into`]), `nosuid,nodev`. The
    /// mount is the only way to `host` in the sandbox when it lies below
    /// [`SandboxCommand::package_state`].
    pub fn bind(
        &mut self,
        host: impl Into<PathBuf>,
        guest: impl Into<PathBuf>,
        access: Access,
    ) -> &mut Self {
        self.binds.push(Bind {
            host: host.into(),
            guest: guest.into(),
            access,
        });
        self
    }

    /// Keeps a host directory (trusted path, e.g. a scratch directory of the operation) writable
    /// at its own path.
    pub fn writable(&mut self, host: impl Into<PathBuf>) -> &mut Self {
        self.writable.push(host.into());
        self
    }

    /// Shows the host directory `host` (tool state: caches, lists, trusted configuration) at the
    /// neutral path [`operation_path`]`(name)`, read-only or writable. `name` is relative and
    /// plain (no `..`).
    pub fn state(
        &mut self,
        host: impl Into<PathBuf>,
        name: impl Into<PathBuf>,
        access: Access,
    ) -> &mut Self {
        self.state.push(StateMount {
            host: host.into(),
            name: name.into(),
            access,
        });
        self
    }

    /// The guest's package state directory (`.pkg/G`, a trusted host path): hidden in the
    /// sandbox; every bind or state source below it is opened beneath it with no symlink
    /// followed, so a link planted there in an earlier operation cannot redirect a mount.
    pub fn package_state(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.package_state = Some(dir.into());
        self
    }

    /// Narrows the write boundary: the program and everything it starts may write only beneath
    /// `dirs` (as the sandbox shows them; `/dev` is always added), instead of beneath the guest
    /// root, the writable paths and the writable state.
    pub fn writes_only_beneath(
        &mut self,
        dirs: impl IntoIterator<Item = impl Into<PathBuf>>,
    ) -> &mut Self {
        self.writes_only_beneath = Some(dirs.into_iter().map(Into::into).collect());
        self
    }

    /// Prepares, for the program's scripts, the sandbox's mount namespace as it was before the
    /// binds: the program gets its descriptor and the guest root in
    /// [`crate::SCRIPTLET_MOUNT_NS_VAR`] and [`crate::SCRIPTLET_ROOT_VAR`], and
    /// [`crate::confine_scriptlet`] enters it (the rpm plugin's way of leaving the database
    /// behind where the write boundary forbids unmounting).
    pub fn scriptlet_namespace(&mut self, prepare: bool) -> &mut Self {
        self.scriptlet_namespace = prepare;
        self
    }

    /// Whether `/tmp` and `/var/tmp` are fresh tmpfs instances (default: yes).
    pub fn private_tmp(&mut self, private: bool) -> &mut Self {
        self.private_tmp = private;
        self
    }

    /// Mounts a fresh proc at the guest's `/proc` (for scripts that read it).
    pub fn guest_proc(&mut self, mount: bool) -> &mut Self {
        self.guest_proc = mount;
        self
    }

    /// Whether the guest's `/dev` (if it exists) is covered by a fresh minimal one for the
    /// operation (default: yes). Device nodes in the guest root itself never work in the sandbox.
    pub fn guest_dev(&mut self, mount: bool) -> &mut Self {
        self.guest_dev = mount;
        self
    }

    /// The host name inside the sandbox.
    pub fn hostname(&mut self, name: impl Into<String>) -> &mut Self {
        self.hostname = Some(name.into());
        self
    }

    /// Freezes a running guest's cgroup for the duration and thaws it afterwards, on every exit
    /// path (a guardian process does the thaw even if the caller is killed).
    pub fn freeze(&mut self, freezer: Freezer) -> &mut Self {
        self.freeze = Some(freezer);
        self
    }

    /// Runs in the uts, ipc and pid namespaces of the running guest whose init is `pid`
    /// (joined through a pidfd); the program is then a process of the guest's pid namespace and
    /// leftovers are killed through the sandbox's cgroup.
    pub fn join_guest(&mut self, pid: u32) -> &mut Self {
        self.join_guest = Some(pid);
        self
    }

    /// Works on the running guest `guest` (from its run record): freezes its cgroup for the
    /// duration, when it has a freezer, and joins its namespaces as [`SandboxCommand::join_guest`]
    /// does — through a pidfd checked against the init's start time, so a guest that stopped
    /// meanwhile (and whose pid was reused) makes the operation fail instead of joining a
    /// stranger. The sandbox process itself never joins the guest's cgroup: the frozen guest
    /// cannot stall the program or its scriptlets.
    pub fn running_guest(&mut self, guest: &crate::RunningGuest) -> &mut Self {
        self.freeze = guest.freezer.clone();
        self.join_guest = Some(guest.pid);
        self.join_guest_start_time = Some(guest.start_time);
        self
    }

    /// Works on the running guest `guest` without freezing it: the program runs in the
    /// sandbox's own namespaces (out of the guest's sight), and each script it executes through
    /// the rpm plugin's or dpkg's exec hook runs *in* the guest — its pid, ipc, uts, network and
    /// cgroup namespaces, its cgroup, a private copy of its mount namespace — started by the
    /// guest spawner (module `guest_spawn`), whose socket the program finds at
    /// [`crate::SPAWNER_FD`], named in [`crate::SPAWNER_VAR`]. The scripts see the binds there
    /// unless [`SandboxCommand::scriptlet_namespace`] keeps them from the scripts (rpm).
    pub fn scripts_in_running_guest(&mut self, guest: &crate::RunningGuest) -> &mut Self {
        self.freeze = None;
        self.join_guest = None;
        self.join_guest_start_time = None;
        self.script_guest = Some((guest.pid, guest.start_time));
        self
    }

    /// The capabilities the program keeps (default: [`CapabilityProfile::Confined`]).
    pub fn capabilities(&mut self, profile: CapabilityProfile) -> &mut Self {
        self.capabilities = profile;
        self
    }

    /// Makes `fsync`, `fdatasync`, `syncfs`, `sync`, `sync_file_range` and `msync(MS_SYNC)`
    /// return 0 without doing anything, for the program and everything it starts (a seccomp
    /// filter, see the `seccomp` module; x86_64 only, elsewhere this does nothing). Default: off.
    ///
    /// Only for work whose result the caller makes durable itself afterwards (one `syncfs` of
    /// every file system written to) and throws away if it fails half-way, such as building a
    /// new guest. Never for changes to an existing guest's database.
    pub fn skip_fsync(&mut self, skip: bool) -> &mut Self {
        self.skip_fsync = skip;
        self
    }

    /// Hides the siblings of `path` (a trusted host path such as the guest root `/vservers/G`,
    /// whose siblings are the other guests) behind empty read-only directories, as the host's
    /// secrets always are; see [`crate::hide`] for why.
    pub fn hide_siblings_of(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.hide_siblings.push(path.into());
        self
    }

    /// Gives the program a network namespace of its own, with nothing in it: for work on
    /// untrusted input that has no business talking to anyone (reading a guest's database).
    /// Ignored when joining a running guest. Default: the host's network.
    pub fn no_network(&mut self, isolate: bool) -> &mut Self {
        self.no_network = isolate;
        self
    }

    /// Where standard input comes from.
    pub fn stdin(&mut self, mode: StdioMode) -> &mut Self {
        self.stdin = mode;
        self
    }

    /// Where standard output goes.
    pub fn stdout(&mut self, mode: StdioMode) -> &mut Self {
        self.stdout = mode;
        self
    }

    /// Where standard error goes.
    pub fn stderr(&mut self, mode: StdioMode) -> &mut Self {
        self.stderr = mode;
        self
    }

    /// Hands each line of a captured standard output to `observer` as it arrives.
    pub fn observe_stdout_lines(&mut self, observer: LineObserver) -> &mut Self {
        self.stdout_lines = Some(observer);
        self
    }

    /// How long the run may take, from [`SandboxCommand::spawn`] until the program and the
    /// sandbox's clean-up are done (default: no limit). When it expires, [`SandboxChild::wait`]
    /// names what was running, kills the sandbox process — its init dies with it (parent-death
    /// signal), and with the init every process of the sandbox's pid namespace; the guardian
    /// then kills what is left in the sandbox cgroup (the processes of a joined guest's pid
    /// namespace) and thaws a frozen guest — and returns [`Error::TimedOut`]. `SIGKILL` ends
    /// stopped processes too, so a script that stops its parent cannot hold the run.
    pub fn time_limit(&mut self, limit: Option<Duration>) -> &mut Self {
        self.time_limit = limit;
        self
    }

    /// The program.
    pub fn get_program(&self) -> &OsStr {
        &self.program
    }

    /// The arguments.
    pub fn get_args(&self) -> &[OsString] {
        &self.args
    }

    /// Runs the program, streams as configured, and waits for it.
    pub fn status(&self) -> Result<Finished> {
        self.spawn()?.wait()
    }

    /// Runs the program with standard output and error captured.
    pub fn output(&self) -> Result<Finished> {
        let mut command = self.clone();
        command
            .stdout(StdioMode::Capture)
            .stderr(StdioMode::Capture);
        command.spawn()?.wait()
    }

    fn spec(&self) -> Spec {
        let mut env: BTreeMap<OsString, OsString> = if self.env_clear {
            BTreeMap::new()
        } else {
            std::env::vars_os().collect()
        };
        env.remove(OsStr::new(CHANNEL_VAR));
        for (key, value) in &self.env {
            match value {
                Some(value) => env.insert(key.clone(), value.clone()),
                None => env.remove(key),
            };
        }
        Spec {
            display: self.to_string(),
            program: self.program.clone(),
            args: self.args.clone(),
            env: env.into_iter().collect(),
            cwd: self.cwd.clone(),
            guest_root: self.guest_root.clone(),
            binds: self.binds.clone(),
            writable: self.writable.clone(),
            private_tmp: self.private_tmp,
            guest_proc: self.guest_proc,
            guest_dev: self.guest_dev,
            hostname: self.hostname.clone(),
            freeze: self.freeze.clone(),
            join_guest: self.join_guest,
            join_guest_start_time: self.join_guest_start_time,
            capabilities: self.capabilities,
            skip_fsync: self.skip_fsync,
            hide_siblings: self.hide_siblings.clone(),
            no_network: self.no_network,
            state: self.state.clone(),
            package_state: self.package_state.clone(),
            writes_only_beneath: self.writes_only_beneath.clone(),
            allow_no_write_boundary: crate::landlock::opted_out(),
            scriptlet_namespace: self.scriptlet_namespace,
            script_guest: self.script_guest,
        }
    }

    /// The program and its arguments, shell-quoted, without the environment.
    fn command_line(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|word| quote(word))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Starts the sandbox; [`SandboxChild::wait`] collects the result.
    pub fn spawn(&self) -> Result<SandboxChild> {
        let started = Instant::now();
        let display = self.to_string();
        let spawn_err = |source| Error::Spawn {
            command: display.clone(),
            source,
        };
        let (ours, theirs) = UnixStream::pair().map_err(spawn_err)?;
        let their_fd = theirs.as_raw_fd();
        let mut command = Command::new("/proc/self/exe");
        command
            .arg0("vserver-sandbox")
            .env(CHANNEL_VAR, their_fd.to_string())
            .stdin(stdio(self.stdin))
            .stdout(stdio(self.stdout))
            .stderr(stdio(self.stderr));
        // SAFETY: the closure runs between fork and exec and only calls `fcntl`, which is
        // async-signal-safe; it touches no memory shared with other threads.
        unsafe {
            command.pre_exec(move || sys::clear_cloexec(their_fd));
        }
        let mut child = command.spawn().map_err(spawn_err)?;
        drop(theirs);
        let spec = serde_json::to_vec(&self.spec()).map_err(|e| spawn_err(e.into()))?;
        let mut writer = ours.try_clone().map_err(spawn_err)?;
        if let Err(e) = writer
            .write_all(&spec)
            .and_then(|()| writer.write_all(b"\n"))
        {
            let _ = child.kill();
            let _ = child.wait();
            return Err(spawn_err(e));
        }
        // The limit is enforced through a pidfd: the sandbox process may end and be reaped by
        // the time it expires, and its pid must not then name another process.
        // A limit too far away to be a point in time is none.
        let deadline = self
            .time_limit
            .and_then(|limit| Some((limit, started.checked_add(limit)?)));
        let time_limit = match deadline {
            Some((limit, deadline)) => match namespaces::open_pidfd(child.id()) {
                Ok(pidfd) => Some(TimeLimit {
                    limit,
                    deadline,
                    pidfd,
                }),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(spawn_err(io::Error::other(e.to_string())));
                }
            },
            None => None,
        };
        let reader = std::thread::spawn(move || read_messages(ours));
        Ok(SandboxChild {
            child,
            reader: Some(reader),
            display,
            command_line: self.command_line(),
            time_limit,
            stdout_lines: self.stdout_lines.clone(),
        })
    }
}

/// A run's time limit, as [`SandboxChild::wait`] enforces it.
#[derive(Debug)]
struct TimeLimit {
    limit: Duration,
    deadline: Instant,
    /// The sandbox process.
    pidfd: OwnedFd,
}

/// How long [`SandboxChild::wait`] waits, after it killed the sandbox at the time limit, for the
/// guardian's clean-up (which waits up to [`FREEZE_TIMEOUT`] for the cgroup to empty) and the
/// pipes' end; what has not come by then is given up on.
const KILL_GRACE: Duration = Duration::from_secs(15);

/// What the threads of [`SandboxChild::wait`] report.
enum Event {
    Stdout(io::Result<Vec<u8>>),
    Stderr(io::Result<Vec<u8>>),
    /// The sandbox process ended; then every holder of the channel (the guardian last).
    Ended(io::Result<ExitStatus>, io::Result<Vec<Message>>),
}

fn stdio(mode: StdioMode) -> Stdio {
    match mode {
        StdioMode::Inherit => Stdio::inherit(),
        StdioMode::Null => Stdio::null(),
        StdioMode::Capture => Stdio::piped(),
    }
}

fn read_messages(stream: UnixStream) -> io::Result<Vec<Message>> {
    let mut messages = Vec::new();
    for line in BufReader::new(stream).lines() {
        let line = line?;
        let message = serde_json::from_str(&line).map_err(io::Error::from)?;
        messages.push(message);
    }
    Ok(messages)
}

/// A running sandbox.
#[derive(Debug)]
pub struct SandboxChild {
    child: std::process::Child,
    reader: Option<std::thread::JoinHandle<io::Result<Vec<Message>>>>,
    display: String,
    /// The program and its arguments (for [`Error::TimedOut`]).
    command_line: String,
    time_limit: Option<TimeLimit>,
    stdout_lines: Option<LineObserver>,
}

impl SandboxChild {
    /// The process ID of the sandbox process (not of the program itself).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the program and the sandbox's clean-up (thaw, cgroup removal), and enforces the
    /// time limit ([`SandboxCommand::time_limit`]).
    ///
    /// Both pipes are read, the sandbox process waited for and its messages collected in threads
    /// of their own, so none of them can hold this past the limit: at the limit this names what
    /// runs, kills the sandbox process and then waits at most 15 s more for the clean-up.
    pub fn wait(mut self) -> Result<Finished> {
        let spawn_err = |source| Error::Spawn {
            command: self.display.clone(),
            source,
        };
        let (events, received) = std::sync::mpsc::channel();
        let mut pending = 1;
        // Read both pipes while waiting, as `Command::output` does, so neither can fill up.
        if let Some(pipe) = self.child.stdout.take() {
            pending += 1;
            let events = events.clone();
            let observer = self.stdout_lines.take();
            std::thread::spawn(move || {
                let read = match observer {
                    Some(observer) => read_observed(pipe, &observer),
                    None => read_all(pipe),
                };
                events.send(Event::Stdout(read))
            });
        }
        if let Some(pipe) = self.child.stderr.take() {
            pending += 1;
            let events = events.clone();
            std::thread::spawn(move || events.send(Event::Stderr(read_all(pipe))));
        }
        let sandbox_pid = self.child.id();
        let mut child = self.child;
        let reader = self.reader.take();
        std::thread::spawn(move || {
            let status = child.wait();
            let messages = match reader.map(|r| r.join()) {
                Some(Ok(messages)) => messages,
                _ => Ok(Vec::new()),
            };
            events.send(Event::Ended(status, messages))
        });

        let mut stdout = Ok(Vec::new());
        let mut stderr = Ok(Vec::new());
        let mut ended = None;
        let mut cutoff = self.time_limit.as_ref().map(|t| t.deadline);
        // What was running when the limit expired (set when it did).
        let mut killed: Option<Vec<String>> = None;
        while pending > 0 {
            let event = match cutoff {
                None => received.recv().ok(),
                Some(at) => {
                    match received.recv_timeout(at.saturating_duration_since(Instant::now())) {
                        Ok(event) => Some(event),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                            if killed.is_some() {
                                break;
                            }
                            if let Some(limit) = &self.time_limit {
                                killed = Some(crate::time_limit::running_below(sandbox_pid));
                                // `ESRCH`: it has just ended by itself.
                                let _ = rustix::process::pidfd_send_signal(
                                    &limit.pidfd,
                                    rustix::process::Signal::KILL,
                                );
                            }
                            cutoff = Some(Instant::now() + KILL_GRACE);
                            continue;
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
                    }
                }
            };
            let Some(event) = event else { break };
            pending -= 1;
            match event {
                Event::Stdout(result) => stdout = result,
                Event::Stderr(result) => stderr = result,
                Event::Ended(status, messages) => ended = Some((status, messages)),
            }
        }
        let timed_out = |running: Vec<String>| {
            let limit = self.time_limit.as_ref().map_or(Duration::ZERO, |t| t.limit);
            Error::TimedOut {
                command: self.command_line.clone(),
                limit,
                running,
            }
        };
        let Some((sandbox_status, messages)) = ended else {
            return Err(match killed {
                // Given up on after the kill (the sandbox process is stuck in the kernel).
                Some(running) => timed_out(running),
                None => spawn_err(io::Error::other("lost track of the sandbox process")),
            });
        };
        let sandbox_status = sandbox_status.map_err(spawn_err)?;
        let messages = messages.map_err(spawn_err)?;
        let mut notes = Vec::new();
        let mut status = None;
        for message in messages {
            match message {
                Message::Note(note) => notes.push(note),
                // After a kill at the limit, only the guardian's clean-up can still fail: that
                // (a guest left frozen) matters more than the limit.
                Message::Failed {
                    step,
                    errno,
                    message,
                } => {
                    return Err(Error::Setup {
                        command: self.display.clone(),
                        step,
                        errno,
                        message,
                    });
                }
                Message::Exited(raw) => status = Some(ExitStatus::from_raw(raw)),
            }
        }
        // Killed at the limit, unless the program had ended just before (its status came).
        let status = match (status, killed) {
            (Some(status), _) => status,
            (None, Some(running)) => return Err(timed_out(running)),
            (None, None) => {
                return Err(spawn_err(io::Error::other(format!(
                    "the sandbox ended without reporting the program's status ({sandbox_status})"
                ))));
            }
        };
        Ok(Finished {
            status,
            stdout: stdout.map_err(spawn_err)?,
            stderr: stderr.map_err(spawn_err)?,
            notes,
        })
    }
}

/// [`read_all`], handing each complete line (and a last unterminated one) to `observer`.
fn read_observed(pipe: impl Read, observer: &LineObserver) -> io::Result<Vec<u8>> {
    let mut reader = BufReader::new(pipe);
    let mut buffer = Vec::new();
    loop {
        let start = buffer.len();
        if reader.read_until(b'\n', &mut buffer)? == 0 {
            return Ok(buffer);
        }
        let line = &buffer[start..];
        (observer.0)(line.strip_suffix(b"\n").unwrap_or(line));
    }
}

fn read_all(mut pipe: impl Read) -> io::Result<Vec<u8>> {
    let mut buffer = Vec::new();
    pipe.read_to_end(&mut buffer).map(|_| buffer)
}

impl fmt::Display for SandboxCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (key, value) in &self.env {
            if let Some(value) = value {
                write!(f, "{}={} ", key.to_string_lossy(), quote(value))?;
            }
        }
        write!(f, "{}", quote(&self.program))?;
        for arg in &self.args {
            write!(f, " {}", quote(arg))?;
        }
        Ok(())
    }
}

/// Shell-quotes `word` when it needs it.
fn quote(word: &OsStr) -> String {
    quote_text(&word.to_string_lossy())
}

/// Shell-quotes `text` when it needs it.
pub(crate) fn quote_text(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

// ------------------------------------------------------------------------------------------
// The child side.
// ------------------------------------------------------------------------------------------

/// A setup step that failed, on its way to the caller.
struct Failure {
    step: &'static str,
    errno: i32,
    message: String,
}

impl Failure {
    fn new(step: &'static str, error: &Error) -> Self {
        let mut message = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Failure {
            step,
            errno: error.errno().unwrap_or(0),
            message,
        }
    }

    fn io(step: &'static str, error: &io::Error) -> Self {
        Failure {
            step,
            errno: error.raw_os_error().unwrap_or(0),
            message: error.to_string(),
        }
    }
}

/// The channel to the caller, shared (by `fork`) by every sandbox process.
struct Channel(UnixStream);

impl Channel {
    fn send(&self, message: &Message) {
        if let Ok(mut line) = serde_json::to_vec(message) {
            line.push(b'\n');
            let _ = (&self.0).write_all(&line);
        }
    }

    fn fail(&self, failure: Failure) {
        self.send(&Message::Failed {
            step: failure.step.to_string(),
            errno: failure.errno,
            message: failure.message,
        });
    }
}

/// Hands control to the sandbox set-up when this process was started as a sandbox child, and
/// never returns in that case. Call it first thing in `main` of every binary that uses
/// [`SandboxCommand`], before any thread is started.
pub fn run_if_sandbox_child() {
    crate::entry::run_if_entry_point();
    let Some(fd) = std::env::var_os(CHANNEL_VAR) else {
        return;
    };
    let Some(fd) = fd.to_str().and_then(|s| s.parse::<RawFd>().ok()) else {
        std::process::exit(SETUP_FAILED);
    };
    if rustix::io::fcntl_getfd(
        // SAFETY: checking an inherited descriptor number before taking ownership of it.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
    )
    .is_err()
    {
        std::process::exit(SETUP_FAILED);
    }
    // SAFETY: the parent passed this descriptor to us for exactly this purpose (it was checked
    // to be open above) and nothing else in this fresh process owns it.
    let stream = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let _ = rustix::io::fcntl_setfd(&stream, rustix::io::FdFlags::CLOEXEC);
    let channel = Channel(stream);
    let spec = match read_spec(&channel) {
        Ok(spec) => spec,
        Err(e) => {
            channel.fail(Failure::io("read the sandbox specification", &e));
            std::process::exit(SETUP_FAILED);
        }
    };
    let code = match run_sandbox(&spec, &channel) {
        Ok(()) => 0,
        Err(failure) => {
            channel.fail(failure);
            SETUP_FAILED
        }
    };
    std::process::exit(code);
}

fn read_spec(channel: &Channel) -> io::Result<Spec> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte: nothing may be read past the spec's line (the socket is shared with children).
    loop {
        let n = (&channel.0).read(&mut byte)?;
        if n == 0 || byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    serde_json::from_slice(&line).map_err(io::Error::from)
}

type Step<T> = std::result::Result<T, Failure>;

fn step<T>(name: &'static str, result: Result<T>) -> Step<T> {
    result.map_err(|e| Failure::new(name, &e))
}

fn step_io<T>(name: &'static str, result: io::Result<T>) -> Step<T> {
    result.map_err(|e| Failure::io(name, &e))
}

/// S: the privileged part. Runs in the re-executed, single-threaded process.
fn run_sandbox(spec: &Spec, channel: &Channel) -> Step<()> {
    step_io(
        "set the parent-death signal",
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
            .map_err(io::Error::from),
    )?;
    let support = step("detect cgroups", CgroupSupport::detect())?;
    let cgroup = match &support.unified {
        Some(unified) => {
            // What an operation killed together with its guardian left behind goes first.
            SandboxCgroup::remove_orphans(unified);
            Some(step(
                "create the sandbox cgroup",
                SandboxCgroup::create(unified, &SandboxCgroup::name_for_this_process()),
            )?)
        }
        None => {
            channel.send(&Message::Note(
                "no cgroup v2 tree: processes left by the program are killed through its pid namespace only"
                    .to_string(),
            ));
            None
        }
    };
    let (guardian, guardian_pipe) = start_guardian(cgroup.clone(), spec.freeze.clone(), channel)?;
    let result = run_monitored(spec, channel, cgroup.as_ref(), guardian_pipe.as_raw_fd());
    // Our end of the pipe closes here; the init's closed when it exited. The guardian now kills
    // what is left, removes the cgroup and thaws the guest; wait for it so the caller sees a
    // thawed guest when we return.
    drop(guardian_pipe);
    let _ = sys::waitpid(guardian);
    result
}

/// Forks the guardian: it blocks until every holder of the pipe's write end is gone (however
/// they ended), then cleans up.
fn start_guardian(
    cgroup: Option<SandboxCgroup>,
    freezer: Option<Freezer>,
    channel: &Channel,
) -> Step<(libc::pid_t, OwnedFd)> {
    let (read_end, write_end) = step_io("create the guardian pipe", sys::pipe())?;
    // SAFETY: this process is single-threaded (a fresh re-executed sandbox child).
    let pid = step_io("fork the guardian", unsafe { sys::fork() })?;
    if pid != 0 {
        drop(read_end);
        return Ok((pid, write_end));
    }
    drop(write_end);
    // Out of the caller's process group: a SIGKILL to the whole group (`kill -9 -PGID`,
    // `timeout -s KILL`) must not take the clean-up with it. The guardian never reads the
    // terminal, so leaving the foreground group costs nothing.
    let _ = sys::leave_process_group();
    for signal in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGPIPE,
    ] {
        sys::set_signal_ignored(signal, true);
    }
    let _ = rustix::process::set_parent_process_death_signal(None);
    let mut buffer = [0u8; 16];
    loop {
        match rustix::io::read(&read_end, &mut buffer) {
            Ok(0) => break,
            Ok(_) | Err(rustix::io::Errno::INTR) => continue,
            Err(_) => break,
        }
    }
    let mut code = 0;
    if let Some(Err(e)) = cgroup.map(|c| c.kill_and_remove(FREEZE_TIMEOUT)) {
        channel.fail(Failure::new("kill and remove the sandbox cgroup", &e));
        code = 1;
    }
    if let Some(Err(e)) = freezer.map(|f| f.thaw()) {
        channel.fail(Failure::new("thaw the guest", &e));
        code = 1;
    }
    sys::exit_immediately(code)
}

/// Starts the guest spawner for a running guest's scripts (module `guest_spawn`) and waits until
/// it serves; returns the program's end of its socket.
fn start_spawner(
    spec: &Spec,
    channel: &Channel,
    (pid, start_time): (u32, u64),
    guardian_pipe: RawFd,
) -> Step<OwnedFd> {
    use crate::guest_spawn::{ScriptBind, SpawnerSpec};
    let binds = if spec.scriptlet_namespace {
        Vec::new()
    } else {
        spec.binds
            .iter()
            .map(|b| ScriptBind {
                host: b.host.clone(),
                guest: b.guest.clone(),
                access: b.access,
            })
            .collect()
    };
    let spawner_spec = SpawnerSpec {
        pid,
        start_time,
        binds,
        package_state: spec.package_state.clone(),
        close: vec![channel.0.as_raw_fd(), guardian_pipe],
    };
    let (report_read, report_write) = step_io("create a pipe", sys::pipe())?;
    let (_, client, ready) = step_io(
        "start the guest spawner",
        crate::guest_spawn::start(&spawner_spec, report_write),
    )?;
    match crate::guest_spawn::wait_ready(ready, report_read) {
        Ok(()) => Ok(client),
        Err((errno, step, message)) => Err(Failure {
            step: "start the guest spawner",
            errno,
            message: if step == "open the guest's pidfd" && errno == libc::ESRCH {
                format!("the guest's init (pid {pid}) is gone")
            } else {
                message
            },
        }),
    }
}

fn open_dir(step_name: &'static str, path: &Path) -> Step<OwnedFd> {
    step_io(
        step_name,
        rustix::fs::open(
            path,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    )
}

/// Writes `content` to the file `name` below the directory `dir`, which was opened before the
/// sandbox's mounts changed (so it still refers to the host's writable /proc or cgroup tree).
fn write_below(step_name: &'static str, dir: &OwnedFd, name: &str, content: &str) -> Step<()> {
    let fd = step_io(
        step_name,
        rustix::fs::openat(
            dir,
            name,
            rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(io::Error::from),
    )?;
    step_io(
        step_name,
        std::fs::File::from(fd).write_all(content.as_bytes()),
    )
}

fn run_monitored(
    spec: &Spec,
    channel: &Channel,
    cgroup: Option<&SandboxCgroup>,
    guardian_pipe: RawFd,
) -> Step<()> {
    // Opened before anything changes: the host's /proc (whose pid numbers are ours) and the
    // sandbox cgroup, both writable. The sandbox process itself stays outside the cgroup, so
    // that the guardian's kill never hits it.
    let host_proc = open_dir("open /proc", Path::new("/proc"))?;
    let (cgroup_dir, program_cgroup) = match cgroup {
        Some(cgroup) => (
            Some(open_dir("open the sandbox cgroup", cgroup.dir())?),
            Some(open_dir(
                "open the program's cgroup",
                &cgroup.program_dir(),
            )?),
        ),
        None => (None, None),
    };
    if let Some(freezer) = &spec.freeze {
        step("freeze the guest", freezer.freeze(FREEZE_TIMEOUT))?;
    }
    // The spawner is forked while this process is still in the host's namespaces: it must be
    // able to join the guest's pid namespace, which is no descendant of the sandbox's.
    let spawner = match spec.script_guest {
        Some(guest) => Some(start_spawner(spec, channel, guest, guardian_pipe)?),
        None => None,
    };
    match spec.join_guest {
        Some(pid) => {
            let pidfd = match spec.join_guest_start_time {
                None => step("open the guest's pidfd", namespaces::open_pidfd(pid))?,
                Some(start_time) => step(
                    "open the guest's pidfd",
                    crate::open_guest_pidfd(pid, start_time),
                )?
                .ok_or_else(|| Failure {
                    step: "open the guest's pidfd",
                    errno: libc::ESRCH,
                    message: format!("the guest's init (pid {pid}) is gone"),
                })?,
            };
            // Not the network namespace: the package manager downloads through the host's
            // network (a guest with `net = "none"` has none).
            step(
                "join the guest's namespaces",
                namespaces::join_namespaces(
                    pidfd.as_fd(),
                    &[Namespace::Uts, Namespace::Ipc, Namespace::Pid],
                ),
            )?;
            step(
                "create a mount namespace",
                namespaces::unshare(UnshareFlags::NEWNS, "create a mount namespace"),
            )?;
        }
        None => {
            step(
                "create namespaces",
                namespaces::unshare(
                    UnshareFlags::NEWNS
                        | UnshareFlags::NEWUTS
                        | UnshareFlags::NEWIPC
                        | UnshareFlags::NEWPID
                        | if spec.no_network {
                            UnshareFlags::NEWNET
                        } else {
                            UnshareFlags::empty()
                        },
                    "create mount, uts, ipc, pid (and net) namespaces",
                ),
            )?;
        }
    }
    step("make all mounts private", mount::make_all_private())?;
    // A joined guest keeps its own host name.
    if let Some(name) = spec.hostname.as_ref().filter(|_| spec.join_guest.is_none()) {
        step_io("set the host name", sys::sethostname(name.as_bytes()))?;
    }
    let prepared = make_host_read_only(spec)?;

    let (to_sandbox_read, to_sandbox_write) = step_io("create a pipe", sys::pipe())?;
    let (to_init_read, to_init_write) = step_io("create a pipe", sys::pipe())?;
    // SAFETY: single-threaded process (see above).
    let init = step_io("fork the sandbox init", unsafe { sys::fork() })?;
    if init == 0 {
        drop(to_sandbox_read);
        drop(to_init_write);
        let code = match run_init(
            spec,
            channel,
            &prepared,
            program_cgroup.as_ref(),
            spawner.as_ref(),
            to_sandbox_write,
            to_init_read,
        ) {
            Ok(()) => 0,
            // The sandbox process reports why it went away; this would only hide that.
            Err(failure) if failure.step == WAIT_FOR_ID_MAP => SETUP_FAILED,
            Err(failure) => {
                channel.fail(failure);
                SETUP_FAILED
            }
        };
        sys::exit_immediately(code);
    }
    drop(to_sandbox_write);
    drop(to_init_read);
    // Only the program's processes may hold the spawner's socket: when they are gone, it ends.
    drop(spawner);
    // Wait until the init has unshared its user namespace, then give it the identity map.
    let mut byte = [0u8; 1];
    if matches!(rustix::io::read(&to_sandbox_read, &mut byte), Ok(1)) {
        // Into the cgroup before it can start anything: it waits for the map below.
        if let Some(dir) = &cgroup_dir {
            write_below(
                "move the init into the sandbox cgroup",
                dir,
                "cgroup.procs",
                &init.to_string(),
            )?;
        }
        let map = "0 0 4294967295\n";
        for file in ["uid_map", "gid_map"] {
            write_below(
                "write the user namespace's id map",
                &host_proc,
                &format!("{init}/{file}"),
                map,
            )?;
        }
        step_io(
            "signal the sandbox init",
            rustix::io::write(&to_init_write, b"1").map_err(io::Error::from),
        )?;
    }
    drop(to_init_write);
    let (_, status) = step_io("wait for the sandbox init", sys::waitpid(init))?;
    if libc::WIFEXITED(status) && matches!(libc::WEXITSTATUS(status), 0 | SETUP_FAILED) {
        return Ok(());
    }
    Err(Failure {
        step: "run the sandbox init",
        errno: 0,
        message: format!("it ended unexpectedly (wait status {status:#x})"),
    })
}

/// What the sandbox process prepared for the init: detached copies of the binds' sources, to be
/// attached inside the user namespace (in the order of `Spec::binds`).
struct Prepared {
    bind_trees: Vec<OwnedFd>,
}

/// Makes `/` read-only recursively, except the guest root and the writable paths, which are
/// cloned before and put back on their own paths after; hides secrets, neighbours and the
/// package state; shows the operation's state at its neutral paths.
fn make_host_read_only(spec: &Spec) -> Step<Prepared> {
    // The sources of binds and state are cloned first, while their host paths are still
    // visible: the package state is hidden below.
    let package_state = match &spec.package_state {
        Some(dir) => Some(step("open the package state", GuestRoot::open(dir))?),
        None => None,
    };
    let bind_trees = mount::clone_database_trees(
        package_state.as_ref(),
        spec.binds
            .iter()
            .map(|bind| (bind.host.as_path(), bind.access)),
    )
    .map_err(|(name, e)| Failure::new(name, &e))?;
    let mut state_trees = Vec::new();
    for state in &spec.state {
        if !is_plain_relative(&state.name) {
            return Err(Failure {
                step: "show tool state",
                errno: libc::EINVAL,
                message: format!("`{}` is not a plain relative name", state.name.display()),
            });
        }
        let tree = step(
            "clone tool state for mounting",
            mount::clone_source(package_state.as_ref(), &state.host),
        )?;
        // Writable state is data that the operation's processes wrote: never executed. Its
        // symlinks stay usable: apt links the indexes of `file:` repositories into its lists
        // instead of copying them (what a planted link could make a tool read is the sandbox's
        // view, which holds no secret; writes stay inside the write boundary). Read-only state
        // may hold the libraries the tools load (the rpm plugin, the exec hook).
        step(
            "set the attributes of a tool state mount",
            mount::set_bind_attributes(
                &tree,
                &state.host,
                state.access,
                mount::Hostility {
                    noexec: true,
                    nosymfollow: false,
                },
            ),
        )?;
        state_trees.push((state, tree));
    }

    let mut keep: Vec<&Path> = Vec::new();
    if let Some(root) = &spec.guest_root {
        keep.push(root);
    }
    keep.extend(spec.writable.iter().map(PathBuf::as_path));
    let mut clones = Vec::new();
    for path in keep {
        let target = step_io(
            "open a writable path",
            rustix::fs::open(
                path,
                rustix::fs::OFlags::PATH
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        )?;
        let tree = step("clone a writable path", mount::clone_tree(path))?;
        clones.push((path, target, tree));
    }
    let needed = needed_paths(spec);
    let run = Path::new("/run");
    let cover_run = run.is_dir() && !needed.iter().any(|n| n.starts_with(run));
    // Name lookups may need the file /etc/resolv.conf points to below /run
    // (systemd-resolved's stub): its directory is shown again, read-only, on the new /run.
    let resolver_dir = if cover_run {
        resolver_directory()
            .map(|dir| {
                step("clone the resolver's directory", mount::clone_tree(&dir)).map(|t| (dir, t))
            })
            .transpose()?
    } else {
        None
    };
    step(
        "make the host read-only",
        mount::make_read_only_recursive(Path::new("/")),
    )?;
    for (path, target, tree) in clones {
        if spec.guest_root.as_deref() == Some(path) {
            // Device nodes in a guest root are the guest's business, not a way to the host's
            // disks: none work there; the guest gets a fresh minimal /dev below instead.
            step("protect the guest root", mount::set_nodev(&tree, path))?;
        }
        step(
            "put a writable path back",
            mount::attach(&tree, target.as_fd(), path),
        )?;
    }
    // The host's /dev holds the disks, and root in the user namespace is host uid 0: replace it
    // with a minimal one.
    step(
        "mount a minimal /dev",
        mount::mount_minimal_dev(Path::new("/dev")),
    )?;
    step(
        "hide host secrets and other guests",
        crate::hide::hide_from_sandbox(&spec.hide_siblings, &needed),
    )?;
    if let Some(dir) = &spec.package_state {
        step(
            "hide the package state",
            crate::hide::hide_paths(std::slice::from_ref(dir), &needed),
        )?;
    }
    if cover_run {
        // The host's /run holds the sockets of its daemons (systemd, D-Bus, container engines),
        // and a socket on a read-only mount still accepts connections from host uid 0.
        step(
            "mount a fresh /run",
            mount::mount_at(
                &FileSystem::Tmpfs {
                    mode: 0o755,
                    size: Some(1 << 20),
                },
                run,
            ),
        )?;
        if let Some((dir, tree)) = resolver_dir {
            step_io(
                "create the resolver's directory",
                std::fs::create_dir_all(&dir),
            )?;
            let target = open_dir("open the resolver's directory", &dir)?;
            step(
                "show the resolver's directory",
                mount::attach(&tree, target.as_fd(), &dir),
            )?;
        }
    } else if !state_trees.is_empty() {
        return Err(Failure {
            step: "show tool state",
            errno: libc::EBUSY,
            message: "the host has no /run, or a path the operation needs lies below it, so the \
                      sandbox cannot put a fresh /run in its place"
                .to_string(),
        });
    }
    for (state, tree) in state_trees {
        let path = operation_path(&state.name);
        step_io(
            "create a tool state directory",
            std::fs::create_dir_all(&path),
        )?;
        let target = open_dir("open a tool state directory", &path)?;
        step(
            "show tool state",
            mount::attach(&tree, target.as_fd(), &path),
        )?;
    }
    if cover_run {
        step("make /run read-only", mount::make_top_read_only(run))?;
    }
    if let (Some(root), true) = (&spec.guest_root, spec.guest_dev) {
        let root = step("open the guest root", GuestRoot::open(root))?;
        mount::mount_minimal_dev_in_guest(&root).map_err(|(name, e)| Failure::new(name, &e))?;
    }
    Ok(Prepared { bind_trees })
}

/// Whether `name` is relative, non-empty and made of normal components only.
fn is_plain_relative(name: &Path) -> bool {
    name.components().next().is_some()
        && name
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// The directory below `/run` that holds the file `/etc/resolv.conf` points to, if it does.
fn resolver_directory() -> Option<PathBuf> {
    let target = std::fs::canonicalize("/etc/resolv.conf").ok()?;
    let dir = target.parent()?.to_path_buf();
    (dir.starts_with("/run") && dir != Path::new("/run") && dir.is_dir()).then_some(dir)
}

/// What the program needs to see: the guest root, the writable paths, the program itself, its
/// working directory and this binary. (The binds' and the state's sources are mounted from
/// copies taken before anything was hidden.)
fn needed_paths(spec: &Spec) -> Vec<PathBuf> {
    let path_var = path_var(spec);
    spec.guest_root
        .iter()
        .chain(&spec.writable)
        .chain(&spec.cwd)
        .cloned()
        .chain(find_program(&spec.program, &path_var))
        .chain(std::env::current_exe().ok())
        .collect()
}

/// The init's parent-death signal: blocked, and taken by [`sys::wait_for_signal`] in the init's
/// wait loop, so that the init, instead of dying at once, kills the program's cgroup and reaps
/// all of it first ([`end_operation`]).
const PARENT_DIED: libc::c_int = libc::SIGUSR1;
/// How often the init's wait loop looks again without a signal (a safety net only).
const INIT_POLL: Duration = Duration::from_millis(500);

/// The init: pid 1 of the new pid namespace (or a plain process of a joined guest's).
///
/// It is a child subreaper and reaps everything of the operation before it exits: see
/// [`end_operation`] for why that matters on a running guest.
fn run_init(
    spec: &Spec,
    channel: &Channel,
    prepared: &Prepared,
    program_cgroup: Option<&OwnedFd>,
    spawner: Option<&OwnedFd>,
    to_sandbox: OwnedFd,
    from_sandbox: OwnedFd,
) -> Step<()> {
    // Blocked before the parent-death signal is set, so that it waits for the loop below. With
    // no program cgroup to kill through, dying at once (SIGKILL) is all the init can do.
    let parent_death_signal = if program_cgroup.is_some() {
        step_io(
            "block the init's signals",
            sys::block_signals(&[PARENT_DIED, libc::SIGCHLD]),
        )?;
        rustix::process::Signal::from_named_raw(PARENT_DIED)
    } else {
        None
    };
    step_io(
        "set the parent-death signal",
        rustix::process::set_parent_process_death_signal(Some(
            parent_death_signal.unwrap_or(rustix::process::Signal::KILL),
        ))
        .map_err(io::Error::from),
    )?;
    // In a joined guest's pid namespace, what the program's processes leave behind (a script's
    // daemon, a child whose parent was killed) comes to us instead of to the guest's pid 1.
    step_io("become a child subreaper", sys::set_child_subreaper())?;
    // Read-only: `/proc/sysrq-trigger` and friends check only file ownership, and root in our
    // user namespace is host uid 0.
    step(
        "mount /proc",
        mount::mount_at(&FileSystem::Proc, Path::new("/proc")),
    )?;

    if let (true, Some(root)) = (spec.guest_proc, &spec.guest_root) {
        let root = step("open the guest root", GuestRoot::open(root))?;
        step(
            "mount the guest's /proc",
            crate::mount::mount_into(&root, &FileSystem::Proc, "/proc"),
        )?;
    }
    step(
        "create the user namespace",
        namespaces::unshare(
            UnshareFlags::NEWUSER | UnshareFlags::NEWNS,
            "create user and mount namespaces",
        ),
    )?;
    step_io(
        "signal the sandbox",
        rustix::io::write(&to_sandbox, b"1").map_err(io::Error::from),
    )?;
    let mut byte = [0u8; 1];
    if !matches!(rustix::io::read(&from_sandbox, &mut byte), Ok(1)) {
        return Err(Failure {
            step: WAIT_FOR_ID_MAP,
            errno: 0,
            message: "the sandbox process went away".to_string(),
        });
    }
    drop(to_sandbox);
    drop(from_sandbox);
    // The namespace as it is now, before the binds: what the program's scripts enter. Then a
    // copy of it for the program, where the databases are mounted.
    let scriptlet_namespace = if spec.scriptlet_namespace {
        let fd = step_io(
            "keep the scriptlet mount namespace",
            rustix::fs::open(
                "/proc/self/ns/mnt",
                rustix::fs::OFlags::RDONLY,
                rustix::fs::Mode::empty(),
            )
            .map_err(io::Error::from),
        )?;
        step(
            "create the program's mount namespace",
            namespaces::unshare(UnshareFlags::NEWNS, "create a mount namespace"),
        )?;
        Some(fd)
    } else {
        None
    };
    if let Some(root) = &spec.guest_root {
        let root = step("open the guest root", GuestRoot::open(root))?;
        for (bind, tree) in spec.binds.iter().zip(&prepared.bind_trees) {
            step(
                "bind-mount into the guest",
                crate::mount::attach_into(&root, tree, &bind.guest, &bind.host),
            )?;
        }
    }
    let mut private_tmp = Vec::new();
    if spec.private_tmp {
        for dir in ["/tmp", "/var/tmp"] {
            let covers_kept_path = spec
                .guest_root
                .iter()
                .chain(&spec.writable)
                .chain(spec.binds.iter().map(|b| &b.host))
                .any(|kept| kept.starts_with(dir));
            if Path::new(dir).is_dir() {
                let fresh = FileSystem::Tmpfs {
                    mode: 0o1777,
                    size: None,
                };
                step(
                    "mount a private /tmp",
                    if covers_kept_path {
                        // The guest root (or a writable path) lies below it: what it held is
                        // shown again on the fresh instance, at the same paths.
                        mount::mount_keeping_entries(&fresh, Path::new(dir))
                    } else {
                        mount::mount_at(&fresh, Path::new(dir))
                    },
                )?;
                private_tmp.push(PathBuf::from(dir));
            }
        }
    }
    // The init's root is the sandbox's view of the host, and its /proc entry is what a script
    // that runs as the same user would use to get there (`/proc/1/root`): only CAP_SYS_PTRACE
    // may follow it now.
    step_io("make the init not dumpable", sys::set_not_dumpable())?;
    let exec = prepare_exec(spec, channel, &private_tmp, scriptlet_namespace.as_ref())?;
    // SAFETY: single-threaded process (a fork of the single-threaded sandbox process).
    let program = step_io("fork the program", unsafe { sys::fork() })?;
    if program == 0 {
        let failure = exec_program(spec, &exec, program_cgroup, spawner);
        channel.fail(failure);
        sys::exit_immediately(127);
    }
    // The program stays in the caller's process group (a terminal's signals and job control are
    // its business); the init leaves it, so that a SIGKILL to that whole group (`kill -9 -PGID`,
    // `timeout -s KILL`) leaves it alive to kill and reap what the program started. Were it
    // killed together with them, whatever died after it would be left as a zombie under a
    // joined guest's pid 1. Best effort: without it the guardian still kills the cgroup.
    let _ = sys::leave_process_group();
    let Some(program_cgroup) = program_cgroup else {
        // No cgroup to kill through: reap until the program ends, then leave (as pid 1, taking
        // the rest of the namespace with us; in a joined guest's, leftovers stay).
        loop {
            match sys::waitpid(-1) {
                Ok((pid, status)) if pid == program => {
                    channel.send(&Message::Exited(status));
                    return Ok(());
                }
                Ok(_) => continue,
                Err(e) => return Err(Failure::io("wait for the program", &e)),
            }
        }
    };
    end_operation(channel, program, program_cgroup)
}

/// The init's wait loop: reaps every process that ends; when the program ends, reports its
/// status; when the program ends or the sandbox process dies (the caller was killed, or the
/// time limit expired), kills the program's cgroup — the program and everything it started,
/// stopped or not — and returns only once nothing of it is left, every one reaped.
///
/// Why the init does this itself, and not only the guardian: on a running guest the operation
/// runs in the guest's pid namespace, where whatever loses its parent goes to the guest's pid 1.
/// A pid 1 that never reaps (busybox `sleep`, a shell's `exec sleep`) then keeps every process
/// of the operation that dies there as a zombie for the guest's lifetime: its pid stays taken,
/// and a dnf zombie keeps dnf's lock files valid, so every later dnf waits for it for ever. The
/// init is a child subreaper and outlives the kill, so every process of the operation dies as
/// its child or descendant and is reaped here. A nested pid namespace of the operation's own
/// would also take everything with its init, but would hide the guest's processes from the
/// package scripts, which must see them (a `%post` that signals a daemon through its pid file).
fn end_operation(channel: &Channel, program: libc::pid_t, program_cgroup: &OwnedFd) -> Step<()> {
    let mut killed = false;
    let kill = |killed: &mut bool| -> Step<()> {
        if !*killed {
            *killed = true;
            write_below(
                "kill the program's cgroup",
                program_cgroup,
                "cgroup.kill",
                "1",
            )?;
        }
        Ok(())
    };
    loop {
        match sys::try_wait_any() {
            Ok(Some((pid, status))) => {
                // Only a status of its own: once we killed it (the caller gone, or its time
                // limit expired) the caller must not take our kill for the program's result.
                if pid == program && !killed {
                    channel.send(&Message::Exited(status));
                    kill(&mut killed)?;
                }
                continue;
            }
            Ok(None) => {}
            // Nothing left: the program and everything of it are gone and reaped.
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => return Ok(()),
            Err(e) => return Err(Failure::io("wait for the program", &e)),
        }
        if sys::wait_for_signal(&[PARENT_DIED, libc::SIGCHLD], INIT_POLL) == Some(PARENT_DIED) {
            kill(&mut killed)?;
        }
    }
}

/// The program's path and C strings, built before the fork.
struct Exec {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: PathBuf,
    sync_filter: Option<seccomp::Filter>,
    /// Where the program may write (`None`: no write boundary, the administrator's choice on a
    /// kernel without Landlock).
    write_boundary: Option<Vec<PathBuf>>,
}

fn prepare_exec(
    spec: &Spec,
    channel: &Channel,
    private_tmp: &[PathBuf],
    scriptlet_namespace: Option<&OwnedFd>,
) -> Step<Exec> {
    let nul = |what: &'static str| Failure {
        step: what,
        errno: libc::EINVAL,
        message: "contains a NUL byte".to_string(),
    };
    let path_var = path_var(spec);
    let program = find_program(&spec.program, &path_var).ok_or_else(|| Failure {
        step: "find the program",
        errno: libc::ENOENT,
        message: format!("`{}` not found in PATH", spec.program.to_string_lossy()),
    })?;
    let program = CString::new(program.as_os_str().as_bytes())
        .map_err(|_| nul("prepare the program path"))?;
    let mut argv =
        vec![CString::new(spec.program.as_bytes()).map_err(|_| nul("prepare arguments"))?];
    for arg in &spec.args {
        argv.push(CString::new(arg.as_bytes()).map_err(|_| nul("prepare arguments"))?);
    }
    let mut env: Vec<(OsString, OsString)> = spec.env.clone();
    // The tools' temporary files go to the private /tmp, unless the command's environment names
    // another place (the package back ends clear it).
    if private_tmp.iter().any(|p| p == Path::new("/tmp")) && !env.iter().any(|(k, _)| k == "TMPDIR")
    {
        env.push(("TMPDIR".into(), "/tmp".into()));
    }
    if let (Some(fd), Some(root)) = (scriptlet_namespace, &spec.guest_root) {
        env.push((
            crate::SCRIPTLET_MOUNT_NS_VAR.into(),
            fd.as_raw_fd().to_string().into(),
        ));
        env.push((crate::SCRIPTLET_ROOT_VAR.into(), root.clone().into()));
    }
    if spec.script_guest.is_some() {
        env.push((
            crate::guest_spawn::SPAWNER_VAR.into(),
            crate::guest_spawn::SPAWNER_FD.to_string().into(),
        ));
    }
    let mut envp = Vec::new();
    for (key, value) in &env {
        let mut entry = key.as_bytes().to_vec();
        entry.push(b'=');
        entry.extend_from_slice(value.as_bytes());
        envp.push(CString::new(entry).map_err(|_| nul("prepare the environment"))?);
    }
    let cwd = spec
        .cwd
        .clone()
        .or_else(|| spec.guest_root.clone())
        .unwrap_or_else(|| PathBuf::from("/"));
    let sync_filter = if spec.skip_fsync {
        seccomp::sync_skipping_filter()
    } else {
        None
    };
    let write_boundary = if crate::landlock::write_boundary_available() {
        Some(write_boundary(spec, private_tmp))
    } else if spec.allow_no_write_boundary {
        channel.send(&Message::Note(format!(
            "no write boundary: this kernel has no Landlock, and {}=1 allows that",
            crate::landlock::OPT_OUT_VAR
        )));
        None
    } else {
        return Err(Failure {
            step: "set up the write boundary",
            errno: libc::EOPNOTSUPP,
            message: format!(
                "this kernel has no Landlock (ABI 3, Linux 6.2 or later, with landlock in its \
                 `lsm=` list): refusing to run package tools without a write boundary; set {}=1 \
                 to run them anyway",
                crate::landlock::OPT_OUT_VAR
            ),
        });
    };
    Ok(Exec {
        program,
        argv,
        envp,
        cwd,
        sync_filter,
        write_boundary,
    })
}

/// Where the program may write: what [`SandboxCommand::writes_only_beneath`] named, or the guest
/// root, the writable paths, the writable state and the private `/tmp`s; `/dev` either way.
fn write_boundary(spec: &Spec, private_tmp: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = crate::landlock::always_writable()
        .iter()
        .map(|p| p.to_path_buf())
        .collect();
    match &spec.writes_only_beneath {
        Some(only) => dirs.extend(only.iter().cloned()),
        None => {
            dirs.extend(spec.guest_root.iter().cloned());
            dirs.extend(spec.writable.iter().cloned());
            dirs.extend(
                spec.state
                    .iter()
                    .filter(|s| s.access == Access::ReadWrite)
                    .map(|s| operation_path(&s.name)),
            );
            dirs.extend(private_tmp.iter().cloned());
        }
    }
    dirs
}

/// The program's `PATH`, or the default one.
fn path_var(spec: &Spec) -> OsString {
    spec.env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| DEFAULT_PATH.into())
}

fn find_program(program: &OsStr, path_var: &OsStr) -> Option<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(program));
    }
    std::env::split_paths(path_var)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            rustix::fs::access(candidate, rustix::fs::Access::EXEC_OK).is_ok()
                && candidate.is_file()
        })
}

/// The program's process: confine, then exec. Returns only on failure.
fn exec_program(
    spec: &Spec,
    exec: &Exec,
    program_cgroup: Option<&OwnedFd>,
    spawner: Option<&OwnedFd>,
) -> Failure {
    let run = || -> Step<()> {
        if let Some(client) = spawner {
            step_io(
                "hand the guest spawner to the program",
                crate::guest_spawn::hand_to_program(client),
            )?;
        }
        step_io(
            "set the parent-death signal",
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(io::Error::from),
        )?;
        // The init blocks its signals for its wait loop; the mask would survive exec.
        step_io("unblock signals", sys::unblock_all_signals())?;
        // Into the program's cgroup before anything runs, so that everything the program starts
        // is there for the init to kill (first: the write boundary below forbids the write).
        if let Some(dir) = program_cgroup {
            write_below("move the program into its cgroup", dir, "cgroup.procs", "0")?;
        }
        step_io(
            "change directory",
            rustix::process::chdir(&exec.cwd).map_err(io::Error::from),
        )?;
        // Rust ignores SIGPIPE; the program expects the default.
        for signal in [
            libc::SIGPIPE,
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
        ] {
            sys::set_signal_ignored(signal, false);
        }
        step_io(
            "drop capabilities",
            restrict_capabilities(spec.capabilities.kept()),
        )?;
        step_io("set no_new_privs", set_no_new_privs())?;
        if let Some(dirs) = &exec.write_boundary {
            step_io(
                "set the write boundary (Landlock)",
                crate::landlock::restrict_writes_beneath(dirs),
            )?;
        }
        // Last: the setup above may sync whatever it likes; from here on the program may not.
        if let Some(filter) = &exec.sync_filter {
            step_io(
                "install the fsync-skipping filter",
                seccomp::install(filter),
            )?;
        }
        Ok(())
    };
    if let Err(failure) = run() {
        return failure;
    }
    let argv: Vec<*const libc::c_char> = exec
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = exec
        .envp
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let error = sys::execve(&exec.program, &argv, &envp);
    Failure::io("execute the program", &error)
}
