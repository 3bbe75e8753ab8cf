//! `vserver GUEST COMMAND …`: the guest command: `build`, and the lifecycle (`start`, `stop`,
//! `restart`, `status`, `exec`, `enter`, `delete`); `vserver --list [--json]` lists all guests.
//!
//! `vserver [ROOTS] G build [-m METHOD] [--hostname H] [--force] [--keep] [-v] -- [-d DIST]
//! [--releasever N] [FILE…|--empty] [-- PKG…]`: the first `--` ends vserver's own options, as in
//! util-vserver; what follows are the method's options, and after a second `--` the extra
//! packages.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vserver_guest::{BuildEvent, BuildMethod, BuildRequest};

use crate::exit;
use crate::output::{Output, Verbosity};
use crate::vdistro::{RootArgs, report};

/// Manage a guest.
#[derive(Debug, Parser)]
#[command(
    name = "vserver",
    version,
    about,
    override_usage = "vserver [ROOTS] GUEST build [OPTIONS] -- [-d DIST] [--releasever N] [FILE…|--empty] [-- PKG…]"
)]
struct Cli {
    #[command(flatten)]
    roots: RootArgs,
    /// The guest.
    guest: String,
    /// The command (`build`).
    command: String,
    /// The command's arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<OsString>,
}

/// `build`'s own options (before the first `--`).
#[derive(Debug, Parser)]
#[command(name = "vserver GUEST build", no_binary_name = true)]
struct BuildArgs {
    /// Build method: skeleton, yum, dnf, rpm, apt, debootstrap or clone.
    #[arg(short = 'm', long, default_value = "skeleton")]
    method: String,
    /// The guest's host name (default: its name).
    #[arg(long)]
    hostname: Option<String>,
    /// Move an existing guest aside first (restored if the build fails).
    #[arg(long)]
    force: bool,
    /// Keep what a failed build made.
    #[arg(long)]
    keep: bool,
    /// Show the package manager's output.
    #[arg(short, long)]
    verbose: bool,
    /// Only errors.
    #[arg(short, long)]
    quiet: bool,
}

/// The method's options (between the first and the second `--`).
#[derive(Debug, Parser)]
#[command(name = "vserver GUEST build … --", no_binary_name = true)]
struct MethodArgs {
    /// The distribution.
    #[arg(short = 'd', long = "distribution")]
    distribution: Option<String>,
    /// Override the distribution's release version.
    #[arg(long)]
    releasever: Option<String>,
    /// `-m apt|debootstrap`: essential, minbase (default) or buildd.
    #[arg(long)]
    variant: Option<String>,
    /// `-m apt|debootstrap`: build from this mirror of the release suite instead of the
    /// distribution's sources (like debootstrap's MIRROR).
    #[arg(long, value_name = "URL")]
    mirror: Option<String>,
    /// `-m apt|debootstrap`: the mirror is unsigned and trusted explicitly.
    #[arg(long, requires = "mirror")]
    trusted: bool,
    /// `-m clone`: the guest to copy.
    #[arg(long, value_name = "GUEST")]
    source: Option<String>,
    /// `-m rpm`: install no package files (database only).
    #[arg(long)]
    empty: bool,
    /// `-m rpm`: package files or manifests (one package file per line).
    files: Vec<PathBuf>,
}

/// Runs `vserver` with `args` (argv, including the program name).
pub fn main(args: Vec<OsString>) -> ExitCode {
    if args.iter().skip(1).any(|a| a == "--list") {
        return list(args);
    }
    if crate::many::wants(&args) {
        return crate::many::main(args);
    }
    if args.iter().skip(1).any(|a| a == "--all") {
        return crate::verify_cmd::all(args);
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => return exit::command_line(&err),
    };
    if let Err(code) = crate::output::recover_first("vserver", &cli.roots.roots(), Some(&cli.guest))
    {
        return code;
    }
    match cli.command.as_str() {
        "build" => build(&cli),
        "start" | "stop" | "restart" | "status" | "exec" | "enter" | "delete" => lifecycle(&cli),
        // Also reached as `vserver G -- pkgmgmt …` (util-vserver's form): clap takes `--` as the
        // end of options.
        "enable" | "disable" => mark(&cli),
        "pkgmgmt" => crate::vpkg::pkgmgmt(&cli.roots.roots(), &cli.guest, &cli.rest),
        "verify" => crate::verify_cmd::one(&cli.roots.roots(), &cli.guest, &cli.rest),
        other => {
            eprintln!(
                "vserver: error: unknown command `{other}` for guest `{}`",
                cli.guest
            );
            eprintln!(
                "vserver: hint: available: build, start, stop, restart, status, exec, enter, delete, enable, disable, pkgmgmt, verify"
            );
            ExitCode::from(exit::USAGE)
        }
    }
}

