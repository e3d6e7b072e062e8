//! The command line, as clap definitions: the `///` comment of each item is its help text, and
//! the man page and shell completions are generated from these same definitions.
//!
//! Parsing has no side effects; each command validates its arguments and only then acts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::base::exit::EXIT_CODES_HELP;

/// Set up and look after an Outpost unit from its console.
///
/// Outpost is a sealed Matrix chat appliance. This tool provisions the unit on first boot,
/// manages its users and the peer units it federates with, checks its health and takes and
/// restores backups. It talks to the running homeserver through a local socket in the data
/// directory; operations that replace data or keys (setup, restore, factory-reset, keys rotate,
/// tls renew) need the homeserver stopped.
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
    Setup(Box<SetupArgs>),
    /// Create, list and manage user accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Exchange peer cards with other units: the allow-list of servers this unit federates with.
    ///
    /// Two units federate once each has imported the other's card. A card is a small signed
    /// file (`peer export` writes ours, for a USB stick); its fingerprint is what the two
    /// admins read aloud to each other to be sure the card is genuine.
    #[command(subcommand)]
    Peer(PeerCommand),
    /// Register application services: bridges and bots that act for users of a namespace.
    ///
    /// An appservice (an IRC or mail bridge, an alerting bot) is registered with the YAML file
    /// it generates, kept in <DATA_DIR>/appservices/<id>.yaml. The homeserver sends it the
    /// events of the rooms it is interested in and lets it act as the users of its namespaces.
    #[command(subcommand)]
    Appservice(AppserviceCommand),
    /// The unit's signing key.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The unit's TLS certificates: the federation one, and the one Matrix clients see.
    #[command(subcommand)]
    Tls(TlsCommand),
    /// Show the unit's health; exits with 5 when something needs attention.
    Status(StatusArgs),
    /// Check end to end that encrypted messaging works; exits with 5 when a step fails.
    ///
    /// Creates two temporary accounts, logs a device into each over the client API, publishes
    /// their encryption keys, opens an encrypted room and sends an encrypted message from one
    /// device to the other, which decrypts it and compares. Each step is shown with its time.
    /// The temporary accounts are deactivated at the end, also after a failure. With --peer
    /// the receiving device is a test account on that peer unit (its admin provides it), so
    /// the room, the keys and the message cross federation; its temporary device is logged out
    /// at the end. Needs the homeserver running.
    Selftest(SelftestArgs),
    /// List the content reports users filed from their clients (events, rooms, users).
    Reports(ReportsArgs),
    /// Send a server notice: a message from the administrator, shown in its own room.
    Notice(NoticeArgs),
    /// The clients that signed users in through the unit's OAuth 2.0 pages, and ending a
    /// user's OAuth sessions.
    #[command(subcommand)]
    Oauth(OauthCommand),
    /// Write a backup of the whole unit (database, keys, config) to one file.
    Backup(BackupArgs),
    /// Replace this unit's data with a backup (the homeserver must be stopped).
    Restore(RestoreArgs),
    /// Erase everything in the data directory, back to a blank unit (homeserver stopped).
    FactoryReset(FactoryResetArgs),
    /// Install a signed system update from a USB stick, or show the two root slots.
    ///
    /// The unit has two root slots; an update goes into the one not running, which boots on
    /// trial at the next restart and falls back to the old one by itself if its homeserver does
    /// not come up within 3 tries.
    #[command(subcommand)]
    Update(UpdateCommand),
    /// Print the man page (or write one page per command into a directory).
    Man(ManArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
}

