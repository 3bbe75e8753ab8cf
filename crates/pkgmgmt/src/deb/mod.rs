//! The dpkg/apt back end: the host's `dpkg`, `apt-get` and `apt-cache` run on a guest inside the
//! per-operation sandbox, with the guest's dpkg database bind-mounted onto its `/var/lib/dpkg`
//! for that call only.
//!
//! # Why a bind mount and not `--admindir`
//!
//! dpkg refuses an admin directory outside its `--root` for every package with maintainer
//! scripts ("admindir must be inside instdir"): the scripts run chrooted and must find the
//! database at `/var/lib/dpkg` (`dpkg-query`, `dpkg-divert`, `update-alternatives`,
//! `dpkg-trigger` all read it). So the database lives in `.pkg/G/dpkg/state` and each operation's
//! sandbox binds it onto the guest's `/var/lib/dpkg` with [`vserver_sandbox::bind_into`], which
//! refuses a target reached through a symlink the guest planted. Outside an operation the guest's
//! `/var/lib/dpkg` is an empty directory.
//!
//! ```text
//! .pkg/G/dpkg/state/        the dpkg admin directory (status, info/, triggers/, updates/…)
//! .pkg/G/dpkg/log/          dpkg's log
//! .pkg/G/apt/etc/           apt.conf (generated), apt.conf.d/, sources.list, trusted.gpg.d/…
//! .pkg/G/apt/hook/          the exec hook preloaded into apt and dpkg
//! .pkg/G/apt/state/         apt's lists and extended_states
//! .pkg/G/apt/cache/         downloaded packages (archives/) and apt's binary caches
//! .pkg/G/apt/log/           apt's history and terminal logs
//! ```
//!
//! In the sandbox they appear at neutral paths (`/run/vserver-op/apt/etc`…; module `layout`):
//! the configuration and the hook read-only, apt's and dpkg's state writable, the database only
//! through its mount in the guest.
//!
//! apt gets its configuration from `APT_CONFIG` (module `aptconf`) and runs the host's dpkg with
//! `--root` — through this binary, as its `Dir::Bin::dpkg`: the entry point
//! ([`vserver_sandbox::narrow_exec_env`]) narrows the write boundary to the guest root and
//! dpkg's log before it executes the real dpkg, so dpkg (which does not chroot while it unpacks,
//! and follows the guest's absolute symlinks) and its maintainer scripts cannot write apt's
//! state, whatever they do. The bootstrap of a new guest (module `bootstrap`) is our own: no
//! debootstrap or mmdebstrap, only the host's apt and dpkg.

mod aptconf;
mod bootstrap;
mod toolbox;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use vserver_sandbox::{Access, CapabilityProfile, GuestRoot, SandboxCommand, StdioMode};

use crate::backend::{Family, PackageBackend, Tool, clean_environment};
use crate::error::{Error, Result, output_tail};
use crate::host_fs;
use crate::layout::{
    APT_CACHE, APT_ETC, APT_HOOK, APT_LOG, APT_STATE, DPKG_LOG, DPKG_STATE, PkgLayout,
};

/// What an apt or dpkg operation sees of `.pkg/G`, besides the database's mount.
const DEB_VIEW: &[(&str, Access)] = &[
    (APT_ETC, Access::ReadOnly),
    (APT_HOOK, Access::ReadOnly),
    (APT_STATE, Access::ReadWrite),
    (APT_CACHE, Access::ReadWrite),
    (APT_LOG, Access::ReadWrite),
    (DPKG_LOG, Access::ReadWrite),
];

/// Every directory of the deb back end's state.
const DEB_DIRS: &[&str] = &[
    APT_ETC,
    "apt/etc/apt.conf.d",
    "apt/etc/sources.list.d",
    "apt/etc/preferences.d",
    "apt/etc/trusted.gpg.d",
    APT_HOOK,
    APT_STATE,
    "apt/state/lists/partial",
    APT_CACHE,
    "apt/cache/archives/partial",
    APT_LOG,
    DPKG_STATE,
    DPKG_LOG,
];

