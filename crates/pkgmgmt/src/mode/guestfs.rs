//! Guest-side file work for mode changes, always through [`GuestRoot`], with a journal of what
//! was changed so that a step can undo exactly its own changes.
//!
//! Directories a mode change writes into are first checked component by component with
//! `symlink_metadata`: a symlink anywhere on the way is refused (see the parent module for
//! why), and so is a component that exists but is not a directory.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use vserver_sandbox::{FileKind, GuestRoot};

use super::StepResult;
use super::changelog::{ChangeLog, Logged};

/// The largest guest file a mode change reads into memory (configuration, a status file).
pub(crate) const MAX_READ: u64 = 256 << 20;

/// How much of a guest's database a mode change copies out in all, so that a guest cannot fill
/// the host's disk with files in its database directory.
pub(crate) const MAX_COPY_TOTAL: u64 = 4 << 30;
/// How many files of a guest's database directory a mode change copies out.
pub(crate) const MAX_COPY_FILES: usize = 100_000;

/// Counts what is copied out of a guest against [`MAX_COPY_TOTAL`] and [`MAX_COPY_FILES`].
#[derive(Debug, Default)]
pub(crate) struct CopyBudget {
    bytes: u64,
    files: usize,
}

impl CopyBudget {
    /// Charges one file of `len` bytes; fails once a limit is passed.
    pub(crate) fn charge(&mut self, path: &Path, len: usize) -> Result<(), StepFailureText> {
        self.bytes = self.bytes.saturating_add(len as u64);
        self.files += 1;
        if self.bytes > MAX_COPY_TOTAL || self.files > MAX_COPY_FILES {
            return Err(StepFailureText(format!(
                "the guest's database is larger than {MAX_COPY_TOTAL} bytes or {MAX_COPY_FILES} files (at `{}`)",
                path.display()
            )));
        }
        Ok(())
    }
}

/// Refuses `path` (absolute, inside the guest) when a component is a symlink or not a
/// directory; missing components are fine (they will be created).
pub(crate) fn check_plain_dirs(root: &GuestRoot, path: &Path) -> Result<(), String> {
    let mut so_far = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::RootDir => continue,
            Component::Normal(name) => so_far.push(name),
            _ => return Err(format!("`{}` is not a plain absolute path", path.display())),
        }
        match root.symlink_metadata(&so_far) {
            Ok(info) if info.kind == FileKind::Dir => {}
            Ok(info) if info.kind == FileKind::Symlink => {
                let target = root
                    .read_link(&so_far)
                    .map(|t| format!(" (pointing to `{}`)", t.display()))
                    .unwrap_or_default();
                return Err(format!(
                    "`{}` in the guest is a symlink{target}; refusing to write through it",
                    so_far.display()
                ));
            }
            Ok(_) => {
                return Err(format!(
                    "`{}` in the guest is not a directory",
                    so_far.display()
                ));
            }
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// Whether `path` in the guest is a directory with nothing in it, or absent.
pub(crate) fn absent_or_empty_dir(root: &GuestRoot, path: &Path) -> Result<bool, StepFailureText> {
    match root.symlink_metadata(path) {
        Err(_) => Ok(true),
        Ok(info) if info.kind == FileKind::Dir => Ok(root
            .read_dir(path)
            .map_err(|e| StepFailureText(e.to_string()))?
            .is_empty()),
        Ok(_) => Ok(false),
    }
}

/// A plain message as a step failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct StepFailureText(pub String);

/// Reads a guest file of at most [`MAX_READ`] bytes, or `None` when it does not exist.
pub(crate) fn read_optional(
    root: &GuestRoot,
    path: &Path,
) -> Result<Option<Vec<u8>>, StepFailureText> {
    if !root
        .exists(path)
        .map_err(|e| StepFailureText(e.to_string()))?
    {
        return Ok(None);
    }
    read_limited(root, path).map(Some)
}

/// Reads a guest regular file of at most [`MAX_READ`] bytes.
pub(crate) fn read_limited(root: &GuestRoot, path: &Path) -> Result<Vec<u8>, StepFailureText> {
    let file = root
        .open_file(path)
        .map_err(|e| StepFailureText(format!("{e}: {}", e.source_text())))?;
    let mut data = Vec::new();
    file.take(MAX_READ + 1)
        .read_to_end(&mut data)
        .map_err(|e| {
            StepFailureText(format!(
                "cannot read `{}` in the guest: {e}",
                path.display()
            ))
        })?;
    if data.len() as u64 > MAX_READ {
        return Err(StepFailureText(format!(
            "`{}` in the guest is larger than {MAX_READ} bytes",
            path.display()
        )));
    }
    Ok(data)
}

trait SourceText {
    fn source_text(&self) -> String;
}

impl SourceText for vserver_sandbox::Error {
    fn source_text(&self) -> String {
        std::error::Error::source(self)
            .map(ToString::to_string)
            .unwrap_or_default()
    }
}

/// One change to the guest, as recorded for its undo.
#[derive(Debug, Clone)]
enum Change {
    /// A directory that did not exist.
    CreatedDir(PathBuf),
    /// A file written over what was there (`None`: nothing).
    Wrote {
        path: PathBuf,
        previous: Option<(Vec<u8>, u32)>,
    },
    /// A file or tree removed, kept aside under another name in the same directory.
    MovedAside { path: PathBuf, aside: PathBuf },
}

/// The guest-side changes of one step, undone newest first. With a [`ChangeLog`], each change is
/// also logged before it is made, for the recovery of a killed change.
#[derive(Debug, Default)]
pub(crate) struct Journal<'log> {
    changes: Vec<Change>,
    log: Option<&'log ChangeLog>,
}

