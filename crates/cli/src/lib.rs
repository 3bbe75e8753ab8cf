//! The multi-call binary's code: `vserver`, `vrepo`, … chosen by the name it is called by.
//!
//! Like coreutils' multi-call binary, the applet is the longest known name that the basename of
//! argv[0] ends with; under any other name (`vserver`), a first argument naming an applet selects
//! it (`vserver vrepo index DIR`), which is also how tests call it.
//!
//! A library as well as a binary so that tests can walk the clap definitions ([`commands`]).

#![forbid(unsafe_code)]

mod exit;
mod export_cmd;
mod generate;
mod many;
mod output;
mod vapt;
mod vdistro;
mod verify_cmd;
mod vpkg;
mod vrepo;
mod vserver_cmd;

use std::ffi::OsString;
use std::process::ExitCode;

pub use generate::{SHELLS, commands, completion_file, prepared};

/// The applets this binary answers to.
pub const APPLETS: &[&str] = &[
    "vrepo",
    "vdistro",
    "vrpm",
    "vyum",
    "vdnf",
    "vapt-get",
    "vdpkg",
    "vapt-cache",
];

/// The applets that run a package tool on guests.
const PACKAGE_APPLETS: [&str; 6] = ["vrpm", "vyum", "vdnf", "vapt-get", "vdpkg", "vapt-cache"];

/// Runs the applet `args` names (argv, including the program name).
pub fn run(mut args: Vec<OsString>) -> ExitCode {
    let invoked = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let applet = APPLETS
        .iter()
        .filter(|a| invoked.ends_with(*a))
        .max_by_key(|a| a.len())
        .copied()
        .or_else(|| {
            let first = args.get(1)?.to_str()?;
            let applet = APPLETS.iter().find(|a| **a == first).copied()?;
            args.remove(0);
            Some(applet)
        });
    match applet {
        Some("vrepo") => vrepo::main(args),
        Some("vdistro") => vdistro::main(args),
        Some("vrpm") => vpkg::main("vrpm", vserver_pkgmgmt::Tool::Low, args),
        Some("vyum") => vpkg::main("vyum", vserver_pkgmgmt::Tool::Resolver, args),
        Some("vdnf") => vpkg::main("vdnf", vserver_pkgmgmt::Tool::Resolver, args),
        Some("vapt-get") => vapt::main("vapt-get", vserver_pkgmgmt::DebTool::AptGet, args),
        Some("vdpkg") => vapt::main("vdpkg", vserver_pkgmgmt::DebTool::Dpkg, args),
        Some("vapt-cache") => vapt::main("vapt-cache", vserver_pkgmgmt::DebTool::AptCache, args),
        // `vserver GUEST COMMAND …`: the guest command (and `vserver` alone: its usage).
        _ => vserver_cmd::main(args),
    }
}
