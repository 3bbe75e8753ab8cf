//! `vapt-get`, `vdpkg`, `vapt-cache`: run the host's apt-get, dpkg or apt-cache on Debian-family
//! guests, inside the per-operation sandbox, with each guest's sources, apt state and external
//! dpkg database (bound onto the guest's `/var/lib/dpkg` for the call only).
//!
//! `vapt-get [ROOTS] GUEST… [--all] -- APT-GET-ARGS`. The exit status is the tool's own (a
//! signal `N` gives `128+N`); with several guests, the last non-zero one. Our own failures
//! (unknown guest, sandbox set-up refused) exit with 1, or 2 for usage errors, as `vrpm` does.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitCode;

use clap::Parser;
use vserver_pkgmgmt::DebTool;

use crate::exit;
use crate::output::{Output, Verbosity};
use crate::vdistro::{RootArgs, report};

/// Run apt-get, dpkg or apt-cache on Debian-family guests from the host.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    roots: RootArgs,
    /// Every configured Debian-family guest with external package management.
    #[arg(long)]
    all: bool,
    /// The guests.
    guests: Vec<String>,
    /// The tool's arguments (after `--`).
    #[arg(last = true)]
    args: Vec<OsString>,
}

/// Runs `vapt-get` (`DebTool::AptGet`), `vdpkg` (`DebTool::Dpkg`) or `vapt-cache`.
pub fn main(applet: &'static str, tool: DebTool, args: Vec<OsString>) -> ExitCode {
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
                    let external_deb = vserver_guest::load_guest(&roots, &name).is_ok_and(|c| {
                        c.family == "deb"
                            && c.package_management == vserver_guest::PackageManagement::External
                    });
                    if external_deb && !guests.contains(&name) {
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
        let backend = vserver_guest::load_guest(&roots, guest)
            .and_then(|config| vserver_guest::open_deb_backend(&roots, &config, true));
        let backend = match backend {
            Ok(backend) => backend,
            Err(error) => {
                code = report(&out, applet, error);
                continue;
            }
        };
        match backend.run_program(tool, &cli.args) {
            Ok(status) if status.success() => {}
            Ok(status) => {
                let raw = status
                    .code()
                    .or_else(|| status.signal().map(|s| 128 + s))
                    .unwrap_or(1);
                code = ExitCode::from(u8::try_from(raw).unwrap_or(1));
            }
            Err(error) => code = report(&out, applet, vserver_guest::Error::from(error)),
        }
    }
    code
}