/// The host's dpkg, which the entry point executes.
const HOST_DPKG: &str = "/usr/bin/dpkg";

pub use bootstrap::Variant;

/// The guest's dpkg database mount point.
pub const DPKG_MOUNT_POINT: &str = "/var/lib/dpkg";

/// What the deb back end needs to know about the guest's distribution.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DebSettings {
    /// The dpkg architecture (empty: the host's, `dpkg --print-architecture`).
    pub arch: String,
    /// The content of the guest's `sources.list` (one-line format; `[trusted=yes]` on a line is
    /// how a registration marks an unsigned repository as trusted).
    pub sources_list: String,
    /// Keyrings (`.gpg` or `.asc` files on the host) apt verifies `Release` files with.
    pub keyrings: Vec<PathBuf>,
    /// Create the merged-`/usr` links (`/bin` → `usr/bin`…) before anything is unpacked, as
    /// debootstrap and mmdebstrap do for current Debian and Ubuntu releases.
    pub merged_usr: bool,
    /// Let the package manager's output through (otherwise it is captured and shown on failure).
    pub verbose: bool,
    /// Make fsync and friends no-ops for apt, dpkg and the maintainer scripts
    /// ([`SandboxCommand::skip_fsync`]): only for building a new guest, which ends with
    /// [`DebBackend::sync`] and is thrown away if it fails.
    pub skip_fsync: bool,
    /// How long each run of apt or dpkg may take (`None`: [`crate::DEFAULT_TIME_LIMIT`]).
    pub time_limit: Option<Duration>,
}

/// Set for apt and dpkg so that the preloaded hook confines maintainer scripts (the hook's
/// `CONFINE_VAR`).
const CONFINE_MAINTSCRIPTS_VAR: &str = "VSERVER_CONFINE_MAINTSCRIPTS";

/// Where `invoke-rc.d` looks for the local policy.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
/// The policy of an operation on a guest that is not running: every action forbidden (101).
const POLICY_TEXT: &[u8] =
    b"#!/bin/sh\n# vserver: the guest is not running; its init is not asked to act.\nexit 101\n";

/// Removes `/usr/sbin/policy-rc.d` from the guest if it is ours (by content).
fn remove_our_policy(root: &GuestRoot) {
    if root.read(POLICY_RC_D).is_ok_and(|text| text == POLICY_TEXT) {
        let _ = root.remove_file(POLICY_RC_D);
    }
}

/// A host program the deb back end runs on a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebTool {
    /// `dpkg --root=ROOT …` (`vdpkg`).
    Dpkg,
    /// `apt-get …` (`vapt-get`).
    AptGet,
    /// `apt-cache …` (`vapt-cache`).
    AptCache,
}

impl DebTool {
    fn program(self) -> &'static str {
        match self {
            DebTool::Dpkg => "dpkg",
            DebTool::AptGet => "apt-get",
            DebTool::AptCache => "apt-cache",
        }
    }
}

/// The dpkg/apt back end of one guest.
#[derive(Debug, Clone)]
pub struct DebBackend {
    layout: PkgLayout,
    root: PathBuf,
    settings: DebSettings,
    running: Option<vserver_sandbox::RunningGuest>,
    freeze: bool,
    progress: Option<crate::ProgressSink>,
}

/// How a command's output is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Streams {
    /// Captured; shown only on failure (unless verbose).
    Quiet,
    /// The caller's terminal (the `v*` commands).
    Inherit,
    /// Both captured, whatever the verbosity: the caller parses standard output.
    Capture,
}

impl DebBackend {
    /// The back end for the guest whose root is `root` (a trusted host path) and whose state is
    /// `layout`.
    pub fn new(layout: PkgLayout, root: &Path, settings: DebSettings) -> Self {
        DebBackend {
            layout,
            root: root.to_owned(),
            settings,
            running: None,
            freeze: false,
            progress: None,
        }
    }

    /// Reports the progress of the bootstrap's dpkg run and of each `apt-get install` to `sink`
    /// (when the output is captured, that is, not verbose); see module `progress`.
    pub fn progress(mut self, sink: Option<crate::ProgressSink>) -> Self {
        self.progress = sink;
        self
    }

