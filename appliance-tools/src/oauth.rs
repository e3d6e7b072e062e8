//! `appliance oauth clients` and `appliance oauth revoke USER`: the OAuth 2.0 clients users
//! signed in with, and ending one user's OAuth sessions. Both go through the admin socket (the
//! running homeserver holds the token cache a revocation must clear).

use homeserver::admin::wire::{OAuthClient, OAuthClientList, OAuthRevoked};

use crate::base::admin_client::AdminClient;
use crate::base::exit::{Exit, Failure};
use crate::cli::OauthCommand;
use crate::unit::{START_HINT, ServerState, Unit};

/// Runs `appliance oauth …`.
pub fn run(unit: &Unit, command: &OauthCommand) -> Result<Exit, Failure> {
    if !matches!(unit.server_state()?, ServerState::Running) {
        return Err(Failure::state(format!(
            "the homeserver is not running. Start it (`{START_HINT}`) and try again."
        )));
    }
    let admin = AdminClient::new(unit.socket_path());
    match command {
        OauthCommand::Clients { json } => {
            let list: OAuthClientList = admin.get("/v1/oauth/clients")?;
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list)
                        .map_err(|err| Failure::broke(format!("encoding JSON: {err}")))?
                );
            } else {
                print_clients(&list.clients);
            }
        }
        OauthCommand::Revoke { user } => {
            let path = format!(
                "/v1/users/{}/oauth/revoke",
                homeserver::util::urlencode(user)
            );
            let revoked: OAuthRevoked = admin.post(&path, &serde_json::json!({}))?;
            if revoked.devices.is_empty() {
                println!("{} had no OAuth sessions.", revoked.user_id);
            } else {
                println!(
                    "Signed {} out of {} device(s): {}",
                    revoked.user_id,
                    revoked.devices.len(),
                    revoked.devices.join(", ")
                );
            }
        }
    }
    Ok(Exit::Success)
}

fn print_clients(clients: &[OAuthClient]) {
    if clients.is_empty() {
        println!("No OAuth clients registered.");
        return;
    }
    for client in clients {
        println!(
            "{}  {}  {} ({}, {} open session(s))",
            client.client_id,
            client.client_name.as_deref().unwrap_or("(no name)"),
            client.client_uri,
            client.application_type,
            client.sessions
        );
    }
}
