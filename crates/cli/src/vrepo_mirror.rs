//! `vrepo mirror` and `vrepo serve`: argument parsing and output around
//! [`vserver_repository::mirror`] and [`vserver_repository::serve`].

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use vserver_repository::closure::{SubsetOptions, missing_line, read_package_list};
use vserver_repository::mirror::{
    FetchOptions, MirrorError, MirrorFormat, MirrorOptions, SignaturePolicy, mirror,
};
use vserver_repository::progress::Progress;
use vserver_repository::serve::{ServeOptions, Server};

use crate::exit;
use crate::output::{Output, Verbosity, human_bytes};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum MirrorFormatArg {
    /// rpm-md when the source has `repodata/repomd.xml`, otherwise apt (needs --suite).
    Auto,
    /// rpm-md.
    Rpm,
    /// apt (`dists/SUITE/…`).
    Deb,
}

/// Arguments of `vrepo mirror`.
#[derive(Debug, clap::Args)]
pub(crate) struct MirrorArgs {
    /// The repository to copy: an http(s):// URL, a file:// URL or a local directory.
    source: String,
    /// Where the mirror lives (created if missing).
    dest: PathBuf,
    /// The kind of repository.
    #[arg(long, value_enum, default_value = "auto")]
    format: MirrorFormatArg,
    /// apt suite to mirror (`dists/SUITE`); repeat or separate with commas for several.
    #[arg(long, value_delimiter = ',')]
    suite: Vec<String>,
    /// apt component (default: all the Release lists); repeatable.
    #[arg(long, value_delimiter = ',')]
    component: Vec<String>,
    /// apt architecture (default: all the Release lists; `all` is always included); repeatable.
    #[arg(long = "arch", value_delimiter = ',')]
    arch: Vec<String>,
    /// Keep packages the source no longer lists.
    #[arg(long)]
    keep_removed: bool,
    /// Parallel downloads.
    #[arg(long, short, default_value_t = 4)]
    jobs: usize,
    /// Retries of a failed transfer (with exponential backoff).
    #[arg(long, default_value_t = 3)]
    retries: u32,
    /// Bandwidth limit over all downloads, bytes per second (suffixes k, M, G: powers of 1024).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    limit_rate: Option<u64>,
    /// Connect and read time-out, in seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Verify InRelease/Release.gpg or repomd.xml.asc against this OpenPGP keyring (with gpgv).
    #[arg(long, value_name = "FILE", conflicts_with = "no_verify_signature")]
    keyring: Option<PathBuf>,
    /// Do not verify the metadata signature (the packages are still checked against it).
    #[arg(long)]
    no_verify_signature: bool,
    /// Wait for another vrepo working on DEST instead of failing.
    #[arg(long)]
    wait: bool,
    /// Mirror only these packages and their dependency closure, re-indexed: comma-separated
    /// names (rpm: also `name.arch`, provides and paths; deb: also `name:arch`), or @FILE with
    /// one name per line; repeatable.
    #[arg(long, value_name = "LIST")]
    packages: Vec<String>,
    /// Where `@dist:NAME` finds registered distributions (default: $VSERVER_CONFDIR, or
    /// /etc/vservers).
    #[arg(long, value_name = "DIR", requires = "packages")]
    confdir: Option<PathBuf>,
    /// With --packages: also follow Recommends (rpm weak dependencies and Debian Recommends).
    #[arg(long, requires = "packages")]
    with_recommends: bool,
    /// With --packages: mirror what resolves and warn about names and dependencies that do
    /// not, instead of failing.
    #[arg(long, requires = "packages")]
    skip_missing: bool,
    #[command(flatten)]
    sign: crate::vrepo::sign_cmd::SignArgs,
    /// Print a JSON summary on stdout instead of status lines.
    #[arg(long)]
    json: bool,
    /// Print errors only.
    #[arg(long, short)]
    quiet: bool,
}

/// Arguments of `vrepo serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// The directory to serve.
    dir: PathBuf,
    /// Address and port to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Connections served at the same time.
    #[arg(long, default_value_t = 16)]
    workers: usize,
    /// Answer 403 for directories instead of listing them.
    #[arg(long)]
    no_listing: bool,
    /// Do not log requests.
    #[arg(long, short)]
    quiet: bool,
}