    /// `apt-get ARGS…` (an install), its progress read from its output when wanted.
    pub(crate) fn apt_get_install(&self, args: &[&OsStr]) -> Result<Vec<u8>> {
        let all: Vec<OsString> = args.iter().map(|a| a.to_os_string()).collect();
        let mut command = self.tool_command(DebTool::AptGet, &all)?;
        if let Some(sink) = &self.progress {
            command.observe_stdout_lines(crate::progress::dpkg_observer(sink.clone(), None));
        }
        self.run_checked("apt-get", &mut command, Streams::Quiet)
    }

    /// Works on a running guest: apt and dpkg stay in the sandbox, the maintainer scripts run
    /// in the guest (its namespaces, cgroup and mounts, with dpkg's database shown to them
    /// alone: [`SandboxCommand::scripts_in_running_guest`]), so that `invoke-rc.d` and
    /// `deb-systemd-invoke` reach its init. With [`DebBackend::freeze`], the guest is frozen for
    /// each operation instead and apt and dpkg join its pid, uts and ipc namespaces
    /// ([`SandboxCommand::running_guest`]).
    pub fn running_guest(mut self, guest: Option<vserver_sandbox::RunningGuest>) -> Self {
        self.running = guest;
        self
    }

    /// Freezes a running guest for each operation (`--freeze`); default: it keeps running.
    pub fn freeze(mut self, freeze: bool) -> Self {
        self.freeze = freeze;
        self
    }

    /// The guest's package-state layout.
    pub fn layout(&self) -> &PkgLayout {
        &self.layout
    }

    /// `.pkg/G/dpkg/state`: the dpkg admin directory.
    pub fn dpkg_state(&self) -> PathBuf {
        self.layout.host(DPKG_STATE)
    }

    /// `.pkg/G/apt/etc/apt.conf`: the generated configuration (`APT_CONFIG`).
    pub fn apt_config(&self) -> PathBuf {
        self.layout.host("apt/etc/apt.conf")
    }

    /// Where the sandbox shows a host path: below `.pkg/G` at its neutral path, elsewhere (a
    /// `file:` mirror, say) at its own.
    fn in_sandbox(&self, host: &Path) -> PathBuf {
        match host.strip_prefix(self.layout.dir()) {
            Ok(rel) => vserver_sandbox::operation_path(rel),
            Err(_) => host.to_owned(),
        }
    }

    fn guest(&self) -> String {
        self.layout.guest().to_owned()
    }

    fn host_err(&self, op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
        let layout = self.layout.clone();
        let path = path.to_owned();
        move |e| layout.host_err(op, &path, e)
    }

    fn state_err(&self) -> impl FnOnce(vserver_sandbox::Error) -> Error {
        let layout = self.layout.clone();
        move |source| layout.state_err(source)
    }

    /// Where dpkg, and everything it runs, may write: the guest root (the database is mounted
    /// in it) and dpkg's log.
    fn dpkg_write_boundary(&self) -> [PathBuf; 2] {
        [self.root.clone(), PkgLayout::in_sandbox(DPKG_LOG)]
    }

    /// The environment that makes this binary dpkg's entry point: dpkg's write boundary, and its
    /// database's lock held until the confinement library in dpkg reports in.
    fn dpkg_entry_env(&self) -> (OsString, OsString) {
        let lock = self
            .root
            .join(DPKG_MOUNT_POINT.trim_start_matches('/'))
            .join("lock");
        vserver_sandbox::narrow_exec_env(
            Path::new(HOST_DPKG),
            &self.dpkg_write_boundary(),
            Some(&lock),
        )
    }

    /// Refuses paths that apt's configuration syntax cannot quote.
    fn check_quotable(&self, paths: &[&Path]) -> Result<()> {
        match paths.iter().find(|path| !aptconf::quotable(path)) {
            Some(path) => Err(Error::Host {
                guest: self.guest(),
                op: "use (apt cannot quote it)",
                path: path.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            }),
            None => Ok(()),
        }
    }

