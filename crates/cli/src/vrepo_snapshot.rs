//! `vrepo snapshot`: argument parsing and output around [`vserver_repository::snapshot`].

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::json;
use vserver_repository::snapshot::{SnapshotInfo, SnapshotStore};

use crate::exit;
use crate::output::{Output, Verbosity, human_bytes};

/// Where the snapshots and published names live.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RootArg {
    /// The publish root: holds the snapshots (hidden `.vrepo-snapshots/`) and the published
    /// names; serve this directory. Must be on the repository's file system.
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
}

/// `vrepo snapshot …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum SnapshotCommand {
    /// Take an immutable snapshot of a repository: metadata copied, packages hard-linked into
    /// a content-addressed pool (a snapshot costs its metadata only).
    #[command(
        after_help = "Example:\n  vrepo snapshot create --from /srv/mirror/debian --root /srv/published debian-2026-12-04"
    )]
    Create {
        /// The snapshot's name (letters, digits, `._-`).
        name: String,
        /// The repository (a `vrepo mirror` or `vrepo index` directory).
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        #[command(flatten)]
        root: RootArg,
        /// Wait for a mirror or index run on the repository instead of failing.
        #[arg(long)]
        wait: bool,
        /// Print a JSON summary on stdout.
        #[arg(long)]
        json: bool,
        /// Print errors only.
        #[arg(long, short)]
        quiet: bool,
    },
    /// List the snapshots, oldest first, with the names they are published as.
    #[command(after_help = "Example:\n  vrepo snapshot list --root /srv/published")]
    List {
        #[command(flatten)]
        root: RootArg,
        /// Print a JSON array on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Delete a snapshot (refused while it is published) and the pool files only it used.
    #[command(
        after_help = "Example:\n  vrepo snapshot delete --root /srv/published debian-2026-11-01"
    )]
    Delete {
        /// The snapshot.
        name: String,
        #[command(flatten)]
        root: RootArg,
    },
    /// Publish a snapshot as ROOT/AS (e.g. `stable`), switching the name in one atomic rename:
    /// clients see the previous snapshot or this one, never a mix or nothing.
    #[command(
        after_help = "Example:\n  vrepo snapshot publish --root /srv/published debian-2026-12-04 --as stable"
    )]
    Publish {
        /// The snapshot.
        name: String,
        /// The published name, a directory under the root (`stable`, `testing`).
        #[arg(long = "as", value_name = "NAME")]
        as_name: String,
        #[command(flatten)]
        root: RootArg,
        #[command(flatten)]
        sign: crate::vrepo::sign_cmd::SignArgs,
    },
    /// Remove a published name (the snapshot stays).
    #[command(after_help = "Example:\n  vrepo snapshot unpublish --root /srv/published testing")]
    Unpublish {
        /// The published name.
        as_name: String,
        #[command(flatten)]
        root: RootArg,
    },
}

pub(crate) fn run_snapshot(command: &SnapshotCommand) -> ExitCode {
    let verbosity = match command {
        SnapshotCommand::Create { json: true, .. } | SnapshotCommand::List { json: true, .. } => {
            Verbosity::Json
        }
        SnapshotCommand::Create { quiet: true, .. } => Verbosity::Quiet,
        _ => Verbosity::Normal,
    };
    let out = Output::new("vrepo", verbosity);
    match snapshot(command, &out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            out.error(&err);
            ExitCode::from(exit::FAILURE)
        }
    }
}

fn info_json(info: &SnapshotInfo) -> serde_json::Value {
    json!({
        "name": info.name,
        "source": info.source,
        "created": info.created,
        "packages": info.packages,
        "package_bytes": info.package_bytes,
        "metadata_files": info.metadata_files,
        "metadata_bytes": info.metadata_bytes,
        "published_as": info.published_as,
    })
}

fn snapshot(command: &SnapshotCommand, out: &Output) -> Result<()> {
    match command {
        SnapshotCommand::Create {
            name,
            from,
            root,
            wait,
            ..
        } => {
            let store = SnapshotStore::new(&root.root);
            let started = std::time::Instant::now();
            let info = store.create(from, name, *wait).with_context(|| {
                format!(
                    "cannot snapshot `{}` as `{name}`; nothing was created",
                    from.display()
                )
            })?;
            out.status(&format!(
                "snapshot {name} of {}: {} packages ({}, linked), {} metadata files ({} copied), {} hashed, {:.2} s",
                from.display(),
                info.packages,
                human_bytes(info.package_bytes),
                info.metadata_files,
                human_bytes(info.metadata_bytes),
                info.hashed,
                started.elapsed().as_secs_f64(),
            ));
            let mut value = info_json(&info);
            value["type"] = json!("snapshot");
            value["hashed"] = json!(info.hashed);
            out.json(&value);
        }
        SnapshotCommand::List { root, json } => {
            let list = SnapshotStore::new(&root.root).list().with_context(|| {
                format!("cannot list the snapshots in `{}`", root.root.display())
            })?;
            if *json {
                out.json(&serde_json::Value::Array(
                    list.iter().map(info_json).collect(),
                ));
            } else {
                for info in &list {
                    let published = if info.published_as.is_empty() {
                        String::new()
                    } else {
                        format!("  published as {}", info.published_as.join(", "))
                    };
                    println!(
                        "{}  {} packages  metadata {}  created {}{published}",
                        info.name,
                        info.packages,
                        human_bytes(info.metadata_bytes),
                        vserver_repository::apt::format_rfc2822_utc(
                            std::time::UNIX_EPOCH + std::time::Duration::from_secs(info.created)
                        ),
                    );
                }
            }
        }
        SnapshotCommand::Delete { name, root } => {
            SnapshotStore::new(&root.root)
                .delete(name)
                .with_context(|| format!("cannot delete snapshot `{name}`"))?;
            out.status(&format!("deleted snapshot {name}"));
        }
        SnapshotCommand::Publish {
            name,
            as_name,
            root,
            sign,
        } => {
            let signer = sign.signer()?;
            SnapshotStore::new(&root.root)
                .publish(name, as_name, signer.as_deref())
                .with_context(|| format!("cannot publish snapshot `{name}` as `{as_name}`"))?;
            out.status(&format!(
                "published snapshot {name} as {}",
                root.root.join(as_name).display()
            ));
        }
        SnapshotCommand::Unpublish { as_name, root } => {
            SnapshotStore::new(&root.root)
                .unpublish(as_name)
                .with_context(|| format!("cannot unpublish `{as_name}`"))?;
            out.status(&format!("unpublished {as_name}"));
        }
    }
    Ok(())
}
