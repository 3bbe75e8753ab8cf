//! `vrepo`: package repositories (index now; mirror and serve come next).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;
use vserver_repository::BadPackage;
use vserver_repository::compress::Compression;
use vserver_repository::rpm_file::RpmReadOptions;
use vserver_repository::rpmmd::{RpmIndexOptions, index_rpm};

use crate::exit;
use crate::output::{Output, Verbosity};

/// Local package repositories: write the metadata dnf and apt read.
#[derive(Debug, Parser)]
#[command(name = "vrepo", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write repository metadata for the packages under DIR.
    ///
    /// RPMs get `DIR/repodata/` (rpm-md, as createrepo_c writes it); .debs get `Packages` and
    /// `Release` (flat, or `dists/SUITE/…` with --suite). New metadata is swapped in atomically:
    /// a failed or interrupted run leaves the previous metadata in place.
    Index(IndexArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CompressArg {
    Gz,
    Xz,
    Zstd,
}

#[derive(Debug, clap::Args)]
struct IndexArgs {
    /// The repository directory.
    dir: PathBuf,
    /// Reuse the metadata of packages whose size and modification time did not change.
    #[arg(long)]
    update: bool,
    /// Compression of primary, filelists and other.
    #[arg(long, value_enum, default_value = "gz")]
    compress: CompressArg,
    /// Leave out packages that cannot be read, list them at the end, and exit with code 3.
    #[arg(long)]
    skip_bad: bool,
    /// Wait for another vrepo working on DIR instead of failing.
    #[arg(long)]
    wait: bool,
    /// Keep at most this many changelog entries per package.
    #[arg(long, default_value_t = 10)]
    changelog_limit: usize,
    /// Print a JSON summary on stdout instead of status lines.
    #[arg(long)]
    json: bool,
    /// Print errors only.
    #[arg(long, short)]
    quiet: bool,
}

/// Runs `vrepo` with `args` (argv, including the program name).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { exit::USAGE } else { 0 });
        }
    };
    match cli.command {
        Command::Index(args) => {
            let verbosity = if args.json {
                Verbosity::Json
            } else if args.quiet {
                Verbosity::Quiet
            } else {
                Verbosity::Normal
            };
            let out = Output::new("vrepo", verbosity);
            match index(&args, &out) {
                Ok(code) => code,
                Err(err) => {
                    out.error(&err);
                    ExitCode::from(exit::FAILURE)
                }
            }
        }
    }
}

fn index(args: &IndexArgs, out: &Output) -> Result<ExitCode> {
    let dir = &args.dir;
    if !dir.is_dir() {
        bail!("`{}` is not a directory", dir.display());
    }
    let started = Instant::now();
    let options = RpmIndexOptions {
        compression: match args.compress {
            CompressArg::Gz => Compression::Gzip,
            CompressArg::Xz => Compression::Xz,
            CompressArg::Zstd => Compression::Zstd,
        },
        update: args.update,
        skip_bad: args.skip_bad,
        wait_for_lock: args.wait,
        read: RpmReadOptions {
            changelog_limit: args.changelog_limit,
        },
    };
    let bar = out.progress();
    let report = index_rpm(dir, &options, &bar).with_context(|| {
        format!(
            "indexing `{}` failed; its metadata is unchanged",
            dir.display()
        )
    })?;
    let seconds = started.elapsed().as_secs_f64();
    report_skipped(out, &report.skipped);
    out.status(&format!(
        "indexed {} packages ({}) into {} in {seconds:.2} s ({} read, {} reused)",
        report.packages,
        human_bytes(report.bytes),
        display_rel(dir, "repodata"),
        report.packages - report.reused,
        report.reused,
    ));
    out.json(&json!({
        "type": "summary",
        "format": "rpm-md",
        "directory": dir,
        "packages": report.packages,
        "bytes": report.bytes,
        "read": report.packages - report.reused,
        "reused": report.reused,
        "skipped": skipped_json(&report.skipped),
        "seconds": seconds,
    }));
    Ok(if report.skipped.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::PARTIAL)
    })
}

fn report_skipped(out: &Output, skipped: &[BadPackage]) {
    for bad in skipped {
        out.warn(&format!("skipped `{}`: {}", bad.path.display(), bad.reason));
    }
}

fn skipped_json(skipped: &[BadPackage]) -> serde_json::Value {
    skipped
        .iter()
        .map(|b| json!({"path": b.path, "reason": b.reason}))
        .collect()
}

fn display_rel(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

fn human_bytes(bytes: u64) -> String {
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
