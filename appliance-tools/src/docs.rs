//! `appliance man` and `appliance completions`: generated from the clap definitions in
//! [`crate::cli`], so help, man pages and completions never disagree.

use std::path::Path;

use clap::CommandFactory;

use crate::base::exit::{Exit, Failure};
use crate::cli::{Cli, CompletionsArgs, ManArgs};

/// Runs `appliance man`.
pub fn man(args: &ManArgs) -> Result<Exit, Failure> {
    let command = Cli::command();
    match &args.out_dir {
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(command)
                .render(&mut out)
                .map_err(|err| Failure::broke(format!("writing the man page: {err}")))?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|err| Failure::io("cannot create", dir, err))?;
            write_pages(dir, command, "appliance")?;
        }
    }
    Ok(Exit::Success)
}

/// Writes `name.1` for `command` and, recursively, `name-sub.1` for its subcommands.
fn write_pages(dir: &Path, command: clap::Command, name: &str) -> Result<(), Failure> {
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone().name(name.to_owned()))
        .render(&mut page)
        .map_err(|err| Failure::broke(format!("rendering {}: {err}", path.display())))?;
    std::fs::write(&path, page).map_err(|err| Failure::io("cannot write", &path, err))?;
    for sub in command.get_subcommands() {
        write_pages(dir, sub.clone(), &format!("{name}-{}", sub.get_name()))?;
    }
    Ok(())
}

/// Runs `appliance completions SHELL`.
pub fn completions(args: &CompletionsArgs) -> Result<Exit, Failure> {
    let mut command = Cli::command();
    clap_complete::generate(
        args.shell,
        &mut command,
        "appliance",
        &mut std::io::stdout(),
    );
    Ok(Exit::Success)
}
