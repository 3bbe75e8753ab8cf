//! The rpm/dnf back end: the host's `rpm` and `dnf` run on a guest inside the per-operation
//! sandbox, with the guest's database bind-mounted at `/.rpmdb` for that call only.
//!
//! # How rpm and dnf get the guest's configuration
//!
//! Both read rpm macros from the host's files plus `~/.rpmmacros`, so every call runs with
//! `HOME=.pkg/G/rpm/home`, whose `.rpmmacros` is the guest's generated macros plus the two plugin
//! lines (`%__plugindir` = `.pkg/G/rpm/plugins`, and `%__transaction_vserver` = the copy of
//! the running binary's plugin library there, `vserver.so`), rewritten before each operation.
//! (As mock does; rpm's `--macros` would replace the host's macro path instead of extending it,
//! and dnf has no such option.)
//!
//! dnf gets `--installroot`, `--releasever`, `--config` (our own `dnf.conf`: a guest's
//! `/etc/dnf/dnf.conf` would otherwise win), and `reposdir`, `varsdir`, `persistdir` as host paths
//! (options given on the command line are not searched inside the install root). dnf 4.14
//! prefixes `cachedir` and `logdir` with the install root whatever their priority, so those two
//! are given as `../` × depth of the (canonical) install root followed by the host path: the
//! result resolves to the host path, and the `..` steps walk up from the guest root directory
//! itself, which the guest cannot replace. Nothing of dnf's state lands in the guest; the empty
//! `/etc/dnf/modules.d` libdnf insists on creating is removed again when it was not there
//! before.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use vserver_sandbox::{Access, CapabilityProfile, GuestRoot, SandboxCommand, StdioMode};

