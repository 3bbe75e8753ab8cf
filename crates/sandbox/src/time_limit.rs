//! The time limit of a sandboxed run ([`crate::SandboxCommand::time_limit`]): what was running
//! when it expired, read from `/proc`, and how a duration is shown in messages.
//!
//! When the limit expires, the caller names what the program was busy with — for a package
//! manager, the scriptlet or maintainer script that hangs — then kills the sandbox process.
//! The processes are found by their parent links in the caller's `/proc`: the sandbox process
//! (`S`), its init (one level below), the program (two levels below) and everything the program
//! started. The deepest live process is what the program waits for; its parent, when that is
//! not the program itself, usually says more (`/bin/sh /var/tmp/rpm-tmp.XXXX 1` rather than the
//! `sleep 600` it runs), so both are named.
//!
//! Every byte read there was written by a sandboxed process (`prctl(PR_SET_NAME)`, an
//! overwritten `argv`), so it is hostile: each command line is cut to [`MAX_SHOWN`] characters,
//! control and direction-changing characters are escaped, and the message stays one line.
//! Reading another process's command line takes its memory-map lock, which a hostile process can
//! hold for as long as it likes; the reading therefore runs in a thread of its own, and the kill
//! does not wait for it longer than [`READ_TIMEOUT`].

use std::collections::HashMap;
use std::fs;
use std::sync::mpsc;
use std::time::Duration;

/// The most characters of one command line a message shows.
const MAX_SHOWN: usize = 100;
/// How long the kill waits for the description of what runs.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How far below the sandbox process the program is (S → init → program).
const PROGRAM_DEPTH: usize = 2;

/// One process of the caller's `/proc`, as far as the description needs it.
#[derive(Debug, Clone, Copy)]
struct Proc {
    pid: u32,
    parent: u32,
    start_time: u64,
}

/// The command lines of what runs below the program of the sandbox process `sandbox`: the
/// deepest live descendant, preceded by its parent unless that is the program; empty when the
/// program runs nothing (or nothing could be read within [`READ_TIMEOUT`]).
pub(crate) fn running_below(sandbox: u32) -> Vec<String> {
    let (sender, receiver) = mpsc::channel();
    let reader = std::thread::Builder::new()
        .name("vserver-time-limit".into())
        .spawn(move || {
            let _ = sender.send(describe(sandbox));
        });
    if reader.is_err() {
        return Vec::new();
    }
    // A reader stuck on a hostile process's memory map is left behind: it ends once the kill
    // that follows has taken that process away.
    receiver.recv_timeout(READ_TIMEOUT).unwrap_or_default()
}

fn describe(sandbox: u32) -> Vec<String> {
    let processes = live_processes();
    let mut children: HashMap<u32, Vec<Proc>> = HashMap::new();
    for process in &processes {
        children.entry(process.parent).or_default().push(*process);
    }
    // Breadth first from the sandbox process, remembering each one's parent.
    let mut found: HashMap<u32, u32> = HashMap::new();
    let mut deepest: Option<(usize, u64, u32)> = None;
    let mut queue = std::collections::VecDeque::from([(sandbox, 0usize)]);
    while let Some((pid, depth)) = queue.pop_front() {
        for child in children.get(&pid).into_iter().flatten() {
            if found.contains_key(&child.pid) || child.pid == sandbox {
                continue;
            }
            found.insert(child.pid, pid);
            queue.push_back((child.pid, depth + 1));
            let key = (depth + 1, child.start_time, child.pid);
            if depth + 1 > PROGRAM_DEPTH && deepest.is_none_or(|d| key > d) {
                deepest = Some(key);
            }
        }
    }
    let Some((depth, _, leaf)) = deepest else {
        return Vec::new();
    };
    let mut shown = Vec::new();
    if depth > PROGRAM_DEPTH + 1
        && let Some(&parent) = found.get(&leaf)
    {
        shown.push(command_line(parent));
    }
    shown.push(command_line(leaf));
    shown
}

/// Every live process (not a zombie) of the caller's `/proc`.
fn live_processes() -> Vec<Proc> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = fs::read(entry.path().join("stat")).ok()?;
            let (parent, start_time) = parse_stat(&stat)?;
            Some(Proc {
                pid,
                parent,
                start_time,
            })
        })
        .collect()
}

/// The parent pid and start time of a live process from its `/proc/PID/stat`; `None` for a
/// zombie or an unreadable line.
fn parse_stat(stat: &[u8]) -> Option<(u32, u64)> {
    // The command name may hold spaces and parentheses; the fields after the last `)` do not.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 (the state), `fields[1]` field 4 (the parent), `fields[19]`
    // field 22 (the start time).
    if matches!(fields.first(), Some(&"Z") | Some(&"X") | None) {
        return None;
    }
    Some((fields.get(1)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

/// The command line of `pid`, shown safely; its name in brackets when the command line is
/// empty (as `ps` does).
fn command_line(pid: u32) -> String {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline
        .strip_suffix(b"\0")
        .unwrap_or(&cmdline)
        .split(|&b| b == 0)
        .collect();
    if cmdline.is_empty() {
        let stat = fs::read(format!("/proc/{pid}/stat")).unwrap_or_default();
        let name = stat
            .iter()
            .position(|&b| b == b'(')
            .zip(stat.iter().rposition(|&b| b == b')'))
            .and_then(|(open, close)| stat.get(open + 1..close))
            .unwrap_or_default();
        return shown(&format!("[{}]", String::from_utf8_lossy(name)));
    }
    let words: Vec<String> = args
        .iter()
        .map(|arg| crate::process::quote_text(&String::from_utf8_lossy(arg)))
        .collect();
    shown(&words.join(" "))
}

/// `text` as a message may show it: control and direction-changing characters escaped, at most
/// [`MAX_SHOWN`] characters (then `…`).
pub(crate) fn shown(text: &str) -> String {
    let mut out = String::new();
    for (count, c) in text.chars().enumerate() {
        if count == MAX_SHOWN {
            out.push('…');
            break;
        }
        let bidi = matches!(
            c,
            '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}'
        );
        if c.is_control() || bidi {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A duration as a limit is written: `2h`, `30m`, `90s`, `1.5s`.
pub(crate) fn short_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    if duration.subsec_nanos() != 0 {
        format!("{}s", duration.as_secs_f64())
    } else if secs != 0 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs != 0 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_hostile_names() {
        let line = b"4242 (a) b) (c) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                     987654 1000 100 18446744073709551615";
        assert_eq!(parse_stat(line), Some((17, 987654)));
        let zombie = b"4243 (sh) Z 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_stat(zombie), None);
        assert_eq!(parse_stat(b"garbage"), None);
    }

    #[test]
    fn shown_text_is_one_short_line() {
        assert_eq!(shown("/bin/sh -c 'a\nb'"), "/bin/sh -c 'a\\nb'");
        assert_eq!(shown("x\u{1b}[2Jy"), "x\\u{1b}[2Jy");
        assert_eq!(shown("abc\u{202e}fed"), "abc\\u{202e}fed");
        let long = "x".repeat(500);
        let cut = shown(&long);
        assert_eq!(cut.chars().count(), MAX_SHOWN + 1);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn durations_as_written() {
        assert_eq!(short_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(short_duration(Duration::from_secs(1800)), "30m");
        assert_eq!(short_duration(Duration::from_secs(90)), "90s");
        assert_eq!(short_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(short_duration(Duration::ZERO), "0s");
    }
}
