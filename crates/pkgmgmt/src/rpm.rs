//! The rpm/dnf back end: the host's `rpm` and `dnf` run on a guest inside the per-operation
//! sandbox, with the guest's database bind-mounted at `/.rpmdb` for that call only.
//!
//! # How rpm and dnf get the guest's configuration
//!
//! Both read rpm macros from the host's files plus `~/.rpmmacros`, so every call runs with
//! `HOME` = the sandbox's view of `.pkg/G/rpm/home` (`/run/vserver-op/rpm/home`), whose
//! `.rpmmacros` is the guest's generated macros plus the two plugin lines (`%__plugindir` =
//! `/run/vserver-op/rpm/plugins`, and `%__transaction_vserver` = the copy of the running
//! binary's plugin library there, `vserver.so`), rewritten before each operation. (As mock does;
//! rpm's `--macros` would replace the host's macro path instead of extending it, and dnf has no
//! such option.) Nothing else of the administrator's environment reaches rpm, and so its
//! scriptlets.
//!
//! dnf gets `--installroot`, `--releasever`, `--config` (our own `dnf.conf`: a guest's
//! `/etc/dnf/dnf.conf` would otherwise win), and `reposdir`, `varsdir`, `persistdir` as paths
//! of the sandbox (options given on the command line are not searched inside the install root).
//! dnf 4.14 prefixes `cachedir` and `logdir` with the install root whatever their priority, so
//! those two are given as `../` × depth of the (canonical) install root followed by the path: the
//! result resolves to it, and the `..` steps walk up from the guest root directory itself, which
//! the guest cannot replace. Nothing of dnf's state lands in the guest; the empty
//! `/etc/dnf/modules.d` libdnf insists on creating is removed again when it was not there
//! before.
//!
//! The sandbox shows `.pkg/G` only as the operation needs it (module `layout`): the
//! configuration, `HOME` and the plugin read-only, dnf's cache, history and logs writable, the
//! database only through its mount at the guest's `/.rpmdb`.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use vserver_sandbox::{Access, CapabilityProfile, Finished, GuestRoot, SandboxCommand, StdioMode};

use crate::backend::{Family, PackageBackend, Tool, clean_environment};
use crate::error::{Error, Result};
use crate::layout::{
    PkgLayout, RPM_ETC, RPM_HOME, RPM_PLUGINS, RPM_STATE, YUM_CACHE, YUM_ETC, YUM_LIB, YUM_LOG,
};
use crate::macros::generate_macros;

/// What an rpm or dnf operation sees of `.pkg/G`, besides the database's mount.
const RPM_VIEW: &[(&str, Access)] = &[
    (RPM_HOME, Access::ReadOnly),
    (RPM_PLUGINS, Access::ReadOnly),
    (YUM_ETC, Access::ReadOnly),
    (YUM_CACHE, Access::ReadWrite),
    (YUM_LIB, Access::ReadWrite),
    (YUM_LOG, Access::ReadWrite),
];

/// dnf's lock files in our state: in its persistdir and cachedir (dnf 4, `dnf/lock.py` and
/// `dnf/base.py`). Each holds the pid of its owner and is taken over only when `/proc/PID` is
/// gone; see [`RpmBackend::remove_stale_dnf_locks`]. (Its fourth, `log_lock.pid`, goes to
/// `/var/log` whatever `logdir` says: read-only in the sandbox, so never written.)
const DNF_LOCK_FILES: &[(&str, &str)] = &[
    (YUM_LIB, "rpmdb_lock.pid"),
    (YUM_CACHE, "metadata_lock.pid"),
    (YUM_CACHE, "download_lock.pid"),
];

/// The rpm back end's trusted directories (written by the host only).
const RPM_TRUSTED: &[&str] = &[RPM_ETC, RPM_HOME, RPM_PLUGINS, YUM_ETC];

/// Every directory of the rpm back end's state.
const RPM_DIRS: &[&str] = &[
    RPM_ETC,
    RPM_STATE,
    RPM_HOME,
    RPM_PLUGINS,
    YUM_ETC,
    "yum/etc/yum.repos.d",
    "yum/etc/vars",
    YUM_CACHE,
    YUM_LIB,
    YUM_LOG,
];

