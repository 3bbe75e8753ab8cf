//! `.pkg/G/mode-change`: the write-ahead log that lets a mode change be killed at any instant.
//!
//! The in-memory [`super::Steps`] undo everything when a step *fails*; a process that is killed
//! undoes nothing. So every change a mode change makes to the guest (a directory created, a file
//! written over what was there, an entry moved aside) and the one host-side change that is not
//! idempotent (the swap of `.pkg/G`'s database directory with the rebuilt one) is appended to this
//! log *before* it is made. The next command that touches the guest replays the log
//! ([`super::recover`]): newest first to undo a change whose mode was not recorded yet, or the
//! commit (removing what was moved aside) when the guest's configuration already names the new
//! mode. Every replayed action is idempotent, so a recovery that is itself killed is simply run
//! again.
//!
//! Each entry is one `write(2)` of one short line to a file opened `O_APPEND`: a `SIGKILL` lands
//! between system calls, never inside one, so the log is whole up to its last line. It is
//! `fsync`ed at the end of each step, against a crash of the machine. Paths are written in hex:
//! names come from the guest and may hold any byte but `/` and NUL. The previous content of a
//! file written over is saved to `mode-change.saved/N` first.
//!
//! `.pkg/G` itself is never shown to a sandbox (only pieces of it, at neutral paths), so the log
//! is host-only state like the guest's configuration.

use std::cell::{Cell, RefCell};
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use super::{Mode, StepResult, text_err};
use crate::host_fs;
use crate::layout::PkgLayout;

/// The log's name in `.pkg/G`.
const LOG_FILE: &str = "mode-change";
/// Where the previous contents of overwritten guest files are kept, in `.pkg/G`.
const SAVED_DIR: &str = "mode-change.saved";
/// The first word of the log's first line.
const MAGIC: &str = "vserver-mode-change-1";

/// One logged change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Logged {
    /// A guest directory that did not exist is about to be created.
    CreatedDir(PathBuf),
    /// A guest file is about to be written; its previous content and mode were saved as
    /// `mode-change.saved/N` (`None`: there was nothing).
    Wrote {
        path: PathBuf,
        saved: Option<(usize, u32)>,
    },
    /// A guest entry is about to be renamed to `aside`.
    MovedAside { path: PathBuf, aside: PathBuf },
    /// The swap of `.pkg/G`'s database directory with the rebuilt one begins.
    StateSwap,
}

/// What the log's first line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    /// The mode the change moves to.
    pub(crate) to: Mode,
    /// `rpm` or `deb`.
    pub(crate) family: String,
}

/// The log of a running mode change.
#[derive(Debug)]
pub(crate) struct ChangeLog {
    layout: PkgLayout,
    file: RefCell<std::fs::File>,
    next_saved: Cell<usize>,
}

impl ChangeLog {
    /// Starts the log of a change of `layout`'s guest to mode `to`. The caller holds the guest's
    /// package lock. Fails if a log is there already: an interrupted change must be recovered
    /// first.
    pub(crate) fn begin(layout: &PkgLayout, to: Mode, family: &str) -> std::io::Result<Self> {
        let path = layout.dir().join(LOG_FILE);
        let saved = layout.dir().join(SAVED_DIR);
        if host_fs::exists_no_follow(&saved) {
            host_fs::remove_dir_all(&saved)?;
        }
        let mut file = host_fs::create_new_append(&path)?;
        file.write_all(format!("{MAGIC} {to} {family} {}\n", std::process::id()).as_bytes())?;
        file.sync_all()?;
        host_fs::sync_dir(layout.dir())?;
        Ok(ChangeLog {
            layout: layout.clone(),
            file: RefCell::new(file),
            next_saved: Cell::new(0),
        })
    }

    /// Saves the previous content of a file about to be overwritten; returns its number.
    pub(crate) fn save_previous(&self, content: &[u8]) -> std::io::Result<usize> {
        let dir = self.layout.dir().join(SAVED_DIR);
        host_fs::create_dir_all(&dir)?;
        let number = self.next_saved.get();
        self.next_saved.set(number + 1);
        host_fs::write(dir.join(number.to_string()), content)?;
        Ok(number)
    }

    /// Appends `entry`, before the change it names is made.
    pub(crate) fn append(&self, entry: &Logged) -> StepResult {
        let line = match entry {
            Logged::CreatedDir(path) => format!("dir {}\n", hex(path)),
            Logged::Wrote { path, saved: None } => format!("wrote {} - 0\n", hex(path)),
            Logged::Wrote {
                path,
                saved: Some((number, mode)),
            } => format!("wrote {} {number} {mode:o}\n", hex(path)),
            Logged::MovedAside { path, aside } => format!("aside {} {}\n", hex(path), hex(aside)),
            Logged::StateSwap => "swap\n".to_owned(),
        };
        self.file.borrow_mut().write_all(line.as_bytes())?;
        crate::checkpoint();
        Ok(())
    }

    /// Makes what was logged so far durable (at the end of each step).
    pub(crate) fn sync(&self) -> StepResult {
        self.file.borrow().sync_data()?;
        Ok(())
    }
}

