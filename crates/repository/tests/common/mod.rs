//! Helpers the repository tests share: skipping without a tool, an isolated apt, indexing.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vserver_repository::apt::{
    AptIndexOptions, AptIndexReport, AptLayout, index_apt, read_packages,
};
use vserver_repository::deb::control::Stanza;
use vserver_repository::progress::NoProgress;

/// Whether `tool` is on PATH. When it is not, prints why the test is skipped, or panics when
/// `VSERVER_TEST_REQUIRE_ALL=1` (CI) demands every test to run.
pub fn require_tool(tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()));
    if !found {
        if std::env::var("VSERVER_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
            panic!("`{tool}` is required (VSERVER_TEST_REQUIRE_ALL=1) but not installed");
        }
        eprintln!("skipped: `{tool}` is not installed");
    }
    found
}

/// Runs a command and returns its output, panicking with stderr when it fails.
pub fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Indexes `dir` with default options plus `layout`.
pub fn index(dir: &Path, layout: AptLayout) -> AptIndexReport {
    let opts = AptIndexOptions {
        layout,
        ..AptIndexOptions::default()
    };
    index_apt(dir, &opts, &NoProgress).unwrap_or_else(|err| panic!("index failed: {}", chain(&err)))
}

/// An error and its causes on one line.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

/// Parses a `Packages` text into stanzas keyed by `Filename`.
pub fn stanzas_by_filename(text: &str) -> BTreeMap<String, Stanza> {
    read_packages(text.as_bytes())
        .map(|stanza| {
            let stanza = stanza.expect("parse Packages");
            let filename = stanza.get("Filename").expect("Filename").to_owned();
            (filename, stanza)
        })
        .collect()
}

/// A stanza as (name, raw value) pairs, in order.
pub fn fields(stanza: &Stanza) -> Vec<(String, String)> {
    stanza
        .fields()
        .iter()
        .map(|f| (f.name().to_owned(), f.raw_value().to_owned()))
        .collect()
}

/// An apt confined to `root`: its own configuration, state, cache and an empty dpkg status,
/// so the host's apt setup is neither read nor changed.
pub struct IsolatedApt {
    pub root: PathBuf,
    config: PathBuf,
}

impl IsolatedApt {
    pub fn new(root: &Path, source_line: &str, arch: &str) -> IsolatedApt {
        let etc = root.join("etc");
        for dir in [
            etc.join("apt.conf.d"),
            etc.join("sources.list.d"),
            etc.join("preferences.d"),
            etc.join("trusted.gpg.d"),
            root.join("state/lists/partial"),
            root.join("cache/archives/partial"),
            root.join("log"),
        ] {
            std::fs::create_dir_all(&dir).unwrap();
        }
        std::fs::write(etc.join("sources.list"), format!("{source_line}\n")).unwrap();
        std::fs::write(root.join("status"), "").unwrap();
        let r = root.display();
        let config = root.join("apt.conf");
        std::fs::write(
            &config,
            format!(
                "Dir \"{r}/\";\n\
                 Dir::Etc \"{r}/etc/\";\n\
                 Dir::Etc::main \"{r}/etc/apt.conf\";\n\
                 Dir::Etc::parts \"{r}/etc/apt.conf.d/\";\n\
                 Dir::Etc::sourcelist \"{r}/etc/sources.list\";\n\
                 Dir::Etc::sourceparts \"{r}/etc/sources.list.d/\";\n\
                 Dir::Etc::preferences \"{r}/etc/preferences\";\n\
                 Dir::Etc::preferencesparts \"{r}/etc/preferences.d/\";\n\
                 Dir::Etc::trusted \"{r}/etc/trusted.gpg\";\n\
                 Dir::Etc::trustedparts \"{r}/etc/trusted.gpg.d/\";\n\
                 Dir::State \"{r}/state/\";\n\
                 Dir::State::status \"{r}/status\";\n\
                 Dir::Cache \"{r}/cache/\";\n\
                 Dir::Log \"{r}/log/\";\n\
                 APT::Architecture \"{arch}\";\n\
                 APT::Architectures {{ \"{arch}\"; }};\n\
                 APT::Sandbox::User \"root\";\n\
                 Acquire::Languages \"none\";\n"
            ),
        )
        .unwrap();
        IsolatedApt {
            root: root.to_owned(),
            config,
        }
    }

    /// Runs `apt-get ARGS` with this configuration only.
    pub fn apt_get(&self, args: &[&str]) -> Output {
        Command::new("apt-get")
            .env("APT_CONFIG", &self.config)
            .env("LC_ALL", "C")
            .args(args)
            .output()
            .expect("run apt-get")
    }

    /// The .deb files apt downloaded.
    pub fn downloaded(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.root.join("cache/archives"))
            .unwrap()
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.ends_with(".deb").then_some(name)
            })
            .collect();
        names.sort();
        names
    }
}

/// Asserts a command's success, showing its output otherwise.
pub fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `serve` of a directory on an ephemeral loopback port, shut down when dropped.
pub struct Served {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    handle: vserver_repository::serve::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    /// Serves `dir` with `options` (their listen address is replaced by 127.0.0.1:0).
    pub fn start(dir: &Path, options: vserver_repository::serve::ServeOptions) -> Served {
        let server = vserver_repository::serve::Server::bind(
            dir,
            vserver_repository::serve::ServeOptions {
                listen: "127.0.0.1:0".parse().unwrap(),
                ..options
            },
        )
        .unwrap();
        let addr = server.local_addr();
        let handle = server.handle();
        let thread = Some(std::thread::spawn(move || server.run().unwrap()));
        Served {
            addr,
            handle,
            thread,
        }
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