/// What the rpm back end needs to know about the guest's distribution.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RpmSettings {
    /// dnf's `$releasever`.
    pub releasever: String,
    /// dnf's `$basearch` (empty: the host's).
    pub arch: String,
    /// Whether dnf checks signatures (`false` adds `--nogpgcheck`; unsigned fixture
    /// repositories need it).
    pub gpgcheck: bool,
    /// The distribution's extra rpm macros.
    pub macros: String,
    /// Extra `%_netsharedpath` entries.
    pub netshared: Vec<String>,
    /// Repository files (`NAME.repo`, content) copied into the guest's `yum.repos.d`.
    pub repo_files: Vec<(String, String)>,
    /// Let the package manager's output through (otherwise it is captured and shown on failure).
    pub verbose: bool,
    /// How long each run of rpm or dnf may take (`None`: [`crate::DEFAULT_TIME_LIMIT`]).
    pub time_limit: Option<Duration>,
}

/// The rpm/dnf back end of one guest.
#[derive(Debug, Clone)]
pub struct RpmBackend {
    layout: PkgLayout,
    root: PathBuf,
    settings: RpmSettings,
    plugin: PathBuf,
    skip_fsync: bool,
    running: Option<vserver_sandbox::RunningGuest>,
    freeze: bool,
    progress: Option<crate::ProgressSink>,
}

impl RpmBackend {
    /// The back end for the guest whose root is `root` (a trusted host path) and whose state is
    /// `layout`; `plugin` is the confining rpm plugin ([`crate::find_rpm_plugin`]).
    pub fn new(layout: PkgLayout, root: &Path, settings: RpmSettings, plugin: PathBuf) -> Self {
        RpmBackend {
            layout,
            root: root.to_owned(),
            settings,
            plugin,
            skip_fsync: false,
            running: None,
            freeze: false,
            progress: None,
        }
    }

    /// Reports the packages done of each dnf transaction's total to `sink` (when the output is
    /// captured, that is, not verbose); see module `progress`.
    pub fn progress(mut self, sink: Option<crate::ProgressSink>) -> Self {
        self.progress = sink;
        self
    }

    /// Works on a running guest: rpm stays in the sandbox, its scriptlets run in the guest (its
    /// namespaces, cgroup and mounts: [`SandboxCommand::scripts_in_running_guest`]), so that
    /// they can restart its services. With [`RpmBackend::freeze`], the guest is frozen for each
    /// operation instead and rpm joins its pid, uts and ipc namespaces
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

    /// Lets rpm, dnf and their scriptlets skip every `fsync` (and the like) for this back end's
    /// operations ([`SandboxCommand::skip_fsync`]); default: off.
    ///
    /// Only for building a new guest: the builder must call [`RpmBackend::sync`] before it
    /// reports success and remove the guest when the build fails. On an existing guest the
    /// database must stay crash-safe, so vrpm and vyum keep their syncs.
    pub fn skip_fsync(mut self, skip: bool) -> Self {
        self.skip_fsync = skip;
        self
    }

    /// The guest's package-state layout.
    pub fn layout(&self) -> &PkgLayout {
        &self.layout
    }

    fn guest(&self) -> String {
        self.layout.guest().to_owned()
    }

    fn state_err(&self) -> impl FnOnce(vserver_sandbox::Error) -> Error {
        let layout = self.layout.clone();
        move |source| layout.state_err(source)
    }

    /// Rewrites the per-operation `HOME` and plugin directory for the running binary's plugin
    /// (and mends the state's directories, should anything have been planted in their place).
    fn write_operation_files(&self) -> Result<()> {
        let state = self.layout.ensure_dirs(RPM_DIRS)?;
        self.layout.remove_planted(&state, RPM_TRUSTED)?;
        self.remove_stale_dnf_locks(&state)?;
        let macros = state.read("rpm/etc/macros").map_err(self.state_err())?;
        let installed =
            crate::plugin::install_copy(&self.layout, &state, &self.plugin, RPM_PLUGINS)?;
        let mut text = macros;
        text.extend_from_slice(
            format!(
                "# for this operation: scriptlets are confined by the vserver plugin\n\
                 %__plugindir {}\n%__transaction_vserver {}\n",
                PkgLayout::in_sandbox(RPM_PLUGINS).display(),
                vserver_sandbox::operation_path(&installed).display()
            )
            .as_bytes(),
        );
        self.layout
            .write_trusted(&state, "rpm/home/.rpmmacros", &text)
    }