/// `vserver G enable|disable`: marks the guest for start at boot (`vserver --marked start`,
/// the `vservers.target` unit), or clears the mark.
fn mark(cli: &Cli) -> ExitCode {
    let out = Output::new("vserver", Verbosity::Normal);
    if let Some(extra) = cli.rest.first() {
        eprintln!(
            "vserver: error: `{}` takes no arguments, got `{}`",
            cli.command,
            extra.to_string_lossy()
        );
        return ExitCode::from(exit::USAGE);
    }
    let on = cli.command == "enable";
    match vserver_guest::set_start_at_boot(&cli.roots.roots(), &cli.guest, on) {
        Ok(changed) => {
            let what = if on {
                "marked for start at boot"
            } else {
                "not started at boot"
            };
            let already = if changed { "" } else { " (unchanged)" };
            out.status(&format!("guest `{}`: {what}{already}", cli.guest));
            ExitCode::SUCCESS
        }
        Err(error) => report_lifecycle(&out, error),
    }
}

fn split_at_dashes(args: &[OsString]) -> (&[OsString], &[OsString]) {
    match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[]),
    }
}

fn build(cli: &Cli) -> ExitCode {
    let (own, rest) = split_at_dashes(&cli.rest);
    let (method_args, packages) = split_at_dashes(rest);
    let parsed = BuildArgs::try_parse_from(own)
        .and_then(|b| MethodArgs::try_parse_from(method_args).map(|m| (b, m)));
    let (build_args, method) = match parsed {
        Ok(parsed) => parsed,
        Err(err) => return exit::command_line(&err),
    };
    let out = Output::new(
        "vserver",
        if build_args.quiet {
            Verbosity::Quiet
        } else {
            Verbosity::Normal
        },
    );
    let build_method: BuildMethod = match build_args.method.parse() {
        Ok(BuildMethod::Apt(default)) => match method.variant.as_deref().map(str::parse) {
            None => BuildMethod::Apt(default),
            Some(Ok(variant)) => BuildMethod::Apt(variant),
            Some(Err(message)) => {
                eprintln!("vserver: error: {message}");
                return ExitCode::from(exit::USAGE);
            }
        },
        Ok(m) => m,
        Err(message) => {
            eprintln!("vserver: error: {message}");
            return ExitCode::from(exit::USAGE);
        }
    };
    if build_method == BuildMethod::Rpm && method.files.is_empty() && !method.empty {
        eprintln!("vserver: error: `-m rpm` needs package files or manifests, or --empty");
        return ExitCode::from(exit::USAGE);
    }
    let request = BuildRequest {
        guest: cli.guest.clone(),
        method: build_method,
        distribution: method.distribution.clone(),
        releasever: method.releasever.clone(),
        hostname: build_args.hostname.clone(),
        force: build_args.force,
        keep: build_args.keep,
        packages: packages
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
        rpm_files: method.files.clone(),
        verbose: build_args.verbose,
        apt_mirror: method.mirror.clone().map(|url| vserver_guest::AptMirror {
            url,
            trusted: method.trusted,
        }),
        source: method.source.clone(),
    };
    let roots = cli.roots.roots();
    let started = std::time::Instant::now();
    let result = vserver_guest::build(&roots, &request, &mut |event| match event {
        BuildEvent::Phase(phase) => out.status(&format!("{}: {phase}", cli.guest)),
        BuildEvent::Warning(warning) => out.warn(&format!("{}: {warning}", cli.guest)),
        BuildEvent::Recovered(line) => eprintln!("vserver: guest `{}`: {line}", cli.guest),
    });
    match result {
        Ok(config) => {
            out.status(&format!(
                "built guest `{}` in {} ({:.1} s)",
                config.name,
                config.root.display(),
                started.elapsed().as_secs_f64()
            ));
            ExitCode::SUCCESS
        }
        Err(error) => report(&out, "vserver", error),
    }
}

/// Exit code of `exec` when vserver itself failed (the command's own code is passed through
/// otherwise; 125 as container runtimes use it).
const EXEC_FAILED: u8 = 125;

/// `vserver --list`'s options.
#[derive(Debug, Parser)]
#[command(name = "vserver --list")]
struct ListArgs {
    #[command(flatten)]
    roots: RootArgs,
    /// List all guests.
    #[arg(long)]
    list: bool,
    /// Print one JSON document (an array of guest states) on stdout.
    #[arg(long)]
    json: bool,
}

