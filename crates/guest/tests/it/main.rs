//! Integration tests for `vserver-guest`: distributions, builds with the host's real dnf and rpm,
//! host-side package operations, the scriptlet plugin, hostile guests, clean-up.
//!
//! One binary with its own runner (`harness = false`): package operations run in the sandbox,
//! which re-executes this binary, so `main` hands over to `run_if_sandbox_child` before any
//! thread exists. Needs root, rpm, dnf, createrepo_c and busybox-static; without them each test
//! skips with a reason, or fails when `VSERVER_TEST_REQUIRE_ALL=1` is set.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod builds;
mod distributions;
mod hostile;
mod support;

use std::panic::{self, AssertUnwindSafe};
use std::time::Instant;

use support::Outcome;

fn main() {
    vserver_sandbox::run_if_sandbox_child();
    support::ensure_plugin_then_reexec();
    let tests: Vec<support::NamedTest> =
        [distributions::tests(), builds::tests(), hostile::tests()]
            .into_iter()
            .flatten()
            .collect();
    if std::env::args().any(|arg| arg == "--list") {
        for (name, _) in &tests {
            println!("{name}: test");
        }
        return;
    }
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for (name, run) in tests
        .iter()
        .filter(|(n, _)| filters.is_empty() || filters.iter().any(|f| n.contains(f.as_str())))
    {
        let started = Instant::now();
        let outcome = panic::catch_unwind(AssertUnwindSafe(run));
        let elapsed = started.elapsed().as_secs_f32();
        match outcome {
            Ok(Outcome::Passed) => {
                passed += 1;
                println!("test {name} ... ok ({elapsed:.2}s)");
            }
            Ok(Outcome::Skipped(reason)) => {
                skipped += 1;
                println!("test {name} ... skipped: {reason}");
            }
            Err(_) => {
                failed += 1;
                println!("test {name} ... FAILED ({elapsed:.2}s)");
            }
        }
    }
    println!("\n{passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        std::process::exit(101);
    }
}
