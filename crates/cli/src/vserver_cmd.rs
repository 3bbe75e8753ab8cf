//! `vserver GUEST COMMAND …`: the guest command: `build`, and the lifecycle (`start`, `stop`,
//! `restart`, `status`, `exec`, `enter`, `delete`), `pkgmgmt`, `verify`; `vserver --list
//! [--json]` lists all guests, `vserver --all verify|unify` acts on all of them.
//!
//! `vserver [ROOTS] G build -m METHOD [--hostname H] [--force] [--keep] [-v] -- [-d DIST]
//! [--releasever N] [FILE…|--empty] [-- PKG…]`: the first `--` ends vserver's own options, as in
//! util-vserver; what follows are the method's options, and after a second `--` the extra
//! packages.
//!
//! Parsing is in two steps, so that a guest may have any valid name and util-vserver's
//! `vserver G -- pkgmgmt …` keeps working: [`Cli`] takes the roots, the guest and the command
//! word; [`GuestCli`] then parses the command word and its arguments, with one clap definition
//! per command ([`GuestCommand`]). The same definitions make `vserver --help`, the man pages and
//! the shell completions ([`command`]).
//!
//! To add a guest command: a variant of [`GuestCommand`] (its doc comment is the summary, an
//! `after_help` with `Examples:` is required by the CLI test), whether it needs root in
//! [`GuestCommand::needs_root`], and its arm in [`main`].

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};
use vserver_guest::{BuildEvent, BuildMethod, BuildRequest};

use crate::exit;
use crate::output::{Output, Verbosity};
use crate::vdistro::{RootArgs, report};

/// Manage a guest (step one of the parse: roots, guest, command word).
#[derive(Debug, Parser)]
// `--help` and `--version` after the guest are the command's (step two), not this step's.
#[command(
    name = "vserver",
    disable_help_flag = true,
    disable_version_flag = true
)]
struct Cli {
    #[command(flatten)]
    roots: RootArgs,
    /// The guest.
    guest: String,
    /// The command.
    #[arg(allow_hyphen_values = true)]
    command: String,
    /// The command's arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<OsString>,
}

/// Step two of the parse: the command word and its arguments.
#[derive(Debug, Parser)]
#[command(
    name = "vserver",
    about = "The commands of a guest",
    propagate_version = true,
    bin_name = "vserver GUEST",
    no_binary_name = true,
    version,
    disable_help_subcommand = true,
    subcommand_value_name = "COMMAND"
)]
struct GuestCli {
    #[command(subcommand)]
    command: GuestCommand,
}