fn parse_rate(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, multiplier) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&text[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&text[..i], 1 << 30),
        _ => (text, 1),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a rate such as 500k or 10M"))?;
    if value.is_nan() || value <= 0.0 || value.is_infinite() {
        return Err("the rate must be positive".into());
    }
    Ok((value * multiplier as f64) as u64)
}

/// Runs `vrepo mirror`.
pub(crate) fn run_mirror(args: &MirrorArgs) -> ExitCode {
    let verbosity = if args.json {
        Verbosity::Json
    } else if args.quiet {
        Verbosity::Quiet
    } else {
        Verbosity::Normal
    };
    let out = Output::new("vrepo", verbosity);
    match mirror_command(args, &out) {
        Ok(code) => code,
        Err(err) => {
            out.error(&err);
            if args.json {
                out.json(&json!({
                    "type": "summary",
                    "result": "failed",
                    "error": err.chain().map(ToString::to_string).collect::<Vec<_>>().join(": "),
                }));
            }
            ExitCode::from(exit::FAILURE)
        }
    }
}

fn mirror_command(args: &MirrorArgs, out: &Output) -> Result<ExitCode> {
    let signature = match (&args.keyring, args.no_verify_signature) {
        (Some(keyring), _) => {
            if !keyring.is_file() {
                bail!("keyring `{}` does not exist", keyring.display());
            }
            SignaturePolicy::Keyring(keyring.clone())
        }
        (None, true) => {
            // Loud on purpose: an unverified mirror trusts whoever controls the network path.
            out.warn(
                "SIGNATURE VERIFICATION IS OFF (--no-verify-signature): the metadata is not \
                 authenticated; packages are only checked against whatever metadata the source sent",
            );
            SignaturePolicy::Unverified
        }
        (None, false) => bail!(
            "say how to check the source's metadata signature: --keyring FILE, or \
             --no-verify-signature to mirror it unverified"
        ),
    };
    let subset = if args.packages.is_empty() {
        None
    } else {
        let packages =
            expand_distributions(read_package_list(&args.packages)?, args.confdir.clone())?;
        if packages.is_empty() {
            bail!("--packages names no package");
        }
        Some(SubsetOptions {
            packages,
            with_recommends: args.with_recommends,
            skip_missing: args.skip_missing,
        })
    };
    let options = MirrorOptions {
        format: match args.format {
            MirrorFormatArg::Auto => MirrorFormat::Auto,
            MirrorFormatArg::Rpm => MirrorFormat::RpmMd,
            MirrorFormatArg::Deb => MirrorFormat::Apt,
        },
        suites: args.suite.clone(),
        components: args.component.clone(),
        architectures: args.arch.clone(),
        keep_removed: args.keep_removed,
        jobs: args.jobs.max(1),
        fetch: FetchOptions {
            retries: args.retries,
            rate_limit: args.limit_rate,
            timeout: Duration::from_secs(args.timeout.max(1)),
            ..FetchOptions::default()
        },
        signature,
        wait_for_lock: args.wait,
        subset,
        signer: args.sign.signer()?,
    };
    let started = Instant::now();
    let bar = ByteBar::new(!args.json && !args.quiet && std::io::stderr().is_terminal());
    let failed = || {
        format!(
            "mirroring `{}` into `{}` failed",
            args.source,
            args.dest.display()
        )
    };
    let report = match mirror(&args.source, &args.dest, &options, &bar) {
        Ok(report) => report,
        // The one error the user fixes with a flag: say which.
        Err(error @ MirrorError::Unresolved { .. }) => {
            bar.finish();
            bail!("{}: {error} (--skip-missing mirrors the rest)", failed())
        }
        Err(error) => return Err(anyhow::Error::new(error).context(failed())),
    };
    bar.finish();
    if !report.unresolved.is_empty() {
        out.warn(&format!(
            "mirrored without {} unresolved names or dependencies (--skip-missing): {}",
            report.unresolved.len(),
            missing_line(&report.unresolved)
        ));
    }
    let seconds = started.elapsed().as_secs_f64();
    let result = if report.changed() {
        "updated"
    } else {
        "up-to-date"
    };
    out.status(&format!(
        "{} mirror {} of {} ({} packages, {}): {} downloaded ({}{}), {} already present, {} removed, {} requests, {seconds:.2} s",
        report.format,
        args.dest.display(),
        args.source,
        report.packages,
        human_bytes(report.bytes),
        report.downloaded,
        human_bytes(report.downloaded_bytes),
        if report.resumed > 0 {
            format!(", {} resumed", report.resumed)
        } else {
            String::new()
        },
        report.present,
        report.removed,
        report.requests,
    ));
    if !report.changed() {
        out.status("already up to date");
    }
    out.json(&json!({
        "type": "summary",
        "result": result,
        "format": report.format,
        "source": args.source,
        "destination": args.dest,
        "packages": report.packages,
        "bytes": report.bytes,
        "present": report.present,
        "downloaded": report.downloaded,
        "downloaded_bytes": report.downloaded_bytes,
        "resumed": report.resumed,
        "removed": report.removed,
        "metadata_changed": report.metadata_changed,
        "requests": report.requests,
        "unresolved": report.unresolved.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "signed_by": options.signer.as_ref().map(|s| s.fingerprint()),
        "seconds": seconds,
    }));
    Ok(if report.changed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::UP_TO_DATE)
    })
}

