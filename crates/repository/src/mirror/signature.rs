//! OpenPGP signatures of the metadata roots (`repomd.xml.asc`, `InRelease`, `Release.gpg`).
//!
//! The root file is the only thing whose integrity the mirror cannot derive from a checksum
//! listed elsewhere, so it is checked against a keyring the administrator names. The check is
//! done by the host's `gpgv` (the verifier apt itself uses), run with a private home directory
//! so that no state of the user's GnuPG is read or written.

use std::path::{Path, PathBuf};
use std::process::Command;

/// How the signature of the metadata root is treated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignaturePolicy {
    /// Verify it with `gpgv` against this keyring (a binary or armored OpenPGP key file).
    Keyring(PathBuf),
    /// Do not verify (the caller warns the user loudly).
    Unverified,
}

/// A signature check failed.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// The source offers no signature to check.
    #[error(
        "`{file}` has no signature on the source (looked for {looked_for}); use --no-verify-signature to mirror it unverified"
    )]
    Missing {
        /// The file that should be signed.
        file: String,
        /// The signature files looked for.
        looked_for: String,
    },
    /// gpgv rejected the signature.
    #[error("the signature of `{file}` does not verify against `{keyring}`: {detail}")]
    Bad {
        /// The signed file.
        file: String,
        /// The keyring.
        keyring: PathBuf,
        /// gpgv's last line of output.
        detail: String,
    },
    /// gpgv could not be run.
    #[error(
        "cannot run gpgv to verify `{file}` (install the gpgv package, or use --no-verify-signature)"
    )]
    Gpgv {
        /// The signed file.
        file: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The scratch files for gpgv could not be written.
    #[error("cannot write `{path}` for gpgv")]
    Scratch {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A scratch directory for one verification, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(state_dir: &Path) -> Result<Scratch, SignatureError> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = state_dir.join(format!("gpgv-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).map_err(|source| SignatureError::Scratch {
        path: path.clone(),
        source,
    })?;
    Ok(Scratch(path))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), SignatureError> {
    std::fs::write(path, bytes).map_err(|source| SignatureError::Scratch {
        path: path.to_owned(),
        source,
    })
}

fn run_gpgv(
    keyring: &Path,
    home: &Path,
    args: &[&Path],
    output: Option<&Path>,
    file: &str,
) -> Result<(), SignatureError> {
    // gpgv takes a keyring name without a slash as relative to its home: make it absolute.
    let keyring_abs = std::path::absolute(keyring).unwrap_or_else(|_| keyring.to_owned());
    let mut command = Command::new("gpgv");
    command
        .arg("--homedir")
        .arg(home)
        .arg("--keyring")
        .arg(&keyring_abs);
    if let Some(output) = output {
        command.arg("--output").arg(output);
    }
    command.args(args);
    let result = command.output().map_err(|source| SignatureError::Gpgv {
        file: file.to_owned(),
        source,
    })?;
    if result.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&result.stderr);
    let detail = stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("gpgv failed")
        .to_owned();
    Err(SignatureError::Bad {
        file: file.to_owned(),
        keyring: keyring.to_owned(),
        detail,
    })
}

/// Checks a detached signature of `data` against `keyring`.
pub(crate) fn verify_detached(
    keyring: &Path,
    state_dir: &Path,
    file: &str,
    data: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    let dir = scratch(state_dir)?;
    let data_path = dir.0.join("data");
    let sig_path = dir.0.join("data.sig");
    write(&data_path, data)?;
    write(&sig_path, signature)?;
    run_gpgv(keyring, &dir.0, &[&sig_path, &data_path], None, file)
}

/// Checks a clear-signed document (`InRelease`) and returns the text that was signed.
pub(crate) fn verify_clearsigned(
    keyring: &Path,
    state_dir: &Path,
    file: &str,
    document: &[u8],
) -> Result<Vec<u8>, SignatureError> {
    let dir = scratch(state_dir)?;
    let doc_path = dir.0.join("InRelease");
    let out_path = dir.0.join("signed");
    write(&doc_path, document)?;
    run_gpgv(keyring, &dir.0, &[&doc_path], Some(&out_path), file)?;
    std::fs::read(&out_path).map_err(|source| SignatureError::Scratch {
        path: out_path,
        source,
    })
}

/// The signed text of a clear-signed document, without checking the signature; a document
/// without the armor is returned as it is.
pub(crate) fn strip_clearsign(document: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(document);
    if !text.starts_with("-----BEGIN PGP SIGNED MESSAGE-----") {
        return document.to_vec();
    }
    let mut out = String::new();
    let mut lines = text.lines().skip(1);
    // Armor headers (`Hash: SHA512`) end at the first empty line.
    for line in lines.by_ref() {
        if line.trim().is_empty() {
            break;
        }
    }
    for line in lines {
        if line.starts_with("-----BEGIN PGP SIGNATURE-----") {
            break;
        }
        out.push_str(line.strip_prefix("- ").unwrap_or(line));
        out.push('\n');
    }
    out.into_bytes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn strips_clearsign_armor() {
        let doc = b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: x\n- -dash\n-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----\n";
        assert_eq!(strip_clearsign(doc), b"Origin: x\n-dash\n");
        assert_eq!(strip_clearsign(b"Origin: y\n"), b"Origin: y\n");
    }
}