/// What `vserver GUEST …` does.
#[derive(Debug, Subcommand)]
pub(crate) enum GuestCommand {
    /// Build the guest: from a distribution (-m yum, dnf, apt, debootstrap), from package files
    /// (-m rpm), as a copy of another guest (-m clone), from a template archive (-m template), or
    /// an empty skeleton (-m skeleton).
    #[command(
        override_usage = "vserver GUEST build -m METHOD [OPTIONS] -- [-d DIST] [--releasever N] [METHOD OPTIONS] [FILE…|--empty] [-- PKG…]",
        after_help = "Options after the first `--` are the method's (see METHOD OPTIONS in \
`man vserver-build`): -d/--distribution, --releasever, --variant, --mirror, --trusted, --source, \
--empty and package files; after a second `--` come extra packages.\n\n\
Examples:\n  vserver web1 build -m yum -- -d fedora-41 -- openssh-server\n  \
vserver mail build -m apt -- -d debian-12 --variant minbase\n  \
vserver web2 build -m clone -- --source web1\n  \
vserver web3 build -m template -- --source web.tar.zst"
    )]
    Build(BuildArgs),
    /// Start the guest: its init in new namespaces and a cgroup.
    #[command(
        after_help = "Examples:\n  vserver web1 start\n  vserver web1 start --memory 512m --cpu 0.5"
    )]
    Start(StartArgs),
    /// Stop the guest: ask its init to stop, kill what is left after the timeout.
    #[command(
        after_help = "Examples:\n  vserver web1 stop\n  vserver web1 stop --timeout 30 --signal PWR"
    )]
    Stop(StopArgs),
    /// Stop the guest if it runs, then start it.
    #[command(after_help = "Example:\n  vserver web1 restart --timeout 5")]
    Restart(RestartArgs),
    /// Say whether the guest runs (exit status 0) or not (3), with its init, uptime, processes
    /// and memory.
    #[command(after_help = "Examples:\n  vserver web1 status\n  vserver web1 status --json")]
    Status(StatusArgs),
    /// Run a command in the running guest (or, with --transient, in a stopped one).
    #[command(
        after_help = "Examples:\n  vserver web1 exec /bin/ps ax\n  vserver web1 exec --transient -- /bin/sh -c 'cat /etc/os-release'"
    )]
    Exec(ExecArgs),
    /// Open a login shell (or run a command) in the guest, with a terminal.
    #[command(after_help = "Examples:\n  vserver web1 enter\n  vserver web1 enter --transient")]
    Enter(EnterArgs),
    /// Delete the guest: its root, its configuration and its package state.
    #[command(after_help = "Examples:\n  vserver web1 delete\n  vserver web1 delete --yes")]
    Delete(DeleteArgs),
    /// Move the guest's package management into it (internalize) or back to the host
    /// (externalize, verified on the way). Also accepted: `vserver GUEST -- pkgmgmt …`.
    #[command(
        after_help = "Examples:\n  vserver web1 pkgmgmt internalize\n  vserver web1 pkgmgmt externalize --json"
    )]
    Pkgmgmt(crate::vpkg::PkgmgmtArgs),
    /// Check every packaged file of the guest against the trusted database.
    #[command(
        after_help = "Examples:\n  vserver web1 verify\n  vserver --all verify --json\n  vserver --all verify --format prometheus > /var/lib/prometheus/node-exporter/vserver.prom\n\nExit status: 0 when at most configuration files changed, 5 when anything else changed or a setuid/setgid file no package owns appeared, 1 on errors."
    )]
    Verify(crate::verify_cmd::VerifyArgs),
    /// Write the guest and its package database to a template archive, which `build -m
    /// template` builds guests from.
    #[command(
        after_help = "Examples:\n  vserver web1 export /srv/templates/web.tar.zst\n  vserver web2 build -m template -- --source /srv/templates/web.tar.zst\n\nThe archive is mode 0600: it holds the guest's secrets (/etc/shadow, keys)."
    )]
    Export(crate::export_cmd::ExportArgs),
    /// Mark the guest for start at boot (`vserver --marked start`, the `vservers.service` unit).
    #[command(after_help = "Examples:\n  vserver web1 enable\n  vserver --marked start --jobs 8")]
    Enable,
    /// Clear the guest's start-at-boot mark.
    #[command(after_help = "Example:\n  vserver web1 disable")]
    Disable,
}

impl GuestCommand {
    /// Whether the command needs root (namespaces, mounts, cgroups, the guests' files).
    fn needs_root(&self) -> bool {
        // Every guest command does today; `status` reads the run directory root keeps.
        true
    }
}

/// The build methods `-m` takes.
const METHODS: [&str; 8] = [
    "skeleton",
    "yum",
    "dnf",
    "rpm",
    "apt",
    "debootstrap",
    "clone",
    "template",
];