    /// The running binary, which is dpkg's entry point.
    fn entry_point(&self) -> Result<PathBuf> {
        std::env::current_exe().map_err(self.host_err("find", Path::new("/proc/self/exe")))
    }

    /// Writes `apt.conf` for this operation (the paths it names are the sandbox's, and the dpkg
    /// entry point is the running binary).
    fn write_apt_config(&self, state: &GuestRoot) -> Result<()> {
        let arch = self.arch()?;
        let entry = self.entry_point()?;
        let text = aptconf::render(
            self.layout.guest(),
            &aptconf::AptPaths {
                root: &self.root,
                etc: &PkgLayout::in_sandbox(APT_ETC),
                state: &PkgLayout::in_sandbox(APT_STATE),
                cache: &PkgLayout::in_sandbox(APT_CACHE),
                log: &PkgLayout::in_sandbox(APT_LOG),
                dpkg_log: &PkgLayout::in_sandbox(DPKG_LOG),
                dpkg: &entry,
            },
            &arch,
        );
        self.check_quotable(&[&self.root, &entry])?;
        self.layout
            .write_trusted(state, "apt/etc/apt.conf", text.as_bytes())
    }

    fn guest_err(&self) -> impl FnOnce(vserver_sandbox::Error) -> Error {
        let guest = self.guest();
        move |source| Error::Guest {
            guest,
            source: Box::new(source),
        }
    }

    fn arch(&self) -> Result<String> {
        if !self.settings.arch.is_empty() {
            return Ok(self.settings.arch.clone());
        }
        let output = std::process::Command::new("dpkg")
            .arg("--print-architecture")
            .output()
            .map_err(self.host_err("run", Path::new("dpkg")))?;
        let arch = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if !output.status.success() || arch.is_empty() {
            return Err(Error::ToolFailed {
                guest: self.guest(),
                command: "dpkg --print-architecture".into(),
                status: output.status,
                stderr_tail: output_tail(&output.stderr, 4),
            });
        }
        Ok(arch)
    }

    /// The guest root, opened through the safe-path layer.
    fn guest_root(&self) -> Result<GuestRoot> {
        GuestRoot::open(&self.root).map_err(self.guest_err())
    }

    /// A sandboxed command running `program` on this guest, database bound in.
    fn command(
        &self,
        program: impl AsRef<OsStr>,
        profile: CapabilityProfile,
    ) -> Result<SandboxCommand> {
        let root = self.guest_root()?;
        let has_proc = matches!(
            root.symlink_metadata("/proc"),
            Ok(info) if info.kind == vserver_sandbox::FileKind::Dir
        );
        let state = self.layout.ensure_dirs(DEB_DIRS)?;
        self.layout.remove_planted(&state, &[APT_ETC, APT_HOOK])?;
        self.write_apt_config(&state)?;
        // Preloaded into apt and dpkg, the plugin library confines each maintainer script just
        // before dpkg executes it (crates/rpm-plugin/src/exec_hook.rs). Without it no script
        // runs at all: the database they live in is mounted noexec.
        let plugin = crate::find_rpm_plugin()?;
        let hook = crate::plugin::install_copy(&self.layout, &state, &plugin, APT_HOOK)?;
        let mut command = SandboxCommand::new(program);
        clean_environment(&mut command, Path::new("/root"));
        let (entry_var, entry_value) = self.dpkg_entry_env();
        command
            .env("LD_PRELOAD", vserver_sandbox::operation_path(&hook))
            .env(CONFINE_MAINTSCRIPTS_VAR, "1")
            .env(
                "APT_CONFIG",
                PkgLayout::in_sandbox(APT_ETC).join("apt.conf"),
            )
            .env(entry_var, entry_value)
            .env(
                "DEBIAN_FRONTEND",
                std::env::var_os("DEBIAN_FRONTEND").unwrap_or_else(|| "noninteractive".into()),
            )
            .env("DEBCONF_NONINTERACTIVE_SEEN", "true")
            .guest_root(&self.root)
            .bind(self.dpkg_state(), DPKG_MOUNT_POINT, Access::ReadWrite)
            .guest_proc(has_proc)
            .hostname(self.layout.guest())
            .capabilities(profile)
            .skip_fsync(self.settings.skip_fsync)
            .time_limit(Some(
                self.settings
                    .time_limit
                    .unwrap_or(crate::DEFAULT_TIME_LIMIT),
            ))
            // A maintainer script can leave dpkg's chroot (see docs/security.md): other guests and
            // their package state must not be there to read.
            .hide_siblings_of(&self.root)
            .hide_siblings_of(self.layout.dir());
        self.layout.show_in(&mut command, DEB_VIEW);
        match &self.running {
            Some(guest) if !self.freeze => {
                // (apt keeps the spawner's descriptor open for dpkg: `APT::Keep-Fds`.)
                command.scripts_in_running_guest(guest);
            }
            Some(guest) => {
                command.env("SYSTEMD_OFFLINE", "1").running_guest(guest);
            }
            None => {
                command.env("SYSTEMD_OFFLINE", "1");
            }
        }
        Ok(command)
    }

