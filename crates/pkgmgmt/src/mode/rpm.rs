//! Internalize and externalize for rpm guests.
//!
//! # internalize
//!
//! Before any step, the guest's own `%_dbpath` (and `%_db_backend`) are read from its macro
//! files, through the guest root, as untrusted text: only a plain absolute path is accepted
//! (default `/var/lib/rpm`; Fedora's rpm says `/usr/lib/sysimage/rpm`), and it, `/etc/rpm`,
//! `/etc/yum.repos.d`, `/etc/dnf` and `/var/lib/dnf` must be reached without a symlink. Then:
//!
//! 1. *convert the database*: rpm's own `rpmdb --exportdb` and `--importdb` turn the host
//!    database into a fresh one in the backend the guest's rpm reads, in
//!    `.pkg/G/rpm/convert/db`, inside the sandbox; both package lists must match.
//! 2. *place the database*: its files are written into the guest's database directory.
//! 3. *macros, repositories, history*: `/etc/rpm/macros.vserver` gets the generated macros
//!    without `%_dbpath` (a `%_dbpath` line left in `/etc/rpm/macros`, as util-vserver wrote
//!    one, is removed); `/etc/yum.repos.d/*.repo` with `$releasever` written out;
//!    `/etc/dnf/dnf.conf`; dnf's history (`.pkg/G/yum/lib`) in `/var/lib/dnf`.
//! 4. *mount point*: the empty `/.rpmdb` goes.
//! 5. *archive*: `.pkg/G/rpm/state` becomes read-only; `.pkg/G/internal` records the guest's
//!    database path, the directories created, the files written and the package list.
//! 6. *record the mode*: the caller's step, in the guest's configuration.
//!
//! # externalize
//!
//! The guest's database files are copied out as bytes (regular files only), rpm exports their
//! headers in a sandbox where only that copy is writable, and a fresh database is imported from
//! the export in a second sandbox. Host-side rpm never opens the guest's files outside a
//! sandbox, and the database the host keeps is one rpm wrote itself. Then `rpm -Va` runs on the
//! guest from the host with the new database, and the package set is compared with the one
//! recorded at internalize: both go into the report. The guest's database and dnf state and the
//! configuration internalize wrote are set aside and, once the mode is recorded, removed.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use vserver_sandbox::{Access, FileKind, GuestRoot, SandboxCommand, StdioMode};

use super::changelog::{self, Logged};
use super::guestfs::{
    CopyBudget, Journal, absent_or_empty_dir, check_plain_dirs, copy_tree_into_guest, read_limited,
    read_optional, read_state_file, set_tree_modes,
};
use super::{
    ExternalizeReport, Mode, ModeError, ModeOptions, ModeTarget, StepFailure, StepResult, Steps,
    nothing, text_err,
};
use crate::error::Error;
use crate::host_fs;
use crate::layout::{PkgLayout, RPM_STATE, YUM_CACHE, YUM_LIB};

/// `.pkg/G/rpm/convert`, relative to `.pkg/G`: the work directory of a conversion.
const CONVERT_DIR: &str = "rpm/convert";

/// The database path rpm uses when no macro file sets one.
pub const DEFAULT_GUEST_DBPATH: &str = "/var/lib/rpm";

/// The guest macro files that can set `%_dbpath`, in the order rpm reads them (later wins).
const GUEST_MACRO_FILES: &[&str] = &[
    "/usr/lib/rpm/macros",
    "/usr/lib/rpm/macros.d",
    "/usr/lib/rpm/redhat/macros",
    "/etc/rpm",
    "/etc/rpm/macros",
];

/// The macros file internalize writes into the guest.
const GUEST_MACROS: &str = "/etc/rpm/macros.vserver";

/// Guest directories of dnf and yum state, removed from the guest on externalize.
const GUEST_PM_STATE: &[&str] = &[
    "/var/lib/dnf",
    "/var/cache/dnf",
    "/var/lib/yum",
    "/var/cache/yum",
];

/// A mode change of one rpm guest.
#[derive(Debug, Clone)]
pub struct RpmModeChange {
    target: ModeTarget,
    releasever: String,
}

