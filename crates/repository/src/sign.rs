//! Signing the metadata roots we publish: `InRelease` and `Release.gpg` for apt, and
//! `repomd.xml.asc` for rpm-md.
//!
//! The signatures are made by the host's GnuPG (`gpg --batch`), not by a Rust OpenPGP crate:
//! administrators keep their archive keys in a GnuPG home (often on a smartcard or behind
//! gpg-agent), apt verifies with GnuPG's `gpgv` and dnf with GnuPG's library, so GnuPG's own
//! output is the most compatible signature there is, and a key never has to be exported into
//! a form a crate can read. The cost is one short process per signature (measured next to
//! indexing in `bench/sign.sh`).
//!
//! A key is named either as GnuPG names it (a fingerprint, key id or user id in the user's
//! GnuPG home or `--gpg-homedir`), or as a file holding an exported secret key, which is
//! imported into a private, temporary GnuPG home for the run and removed afterwards.
//!
//! Signing happens inside the staging directory, before the atomic switch: the new `Release`
//! or `repomd.xml` and its signatures become visible together.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where the signing key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigningKey {
    /// A key GnuPG finds in its home: fingerprint, key id, or user id (`repo@example.org`).
    Id(String),
    /// A file with an exported secret key (binary or armored), imported for this run only.
    File(PathBuf),
}

/// How to sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignOptions {
    /// The key.
    pub key: SigningKey,
    /// GnuPG's home directory for [`SigningKey::Id`] (default: `$GNUPGHOME` or `~/.gnupg`).
    pub homedir: Option<PathBuf>,
    /// A file holding the key's passphrase (for keys not unlocked by a running gpg-agent).
    pub passphrase_file: Option<PathBuf>,
}

/// Signing failed; nothing signed was published.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// gpg could not be started.
    #[error("cannot run gpg to sign the metadata (install the gpg and gpg-agent packages)")]
    Spawn(#[source] std::io::Error),
    /// No secret key matches the name.
    #[error(
        "no secret key `{key}` in {home}; list them with `gpg --list-secret-keys`, or give a key file with --sign-key-file"
    )]
    NoSuchKey {
        /// The key as given.
        key: String,
        /// Which GnuPG home was searched.
        home: String,
    },
    /// More than one secret key matches the name.
    #[error("`{key}` names {count} secret keys in {home}; give the fingerprint of one")]
    Ambiguous {
        /// The key as given.
        key: String,
        /// How many matched.
        count: usize,
        /// Which GnuPG home was searched.
        home: String,
    },
    /// A key file could not be imported.
    #[error("cannot import the signing key from `{}`: {detail}", path.display())]
    Import {
        /// The key file.
        path: PathBuf,
        /// gpg's last line.
        detail: String,
    },
    /// gpg failed to sign.
    #[error("gpg failed to sign `{}` with key {fingerprint}: {detail}", path.display())]
    Sign {
        /// The file being signed.
        path: PathBuf,
        /// The key.
        fingerprint: String,
        /// gpg's last line of output.
        detail: String,
    },
    /// A file around the signing could not be read or written.
    #[error("cannot {action} `{}`", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SignError {
    let path = path.to_owned();
    move |source| SignError::Io {
        action,
        path,
        source,
    }
}

/// A private GnuPG home for an imported key file, removed (and its agent stopped) on drop.
#[derive(Debug)]
struct TempHome(PathBuf);

