//! Progress reporting without a terminal dependency.
//!
//! The library only counts; the CLI decides whether a bar is drawn (a terminal, no `--quiet`, no
//! `--json`). Implementations must be cheap: `advance` is called once per package from worker
//! threads.

/// Receives progress of a long operation, phase by phase.
pub trait Progress: Sync {
    /// A new phase starts with `total` units of work (0 when unknown).
    fn start(&self, phase: &str, total: u64);
    /// `n` more units of the current phase are done.
    fn advance(&self, n: u64);
    /// `n` more bytes of package files were covered by the current phase (read, or found
    /// unchanged); shown beside the units with a byte rate.
    fn bytes(&self, _n: u64) {}
    /// The current phase is over.
    fn finish(&self);
}

/// A [`Progress`] that shows nothing, for pipes, tests and `--quiet`.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _phase: &str, _total: u64) {}
    fn advance(&self, _n: u64) {}
    fn finish(&self) {}
}
