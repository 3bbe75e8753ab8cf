//! Operation logs: when a package tool fails, its command line, status and full output go to
//! a file in `.pkg/G/log/`, and the error names the file after the cause.
//!
//! Why: the error is one line a person reads, and the cause is what they need first
//! ("At least 15MB more space needed on the / filesystem."); the command line of a sandboxed dnf
//! is hundreds of characters of environment and `--setopt`s that buried it. The command line
//! and everything the tool printed still matter to whoever digs deeper, so they are kept — in a
//! file, not in the message.
//!
//! `.pkg/G/log` is trusted state: the host writes it, no sandbox is shown it (it is in no
//! operation's view, and `.pkg/G` itself is hidden in the sandbox), so it is made and written
//! through the layout's trusted-dir machinery ([`PkgLayout::ensure_dirs`], which replaces a
//! planted non-directory, and atomic writes that never follow a link). The logs are bounded:
//! the last [`KEEP`] per guest, each holding at most [`MAX_OUTPUT`] bytes of each stream (the
//! end of it, where the cause is).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{SystemTime, UNIX_EPOCH};

use vserver_sandbox::{FileKind, GuestRoot, SandboxCommand};

use crate::error::Error;
use crate::layout::PkgLayout;

/// `.pkg/G/log`: the operation logs (trusted).
pub(crate) const LOG_DIR: &str = "log";
/// How many logs a guest keeps (the oldest go first).
const KEEP: usize = 20;
/// How many bytes of each output stream a log keeps (the last ones).
const MAX_OUTPUT: usize = 256 * 1024;
/// How many lines of output the cause in an error shows.
const CAUSE_LINES: usize = 3;
/// How many characters the cause in an error shows at most (the last ones).
const MAX_CAUSE: usize = 200;

/// What a failed run of a package tool left: its command, status and captured output.
pub(crate) struct FailedRun<'a> {
    /// `dnf`, `rpm`, `apt-get`, `dpkg`.
    pub tool: &'a str,
    /// The command as it ran.
    pub command: &'a SandboxCommand,
    /// How it ended.
    pub status: ExitStatus,
    /// Its standard output (empty when not captured).
    pub stdout: &'a [u8],
    /// Its standard error (empty when not captured).
    pub stderr: &'a [u8],
}

/// The error for a failed run: the cause first, then the log it wrote (when it could: a full
/// disk may refuse that too, and the error must not hide the tool's failure behind its own).
/// Call it under the guest's operation lock, which serialises the log's writers.
pub(crate) fn tool_failure(layout: &PkgLayout, run: &FailedRun<'_>) -> Error {
    Error::ToolFailure {
        guest: layout.guest().to_owned(),
        tool: run.tool.to_owned(),
        status: run.status,
        cause: failure_cause(run.stderr, run.stdout),
        log: write_log(layout, run, SystemTime::now()).ok(),
    }
}

