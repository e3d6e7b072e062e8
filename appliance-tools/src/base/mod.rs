//! The lowest layer of the `appliance` command: what every command shares and nothing that
//! belongs to one command.
//!
//! Exit codes and the one error type ([`exit`]), talking to the admin at the console
//! ([`console`]), progress lines ([`progress`]), the admin-socket client ([`admin_client`]),
//! Ctrl-C handling ([`interrupt`]), the encrypted backup container ([`crypt`]) and the password
//! policy ([`password`]). Modules here import only each other (and the homeserver crate), never
//! [`crate::unit`] or a command module; `tests::layers` in `main.rs` checks it.

pub mod admin_client;
pub mod console;
pub mod crypt;
pub mod exit;
pub mod interrupt;
pub mod password;
pub mod progress;
