//! `vrepo`: package repositories: index, mirror, serve, sign, snapshot.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;
use vserver_repository::BadPackage;
use vserver_repository::apt::{AptIndexOptions, AptLayout, index_apt};
use vserver_repository::compress::Compression;
use vserver_repository::rpm_file::RpmReadOptions;
use vserver_repository::rpmmd::{RpmIndexOptions, index_rpm};
use vserver_repository::scan::scan_packages;
use vserver_repository::sign::Signer;

use crate::exit;
use crate::output::{Output, Verbosity, human_bytes};

#[path = "vrepo_mirror.rs"]
mod mirror_cmd;
#[path = "vrepo_sign.rs"]
pub(crate) mod sign_cmd;
#[path = "vrepo_snapshot.rs"]
mod snapshot_cmd;

/// Local package repositories: write the metadata dnf and apt read.
#[derive(Debug, Parser)]
#[command(
    name = "vrepo",
    version,
    about = "Local package repositories: write the metadata dnf and apt read, mirror, serve, sign and snapshot them",
    propagate_version = true,
    arg_required_else_help = true,
    disable_help_subcommand = true,
    after_help = "Examples:\n  vrepo index /srv/repo/el9\n  vrepo mirror --keyring /usr/share/keyrings/site.gpg --suite stable http://repo.example.org/debian/ /srv/mirror/debian\n  vrepo serve /srv/repo --listen 0.0.0.0:8080"
)]
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
    #[command(
        after_help = "Examples:\n  vrepo index /srv/repo/el9\n  vrepo index --update --sign repo@example.org /srv/repo/el9\n  vrepo index /srv/repo/debian --suite stable --component main"
    )]
    Index(IndexArgs),
    /// Mirror an rpm-md or apt repository (http(s), file:// or a path) into DEST.
    ///
    /// Incremental (only missing or changed packages are fetched), verified (every file against
    /// the checksums of the metadata, the metadata against --keyring), resumable, and published
    /// atomically: DEST's metadata switches only once every package it names is in place.
    /// Exit status: 0 updated, 4 already up to date, 1 failed (DEST unchanged).
    #[command(
        after_help = "Examples:\n  vrepo mirror http://repo.example.org/el9/BaseOS/x86_64/os/ /srv/mirror/el9-baseos\n  vrepo mirror --suite stable --arch amd64 --packages @minbase --keyring /usr/share/keyrings/site.gpg http://repo.example.org/debian/ /srv/mirror/debian"
    )]
    Mirror(mirror_cmd::MirrorArgs),
    /// Serve a repository tree over HTTP (GET, HEAD, Range, If-Modified-Since).
    ///
    /// Listens on loopback by default; one log line per request on stderr; stops cleanly on
    /// SIGINT or SIGTERM.
    #[command(
        after_help = "Examples:\n  vrepo serve /srv/repo\n  vrepo serve /srv/repo --listen 0.0.0.0:8080 --no-listing"
    )]
    Serve(mirror_cmd::ServeArgs),
    /// Signing keys: export the public key clients verify the signed metadata with.
    #[command(
        subcommand,
        after_help = "Example:\n  vrepo key export repo@example.org -o /srv/repo/repo-key.asc"
    )]
    Key(sign_cmd::KeyCommand),
    /// Snapshots of a repository, published under stable names by an atomic switch.
    #[command(
        subcommand,
        after_help = "Examples:\n  vrepo snapshot create --from /srv/mirror/debian --root /srv/published debian-2026-12-04\n  vrepo snapshot publish --root /srv/published debian-2026-12-04 --as stable"
    )]
    Snapshot(snapshot_cmd::SnapshotCommand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CompressArg {
    Gz,
    Xz,
    Zstd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FormatArg {
    /// rpm-md for the RPMs and apt metadata for the .debs found.
    Auto,
    /// rpm-md (`repodata/`), even for a directory without packages.
    Rpm,
    /// apt (`Packages`, `Release`), even for a directory without packages.
    Deb,
}

#[derive(Debug, clap::Args)]
struct IndexArgs {
    /// The repository directory.
    dir: PathBuf,
    /// Which metadata to write.
    #[arg(long, value_enum, default_value = "auto")]
    format: FormatArg,
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
    /// Also write the sqlite databases old clients such as yum read (RPM).
    #[arg(long)]
    database: bool,
    /// Keep at most this many changelog entries per package (RPM).
    #[arg(long, default_value_t = 10)]
    changelog_limit: usize,
    /// Write `dists/SUITE/COMPONENT/binary-ARCH/` instead of a flat repository (.deb).
    #[arg(long, value_name = "SUITE")]
    suite: Option<String>,
    /// The component of --suite (.deb).
    #[arg(long, default_value = "main", requires = "suite")]
    component: String,
    /// A Priority/Section override file, `PACKAGE PRIORITY SECTION` per line (.deb).
    #[arg(long = "override", value_name = "FILE")]
    override_file: Option<PathBuf>,
    /// `Origin:` of the Release file (.deb).
    #[arg(long)]
    origin: Option<String>,
    /// `Label:` of the Release file (.deb).
    #[arg(long)]
    label: Option<String>,
    #[command(flatten)]
    sign: sign_cmd::SignArgs,
    /// Print a JSON summary on stdout instead of status lines.
    #[arg(long)]
    json: bool,
    /// Print errors only.
    #[arg(long, short)]
    quiet: bool,
}

/// `vrepo`'s definition (for the man pages and completions).
pub(crate) fn command() -> clap::Command {
    use clap::CommandFactory;
    Cli::command()
}

/// Runs `vrepo` with `args` (argv, including the program name).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => return exit::command_line(&err),
    };
    match cli.command {
        Command::Mirror(args) => mirror_cmd::run_mirror(&args),
        Command::Serve(args) => mirror_cmd::run_serve(&args),
        Command::Key(command) => sign_cmd::run_key(&command),
        Command::Snapshot(command) => snapshot_cmd::run_snapshot(&command),
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
    let (rpm, deb) = match args.format {
        FormatArg::Rpm => (true, false),
        FormatArg::Deb => (false, true),
        FormatArg::Auto => {
            let has = |ext| {
                scan_packages(dir, ext)
                    .map(|s| !s.files.is_empty() || !s.bad.is_empty())
                    .with_context(|| format!("cannot scan `{}`", dir.display()))
            };
            let (rpm, deb) = (has("rpm")?, has("deb")? || args.suite.is_some());
            if !rpm && !deb {
                bail!(
                    "no .rpm or .deb files under `{}`; use --format rpm or --format deb to write empty metadata",
                    dir.display()
                );
            }
            (rpm, deb)
        }
    };
    let signer = args.sign.signer()?;
    let mut summaries = Vec::new();
    let mut skipped = 0;
    if rpm {
        let summary = index_rpm_md(args, signer.clone(), out)?;
        skipped += summary["skipped"].as_array().map_or(0, Vec::len);
        summaries.push(summary);
    }
    if deb {
        let summary = index_deb(args, signer.clone(), out)?;
        skipped += summary["skipped"].as_array().map_or(0, Vec::len);
        summaries.push(summary);
    }
    for summary in &summaries {
        out.json(summary);
    }
    Ok(if skipped == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::PARTIAL)
    })
}

