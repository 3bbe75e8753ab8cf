//! The multi-call binary: `vserver`, `vrepo`, `vrpm`, … (the code is in the library).

#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    // Sandboxed package operations re-execute this binary; hand over before anything else.
    vserver_sandbox::run_if_sandbox_child();
    vserver::run(std::env::args_os().collect())
}