    fn tool_command(&self, tool: DebTool, args: &[OsString]) -> Result<SandboxCommand> {
        // dpkg chroots into the guest to run maintainer scripts: it needs CAP_SYS_CHROOT (and apt,
        // whose bounding set its dpkg inherits).
        let program = match tool {
            // dpkg runs through its entry point, as under apt (see `dpkg_entry_env`).
            DebTool::Dpkg => self.entry_point()?.into_os_string(),
            _ => tool.program().into(),
        };
        let mut command = self.command(&program, CapabilityProfile::ChrootingTool)?;
        if tool == DebTool::Dpkg {
            let mut root = OsString::from("--root=");
            root.push(&self.root);
            command.arg(root);
            // dpkg's default log is the host's /var/log/dpkg.log (read-only in the sandbox);
            // the guest's log is kept outside the guest, where the guest cannot rewrite it.
            let mut log = OsString::from("--log=");
            log.push(PkgLayout::in_sandbox(DPKG_LOG).join("dpkg.log"));
            command.arg(log);
        }
        command.args(args);
        Ok(command)
    }

    /// Runs a prepared command under the lock; returns its status, stdout and stderr.
    fn run(
        &self,
        tool: &str,
        command: &mut SandboxCommand,
        streams: Streams,
    ) -> Result<(ExitStatus, Vec<u8>, Vec<u8>)> {
        let _lock = self.layout.lock_external()?;
        self.run_locked(tool, command, streams)
    }

    fn run_locked(
        &self,
        tool: &str,
        command: &mut SandboxCommand,
        streams: Streams,
    ) -> Result<(ExitStatus, Vec<u8>, Vec<u8>)> {
        let verbose = self.settings.verbose;
        match streams {
            Streams::Inherit => command
                .stdout(StdioMode::Inherit)
                .stderr(StdioMode::Inherit),
            Streams::Quiet if verbose => command
                .stdout(StdioMode::Inherit)
                .stderr(StdioMode::Inherit),
            Streams::Quiet | Streams::Capture => command
                .stdout(StdioMode::Capture)
                .stderr(StdioMode::Capture),
        };
        let policy = self.place_policy()?;
        // On every error, the caller's lock is released on the way out.
        let finished = command.status();
        if let Some(root) = policy {
            remove_our_policy(&root);
        }
        let finished =
            finished.map_err(|source| Error::sandbox(self.layout.guest(), tool, source))?;
        Ok((finished.status, finished.stdout, finished.stderr))
    }

