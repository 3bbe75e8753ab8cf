//! `vdistro`: list, show and register distributions (`/etc/vservers/.distributions/D/`).
//!
//! `--json` prints one JSON document on stdout: `list` an array of objects (name, family,
//! releasever, arch, source, description), `show` one object with the repositories and package
//! lists as well.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::json;
use vserver_guest::{
    Distribution, DistributionSource, DistributionStore, HostRoots, NewDistribution,
};
use vserver_pkgmgmt::Family;

use crate::exit;
use crate::output::{Output, Verbosity};

/// The host state roots, shared by vdistro, vserver, vrpm and vyum.
#[derive(Debug, Clone, Args)]
pub(crate) struct RootArgs {
    /// Configuration directory [env: VSERVER_CONFDIR] [default: /etc/vservers].
    #[arg(long, global = true, value_name = "DIR")]
    pub confdir: Option<PathBuf>,
    /// Guest roots [env: VSERVER_ROOTDIR] [default: /vservers].
    #[arg(long, global = true, value_name = "DIR")]
    pub rootdir: Option<PathBuf>,
    /// External package state [env: VSERVER_PKGDIR] [default: /vservers/.pkg].
    #[arg(long, global = true, value_name = "DIR")]
    pub pkgdir: Option<PathBuf>,
}

impl RootArgs {
    pub(crate) fn roots(&self) -> HostRoots {
        HostRoots::resolve(
            self.confdir.clone(),
            self.rootdir.clone(),
            self.pkgdir.clone(),
        )
    }
}

/// Prints a guest-crate error (one line) and its hint, and returns the failure code.
pub(crate) fn report(out: &Output, applet: &str, error: vserver_guest::Error) -> ExitCode {
    let hint = error.hint();
    out.error(&anyhow::Error::new(error));
    if let Some(hint) = hint {
        eprintln!("{applet}: hint: {hint}");
    }
    ExitCode::from(exit::FAILURE)
}

/// Distributions guests are built from.
#[derive(Debug, Parser)]
#[command(
    name = "vdistro",
    version,
    about = "Distributions guests are built from: list the built-in and registered ones, show one, register one",
    propagate_version = true,
    arg_required_else_help = true,
    disable_help_subcommand = true,
    after_help = "Examples:\n  vdistro list\n  vdistro show debian-12\n  vdistro add site-9 --releasever 9 --repo base=http://repo.example.org/el9/"
)]
struct Cli {
    #[command(flatten)]
    roots: RootArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List built-in and registered distributions.
    #[command(after_help = "Examples:\n  vdistro list\n  vdistro list --json")]
    List {
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show one distribution: repositories, package lists, macros, keys.
    #[command(after_help = "Examples:\n  vdistro show fedora-41\n  vdistro show debian-12 --json")]
    Show {
        /// The distribution.
        name: String,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Register a distribution (writes `CONFDIR/.distributions/NAME/`).
    #[command(
        after_help = "Examples:\n  vdistro add site-9 --releasever 9 --repo base=http://repo.example.org/el9/ --pkgs \"bash coreutils\"\n  vdistro add local-12 --family deb --releasever 12 --apt-source 'http://repo.example.org/debian bookworm main' --pubkey /etc/apt/keyrings/local.gpg"
    )]
    Add(Box<AddArgs>),
}

#[derive(Debug, Args)]
struct AddArgs {
    /// The distribution's name.
    name: String,
    /// Release version (`$releasever` in repository files).
    #[arg(long)]
    releasever: String,
    /// The package family: rpm (yum/dnf repositories) or deb (apt sources).
    #[arg(long, default_value = "rpm", value_parser = ["rpm", "deb"])]
    family: String,
    /// rpm: a repository, `ID=URL` (repeatable); `$releasever` and `$basearch` are expanded by
    /// dnf.
    #[arg(
        long = "repo",
        value_name = "ID=URL",
        required_unless_present = "apt_sources"
    )]
    repos: Vec<String>,
    /// deb: an apt source, `'URL SUITE [COMPONENT...]'` (repeatable; components default to
    /// main). Release files are verified with the --pubkey keyrings.
    #[arg(long = "apt-source", value_name = "SOURCE")]
    apt_sources: Vec<String>,
    /// deb: the sources are unsigned and trusted explicitly (`[trusted=yes]`).
    #[arg(long)]
    trusted: bool,
    /// Architecture (default: the host's): rpm, dnf's `$basearch` (x86_64, aarch64, i386,
    /// armhfp, ppc64le, s390x, riscv64); deb, dpkg's (amd64, arm64, i386, armhf, armel,
    /// ppc64el, s390x, riscv64, mips64el).
    #[arg(long, default_value = "")]
    arch: String,
    /// One line of description.
    #[arg(long, default_value = "")]
    description: String,
    /// Check package signatures (import keys with --pubkey).
    #[arg(long)]
    gpgcheck: bool,
    /// A package list installed in order (repeatable, space-separated; `?NAME` may fail).
    /// Package names follow rpm's or dpkg's syntax.
    #[arg(long = "pkgs", value_name = "NAMES")]
    package_lists: Vec<String>,
    /// A file of extra rpm macros: `%NAME BODY` definitions (no `%(…)`, lua, expand, load,
    /// define or global; no `%_dbpath`, `%_netsharedpath`, `%__plugindir`, `%__transaction_*`).
    #[arg(long)]
    macros: Option<PathBuf>,
    /// rpm: a public key file imported into every guest's database; deb: a keyring apt verifies
    /// Release files with (repeatable).
    #[arg(long = "pubkey")]
    pubkeys: Vec<PathBuf>,
    /// Replace an existing registration.
    #[arg(long)]
    force: bool,
}

