//! `vserver --all|--marked start|stop|status`: one command on many guests (every configured
//! guest, or those `vserver G enable` marked for start at boot), one result line per guest,
//! and an exit status that says whether any failed.
//!
//! Starting and stopping fork the guest's processes, which needs a single-threaded process: so
//! each guest gets a `vserver G start|stop` child process of its own, up to `--jobs` at once (a
//! guest's start and stop touch only its own cgroup, record and namespaces, so guests never
//! wait on each other). `status` only reads, in this process.

use std::ffi::OsString;
use std::process::{Command, ExitCode, Stdio};

use clap::Parser;

use crate::exit;
use crate::output::{Output, Verbosity};
use crate::vdistro::RootArgs;

/// `vserver --all|--marked COMMAND`'s command line.
#[derive(Debug, Parser)]
#[command(
    name = "vserver --all|--marked",
    after_help = "Examples:\n  vserver --marked start\n  vserver --all stop\n  vserver --all status\n\nExit status: 0 when every guest succeeded (status: every guest runs), 1 when one failed (status: 3 when one is not running)."
)]
struct ManyArgs {
    #[command(flatten)]
    roots: RootArgs,
    /// Every configured guest.
    #[arg(long, conflicts_with = "marked")]
    all: bool,
    /// The guests marked for start at boot (`vserver G enable`).
    #[arg(long)]
    marked: bool,
    /// How many guests to start or stop at once.
    #[arg(short, long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    jobs: u16,
    /// `start`, `stop` or `status`.
    command: String,
    /// Options passed on to each guest's command (such as `--timeout`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<OsString>,
}

/// `vserver --all|--marked …`'s definition (for `vserver --help`, the man pages and completions).
pub(crate) fn command() -> clap::Command {
    use clap::CommandFactory;
    ManyArgs::command()
}

/// Whether `args` asks for `start`, `stop` or `status` on many guests.
pub(crate) fn wants(args: &[OsString]) -> bool {
    let many = args.iter().skip(1).any(|a| a == "--all" || a == "--marked");
    many && args
        .iter()
        .skip(1)
        .any(|a| a == "start" || a == "stop" || a == "status")
}

/// Runs `vserver --all|--marked start|stop|status`.
pub(crate) fn main(args: Vec<OsString>) -> ExitCode {
    let parsed = match ManyArgs::try_parse_from(args) {
        Ok(parsed) => parsed,
        Err(err) => return exit::command_line(&err),
    };
    if !matches!(parsed.command.as_str(), "start" | "stop" | "status") {
        eprintln!(
            "vserver: error: `--all`/`--marked` act with start, stop or status, not `{}`",
            parsed.command
        );
        return ExitCode::from(exit::USAGE);
    }
    let out = Output::new("vserver", Verbosity::Normal);
    let roots = parsed.roots.roots();
    if let Err(code) = crate::output::recover_first("vserver", &roots, None) {
        return code;
    }
    let names = if parsed.marked {
        vserver_guest::marked_guests(&roots)
    } else {
        vserver_guest::list_guests(&roots).map_err(Into::into)
    };
    let names = match names {
        Ok(names) => names,
        Err(error) => {
            out.error(&anyhow::Error::new(error));
            return ExitCode::from(exit::FAILURE);
        }
    };
    if names.is_empty() {
        out.status(if parsed.marked {
            "no guest is marked for start at boot (`vserver GUEST enable` marks one)"
        } else {
            "no guests are configured"
        });
        return ExitCode::SUCCESS;
    }
    if parsed.command == "status" {
        return status(&roots, &names);
    }
    let failed = in_parallel(&parsed, &names);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "vserver: error: {} of {} guests failed to {}",
            failed,
            names.len(),
            parsed.command
        );
        ExitCode::from(exit::FAILURE)
    }
}

fn status(roots: &vserver_guest::HostRoots, names: &[String]) -> ExitCode {
    let run_dir = vserver_guest::default_run_dir();
    let (mut errors, mut stopped) = (0, 0);
    for name in names {
        match vserver_guest::status(roots, &run_dir, name) {
            Ok(status) => {
                if status.running.is_none() {
                    stopped += 1;
                }
                println!("{}", crate::vserver_cmd::status_line(&status));
            }
            Err(error) => {
                errors += 1;
                println!("{name}\terror\t{error}");
            }
        }
    }
    if errors > 0 {
        ExitCode::from(exit::FAILURE)
    } else if stopped > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs `vserver G COMMAND` for every guest, `--jobs` at once; prints one line per guest as
/// each ends; returns how many failed.
fn in_parallel(parsed: &ManyArgs, names: &[String]) -> usize {
    let program = std::env::current_exe().unwrap_or_else(|_| "vserver".into());
    let mut waiting = names.iter();
    let mut running: Vec<(&String, std::process::Child)> = Vec::new();
    let mut failed = 0;
    loop {
        while running.len() < usize::from(parsed.jobs)
            && let Some(name) = waiting.next()
        {
            let mut command = Command::new(&program);
            for (flag, value) in [
                ("--confdir", &parsed.roots.confdir),
                ("--rootdir", &parsed.roots.rootdir),
                ("--pkgdir", &parsed.roots.pkgdir),
            ] {
                if let Some(value) = value {
                    command.arg(flag).arg(value);
                }
            }
            command
                .arg(name)
                .arg(&parsed.command)
                .args(&parsed.rest)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            match command.spawn() {
                Ok(child) => running.push((name, child)),
                Err(error) => {
                    failed += 1;
                    println!("{name}\tfailed\tcannot run {}: {error}", program.display());
                }
            }
        }
        if running.is_empty() {
            return failed;
        }
        // The first to end (polled: children end in any order).
        let mut ended = None;
        for (index, (_, child)) in running.iter_mut().enumerate() {
            if let Ok(Some(_)) = child.try_wait() {
                ended = Some(index);
                break;
            }
        }
        let Some(index) = ended else {
            std::thread::sleep(std::time::Duration::from_millis(20));
            continue;
        };
        let (name, child) = running.swap_remove(index);
        let output = child.wait_with_output();
        let (ok, message) = match &output {
            Ok(output) => {
                let stderr = String::from_utf8_lossy(&output.stderr);
                let first = stderr
                    .lines()
                    .find(|l| l.contains("error:"))
                    .or_else(|| stderr.lines().next())
                    .unwrap_or_default()
                    .trim_start_matches("vserver: ")
                    .to_string();
                (output.status.success(), first)
            }
            Err(error) => (false, error.to_string()),
        };
        if ok {
            let done = if parsed.command == "start" {
                "started"
            } else {
                "stopped"
            };
            println!("{name}\t{done}");
        } else {
            failed += 1;
            println!("{name}\tfailed\t{message}");
            // The whole story (a failed start's log lines) on standard error.
            if let Ok(output) = &output {
                eprint!("{}", String::from_utf8_lossy(&output.stderr));
            }
        }
    }
}