    /// Removes the lock files a dnf of an earlier operation left behind. Called only under the
    /// guest's operation lock ([`PkgLayout::lock`]), which every dnf of ours runs under: while
    /// we hold it no dnf can be running on this guest's state, so any such file is stale.
    ///
    /// dnf's locks are not kernel locks that die with their owner: dnf writes its pid into the
    /// file and a later dnf waits ("Waiting for process with pid N to finish", silently with
    /// `-q`) for as long as `/proc/N` exists. A dnf killed with its operation on a running guest
    /// whose init never reaps stays a zombie in the guest's pid namespace, and so `/proc/N` stays
    /// for the guest's lifetime; with a reaping init, N may be reused by any guest process. Either
    /// way every later dnf would wait for ever. (apt and dpkg lock with `fcntl`, whose locks the
    /// kernel drops when the holder exits, zombie or not: nothing to do for them.)
    ///
    /// The directories are hostile (dnf wrote them inside a sandbox): the files are removed
    /// through the safe-path layer, whatever they are, without following anything.
    fn remove_stale_dnf_locks(&self, state: &GuestRoot) -> Result<()> {
        for (dir, name) in DNF_LOCK_FILES {
            state
                .remove_all_if_exists(Path::new(dir).join(name))
                .map_err(self.state_err())?;
        }
        Ok(())
    }

    /// A sandboxed command for `program` on this guest.
    fn command(&self, program: &str) -> Result<SandboxCommand> {
        let root = GuestRoot::open(&self.root).map_err(|source| Error::Guest {
            guest: self.guest(),
            source: Box::new(source),
        })?;
        let has_proc = matches!(
            root.symlink_metadata("/proc"),
            Ok(info) if info.kind == vserver_sandbox::FileKind::Dir
        );
        let mut command = SandboxCommand::new(program);
        clean_environment(&mut command, &PkgLayout::in_sandbox(RPM_HOME));
        command
            .guest_root(&self.root)
            .bind(self.layout.rpm_state(), "/.rpmdb", Access::ReadWrite)
            // Where the plugin's scriptlet hook leaves the database behind.
            .scriptlet_namespace(true)
            .guest_proc(has_proc)
            .capabilities(CapabilityProfile::PackageManager)
            .skip_fsync(self.skip_fsync)
            .time_limit(Some(
                self.settings
                    .time_limit
                    .unwrap_or(crate::DEFAULT_TIME_LIMIT),
            ))
            // Other guests and their package state are none of this operation's business.
            .hide_siblings_of(&self.root)
            .hide_siblings_of(self.layout.dir());
        self.layout.show_in(&mut command, RPM_VIEW);
        if !self.settings.verbose {
            command
                .stdout(StdioMode::Capture)
                .stderr(StdioMode::Capture);
        }
        match &self.running {
            Some(guest) if !self.freeze => {
                // The plugin's `execv` hands each scriptlet to the guest spawner: it must be
                // the `execv` rpm calls, so the plugin is preloaded as well as loaded.
                command
                    .env(
                        "LD_PRELOAD",
                        vserver_sandbox::operation_path(Path::new(RPM_PLUGINS).join("vserver.so")),
                    )
                    .scripts_in_running_guest(guest);
            }
            Some(guest) => {
                command.env("SYSTEMD_OFFLINE", "1").running_guest(guest);
            }
            // A stopped guest: `systemctl` in a scriptlet must not try to reach an init (it
            // says "Running in chroot, ignoring command" and succeeds).
            None => {
                command.env("SYSTEMD_OFFLINE", "1");
            }
        }
        Ok(command)
    }

    fn rpm_command(&self, args: &[OsString]) -> Result<SandboxCommand> {
        let mut command = self.command("rpm")?;
        command
            .arg("--root")
            .arg(&self.root)
            .args(["--dbpath", "/.rpmdb"])
            .args(args);
        Ok(command)
    }

    /// `..` steps from the install root up to `/`, then `host`: see the module documentation.
    fn through_root(&self, host: &Path) -> OsString {
        let depth = self
            .root
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .count();
        let mut path = OsString::from("../".repeat(depth));
        path.push(host.strip_prefix("/").unwrap_or(host).as_os_str());
        path
    }

    fn dnf_command(&self, args: &[OsString]) -> Result<SandboxCommand> {
        let mut command = self.command("dnf")?;
        let mut setopt = |name: &str, value: &OsStr| {
            let mut option = OsString::from(format!("--setopt={name}="));
            option.push(value);
            command.arg(option);
        };
        let etc = PkgLayout::in_sandbox(YUM_ETC);
        setopt("reposdir", etc.join("yum.repos.d").as_os_str());
        setopt("varsdir", etc.join("vars").as_os_str());
        setopt("persistdir", PkgLayout::in_sandbox(YUM_LIB).as_os_str());
        setopt(
            "cachedir",
            &self.through_root(&PkgLayout::in_sandbox(YUM_CACHE)),
        );
        setopt(
            "logdir",
            &self.through_root(&PkgLayout::in_sandbox(YUM_LOG)),
        );
        let mut config = OsString::from("--config=");
        config.push(etc.join("dnf.conf"));
        command.arg(config);
        // The host's dnf plugins are host policy, not the guest's; some keep state of their own
        // on the host (dnf-plugins-core's `local` copies every installed package into a host
        // repository that later operations on any guest install from).
        command.arg("--noplugins");
        command.arg("--installroot").arg(&self.root);
        if !self.settings.releasever.is_empty() {
            command.arg(format!("--releasever={}", self.settings.releasever));
        }
        if !self.settings.arch.is_empty() {
            command.arg(format!("--setopt=basearch={}", self.settings.arch));
        }
        if !self.settings.gpgcheck {
            command.arg("--nogpgcheck");
        }
        command.args(args);
        Ok(command)
    }