/// `vdistro`'s definition (for the man pages and completions).
pub(crate) fn command() -> clap::Command {
    use clap::CommandFactory;
    Cli::command()
}

/// Runs `vdistro` with `args` (argv, including the program name).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => return exit::command_line(&err),
    };
    let json = matches!(
        cli.command,
        Command::List { json: true } | Command::Show { json: true, .. }
    );
    let out = Output::new(
        "vdistro",
        if json {
            Verbosity::Json
        } else {
            Verbosity::Normal
        },
    );
    let store = DistributionStore::new(cli.roots.roots().distributions_dir());
    let result = match &cli.command {
        Command::List { json } => store.list().map(|all| list(&out, &all, *json)),
        Command::Show { name, json } => store.get(name).map(|d| show(&out, &d, *json)),
        Command::Add(args) => add(&store, args, &out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => report(&out, "vdistro", error),
    }
}

fn source(d: &Distribution) -> String {
    match &d.source {
        DistributionSource::Builtin => "built-in".into(),
        DistributionSource::Registered(dir) => dir.display().to_string(),
    }
}

fn summary(d: &Distribution) -> serde_json::Value {
    json!({
        "name": d.name,
        "family": d.family.as_str(),
        "releasever": d.releasever,
        "arch": d.arch,
        "gpgcheck": d.gpgcheck,
        "source": source(d),
        "description": d.description,
    })
}

/// The release version a build will use, as people read it: the distribution's, or the one a
/// build takes from its name (seed-style names such as `fc3`), or why there is none.
fn releasever_shown(d: &Distribution) -> String {
    if !d.releasever.is_empty() {
        return d.releasever.clone();
    }
    match vserver_guest::releasever_from_name(&d.name) {
        Some(version) => format!("{version} (from its name; not set in distribution.toml)"),
        None => "(none: builds need --releasever)".into(),
    }
}

fn list(out: &Output, all: &[Distribution], json: bool) {
    if json {
        out.json(&serde_json::Value::Array(all.iter().map(summary).collect()));
        return;
    }
    for d in all {
        println!(
            "{:<16} {:<4} {:<8} {:<10} {}",
            d.name,
            d.family.as_str(),
            if d.releasever.is_empty() {
                "-"
            } else {
                &d.releasever
            },
            if matches!(d.source, DistributionSource::Builtin) {
                "built-in"
            } else {
                "registered"
            },
            d.description
        );
    }
}

/// What is really checked, in one word: rpm, the repositories' own `gpgcheck` (over the
/// distribution's, which turns all of them off when false); deb, whether any apt source is
/// `[trusted=yes]` (unchecked).
fn effective_gpgcheck(d: &Distribution) -> String {
    let (checked, total) = match d.family {
        Family::Rpm => {
            let checks = d.repo_checks();
            (checks.iter().filter(|c| c.gpgcheck).count(), checks.len())
        }
        Family::Deb => {
            let lines: Vec<&str> = d
                .apt_sources
                .lines()
                .filter(|l| l.trim_start().starts_with("deb"))
                .collect();
            (
                lines.iter().filter(|l| !l.contains("trusted=yes")).count(),
                lines.len(),
            )
        }
    };
    let word = match (checked, total) {
        (_, 0) => d.gpgcheck.to_string(),
        (0, _) => "false".to_owned(),
        (c, t) if c == t => "true".to_owned(),
        (c, t) => format!("mixed ({c} of {t} repositories)"),
    };
    if d.family == Family::Rpm && total > 0 && d.gpgcheck && checked < total {
        format!("{word} (the repository files override distribution.toml's gpgcheck = true)")
    } else {
        word
    }
}