/// `appliance setup`.
#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Apply this provisioning file (see provisioning.schema.json) instead of asking.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["server_name", "client_listen", "federation_listen", "federation_endpoint", "public_base_url", "public_name", "client_tls", "client_cert", "ca_http_listen", "insecure_plain_http", "admin_user"])]
    pub from: Option<PathBuf>,
    /// Only check the provisioning file given with --from; write nothing.
    #[arg(long, requires = "from")]
    pub check: bool,
    /// The unit's Matrix server name; user IDs end in it (@alice:NAME). Cannot change later.
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Address the homeserver listens on for Matrix clients [default: 0.0.0.0:443].
    #[arg(long, value_name = "IP:PORT")]
    pub client_listen: Option<String>,
    /// TLS on the client port: `unit-ca` (a certificate from the unit CA, renewed by the
    /// homeserver), `imported` (your organisation's, with --client-cert and --client-key) or
    /// `off` (plain HTTP: loopback only, unless --insecure-plain-http) [default: unit-ca].
    #[arg(long, value_name = "MODE")]
    pub client_tls: Option<String>,
    /// A DNS name or IP address users type to reach this unit; repeat for several. The client
    /// certificate covers each [default: the host of --public-base-url, else the server name].
    #[arg(long, value_name = "NAME")]
    pub public_name: Vec<String>,
    /// With `--client-tls imported`: the certificate (PEM, leaf first).
    #[arg(long, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// With --client-cert: its private key (PEM).
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// With --client-cert: more of the chain (PEM), optionally ending with the root.
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub client_chain: Option<PathBuf>,
    /// Also listen with plain HTTP here (e.g. 0.0.0.0:80), serving only the unit CA and a
    /// page with its fingerprint, and redirecting everything else to HTTPS.
    #[arg(long, value_name = "IP:PORT")]
    pub ca_http_listen: Option<String>,
    /// With `--client-tls off` on an address other than loopback: accept that passwords and
    /// messages cross the network in clear.
    #[arg(long)]
    pub insecure_plain_http: bool,
    /// Address it listens on for peer units [default: 0.0.0.0:8448].
    #[arg(long, value_name = "IP:PORT")]
    pub federation_listen: Option<String>,
    /// Address peer units use to reach this unit; repeat for several
    /// [default: the server name on the federation port].
    #[arg(long, value_name = "HOST:PORT")]
    pub federation_endpoint: Vec<String>,
    /// The URL users' Matrix clients reach this unit at, served in /.well-known/matrix/client
    /// [default: https:// + the first public name; with TLS off http:// + the client
    /// address].
    #[arg(long, value_name = "URL")]
    pub public_base_url: Option<String>,
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

