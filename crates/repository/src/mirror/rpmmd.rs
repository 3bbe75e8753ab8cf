//! The rpm-md side of the mirror: `repodata/repomd.xml`, the files it lists, and primary's
//! package locations, sizes and checksums.

use super::check::{Algorithm, Digest};
use super::signature::{SignatureError, SignaturePolicy, verify_detached};
use super::{
    Context, MAX_ROOT_FILE, MAX_SIGNATURE, MirrorError, Plan, StagedIndex, StagedTree, Wanted,
    write_new,
};
use crate::publish::Staging;
use crate::rpmmd::{ReadError, Repomd, read_primary};

const REPOMD: &str = "repodata/repomd.xml";
const REPOMD_ASC: &str = "repodata/repomd.xml.asc";

/// Stages the source's `repodata/` and lists its packages; `None` if it has no repomd.xml.
pub(crate) fn plan(context: &Context<'_>) -> Result<Option<Plan>, MirrorError> {
    let fetcher = context.fetcher;
    let Some(repomd_bytes) = fetcher.get_bytes(REPOMD, MAX_ROOT_FILE)? else {
        return Ok(None);
    };
    let signature = fetcher.get_bytes(REPOMD_ASC, MAX_SIGNATURE)?;
    if let SignaturePolicy::Keyring(keyring) = &context.options.signature {
        let Some(signature) = &signature else {
            return Err(SignatureError::Missing {
                file: fetcher.source().display(REPOMD),
                looked_for: "repomd.xml.asc".into(),
            }
            .into());
        };
        verify_detached(
            keyring,
            &context.state_dir,
            &fetcher.source().display(REPOMD),
            &repomd_bytes,
            signature,
        )?;
    }
    let malformed = |reason: String| MirrorError::Malformed {
        file: "repodata/repomd.xml".into(),
        reason,
    };
    let repomd = Repomd::parse(&repomd_bytes).map_err(|e| malformed(e.to_string()))?;
    let current = context.current_metadata("repodata");
    let repomd_changed =
        std::fs::read(current.join("repomd.xml")).ok().as_deref() != Some(&repomd_bytes[..]);
    // A mirror we sign carries our repomd.xml.asc, not the source's: only repomd.xml counts.
    let changed = repomd_changed
        || (context.options.signer.is_none()
            && std::fs::read(current.join("repomd.xml.asc")).ok() != signature);

    let staging = Staging::new(context.dest, "repodata")?;
    let mut primary: Option<StagedIndex> = None;
    for record in &repomd.records {
        let hostile = |reason: &str| MirrorError::HostilePath {
            path: record.href.clone(),
            named_by: "repodata/repomd.xml".into(),
            reason: reason.to_owned(),
        };
        super::check::check_relative_path(&record.href).map_err(hostile)?;
        let name = record
            .href
            .strip_prefix("repodata/")
            .filter(|n| !n.contains('/') && *n != "repomd.xml" && *n != "repomd.xml.asc")
            .ok_or_else(|| hostile("metadata must be a file directly in repodata/"))?;
        if context.options.subset.is_some() && record.kind != "primary" {
            // A subset publishes its own index: only primary is read.
            continue;
        }
        let algorithm = Algorithm::from_rpm_md(&record.checksum_type).ok_or_else(|| {
            malformed(format!(
                "unknown checksum type `{}` for {}",
                record.checksum_type, record.kind
            ))
        })?;
        let digest = Digest::new(algorithm, &record.checksum)
            .ok_or_else(|| malformed(format!("bad checksum for {}", record.kind)))?;
        let staged = staging.path().join(name);
        if !context.stage_file(
            &record.href,
            &current.join(name),
            &staged,
            record.size,
            &digest,
        )? {
            return Err(super::FetchError::NotFound {
                url: fetcher.source().display(&record.href),
            }
            .into());
        }
        if record.kind == "primary" {
            primary = Some(StagedIndex {
                limit: context.inflate_limit(&staged, record.open_size),
                url: fetcher.source().display(&record.href),
                path: staged,
            });
        }
    }
    write_new(&staging.path().join("repomd.xml"), &repomd_bytes)?;
    if let Some(signature) = &signature {
        write_new(&staging.path().join("repomd.xml.asc"), signature)?;
    }
    let primary = primary.ok_or_else(|| malformed("it lists no primary".into()))?;

    let mut packages = Vec::new();
    let (input, guard) = primary.open()?;
    let primary_name = "repodata primary";
    // A refusal is kept whole here; the reader only needs to know that it must stop.
    let mut refusal = None;
    let result = read_primary(input, |p| {
        let mut fail = |e: MirrorError| {
            refusal = Some(e);
            ReadError::Malformed(String::new())
        };
        if p.location_base.as_deref().is_some_and(|b| !b.is_empty()) {
            return Err(fail(MirrorError::HostilePath {
                path: p.location_href.clone(),
                named_by: primary_name.into(),
                reason: "locations with xml:base point to another server; not mirrored".into(),
            }));
        }
        context
            .check_path(&p.location_href, primary_name)
            .map_err(&mut fail)?;
        let digest = Algorithm::from_rpm_md(&p.checksum_type)
            .and_then(|a| Digest::new(a, &p.pkgid))
            .ok_or_else(|| {
                ReadError::Malformed(format!("bad checksum for `{}`", p.location_href))
            })?;
        packages.push(Wanted {
            rel: p.location_href,
            size: p.size_package,
            digest,
        });
        Ok(())
    });
    if let Some(refusal) = refusal {
        return Err(refusal);
    }
    guard.check(result.map_err(|e| match e {
        ReadError::Malformed(reason) => MirrorError::Malformed {
            file: primary_name.into(),
            reason,
        },
        ReadError::Io { path, source } => MirrorError::Io {
            action: "read",
            path,
            source,
        },
    }))?;
    Ok(Some(Plan {
        format: "rpm-md",
        trees: vec![StagedTree {
            staging,
            kind: super::TreeKind::RpmMd,
            changed,
            flat_files: None,
        }],
        packages,
        indexes: vec![super::SourceIndex::Primary(primary)],
    }))
}