    /// Runs a prepared command under the lock; `Ok` holds its status and captured output.
    fn run(&self, tool: &str, command: &SandboxCommand) -> Result<Finished> {
        let _lock = self.layout.lock_external()?;
        // On every error, the lock is released on the way out (`_lock` drops).
        self.run_locked(tool, command)
    }

    /// [`RpmBackend::run`] for a caller that holds the lock.
    fn run_locked(&self, tool: &str, command: &SandboxCommand) -> Result<Finished> {
        self.write_operation_files()?;
        let dnf_dir_before = self.guest_has("/etc/dnf");
        let finished = command
            .status()
            .map_err(|source| Error::sandbox(self.layout.guest(), tool, source))?;
        if tool == "dnf" && !dnf_dir_before {
            self.remove_empty_dnf_dirs();
        }
        if !finished.stdout.is_empty() && self.settings.verbose {
            use std::io::Write;
            let _ = std::io::stdout().write_all(&finished.stdout);
        }
        Ok(finished)
    }

    fn guest_has(&self, path: &str) -> bool {
        GuestRoot::open(&self.root)
            .and_then(|root| root.exists(path))
            .unwrap_or(false)
    }

    /// Removes `/etc/dnf/modules.d` and `/etc/dnf` if they hold nothing (libdnf creates them).
    fn remove_empty_dnf_dirs(&self) {
        let Ok(root) = GuestRoot::open(&self.root) else {
            return;
        };
        let empty = |path: &str| root.read_dir(path).map(|e| e.is_empty()).unwrap_or(false);
        if empty("/etc/dnf/modules.d") {
            let _ = root.remove_all("/etc/dnf/modules.d");
        }
        if empty("/etc/dnf") {
            let _ = root.remove_all("/etc/dnf");
        }
    }

    /// Runs a command that must succeed. A failure's error leads with the cause; the command
    /// line goes to the operation log it names (module `oplog`), and to stderr first with
    /// `verbose`.
    fn run_checked(&self, tool: &str, command: &SandboxCommand) -> Result<()> {
        let _lock = self.layout.lock_external()?;
        if self.settings.verbose {
            eprintln!("guest `{}`: running {command}", self.layout.guest());
        }
        let finished = self.run_locked(tool, command)?;
        if finished.status.success() {
            return Ok(());
        }
        // Written under the lock, which keeps the log's name ours.
        Err(crate::oplog::tool_failure(
            &self.layout,
            &crate::oplog::FailedRun {
                tool,
                command,
                status: finished.status,
                stdout: &finished.stdout,
                stderr: &finished.stderr,
            },
        ))
    }

    /// Flushes, once, the file systems a build wrote to: the guest's and the one holding its
    /// package state (`.pkg/G`: the rpm database, dnf's history), which may be another.
    pub fn sync(&self) -> Result<()> {
        GuestRoot::open(&self.root)
            .and_then(|root| root.sync_filesystem())
            .map_err(|source| Error::Guest {
                guest: self.guest(),
                source: Box::new(source),
            })?;
        self.layout.sync_state()
    }
}

/// A plain file name: no directory part, not `.` or `..`.
fn is_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

fn os_args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(args: I) -> Vec<OsString> {
    args.into_iter()
        .map(|a| a.as_ref().to_os_string())
        .collect()
}

impl PackageBackend for RpmBackend {
    fn family(&self) -> Family {
        Family::Rpm
    }

