//! `vrpm`, `vyum`, `vdnf`: run the host's rpm or dnf on guests, inside the per-operation
//! sandbox, with each guest's macros, repositories and external database.
//!
//! `vrpm [ROOTS] GUEST… [--all] -- RPM-ARGS`. The exit status is the tool's own (a signal `N`
//! gives `128+N`); with several guests, the last non-zero one. Our own failures (unknown guest,
//! sandbox set-up refused) exit with 1, or 2 for usage errors — documented in docs/commands.md.
//!
//! On a guest whose package management is internal (`vserver G pkgmgmt internalize`), the
//! guest's own tool runs inside the guest instead (as `vserver G exec`, or `exec --transient`
//! when it is stopped), and a line on stderr says so.
//!
//! This file also holds the front end of `vserver G pkgmgmt internalize|externalize`
//! ([`pkgmgmt`]), called from the guest command.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitCode, ExitStatus};

use clap::{CommandFactory, FromArgMatches, Parser};
use vserver_guest::{
    GuestConfig, HostRoots, PackageManagement, PkgModeDirection, PkgModeOutcome, PkgModeRequest,
};
use vserver_pkgmgmt::{PackageBackend, Tool};

use crate::exit;
use crate::output::{Output, Verbosity};
use crate::vdistro::{RootArgs, report};

/// Run a package tool on guests from the host.
#[derive(Debug, Parser)]
#[command(version, arg_required_else_help = true)]
struct Cli {
    #[command(flatten)]
    roots: RootArgs,
    /// Every configured guest of the tool's family with external package management.
    #[arg(long)]
    all: bool,
    /// Freeze a running guest for the whole operation (its scripts then cannot restart its
    /// services); by default it keeps running and the package scripts act on it.
    #[arg(long)]
    freeze: bool,
    /// The guests.
    guests: Vec<String>,
    /// The tool's arguments (after `--`).
    #[arg(last = true)]
    args: Vec<OsString>,
}

/// The tool an applet runs, and an example of its arguments.
fn applet_help(applet: &str) -> (&'static str, &'static str) {
    match applet {
        "vrpm" => ("rpm", "-qa"),
        "vyum" => ("dnf", "install -y openssh-server"),
        "vdnf" => ("dnf", "upgrade -y"),
        "vapt-get" => ("apt-get", "install -y openssh-server"),
        "vdpkg" => ("dpkg", "-l"),
        "vapt-cache" => ("apt-cache", "policy openssh-server"),
        _ => ("the tool's", "--help"),
    }
}

/// The command line of `applet` (vrpm, vyum, vdnf, vapt-get, vdpkg, vapt-cache): one
/// definition, named and explained for each.
pub(crate) fn command(applet: &'static str) -> clap::Command {
    let (tool, example) = applet_help(applet);
    let family = if matches!(applet, "vrpm" | "vyum" | "vdnf") {
        "rpm"
    } else {
        "Debian-family"
    };
    Cli::command()
        .name(applet)
        .bin_name(applet)
        .about(format!(
            "Run the host's {tool} on {family} guests, with each guest's own package database \
             (kept outside the guest) and repositories, in a sandbox"
        ))
        .override_usage(format!(
            "{applet} [ROOTS] GUEST… [--all] -- {tool_args}",
            tool_args = tool.to_uppercase() + "-ARGS"
        ))
        .after_help(format!(
            "Examples:\n  {applet} web1 -- {example}\n  {applet} --all -- {example}\n\n\
             Exit status: the tool's own (128+N for signal N; the last failure with several \
             guests); 1 when vserver could not run it, 2 for a wrong command line."
        ))
}

/// Runs `vrpm` (`Tool::Low`) or `vyum`/`vdnf` (`Tool::Resolver`).
pub fn main(applet: &'static str, tool: Tool, args: Vec<OsString>) -> ExitCode {
    run_on_guests(applet, "rpm", args, |roots, config, args, freeze| {
        if let Some(status) = run_internal(applet, roots, config, args) {
            return status;
        }
        let backend = vserver_guest::open_backend(roots, config, true)?.freeze(freeze);
        Ok(backend.run_tool(tool, args)?)
    })
}

/// Why a `v*` command failed on one guest.
#[derive(Debug)]
pub enum GuestToolError {
    /// Loading the guest or running the host's tool failed.
    Guest(vserver_guest::Error),
    /// Running the guest's own tool inside it failed.
    Lifecycle(vserver_guest::LifecycleError),
}