/// The lifecycle verbs' options (everything after the verb; for `exec`, the command follows).
#[derive(Debug, Parser)]
#[command(
    name = "vserver GUEST start|stop|restart|status|exec|enter|delete",
    no_binary_name = true
)]
struct LifecycleArgs {
    /// `start`: the init command instead of the configured `init` (one shell-free word
    /// list, e.g. `--init '/bin/busybox sleep 1000'` is split on spaces).
    #[arg(long)]
    init: Option<String>,
    /// `start`: memory limit in bytes (suffixes k, m, g), instead of `[limits] memory`.
    #[arg(long)]
    memory: Option<String>,
    /// `start`: most processes at once, instead of `[limits] pids`.
    #[arg(long)]
    pids: Option<u64>,
    /// `start`: CPUs (`0.5` is half a CPU), instead of `[limits] cpu`.
    #[arg(long)]
    cpu: Option<String>,
    /// `stop`: seconds init may take before everything is killed, instead of `stop_timeout`
    /// (default 10).
    #[arg(long)]
    timeout: Option<u64>,
    /// `stop`: the signal asking init to stop, instead of `stop_signal` (default TERM).
    #[arg(long)]
    signal: Option<String>,
    /// `exec`/`enter`: run in fresh namespaces in a stopped guest.
    #[arg(long)]
    transient: bool,
    /// `delete`: do not ask.
    #[arg(long)]
    yes: bool,
    /// `status`: print JSON on stdout.
    #[arg(long)]
    json: bool,
    /// `exec`: the command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<OsString>,
}

fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, factor) = match text.char_indices().last()? {
        (i, 'k' | 'K') => (&text[..i], 1u64 << 10),
        (i, 'm' | 'M') => (&text[..i], 1 << 20),
        (i, 'g' | 'G') => (&text[..i], 1 << 30),
        _ => (text, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(factor)
}

fn report_lifecycle(out: &Output, error: vserver_guest::LifecycleError) -> ExitCode {
    let hint = match &error {
        vserver_guest::LifecycleError::Guest(inner) => inner.hint(),
        other => other.hint(),
    };
    out.error(&anyhow::Error::new(error));
    if let Some(hint) = hint {
        eprintln!("vserver: hint: {hint}");
    }
    ExitCode::from(exit::FAILURE)
}

fn status_json(status: &vserver_guest::GuestStatus) -> serde_json::Value {
    serde_json::to_value(status).unwrap_or(serde_json::Value::Null)
}

pub(crate) fn status_line(status: &vserver_guest::GuestStatus) -> String {
    match &status.running {
        Some(running) => format!(
            "{}\trunning\tpid {}\tup {} s\t{} processes{}",
            status.guest,
            running.pid,
            running.uptime,
            running.processes,
            running
                .memory
                .map(|m| format!("\t{} KiB", m / 1024))
                .unwrap_or_default()
        ),
        None => format!(
            "{}\t{}{}",
            status.guest,
            status.state,
            status
                .operation
                .as_ref()
                .map(|o| format!("\t{o}"))
                .unwrap_or_default()
        ),
    }
}

fn list(args: Vec<OsString>) -> ExitCode {
    let parsed = match ListArgs::try_parse_from(args) {
        Ok(parsed) => parsed,
        Err(err) => return exit::command_line(&err),
    };
    let verbosity = if parsed.json {
        Verbosity::Json
    } else {
        Verbosity::Normal
    };
    let out = Output::new("vserver", verbosity);
    let run_dir = vserver_guest::default_run_dir();
    if let Err(code) = crate::output::recover_first("vserver", &parsed.roots.roots(), None) {
        return code;
    }
    match vserver_guest::list(&parsed.roots.roots(), &run_dir) {
        Ok(guests) => {
            if parsed.json {
                out.json(&serde_json::Value::Array(
                    guests.iter().map(status_json).collect(),
                ));
            } else {
                for guest in &guests {
                    let extra = format!(
                        "\t{}\t{:?}",
                        if guest.distribution.is_empty() {
                            "-"
                        } else {
                            &guest.distribution
                        },
                        guest.package_management
                    )
                    .to_lowercase();
                    println!("{}{extra}", status_line(guest));
                }
            }
            ExitCode::SUCCESS
        }
        Err(error) => report_lifecycle(&out, error),
    }
}

fn lifecycle(cli: &Cli) -> ExitCode {
    let args = match LifecycleArgs::try_parse_from(&cli.rest) {
        Ok(args) => args,
        Err(err) => return exit::command_line(&err),
    };
    let out = Output::new(
        "vserver",
        if args.json {
            Verbosity::Json
        } else {
            Verbosity::Normal
        },
    );
    let roots = cli.roots.roots();
    let run_dir = vserver_guest::default_run_dir();
    let guest = cli.guest.as_str();
    let signal = match args.signal.as_deref().map(vserver_guest::parse_signal) {
        Some(None) => {
            eprintln!(
                "vserver: error: --signal takes a name such as TERM, PWR, RTMIN+3, or a number"
            );
            return ExitCode::from(exit::USAGE);
        }
        Some(signal) => signal,
        None => None,
    };
    let stop_options = vserver_guest::StopOptions {
        signal,
        timeout: args.timeout.map(std::time::Duration::from_secs),
    };
    let start = |out: &Output| -> ExitCode {
        let memory = match args.memory.as_deref().map(parse_size) {
            Some(None) => {
                eprintln!("vserver: error: --memory takes bytes with an optional k, m or g");
                return ExitCode::from(exit::USAGE);
            }
            Some(Some(bytes)) => Some(bytes),
            None => None,
        };
        let cpu_millis = match args.cpu.as_deref().map(vserver_guest::parse_cpus) {
            Some(None) => {
                eprintln!("vserver: error: --cpu takes a positive number of CPUs such as 0.5");
                return ExitCode::from(exit::USAGE);
            }
            Some(millis) => millis,
            None => None,
        };
        let options = vserver_guest::StartOptions {
            init: args
                .init
                .as_deref()
                .map(|i| i.split_whitespace().map(OsString::from).collect())
                .unwrap_or_default(),
            limits: vserver_guest::GuestLimits {
                memory,
                pids: args.pids,
                cpu_millis,
            },
        };
        match vserver_guest::start(&roots, &run_dir, guest, &options) {
            Ok(started) => {
                for note in &started.notes {
                    out.warn(&format!("{guest}: {note}"));
                }
                out.status(&format!(
                    "started guest `{guest}` (init pid {})",
                    started.record.pid
                ));
                ExitCode::SUCCESS
            }
            Err(error) => report_lifecycle(out, error),
        }
    };
    let stop = |out: &Output| -> Result<(), ExitCode> {
        match vserver_guest::stop(&roots, &run_dir, guest, stop_options) {
            Ok(true) => {
                out.status(&format!("stopped guest `{guest}`"));
                Ok(())
            }
            Ok(false) => {
                out.status(&format!("guest `{guest}` was not running"));
                Ok(())
            }
            Err(error) => Err(report_lifecycle(out, error)),
        }
    };
    match cli.command.as_str() {
        "start" => start(&out),
        "stop" => stop(&out).err().unwrap_or(ExitCode::SUCCESS),
        "restart" => match stop(&out) {
            Ok(()) => start(&out),
            Err(code) => code,
        },
        "status" => match vserver_guest::status(&roots, &run_dir, guest) {
            Ok(status) => {
                if args.json {
                    out.json(&status_json(&status));
                } else {
                    println!("{}", status_line(&status));
                }
                // As `systemctl status`: 3 when not running, for scripts.
                if status.running.is_some() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(3)
                }
            }
            Err(error) => report_lifecycle(&out, error),
        },
        "enter" if !args.transient => {
            use std::os::fd::AsFd;
            let (stdin, stdout) = (std::io::stdin(), std::io::stdout());
            match vserver_guest::enter(
                &roots,
                &run_dir,
                guest,
                &args.command,
                stdin.as_fd(),
                stdout.as_fd(),
            ) {
                Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(EXEC_FAILED)),
                Err(error) => {
                    report_lifecycle(&out, error);
                    ExitCode::from(EXEC_FAILED)
                }
            }
        }
        "exec" | "enter" => {
            let command = if cli.command == "enter" {
                vec![OsString::from("/bin/sh"), OsString::from("-l")]
            } else if args.command.is_empty() {
                eprintln!("vserver: error: `exec` needs a command");
                return ExitCode::from(exit::USAGE);
            } else {
                args.command.clone()
            };
            match vserver_guest::exec(&roots, &run_dir, guest, &command, args.transient) {
                Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(EXEC_FAILED)),
                Err(error) => {
                    report_lifecycle(&out, error);
                    ExitCode::from(EXEC_FAILED)
                }
            }
        }
        "delete" => {
            if !args.yes {
                use std::io::{BufRead, IsTerminal, Write};
                if !std::io::stdin().is_terminal() {
                    eprintln!(
                        "vserver: error: refusing to delete guest `{guest}` without confirmation"
                    );
                    eprintln!("vserver: hint: pass --yes to delete without asking");
                    return ExitCode::from(exit::USAGE);
                }
                eprint!(
                    "vserver: delete guest `{guest}`: its root, configuration and package state? [y/N] "
                );
                let _ = std::io::stderr().flush();
                let mut answer = String::new();
                let _ = std::io::stdin().lock().read_line(&mut answer);
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    eprintln!("vserver: not deleted");
                    return ExitCode::from(exit::FAILURE);
                }
            }
            match vserver_guest::delete(&roots, &run_dir, guest) {
                Ok(()) => {
                    out.status(&format!("deleted guest `{guest}`"));
                    ExitCode::SUCCESS
                }
                Err(error) => report_lifecycle(&out, error),
            }
        }
        _ => ExitCode::from(exit::USAGE),
    }
}