fn index_rpm_md(
    args: &IndexArgs,
    signer: Option<Arc<Signer>>,
    out: &Output,
) -> Result<serde_json::Value> {
    let dir = &args.dir;
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
        database: args.database,
        read: RpmReadOptions {
            changelog_limit: args.changelog_limit,
        },
        signer: signer.clone(),
    };
    let bar = out.progress();
    let report = index_rpm(dir, &options, &bar).with_context(|| {
        format!(
            "indexing RPMs under `{}` failed; its metadata is unchanged",
            dir.display()
        )
    })?;
    let seconds = started.elapsed().as_secs_f64();
    report_skipped(out, &report.skipped);
    out.status(&format!(
        "indexed {} RPMs ({}) into {} in {seconds:.2} s ({} read, {} reused)",
        report.packages,
        human_bytes(report.bytes),
        dir.join("repodata").display(),
        report.packages - report.reused,
        report.reused,
    ));
    Ok(json!({
        "type": "summary",
        "format": "rpm-md",
        "directory": dir,
        "packages": report.packages,
        "bytes": report.bytes,
        "read": report.packages - report.reused,
        "reused": report.reused,
        "skipped": skipped_json(&report.skipped),
        "signed_by": signer.as_ref().map(|s| s.fingerprint()),
        "seconds": seconds,
    }))
}

fn index_deb(
    args: &IndexArgs,
    signer: Option<Arc<Signer>>,
    out: &Output,
) -> Result<serde_json::Value> {
    let dir = &args.dir;
    let started = Instant::now();
    let layout = match &args.suite {
        Some(suite) => AptLayout::Dists {
            suite: suite.clone(),
            component: args.component.clone(),
        },
        None => AptLayout::Flat,
    };
    let target = match &layout {
        AptLayout::Flat => dir.join("Packages"),
        AptLayout::Dists { suite, .. } => dir.join("dists").join(suite),
    };
    let options = AptIndexOptions {
        layout,
        override_file: args.override_file.clone(),
        update: args.update,
        skip_bad: args.skip_bad,
        wait_for_lock: args.wait,
        origin: args.origin.clone(),
        label: args.label.clone(),
        signer: signer.clone(),
    };
    let bar = out.progress();
    let report = index_apt(dir, &options, &bar).with_context(|| {
        format!(
            "indexing .debs under `{}` failed; its metadata is unchanged",
            dir.display()
        )
    })?;
    let seconds = started.elapsed().as_secs_f64();
    report_skipped(out, &report.skipped);
    out.status(&format!(
        "indexed {} .debs ({}, {}) into {} in {seconds:.2} s ({} read, {} reused; {} of {} \
         compressed chunks reused)",
        report.packages,
        human_bytes(report.bytes),
        report.architectures.join(" "),
        target.display(),
        report.packages - report.reused,
        report.reused,
        report.chunks_reused,
        report.chunks,
    ));
    Ok(json!({
        "type": "summary",
        "format": "apt",
        "directory": dir,
        "packages": report.packages,
        "bytes": report.bytes,
        "architectures": report.architectures,
        "read": report.packages - report.reused,
        "reused": report.reused,
        "chunks": report.chunks,
        "chunks_reused": report.chunks_reused,
        "skipped": skipped_json(&report.skipped),
        "signed_by": signer.as_ref().map(|s| s.fingerprint()),
        "seconds": seconds,
    }))
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