    /// On a guest that is not running (or frozen), tells the maintainer scripts that the init
    /// system is not to be asked, as debootstrap and mmdebstrap do: `invoke-rc.d` (and
    /// `deb-systemd-invoke`) find a `/usr/sbin/policy-rc.d` that answers 101 ("action
    /// forbidden"). Written through the safe-path layer only where the guest has none of its
    /// own, and removed after the operation (and by the next one, should it be left over): the
    /// guest runs no process meanwhile, so none sees it. Returns the guest root to remove it
    /// from. On a running guest, a leftover of ours is removed and nothing is placed.
    fn place_policy(&self) -> Result<Option<GuestRoot>> {
        let root = match GuestRoot::open(&self.root) {
            Ok(root) => root,
            // A build before the root exists: nothing to tell.
            Err(_) => return Ok(None),
        };
        if self.running.is_some() && !self.freeze {
            remove_our_policy(&root);
            return Ok(None);
        }
        let is_dir = matches!(
            root.metadata("/usr/sbin"),
            Ok(info) if info.kind == vserver_sandbox::FileKind::Dir
        );
        if !is_dir {
            return Ok(None);
        }
        match root.symlink_metadata(POLICY_RC_D) {
            Ok(_) if root.read(POLICY_RC_D).is_ok_and(|text| text == POLICY_TEXT) => {}
            // The guest's own policy: it applies, as it would inside the guest.
            Ok(_) => return Ok(None),
            Err(_) => root
                .write_atomic(POLICY_RC_D, POLICY_TEXT, 0o755)
                .map_err(self.guest_err())?,
        }
        Ok(Some(root))
    }

    /// Runs a command that must succeed; returns its captured standard output.
    fn run_checked(
        &self,
        tool: &str,
        command: &mut SandboxCommand,
        streams: Streams,
    ) -> Result<Vec<u8>> {
        let _lock = self.layout.lock_external()?;
        if self.settings.verbose {
            eprintln!("guest `{}`: running {command}", self.layout.guest());
        }
        let (status, stdout, stderr) = self.run_locked(tool, command, streams)?;
        if status.success() {
            return Ok(stdout);
        }
        // A failure's error leads with the cause; the command line and the whole output go to
        // the operation log it names (module `oplog`), written under the lock.
        Err(crate::oplog::tool_failure(
            &self.layout,
            &crate::oplog::FailedRun {
                tool,
                command,
                status,
                stdout: &stdout,
                stderr: &stderr,
            },
        ))
    }

    /// `apt-get ARGS` on the guest, output quiet unless verbose.
    fn apt_get(&self, args: &[&OsStr]) -> Result<Vec<u8>> {
        let args: Vec<OsString> = args.iter().map(|a| a.to_os_string()).collect();
        let mut command = self.tool_command(DebTool::AptGet, &args)?;
        self.run_checked("apt-get", &mut command, Streams::Quiet)
    }

    /// `apt-get ARGS` on the guest; returns its standard output.
    fn apt_get_output(&self, args: &[&OsStr]) -> Result<Vec<u8>> {
        let args: Vec<OsString> = args.iter().map(|a| a.to_os_string()).collect();
        let mut command = self.tool_command(DebTool::AptGet, &args)?;
        self.run_checked("apt-get", &mut command, Streams::Capture)
    }

    /// Runs `tool` with the user's `args` on the guest, streaming its output; returns its status.
    pub fn run_program(&self, tool: DebTool, args: &[OsString]) -> Result<ExitStatus> {
        let mut command = self.tool_command(tool, args)?;
        Ok(self.run(tool.program(), &mut command, Streams::Inherit)?.0)
    }

    /// Flushes the guest root's file system and the one holding `.pkg/G` (after a build).
    pub fn sync(&self) -> Result<()> {
        self.guest_root()?
            .sync_filesystem()
            .map_err(self.guest_err())?;
        self.layout.sync_state()
    }

    /// Whether the guest's `/var/lib/dpkg` holds nothing (as it must outside an operation).
    pub fn mount_point_is_empty(&self) -> Result<bool> {
        let root = self.guest_root()?;
        match root.read_dir(DPKG_MOUNT_POINT) {
            Ok(entries) => Ok(entries.is_empty()),
            Err(source) => Err(Error::Guest {
                guest: self.guest(),
                source: Box::new(source),
            }),
        }
    }