/// Replaces each `@dist:NAME` by the package lists of distribution NAME (built-in or
/// registered), optional entries marked `?`: the set a guest of it is built from.
fn expand_distributions(tokens: Vec<String>, confdir: Option<PathBuf>) -> Result<Vec<String>> {
    if !tokens.iter().any(|t| t.starts_with("@dist:")) {
        return Ok(tokens);
    }
    let roots = vserver_guest::HostRoots::resolve(confdir, None, None);
    let store = vserver_guest::DistributionStore::new(roots.distributions_dir());
    let mut out = Vec::new();
    for token in tokens {
        let Some(name) = token.strip_prefix("@dist:") else {
            out.push(token);
            continue;
        };
        let distribution = store
            .get(name)
            .with_context(|| format!("cannot expand `{token}` in --packages"))?;
        for (_, entries) in &distribution.package_lists {
            for entry in entries {
                out.push(if entry.can_fail {
                    format!("?{}", entry.name)
                } else {
                    entry.name.clone()
                });
            }
        }
    }
    Ok(out)
}

/// A byte-counting progress bar on a terminal (the download phase), nothing elsewhere.
struct ByteBar {
    bar: Option<ProgressBar>,
}

impl ByteBar {
    fn new(show: bool) -> ByteBar {
        ByteBar {
            bar: show.then(|| {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template(
                        "vrepo: {msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.enable_steady_tick(Duration::from_millis(200));
                bar
            }),
        }
    }
}

impl Progress for ByteBar {
    fn start(&self, phase: &str, total: u64) {
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

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Runs `vrepo serve` until SIGINT or SIGTERM.
pub(crate) fn run_serve(args: &ServeArgs) -> ExitCode {
    let out = Output::new(
        "vrepo",
        if args.quiet {
            Verbosity::Quiet
        } else {
            Verbosity::Normal
        },
    );
    match serve_command(args, &out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            out.error(&err);
            ExitCode::from(exit::FAILURE)
        }
    }
}

fn serve_command(args: &ServeArgs, out: &Output) -> Result<()> {
    if !args.dir.is_dir() {
        bail!("`{}` is not a directory", args.dir.display());
    }
    let quiet = args.quiet;
    let options = ServeOptions {
        listen: args.listen,
        workers: args.workers.max(1),
        listings: !args.no_listing,
        logger: (!quiet).then(|| {
            Arc::new(|record: &vserver_repository::serve::RequestLog| {
                eprintln!("vrepo: {record}");
            }) as vserver_repository::serve::RequestLogger
        }),
        ..ServeOptions::default()
    };
    let server = Server::bind(&args.dir, options)?;
    let handle = server.handle();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("cannot install the SIGINT/SIGTERM handlers")?;
    let signal_handle = signals.handle();
    let stopper = handle.clone();
    let watcher = std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            stopper.shutdown();
        }
    });
    // Always printed (even with --quiet): with `--listen …:0` it is the only way to learn the port.
    eprintln!(
        "vrepo: serving {} on http://{}/ (Ctrl-C to stop)",
        args.dir.display(),
        server.local_addr()
    );
    let result = server.run();
    signal_handle.close();
    let _ = watcher.join();
    out.status(&format!("stopped after {} requests", handle.requests()));
    result.context("the server stopped")
}
