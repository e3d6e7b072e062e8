//! The documented exit codes and the one error type every command returns.
//!
//! A command either succeeds with an [`Exit`] (`status` and `selftest` may succeed and still
//! report [`Exit::Attention`]) or fails with a [`Failure`]: a code plus the one message `main`
//! prints.

use std::fmt;

/// Process exit codes; `appliance --help` lists them and scripts may rely on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done.
    Success = 0,
    /// Something broke: an I/O or database error, or an unexpected answer from the server.
    Failure = 1,
    /// Bad command line, or a value is missing and there is no terminal to ask for it on.
    Usage = 2,
    /// The input was refused: an invalid provisioning file, a weak password, an unknown or
    /// existing user, a backup that fails verification, a peer card that fails verification
    /// or whose fingerprint is not the one expected, an unknown peer, an invalid or conflicting
    /// appservice registration, an unknown appservice.
    Rejected = 3,
    /// The unit's state does not allow it: already set up, not set up, the homeserver is running
    /// (or stopped when it must run), a backup of another unit, a confirmation not given.
    WrongState = 4,
    /// `status`: something needs the admin's attention; `selftest`: a step failed;
    /// `appservice ping`: the appservice did not answer.
    Attention = 5,
    /// `restore`: the passphrase does not open the encrypted backup. Separate from
    /// [`Exit::Rejected`] so a script can tell "ask again" from "this file is damaged".
    WrongPassphrase = 6,
}

/// The exit code table, as shown at the end of `appliance --help` and in the man page.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  failure: an I/O or database error, or an unexpected answer from the homeserver
  2  usage: bad command line, or a value is missing and there is no terminal to ask on
  3  rejected: invalid input (provisioning file, weak password, unknown or existing user,
     a backup that fails verification, a peer card that fails verification or does not
     have the expected fingerprint, an unknown peer, an invalid or conflicting appservice
     registration, an unknown appservice)
  4  wrong state: the unit is already set up / not set up, the homeserver is running (or
     stopped when it must run), a backup of another unit, a confirmation not given
  5  status: something needs attention; selftest: a step failed; appservice ping: the
     appservice did not answer
  6  restore: the passphrase does not open the encrypted backup
Interrupted (Ctrl-C, SIGTERM, a console hang-up): what was half-done is undone, then the
command dies of the signal (a shell sees 130, 143 or 129).";

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit as u8)
    }
}

/// Why a command failed, with the exit code that says what kind of failure it is.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub code: Exit,
    /// What went wrong and, where there is one, what to do about it.
    pub message: String,
}

impl Failure {
    /// A failure of kind `code`.
    pub fn new(code: Exit, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Something broke ([`Exit::Failure`]).
    pub fn broke(message: impl Into<String>) -> Self {
        Self::new(Exit::Failure, message)
    }

    /// Bad usage ([`Exit::Usage`]).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }

    /// Refused input ([`Exit::Rejected`]).
    pub fn rejected(message: impl Into<String>) -> Self {
        Self::new(Exit::Rejected, message)
    }

    /// Not possible in the unit's current state ([`Exit::WrongState`]).
    pub fn state(message: impl Into<String>) -> Self {
        Self::new(Exit::WrongState, message)
    }

    /// An I/O error on `path` while doing `what`.
    pub fn io(what: &str, path: &std::path::Path, err: std::io::Error) -> Self {
        Self::broke(format!("{what} {}: {err}", path.display()))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Maps a homeserver error (from an offline operation or a `{"errcode"}` answer) to a failure:
/// the errors about what the admin asked for are [`Exit::Rejected`], the rest broke.
pub fn from_errcode(errcode: &str, message: String) -> Failure {
    match errcode {
        "M_NOT_FOUND" | "M_USER_IN_USE" | "M_INVALID_USERNAME" | "M_INVALID_PARAM"
        | "M_USER_DEACTIVATED" | "M_BAD_JSON" | "M_WEAK_PASSWORD" => Failure::rejected(message),
        _ => Failure::broke(message),
    }
}

/// Maps an error from the homeserver library (offline operations).
pub fn from_homeserver(err: homeserver::error::Error) -> Failure {
    match err {
        homeserver::error::Error::Matrix { code, message } => from_errcode(code.as_str(), message),
        homeserver::error::Error::Conflict(message) => Failure::rejected(message),
        other => Failure::broke(other.to_string()),
    }
}