    /// Copies keyrings into `trusted.gpg.d` (apt accepts only `.gpg` and `.asc` names there).
    fn copy_keyrings(&self, state: &GuestRoot, keys: &[PathBuf]) -> Result<()> {
        for key in keys {
            let content = host_fs::read(key).map_err(self.host_err("read", key))?;
            let armoured = content.starts_with(b"-----BEGIN PGP");
            let stem = key
                .file_stem()
                .map(|s| s.to_string_lossy().replace('/', "_"))
                .filter(|s| !s.is_empty() && !s.starts_with('.'))
                .unwrap_or_else(|| "key".into());
            let name = format!("{stem}.{}", if armoured { "asc" } else { "gpg" });
            self.layout.write_trusted(
                state,
                Path::new("apt/etc/trusted.gpg.d").join(name),
                &content,
            )?;
        }
        Ok(())
    }
}

impl PackageBackend for DebBackend {
    fn family(&self) -> Family {
        Family::Deb
    }

    fn prepare(&self) -> Result<()> {
        self.check_quotable(&[&self.root, self.layout.dir()])?;
        let state = self.layout.ensure_dirs(DEB_DIRS)?;
        self.write_apt_config(&state)?;
        self.layout.write_trusted(
            &state,
            "apt/etc/sources.list",
            self.settings.sources_list.as_bytes(),
        )?;
        self.copy_keyrings(&state, &self.settings.keyrings)?;
        let root = self.guest_root()?;
        root.mkdir_all(DPKG_MOUNT_POINT, 0o755)
            .map_err(self.guest_err())?;
        Ok(())
    }

    fn initialize_database(&self) -> Result<()> {
        let state = self.layout.ensure_dirs(&[
            "dpkg/state/info",
            "dpkg/state/updates",
            "dpkg/state/triggers",
            "dpkg/state/alternatives",
            "dpkg/state/parts",
        ])?;
        for file in ["status", "available"] {
            let path = Path::new(DPKG_STATE).join(file);
            if !state.exists(&path).map_err(self.state_err())? {
                self.layout.write_trusted(&state, &path, b"")?;
            }
        }
        // dpkg itself checks the result, through the bind mount, inside the sandbox.
        let mut command = self.tool_command(DebTool::Dpkg, &[OsString::from("--audit")])?;
        self.run_checked("dpkg", &mut command, Streams::Quiet)?;
        Ok(())
    }

    fn import_keys(&self, keys: &[PathBuf]) -> Result<()> {
        let state = self.layout.ensure_dirs(&["apt/etc/trusted.gpg.d"])?;
        self.copy_keyrings(&state, keys)
    }
    fn install(&self, packages: &[String]) -> Result<()> {
        if packages.is_empty() {
            return Ok(());
        }
        let mut args: Vec<&OsStr> = vec![OsStr::new("-y"), OsStr::new("install")];
        args.extend(packages.iter().map(OsStr::new));
        self.apt_get_install(&args).map(drop)
    }

    fn install_files(&self, files: &[PathBuf]) -> Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        let mut args = vec![OsString::from("--install")];
        args.extend(files.iter().map(|f| f.as_os_str().to_owned()));
        let mut command = self.tool_command(DebTool::Dpkg, &args)?;
        self.run_checked("dpkg", &mut command, Streams::Quiet)
            .map(drop)
    }

    fn clean_cache(&self) -> Result<()> {
        let _lock = self.layout.lock_external()?;
        // Written by apt inside the sandbox: listed and removed without following anything.
        let state = self.layout.ensure_dirs(&["apt/cache/archives"])?;
        let archives = Path::new("apt/cache/archives");
        for entry in state.read_dir(archives).map_err(self.state_err())? {
            if Path::new(&entry.name).extension() == Some(OsStr::new("deb")) {
                state
                    .remove_all(archives.join(&entry.name))
                    .map_err(self.state_err())?;
            }
        }
        Ok(())
    }

    fn run_tool(&self, tool: Tool, args: &[OsString]) -> Result<ExitStatus> {
        let tool = match tool {
            Tool::Low => DebTool::Dpkg,
            Tool::Resolver => DebTool::AptGet,
        };
        self.run_program(tool, args)
    }
}
