//! `appliance factory-reset`: back to a blank unit, after the admin types the server name.
//!
//! Everything inside the data dir goes (the directory stays: it may be the data partition's
//! mount point). Nothing is erased unless a unit is recognisably set up there, so a mistyped
//! `--data-dir` cannot wipe an unrelated directory.

use crate::base::console::Console;
use crate::base::exit::{Exit, Failure};
use crate::cli::FactoryResetArgs;
use crate::unit::Unit;

/// Runs `appliance factory-reset`.
pub fn run(unit: &Unit, args: &FactoryResetArgs) -> Result<Exit, Failure> {
    if !unit.exists() {
        println!(
            "No unit is set up in {}; there is nothing to erase.",
            unit.dir().display()
        );
        return Ok(Exit::Success);
    }
    unit.require_stopped("a factory reset")?;
    // A unit whose files are too damaged to name itself is confirmed with a fixed phrase.
    let expected = unit
        .server_name()
        .unwrap_or_else(|| "factory-reset".to_owned());
    let typed = match &args.confirm {
        Some(typed) => typed.clone(),
        None => {
            eprintln!(
                "This erases everything of unit {expected} in {}: its users, rooms, messages, \
                 keys and configuration. It cannot be undone; take a backup first if in doubt.",
                unit.dir().display()
            );
            Console::new().ask(
                &format!("Type {expected} to confirm"),
                None,
                "--confirm SERVER_NAME",
                |answer| Ok::<_, String>(answer.to_owned()),
            )?
        }
    };
    if typed.trim() != expected {
        return Err(Failure::state(format!(
            "{typed:?} is not {expected:?}; nothing was erased"
        )));
    }
    unit.erase(&[])?;
    // The firewall forgets every peer with the cards.
    for note in crate::unit::firewall::rebuild(unit, &[])? {
        eprintln!("{note}");
    }
    println!(
        "Erased unit {expected} from {}. Run `appliance setup` to provision it again.",
        unit.dir().display()
    );
    Ok(Exit::Success)
}