impl<'log> Journal<'log> {
    /// A journal that logs each change to `log` before making it.
    pub(crate) fn logged(log: &'log ChangeLog) -> Self {
        Journal {
            changes: Vec::new(),
            log: Some(log),
        }
    }

    fn log(&self, entry: Logged) -> StepResult {
        match self.log {
            Some(log) => log.append(&entry),
            None => Ok(()),
        }
    }

    /// Sets aside the files internalize wrote (`wrote` of the internal record), skipping any whose
    /// directories the guest has since turned into something else than plain directories.
    pub(crate) fn move_aside_written(&mut self, root: &GuestRoot, wrote: &[PathBuf]) -> StepResult {
        for path in wrote {
            if check_plain_dirs(root, path.parent().unwrap_or(path)).is_ok() {
                self.move_aside(root, path)?;
            }
        }
        Ok(())
    }

    /// Creates the missing directories of `path` (mode 0755), recording each.
    pub(crate) fn mkdir_all(&mut self, root: &GuestRoot, path: &Path) -> StepResult {
        check_plain_dirs(root, path).map_err(StepFailureText)?;
        let mut so_far = PathBuf::from("/");
        for component in path.components() {
            let Component::Normal(name) = component else {
                continue;
            };
            so_far.push(name);
            if !root.exists(&so_far)? {
                self.log(Logged::CreatedDir(so_far.clone()))?;
                root.mkdir(&so_far, 0o755)?;
                self.changes.push(Change::CreatedDir(so_far.clone()));
            }
        }
        Ok(())
    }

