//! Internalize and externalize for Debian-family guests.
//!
//! # internalize
//!
//! 1. `.pkg/G/dpkg/state` (the admin directory) is copied into the guest's `/var/lib/dpkg`,
//!    until now the empty mount point of the external layout.
//! 2. `sources.list`, `sources.list.d/`, `preferences.d/` and the keyrings of
//!    `trusted.gpg.d/` go to the guest's `/etc/apt/` (the generated `apt.conf`, which names
//!    host paths, does not).
//! 3. apt's state (`lists/`, `extended_states`) goes to `/var/lib/apt`.
//! 4. `.pkg/G/dpkg/state` and `.pkg/G/apt/state` become a read-only archive; `.pkg/G/internal`
//!    records the files written and the installed packages.
//! 5. The caller records the mode.
//!
//! # externalize
//!
//! The guest's `status` file is parsed by our strict parser (module `status`) and written out
//! again from the parsed form; of `info/`, only files named after a package of that status with
//! a known suffix are taken, and the `.list`, `.md5sums` and `.conffiles` files are checked line
//! by line (plain paths, hexadecimal digests); `diversions`, `statoverride`, `alternatives/` and
//! `triggers/` are checked the same way. Nothing of the guest's database reaches the host's dpkg
//! unparsed. Then `dpkg --verify` runs on the guest from the host with the rebuilt admin
//! directory, and the package set is compared with the one recorded at internalize.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use vserver_sandbox::{Access, FileKind, GuestRoot, SandboxCommand};

use super::changelog::{self, Logged};
use super::guestfs::{
    CopyBudget, Journal, absent_or_empty_dir, check_plain_dirs, copy_tree_into_guest, read_limited,
};
use super::guestfs::{read_state_file, set_tree_modes};
use super::rpm::{InternalRecord, internal_record_file, write_host_atomic};
use super::status::{parse_status, plain_absolute_path, render_status, valid_package_name};
use super::{
    ExternalizeReport, Mode, ModeError, ModeOptions, ModeTarget, StepFailure, StepResult, Steps,
    nothing, text_err,
};
use crate::host_fs;
use crate::layout::{APT_ETC, APT_STATE, DPKG_STATE, PkgLayout};

/// The guest's dpkg admin directory.
pub(crate) const ADMIN_DIR: &str = "/var/lib/dpkg";

/// Suffixes of the files dpkg keeps per package in `info/`.
const INFO_SUFFIXES: &[&str] = &[
    "list",
    "md5sums",
    "conffiles",
    "preinst",
    "postinst",
    "prerm",
    "postrm",
    "config",
    "templates",
    "triggers",
    "shlibs",
    "symbols",
];

/// Guest directories whose files are apt's state, removed from the guest on externalize (the
/// directories themselves belong to the apt package).
const GUEST_APT_STATE: &[&str] = &[
    "/var/lib/apt",
    "/var/lib/apt/lists",
    "/var/cache/apt",
    "/var/cache/apt/archives",
];

/// A mode change of one Debian-family guest.
#[derive(Debug, Clone)]
pub struct DebModeChange {
    target: ModeTarget,
}

impl DebModeChange {
    /// The mode change of the guest whose root is `root` (trusted host path) and whose package
    /// state is `layout`.
    pub fn new(layout: PkgLayout, root: &Path) -> Self {
        DebModeChange {
            target: ModeTarget {
                layout,
                root: root.to_owned(),
            },
        }
    }

    fn dpkg_state(&self) -> PathBuf {
        self.target.layout.host(DPKG_STATE)
    }

    fn convert_dir(&self) -> PathBuf {
        self.target.layout.host("dpkg/convert")
    }

    fn remove_convert_dir(&self) -> StepResult {
        self.target.remove_dir(&self.convert_dir())
    }

    /// Installed packages of an admin directory below `.pkg/G` (written by dpkg, and by
    /// maintainer scripts, in a sandbox: read through the safe-path layer).
    fn host_packages(&self, state: &GuestRoot, admin: &Path) -> Result<Vec<String>, StepFailure> {
        let text = read_state_file(state, &admin.join("status"))?.unwrap_or_default();
        let stanzas = parse_status(&text).map_err(|e| text_err(e.to_string()))?;
        let mut packages: Vec<String> = stanzas
            .iter()
            .filter(|s| s.is_installed())
            .map(|s| s.identity())
            .collect();
        packages.sort();
        Ok(packages)
    }