/// The host-side record of an internal guest, `.pkg/G/internal` (trusted: only vserver writes
/// it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct InternalRecord {
    pub family: String,
    pub dbpath: PathBuf,
    pub created: Vec<PathBuf>,
    pub wrote: Vec<PathBuf>,
    pub packages: Vec<String>,
}

impl InternalRecord {
    pub(crate) fn render(&self) -> String {
        let mut text = String::from(
            "# package management of this guest is internal; written by `vserver G pkgmgmt internalize`\n",
        );
        text.push_str(&format!("family={}\n", self.family));
        text.push_str(&format!("dbpath={}\n", self.dbpath.display()));
        for path in &self.created {
            text.push_str(&format!("created={}\n", path.display()));
        }
        for path in &self.wrote {
            text.push_str(&format!("wrote={}\n", path.display()));
        }
        for package in &self.packages {
            text.push_str(&format!("package={package}\n"));
        }
        text
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        let mut record = InternalRecord::default();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (key, value) = line.split_once('=')?;
            match key {
                "family" => record.family = value.to_owned(),
                "dbpath" => record.dbpath = PathBuf::from(value),
                "created" => record.created.push(PathBuf::from(value)),
                "wrote" => record.wrote.push(PathBuf::from(value)),
                "package" => record.packages.push(value.to_owned()),
                _ => return None,
            }
        }
        Some(record)
    }
}

/// Checks a database path read from the guest: absolute, plain components, nothing that is a
/// kernel file system or our own mount point.
pub(crate) fn validate_guest_dbpath(path: &str) -> Result<PathBuf, String> {
    let plain = path.len() <= 1024
        && path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._+-".contains(&b));
    let candidate = Path::new(path);
    let components: Vec<Component<'_>> = candidate.components().collect();
    let normal = components
        .iter()
        .skip(1)
        .all(|c| matches!(c, Component::Normal(_)))
        && components.len() >= 2
        && !path.split('/').any(|c| c == "." || c == "..");
    let first = path.split('/').nth(1).unwrap_or("");
    let reserved = ["proc", "sys", "dev", "run", "tmp", ".rpmdb"].contains(&first);
    if plain && normal && !reserved {
        Ok(candidate.components().collect())
    } else {
        Err(format!(
            "the guest's %_dbpath `{path}` is not a plain absolute path outside /proc, /sys, /dev, /run, /tmp and /.rpmdb"
        ))
    }
}

/// Expands the few macros a `%_dbpath` value uses in practice; anything else is refused.
fn expand_path_macros(value: &str) -> Result<String, String> {
    let mut text = value.to_owned();
    for (names, expansion) in [
        (&["%{_sharedstatedir}", "%_sharedstatedir"][..], "/var/lib"),
        (&["%{_localstatedir}", "%_localstatedir"][..], "/var"),
        (&["%{_var}", "%_var"][..], "/var"),
        (&["%{_usr}", "%_usr"][..], "/usr"),
        (&["%{_prefix}", "%_prefix"][..], "/usr"),
    ] {
        for name in names {
            text = text.replace(name, expansion);
        }
    }
    if text.contains('%') {
        return Err(format!(
            "the guest's %_dbpath `{value}` uses macros vserver does not expand"
        ));
    }
    Ok(text)
}

/// The last definition of `%NAME` in macro file text.
fn last_definition(text: &str, name: &str, found: &mut Option<String>) {
    for line in text.lines() {
        let line = line.trim_start();
        let Some(rest) = line.strip_prefix('%').and_then(|l| l.strip_prefix(name)) else {
            continue;
        };
        if !rest.starts_with([' ', '\t']) {
            continue;
        }
        *found = Some(rest.trim().to_owned());
    }
}