/// `appliance peer …`.
#[derive(Debug, Subcommand)]
pub enum PeerCommand {
    /// Write this unit's signed peer card, for the admins of other units to import.
    ///
    /// Prints the card (JSON) on stdout, or writes it to FILE; the fingerprint goes to stderr.
    Export {
        /// Write the card to this file (for example on a mounted USB stick) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Show this unit's fingerprint, to read aloud to the admin who imports our card.
    Fingerprint,
    /// Put another unit on the allow-list from its peer card.
    ///
    /// Checks the card's signature, shows its server name, endpoints and fingerprint, and asks
    /// you to confirm the fingerprint is the one the other unit's admin reads out (from
    /// `appliance peer fingerprint` on their unit). A card for a server already on the list
    /// replaces the old one (after a key rotation, say). A running homeserver picks it up at
    /// once.
    Import {
        /// The card file (`-` reads it from stdin).
        file: PathBuf,
        /// The fingerprint the other admin read out; the card is refused unless it matches.
        /// Letters may be typed in either case, with or without dashes and spaces.
        #[arg(long, value_name = "FP")]
        expect_fingerprint: Option<String>,
        /// Import without asking to confirm the fingerprint (only when you checked it another
        /// way).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Put a server that is not an Outpost unit (a Synapse, say) on the allow-list by hand.
    ///
    /// Takes what an Outpost card would carry: the server name, where to reach it, its signing
    /// key(s) (from its /_matrix/key/v2/server or its key file) and either the CA that issued
    /// its federation certificate or, for a self-signed certificate, a pin of its key.
    Add {
        /// The server's Matrix server name (may carry a port).
        #[arg(long, value_name = "NAME")]
        server_name: String,
        /// Where its federation listener is reached; repeat for several (tried in order).
        #[arg(long, value_name = "HOST:PORT", required = true)]
        endpoint: Vec<String>,
        /// One of its signing keys, as `ed25519:KEY_ID=BASE64_PUBLIC_KEY`; repeat for several.
        #[arg(long, value_name = "ed25519:ID=BASE64", required = true)]
        verify_key: Vec<String>,
        /// The CA certificate (PEM) that issued its federation TLS certificate.
        #[arg(long, value_name = "PEM", required_unless_present = "spki_sha256")]
        ca_file: Option<PathBuf>,
        /// Instead of a CA: the base64 SHA-256 of its certificate's public key (SPKI), e.g.
        /// from `openssl x509 -in cert.pem -pubkey -noout | openssl pkey -pubin -outform der |
        /// openssl dgst -sha256 -binary | openssl base64`. Only the certificate with that key
        /// is accepted; its names and dates are not checked.
        #[arg(long, value_name = "BASE64", conflicts_with = "ca_file")]
        spki_sha256: Option<String>,
    },
    /// List the peers on the allow-list, with the state of the link to each.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Take a peer off the allow-list: this unit stops talking to it and refuses its requests.
    Remove {
        /// The peer's server name.
        name: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// `appliance appservice …`.
#[derive(Debug, Subcommand)]
pub enum AppserviceCommand {
    /// Register an appservice from the registration file its bridge generated.
    ///
    /// The file is checked completely before anything is written: it parses, the tokens are
    /// there and differ from each other and from every registered appservice's, the regexes
    /// compile, no exclusive namespace may claim the IDs of another appservice's, and `url` is
    /// an IP address or localhost (a unit resolves no names) or null for a send-only
    /// appservice. Then it is written to <DATA_DIR>/appservices/<id>.yaml (mode 0600: it holds
    /// both tokens) and a running homeserver loads it at once; a stopped one at its next start.
    Add {
        /// The registration file (YAML; `-` for stdin).
        file: PathBuf,
        /// Replace the registration with the same id instead of refusing.
        #[arg(long)]
        replace: bool,
    },
    /// List the registered appservices, with their link state when the homeserver runs.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Unregister an appservice: its file is removed and the homeserver stops talking to it.
    Remove {
        /// The appservice's id.
        id: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Check that the homeserver reaches an appservice: it calls the appservice's ping
    /// endpoint and reports the round trip (exit 5 when the appservice does not answer).
    Ping {
        /// The appservice's id.
        id: String,
    },
}

/// `appliance keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Replace the signing key with a new one (homeserver stopped).
    ///
    /// The old key's public half is kept, so everything it signed still verifies. Peers trust
    /// this unit by its key, so each of them must import the new peer card (`appliance peer
    /// export`) before they accept this unit again.
    Rotate {
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// `appliance tls …`.
#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Issue a new federation certificate from the unit CA (homeserver stopped).
    ///
    /// Peers trust the unit CA, which does not change, so they keep their cards.
    Renew,
    /// The certificate of the client port (HTTPS), which users' Matrix clients check.
    ///
    /// By default the homeserver issues it from the unit CA for the names users type
    /// (`listen.public_names`) and renews it itself; users' devices must then trust the unit
    /// CA (`appliance tls client ca`). Or it is a certificate from the organisation's PKI,
    /// imported with `appliance tls client import`.
    #[command(subcommand)]
    Client(TlsClientCommand),
}

/// `appliance tls client …`.
#[derive(Debug, Subcommand)]
pub enum TlsClientCommand {
    /// Serve a certificate from the organisation's PKI on the client port.
    ///
    /// Everything is checked before anything is written: the key belongs to the certificate,
    /// the certificate covers every name users type (`listen.public_names`), it is valid
    /// today, and the chain leads from it through the intermediates (to the root, if given).
    /// Then the files are written to <DATA_DIR>/tls/client-imported/, the config is switched
    /// to `listen.tls = "imported"`, and a running homeserver is asked to load them.
    Import(TlsImportArgs),
    /// Serve a certificate from the unit CA again, instead of an imported one.
    ///
    /// Sets `listen.tls = "unit-ca"`; the homeserver issues a certificate for the names users
    /// type (`listen.public_names`) and renews it itself. A running homeserver switches at once.
    /// Users' devices must then trust the unit CA (`appliance tls client ca`).
    UnitCa,
    /// Print the unit CA certificate (PEM) and its SHA-256 fingerprint.
    ///
    /// Users' devices must trust this CA to reach the unit over HTTPS when the client
    /// certificate comes from the unit CA. The PEM goes to stdout (or to --out FILE); the
    /// fingerprint, which users compare with what their phone or browser shows, to stderr.
    Ca {
        /// Write the PEM to this file (for example on a mounted USB stick) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// `appliance tls client import`.
#[derive(Debug, Args)]
pub struct TlsImportArgs {
    /// The certificate (PEM): the unit's certificate first, then any intermediates.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1, unencrypted).
    pub key: PathBuf,
    /// More of the chain (PEM): intermediates, optionally ending with the root.
    pub chain: Option<PathBuf>,
}

/// `appliance status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `appliance selftest`.
#[derive(Debug, Args)]
pub struct SelftestArgs {
    /// Print the steps and the verdict as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// How long each step may take before it counts as failed.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 20,
        value_parser = clap::value_parser!(u64).range(1..=600)
    )]
    pub step_timeout: u64,
    /// Send the message through this peer unit (its server name, on the allow-list) to the
    /// account given with --peer-user, instead of between two accounts of this unit.
    #[arg(
        long,
        value_name = "NAME",
        requires_all = ["peer_user", "peer_password_file", "peer_client_url"]
    )]
    pub peer: Option<String>,
    /// With --peer: the test account on the peer that receives the message (@name:NAME).
    #[arg(long, value_name = "USER_ID", requires = "peer")]
    pub peer_user: Option<String>,
    /// With --peer: read the test account's password from this file's first line (`-` for
    /// stdin).
    #[arg(long, value_name = "FILE", requires = "peer")]
    pub peer_password_file: Option<PathBuf>,
    /// With --peer: the peer's client API, for example https://10.0.0.2 or
    /// http://10.0.0.2:8008. Over HTTPS the peer's certificate must chain to the unit CA on
    /// its card (or to --peer-ca) and name the URL's host.
    #[arg(long, value_name = "URL", requires = "peer")]
    pub peer_client_url: Option<String>,
    /// With an https:// --peer-client-url whose certificate comes from the organisation's
    /// PKI rather than the peer's unit CA: that CA (PEM).
    #[arg(long, value_name = "FILE", requires = "peer_client_url")]
    pub peer_ca: Option<PathBuf>,
}

/// `appliance notice`.
#[derive(Debug, Args)]
pub struct NoticeArgs {
    /// The message.
    pub message: String,
    /// Send it to this user (name or full user ID) only; without it, to every active account.
    #[arg(long)]
    pub user: Option<String>,
}

/// `appliance oauth …`.
#[derive(Debug, Subcommand)]
pub enum OauthCommand {
    /// List the registered OAuth clients with their open sessions (needs the homeserver
    /// running).
    Clients {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Sign out every device a user signed in through OAuth (their tokens are revoked; needs
    /// the homeserver running).
    Revoke {
        /// `alice` or `@alice:server`.
        user: String,
    },
}

/// `appliance reports`.
#[derive(Debug, Args)]
pub struct ReportsArgs {
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
    /// Encrypt the backup with a passphrase (asked twice at the console unless
    /// --passphrase-file is given). Without the passphrase the backup cannot be restored.
    #[arg(long)]
    pub encrypt: bool,
    /// With --encrypt: read the passphrase from the first line of FILE, or from stdin with `-`,
    /// instead of asking (keeps it out of the process list and shell history).
    #[arg(long, value_name = "FILE", requires = "encrypt")]
    pub passphrase_file: Option<PathBuf>,
}

/// `appliance restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file, as written by `appliance backup` (plain or encrypted: it is detected).
    pub file: PathBuf,
    /// For an encrypted backup: read the passphrase from the first line of FILE, or from stdin
    /// with `-`, instead of asking at the console.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
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

/// `appliance update …`.
#[derive(Debug, Subcommand)]
pub enum UpdateCommand {
    /// Check a signed update bundle and install it into the inactive root slot.
    ///
    /// The bundle's signature is checked against the vendor certificate built into the unit,
    /// then its compatible string and version (an older or equal version is refused unless
    /// --allow-downgrade). A backup of the data is taken (beside the data directory) before
    /// the slot is written. Nothing is changed when a check fails.
    Apply(UpdateApplyArgs),
    /// Show both root slots: version, which one runs, which boots next, good / pending / bad.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Settle an update after a boot (run by the unit's services, not by hand).
    ///
    /// On the first boot of the old slot after the new one failed its tries, restores the
    /// pre-update backup (the newer release may have migrated the database past what this one
    /// reads), records the rollback, and forgets the pending update; once the new slot is
    /// blessed good, forgets the pending update. Does nothing when no update is pending.
    #[command(hide = true)]
    Settle,
}

/// `appliance update apply`.
#[derive(Debug, Args)]
pub struct UpdateApplyArgs {
    /// The update bundle (.raucb); with --device, its path on that stick.
    pub file: PathBuf,
    /// Mount this device (a USB stick, e.g. /dev/disk/by-label/UPDATE) read-only and take
    /// FILE from it.
    #[arg(long, value_name = "DEV")]
    pub device: Option<PathBuf>,
    /// Install even if the bundle's version is not newer than the running one.
    #[arg(long)]
    pub allow_downgrade: bool,
    /// Restart into the new version once it is installed, without asking.
    #[arg(long)]
    pub reboot: bool,
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