    /// Moves package management into the guest (see the module documentation).
    pub fn internalize(
        &self,
        options: &ModeOptions,
        record_mode: &mut dyn FnMut(Mode) -> StepResult,
        on_step: &mut dyn FnMut(usize, &str),
    ) -> Result<Vec<String>, ModeError> {
        let record_file = internal_record_file(&self.target.layout);
        if host_fs::exists(&record_file) {
            return Err(self.target.refused(format!(
                "`{}` says package management is already internal",
                record_file.display()
            )));
        }
        let _lock = self.target.layout.lock()?;
        let root = self.target.open_root()?;
        for dir in [ADMIN_DIR, "/var/lib/apt", "/etc/apt"] {
            check_plain_dirs(&root, Path::new(dir)).map_err(|p| self.target.refused(p))?;
        }
        if !absent_or_empty_dir(&root, Path::new(ADMIN_DIR))
            .map_err(|e| self.target.refused(e.0))?
        {
            return Err(self.target.refused(format!(
                "`{ADMIN_DIR}` in the guest is not empty; the external layout keeps it empty"
            )));
        }
        let state = self.target.open_state()?;
        let packages = self
            .host_packages(&state, Path::new(DPKG_STATE))
            .map_err(|e| self.target.refused(e.to_string()))?;
        let log = self.target.begin_log(Mode::Internal, "deb")?;
        let db_journal = RefCell::new(Journal::logged(&log));
        let etc_journal = RefCell::new(Journal::logged(&log));
        let state_journal = RefCell::new(Journal::logged(&log));
        let wrote = RefCell::new(Vec::<PathBuf>::new());
        let record_mode = RefCell::new(record_mode);
        let mut steps = Steps::new(self.target.guest(), Mode::External);
        steps.push(
            format!("copy the dpkg database into {ADMIN_DIR}"),
            || {
                copy_tree_into_guest(
                    &mut db_journal.borrow_mut(),
                    &root,
                    &state,
                    Path::new(DPKG_STATE),
                    Path::new(ADMIN_DIR),
                )
            },
            || db_journal.borrow_mut().undo(&root),
        );
        steps.push(
            "write apt's sources and keyrings to /etc/apt",
            || {
                let mut journal = etc_journal.borrow_mut();
                let etc = Path::new(APT_ETC);
                if let Some(list) = read_state_file(&state, &etc.join("sources.list"))? {
                    let path = PathBuf::from("/etc/apt/sources.list");
                    journal.write(&root, &path, &list, 0o644)?;
                    wrote.borrow_mut().push(path);
                }
                for dir in ["sources.list.d", "preferences.d", "trusted.gpg.d"] {
                    let from = etc.join(dir);
                    if !state.exists(&from)? {
                        continue;
                    }
                    for entry in state.read_dir(&from)? {
                        if entry.kind != FileKind::File {
                            continue;
                        }
                        let Some(content) = read_state_file(&state, &from.join(&entry.name))?
                        else {
                            continue;
                        };
                        let path = Path::new("/etc/apt").join(dir).join(&entry.name);
                        journal.write(&root, &path, &content, 0o644)?;
                        wrote.borrow_mut().push(path);
                    }
                }
                Ok(())
            },
            || {
                wrote.borrow_mut().clear();
                etc_journal.borrow_mut().undo(&root)
            },
        );
        steps.push(
            "copy apt's state to /var/lib/apt",
            || {
                if state.exists(APT_STATE)? {
                    copy_tree_into_guest(
                        &mut state_journal.borrow_mut(),
                        &root,
                        &state,
                        Path::new(APT_STATE),
                        Path::new("/var/lib/apt"),
                    )?;
                }
                Ok(())
            },
            || state_journal.borrow_mut().undo(&root),
        );
        steps.push(
            "keep the external state as a read-only archive",
            || {
                set_tree_modes(&state, Path::new(DPKG_STATE), 0o555, 0o444)?;
                set_tree_modes(&state, Path::new(APT_STATE), 0o555, 0o444)?;
                let record = InternalRecord {
                    family: "deb".into(),
                    dbpath: PathBuf::from(ADMIN_DIR),
                    created: Vec::new(),
                    wrote: wrote.borrow().clone(),
                    packages: packages.clone(),
                };
                write_host_atomic(&record_file, record.render().as_bytes())
            },
            || {
                if host_fs::exists(&record_file) {
                    host_fs::remove_file(&record_file)?;
                }
                set_tree_modes(&state, Path::new(APT_STATE), 0o755, 0o644)?;
                set_tree_modes(&state, Path::new(DPKG_STATE), 0o755, 0o644)
            },
        );
        steps.push(
            "record the mode",
            || (record_mode.borrow_mut())(Mode::Internal),
            || (record_mode.borrow_mut())(Mode::External),
        );
        steps.durable(&log);
        self.target.run_logged(steps, options, on_step)?;
        if options.purge_external {
            for dir in [DPKG_STATE, APT_STATE] {
                let _ = set_tree_modes(&state, Path::new(dir), 0o755, 0o644);
                let _ = state.remove_all_if_exists(dir);
            }
        }
        let _ = changelog::remove(&self.target.layout);
        Ok(packages)
    }

