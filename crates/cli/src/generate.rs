//! Man pages and shell completions, generated from the very clap definitions that parse the
//! command lines, so they cannot drift from them: `vserver --generate-man DIR` and `vserver
//! --generate-completions DIR` (hidden options, for packagers: `scripts/package-deb` calls them).

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Command;
use clap_complete::Shell;

use crate::exit;

/// Every command this binary answers to, as clap defines it: `vserver` (with its guest
/// commands), `vrepo`, `vdistro`, and the package applets.
pub fn commands() -> Vec<Command> {
    let mut all = vec![
        crate::vserver_cmd::command(),
        crate::vrepo::command(),
        crate::vdistro::command(),
    ];
    for applet in crate::PACKAGE_APPLETS {
        all.push(crate::vpkg::command(applet));
    }
    all
}

/// The shells completions are written for, and the file name each wants for `name`: the names
/// bash-completion, zsh and fish load on demand.
pub const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "bash"),
    (Shell::Zsh, "zsh"),
    (Shell::Fish, "fish"),
];

/// The completion file of `name` for `shell`, relative to the completions directory.
pub fn completion_file(shell: Shell, name: &str) -> String {
    match shell {
        Shell::Zsh => format!("zsh/_{name}"),
        Shell::Fish => format!("fish/{name}.fish"),
        _ => format!("bash/{name}"),
    }
}

/// Handles `vserver --generate-man DIR` and `vserver --generate-completions DIR`; `None` for any
/// other command line.
pub fn from_args(args: &[OsString]) -> Option<ExitCode> {
    let option = args.get(1)?.to_str()?;
    if option != "--generate-man" && option != "--generate-completions" {
        return None;
    }
    let [_, _, dir] = args else {
        eprintln!("vserver: error: usage: vserver {option} DIR");
        return Some(ExitCode::from(exit::USAGE));
    };
    let dir = Path::new(dir);
    let done = if option == "--generate-man" {
        man_pages(dir)
    } else {
        completions(dir)
    };
    Some(match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let chain: Vec<String> = error.chain().map(ToString::to_string).collect();
            eprintln!("vserver: error: {}", chain.join(": "));
            ExitCode::from(exit::FAILURE)
        }
    })
}

/// Prepares `cmd` for documentation: clap's own names (`vserver-start`), but the synopsis of a
/// guest command reads `vserver GUEST start`, and of `unify` `vserver --all unify`.
pub fn prepared(cmd: Command) -> Command {
    let mut cmd = cmd.disable_help_subcommand(true);
    if cmd.get_name() == "vserver" {
        let names: Vec<String> = cmd
            .get_subcommands()
            .map(|s| s.get_name().to_owned())
            .collect();
        for name in names {
            let bin = if name == "unify" {
                format!("vserver --all {name}")
            } else {
                format!("vserver GUEST {name}")
            };
            cmd = cmd.mut_subcommand(&name, |s| s.bin_name(bin));
        }
    }
    cmd.build();
    cmd
}

/// Writes one man page per command and subcommand (`vserver.1`, `vserver-build.1`,
/// `vrepo-index.1`, …) into `dir`.
pub fn man_pages(dir: &Path) -> Result<()> {
    fs_err::create_dir_all(dir)?;
    fn write(cmd: &Command, dir: &Path) -> Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            write(sub, dir)?;
        }
        let man = clap_mangen::Man::new(cmd.clone()).manual("vserver");
        let path = dir.join(man.get_filename());
        let mut text = Vec::new();
        man.render(&mut text)
            .with_context(|| format!("cannot render `{}`", path.display()))?;
        fs_err::write(&path, text)?;
        Ok(())
    }
    for cmd in commands() {
        write(&prepared(cmd), dir)?;
    }
    Ok(())
}

/// Writes bash, zsh and fish completions of every command into `dir/bash/NAME`,
/// `dir/zsh/_NAME` and `dir/fish/NAME.fish`.
pub fn completions(dir: &Path) -> Result<()> {
    for (shell, sub) in SHELLS {
        fs_err::create_dir_all(dir.join(sub))?;
        for mut cmd in commands() {
            let name = cmd.get_name().to_owned();
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut cmd, &name, &mut text);
            fs_err::write(dir.join(completion_file(shell, &name)), text)?;
        }
    }
    Ok(())
}