/// `build`'s own options (before the first `--`).
#[derive(Debug, Args)]
pub(crate) struct BuildArgs {
    /// Build method: skeleton (an empty guest), yum or dnf (an rpm distribution), rpm (package
    /// files), apt or debootstrap (a Debian-family distribution), clone (a copy of a guest),
    /// template (an archive `vserver G export` wrote).
    #[arg(short = 'm', long, value_parser = METHODS)]
    method: Option<String>,
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
#[command(
    name = "vserver",
    bin_name = "vserver GUEST build -m METHOD --",
    no_binary_name = true
)]
struct MethodArgs {
    /// The distribution (`vdistro list` shows them).
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
    /// `-m clone`: the guest to copy; `-m template`: the archive `vserver G export` wrote.
    #[arg(long, value_name = "GUEST|FILE")]
    source: Option<String>,
    /// `-m rpm`: install no package files (database only).
    #[arg(long)]
    empty: bool,
    /// `-m rpm`: package files or manifests (one package file per line).
    files: Vec<PathBuf>,
}

/// `start`'s options.
#[derive(Debug, Args)]
pub(crate) struct StartArgs {
    /// The init command instead of the configured `init` (one shell-free word list, e.g.
    /// `--init '/bin/busybox sleep 1000'` is split on spaces).
    #[arg(long)]
    init: Option<String>,
    /// Memory limit in bytes (suffixes k, m, g), instead of `[limits] memory`.
    #[arg(long)]
    memory: Option<String>,
    /// Most processes at once, instead of `[limits] pids`.
    #[arg(long)]
    pids: Option<u64>,
    /// CPUs (`0.5` is half a CPU), instead of `[limits] cpu`.
    #[arg(long)]
    cpu: Option<String>,
}

/// `stop`'s options.
#[derive(Debug, Args)]
pub(crate) struct StopArgs {
    /// Seconds init may take before everything is killed, instead of `stop_timeout` (default
    /// 10).
    #[arg(long)]
    timeout: Option<u64>,
    /// The signal asking init to stop, instead of `stop_signal` (default TERM).
    #[arg(long)]
    signal: Option<String>,
}

/// `restart`'s options: `stop`'s, then `start`'s.
#[derive(Debug, Args)]
pub(crate) struct RestartArgs {
    #[command(flatten)]
    stop: StopArgs,
    #[command(flatten)]
    start: StartArgs,
}

/// `status`'s options.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// `exec`'s options and command.
#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    /// Run in fresh namespaces in a stopped guest.
    #[arg(long)]
    transient: bool,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