    /// Moves package management back out of the guest (see the module documentation).
    pub fn externalize(
        &self,
        options: &ModeOptions,
        record_mode: &mut dyn FnMut(Mode) -> StepResult,
        on_step: &mut dyn FnMut(usize, &str),
    ) -> Result<ExternalizeReport, ModeError> {
        let record_path = internal_record_file(&self.target.layout);
        let record = host_fs::read_to_string(&record_path)
            .ok()
            .and_then(|t| InternalRecord::parse(&t))
            .filter(|r| r.family == "deb")
            .ok_or_else(|| {
                self.target.refused(format!(
                    "no internal dpkg database is recorded in `{}`",
                    record_path.display()
                ))
            })?;
        let _lock = self.target.layout.lock()?;
        let root = self.target.open_root()?;
        check_plain_dirs(&root, Path::new(ADMIN_DIR)).map_err(|p| self.target.refused(p))?;
        let report = RefCell::new(ExternalizeReport::default());
        let log = self.target.begin_log(Mode::External, "deb")?;
        let state_journal = RefCell::new(Journal::logged(&log));
        let config_journal = RefCell::new(Journal::logged(&log));
        let swapped = RefCell::new(false);
        let record_mode = RefCell::new(record_mode);
        let archive_rel = Path::new("dpkg/state.internalized");
        let archive = self.target.layout.dir().join(archive_rel);
        let state_dir = self.target.open_state()?;
        let mut steps = Steps::new(self.target.guest(), Mode::Internal);
        steps.push(
            "read and check the guest's dpkg database",
            || {
                self.remove_convert_dir()?;
                let admin = self.convert_dir().join("state");
                let mut report = report.borrow_mut();
                rebuild_admin_dir(&root, &admin, &mut report.rejected)?;
                let packages =
                    self.host_packages(&state_dir, &Path::new("dpkg/convert").join("state"))?;
                let recorded: BTreeSet<&String> = record.packages.iter().collect();
                let now: BTreeSet<&String> = packages.iter().collect();
                report.added = now.difference(&recorded).map(|s| (*s).clone()).collect();
                report.removed = recorded.difference(&now).map(|s| (*s).clone()).collect();
                report.packages = packages;
                Ok(())
            },
            || self.remove_convert_dir(),
        );
        steps.push(
            "verify the guest's files against the rebuilt database",
            || {
                report.borrow_mut().differences = self.verify(&root)?;
                Ok(())
            },
            nothing,
        );
        steps.push(
            "set the guest's dpkg and apt state aside",
            || {
                let mut journal = state_journal.borrow_mut();
                journal.move_aside(&root, Path::new(ADMIN_DIR))?;
                journal.mkdir_all(&root, Path::new(ADMIN_DIR))?;
                for dir in GUEST_APT_STATE {
                    journal.move_aside_contents(&root, Path::new(dir), true)?;
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
                let state = self.dpkg_state();
                if host_fs::exists(&archive) {
                    set_tree_modes(&state_dir, archive_rel, 0o755, 0o644)?;
                    state_dir.remove_all(archive_rel)?;
                }
                log.append(&Logged::StateSwap)?;
                if host_fs::exists(&state) {
                    host_fs::rename(&state, &archive)?;
                }
                *swapped.borrow_mut() = true;
                host_fs::rename(self.convert_dir().join("state"), &state)?;
                set_tree_modes(&state_dir, Path::new(APT_STATE), 0o755, 0o644)
            },
            || {
                if !*swapped.borrow() {
                    return Ok(());
                }
                let state = self.dpkg_state();
                if host_fs::exists(&state) {
                    host_fs::rename(&state, self.convert_dir().join("state"))?;
                }
                if host_fs::exists(&archive) {
                    host_fs::rename(&archive, &state)?;
                }
                set_tree_modes(&state_dir, Path::new(APT_STATE), 0o555, 0o444)
            },
        );
        steps.push(
            "record the mode",
            || (record_mode.borrow_mut())(Mode::External),
            || (record_mode.borrow_mut())(Mode::Internal),
        );
        steps.durable(&log);
        self.target.run_logged(steps, options, on_step)?;
        let _ = state_journal.borrow_mut().commit(&root);
        let _ = config_journal.borrow_mut().commit(&root);
        let _ = self.remove_convert_dir();
        let _ = set_tree_modes(&state_dir, archive_rel, 0o755, 0o644);
        let _ = state_dir.remove_all_if_exists(archive_rel);
        let _ = host_fs::remove_file(&record_path);
        let _ = changelog::remove(&self.target.layout);
        Ok(report.into_inner())
    }

    /// `dpkg --verify` on the guest with the rebuilt admin directory bound onto its
    /// `/var/lib/dpkg`; returns the lines that report a difference.
    fn verify(&self, root: &GuestRoot) -> Result<Vec<String>, StepFailure> {
        let mut root_arg = std::ffi::OsString::from("--root=");
        root_arg.push(&self.target.root);
        let mut command = SandboxCommand::new("dpkg");
        command
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C.UTF-8")
            .arg(root_arg)
            .arg("--verify")
            .guest_root(&self.target.root)
            .bind(
                self.convert_dir().join("state"),
                ADMIN_DIR,
                Access::ReadWrite,
            )
            .guest_proc(ModeTarget::has_proc(root));
        self.target.verify_lines("dpkg", &mut command)
    }
}

/// Builds a fresh admin directory at `admin` (host) from the guest's `/var/lib/dpkg`: the
/// status file parsed and rewritten, every other file checked or left out (named in
/// `rejected`).
fn rebuild_admin_dir(root: &GuestRoot, admin: &Path, rejected: &mut Vec<String>) -> StepResult {
    for dir in ["info", "updates", "triggers", "alternatives", "parts"] {
        host_fs::create_dir_all(admin.join(dir))?;
    }
    let guest_admin = Path::new(ADMIN_DIR);
    let status = read_limited(root, &guest_admin.join("status"))?;
    let stanzas = parse_status(&status).map_err(|e| text_err(e.to_string()))?;
    host_fs::write(admin.join("status"), render_status(&stanzas))?;
    host_fs::write(admin.join("available"), "")?;
    let names: BTreeSet<&str> = stanzas.iter().map(|s| s.package()).collect();
    let mut budget = CopyBudget::default();
    budget.charge(&guest_admin.join("status"), status.len())?;

    let info = guest_admin.join("info");
    if root.exists(&info)? {
        for entry in root.read_dir(&info)? {
            let name = entry.name.to_string_lossy().into_owned();
            if entry.kind != FileKind::File {
                rejected.push(format!("info/{name}"));
                continue;
            }
            if name == "format" {
                let content = read_limited(root, &info.join(&entry.name))?;
                if content == b"0\n" || content == b"1\n" {
                    host_fs::write(admin.join("info/format"), content)?;
                }
                continue;
            }
            let Some((package, suffix)) = name.rsplit_once('.') else {
                rejected.push(format!("info/{name}"));
                continue;
            };
            let bare = package.split_once(':').map_or(package, |(n, _)| n);
            let arch_ok = package.split_once(':').is_none_or(|(_, a)| {
                !a.is_empty()
                    && a.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            });
            if !(valid_package_name(bare)
                && arch_ok
                && names.contains(bare)
                && INFO_SUFFIXES.contains(&suffix))
            {
                rejected.push(format!("info/{name}"));
                continue;
            }
            let path = info.join(&entry.name);
            let content = read_limited(root, &path)?;
            budget.charge(&path, content.len())?;
            let ok = match suffix {
                "list" => lines_ok(&content, |l| l == "/." || plain_absolute_path(l)),
                "conffiles" => lines_ok(&content, |l| {
                    let path = l.strip_prefix("remove-on-upgrade ").unwrap_or(l);
                    plain_absolute_path(path)
                }),
                "md5sums" => lines_ok(&content, |l| {
                    let Some((digest, path)) = l.split_once("  ") else {
                        return false;
                    };
                    digest.len() == 32
                        && digest.bytes().all(|b| b.is_ascii_hexdigit())
                        && plain_absolute_path(&format!("/{path}"))
                }),
                _ => true,
            };
            if !ok {
                rejected.push(format!("info/{name}"));
                continue;
            }
            let path = admin.join("info").join(&name);
            host_fs::write(&path, content)?;
            let mode = if ["preinst", "postinst", "prerm", "postrm", "config"].contains(&suffix) {
                0o755
            } else {
                0o644
            };
            host_fs::set_mode(&path, mode)?;
        }
    }
    for (file, fields) in [("diversions", 0usize), ("statoverride", 4)] {
        let path = guest_admin.join(file);
        if !root.exists(&path)? {
            continue;
        }
        let content = read_limited(root, &path)?;
        let ok = lines_ok(&content, |l| match fields {
            // diversions: three lines per entry: path, diverted-to path, package (or `:`).
            0 => plain_absolute_path(l) || l == ":" || valid_package_name(l),
            // statoverride: `USER GROUP MODE PATH`.
            _ => {
                let parts: Vec<&str> = l.splitn(4, ' ').collect();
                parts.len() == 4
                    && parts[..2].iter().all(|p| {
                        !p.is_empty()
                            && p.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"#_.-".contains(&b))
                    })
                    && parts[2].bytes().all(|b| (b'0'..=b'7').contains(&b))
                    && plain_absolute_path(parts[3])
            }
        });
        if ok {
            host_fs::write(admin.join(file), content)?;
        } else {
            rejected.push(file.to_owned());
        }
    }
    let alternatives = guest_admin.join("alternatives");
    if root.exists(&alternatives)? {
        for entry in root.read_dir(&alternatives)? {
            let name = entry.name.to_string_lossy().into_owned();
            let name_ok = !name.starts_with('.')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._+-@".contains(&b));
            if entry.kind != FileKind::File || !name_ok {
                rejected.push(format!("alternatives/{name}"));
                continue;
            }
            let content = read_limited(root, &alternatives.join(&entry.name))?;
            // Lines are modes, names, priorities or absolute paths; an empty line ends a block.
            let ok = lines_ok(&content, |l| {
                l.is_empty()
                    || plain_absolute_path(l)
                    || l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._+-@".contains(&b))
            });
            if ok {
                host_fs::write(admin.join("alternatives").join(&name), content)?;
            } else {
                rejected.push(format!("alternatives/{name}"));
            }
        }
    }
    let triggers = guest_admin.join("triggers/File");
    if root.exists(&triggers)? {
        let content = read_limited(root, &triggers)?;
        let ok = lines_ok(&content, |l| {
            l.split_once(' ').is_some_and(|(trigger, package)| {
                plain_absolute_path(trigger)
                    && valid_package_name(package.split(':').next().unwrap_or(""))
            })
        });
        if ok {
            host_fs::write(admin.join("triggers/File"), content)?;
        } else {
            rejected.push("triggers/File".into());
        }
    }
    Ok(())
}

/// Whether `content` is UTF-8 without control characters and every line passes `check`.
fn lines_ok(content: &[u8], check: impl Fn(&str) -> bool) -> bool {
    std::str::from_utf8(content).is_ok_and(|text| {
        text.lines()
            .all(|line| !line.chars().any(char::is_control) && check(line))
    })
}
