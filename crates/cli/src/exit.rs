//! Exit codes shared by every applet (documented in docs/commands.md).

/// The operation failed; nothing was published or changed.
pub const FAILURE: u8 = 1;
/// The command line was wrong.
pub const USAGE: u8 = 2;
/// The operation succeeded but left some input out (`--skip-bad`).
pub const PARTIAL: u8 = 3;
/// `vrepo mirror`: the mirror was already up to date; nothing was downloaded, removed or
/// published (0 means it was updated).
pub const UP_TO_DATE: u8 = 4;

/// Prints a command-line parse error (or the help or version clap was asked for) and returns the
/// exit status: 2 for an error, 0 for help and version.
pub fn command_line(err: &clap::Error) -> std::process::ExitCode {
    let _ = err.print();
    std::process::ExitCode::from(if err.use_stderr() { USAGE } else { 0 })
}

/// `vserver verify`: a packaged file outside configuration files differs from the trusted
/// database, or a setuid/setgid file no package owns appeared (0: at most configuration files
/// changed).
pub const TAMPERED: u8 = 5;