impl Drop for TempHome {
    fn drop(&mut self) {
        // The agent gpg started for this home would otherwise outlive the run.
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&self.0)
            .args(["--kill", "gpg-agent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A resolved signing key: sign files with it, export its public half.
#[derive(Debug)]
pub struct Signer {
    homedir: Option<PathBuf>,
    fingerprint: String,
    passphrase_file: Option<PathBuf>,
    _temp_home: Option<TempHome>,
}

/// The last non-empty line of a process's stderr, for one-line errors.
fn last_line(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no message")
        .escape_debug()
        .to_string()
}

impl Signer {
    /// Finds the secret key (importing a key file into a private home first) and checks that
    /// exactly one secret key matches.
    pub fn new(options: &SignOptions) -> Result<Signer, SignError> {
        let (homedir, temp_home, query) = match &options.key {
            SigningKey::Id(id) => (options.homedir.clone(), None, id.clone()),
            SigningKey::File(path) => {
                let home = make_temp_home()?;
                let output = Command::new("gpg")
                    .args(["--batch", "--no-tty", "--quiet", "--homedir"])
                    .arg(&home.0)
                    .args(["--pinentry-mode", "loopback", "--passphrase", ""])
                    .arg("--import")
                    .arg(path)
                    .stdin(Stdio::null())
                    .output()
                    .map_err(SignError::Spawn)?;
                if !output.status.success() {
                    return Err(SignError::Import {
                        path: path.clone(),
                        detail: last_line(&output.stderr),
                    });
                }
                let home_path = home.0.clone();
                (Some(home_path), Some(home), String::new())
            }
        };
        let home_name = match &homedir {
            Some(h) => format!("`{}`", h.display()),
            None => "the default GnuPG home".to_owned(),
        };
        let mut list = Command::new("gpg");
        list.args(["--batch", "--no-tty", "--with-colons", "--list-secret-keys"]);
        if let Some(home) = &homedir {
            list.arg("--homedir").arg(home);
        }
        if !query.is_empty() {
            // `--` keeps a key name that starts with a dash from being read as an option.
            list.arg("--").arg(&query);
        }
        let output = list
            .stdin(Stdio::null())
            .output()
            .map_err(SignError::Spawn)?;
        let fingerprints = secret_fingerprints(&String::from_utf8_lossy(&output.stdout));
        let shown = match &options.key {
            SigningKey::Id(id) => id.clone(),
            SigningKey::File(path) => path.display().to_string(),
        };
        match fingerprints.len() {
            0 => Err(match &options.key {
                SigningKey::File(path) => SignError::Import {
                    path: path.clone(),
                    detail: "it holds no secret key".into(),
                },
                SigningKey::Id(_) => SignError::NoSuchKey {
                    key: shown,
                    home: home_name,
                },
            }),
            1 => Ok(Signer {
                homedir,
                fingerprint: fingerprints.into_iter().next().unwrap_or_default(),
                passphrase_file: options.passphrase_file.clone(),
                _temp_home: temp_home,
            }),
            count => Err(SignError::Ambiguous {
                key: shown,
                count,
                home: home_name,
            }),
        }
    }

    /// The fingerprint of the primary key (what `--local-user` is given, with `!`).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn gpg(&self) -> Command {
        let mut command = Command::new("gpg");
        command.args(["--batch", "--no-tty", "--quiet", "--yes"]);
        if let Some(home) = &self.homedir {
            command.arg("--homedir").arg(home);
        }
        match &self.passphrase_file {
            Some(file) => {
                command
                    .args(["--pinentry-mode", "loopback", "--passphrase-file"])
                    .arg(file);
            }
            // Never prompt: vrepo runs from timers, where a pinentry would hang or fail
            // obscurely. A key the agent holds unlocked still signs.
            None => {
                command.args(["--pinentry-mode", "error"]);
            }
        }
        // SHA-1 signatures are refused by current apt and rpm: name a strong digest.
        command.args(["--digest-algo", "SHA512", "--local-user"]);
        command.arg(format!("{}!", self.fingerprint));
        command.stdin(Stdio::null());
        command
    }

    fn run(&self, mut command: Command, input: &Path) -> Result<(), SignError> {
        let output = command.output().map_err(SignError::Spawn)?;
        if output.status.success() {
            Ok(())
        } else {
            let mut detail = last_line(&output.stderr);
            if self.passphrase_file.is_none()
                && (detail.contains("pinentry") || detail.contains("assphrase"))
            {
                detail.push_str(
                    " (the key is protected: give --passphrase-file, or unlock it in gpg-agent)",
                );
            }
            Err(SignError::Sign {
                path: input.to_owned(),
                fingerprint: self.fingerprint.clone(),
                detail,
            })
        }
    }

    /// Writes `output`, an ASCII-armored detached signature of `input`.
    pub fn detach_sign(&self, input: &Path, output: &Path) -> Result<(), SignError> {
        let mut command = self.gpg();
        command
            .args(["--armor", "--detach-sign", "--output"])
            .arg(output)
            .arg("--")
            .arg(input);
        self.run(command, input)?;
        sync_file(output)
    }

    /// Writes `output`, `input` clear-signed (apt's `InRelease`).
    pub fn clearsign(&self, input: &Path, output: &Path) -> Result<(), SignError> {
        let mut command = self.gpg();
        command
            .args(["--clearsign", "--output"])
            .arg(output)
            .arg("--")
            .arg(input);
        self.run(command, input)?;
        sync_file(output)
    }

    /// Signs an apt suite (or flat repository) staged in `dir`: `InRelease` and `Release.gpg`
    /// of `dir/Release`.
    pub fn sign_release(&self, dir: &Path) -> Result<(), SignError> {
        let release = dir.join("Release");
        self.clearsign(&release, &dir.join("InRelease"))?;
        self.detach_sign(&release, &dir.join("Release.gpg"))
    }

    /// Signs a staged `repodata/`: `repomd.xml.asc` of `dir/repomd.xml`.
    pub fn sign_repomd(&self, dir: &Path) -> Result<(), SignError> {
        self.detach_sign(&dir.join("repomd.xml"), &dir.join("repomd.xml.asc"))
    }

    /// The public key, ASCII-armored or binary (an apt keyring for `signed-by`, a `.gpg`).
    pub fn export_public(&self, armor: bool) -> Result<Vec<u8>, SignError> {
        let mut command = Command::new("gpg");
        command.args([
            "--batch",
            "--no-tty",
            "--quiet",
            "--export-options",
            "export-minimal",
        ]);
        if let Some(home) = &self.homedir {
            command.arg("--homedir").arg(home);
        }
        if armor {
            command.arg("--armor");
        }
        command
            .arg("--export")
            .arg(format!("{}!", self.fingerprint));
        let output = command
            .stdin(Stdio::null())
            .output()
            .map_err(SignError::Spawn)?;
        if !output.status.success() || output.stdout.is_empty() {
            return Err(SignError::Sign {
                path: PathBuf::from("(public key export)"),
                fingerprint: self.fingerprint.clone(),
                detail: last_line(&output.stderr),
            });
        }
        Ok(output.stdout)
    }
}

/// The fingerprints of the primary secret keys in `gpg --with-colons --list-secret-keys` output.
fn secret_fingerprints(colons: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_primary = false;
    for line in colons.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.first() {
            Some(&"sec") => in_primary = true,
            Some(&"ssb") | Some(&"sub") | Some(&"pub") => in_primary = false,
            Some(&"fpr") if in_primary => {
                if let Some(fpr) = fields.get(9).filter(|f| !f.is_empty()) {
                    out.push((*fpr).to_owned());
                }
                in_primary = false;
            }
            _ => {}
        }
    }
    out
}

fn sync_file(path: &Path) -> Result<(), SignError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err("sync", path))
}

/// A new private directory for GnuPG, short enough for the agent's socket path.
fn make_temp_home() -> Result<TempHome, SignError> {
    use std::os::unix::fs::DirBuilderExt;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("vrepo-gpg-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&path)
        .map_err(io_err("create", &path))?;
    Ok(TempHome(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_of_primary_secret_keys_only() {
        let colons = "sec:u:255:22:AAAA:1:::u:::scESC:::+:::23::0:\n\
                      fpr:::::::::1111111111111111111111111111111111111111:\n\
                      uid:u::::1::X::a <a@b>::::::::::0:\n\
                      ssb:u:255:18:BBBB:1::::::e:::+:::23:\n\
                      fpr:::::::::2222222222222222222222222222222222222222:\n\
                      sec:u:255:22:CCCC:1:::u:::scESC:::+:::23::0:\n\
                      fpr:::::::::3333333333333333333333333333333333333333:\n";
        assert_eq!(
            secret_fingerprints(colons),
            [
                "1111111111111111111111111111111111111111",
                "3333333333333333333333333333333333333333"
            ]
        );
    }
}
