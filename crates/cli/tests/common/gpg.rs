//! A signing key made for one test: a private GnuPG home (no passphrase), whose agent is
//! stopped when the key is dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::checked;

/// The key of `email`, in the GnuPG home `home`.
pub struct TestKey {
    /// The GnuPG home.
    pub home: PathBuf,
    /// The key's e-mail address, which names it to gpg and to `vrepo --sign`.
    pub email: String,
}

impl TestKey {
    /// Makes a home at `home` and a key for `name <email>` in it.
    pub fn new(home: &Path, name: &str, email: &str) -> TestKey {
        std::fs::create_dir_all(home).unwrap();
        std::fs::set_permissions(home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let key = TestKey {
            home: home.to_owned(),
            email: email.to_owned(),
        };
        checked(
            Command::new("gpg")
                .arg("--homedir")
                .arg(home)
                .args(["--batch", "--quiet", "--passphrase", "", "--quick-gen-key"])
                .args([&format!("{name} <{email}>"), "default", "default", "never"]),
        );
        key
    }

    /// `--sign EMAIL --gpg-homedir HOME`, for vrepo.
    pub fn sign_args(&self) -> Vec<String> {
        vec![
            "--sign".to_owned(),
            self.email.clone(),
            "--gpg-homedir".to_owned(),
            self.home.display().to_string(),
        ]
    }
}

impl Drop for TestKey {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&self.home)
            .args(["--kill", "gpg-agent"])
            .status();
    }
}
