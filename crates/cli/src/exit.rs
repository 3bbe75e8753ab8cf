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