/// `exit N`, or `killed by signal N`.
pub(crate) fn status_text(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// ` (command and full output: LOG)`, or nothing without a log.
pub(crate) fn log_text(log: &Option<PathBuf>) -> String {
    log.as_ref()
        .map(|log| format!(" (command and full output: {})", log.display()))
        .unwrap_or_default()
}

/// The last [`CAUSE_LINES`] meaningful lines of the tool's error output (of its standard output
/// when it wrote no errors), on one line. When the output ends in a section under an underlined
/// heading (dnf's `Error Summary` over `-------------`), only that section counts: it sums up
/// what came before. Separator lines are left out, and the `Error: ` / `E: ` a line starts with
/// (the message already says the tool failed); a line ending in `:` is joined to the next with a
/// space, others with `; `. The output is the tools' and their scripts' (hostile): control
/// characters are escaped and the result is cut to its last [`MAX_CAUSE`] characters.
pub(crate) fn failure_cause(stderr: &[u8], stdout: &[u8]) -> String {
    let meaningful = |output: &[u8]| -> Vec<String> {
        let text = String::from_utf8_lossy(output);
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let separator = |line: &str| !line.is_empty() && line.chars().all(|c| "-=_*~#".contains(c));
        let heading = |i: usize| {
            !lines[i].is_empty()
                && !separator(lines[i])
                && lines.get(i + 1).is_some_and(|next| separator(next))
        };
        let start = (0..lines.len())
            .rev()
            .find(|&i| heading(i))
            .map_or(0, |i| i + 1);
        lines[start..]
            .iter()
            .filter(|line| !separator(line))
            .map(|line| {
                ["Error: ", "error: ", "E: "]
                    .iter()
                    .find_map(|prefix| line.strip_prefix(prefix))
                    .unwrap_or(line)
                    .trim()
                    .to_owned()
            })
            .filter(|line| !line.is_empty())
            .collect()
    };
    let mut lines = meaningful(stderr);
    if lines.is_empty() {
        lines = meaningful(stdout);
    }
    if lines.is_empty() {
        return "no error output".to_owned();
    }
    let start = lines.len().saturating_sub(CAUSE_LINES);
    let mut joined = String::new();
    for line in &lines[start..] {
        if !joined.is_empty() {
            joined.push_str(if joined.ends_with(':') { " " } else { "; " });
        }
        joined.push_str(line);
    }
    let shown: String = joined
        .chars()
        .flat_map(|c| {
            let bidi = matches!(
                c,
                '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
            );
            if c.is_control() || bidi {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    let count = shown.chars().count();
    if count <= MAX_CAUSE {
        return shown;
    }
    let tail: String = shown.chars().skip(count - MAX_CAUSE).collect();
    format!("…{tail}")
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of `time`.
fn timestamp(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let (year, month, day) = vserver_repository::date::civil_from_days(days);
    let of_day = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The last [`MAX_OUTPUT`] bytes of `output`, with a line saying how much was left out.
fn bounded(output: &[u8]) -> Vec<u8> {
    if output.len() <= MAX_OUTPUT {
        return output.to_vec();
    }
    let mut kept = format!(
        "[… the first {} bytes are left out …]\n",
        output.len() - MAX_OUTPUT
    )
    .into_bytes();
    kept.extend_from_slice(&output[output.len() - MAX_OUTPUT..]);
    kept
}

/// Writes the log of `run` to `.pkg/G/log/TIME-TOOL.log`, removes the oldest logs beyond
/// [`KEEP`], and returns the log's host path.
fn write_log(layout: &PkgLayout, run: &FailedRun<'_>, now: SystemTime) -> crate::Result<PathBuf> {
    let state = layout.ensure_dirs(&[LOG_DIR])?;
    // The host writes nothing but regular files here; anything else was planted.
    layout.remove_planted(&state, &[LOG_DIR])?;
    let time = timestamp(now);
    let tool: String = run
        .tool
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut name = format!("{time}-{tool}.log");
    let mut n = 1;
    while state
        .exists(Path::new(LOG_DIR).join(&name))
        .map_err(|source| layout.state_err(source))?
    {
        n += 1;
        name = format!("{time}-{tool}-{n}.log");
    }
    let mut text = format!(
        "# vserver operation log: guest `{}`, {time} UTC\ncommand: {}\nstatus: {}\n",
        layout.guest(),
        run.command,
        status_text(&run.status)
    )
    .into_bytes();
    for (what, output) in [
        ("standard error", run.stderr),
        ("standard output", run.stdout),
    ] {
        text.extend_from_slice(format!("\n--- {what} ---\n").as_bytes());
        if output.is_empty() {
            text.extend_from_slice(b"(nothing captured)\n");
        } else {
            text.extend_from_slice(&bounded(output));
            if !output.ends_with(b"\n") {
                text.push(b'\n');
            }
        }
    }
    let rel = Path::new(LOG_DIR).join(&name);
    layout.write_trusted(&state, &rel, &text)?;
    prune(layout, &state)?;
    Ok(layout.host(&rel.to_string_lossy()))
}

/// Removes the oldest logs (by name, which starts with the time) beyond [`KEEP`].
fn prune(layout: &PkgLayout, state: &GuestRoot) -> crate::Result<()> {
    let mut logs: Vec<String> = state
        .read_dir(LOG_DIR)
        .map_err(|source| layout.state_err(source))?
        .into_iter()
        .filter(|entry| entry.kind == FileKind::File)
        .filter_map(|entry| entry.name.into_string().ok())
        .filter(|name| name.ends_with(".log"))
        .collect();
    logs.sort();
    let excess = logs.len().saturating_sub(KEEP);
    for name in &logs[..excess] {
        state
            .remove_file(Path::new(LOG_DIR).join(name))
            .map_err(|source| layout.state_err(source))?;
    }
    Ok(())
}

/// Whether the package state directory `dir` (`.pkg/G`) holds nothing but operation logs: what
/// a failed build leaves ([`remove_all_but_logs`]), which is no guest (a new build of `G` goes
/// ahead and keeps adding to the logs).
pub fn holds_only_logs(dir: &Path) -> bool {
    let Ok(state) = GuestRoot::open(dir) else {
        return false;
    };
    state.read_dir(".").is_ok_and(|entries| {
        entries
            .iter()
            .all(|entry| entry.name == LOG_DIR && entry.kind == FileKind::Dir)
    })
}

/// Removes the package state directory `dir` (`.pkg/G`) of a failed build, except its operation
/// logs, which the build's error names: everything else below it, through the safe-path layer
/// (a sandbox wrote there), or the whole directory when it holds no logs.
pub fn remove_all_but_logs(dir: &Path) -> crate::Result<()> {
    let guest = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let entries = match GuestRoot::open(dir).and_then(|state| Ok((state.read_dir(".")?, state))) {
        Ok(found) => Some(found),
        Err(_) if !crate::host_fs::exists_no_follow(dir) => return Ok(()),
        // Not a directory we can list (a planted symlink in its place): no logs to keep.
        Err(_) => None,
    };
    let state_err = |source| Error::State {
        guest: guest.clone(),
        source: Box::new(source),
    };
    match entries {
        Some((entries, state))
            if entries
                .iter()
                .any(|e| e.name == LOG_DIR && e.kind == FileKind::Dir) =>
        {
            for entry in entries.iter().filter(|e| e.name != LOG_DIR) {
                state.remove_all(&entry.name).map_err(state_err)?;
            }
            Ok(())
        }
        // std's remove_dir_all follows no symlink (it opens each directory O_NOFOLLOW).
        _ => crate::host_fs::remove_dir_all(dir).map_err(|source| Error::Host {
            guest: guest.clone(),
            op: "remove",
            path: dir.to_owned(),
            source,
        }),
    }
}

/// Moves the operation logs of the package state directory `from` (`.pkg/G`, holding nothing
/// else: [`holds_only_logs`]) into `to` (a sibling, such as the previous guest's state that a
/// failed `build --force` puts back), and removes `from`; so that state can take its place
/// again and the logs stay where the error said. Nothing is done when `from` holds more than
/// logs. Everything is resolved beneath the common parent (`.pkg`), no link followed.
pub fn move_logs(from: &Path, to: &Path) -> crate::Result<()> {
    let (Some(parent), Some(from_name), Some(to_name)) =
        (from.parent(), from.file_name(), to.file_name())
    else {
        return Ok(());
    };
    if to.parent() != Some(parent) || !holds_only_logs(from) {
        return Ok(());
    }
    let guest = from_name.to_string_lossy().into_owned();
    let state_err = |source| Error::State {
        guest: guest.clone(),
        source: Box::new(source),
    };
    let pkgdir = GuestRoot::open(parent).map_err(state_err)?;
    let from_logs = Path::new(from_name).join(LOG_DIR);
    let to_logs = Path::new(to_name).join(LOG_DIR);
    pkgdir.mkdir_all(&to_logs, 0o755).map_err(state_err)?;
    for entry in pkgdir.read_dir(&from_logs).map_err(state_err)? {
        let Some(name) = entry.name.to_str().filter(|_| entry.kind == FileKind::File) else {
            continue;
        };
        let stem = name.strip_suffix(".log").unwrap_or(name);
        let mut target = name.to_owned();
        let mut n = 1;
        while pkgdir.exists(to_logs.join(&target)).map_err(state_err)? {
            n += 1;
            target = format!("{stem}-{n}.log");
        }
        pkgdir
            .rename(from_logs.join(name), to_logs.join(&target))
            .map_err(state_err)?;
    }
    pkgdir.remove_all(from_name).map_err(state_err)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::disallowed_methods)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_cause_is_the_end_of_the_error_output() {
        let dnf = b"Running transaction check\n\nError: Transaction test error:\n  installing \
                    package x needs 15MB more space on the / filesystem\n\nError Summary\n\
                    -------------\nDisk Requirements:\n   At least 15MB more space needed on \
                    the / filesystem.\n\n";
        assert_eq!(
            failure_cause(dnf, b""),
            "Disk Requirements: At least 15MB more space needed on the / filesystem."
        );
        let pre = b"error: %prein(bad-1.0-1.noarch) scriptlet failed, exit status 1\n\n\
                    Error in PREIN scriptlet in rpm package bad\nError: Transaction failed\n";
        assert_eq!(
            failure_cause(pre, b""),
            "%prein(bad-1.0-1.noarch) scriptlet failed, exit status 1; Error in PREIN \
             scriptlet in rpm package bad; Transaction failed"
        );
        assert_eq!(
            failure_cause(b"E: Unable to locate package nosuch\n", b""),
            "Unable to locate package nosuch"
        );
        assert_eq!(failure_cause(b"", b"only\nstdout\n"), "only; stdout");
        assert_eq!(failure_cause(b"\n \n", b""), "no error output");
        assert_eq!(failure_cause(b"a\x1b[2Jb\n", b""), "a\\u{1b}[2Jb");
        let long = "x".repeat(1000);
        let cut = failure_cause(long.as_bytes(), b"");
        assert_eq!(cut.chars().count(), MAX_CAUSE + 1);
        assert!(cut.starts_with('…'));
    }

    #[test]
    fn statuses_and_times() {
        assert_eq!(status_text(&ExitStatus::from_raw(1 << 8)), "exit 1");
        assert_eq!(status_text(&ExitStatus::from_raw(9)), "killed by signal 9");
        let time = UNIX_EPOCH + Duration::from_secs(1_796_406_902);
        assert_eq!(timestamp(time), "2026-12-04T17:55:02");
    }

    #[test]
    fn logs_are_written_named_and_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = PkgLayout::new(tmp.path(), "g");
        let command = SandboxCommand::new("dnf");
        let stderr = vec![b'e'; MAX_OUTPUT + 10];
        let run = FailedRun {
            tool: "dnf",
            command: &command,
            status: ExitStatus::from_raw(1 << 8),
            stdout: b"out\n",
            stderr: &stderr,
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_796_406_902);
        let first = write_log(&layout, &run, now).unwrap();
        assert_eq!(first, tmp.path().join("g/log/2026-12-04T17:55:02-dnf.log"));
        let text = std::fs::read_to_string(&first).unwrap();
        assert!(text.contains("\ncommand: dnf\nstatus: exit 1\n"), "{text}");
        assert!(text.contains("[… the first 10 bytes are left out …]"));
        assert!(text.len() < MAX_OUTPUT + 1000);
        let second = write_log(&layout, &run, now).unwrap();
        assert_eq!(
            second,
            tmp.path().join("g/log/2026-12-04T17:55:02-dnf-2.log")
        );
        for i in 0..KEEP + 5 {
            write_log(&layout, &run, now + Duration::from_secs(i as u64 + 1)).unwrap();
        }
        let left = std::fs::read_dir(tmp.path().join("g/log")).unwrap().count();
        assert_eq!(left, KEEP);
        assert!(!first.exists() && !second.exists());
    }

    #[test]
    fn a_failed_build_keeps_only_its_logs() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("g");
        std::fs::create_dir_all(dir.join("rpm/state")).unwrap();
        std::fs::create_dir_all(dir.join("log")).unwrap();
        std::fs::write(dir.join("log/a.log"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("yum")).unwrap();
        assert!(!holds_only_logs(&dir));
        remove_all_but_logs(&dir).unwrap();
        assert!(holds_only_logs(&dir));
        assert!(dir.join("log/a.log").is_file());
        assert!(Path::new("/etc/passwd").exists());
        std::fs::remove_dir_all(dir.join("log")).unwrap();
        std::fs::create_dir_all(dir.join("rpm")).unwrap();
        remove_all_but_logs(&dir).unwrap();
        assert!(!dir.exists());
        remove_all_but_logs(&dir).unwrap();
        assert!(!holds_only_logs(&dir));
    }

    #[test]
    fn a_failed_forced_build_gives_its_logs_to_the_guest_it_restores() {
        let tmp = tempfile::tempdir().unwrap();
        let new = tmp.path().join("g");
        let old = tmp.path().join("g.old-1");
        std::fs::create_dir_all(new.join("log")).unwrap();
        std::fs::write(new.join("log/t-dnf.log"), "new").unwrap();
        std::fs::create_dir_all(old.join("log")).unwrap();
        std::fs::create_dir_all(old.join("rpm/state")).unwrap();
        std::fs::write(old.join("log/t-dnf.log"), "old").unwrap();
        move_logs(&new, &old).unwrap();
        assert!(!new.exists());
        assert_eq!(
            std::fs::read_to_string(old.join("log/t-dnf.log")).unwrap(),
            "old"
        );
        assert_eq!(
            std::fs::read_to_string(old.join("log/t-dnf-2.log")).unwrap(),
            "new"
        );
        // State that holds more than logs is left alone.
        std::fs::create_dir_all(new.join("rpm")).unwrap();
        move_logs(&new, &old).unwrap();
        assert!(new.join("rpm").exists());
    }

    #[test]
    fn a_planted_log_directory_is_replaced_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        let layout = PkgLayout::new(tmp.path(), "g");
        layout.ensure_dirs(&[]).unwrap();
        std::os::unix::fs::symlink(&elsewhere, tmp.path().join("g/log")).unwrap();
        let command = SandboxCommand::new("rpm");
        let run = FailedRun {
            tool: "rpm",
            command: &command,
            status: ExitStatus::from_raw(1 << 8),
            stdout: b"",
            stderr: b"error\n",
        };
        let log = write_log(&layout, &run, SystemTime::now()).unwrap();
        assert!(log.starts_with(tmp.path().join("g/log")));
        assert!(
            std::fs::symlink_metadata(tmp.path().join("g/log"))
                .unwrap()
                .is_dir()
        );
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }
}
