//! The `appliance` command: what installers and admins use at an Outpost unit's console to
//! provision it, manage users and peers, check health, rotate keys, back it up and restore
//! it, and update its system from a signed bundle.
//!
//! `main` parses the command line ([`cli`]), runs one command, prints a failure once and exits
//! with a documented code ([`base::exit`]).
//!
//! Three layers, dependencies pointing down only:
//! - the commands, one module each (`setup`, `users`, `peer` in [`peers`], [`appservice`],
//!   `keys`, `tls`, `status`, `selftest`, `reports` and `notice`, `oauth`, `backup` and `restore`,
//!   `factory-reset`, `man` and `completions` in [`docs`], `update`), each importing [`cli`]
//!   for its arguments; no command imports another;
//! - [`unit`]: the unit's files (config, provisioning, allow-list, firewall sets, TLS names)
//!   and its database while the server is stopped;
//! - [`base`]: exit codes, console, progress, the admin-socket client, Ctrl-C handling, the
//!   backup container and the password policy.
//!
//! The `layers` test below reads every module's `use crate::…` paths and fails when one points
//! up or sideways.

mod base;
mod unit;

mod appservice;
mod backup;
mod cli;
mod docs;
mod keys;
mod oauth;
mod peers;
mod reports;
mod reset;
mod selftest;
mod setup;
mod status;
mod tls;
mod update;
mod users;

use std::process::ExitCode;

use clap::Parser;

use crate::base::exit::{Exit, Failure};
use crate::base::interrupt;
use crate::cli::{Cli, Command};
use crate::unit::Unit;

fn main() -> ExitCode {
    // Before any thread exists, so every thread leaves Ctrl-C to the watcher.
    interrupt::install();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code.into(),
        Err(failure) => {
            eprintln!("appliance: {failure}");
            failure.code.into()
        }
    }
}

fn run(cli: &Cli) -> Result<Exit, Failure> {
    let unit = Unit::new(cli.data_dir.clone());
    match &cli.command {
        Command::Setup(args) => setup::run(&unit, args),
        Command::User(command) => users::run(&unit, command),
        Command::Peer(command) => peers::run(&unit, command),
        Command::Appservice(command) => appservice::run(&unit, command),
        Command::Keys(command) => keys::run(&unit, command),
        Command::Tls(command) => tls::run(&unit, command),
        Command::Status(args) => status::run(&unit, args),
        Command::Selftest(args) => selftest::run(&unit, args),
        Command::Reports(args) => reports::run(&unit, args),
        Command::Notice(args) => reports::notice(&unit, args),
        Command::Oauth(command) => oauth::run(&unit, command),
        Command::Backup(args) => backup::backup(&unit, args),
        Command::Restore(args) => backup::restore(&unit, args),
        Command::FactoryReset(args) => reset::run(&unit, args),
        Command::Update(command) => update::run(&unit, command, &backup::backup, &backup::restore),
        Command::Man(args) => docs::man(args),
        Command::Completions(args) => docs::completions(args),
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// The top-level module a source file belongs to: `main`, `cli`, `base`, `unit` or a
    /// command.
    fn top_module(src: &Path, file: &Path) -> String {
        let relative = file.strip_prefix(src).expect("a file under src/");
        let first = relative
            .components()
            .next()
            .expect("a file name")
            .as_os_str()
            .to_string_lossy();
        first.trim_end_matches(".rs").to_owned()
    }

    /// May code in module `from` use `crate::to`? The allowed directions, written once.
    fn allowed(from: &str, to: &str) -> bool {
        match from {
            "main" => true,
            "base" => to == "base",
            "unit" => matches!(to, "base" | "unit"),
            "cli" => matches!(to, "base" | "cli"),
            // A command: the layers below, its arguments, and itself; never another command.
            command => matches!(to, "base" | "unit" | "cli") || to == command,
        }
    }

    fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("readable src/") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                rust_files(&path, found);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                found.push(path);
            }
        }
    }

    #[test]
    fn layers() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut wrong = Vec::new();
        for file in &files {
            let from = top_module(&src, file);
            let text = std::fs::read_to_string(file).expect("readable source");
            for (number, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for (at, _) in line.match_indices("crate::") {
                    let to: String = line[at + "crate::".len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !allowed(&from, &to) {
                        wrong.push(format!(
                            "{}:{}: {from} uses crate::{to}",
                            file.display(),
                            number + 1
                        ));
                    }
                }
            }
        }
        assert!(files.len() > 20, "found only {} files", files.len());
        assert!(
            wrong.is_empty(),
            "imports against the layers:\n{}",
            wrong.join("\n")
        );
    }
}
