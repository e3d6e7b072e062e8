//! The `appliance` command: what installers and admins use at an Outpost unit's console to
//! provision it, manage users and peers, check health, rotate keys, back it up and restore
//! it, and update its system from a signed bundle.
//!
//! `main` parses the command line ([`cli`]), runs one command, prints a failure once and exits
//! with a documented code ([`exit`]). Commands talk to the running homeserver through its admin
//! socket ([`admin_client`]) and work on the unit's files ([`unit`]) and database ([`offline`])
//! when it is stopped.

mod admin_client;
mod backup;
mod cli;
mod console;
mod crypt;
mod docs;
mod exit;
mod firewall;
mod interrupt;
mod keys;
mod offline;
mod password;
mod peers;
mod progress;
mod provisioning;
mod reports;
mod reset;
mod selftest;
mod setup;
mod status;
mod tls;
mod unit;
mod update;
mod users;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::exit::{Exit, Failure};
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
        Command::Keys(command) => keys::run(&unit, command),
        Command::Tls(command) => tls::run(&unit, command),
        Command::Status(args) => status::run(&unit, args),
        Command::Selftest(args) => selftest::run(&unit, args),
        Command::Reports(args) => reports::run(&unit, args),
        Command::Notice(args) => reports::notice(&unit, args),
        Command::Backup(args) => backup::backup(&unit, args),
        Command::Restore(args) => backup::restore(&unit, args),
        Command::FactoryReset(args) => reset::run(&unit, args),
        Command::Update(command) => update::run(&unit, command),
        Command::Man(args) => docs::man(args),
        Command::Completions(args) => docs::completions(args),
    }
}
