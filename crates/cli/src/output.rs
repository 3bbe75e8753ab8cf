//! All terminal output: status lines and errors on stderr, data on stdout, progress bars only
//! on a terminal and never with `--quiet` or `--json`.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vserver_repository::progress::Progress;

/// How much to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// Errors only.
    Quiet,
    /// Status lines and, on a terminal, progress.
    Normal,
    /// A JSON document on stdout, errors on stderr, no progress.
    Json,
}

/// The output of one applet run.
pub struct Output {
    applet: &'static str,
    verbosity: Verbosity,
}

impl Output {
    /// Output for `applet` (used as the prefix of status and error lines).
    pub fn new(applet: &'static str, verbosity: Verbosity) -> Self {
        Output { applet, verbosity }
    }

    /// A status line on stderr (not with `--quiet` or `--json`).
    pub fn status(&self, line: &str) {
        if self.verbosity == Verbosity::Normal {
            eprintln!("{}: {line}", self.applet);
        }
    }

    /// A warning on stderr (not with `--quiet`).
    pub fn warn(&self, line: &str) {
        if self.verbosity != Verbosity::Quiet {
            eprintln!("{}: warning: {line}", self.applet);
        }
    }

    /// Prints an error chain on one line, with an optional hint line.
    pub fn error(&self, err: &anyhow::Error) {
        let chain: Vec<String> = err.chain().map(ToString::to_string).collect();
        eprintln!("{}: error: {}", self.applet, chain.join(": "));
    }

    /// Prints a JSON document on stdout (with `--json` only).
    pub fn json(&self, value: &serde_json::Value) {
        if self.verbosity == Verbosity::Json {
            let mut out = std::io::stdout().lock();
            // A closed pipe is not an error worth reporting.
            let _ = writeln!(out, "{value}");
        }
    }

    /// A progress reporter suited to this output: units done of the total with their rate,
    /// and the bytes of package files covered with theirs.
    pub fn progress(&self) -> Bar {
        let show = self.verbosity == Verbosity::Normal && std::io::stderr().is_terminal();
        let bytes = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&bytes);
        Bar {
            bar: show.then(|| {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix}: {msg:20} [{bar:30}] {pos}/{len} ({rate}{bytes}, {eta})",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .with_key(
                        "rate",
                        |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                            let _ = write!(w, "{:.0}/s", state.per_sec());
                        },
                    )
                    .with_key(
                        "bytes",
                        move |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                            let done = counted.load(Ordering::Relaxed);
                            if done > 0 {
                                let seconds = state.elapsed().as_secs_f64().max(0.001);
                                let _ = write!(
                                    w,
                                    "; {}, {}/s",
                                    human_bytes(done),
                                    human_bytes((done as f64 / seconds) as u64)
                                );
                            }
                        },
                    )
                    .progress_chars("=> "),
                );
                bar.set_prefix(self.applet);
                bar.enable_steady_tick(Duration::from_millis(200));
                bar
            }),
            bytes,
        }
    }
}

impl Output {
    /// A bar for the package transactions of a build (packages done of the total, as the
    /// package manager reports them): only on a terminal, never with `--quiet` or `--json`,
    /// nor with `verbose` (the package manager's own output has the terminal then). Hidden
    /// until the first report.
    pub fn transaction_bar(&self, verbose: bool) -> Option<ProgressBar> {
        let show =
            self.verbosity == Verbosity::Normal && !verbose && std::io::stderr().is_terminal();
        show.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
            bar.set_style(
                ProgressStyle::with_template("{prefix}: {msg} [{bar:30}] {pos}/{len} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(self.applet);
            bar
        })
    }
}

/// A progress bar on stderr, or nothing.
pub struct Bar {
    bar: Option<ProgressBar>,
    /// Bytes of the current phase, for the `{bytes}` key of the bar's style.
    bytes: Arc<AtomicU64>,
}

impl Progress for Bar {
    fn start(&self, phase: &str, total: u64) {
        self.bytes.store(0, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.reset();
            bar.set_length(total);
            bar.set_message(phase.to_owned());
        }
    }

    fn advance(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    fn bytes(&self, n: u64) {
        if self.bar.is_some() {
            self.bytes.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A byte count for people: `512 B`, `3.4 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Finishes or undoes whatever was interrupted on `guest` (on every guest when `None`) and says
/// so, one line each, before the command does what was asked. A failure is the command's error.
pub fn recover_first(
    applet: &'static str,
    roots: &vserver_guest::HostRoots,
    guest: Option<&str>,
) -> Result<(), std::process::ExitCode> {
    let done = match guest {
        Some(guest) => vserver_guest::recover(roots, guest),
        None => vserver_guest::recover_all(roots),
    };
    match done {
        Ok(lines) => {
            for line in lines {
                eprintln!("{applet}: {line}");
            }
            Ok(())
        }
        // A name that cannot be a guest's has nothing to recover; the command reports it.
        Err(vserver_guest::Error::InvalidName { .. }) => Ok(()),
        Err(error) => {
            Output::new(applet, Verbosity::Normal).error(&anyhow::Error::new(error));
            Err(std::process::ExitCode::from(crate::exit::FAILURE))
        }
    }
}

/// The one check every command that needs root makes before it does anything: a one-line error
/// naming the command instead of the first `Permission denied` deep inside it.
pub fn require_root(command: &str) -> Result<(), std::process::ExitCode> {
    if rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let program = command.split_whitespace().next().unwrap_or("vserver");
    eprintln!(
        "{program}: error: `{command}` needs root (it uses namespaces, mounts, cgroups and the guests' files); run it as root, e.g. with sudo"
    );
    Err(std::process::ExitCode::from(crate::exit::FAILURE))
}
