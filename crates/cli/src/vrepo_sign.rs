//! Signing options shared by `vrepo index` and `vrepo mirror`, and `vrepo key export`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use vserver_repository::sign::{SignOptions, Signer, SigningKey};

use crate::exit;
use crate::output::{Output, Verbosity};

/// `--sign KEY`, `--sign-key-file FILE`, `--gpg-homedir DIR`, `--passphrase-file FILE`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SignArgs {
    /// Sign the metadata (InRelease and Release.gpg, or repodata/repomd.xml.asc) with this
    /// GnuPG key: a fingerprint, key id or user id with a secret key in the GnuPG home.
    #[arg(long, value_name = "KEY", conflicts_with = "sign_key_file")]
    sign: Option<String>,
    /// Sign with the secret key in FILE (exported with `gpg --export-secret-keys`), imported
    /// into a private GnuPG home for this run only.
    #[arg(long, value_name = "FILE")]
    sign_key_file: Option<PathBuf>,
    /// GnuPG home directory holding --sign's key (default: $GNUPGHOME, or ~/.gnupg).
    #[arg(long, value_name = "DIR", requires = "sign")]
    gpg_homedir: Option<PathBuf>,
    /// File holding the signing key's passphrase (when no gpg-agent has it unlocked).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

impl SignArgs {
    /// The signer, resolved before any work starts, so a wrong key fails at once.
    pub(crate) fn signer(&self) -> Result<Option<Arc<Signer>>> {
        let key = match (&self.sign, &self.sign_key_file) {
            (Some(id), _) => SigningKey::Id(id.clone()),
            (None, Some(file)) => SigningKey::File(file.clone()),
            (None, None) => return Ok(None),
        };
        let signer = Signer::new(&SignOptions {
            key,
            homedir: self.gpg_homedir.clone(),
            passphrase_file: self.passphrase_file.clone(),
        })
        .context("cannot sign the metadata")?;
        Ok(Some(Arc::new(signer)))
    }
}

/// `vrepo key …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum KeyCommand {
    /// Print the public key of a signing key, for `vdistro add --pubkey` (apt: a keyring
    /// for `signed-by`) or a dnf `gpgkey=`.
    ///
    /// ASCII-armored by default (dnf and apt ≥ 1.4 read it; name the file `*.asc` for apt);
    /// --binary writes an OpenPGP keyring (`*.gpg`).
    #[command(
        after_help = "Examples:\n  vrepo key export repo@example.org -o /srv/repo/repo-key.asc\n  vrepo key export --sign-key-file /etc/vrepo/key.asc --binary -o /srv/repo/repo-key.gpg"
    )]
    Export(KeyExportArgs),
}

/// Arguments of `vrepo key export`.
#[derive(Debug, clap::Args)]
pub(crate) struct KeyExportArgs {
    /// The key: fingerprint, key id or user id (as for --sign).
    #[arg(value_name = "KEY", required_unless_present = "sign_key_file")]
    key: Option<String>,
    /// Take the key from this secret key file instead (as for --sign-key-file).
    #[arg(long, value_name = "FILE", conflicts_with = "key")]
    sign_key_file: Option<PathBuf>,
    /// GnuPG home directory (default: $GNUPGHOME, or ~/.gnupg).
    #[arg(long, value_name = "DIR")]
    gpg_homedir: Option<PathBuf>,
    /// Write a binary keyring instead of ASCII armor.
    #[arg(long)]
    binary: bool,
    /// Write to FILE (atomically) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

pub(crate) fn run_key(command: &KeyCommand) -> ExitCode {
    let out = Output::new("vrepo", Verbosity::Normal);
    let KeyCommand::Export(args) = command;
    match export(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            out.error(&err);
            ExitCode::from(exit::FAILURE)
        }
    }
}

fn export(args: &KeyExportArgs) -> Result<()> {
    let key = match (&args.key, &args.sign_key_file) {
        (Some(id), _) => SigningKey::Id(id.clone()),
        (None, Some(file)) => SigningKey::File(file.clone()),
        (None, None) => anyhow::bail!("name a key, or give --sign-key-file"),
    };
    let signer = Signer::new(&SignOptions {
        key,
        homedir: args.gpg_homedir.clone(),
        passphrase_file: None,
    })
    .context("cannot export the public key")?;
    let bytes = signer
        .export_public(!args.binary)
        .context("cannot export the public key")?;
    match &args.output {
        Some(path) => vserver_repository::publish::write_file_atomic(path, &bytes)
            .with_context(|| format!("cannot write the public key to `{}`", path.display()))?,
        None => std::io::stdout()
            .lock()
            .write_all(&bytes)
            .context("cannot write the public key to stdout")?,
    }
    Ok(())
}