impl From<vserver_guest::Error> for GuestToolError {
    fn from(error: vserver_guest::Error) -> Self {
        GuestToolError::Guest(error)
    }
}

impl From<vserver_pkgmgmt::Error> for GuestToolError {
    fn from(error: vserver_pkgmgmt::Error) -> Self {
        GuestToolError::Guest(error.into())
    }
}

/// For a guest with internal package management: runs the guest's own tool (the applet's name
/// without its `v`) inside it and says so; `None` for any other guest.
pub fn run_internal(
    applet: &str,
    roots: &HostRoots,
    config: &GuestConfig,
    args: &[OsString],
) -> Option<Result<ExitStatus, GuestToolError>> {
    if config.package_management != PackageManagement::Internal {
        return None;
    }
    let program = applet.strip_prefix('v').unwrap_or(applet);
    eprintln!(
        "{applet}: guest `{}` manages its own packages (internal): running its own `{program}` inside it",
        config.name
    );
    let run_dir = vserver_guest::default_run_dir();
    Some(
        vserver_guest::run_guest_tool(roots, &run_dir, &config.name, program, args)
            .map(|code| ExitStatus::from_raw((code & 0xff) << 8))
            .map_err(GuestToolError::Lifecycle),
    )
}

/// The front end every `v*` package command shares: parse `GUEST… [--all] [--freeze] -- ARGS`,
/// then run `run` on each guest of `family` in turn (`--freeze` is its last argument). The exit status is the tool's own (a signal `N`
/// gives `128+N`); with several guests, the last non-zero one.
pub fn run_on_guests(
    applet: &'static str,
    family: &str,
    args: Vec<OsString>,
    run: impl Fn(&HostRoots, &GuestConfig, &[OsString], bool) -> Result<ExitStatus, GuestToolError>,
) -> ExitCode {
    let cli = match command(applet)
        .try_get_matches_from(args)
        .and_then(|matches| Cli::from_arg_matches(&matches))
    {
        Ok(cli) => cli,
        Err(err) => return exit::command_line(&err),
    };
    if cli.args.is_empty() {
        let (tool, example) = applet_help(applet);
        eprintln!(
            "{applet}: error: no {tool} arguments after `--` (e.g. `{applet} {} -- {example}`); see `{applet} --help`",
            cli.guests.first().map_or("GUEST", String::as_str)
        );
        return ExitCode::from(exit::USAGE);
    }
    if let Err(code) = crate::output::require_root(applet) {
        return code;
    }
    let out = Output::new(applet, Verbosity::Normal);
    let roots = cli.roots.roots();
    let mut guests = cli.guests.clone();
    if cli.all {
        match vserver_guest::list_guests(&roots) {
            Ok(all) => {
                for name in all {
                    let external = vserver_guest::load_guest(&roots, &name).is_ok_and(|c| {
                        c.family == family
                            && c.package_management == vserver_guest::PackageManagement::External
                    });
                    if external && !guests.contains(&name) {
                        guests.push(name);
                    }
                }
            }
            Err(error) => return report(&out, applet, error),
        }
    }
    if guests.is_empty() {
        eprintln!("{applet}: error: no guest given (name guests, or --all); see `{applet} --help`");
        return ExitCode::from(exit::USAGE);
    }
    let mut code = ExitCode::SUCCESS;
    for guest in &guests {
        if guests.len() > 1 {
            out.status(&format!("guest `{guest}`"));
        }
        if let Err(failed) = crate::output::recover_first(applet, &roots, Some(guest)) {
            code = failed;
            continue;
        }
        let status = vserver_guest::load_guest(&roots, guest)
            .map_err(GuestToolError::from)
            .and_then(|config| run(&roots, &config, &cli.args, cli.freeze));
        match status {
            Ok(status) if status.success() => {}
            Ok(status) => {
                let raw = status
                    .code()
                    .or_else(|| status.signal().map(|s| 128 + s))
                    .unwrap_or(1);
                code = ExitCode::from(u8::try_from(raw).unwrap_or(1));
            }
            Err(GuestToolError::Guest(error)) => code = report(&out, applet, error),
            Err(GuestToolError::Lifecycle(error)) => {
                let hint = error.hint();
                out.error(&anyhow::Error::new(error));
                if let Some(hint) = hint {
                    eprintln!("{applet}: hint: {hint}");
                }
                code = ExitCode::from(exit::FAILURE);
            }
        }
    }
    code
}

