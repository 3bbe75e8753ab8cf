//! `vserver G verify` and `vserver --all verify`: the tamper report, as a table for people,
//! `--json` for programs, or `--format prometheus` for node_exporter's textfile collector; and
//! `vserver --all unify`, which shares identical packaged files' extents across guests.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Parser;
use vserver_guest::{FileClass, VerifyReport};

use crate::exit;
use crate::output::{Output, Verbosity};
use crate::vdistro::RootArgs;

/// `verify`'s options.
#[derive(Debug, Parser)]
#[command(
    name = "vserver GUEST verify",
    about = "Check every packaged file of the guest against the trusted database",
    after_help = "Examples:\n  vserver web1 verify\n  vserver --all verify --json\n  vserver --all verify --format prometheus > /var/lib/prometheus/node-exporter/vserver.prom\n\nExit status: 0 when at most configuration files changed, 5 when anything else changed or a setuid/setgid file no package owns appeared, 1 on errors.",
    no_binary_name = true
)]
pub(crate) struct VerifyArgs {
    /// One JSON document on stdout: an array of per-guest reports.
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// `table` (default) or `prometheus` (node_exporter's textfile format).
    #[arg(long, value_parser = ["table", "prometheus"])]
    format: Option<String>,
}

/// `vserver --all verify …`'s command line.
#[derive(Debug, Parser)]
// `--help` after the command is the command's.
#[command(
    name = "vserver --all",
    disable_help_flag = true,
    disable_version_flag = true
)]
struct AllArgs {
    #[command(flatten)]
    roots: RootArgs,
    /// Every configured guest.
    #[arg(long)]
    all: bool,
    /// The command (`verify`).
    #[arg(allow_hyphen_values = true)]
    command: String,
    /// The command's options.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<OsString>,
}

/// `vserver --all …`'s definition (for `vserver --help`, the man pages and completions).
pub(crate) fn all_command() -> clap::Command {
    use clap::CommandFactory;
    AllArgs::command()
}

/// `vserver --all unify` as a command of the `vserver` tree.
pub(crate) fn unify_command() -> clap::Command {
    use clap::Args;
    UnifyArgs::augment_args(clap::Command::new("unify"))
        .about("With --all: share the extents of identical packaged files across all guests (xfs, btrfs)")
        .version(env!("CARGO_PKG_VERSION"))
}

/// `vserver --all COMMAND …`: only `verify` acts on every guest.
pub fn all(args: Vec<OsString>) -> ExitCode {
    let parsed = match AllArgs::try_parse_from(args) {
        Ok(parsed) => parsed,
        Err(err) => return exit::command_line(&err),
    };
    if parsed.command != "verify" && parsed.command != "unify" {
        eprintln!(
            "vserver: error: `--all` works with `verify` and `unify`, not `{}`",
            parsed.command
        );
        return ExitCode::from(exit::USAGE);
    }
    let roots = parsed.roots.roots();
    if let Err(code) = crate::output::recover_first("vserver", &roots, None) {
        return code;
    }
    match vserver_guest::list_guests(&roots) {
        Ok(names) if parsed.command == "unify" => unify(&roots, &names, &parsed.rest),
        Ok(names) => run(&roots, &names, &parsed.rest),
        Err(error) => {
            crate::vdistro::report(&Output::new("vserver", Verbosity::Normal), "vserver", error)
        }
    }
}

/// `unify`'s options.
#[derive(Debug, Parser)]
#[command(
    name = "vserver --all unify",
    about = "Share the extents of identical packaged files across all guests (xfs, btrfs)",
    after_help = "Examples:\n  vserver --all unify --dry-run\n  vserver --all unify --min-size 128K\n  vserver --all unify --json",
    no_binary_name = true
)]
struct UnifyArgs {
    /// Only report what would be shared.
    #[arg(long)]
    dry_run: bool,
    /// Leave out files smaller than SIZE (bytes, or with K, M or G). Each file costs the file
    /// system one remapping, whatever its size: the few large files hold most of the saving and
    /// take a fraction of the time; a later run without it shares the rest.
    #[arg(long, value_name = "SIZE", value_parser = crate::vserver_cmd::size_value)]
    min_size: Option<u64>,
    /// One JSON document on stdout.
    #[arg(long)]
    json: bool,
}

fn unify(roots: &vserver_guest::HostRoots, names: &[String], args: &[OsString]) -> ExitCode {
    let parsed = match UnifyArgs::try_parse_from(args) {
        Ok(parsed) => parsed,
        Err(err) => return exit::command_line(&err),
    };
    let out = Output::new(
        "vserver",
        if parsed.json {
            Verbosity::Json
        } else {
            Verbosity::Normal
        },
    );
    let options = vserver_guest::UnifyOptions {
        dry_run: parsed.dry_run,
        min_size: parsed.min_size.unwrap_or(0),
    };
    match vserver_guest::unify(roots, names, &options) {
        Ok(report) => {
            out.json(&serde_json::to_value(&report).unwrap_or(serde_json::Value::Null));
            for skipped in &report.skipped_guests {
                out.status(&format!("skipped {skipped}"));
            }
            let mib = |bytes: u64| bytes as f64 / 1048576.0;
            out.status(&format!(
                "{} guests, {} unchanged packaged files in {} groups of identical files; shared {} files ({:.1} MiB), {} already shared, {} changed since the database said{}",
                report.guests,
                report.candidates,
                report.groups,
                report.shared_files,
                mib(report.shared_bytes),
                report.known_files,
                report.differed,
                if report.possible_bytes > 0 {
                    format!("; {:.1} MiB could be saved", mib(report.possible_bytes))
                } else {
                    String::new()
                }
            ));
            if report.below_min_size > 0 {
                out.status(&format!(
                    "{} files smaller than --min-size left out",
                    report.below_min_size
                ));
            }
            if let Some(note) = &report.note {
                out.warn(note);
            }
            ExitCode::SUCCESS
        }
        Err(error) => crate::vdistro::report(&out, "vserver", error),
    }
}