/// `enter`'s options.
#[derive(Debug, Args)]
pub(crate) struct EnterArgs {
    /// Run in fresh namespaces in a stopped guest.
    #[arg(long)]
    transient: bool,
    /// A command instead of the login shell (on a running guest).
    #[arg(trailing_var_arg = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

/// `delete`'s options.
#[derive(Debug, Args)]
pub(crate) struct DeleteArgs {
    /// Do not ask.
    #[arg(long)]
    yes: bool,
}

/// The examples of `vserver --help`.
const EXAMPLES: &str = "Examples:
  vserver web1 build -m yum -- -d fedora-41
  vserver web1 start
  vserver web1 exec /bin/ps ax
  vserver --list
  vserver --all verify

Each command has its own help: `vserver GUEST COMMAND --help` (e.g. `vserver web1 build --help`).
The package applets: vrpm, vyum, vdnf, vapt-get, vdpkg, vapt-cache; and vrepo, vdistro (also as
`vserver APPLET …`).";

/// The whole `vserver` command as clap sees it, for `vserver --help`, the man pages and the
/// completions: the roots, `GUEST`, `--list`, `--all` and the guest commands.
pub(crate) fn command() -> clap::Command {
    let pick = |cmd: clap::Command, ids: &[&str]| -> Vec<clap::Arg> {
        cmd.get_arguments()
            .filter(|a| ids.contains(&a.get_id().as_str()))
            .cloned()
            .collect()
    };
    let mut root = RootArgs::augment_args(clap::Command::new("vserver"))
        .version(env!("CARGO_PKG_VERSION"))
        .about("Manage guests: build them from distributions, run them, manage their packages from the host")
        .override_usage(
            "vserver [ROOTS] GUEST COMMAND [OPTIONS]\n       vserver [ROOTS] --list [--json]\n       vserver [ROOTS] --all|--marked start|stop|status [--jobs N]\n       vserver [ROOTS] --all verify|unify [OPTIONS]\n       vserver APPLET …",
        )
        .after_help(EXAMPLES)
        .arg_required_else_help(true)
        .disable_help_subcommand(true)
        .subcommand_value_name("COMMAND");
    // The roots come before the guest (`vserver --confdir DIR GUEST start`), not after the
    // command as clap's `global` would document them.
    for id in ["confdir", "rootdir", "pkgdir"] {
        root = root.mut_arg(id, |arg| arg.global(false));
    }
    root = root.arg(
        clap::Arg::new("guest")
            .value_name("GUEST")
            .help("The guest (`vserver --list` lists them)"),
    );
    let mut list = pick(ListArgs::command(), &["list", "json", "porcelain"]);
    for arg in &mut list {
        if arg.get_id() == "json" {
            *arg = arg.clone().help("With --list: one JSON document on stdout");
        }
    }
    root = root.args(list);
    root = root.args(
        pick(crate::verify_cmd::all_command(), &["all"])
            .into_iter()
            .map(|a| a.help("Every guest: with `start`, `stop`, `status`, `verify` or `unify`")),
    );
    root = root.args(
        pick(crate::many::command(), &["marked", "jobs"])
            .into_iter()
            .map(|a| {
                if a.get_id() == "jobs" {
                    a.help("With --all|--marked start|stop: how many guests at once")
                } else {
                    a
                }
            }),
    );
    for sub in GuestCli::command().get_subcommands() {
        let mut sub = sub.clone().version(env!("CARGO_PKG_VERSION"));
        if sub.get_name() == "build" {
            sub = sub.args(MethodArgs::command().get_arguments().map(|a| {
                a.clone()
                    .help_heading("Method options (after the first --)")
            }));
        }
        root = root.subcommand(sub);
    }
    root.subcommand(crate::verify_cmd::unify_command())
}

/// Runs `vserver` with `args` (argv, including the program name).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let first = args.get(1).and_then(|a| a.to_str());
    if args.len() < 2 || matches!(first, Some("-h" | "--help" | "-V" | "--version")) {
        return match command().try_get_matches_from(&args) {
            Ok(_) => ExitCode::from(exit::USAGE),
            Err(err) => exit::command_line(&err),
        };
    }
    if let Some(code) = crate::generate::from_args(&args) {
        return code;
    }
    let asks_help = args
        .iter()
        .skip(1)
        .any(|a| a == "--help" || a == "-h" || a == "--version" || a == "-V");
    if crate::many::wants(&args) {
        if !asks_help && let Err(code) = crate::output::require_root("vserver --all|--marked") {
            return code;
        }
        return crate::many::main(args);
    }
    for (option, command) in [("--list", "vserver --list"), ("--all", "vserver --all")] {
        if args.iter().skip(1).any(|a| a == option) {
            if !asks_help && let Err(code) = crate::output::require_root(command) {
                return code;
            }
            return if option == "--list" {
                list(args)
            } else {
                crate::verify_cmd::all(args)
            };
        }
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => return exit::command_line(&err),
    };
    // `build`'s own options end at the first `--`; the method's follow (see [`build`]).
    let own = if cli.command == "build" {
        split_at_dashes(&cli.rest).0
    } else {
        &cli.rest[..]
    };
    let words = std::iter::once(OsString::from(&cli.command)).chain(own.iter().cloned());
    let parsed = match GuestCli::try_parse_from(words) {
        Ok(parsed) => parsed.command,
        Err(err) => return exit::command_line(&err),
    };
    if parsed.needs_root()
        && let Err(code) = crate::output::require_root(&format!("vserver GUEST {}", cli.command))
    {
        return code;
    }
    if let Err(code) = crate::output::recover_first("vserver", &cli.roots.roots(), Some(&cli.guest))
    {
        return code;
    }
    match &parsed {
        GuestCommand::Build(args) => build(&cli, args),
        // Also reached as `vserver G -- pkgmgmt …` (util-vserver's form): clap takes `--` as the
        // end of options.
        GuestCommand::Pkgmgmt(_) => crate::vpkg::pkgmgmt(&cli.roots.roots(), &cli.guest, &cli.rest),
        GuestCommand::Verify(_) => {
            crate::verify_cmd::one(&cli.roots.roots(), &cli.guest, &cli.rest)
        }
        GuestCommand::Export(args) => crate::export_cmd::run(&cli.roots.roots(), &cli.guest, args),
        GuestCommand::Enable => mark(&cli, true),
        GuestCommand::Disable => mark(&cli, false),
        lifecycle_command => lifecycle(&cli, lifecycle_command),
    }
}