use crate::backend::{Family, PackageBackend, Tool};
use crate::error::{Error, Result, output_tail};
use crate::layout::PkgLayout;
use crate::macros::generate_macros;

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
        }
    }

    /// Works on a running guest: frozen for each operation, rpm and its scriptlets in the
    /// guest's pid, uts and ipc namespaces ([`SandboxCommand::running_guest`]).
    pub fn running_guest(mut self, guest: Option<vserver_sandbox::RunningGuest>) -> Self {
        self.running = guest;
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

    fn host_err(&self, op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
        let layout = self.layout.clone();
        let path = path.to_owned();
        move |e| layout.host_err(op, &path, e)
    }

    /// Rewrites the per-operation `HOME` and plugin directory for the running binary's plugin.
    fn write_operation_files(&self) -> Result<()> {
        let macros_file = self.layout.macros_file();
        let macros =
            fs_err::read_to_string(&macros_file).map_err(self.host_err("read", &macros_file))?;
        let plugin_dir = self.layout.plugin_dir();
        let installed = crate::plugin::install_copy(&self.layout, &self.plugin, &plugin_dir)?;
        let text = format!(
            "{macros}# for this operation: scriptlets are confined by the vserver plugin\n\
             %__plugindir {}\n%__transaction_vserver {}\n",
            plugin_dir.display(),
            installed.display()
        );
        let home_macros = self.layout.rpm_home().join(".rpmmacros");
        fs_err::write(&home_macros, text).map_err(self.host_err("write", &home_macros))
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
        command
            .env("HOME", self.layout.rpm_home())
            .guest_root(&self.root)
            .bind(self.layout.rpm_state(), "/.rpmdb", Access::ReadWrite)
            .writable(self.layout.yum_dir())
            .guest_proc(has_proc)
            .capabilities(CapabilityProfile::PackageManager)
            .skip_fsync(self.skip_fsync)
            // Other guests and their package state are none of this operation's business.
            .hide_siblings_of(&self.root)
            .hide_siblings_of(self.layout.dir());
        if !self.settings.verbose {
            command
                .stdout(StdioMode::Capture)
                .stderr(StdioMode::Capture);
        }
        if let Some(guest) = &self.running {
            command.running_guest(guest);
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
        setopt("reposdir", self.layout.repos_dir().as_os_str());
        setopt(
            "varsdir",
            self.layout.yum_dir().join("etc/vars").as_os_str(),
        );
        setopt("persistdir", self.layout.yum_lib().as_os_str());
        setopt("cachedir", &self.through_root(&self.layout.yum_cache()));
        setopt("logdir", &self.through_root(&self.layout.yum_log()));
        let mut config = OsString::from("--config=");
        config.push(self.layout.yum_dir().join("etc/dnf.conf"));
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

    /// Runs a prepared command under the lock; `Ok` holds its status and captured stderr.
    fn run(&self, tool: &str, command: &SandboxCommand) -> Result<(ExitStatus, Vec<u8>)> {
        let _lock = self.layout.lock_external()?;
        self.write_operation_files()?;
        let dnf_dir_before = self.guest_has("/etc/dnf");
        let finished = command.status().map_err(|source| Error::Sandbox {
            guest: self.guest(),
            tool: tool.to_owned(),
            source: Box::new(source),
        })?;
        if tool == "dnf" && !dnf_dir_before {
            self.remove_empty_dnf_dirs();
        }
        if !finished.stdout.is_empty() && self.settings.verbose {
            use std::io::Write;
            let _ = std::io::stdout().write_all(&finished.stdout);
        }
        Ok((finished.status, finished.stderr))
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

    /// Runs a command that must succeed.
    fn run_checked(&self, tool: &str, command: &SandboxCommand) -> Result<()> {
        let (status, stderr) = self.run(tool, command)?;
        if status.success() {
            return Ok(());
        }
        Err(Error::ToolFailed {
            guest: self.guest(),
            command: command.to_string(),
            status,
            stderr_tail: output_tail(&stderr, 3),
        })
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
        self.layout.create()?;
        let macros_file = self.layout.macros_file();
        let text = generate_macros(
            self.layout.guest(),
            &self.settings.netshared,
            &self.settings.macros,
        );
        fs_err::write(&macros_file, text).map_err(self.host_err("write", &macros_file))?;
        let home_macros = self.layout.rpm_home().join(".rpmmacros");
        let _ = fs_err::remove_file(&home_macros);
        let repos = self.layout.repos_dir();
        for entry in fs_err::read_dir(&repos).map_err(self.host_err("read", &repos))? {
            let entry = entry.map_err(self.host_err("read", &repos))?;
            if entry.path().extension() == Some(OsStr::new("repo")) {
                fs_err::remove_file(entry.path())
                    .map_err(self.host_err("remove", &entry.path()))?;
            }
        }
        for (name, content) in &self.settings.repo_files {
            let path = repos.join(name);
            fs_err::write(&path, content).map_err(self.host_err("write", &path))?;
        }
        let vars = self.layout.yum_dir().join("etc/vars");
        fs_err::create_dir_all(&vars).map_err(self.host_err("create", &vars))?;
        let conf = self.layout.yum_dir().join("etc/dnf.conf");
        let gpgcheck = u8::from(self.settings.gpgcheck);
        fs_err::write(
            &conf,
            format!(
                "# dnf configuration of guest {}, generated by vserver\n[main]\ngpgcheck={gpgcheck}\n\
                 installonly_limit=3\nclean_requirements_on_remove=True\nbest=True\n\
                 skip_if_unavailable=False\nkeepcache=False\n",
                self.layout.guest()
            ),
        )
        .map_err(self.host_err("write", &conf))?;
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
        let command = self.dnf_command(&args)?;
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
        let cache = self.layout.yum_cache();
        if cache.exists() {
            fs_err::remove_dir_all(&cache).map_err(self.host_err("remove", &cache))?;
        }
        fs_err::create_dir_all(&cache).map_err(self.host_err("create", &cache))
    }

    fn run_tool(&self, tool: Tool, args: &[OsString]) -> Result<ExitStatus> {
        let (name, mut command) = match tool {
            Tool::Low => ("rpm", self.rpm_command(args)?),
            Tool::Resolver => ("dnf", self.dnf_command(args)?),
        };
        command
            .stdout(StdioMode::Inherit)
            .stderr(StdioMode::Inherit);
        Ok(self.run(name, &command)?.0)
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
        let finished = command.status().map_err(|source| Error::Sandbox {
            guest: self.guest(),
            tool: name.to_owned(),
            source: Box::new(source),
        })?;
        if name == "dnf" && !dnf_dir_before {
            self.remove_empty_dnf_dirs();
        }
        Ok((finished.status, finished.stdout, finished.stderr))
    }
}