/// Whether `layout`'s guest has a mode-change log.
pub(crate) fn exists(layout: &PkgLayout) -> bool {
    host_fs::exists_no_follow(layout.dir().join(LOG_FILE))
}

/// Removes the log of `layout`'s guest: the change is over, committed or undone.
pub(crate) fn remove(layout: &PkgLayout) -> StepResult {
    let saved = layout.dir().join(SAVED_DIR);
    if host_fs::exists_no_follow(&saved) {
        host_fs::remove_dir_all(&saved)?;
    }
    let path = layout.dir().join(LOG_FILE);
    if host_fs::exists_no_follow(&path) {
        host_fs::remove_file(&path)?;
        host_fs::sync_dir(layout.dir())?;
    }
    Ok(())
}

/// Reads the log of `layout`'s guest, if there is one: its header and its entries in order. A
/// log whose first line is not a header (killed while writing it) is `Ok(None)` with nothing to
/// undo; an unreadable last line is a line the kill cut short and is left out.
pub(crate) fn read(
    layout: &PkgLayout,
) -> Result<Option<(Header, Vec<Logged>)>, super::StepFailure> {
    let path = layout.dir().join(LOG_FILE);
    if !host_fs::exists_no_follow(&path) {
        return Ok(None);
    }
    let text = host_fs::read(&path)?;
    let text = String::from_utf8_lossy(&text);
    let mut lines = text.lines();
    let header = lines.next().and_then(|line| {
        let mut words = line.split(' ');
        if words.next() != Some(MAGIC) {
            return None;
        }
        let to = match words.next()? {
            "internal" => Mode::Internal,
            "external" => Mode::External,
            _ => return None,
        };
        Some(Header {
            to,
            family: words.next()?.to_owned(),
        })
    });
    let Some(header) = header else {
        return Ok(None);
    };
    let lines: Vec<&str> = lines.collect();
    let mut entries = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        match parse_entry(line) {
            Some(entry) => entries.push(entry),
            None if index + 1 == lines.len() => {}
            None => {
                return Err(text_err(format!(
                    "`{}` line {}: not a log entry",
                    path.display(),
                    index + 2
                )));
            }
        }
    }
    Ok(Some((header, entries)))
}

/// The previous content saved as number `number`.
pub(crate) fn saved_content(layout: &PkgLayout, number: usize) -> std::io::Result<Vec<u8>> {
    host_fs::read(layout.dir().join(SAVED_DIR).join(number.to_string()))
}

fn parse_entry(line: &str) -> Option<Logged> {
    let words: Vec<&str> = line.split(' ').collect();
    match words.as_slice() {
        ["dir", path] => Some(Logged::CreatedDir(unhex(path)?)),
        ["wrote", path, "-", _] => Some(Logged::Wrote {
            path: unhex(path)?,
            saved: None,
        }),
        ["wrote", path, number, mode] => Some(Logged::Wrote {
            path: unhex(path)?,
            saved: Some((number.parse().ok()?, u32::from_str_radix(mode, 8).ok()?)),
        }),
        ["aside", path, aside] => Some(Logged::MovedAside {
            path: unhex(path)?,
            aside: unhex(aside)?,
        }),
        ["swap"] => Some(Logged::StateSwap),
        _ => None,
    }
}

fn hex(path: &Path) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(path.as_os_str().len() * 2);
    for byte in path.as_os_str().as_bytes() {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

fn unhex(text: &str) -> Option<PathBuf> {
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(PathBuf::from(OsString::from_vec(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_as_written_and_a_cut_last_line_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let layout = PkgLayout::new(dir.path(), "g");
        host_fs::create_dir_all(layout.dir()).unwrap();
        let log = ChangeLog::begin(&layout, Mode::Internal, "rpm").unwrap();
        let odd = PathBuf::from("/var/lib/a b\n\u{e9}");
        let saved = log.save_previous(b"old").unwrap();
        let entries = [
            Logged::CreatedDir(odd.clone()),
            Logged::Wrote {
                path: odd.join("f"),
                saved: Some((saved, 0o640)),
            },
            Logged::Wrote {
                path: PathBuf::from("/x"),
                saved: None,
            },
            Logged::MovedAside {
                path: PathBuf::from("/.rpmdb"),
                aside: PathBuf::from("/..rpmdb.vserver-aside"),
            },
            Logged::StateSwap,
        ];
        for entry in &entries {
            log.append(entry).unwrap();
        }
        log.sync().unwrap();
        log.file.borrow_mut().write_all(b"aside 2f").unwrap();
        let (header, read_back) = read(&layout).unwrap().unwrap();
        assert_eq!(header.to, Mode::Internal);
        assert_eq!(header.family, "rpm");
        assert_eq!(read_back, entries);
        assert_eq!(saved_content(&layout, saved).unwrap(), b"old");
        assert!(ChangeLog::begin(&layout, Mode::Internal, "rpm").is_err());
        remove(&layout).unwrap();
        assert!(read(&layout).unwrap().is_none());
    }
}
