//! `vserver GUEST COMMAND …`: the guest command. Implemented so far: `build`.
//!
//! `vserver [ROOTS] G build [-m METHOD] [--hostname H] [--force] [--keep] [-v] -- [-d DIST]
//! [--releasever N] [FILE…|--empty] [-- PKG…]`: the first `--` ends vserver's own options, as in
//! util-vserver; what follows are the method's options, and after a second `--` the extra
//! packages.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vserver_guest::{BuildEvent, BuildMethod, BuildRequest};

use crate::exit;
use crate::output::{Output, Verbosity};
use crate::vdistro::{RootArgs, report};

/// Manage a guest.
#[derive(Debug, Parser)]
#[command(
    name = "vserver",
    version,
    about,
    override_usage = "vserver [ROOTS] GUEST build [OPTIONS] -- [-d DIST] [--releasever N] [FILE…|--empty] [-- PKG…]"
)]
struct Cli {
    #[command(flatten)]
    roots: RootArgs,
    /// The guest.
    guest: String,
    /// The command (`build`).
    command: String,
    /// The command's arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<OsString>,
}

/// `build`'s own options (before the first `--`).
#[derive(Debug, Parser)]
#[command(name = "vserver GUEST build", no_binary_name = true)]
struct BuildArgs {
    /// Build method: skeleton, yum, dnf or rpm.
    #[arg(short = 'm', long, default_value = "skeleton")]
    method: String,
    /// The guest's host name (default: its name).
    #[arg(long)]
    hostname: Option<String>,
    /// Move an existing guest aside first (restored if the build fails).
    #[arg(long)]
    force: bool,
    /// Keep what a failed build made.
    #[arg(long)]
    keep: bool,
    /// Show the package manager's output.
    #[arg(short, long)]
    verbose: bool,
    /// Only errors.
    #[arg(short, long)]
    quiet: bool,
}

/// The method's options (between the first and the second `--`).
#[derive(Debug, Parser)]
#[command(name = "vserver GUEST build … --", no_binary_name = true)]
struct MethodArgs {
    /// The distribution.
    #[arg(short = 'd', long = "distribution")]
    distribution: Option<String>,
    /// Override the distribution's release version.
    #[arg(long)]
    releasever: Option<String>,
    /// `-m apt|debootstrap`: essential, minbase (default) or buildd.
    #[arg(long)]
    variant: Option<String>,
    /// `-m rpm`: install no package files (database only).
    #[arg(long)]
    empty: bool,
    /// `-m rpm`: package files or manifests (one package file per line).
    files: Vec<PathBuf>,
}

/// Runs `vserver` with `args` (argv, including the program name).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { exit::USAGE } else { 0 });
        }
    };
    match cli.command.as_str() {
        "build" => build(&cli),
        other => {
            eprintln!(
                "vserver: error: unknown command `{other}` for guest `{}`",
                cli.guest
            );
            eprintln!("vserver: hint: available: build");
            ExitCode::from(exit::USAGE)
        }
    }
}

fn split_at_dashes(args: &[OsString]) -> (&[OsString], &[OsString]) {
    match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[]),
    }
}

fn build(cli: &Cli) -> ExitCode {
    let (own, rest) = split_at_dashes(&cli.rest);
    let (method_args, packages) = split_at_dashes(rest);
    let parsed = BuildArgs::try_parse_from(own)
        .and_then(|b| MethodArgs::try_parse_from(method_args).map(|m| (b, m)));
    let (build_args, method) = match parsed {
        Ok(parsed) => parsed,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { exit::USAGE } else { 0 });
        }
    };
    let out = Output::new(
        "vserver",
        if build_args.quiet {
            Verbosity::Quiet
        } else {
            Verbosity::Normal
        },
    );
    let build_method: BuildMethod = match build_args.method.parse() {
        Ok(BuildMethod::Apt(default)) => match method.variant.as_deref().map(str::parse) {
            None => BuildMethod::Apt(default),
            Some(Ok(variant)) => BuildMethod::Apt(variant),
            Some(Err(message)) => {
                eprintln!("vserver: error: {message}");
                return ExitCode::from(exit::USAGE);
            }
        },
        Ok(m) => m,
        Err(message) => {
            eprintln!("vserver: error: {message}");
            return ExitCode::from(exit::USAGE);
        }
    };
    if build_method == BuildMethod::Rpm && method.files.is_empty() && !method.empty {
        eprintln!("vserver: error: `-m rpm` needs package files or manifests, or --empty");
        return ExitCode::from(exit::USAGE);
    }
    let request = BuildRequest {
        guest: cli.guest.clone(),
        method: build_method,
        distribution: method.distribution.clone(),
        releasever: method.releasever.clone(),
        hostname: build_args.hostname.clone(),
        force: build_args.force,
        keep: build_args.keep,
        packages: packages
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
        rpm_files: method.files.clone(),
        verbose: build_args.verbose,
    };
    let roots = cli.roots.roots();
    let started = std::time::Instant::now();
    let result = vserver_guest::build(&roots, &request, &mut |event| match event {
        BuildEvent::Phase(phase) => out.status(&format!("{}: {phase}", cli.guest)),
        BuildEvent::Warning(warning) => out.warn(&format!("{}: {warning}", cli.guest)),
    });
    match result {
        Ok(config) => {
            out.status(&format!(
                "built guest `{}` in {} ({:.1} s)",
                config.name,
                config.root.display(),
                started.elapsed().as_secs_f64()
            ));
            ExitCode::SUCCESS
        }
        Err(error) => report(&out, "vserver", error),
    }
}
