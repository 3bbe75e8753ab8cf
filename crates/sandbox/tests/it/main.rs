//! Hostile-guest integration tests for `vserver-sandbox`.
//!
//! One binary with its own tiny runner (`harness = false`): the sandbox re-executes the current
//! binary to set up namespaces in a single-threaded process, so `main` must hand over to
//! `run_if_sandbox_child` before anything else happens — libtest would already have started
//! threads. Tests run one after another (they change mounts and cgroups of the machine).
//!
//! Needs root; without it every test skips with a reason, or fails when
//! `VSERVER_TEST_REQUIRE_ALL=1` is set.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod attack;
mod mount;
mod nosync;
mod safe_path;
mod sandbox;
mod support;

use std::panic::{self, AssertUnwindSafe};
use std::time::Instant;

use support::{Outcome, Test};

fn main() {
    vserver_sandbox::run_if_sandbox_child();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--attack") {
        attack::main(&args[2..]);
    }
    if args.get(1).map(String::as_str) == Some("--fsync-probe") {
        nosync::probe(args.get(2).map_or("", String::as_str));
    }
    let tests: Vec<Test> = [
        safe_path::tests(),
        mount::tests(),
        sandbox::tests(),
        nosync::tests(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    if std::env::args().any(|arg| arg == "--list") {
        for test in &tests {
            println!("{}: test", test.name);
        }
        return;
    }
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for test in tests
        .iter()
        .filter(|t| filters.is_empty() || filters.iter().any(|f| t.name.contains(f.as_str())))
    {
        let started = Instant::now();
        let outcome = panic::catch_unwind(AssertUnwindSafe(test.run));
        let elapsed = started.elapsed().as_secs_f32();
        match outcome {
            Ok(Outcome::Passed) => {
                passed += 1;
                println!("test {} ... ok ({elapsed:.2}s)", test.name);
            }
            Ok(Outcome::Skipped(reason)) => {
                skipped += 1;
                println!("test {} ... skipped: {reason}", test.name);
            }
            Err(_) => {
                failed += 1;
                println!("test {} ... FAILED ({elapsed:.2}s)", test.name);
            }
        }
    }
    println!();
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        std::process::exit(101);
    }
}