/// The guest's `%_dbpath` (validated) and `%_db_backend`, from its macro files.
fn guest_rpm_settings(root: &GuestRoot) -> Result<(PathBuf, Option<String>), String> {
    let mut dbpath = None;
    let mut backend = None;
    for entry in GUEST_MACRO_FILES {
        let path = Path::new(entry);
        let files: Vec<PathBuf> = match root.symlink_metadata(path) {
            Ok(info) if info.kind == FileKind::Dir => root
                .read_dir(path)
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|e| e.name.to_string_lossy().starts_with("macros."))
                .filter(|e| path.join(&e.name) != Path::new(GUEST_MACROS))
                .map(|e| path.join(e.name))
                .collect(),
            Ok(_) => vec![path.to_owned()],
            Err(_) => continue,
        };
        for file in files {
            let text = read_limited(root, &file).map_err(|e| e.0)?;
            let text = String::from_utf8_lossy(&text);
            last_definition(&text, "_dbpath", &mut dbpath);
            last_definition(&text, "_db_backend", &mut backend);
        }
    }
    let dbpath = match dbpath {
        Some(value) => validate_guest_dbpath(&expand_path_macros(&value)?)?,
        None => PathBuf::from(DEFAULT_GUEST_DBPATH),
    };
    let backend = match backend {
        Some(name) if ["sqlite", "ndb", "bdb", "bdb_ro"].contains(&name.as_str()) => Some(name),
        Some(name) => return Err(format!("the guest's %_db_backend `{name}` is unknown")),
        None => None,
    };
    Ok((dbpath, backend))
}

impl RpmModeChange {
    /// The mode change of the guest whose root is `root` (trusted host path) and whose package
    /// state is `layout`; `releasever` is written into the guest's repository files.
    pub fn new(layout: PkgLayout, root: &Path, releasever: &str) -> Self {
        RpmModeChange {
            target: ModeTarget {
                layout,
                root: root.to_owned(),
            },
            releasever: releasever.to_owned(),
        }
    }

    /// `.pkg/G/rpm/convert`: the work directory of a conversion.
    fn convert_dir(&self) -> PathBuf {
        self.target.layout.host(CONVERT_DIR)
    }

    /// `.pkg/G/internal`.
    pub fn record_file(&self) -> PathBuf {
        internal_record_file(&self.target.layout)
    }

    /// A sandboxed rpm on host paths only (no guest root): `HOME` is an empty directory so
    /// that no macros but the host's and ours apply.
    fn host_rpm(&self, program: &str, writable: &[&Path], args: &[OsString]) -> SandboxCommand {
        let mut command = SandboxCommand::new(program);
        command
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", self.convert_dir().join("home"))
            .env("LC_ALL", "C.UTF-8")
            .args(args)
            // Other guests and their package state are none of this operation's business, and
            // rpm reading a guest's (untrusted) database needs no network.
            .hide_siblings_of(&self.target.root)
            .hide_siblings_of(self.target.layout.dir())
            .no_network(true)
            .stdout(StdioMode::Capture)
            .stderr(StdioMode::Capture);
        for path in writable {
            command.writable(path);
        }
        command
    }

    fn run_checked(&self, command: &SandboxCommand) -> Result<Vec<u8>, StepFailure> {
        let finished = command.status().map_err(|source| Error::Sandbox {
            guest: self.target.guest().to_owned(),
            tool: "rpm".into(),
            source: Box::new(source),
        })?;
        if finished.status.success() {
            return Ok(finished.stdout);
        }
        Err(Box::new(crate::oplog::tool_failure(
            &self.target.layout,
            &crate::oplog::FailedRun {
                tool: "rpm",
                command,
                status: finished.status,
                stdout: &finished.stdout,
                stderr: &finished.stderr,
            },
        )))
    }

    fn fresh_convert_dir(&self) -> StepResult {
        let dir = self.convert_dir();
        if host_fs::exists(&dir) {
            host_fs::remove_dir_all(&dir)?;
        }
        for sub in ["home", "db", "dump"] {
            host_fs::create_dir_all(dir.join(sub))?;
        }
        host_fs::set_mode(&dir, 0o700)?;
        Ok(())
    }

    fn remove_convert_dir(&self) -> StepResult {
        self.target.remove_dir(&self.convert_dir())
    }