    /// Writes `content` to `path` (its directory must pass [`check_plain_dirs`]), keeping the
    /// previous content for the undo.
    pub(crate) fn write(
        &mut self,
        root: &GuestRoot,
        path: &Path,
        content: &[u8],
        mode: u32,
    ) -> StepResult {
        let parent = path.parent().unwrap_or(Path::new("/"));
        self.mkdir_all(root, parent)?;
        let previous = match root.symlink_metadata(path) {
            Ok(info) if info.kind == FileKind::File => Some((read_limited(root, path)?, info.mode)),
            Ok(info) if info.kind == FileKind::Dir => {
                return Err(Box::new(StepFailureText(format!(
                    "`{}` in the guest is a directory",
                    path.display()
                ))));
            }
            // A symlink or other node at the name is replaced by the rename, never followed; it
            // is put aside so the undo can bring it back.
            Ok(_) => {
                self.move_aside(root, path)?;
                None
            }
            Err(_) => None,
        };
        let saved = match (&previous, self.log) {
            (Some((content, mode)), Some(log)) => Some((log.save_previous(content)?, *mode)),
            _ => None,
        };
        self.log(Logged::Wrote {
            path: path.to_owned(),
            saved,
        })?;
        root.write_atomic(path, content, mode)?;
        self.changes.push(Change::Wrote {
            path: path.to_owned(),
            previous,
        });
        Ok(())
    }

    /// Renames `path` to a hidden sibling (`.NAME.vserver-aside`) so that it can be restored or,
    /// at the commit, removed; nothing when it does not exist.
    pub(crate) fn move_aside(&mut self, root: &GuestRoot, path: &Path) -> StepResult {
        if !root.exists(path)? {
            return Ok(());
        }
        let aside = aside_name(path);
        root.remove_all_if_exists(&aside)?;
        self.log(Logged::MovedAside {
            path: path.to_owned(),
            aside: aside.clone(),
        })?;
        root.rename(path, &aside)?;
        self.changes.push(Change::MovedAside {
            path: path.to_owned(),
            aside,
        });
        Ok(())
    }

    /// Moves aside every entry of the guest directory `dir` (only regular files when
    /// `files_only`), keeping the directory itself: it may belong to a package.
    pub(crate) fn move_aside_contents(
        &mut self,
        root: &GuestRoot,
        dir: &Path,
        files_only: bool,
    ) -> StepResult {
        if check_plain_dirs(root, dir).is_err()
            || !matches!(root.symlink_metadata(dir), Ok(info) if info.kind == FileKind::Dir)
        {
            return Ok(());
        }
        for entry in root.read_dir(dir)? {
            let name = entry.name.to_string_lossy();
            if name.ends_with(".vserver-aside") || (files_only && entry.kind != FileKind::File) {
                continue;
            }
            self.move_aside(root, &dir.join(&entry.name))?;
        }
        Ok(())
    }

    /// The directories this journal created, in creation order.
    pub(crate) fn created_dirs(&self) -> Vec<PathBuf> {
        self.changes
            .iter()
            .filter_map(|c| match c {
                Change::CreatedDir(dir) => Some(dir.clone()),
                _ => None,
            })
            .collect()
    }

