//! Exit codes shared by every applet (documented in docs/commands.md), and how command-line
//! errors are printed.

/// The operation failed; nothing was published or changed.
pub const FAILURE: u8 = 1;
/// The command line was wrong.
pub const USAGE: u8 = 2;
/// The operation succeeded but left some input out (`--skip-bad`).
pub const PARTIAL: u8 = 3;
/// `vrepo mirror`: the mirror was already up to date; nothing was downloaded, removed or
/// published (0 means it was updated).
pub const UP_TO_DATE: u8 = 4;

/// Prints a command-line parse error (or the help or version clap was asked for) and returns the
/// exit status: 2 for an error, 0 for help and version.
///
/// An error is one line on stderr: clap's message, its tips ("a similar argument exists")
/// folded in, and the command whose `--help` explains it. Help asked for, and the usage printed
/// for a command called without arguments, are printed whole.
pub fn command_line(err: &clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    if !err.use_stderr() || err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = err.print();
        return std::process::ExitCode::from(if err.use_stderr() { USAGE } else { 0 });
    }
    eprintln!("{}", one_line(&err.render().to_string()));
    std::process::ExitCode::from(USAGE)
}

/// clap's multi-line error as one line: `PROGRAM: error: MESSAGE DETAILS (TIPS); see `COMMAND
/// --help``. The command comes from clap's usage line; without one, the program is the applet
/// this process runs as.
pub fn one_line(rendered: &str) -> String {
    let mut message = String::new();
    let mut tips = Vec::new();
    let mut command = String::new();
    let mut in_message = true;
    for line in rendered.lines() {
        let line = line.trim();
        if line.is_empty() {
            in_message = false;
        } else if let Some(text) = line.strip_prefix("error: ") {
            message = text.trim_end_matches(':').to_owned();
        } else if let Some(tip) = line.strip_prefix("tip: ") {
            tips.push(tip.to_owned());
        } else if let Some(usage) = line.strip_prefix("Usage: ") {
            // The command's words before its first placeholder: `vserver GUEST stop`.
            command = usage
                .split_whitespace()
                .take_while(|w| !w.starts_with(['[', '<', '-']) && !w.contains('|'))
                .collect::<Vec<_>>()
                .join(" ");
        } else if line.starts_with("For more information") {
        } else if in_message {
            // The details under the message: missing arguments, possible values.
            message.push_str(if message.ends_with(']') || line.starts_with('[') {
                " "
            } else {
                ": "
            });
            message.push_str(line);
        }
    }
    let program = match command.split_whitespace().next() {
        Some(program) => program.to_owned(),
        None => running_as(),
    };
    let mut out = format!("{program}: error: {message}");
    if !tips.is_empty() {
        out.push_str(&format!(" ({})", tips.join("; ")));
    }
    if command.is_empty() {
        out.push_str(&format!("; see `{program} --help`"));
    } else {
        out.push_str(&format!("; see `{command} --help`"));
    }
    out
}

/// The applet this process runs as: `vrpm` for `vrpm …` and for `vserver vrpm …`.
fn running_as() -> String {
    let mut args = std::env::args();
    let invoked = args
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let first = args.next().unwrap_or_default();
    if crate::APPLETS.contains(&first.as_str()) {
        first
    } else {
        crate::APPLETS
            .iter()
            .filter(|a| invoked.ends_with(*a))
            .max_by_key(|a| a.len())
            .map_or_else(|| "vserver".to_owned(), |a| (*a).to_owned())
    }
}

/// `vserver verify`: a packaged file outside configuration files differs from the trusted
/// database, or a setuid/setgid file no package owns appeared (0: at most configuration files
/// changed).
pub const TAMPERED: u8 = 5;