/// `vserver G verify …`.
pub fn one(roots: &vserver_guest::HostRoots, guest: &str, args: &[OsString]) -> ExitCode {
    if let Err(error) = vserver_guest::load_guest(roots, guest) {
        return crate::vdistro::report(
            &Output::new("vserver", Verbosity::Normal),
            "vserver",
            error,
        );
    }
    run(roots, &[guest.to_owned()], args)
}

fn run(roots: &vserver_guest::HostRoots, names: &[String], args: &[OsString]) -> ExitCode {
    let parsed = match VerifyArgs::try_parse_from(args) {
        Ok(parsed) => parsed,
        Err(err) => return exit::command_line(&err),
    };
    let out = Output::new(
        "vserver",
        if parsed.json {
            Verbosity::Json
        } else {
            Verbosity::Normal
        },
    );
    let results = vserver_guest::verify(roots, names);
    let mut reports = Vec::new();
    let mut failed = false;
    for (name, result) in results {
        match result {
            Ok(report) => reports.push(report),
            Err(error) => {
                failed = true;
                out.error(
                    &anyhow::Error::new(error).context(format!("cannot verify guest `{name}`")),
                );
            }
        }
    }
    if parsed.json {
        out.json(&serde_json::to_value(&reports).unwrap_or(serde_json::Value::Null));
    } else if parsed.format.as_deref() == Some("prometheus") {
        print!("{}", prometheus(&reports));
    } else {
        print!("{}", table(&reports));
    }
    if failed {
        ExitCode::from(exit::FAILURE)
    } else if reports.iter().any(VerifyReport::tampered) {
        ExitCode::from(exit::TAMPERED)
    } else {
        ExitCode::SUCCESS
    }
}

/// The table for people, then one line per finding.
fn table(reports: &[VerifyReport]) -> String {
    let mut text = format!(
        "{:<20} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6}  {}\n",
        "GUEST", "FILES", "CONFIG", "BINARY", "LIBRARY", "OTHER", "MISSING", "SETID", "STATE"
    );
    for report in reports {
        if !report.verifiable {
            let _ = writeln!(
                text,
                "{:<20} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6}  not verifiable: {}",
                report.guest,
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                report.note.as_deref().unwrap_or("")
            );
            continue;
        }
        let state = if report.tampered() {
            "CHANGED"
        } else if report.findings.is_empty() {
            "clean"
        } else {
            "config changed"
        };
        let _ = writeln!(
            text,
            "{:<20} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6}  {state}",
            report.guest,
            report.files,
            report.count(FileClass::Config),
            report.count(FileClass::Binary),
            report.count(FileClass::Library),
            report.count(FileClass::Other),
            report.missing(),
            report.unexpected_setid.len(),
        );
    }
    for report in reports {
        for finding in &report.findings {
            let class = serde_json::to_value(finding.class)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let _ = writeln!(
                text,
                "{}: {:<9} {:<7} {} ({})",
                report.guest, finding.differs, class, finding.path, finding.package
            );
        }
        for path in &report.unexpected_setid {
            let _ = writeln!(text, "{}: setid    unowned {path}", report.guest);
        }
        if let Some(note) = report.note.as_ref().filter(|_| report.verifiable) {
            let _ = writeln!(text, "{}: note: {note}", report.guest);
        }
    }
    text
}

/// node_exporter's textfile-collector format.
fn prometheus(reports: &[VerifyReport]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut text = String::new();
    let mut metric = |name: &str, help: &str, samples: Vec<(String, String)>| {
        let _ = writeln!(text, "# HELP {name} {help}");
        let _ = writeln!(text, "# TYPE {name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(text, "{name}{{{labels}}} {value}");
        }
    };
    let guest = |r: &VerifyReport| format!("guest=\"{}\"", r.guest.escape_default());
    metric(
        "vserver_verify_verifiable",
        "1 when the host holds the guest's package database and could verify it.",
        reports
            .iter()
            .map(|r| (guest(r), u8::from(r.verifiable).to_string()))
            .collect(),
    );
    let verifiable: Vec<&VerifyReport> = reports.iter().filter(|r| r.verifiable).collect();
    metric(
        "vserver_verify_changed_files",
        "Packaged files that differ from the trusted database, by class.",
        verifiable
            .iter()
            .flat_map(|r| {
                [
                    ("config", FileClass::Config),
                    ("binary", FileClass::Binary),
                    ("library", FileClass::Library),
                    ("other", FileClass::Other),
                ]
                .map(|(label, class)| {
                    (
                        format!("{},class=\"{label}\"", guest(r)),
                        r.count(class).to_string(),
                    )
                })
            })
            .collect(),
    );
    metric(
        "vserver_verify_missing_files",
        "Packaged files that are gone.",
        verifiable
            .iter()
            .map(|r| (guest(r), r.missing().to_string()))
            .collect(),
    );
    metric(
        "vserver_verify_unowned_setid_files",
        "Setuid or setgid files no package owns.",
        verifiable
            .iter()
            .map(|r| (guest(r), r.unexpected_setid.len().to_string()))
            .collect(),
    );
    metric(
        "vserver_verify_files",
        "Packaged files checked.",
        verifiable
            .iter()
            .map(|r| (guest(r), r.files.to_string()))
            .collect(),
    );
    metric(
        "vserver_verify_last_run_timestamp_seconds",
        "When the guest was last verified.",
        reports
            .iter()
            .map(|r| (guest(r), now.to_string()))
            .collect(),
    );
    text
}