    fn prepare(&self) -> Result<()> {
        let state = self.layout.ensure_dirs(RPM_DIRS)?;
        let text = generate_macros(
            self.layout.guest(),
            &self.settings.netshared,
            &self.settings.macros,
        );
        self.layout
            .write_trusted(&state, "rpm/etc/macros", text.as_bytes())?;
        state
            .remove_all_if_exists("rpm/home/.rpmmacros")
            .map_err(self.state_err())?;
        let repos = Path::new("yum/etc/yum.repos.d");
        for entry in state.read_dir(repos).map_err(self.state_err())? {
            if Path::new(&entry.name).extension() == Some(OsStr::new("repo")) {
                state
                    .remove_all(repos.join(&entry.name))
                    .map_err(self.state_err())?;
            }
        }
        for (name, content) in &self.settings.repo_files {
            if !is_file_name(name) {
                return Err(Error::Host {
                    guest: self.guest(),
                    op: "write the repository file",
                    path: repos.join(name),
                    source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
                });
            }
            self.layout
                .write_trusted(&state, repos.join(name), content.as_bytes())?;
        }
        let gpgcheck = u8::from(self.settings.gpgcheck);
        let conf = format!(
            "# dnf configuration of guest {}, generated by vserver\n[main]\ngpgcheck={gpgcheck}\n\
             installonly_limit=3\nclean_requirements_on_remove=True\nbest=True\n\
             skip_if_unavailable=False\nkeepcache=False\n",
            self.layout.guest()
        );
        self.layout
            .write_trusted(&state, "yum/etc/dnf.conf", conf.as_bytes())?;
        let root = GuestRoot::open(&self.root).map_err(|source| Error::Guest {
            guest: self.guest(),
            source: Box::new(source),
        })?;
        root.mkdir_all("/.rpmdb", 0o755)
            .map_err(|source| Error::Guest {
                guest: self.guest(),
                source: Box::new(source),
            })
    }

    fn initialize_database(&self) -> Result<()> {
        let command = self.rpm_command(&os_args(["--initdb"]))?;
        self.run_checked("rpm", &command)
    }

    fn import_keys(&self, keys: &[PathBuf]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut args = os_args(["--import"]);
        args.extend(keys.iter().map(|k| k.as_os_str().to_owned()));
        let command = self.rpm_command(&args)?;
        self.run_checked("rpm", &command)
    }

    fn install(&self, packages: &[String]) -> Result<()> {
        if packages.is_empty() {
            return Ok(());
        }
        let mut args = os_args(["-y", "install"]);
        args.extend(packages.iter().map(OsString::from));
        let mut command = self.dnf_command(&args)?;
        if let Some(sink) = &self.progress {
            command.observe_stdout_lines(crate::progress::dnf_observer(sink.clone()));
        }
        self.run_checked("dnf", &command)
    }

    fn install_files(&self, files: &[PathBuf]) -> Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        let mut args = os_args(["-i"]);
        args.extend(files.iter().map(|f| f.as_os_str().to_owned()));
        let command = self.rpm_command(&args)?;
        self.run_checked("rpm", &command)
    }

    fn clean_cache(&self) -> Result<()> {
        let _lock = self.layout.lock_external()?;
        let state = self.layout.open_state()?;
        // Written by dnf inside the sandbox: removed without following anything planted there.
        state
            .remove_all_if_exists(YUM_CACHE)
            .map_err(self.state_err())?;
        self.layout.ensure_dirs(&[YUM_CACHE]).map(drop)
    }

    fn run_tool(&self, tool: Tool, args: &[OsString]) -> Result<ExitStatus> {
        let (name, mut command) = match tool {
            Tool::Low => ("rpm", self.rpm_command(args)?),
            Tool::Resolver => ("dnf", self.dnf_command(args)?),
        };
        command
            .stdout(StdioMode::Inherit)
            .stderr(StdioMode::Inherit);
        Ok(self.run(name, &command)?.status)
    }
}

impl RpmBackend {
    /// Runs `tool` with `args` on the guest with standard output and error captured (for
    /// callers that read the answer, such as tests and `--json` front ends).
    pub fn run_tool_captured(
        &self,
        tool: Tool,
        args: &[OsString],
    ) -> Result<(ExitStatus, Vec<u8>, Vec<u8>)> {
        let (name, mut command) = match tool {
            Tool::Low => ("rpm", self.rpm_command(args)?),
            Tool::Resolver => ("dnf", self.dnf_command(args)?),
        };
        command
            .stdout(StdioMode::Capture)
            .stderr(StdioMode::Capture);
        let _lock = self.layout.lock_external()?;
        self.write_operation_files()?;
        let dnf_dir_before = self.guest_has("/etc/dnf");
        let finished = command
            .status()
            .map_err(|source| Error::sandbox(self.layout.guest(), name, source))?;
        if name == "dnf" && !dnf_dir_before {
            self.remove_empty_dnf_dirs();
        }
        Ok((finished.status, finished.stdout, finished.stderr))
    }
}