    /// Exports the database in `source` (only `source` writable: it may be the guest's) and
    /// imports it into the empty `convert/db`, in the backend `backend`; returns the package
    /// list of the new database.
    fn export_import(
        &self,
        source: &Path,
        backend: Option<&str>,
    ) -> Result<Vec<String>, StepFailure> {
        let export_args = [
            OsString::from("--dbpath"),
            source.into(),
            "--exportdb".into(),
        ];
        let dump = self.run_checked(&self.host_rpm("rpmdb", &[source], &export_args))?;
        let dump_dir = self.convert_dir().join("dump");
        let dump_file = dump_dir.join("headers");
        host_fs::write(&dump_file, &dump)?;
        drop(dump);
        let db = self.convert_dir().join("db");
        let mut import = SandboxCommand::new("sh");
        import
            .no_network(true)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", self.convert_dir().join("home"))
            .env("LC_ALL", "C.UTF-8")
            .arg("-c")
            .arg(r#"exec rpmdb --dbpath "$1" ${2:+--define "_db_backend $2"} --importdb < "$3""#)
            .arg("sh")
            .arg(&db)
            .arg(backend.unwrap_or(""))
            .arg(&dump_file)
            .writable(&db)
            .hide_siblings_of(&self.target.root)
            .hide_siblings_of(self.target.layout.dir())
            .stdout(StdioMode::Capture)
            .stderr(StdioMode::Capture);
        self.run_checked(&import)?;
        let _ = host_fs::remove_file(&dump_file);
        self.list_packages(&db)
    }

    /// `NAME-VERSION-RELEASE.ARCH` of every package in the host database directory `db`.
    fn list_packages(&self, db: &Path) -> Result<Vec<String>, StepFailure> {
        let args = [
            "--dbpath".into(),
            db.as_os_str().to_owned(),
            "-qa".into(),
            "--qf".into(),
            "%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}\\n".into(),
        ];
        let out = self.run_checked(&self.host_rpm("rpm", &[db], &args))?;
        let mut packages: Vec<String> = String::from_utf8_lossy(&out)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        packages.sort();
        Ok(packages)
    }

    /// The guest's `/etc/yum.repos.d` files and `dnf.conf`, from `.pkg/G/yum/etc` (read through
    /// the safe-path layer: regular files only, nothing followed).
    fn guest_repo_files(&self, state: &GuestRoot) -> Result<Vec<(PathBuf, Vec<u8>)>, StepFailure> {
        let mut files = Vec::new();
        let repos = Path::new("yum/etc/yum.repos.d");
        if state.exists(repos)? {
            let mut names = state.read_dir(repos)?;
            names.sort_by(|a, b| a.name.cmp(&b.name));
            for entry in names {
                if !entry.name.to_string_lossy().ends_with(".repo")
                    || entry.kind != vserver_sandbox::FileKind::File
                {
                    continue;
                }
                let Some(text) = read_state_file(state, &repos.join(&entry.name))? else {
                    continue;
                };
                let text = String::from_utf8_lossy(&text).replace("$releasever", &self.releasever);
                files.push((
                    Path::new("/etc/yum.repos.d").join(&entry.name),
                    text.into_bytes(),
                ));
            }
        }
        if let Some(text) = read_state_file(state, Path::new("yum/etc/dnf.conf"))? {
            let text = String::from_utf8_lossy(&text).replace(
                "generated by vserver",
                "written by vserver pkgmgmt internalize; the guest's own from now on",
            );
            files.push((PathBuf::from("/etc/dnf/dnf.conf"), text.into_bytes()));
        }
        Ok(files)
    }

    /// The generated macros without `%_dbpath` (the guest's rpm keeps its own).
    fn guest_macros(&self, state: &GuestRoot) -> Result<Vec<u8>, StepFailure> {
        let text = read_state_file(state, Path::new("rpm/etc/macros"))?.unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let mut out = format!(
            "# rpm macros of guest {}, written by vserver pkgmgmt internalize\n",
            self.target.guest()
        );
        for line in text.lines() {
            let trimmed = line.trim_start();
            if trimmed.starts_with('#') || is_definition(trimmed, "_dbpath") {
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
        Ok(out.into_bytes())
    }

    /// Moves package management into the guest (see the module documentation). `record_mode`
    /// is the last step: it records `Mode::Internal` in the guest's configuration, and is
    /// called again with `Mode::External` if that has to be undone.
    pub fn internalize(
        &self,
        options: &ModeOptions,
        record_mode: &mut dyn FnMut(Mode) -> StepResult,
        on_step: &mut dyn FnMut(usize, &str),
    ) -> Result<Vec<String>, ModeError> {
        if host_fs::exists(self.record_file()) {
            return Err(self.target.refused(format!(
                "`{}` says package management is already internal",
                self.record_file().display()
            )));
        }
        let _lock = self.target.layout.lock()?;
        let root = self.target.open_root()?;
        let state = self.target.open_state()?;
        for dir in ["/etc/rpm", "/etc/yum.repos.d", "/etc/dnf", "/var/lib/dnf"] {
            check_plain_dirs(&root, Path::new(dir)).map_err(|p| self.target.refused(p))?;
        }
        let (dbpath, backend) = guest_rpm_settings(&root).map_err(|p| self.target.refused(p))?;
        check_plain_dirs(&root, &dbpath).map_err(|p| self.target.refused(p))?;
        if !absent_or_empty_dir(&root, &dbpath).map_err(|e| self.target.refused(e.0))? {
            return Err(self.target.refused(format!(
                "the guest already has something at its database path `{}`; move it away first",
                dbpath.display()
            )));
        }
        let packages = RefCell::new(Vec::new());
        let log = self.target.begin_log(Mode::Internal, "rpm")?;
        let db_journal = RefCell::new(Journal::logged(&log));
        let config_journal = RefCell::new(Journal::logged(&log));
        let mount_journal = RefCell::new(Journal::logged(&log));
        let wrote = RefCell::new(Vec::<PathBuf>::new());
        let record_mode = RefCell::new(record_mode);
        let mut steps = Steps::new(self.target.guest(), Mode::External);
        steps.push(
            "convert the database",
            || {
                self.fresh_convert_dir()?;
                let source = self.list_packages(&self.target.layout.rpm_state())?;
                let converted =
                    self.export_import(&self.target.layout.rpm_state(), backend.as_deref())?;
                if converted != source {
                    return Err(text_err(format!(
                        "the converted database holds {} packages, the original {}",
                        converted.len(),
                        source.len()
                    )));
                }
                *packages.borrow_mut() = converted;
                Ok(())
            },
            || self.remove_convert_dir(),
        );
        steps.push(
            format!("place the database at {}", dbpath.display()),
            || {
                let mut journal = db_journal.borrow_mut();
                journal.mkdir_all(&root, &dbpath)?;
                // Written by rpmdb in a sandbox from the guest's own headers: read as the
                // hostile input it is.
                let db = Path::new(CONVERT_DIR).join("db");
                for entry in state.read_dir(&db)? {
                    if entry.kind != vserver_sandbox::FileKind::File {
                        continue;
                    }
                    let Some(content) = read_state_file(&state, &db.join(&entry.name))? else {
                        continue;
                    };
                    journal.write(&root, &dbpath.join(&entry.name), &content, 0o644)?;
                }
                Ok(())
            },
            || db_journal.borrow_mut().undo(&root),
        );
        steps.push(
            "write the guest's rpm macros, repository configuration and dnf history",
            || {
                let mut journal = config_journal.borrow_mut();
                let mut written = wrote.borrow_mut();
                journal.write(
                    &root,
                    Path::new(GUEST_MACROS),
                    &self.guest_macros(&state)?,
                    0o644,
                )?;
                written.push(PathBuf::from(GUEST_MACROS));
                // A `%_dbpath` in the guest's own macros pointing at our mount point (as
                // util-vserver left it) would hide the database from the guest's rpm.
                let macros = Path::new("/etc/rpm/macros");
                if let Some(text) = read_optional(&root, macros)? {
                    let text = String::from_utf8_lossy(&text);
                    if text
                        .lines()
                        .any(|l| is_definition(l.trim_start(), "_dbpath"))
                    {
                        let kept: String = text
                            .lines()
                            .filter(|l| !is_definition(l.trim_start(), "_dbpath"))
                            .map(|l| format!("{l}\n"))
                            .collect();
                        journal.write(&root, macros, kept.as_bytes(), 0o644)?;
                    }
                }
                for (path, content) in self.guest_repo_files(&state)? {
                    journal.write(&root, &path, &content, 0o644)?;
                    written.push(path);
                }
                // dnf's history goes with the database (dnf in the guest reads it there). dnf
                // wrote it in a sandbox: copied through the safe-path layer.
                let history = Path::new(YUM_LIB);
                if state.exists(history)? && !state.read_dir(history)?.is_empty() {
                    copy_tree_into_guest(
                        &mut journal,
                        &root,
                        &state,
                        history,
                        Path::new("/var/lib/dnf"),
                    )?;
                }
                Ok(())
            },
            || {
                wrote.borrow_mut().clear();
                config_journal.borrow_mut().undo(&root)
            },
        );
        steps.push(
            "remove the mount point /.rpmdb",
            || {
                let mount_point = Path::new("/.rpmdb");
                if !absent_or_empty_dir(&root, mount_point)? {
                    return Err(text_err("/.rpmdb in the guest is not an empty directory"));
                }
                mount_journal.borrow_mut().move_aside(&root, mount_point)
            },
            || mount_journal.borrow_mut().undo(&root),
        );
        steps.push(
            "keep the external database as a read-only archive",
            || {
                set_tree_modes(&state, Path::new(RPM_STATE), 0o555, 0o444)?;
                let record = InternalRecord {
                    family: "rpm".into(),
                    dbpath: dbpath.clone(),
                    created: db_journal
                        .borrow()
                        .created_dirs()
                        .into_iter()
                        .chain(config_journal.borrow().created_dirs())
                        .collect(),
                    wrote: wrote.borrow().clone(),
                    packages: packages.borrow().clone(),
                };
                write_host_atomic(&self.record_file(), record.render().as_bytes())
            },
            || {
                let record = self.record_file();
                if host_fs::exists(&record) {
                    host_fs::remove_file(&record)?;
                }
                set_tree_modes(&state, Path::new(RPM_STATE), 0o755, 0o644)
            },
        );
        steps.push(
            "record the mode",
            || (record_mode.borrow_mut())(Mode::Internal),
            || (record_mode.borrow_mut())(Mode::External),
        );
        steps.durable(&log);
        self.target.run_logged(steps, options, on_step)?;
        // Committed: nothing below can make the guest external again; failures are only
        // leftovers.
        let _ = mount_journal.borrow_mut().commit(&root);
        let _ = self.remove_convert_dir();
        if options.purge_external {
            let _ = set_tree_modes(&state, Path::new(RPM_STATE), 0o755, 0o644);
            let _ = state.remove_all_if_exists(RPM_STATE);
            let _ = state.remove_all_if_exists(YUM_CACHE);
        }
        let _ = changelog::remove(&self.target.layout);
        Ok(packages.into_inner())
    }

    /// Moves package management back out of the guest (see the module documentation).
    /// `record_mode` records `Mode::External` (and `Mode::Internal` when undone).
    pub fn externalize(
        &self,
        options: &ModeOptions,
        record_mode: &mut dyn FnMut(Mode) -> StepResult,
        on_step: &mut dyn FnMut(usize, &str),
    ) -> Result<ExternalizeReport, ModeError> {
        let record_path = self.record_file();
        let record = host_fs::read_to_string(&record_path)
            .ok()
            .and_then(|t| InternalRecord::parse(&t))
            .filter(|r| r.family == "rpm")
            .ok_or_else(|| {
                self.target.refused(format!(
                    "no internal rpm database is recorded in `{}`",
                    record_path.display()
                ))
            })?;
        let dbpath = validate_guest_dbpath(&record.dbpath.to_string_lossy())
            .map_err(|p| self.target.refused(p))?;
        let _lock = self.target.layout.lock()?;
        let root = self.target.open_root()?;
        check_plain_dirs(&root, &dbpath).map_err(|p| self.target.refused(p))?;
        if !matches!(root.symlink_metadata(&dbpath), Ok(info) if info.kind == FileKind::Dir) {
            return Err(self.target.refused(format!(
                "the guest has no database directory at `{}`",
                dbpath.display()
            )));
        }
        if !absent_or_empty_dir(&root, Path::new("/.rpmdb"))
            .map_err(|e| self.target.refused(e.0))?
        {
            return Err(self
                .target
                .refused("`/.rpmdb` in the guest is not an empty directory; remove it first"));
        }
        let report = RefCell::new(ExternalizeReport::default());
        let log = self.target.begin_log(Mode::External, "rpm")?;
        let mount_journal = RefCell::new(Journal::logged(&log));
        let state_journal = RefCell::new(Journal::logged(&log));
        let config_journal = RefCell::new(Journal::logged(&log));
        let state_swapped = RefCell::new(false);
        let record_mode = RefCell::new(record_mode);
        let archive_rel = Path::new("rpm/state.internalized");
        let archive = self.target.layout.dir().join(archive_rel);
        let state_dir = self.target.open_state()?;
        let mut steps = Steps::new(self.target.guest(), Mode::Internal);
        steps.push(
            format!("copy the guest's database out of {}", dbpath.display()),
            || {
                self.fresh_convert_dir()?;
                let copy = self.convert_dir().join("guest");
                host_fs::create_dir_all(&copy)?;
                let mut budget = CopyBudget::default();
                for entry in root.read_dir(&dbpath)? {
                    if entry.kind != FileKind::File {
                        continue;
                    }
                    let path = dbpath.join(&entry.name);
                    let content = read_limited(&root, &path)?;
                    budget.charge(&path, content.len())?;
                    host_fs::write(copy.join(&entry.name), content)?;
                }
                Ok(())
            },
            || self.remove_convert_dir(),
        );
        steps.push(
            "rebuild the database from the guest's",
            || {
                let copy = self.convert_dir().join("guest");
                let packages = self.export_import(&copy, None)?;
                let recorded: BTreeSet<&String> = record.packages.iter().collect();
                let now: BTreeSet<&String> = packages.iter().collect();
                let mut report = report.borrow_mut();
                report.added = now.difference(&recorded).map(|s| (*s).clone()).collect();
                report.removed = recorded.difference(&now).map(|s| (*s).clone()).collect();
                report.packages = packages;
                Ok(())
            },
            nothing,
        );
        steps.push(
            "verify the guest's files against the rebuilt database",
            || {
                mount_journal
                    .borrow_mut()
                    .mkdir_all(&root, Path::new("/.rpmdb"))?;
                report.borrow_mut().differences = self.verify(&root)?;
                Ok(())
            },
            || mount_journal.borrow_mut().undo(&root),
        );
        steps.push(
            "set the guest's database and dnf state aside",
            || {
                let mut journal = state_journal.borrow_mut();
                // A directory internalize made goes; one that was there (a package's) stays,
                // empty.
                if record.created.contains(&dbpath) {
                    journal.move_aside(&root, &dbpath)?;
                } else {
                    journal.move_aside_contents(&root, &dbpath, false)?;
                }
                for dir in GUEST_PM_STATE {
                    let dir = Path::new(dir);
                    if record.created.iter().any(|c| c == dir) {
                        journal.move_aside(&root, dir)?;
                    } else {
                        journal.move_aside_contents(&root, dir, false)?;
                    }
                }
                Ok(())
            },
            || state_journal.borrow_mut().undo(&root),
        );
        steps.push(
            "remove the configuration internalize wrote",
            || {
                config_journal
                    .borrow_mut()
                    .move_aside_written(&root, &record.wrote)
            },
            || config_journal.borrow_mut().undo(&root),
        );
        steps.push(
            "install the rebuilt database in .pkg",
            || {
                let state = self.target.layout.rpm_state();
                if host_fs::exists(&archive) {
                    set_tree_modes(&state_dir, archive_rel, 0o755, 0o644)?;
                    state_dir.remove_all(archive_rel)?;
                }
                log.append(&Logged::StateSwap)?;
                if host_fs::exists(&state) {
                    host_fs::rename(&state, &archive)?;
                }
                *state_swapped.borrow_mut() = true;
                host_fs::rename(self.convert_dir().join("db"), &state)?;
                Ok(())
            },
            || {
                if !*state_swapped.borrow() {
                    return Ok(());
                }
                let state = self.target.layout.rpm_state();
                if host_fs::exists(&state) {
                    host_fs::rename(&state, self.convert_dir().join("db"))?;
                }
                if host_fs::exists(&archive) {
                    host_fs::rename(&archive, &state)?;
                }
                Ok(())
            },
        );
        steps.push(
            "record the mode",
            || {
                (record_mode.borrow_mut())(Mode::External)?;
                Ok(())
            },
            || (record_mode.borrow_mut())(Mode::Internal),
        );
        steps.durable(&log);
        self.target.run_logged(steps, options, on_step)?;
        let _ = state_journal.borrow_mut().commit(&root);
        let _ = config_journal.borrow_mut().commit(&root);
        // Directories internalize made and that are empty now go too, deepest first.
        for dir in record.created.iter().rev() {
            if root.exists(dir).unwrap_or(false) && absent_or_empty_dir(&root, dir).unwrap_or(false)
            {
                let _ = root.remove_all_if_exists(dir);
            }
        }
        let _ = self.remove_convert_dir();
        let _ = set_tree_modes(&state_dir, archive_rel, 0o755, 0o644);
        let _ = state_dir.remove_all_if_exists(archive_rel);
        let _ = host_fs::remove_file(&record_path);
        let _ = changelog::remove(&self.target.layout);
        Ok(report.into_inner())
    }

    /// `rpm -Va` on the guest with the rebuilt database bound at `/.rpmdb`; returns the lines
    /// that report a difference. Scriptlets (`%verifyscript`) do not run: they are guest code.
    fn verify(&self, root: &GuestRoot) -> Result<Vec<String>, StepFailure> {
        let mut command = SandboxCommand::new("rpm");
        command
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", self.convert_dir().join("home"))
            .env("LC_ALL", "C.UTF-8")
            .arg("--root")
            .arg(&self.target.root)
            .args(["--dbpath", "/.rpmdb", "-Va", "--nodeps", "--noscripts"])
            .guest_root(&self.target.root)
            .bind(self.convert_dir().join("db"), "/.rpmdb", Access::ReadWrite)
            .guest_proc(ModeTarget::has_proc(root));
        self.target.verify_lines("rpm", &mut command)
    }
}

/// `.pkg/G/internal`: present exactly while package management is internal.
pub(crate) fn internal_record_file(layout: &PkgLayout) -> PathBuf {
    layout.internal_record()
}

/// Whether `line` defines `%NAME`.
fn is_definition(line: &str, name: &str) -> bool {
    line.strip_prefix('%')
        .and_then(|l| l.strip_prefix(name))
        .is_some_and(|rest| rest.starts_with([' ', '\t']))
}

/// Writes a host file by temporary file and rename.
pub(crate) fn write_host_atomic(path: &Path, content: &[u8]) -> StepResult {
    let temp = path.with_extension("vserver-new");
    host_fs::write(&temp, content)?;
    host_fs::rename(&temp, path)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    #[test]
    fn database_paths_from_the_guest_must_be_plain_and_absolute() {
        for good in ["/var/lib/rpm", "/usr/lib/sysimage/rpm"] {
            assert_eq!(validate_guest_dbpath(good).unwrap(), PathBuf::from(good));
        }
        for bad in [
            "",
            "/",
            "var/lib/rpm",
            "/var/../etc",
            "/var/./lib",
            "/proc/1",
            "/.rpmdb",
            "/var/lib/rpm\n",
            "/var/lib/$x",
            "~/.rpmdb",
            "/tmp/x",
        ] {
            assert!(validate_guest_dbpath(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_last_dbpath_definition_wins_and_known_macros_expand() {
        let mut found = None;
        last_definition(
            "%_dbpath %{_var}/lib/rpm\n%_dbpath_rebuild x\n%_dbpath\t%{_usr}/lib/sysimage/rpm\n",
            "_dbpath",
            &mut found,
        );
        let value = found.unwrap();
        assert_eq!(expand_path_macros(&value).unwrap(), "/usr/lib/sysimage/rpm");
        assert!(expand_path_macros("%(echo /etc)").is_err());
    }

    #[test]
    fn the_record_reads_back_what_it_wrote() {
        let record = InternalRecord {
            family: "rpm".into(),
            dbpath: "/var/lib/rpm".into(),
            created: vec!["/var/lib/rpm".into()],
            wrote: vec!["/etc/dnf/dnf.conf".into()],
            packages: vec!["a-1-1.noarch".into()],
        };
        assert_eq!(InternalRecord::parse(&record.render()).unwrap(), record);
        assert!(InternalRecord::parse("evil=1\n").is_none());
    }
}