/// `vserver G pkgmgmt internalize|externalize`'s arguments.
#[derive(Debug, Parser)]
#[command(name = "vserver GUEST pkgmgmt", no_binary_name = true)]
pub(crate) struct PkgmgmtArgs {
    /// `internalize` (into the guest) or `externalize` (back to the host).
    #[arg(value_parser = ["internalize", "externalize"])]
    direction: String,
    /// Change a running guest, frozen for the duration, instead of refusing.
    #[arg(long)]
    force: bool,
    /// internalize: remove the external database instead of keeping it as a read-only archive.
    #[arg(long)]
    purge_external: bool,
    /// Only errors (and, for externalize, the differences on stdout).
    #[arg(short, long)]
    quiet: bool,
    /// Print one JSON document on stdout instead: `{"guest", "mode", "packages": [...]}`, and
    /// for externalize also `"added"`, `"removed"`, `"differences"`, `"rejected"` (arrays of
    /// strings).
    #[arg(long)]
    json: bool,
}

/// The environment variable that makes step N of a mode change fail (debug builds only: the
/// test hook of the roll-back).
const FAIL_AT_STEP_VAR: &str = "VSERVER_TEST_FAIL_AT_STEP";

/// `vserver G pkgmgmt internalize|externalize [--force] [--purge-external] [--json]`.
/// Externalize prints
/// each difference its verification found on stdout (`rpm -Va` lines, `+ PKG` for a package
/// that appeared while internal, `- PKG` for one that went) and exits 0; failures exit 1, with
/// the guest in its previous mode.
pub fn pkgmgmt(roots: &HostRoots, guest: &str, args: &[OsString]) -> ExitCode {
    let parsed = match PkgmgmtArgs::try_parse_from(args) {
        Ok(parsed) => parsed,
        Err(err) => return exit::command_line(&err),
    };
    let out = Output::new(
        "vserver",
        if parsed.json {
            Verbosity::Json
        } else if parsed.quiet {
            Verbosity::Quiet
        } else {
            Verbosity::Normal
        },
    );
    let direction = if parsed.direction == "internalize" {
        PkgModeDirection::Internalize
    } else {
        PkgModeDirection::Externalize
    };
    let fail_after_step = if cfg!(debug_assertions) {
        std::env::var(FAIL_AT_STEP_VAR)
            .ok()
            .and_then(|v| v.parse().ok())
    } else {
        None
    };
    let request = PkgModeRequest {
        direction,
        force: parsed.force,
        options: vserver_pkgmgmt::mode::ModeOptions {
            fail_after_step,
            purge_external: parsed.purge_external,
        },
    };
    let run_dir = vserver_guest::default_run_dir();
    let result = vserver_guest::change_package_management(
        roots,
        &run_dir,
        guest,
        &request,
        &mut |number, step| out.status(&format!("{guest}: step {number}: {step}")),
    );
    match result {
        Ok(PkgModeOutcome::Internalized { packages }) => {
            out.json(&serde_json::json!({
                "guest": guest,
                "mode": "internal",
                "packages": packages,
            }));
            out.status(&format!(
                "guest `{guest}`: package management is internal ({} packages); the guest's own tools manage it now",
                packages.len()
            ));
            ExitCode::SUCCESS
        }
        Ok(PkgModeOutcome::Externalized(report)) if parsed.json => {
            out.json(&serde_json::json!({
                "guest": guest,
                "mode": "external",
                "packages": report.packages,
                "added": report.added,
                "removed": report.removed,
                "differences": report.differences,
                "rejected": report.rejected,
            }));
            ExitCode::SUCCESS
        }
        Ok(PkgModeOutcome::Externalized(report)) => {
            for package in &report.added {
                println!("+ {package}");
            }
            for package in &report.removed {
                println!("- {package}");
            }
            for line in &report.differences {
                println!("{line}");
            }
            for file in &report.rejected {
                out.warn(&format!(
                    "guest `{guest}`: left out of the rebuilt database (failed the checks): {file}"
                ));
            }
            let changes = report.added.len() + report.removed.len() + report.differences.len();
            if changes > 0 {
                out.warn(&format!(
                    "guest `{guest}`: verification found {} files that differ, {} packages added and {} removed while internal (listed on stdout)",
                    report.differences.len(),
                    report.added.len(),
                    report.removed.len()
                ));
            }
            out.status(&format!(
                "guest `{guest}`: package management is external again ({} packages)",
                report.packages.len()
            ));
            ExitCode::SUCCESS
        }
        Err(error) => {
            out.error(&anyhow::Error::new(error));
            ExitCode::from(exit::FAILURE)
        }
    }
}
