//! `vrpm`, `vyum`, `vdnf`: run the host's rpm or dnf on guests, inside the per-operation
//! sandbox, with each guest's macros, repositories and external database.
//!
//! `vrpm [ROOTS] GUEST… [--all] -- RPM-ARGS`. The exit status is the tool's own (a signal `N`
//! gives `128+N`); with several guests, the last non-zero one. Our own failures (unknown guest,
//! sandbox set-up refused) exit with 1, or 2 for usage errors — documented in docs/commands.md.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitCode, ExitStatus};

use clap::Parser;
use vserver_guest::{GuestConfig, HostRoots};
use vserver_pkgmgmt::{PackageBackend, Tool};

use crate::exit;
use crate::output::{Output, Verbosity};
use crate::vdistro::{RootArgs, report};

/// Run a package tool on guests from the host.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    roots: RootArgs,
    /// Every configured guest of the tool's family with external package management.
    #[arg(long)]
    all: bool,
    /// The guests.
    guests: Vec<String>,
    /// The tool's arguments (after `--`).
    #[arg(last = true)]
    args: Vec<OsString>,
}

/// Runs `vrpm` (`Tool::Low`) or `vyum`/`vdnf` (`Tool::Resolver`).
pub fn main(applet: &'static str, tool: Tool, args: Vec<OsString>) -> ExitCode {
    run_on_guests(applet, "rpm", args, |roots, config, args| {
        let backend = vserver_guest::open_backend(roots, config, true)?;
        Ok(backend.run_tool(tool, args)?)
    })
}

/// The front end every `v*` package command shares: parse `GUEST… [--all] -- ARGS`, then run
/// `run` on each guest of `family` in turn. The exit status is the tool's own (a signal `N`
/// gives `128+N`); with several guests, the last non-zero one.
pub fn run_on_guests(
    applet: &'static str,
    family: &str,
    args: Vec<OsString>,
    run: impl Fn(&HostRoots, &GuestConfig, &[OsString]) -> Result<ExitStatus, vserver_guest::Error>,
) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { exit::USAGE } else { 0 });
        }
    };
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
        eprintln!("{applet}: error: no guest given (name guests, or --all)");
        return ExitCode::from(exit::USAGE);
    }
    let mut code = ExitCode::SUCCESS;
    for guest in &guests {
        if guests.len() > 1 {
            out.status(&format!("guest `{guest}`"));
        }
        let status = vserver_guest::load_guest(&roots, guest)
            .and_then(|config| run(&roots, &config, &cli.args));
        match status {
            Ok(status) if status.success() => {}
            Ok(status) => {
                let raw = status
                    .code()
                    .or_else(|| status.signal().map(|s| 128 + s))
                    .unwrap_or(1);
                code = ExitCode::from(u8::try_from(raw).unwrap_or(1));
            }
            Err(error) => code = report(&out, applet, error),
        }
    }
    code
}
