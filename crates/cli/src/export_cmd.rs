//! `vserver G export FILE.tar[.zst]`: the guest and its package database as a template, which
//! `vserver NEW build -m template -- --source FILE` builds a guest from.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::output::{Output, Verbosity, human_bytes};

/// `export`'s options.
#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// The archive to write: FILE.tar, or FILE.tar.zst (zstd).
    file: PathBuf,
    /// One JSON document on stdout.
    #[arg(long)]
    json: bool,
    /// Only errors.
    #[arg(short, long)]
    quiet: bool,
}

/// `vserver G export …`.
pub(crate) fn run(roots: &vserver_guest::HostRoots, guest: &str, parsed: &ExportArgs) -> ExitCode {
    let out = Output::new(
        "vserver",
        match (parsed.json, parsed.quiet) {
            (true, _) => Verbosity::Json,
            (_, true) => Verbosity::Quiet,
            _ => Verbosity::Normal,
        },
    );
    match vserver_guest::export(roots, guest, &parsed.file) {
        Ok(report) => {
            out.json(&serde_json::json!({
                "guest": guest,
                "archive": report.archive,
                "files": report.files,
                "bytes": report.bytes,
                "skipped": report.skipped,
                "archive_bytes": report.archive_bytes,
            }));
            out.status(&format!(
                "{guest}: exported {} files ({}) to {} ({})",
                report.files,
                human_bytes(report.bytes),
                report.archive.display(),
                human_bytes(report.archive_bytes)
            ));
            ExitCode::SUCCESS
        }
        Err(error) => crate::vdistro::report(&out, "vserver", error),
    }
}
