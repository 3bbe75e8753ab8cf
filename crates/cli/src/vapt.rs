//! `vapt-get`, `vdpkg`, `vapt-cache`: run the host's apt-get, dpkg or apt-cache on Debian-family
//! guests, inside the per-operation sandbox, with each guest's sources, apt state and external
//! dpkg database (bound onto the guest's `/var/lib/dpkg` for the call only).
//!
//! `vapt-get [ROOTS] GUEST… [--all] -- APT-GET-ARGS`. The exit status is the tool's own (a
//! signal `N` gives `128+N`); with several guests, the last non-zero one. Our own failures
//! (unknown guest, sandbox set-up refused) exit with 1, or 2 for usage errors, as `vrpm` does.
//! On a guest with internal package management the guest's own tool runs inside it, as with
//! `vrpm`.

use std::ffi::OsString;
use std::process::ExitCode;

use vserver_pkgmgmt::DebTool;

use crate::vpkg::{run_internal, run_on_guests};

/// Runs `vapt-get` (`DebTool::AptGet`), `vdpkg` (`DebTool::Dpkg`) or `vapt-cache`.
pub fn main(applet: &'static str, tool: DebTool, args: Vec<OsString>) -> ExitCode {
    run_on_guests(applet, "deb", args, |roots, config, args, freeze| {
        if let Some(status) = run_internal(applet, roots, config, args) {
            return status;
        }
        let backend = vserver_guest::open_deb_backend(roots, config, true)?.freeze(freeze);
        Ok(backend.run_program(tool, args)?)
    })
}