    /// Undoes every recorded change, newest first; keeps going after a failure and reports
    /// the first.
    pub(crate) fn undo(&mut self, root: &GuestRoot) -> StepResult {
        let mut first_error: Option<super::StepFailure> = None;
        while let Some(change) = self.changes.pop() {
            let result: StepResult = match change {
                Change::CreatedDir(dir) => root.remove_all_if_exists(&dir).map_err(Into::into),
                Change::Wrote {
                    path,
                    previous: Some((content, mode)),
                } => root.write_atomic(&path, &content, mode).map_err(Into::into),
                Change::Wrote {
                    path,
                    previous: None,
                } => root.remove_all_if_exists(&path).map_err(Into::into),
                Change::MovedAside { path, aside } => root
                    .remove_all_if_exists(&path)
                    .and_then(|()| root.rename(&aside, &path))
                    .map_err(Into::into),
            };
            if let Err(error) = result {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Makes the changes final: removes what was moved aside.
    pub(crate) fn commit(&mut self, root: &GuestRoot) -> StepResult {
        for change in self.changes.drain(..) {
            if let Change::MovedAside { aside, .. } = change {
                root.remove_all_if_exists(&aside)?;
            }
        }
        Ok(())
    }
}

/// `/dir/.NAME.vserver-aside`.
fn aside_name(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or(OsStr::new("root"));
    let mut aside = std::ffi::OsString::from(".");
    aside.push(name);
    aside.push(".vserver-aside");
    path.parent().unwrap_or(Path::new("/")).join(aside)
}

/// Copies the tree `from` of the guest's package state (`state`: `.pkg/G` opened as an
/// untrusted tree, since sandboxes write parts of it) into the guest at `guest` (which must not
/// exist or be empty), recording every created directory and file in `journal`. Only regular
/// files and directories are copied; symlinks and anything else are skipped, never followed, and
/// the whole copy is held to [`MAX_COPY_TOTAL`] and [`MAX_COPY_FILES`].
pub(crate) fn copy_tree_into_guest(
    journal: &mut Journal<'_>,
    root: &GuestRoot,
    state: &GuestRoot,
    from: &Path,
    guest: &Path,
) -> StepResult {
    copy_tree_limited(
        journal,
        root,
        state,
        from,
        guest,
        &mut CopyBudget::default(),
    )
}

fn copy_tree_limited(
    journal: &mut Journal<'_>,
    root: &GuestRoot,
    state: &GuestRoot,
    from: &Path,
    guest: &Path,
    budget: &mut CopyBudget,
) -> StepResult {
    journal.mkdir_all(root, guest)?;
    let mut entries = state.read_dir(from)?;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    for entry in entries {
        let source = from.join(&entry.name);
        let target = guest.join(&entry.name);
        match entry.kind {
            FileKind::Dir => copy_tree_limited(journal, root, state, &source, &target, budget)?,
            FileKind::File => {
                let content = read_limited(state, &source)?;
                budget.charge(&source, content.len())?;
                let mode = state.symlink_metadata(&source)?.mode & 0o7777;
                journal.write(root, &target, &content, mode)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Sets the modes below `rel` of the guest's package state (`state`, untrusted): directories
/// `dir_mode`, regular files `file_mode`; symlinks and other files are left alone, never
/// followed. A missing `rel` is fine.
pub(crate) fn set_tree_modes(
    state: &GuestRoot,
    rel: &Path,
    dir_mode: u32,
    file_mode: u32,
) -> StepResult {
    let info = match state.symlink_metadata(rel) {
        Ok(info) => info,
        Err(vserver_sandbox::Error::Guest { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    match info.kind {
        FileKind::Dir => {
            // Writable first, so that the entries can be changed.
            state.set_permissions(rel, 0o755)?;
            for entry in state.read_dir(rel)? {
                set_tree_modes(state, &rel.join(&entry.name), dir_mode, file_mode)?;
            }
            state.set_permissions(rel, dir_mode)?;
        }
        FileKind::File => state.set_permissions(rel, file_mode)?,
        _ => {}
    }
    Ok(())
}

/// Reads a regular file of the guest's package state (`state`, untrusted), or `None` when there
/// is nothing at `rel`; a symlink or any other kind of file there is an error, never followed.
pub(crate) fn read_state_file(
    state: &GuestRoot,
    rel: &Path,
) -> Result<Option<Vec<u8>>, StepFailureText> {
    match state.symlink_metadata(rel) {
        Ok(info) if info.kind == FileKind::File => read_limited(state, rel).map(Some),
        Ok(_) => Err(StepFailureText(format!(
            "`{}` in `{}` is not a regular file",
            rel.display(),
            state.host_path().display()
        ))),
        Err(vserver_sandbox::Error::Guest { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(None)
        }
        Err(e) => Err(StepFailureText(e.to_string())),
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        for entry in fs_err::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            let path = entry.path();
            if kind.is_symlink() {
                let target = fs_err::read_link(&path).unwrap();
                out.insert(path, target.as_os_str().as_encoded_bytes().to_vec());
            } else if kind.is_dir() {
                out.insert(path.clone(), b"<dir>".to_vec());
                out.extend(tree(&path));
            } else {
                out.insert(path.clone(), fs_err::read(&path).unwrap());
            }
        }
        out
    }

    #[test]
    fn undo_puts_back_exactly_what_was_there() {
        let tmp = tempfile::tempdir().unwrap();
        let guest = tmp.path();
        fs_err::create_dir_all(guest.join("etc/old")).unwrap();
        fs_err::write(guest.join("etc/kept"), "before\n").unwrap();
        fs_err::write(guest.join("etc/old/file"), "old\n").unwrap();
        std::os::unix::fs::symlink("/nowhere", guest.join("etc/link")).unwrap();
        let before = tree(guest);
        let root = GuestRoot::open(guest).unwrap();
        let mut journal = Journal::default();
        journal
            .write(&root, Path::new("/etc/kept"), b"after\n", 0o600)
            .unwrap();
        journal
            .write(&root, Path::new("/etc/new/deep/file"), b"new\n", 0o644)
            .unwrap();
        journal
            .write(&root, Path::new("/etc/link"), b"replaced\n", 0o644)
            .unwrap();
        journal.move_aside(&root, Path::new("/etc/old")).unwrap();
        assert_eq!(fs_err::read(guest.join("etc/kept")).unwrap(), b"after\n");
        assert!(!guest.join("etc/old").exists());
        journal.undo(&root).unwrap();
        assert_eq!(tree(guest), before);
    }

    #[test]
    fn commit_removes_what_was_set_aside() {
        let tmp = tempfile::tempdir().unwrap();
        let guest = tmp.path();
        fs_err::create_dir_all(guest.join("var/lib/rpm")).unwrap();
        fs_err::write(guest.join("var/lib/rpm/rpmdb.sqlite"), "db").unwrap();
        let root = GuestRoot::open(guest).unwrap();
        let mut journal = Journal::default();
        journal
            .move_aside_contents(&root, Path::new("/var/lib/rpm"), false)
            .unwrap();
        journal.commit(&root).unwrap();
        assert!(guest.join("var/lib/rpm").is_dir());
        assert_eq!(
            fs_err::read_dir(guest.join("var/lib/rpm")).unwrap().count(),
            0
        );
    }

    #[test]
    fn symlinked_or_odd_directories_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let guest = tmp.path().join("guest");
        let outside = tmp.path().join("outside");
        fs_err::create_dir_all(guest.join("var/lib")).unwrap();
        fs_err::create_dir_all(guest.join("etc")).unwrap();
        fs_err::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, guest.join("var/lib/rpm")).unwrap();
        std::os::unix::fs::symlink("../../../outside", guest.join("etc/apt")).unwrap();
        std::os::unix::fs::symlink("/etc/loop", guest.join("etc/loop")).unwrap();
        fs_err::write(guest.join("etc/file"), "").unwrap();
        let root = GuestRoot::open(&guest).unwrap();
        for bad in [
            "/var/lib/rpm",
            "/etc/apt/x",
            "/etc/loop",
            "/etc/file/x",
            "/var/../etc",
        ] {
            assert!(check_plain_dirs(&root, Path::new(bad)).is_err(), "{bad}");
        }
        for good in ["/var/lib/dpkg", "/usr/lib/sysimage/rpm", "/etc"] {
            assert!(check_plain_dirs(&root, Path::new(good)).is_ok(), "{good}");
        }
        let mut journal = Journal::default();
        assert!(
            journal
                .write(&root, Path::new("/var/lib/rpm/rpmdb.sqlite"), b"x", 0o644)
                .is_err()
        );
        assert_eq!(fs_err::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn the_copy_budget_stops_a_flood() {
        let mut budget = CopyBudget::default();
        assert!(budget.charge(Path::new("/a"), 1 << 30).is_ok());
        assert!(
            budget
                .charge(Path::new("/b"), (MAX_COPY_TOTAL as usize) - (1 << 30))
                .is_ok()
        );
        assert!(budget.charge(Path::new("/c"), 1).is_err());
    }
}