/// `vserver G enable|disable`: marks the guest for start at boot (`vserver --marked start`,
/// the `vservers.service` unit), or clears the mark.
fn mark(cli: &Cli, on: bool) -> ExitCode {
    let out = Output::new("vserver", Verbosity::Normal);
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

fn build(cli: &Cli, build_args: &BuildArgs) -> ExitCode {
    let (_, rest) = split_at_dashes(&cli.rest);
    let (method_args, packages) = split_at_dashes(rest);
    let method = match MethodArgs::try_parse_from(method_args) {
        Ok(parsed) => parsed,
        Err(err) => return exit::command_line(&err),
    };
    let Some(method_name) = build_args.method.as_deref() else {
        eprintln!(
            "vserver: error: `build` needs a method: -m {} (an empty guest is `-m skeleton`); see `vserver GUEST build --help`",
            METHODS.join("|")
        );
        return ExitCode::from(exit::USAGE);
    };
    let out = Output::new(
        "vserver",
        if build_args.quiet {
            Verbosity::Quiet
        } else {
            Verbosity::Normal
        },
    );
    let build_method: BuildMethod = match method_name.parse() {
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
    // On a terminal: packages done of the total under the phase lines, as dnf and apt show.
    let bar = out.transaction_bar(build_args.verbose);
    let sink = bar.clone().map(|bar| {
        vserver_pkgmgmt::ProgressSink::new(move |p| {
            if p.total > 0 {
                bar.set_length(p.total);
            }
            bar.set_position(p.done);
            // Drawn from the first report of a phase on.
            if bar.is_hidden() {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            }
        })
    });
    let phase_bar = |phase: &str| {
        if let Some(bar) = &bar {
            bar.finish_and_clear();
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            bar.reset();
            bar.set_length(0);
            bar.set_message(phase.to_owned());
        }
    };
    let result = vserver_guest::build_with_progress(
        &roots,
        &request,
        &mut |event| match event {
            BuildEvent::Phase(phase) => {
                phase_bar(&phase);
                out.status(&format!("{}: {phase}", cli.guest))
            }
            BuildEvent::Warning(warning) => out.warn(&format!("{}: {warning}", cli.guest)),
            BuildEvent::Recovered(line) => eprintln!("vserver: guest `{}`: {line}", cli.guest),
        },
        sink,
    );
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
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
    #[arg(long, conflicts_with = "porcelain")]
    json: bool,
    /// Print the stable script form: one line per guest, tab-separated (see the command
    /// reference); the default is a table for people, whose layout may change.
    #[arg(long)]
    porcelain: bool,
}

/// [`parse_size`] as a clap value parser.
pub(crate) fn size_value(text: &str) -> Result<u64, String> {
    parse_size(text).ok_or_else(|| format!("`{text}` is not a size (bytes, or with K, M or G)"))
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
    let roots = parsed.roots.roots();
    match vserver_guest::list(&roots, &run_dir) {
        Ok(guests) => {
            let rows: Vec<ListRow> = guests.iter().map(|g| ListRow::new(&roots, g)).collect();
            if parsed.json {
                out.json(&serde_json::Value::Array(
                    rows.iter().map(ListRow::json).collect(),
                ));
            } else if parsed.porcelain {
                for row in &rows {
                    println!("{}", row.porcelain());
                }
            } else {
                print!("{}", list_table(&rows));
            }
            ExitCode::SUCCESS
        }
        Err(error) => report_lifecycle(&out, error),
    }
}

/// One guest of `vserver --list`, with what the listing adds to its state.
struct ListRow<'a> {
    status: &'a vserver_guest::GuestStatus,
    /// Its network address as configured: `ADDRESS/PREFIX` on a bridge, `host` for the host's
    /// network, `None` when it has none of its own (loopback only) or it is unknown.
    address: Option<String>,
}

impl<'a> ListRow<'a> {
    fn new(roots: &vserver_guest::HostRoots, status: &'a vserver_guest::GuestStatus) -> Self {
        let address = vserver_guest::load_guest(roots, &status.guest)
            .ok()
            .and_then(|config| match config.net {
                vserver_guest::NetConfig::Host => Some("host".to_owned()),
                vserver_guest::NetConfig::Bridge { address, .. } => address,
                vserver_guest::NetConfig::None => None,
            });
        ListRow { status, address }
    }

    fn package_management(&self) -> String {
        format!("{:?}", self.status.package_management).to_lowercase()
    }

    /// `--json`: the guest's state (as `status --json`) plus `address`, `uptime` and `memory`
    /// (`null` when unknown).
    fn json(&self) -> serde_json::Value {
        let mut value = status_json(self.status);
        if let Some(object) = value.as_object_mut() {
            let running = self.status.running.as_ref();
            object.insert("address".into(), serde_json::json!(self.address));
            object.insert(
                "uptime".into(),
                serde_json::json!(running.map(|r| r.uptime)),
            );
            object.insert(
                "memory".into(),
                serde_json::json!(running.and_then(|r| r.memory)),
            );
        }
        value
    }

    /// `--porcelain`: the stable script form, unchanged since the first release: the
    /// `status` line, then the distribution (`-` for none) and the package management, all
    /// tab-separated.
    fn porcelain(&self) -> String {
        let distribution = if self.status.distribution.is_empty() {
            "-"
        } else {
            &self.status.distribution
        };
        format!(
            "{}\t{distribution}\t{}",
            status_line(self.status),
            self.package_management()
        )
    }

    /// The table's cells, `-` where a value is unknown.
    fn cells(&self) -> Vec<String> {
        let dash = || "-".to_owned();
        let running = self.status.running.as_ref();
        vec![
            self.status.guest.clone(),
            self.status.state.to_owned(),
            if self.status.distribution.is_empty() {
                dash()
            } else {
                self.status.distribution.clone()
            },
            self.package_management(),
            self.address.clone().unwrap_or_else(dash),
            running.map_or_else(dash, |r| human_duration(r.uptime)),
            running
                .and_then(|r| r.memory)
                .map_or_else(dash, crate::output::human_bytes),
            self.status.operation.clone().unwrap_or_default(),
        ]
    }
}

/// The table for people: a header, then one aligned row per guest; a last column says what
/// operation runs on a guest (or why it is incomplete), when any does.
fn list_table(rows: &[ListRow<'_>]) -> String {
    let header = [
        "NAME",
        "STATE",
        "DISTRIBUTION",
        "PKGMGMT",
        "ADDRESS",
        "UPTIME",
        "MEMORY",
        "NOTE",
    ];
    let cells: Vec<Vec<String>> = rows.iter().map(ListRow::cells).collect();
    let columns = if cells.iter().any(|c| !c[7].is_empty()) {
        header.len()
    } else {
        header.len() - 1
    };
    let mut widths: Vec<usize> = header[..columns].iter().map(|h| h.len()).collect();
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |row: &[&str]| -> String {
        let mut text = String::new();
        for (i, cell) in row.iter().enumerate().take(columns) {
            if i + 1 == columns {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        format!("{}\n", text.trim_end())
    };
    let mut out = line(&header);
    for row in &cells {
        out.push_str(&line(&row.iter().map(String::as_str).collect::<Vec<_>>()));
    }
    out
}

/// `42s`, `12m 3s`, `5h 2m`, `3d 4h`.
fn human_duration(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

fn lifecycle(cli: &Cli, command: &GuestCommand) -> ExitCode {
    let no_start = StartArgs {
        init: None,
        memory: None,
        pids: None,
        cpu: None,
    };
    let no_stop = StopArgs {
        timeout: None,
        signal: None,
    };
    let (start_args, stop_args) = match command {
        GuestCommand::Start(start) => (start, &no_stop),
        GuestCommand::Stop(stop) => (&no_start, stop),
        GuestCommand::Restart(RestartArgs { stop, start }) => (start, stop),
        _ => (&no_start, &no_stop),
    };
    let json = matches!(command, GuestCommand::Status(StatusArgs { json: true }));
    let out = Output::new(
        "vserver",
        if json {
            Verbosity::Json
        } else {
            Verbosity::Normal
        },
    );
    let roots = cli.roots.roots();
    let run_dir = vserver_guest::default_run_dir();
    let guest = cli.guest.as_str();
    let signal = match stop_args.signal.as_deref().map(vserver_guest::parse_signal) {
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
        timeout: stop_args.timeout.map(std::time::Duration::from_secs),
    };
    let start = |out: &Output| -> ExitCode {
        let memory = match start_args.memory.as_deref().map(parse_size) {
            Some(None) => {
                eprintln!("vserver: error: --memory takes bytes with an optional k, m or g");
                return ExitCode::from(exit::USAGE);
            }
            Some(Some(bytes)) => Some(bytes),
            None => None,
        };
        let cpu_millis = match start_args.cpu.as_deref().map(vserver_guest::parse_cpus) {
            Some(None) => {
                eprintln!("vserver: error: --cpu takes a positive number of CPUs such as 0.5");
                return ExitCode::from(exit::USAGE);
            }
            Some(millis) => millis,
            None => None,
        };
        let options = vserver_guest::StartOptions {
            init: start_args
                .init
                .as_deref()
                .map(|i| i.split_whitespace().map(OsString::from).collect())
                .unwrap_or_default(),
            limits: vserver_guest::GuestLimits {
                memory,
                pids: start_args.pids,
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
    match command {
        GuestCommand::Start(_) => start(&out),
        GuestCommand::Stop(_) => stop(&out).err().unwrap_or(ExitCode::SUCCESS),
        GuestCommand::Restart(_) => match stop(&out) {
            Ok(()) => start(&out),
            Err(code) => code,
        },
        GuestCommand::Status(_) => match vserver_guest::status(&roots, &run_dir, guest) {
            Ok(status) => {
                if json {
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
        GuestCommand::Enter(args) if !args.transient => {
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
        GuestCommand::Exec(ExecArgs {
            transient,
            command: words,
        })
        | GuestCommand::Enter(EnterArgs {
            transient,
            command: words,
        }) => {
            let command = if matches!(command, GuestCommand::Enter(_)) {
                vec![OsString::from("/bin/sh"), OsString::from("-l")]
            } else {
                words.clone()
            };
            match vserver_guest::exec(&roots, &run_dir, guest, &command, *transient) {
                Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(EXEC_FAILED)),
                Err(error) => {
                    report_lifecycle(&out, error);
                    ExitCode::from(EXEC_FAILED)
                }
            }
        }
        GuestCommand::Delete(args) => {
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
        GuestCommand::Build(_)
        | GuestCommand::Pkgmgmt(_)
        | GuestCommand::Verify(_)
        | GuestCommand::Export(_)
        | GuestCommand::Enable
        | GuestCommand::Disable => ExitCode::from(exit::USAGE),
    }
}