fn show(out: &Output, d: &Distribution, json: bool) {
    let lists: Vec<serde_json::Value> = d
        .package_lists
        .iter()
        .map(|(name, entries)| {
            json!({
                "name": name,
                "packages": entries.iter().map(|e| json!({"name": e.name, "can_fail": e.can_fail})).collect::<Vec<_>>(),
            })
        })
        .collect();
    if json {
        let mut value = summary(d);
        value["repo_files"] = json!(
            d.repo_files
                .iter()
                .map(|(n, t)| json!({"name": n, "content": t}))
                .collect::<Vec<_>>()
        );
        value["package_lists"] = json!(lists);
        value["apt_sources"] = json!(d.apt_sources);
        value["missing_archive"] = match &d.missing_archive {
            Some(m) => json!({"suite": m.suite, "components": m.components, "apt_dir": m.apt_dir}),
            None => serde_json::Value::Null,
        };
        value["repos"] = json!(
            d.repo_checks()
                .iter()
                .map(|c| json!({
                    "id": c.id,
                    "file": c.file,
                    "gpgcheck": c.gpgcheck,
                    "repo_gpgcheck": c.repo_gpgcheck,
                    "gpgkeys": c.gpgkeys,
                }))
                .collect::<Vec<_>>()
        );
        value["macros"] = json!(d.macros);
        value["pubkeys"] = json!(d.pubkeys);
        out.json(&value);
        return;
    }
    println!("name:        {}", d.name);
    println!("description: {}", d.description);
    println!("family:      {}", d.family.as_str());
    println!("releasever:  {}", releasever_shown(d));
    println!(
        "arch:        {}",
        if d.arch.is_empty() { "(host)" } else { &d.arch }
    );
    println!("gpgcheck:    {}", effective_gpgcheck(d));
    println!("source:      {}", source(d));
    for check in d.repo_checks() {
        let yes_no = |on: bool| if on { "checked" } else { "not checked" };
        println!(
            "repo {}: packages {}, metadata {}, keys {} ({})",
            check.id,
            yes_no(check.gpgcheck),
            yes_no(check.repo_gpgcheck),
            if check.gpgkeys.is_empty() {
                "-".to_owned()
            } else {
                check.gpgkeys.join(" ")
            },
            check.file
        );
    }
    for (name, text) in &d.repo_files {
        println!("repo file {name}:");
        for line in text.lines() {
            println!("    {line}");
        }
    }
    if let Some(m) = &d.missing_archive {
        println!(
            "apt sources: none (no archive for `{}` in the host's apt sources, `{}`: build with \
             --mirror URL or register it with vdistro add)",
            m.suite,
            m.apt_dir.display()
        );
    }
    if !d.apt_sources.is_empty() {
        println!("apt sources:");
        for line in d.apt_sources.lines() {
            println!("    {line}");
        }
    }
    for (name, entries) in &d.package_lists {
        let names: Vec<String> = entries
            .iter()
            .map(|e| {
                if e.can_fail {
                    format!("{} (can fail)", e.name)
                } else {
                    e.name.clone()
                }
            })
            .collect();
        println!("pkgs/{name}: {}", names.join(" "));
    }
    if !d.macros.is_empty() {
        println!(
            "macros:\n    {}",
            d.macros.trim_end().replace('\n', "\n    ")
        );
    }
    for key in &d.pubkeys {
        println!("pubkey:      {}", key.display());
    }
}

fn add(store: &DistributionStore, args: &AddArgs, out: &Output) -> vserver_guest::Result<()> {
    let family = if args.family == "deb" {
        Family::Deb
    } else {
        Family::Rpm
    };
    let misplaced = match family {
        Family::Rpm if !args.apt_sources.is_empty() || args.trusted => {
            Some("--apt-source and --trusted are for --family deb")
        }
        Family::Deb if !args.repos.is_empty() || args.gpgcheck || args.macros.is_some() => {
            Some("--repo, --gpgcheck and --macros are for --family rpm")
        }
        _ => None,
    };
    if let Some(problem) = misplaced {
        return Err(vserver_guest::Error::BadDistribution {
            name: args.name.clone(),
            path: PathBuf::new(),
            problem: problem.into(),
        });
    }
    let mut repos = Vec::new();
    for repo in &args.repos {
        let Some((id, url)) = repo.split_once('=') else {
            return Err(vserver_guest::Error::BadDistribution {
                name: args.name.clone(),
                path: PathBuf::from(repo),
                problem: "a repository is `ID=URL`".into(),
            });
        };
        repos.push((id.to_owned(), url.to_owned()));
    }
    let macros = match &args.macros {
        Some(path) => fs_err::read_to_string(path).map_err(|source| vserver_guest::Error::Io {
            op: "read",
            path: path.clone(),
            source,
        })?,
        None => String::new(),
    };
    // Each `--pkgs` value is one line of its list, checked as a whole by the library: splitting
    // it here would turn a line break inside it into a separator instead of refusing it.
    let package_lists = args
        .package_lists
        .iter()
        .map(|list| vec![list.clone()])
        .collect();
    let dir = store.add(&NewDistribution {
        name: args.name.clone(),
        description: args.description.clone(),
        releasever: args.releasever.clone(),
        arch: args.arch.clone(),
        family,
        repos,
        apt_sources: args.apt_sources.clone(),
        trusted: args.trusted,
        gpgcheck: args.gpgcheck,
        package_lists,
        macros,
        pubkeys: args.pubkeys.clone(),
        force: args.force,
    })?;
    out.status(&format!(
        "registered distribution `{}` in {}",
        args.name,
        dir.display()
    ));
    Ok(())
}
