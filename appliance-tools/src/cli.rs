//! The command line, as clap definitions: the `///` comment of each item is its help text, and
//! the man page and shell completions are generated from these same definitions.
//!
//! Parsing has no side effects; each command validates its arguments and only then acts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::exit::EXIT_CODES_HELP;

/// Set up and look after an Outpost unit from its console.
///
/// Outpost is a sealed Matrix chat appliance. This tool provisions the unit on first boot,
/// manages its users, checks its health and takes and restores backups. It talks to the running
/// homeserver through a local socket in the data directory; operations that replace data
/// (setup, restore, factory-reset) need the homeserver stopped.
#[derive(Debug, Parser)]
#[command(name = "appliance", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// The unit's data directory: config, keys, database and admin socket all live here.
    #[arg(
        long,
        global = true,
        env = "OUTPOST_DATA_DIR",
        default_value = "/data/outpost",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// First-boot setup: name the unit, choose its addresses, generate its keys and create the
    /// first admin.
    ///
    /// Asks for whatever the flags do not give (on a terminal), shows a summary and writes
    /// nothing until you confirm. `--from FILE` applies a provisioning file instead; it is
    /// checked completely before anything is written.
    Setup(SetupArgs),
    /// Create, list and manage user accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Show the unit's health; exits with 5 when something needs attention.
    Status(StatusArgs),
    /// Write a backup of the whole unit (database, keys, config) to one file.
    Backup(BackupArgs),
    /// Replace this unit's data with a backup (the homeserver must be stopped).
    Restore(RestoreArgs),
    /// Erase everything in the data directory, back to a blank unit (homeserver stopped).
    FactoryReset(FactoryResetArgs),
    /// Print the man page (or write one page per command into a directory).
    Man(ManArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
}

/// `appliance setup`.
#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Apply this provisioning file (see provisioning.schema.json) instead of asking.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["server_name", "client_listen", "federation_listen", "federation_endpoint", "admin_user"])]
    pub from: Option<PathBuf>,
    /// Only check the provisioning file given with --from; write nothing.
    #[arg(long, requires = "from")]
    pub check: bool,
    /// The unit's Matrix server name; user IDs end in it (@alice:NAME). Cannot change later.
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Address the homeserver listens on for Matrix clients [default: 0.0.0.0:8008].
    #[arg(long, value_name = "IP:PORT")]
    pub client_listen: Option<String>,
    /// Address it listens on for peer units [default: 0.0.0.0:8448].
    #[arg(long, value_name = "IP:PORT")]
    pub federation_listen: Option<String>,
    /// Address peer units use to reach this unit; repeat for several
    /// [default: the server name on the federation port].
    #[arg(long, value_name = "HOST:PORT")]
    pub federation_endpoint: Vec<String>,
    /// Name of the first admin account [default: admin].
    #[arg(long, value_name = "NAME")]
    pub admin_user: Option<String>,
    /// Read the first admin's password from this file's first line (`-` for stdin) instead of
    /// asking for it.
    #[arg(long, value_name = "FILE")]
    pub admin_password_file: Option<PathBuf>,
    /// Do not ask for confirmation before writing.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Replace a unit that is already set up here (everything in the data directory is erased).
    #[arg(long)]
    pub force: bool,
}

/// `appliance user …`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account with a password.
    Create {
        /// The user name (alice) or full user ID (@alice:server).
        user: String,
        /// Make the account a server admin.
        #[arg(long)]
        admin: bool,
        /// Read the password from this file's first line (`-` for stdin) instead of asking.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// List every account.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Set a new password; every session of the account is logged out.
    ResetPassword {
        /// The user name or full user ID.
        user: String,
        /// Read the password from this file's first line (`-` for stdin) instead of asking.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Deactivate an account for good: no more logins, sessions ended, rooms left.
    Deactivate {
        /// The user name or full user ID.
        user: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Give an account server-admin rights (or take them away with --revoke).
    MakeAdmin {
        /// The user name or full user ID.
        user: String,
        /// Take admin rights away instead.
        #[arg(long)]
        revoke: bool,
    },
}

/// `appliance status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `appliance backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The backup file to write (for example on a mounted USB stick).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub force: bool,
}

/// `appliance restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file, as written by `appliance backup`.
    pub file: PathBuf,
    /// Restore even though the backup is of another unit (another server name).
    #[arg(long)]
    pub force_other_unit: bool,
    /// Do not ask for confirmation before replacing the current data.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// `appliance factory-reset`.
#[derive(Debug, Args)]
pub struct FactoryResetArgs {
    /// Confirm by giving the unit's server name instead of typing it at the prompt.
    #[arg(long, value_name = "SERVER_NAME")]
    pub confirm: Option<String>,
}

/// `appliance man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write appliance.1 and one page per command (appliance-setup.1, …) into DIR.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// `appliance completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}
