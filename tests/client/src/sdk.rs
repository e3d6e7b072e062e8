//! What every matrix-rust-sdk scenario shares: a client for the test server, a registered and
//! logged-in account, and running a scenario under a deadline with the server's log in the
//! failure report. One implementation, so the test files do not each carry a copy.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use matrix_sdk::config::RequestConfig;
use matrix_sdk::ruma::api::client::account::register::v3::{
    Request as RegisterRequest, Response as RegisterResponse,
};
use matrix_sdk::ruma::api::client::uiaa::{AuthData, AuthType, Dummy};
use matrix_sdk::{Client, ClientBuilder};

use crate::Server;

/// A client builder with the in-memory store, pointed at `server`, with bounded retries (a
/// request gives up after 20 s). For a TLS server it trusts the unit's CA and nothing else.
pub fn client_builder(server: &Server) -> ClientBuilder {
    let builder = Client::builder()
        .homeserver_url(server.url())
        .request_config(RequestConfig::short_retry().timeout(Duration::from_secs(20)));
    match server.ca_pem() {
        Some(pem) => builder
            .add_root_certificates(vec![
                matrix_sdk::reqwest::Certificate::from_pem(&pem)
                    .expect("the unit CA file holds a PEM certificate"),
            ])
            .disable_built_in_root_certificates(),
        None => builder,
    }
}

/// Runs `scenario` against `server` for at most `deadline`, so a hung server fails the test
/// instead of CI; then stops the server. Panics with the server's log when the scenario failed,
/// and when the server did not exit cleanly (status 0) on SIGTERM.
pub async fn run_scenario(
    mut server: Server,
    deadline: Duration,
    scenario: impl AsyncFnOnce(&Server) -> Result<()>,
) {
    let outcome = tokio::time::timeout(deadline, scenario(&server))
        .await
        .unwrap_or_else(|_| Err(anyhow!("scenario exceeded {deadline:?}")));
    let stopped = server.stop();
    if let Err(e) = outcome {
        panic!(
            "FAILED: {e:#}\n\n----- homeserver log -----\n{}\n----- end of homeserver log -----",
            server.log()
        );
    }
    match stopped {
        Ok(status) if status.success() => eprintln!("homeserver exited cleanly on SIGTERM"),
        Ok(status) => panic!(
            "homeserver exited with {status} after SIGTERM (contract: 0)\n{}",
            server.log()
        ),
        Err(e) => panic!("stopping the homeserver: {e}\n{}", server.log()),
    }
}

/// Registers `username` with the UIA dance, as a client following the spec does: a first
/// request without `auth` must get 401 with an `m.login.dummy` flow and a session; the retry
/// with that session must log the client in. The password is `<username>-password-1234`.
pub async fn register(client: &Client, username: &str) -> Result<RegisterResponse> {
    let mut request = RegisterRequest::new();
    request.username = Some(username.to_owned());
    request.password = Some(format!("{username}-password-1234"));
    request.initial_device_display_name = Some("outpost sdk test".to_owned());

    let error = match client.matrix_auth().register(request.clone()).await {
        Ok(response) => bail!("register without auth succeeded ({response:?}); expected 401 UIA"),
        Err(error) => error,
    };
    let info = error
        .as_uiaa_response()
        .with_context(|| format!("register without auth: expected a 401 UIA body, got {error}"))?;
    ensure!(
        info.flows
            .iter()
            .any(|flow| flow.stages == [AuthType::Dummy]),
        "UIA flows {:?} do not offer [m.login.dummy]",
        info.flows
    );
    let mut dummy = Dummy::new();
    dummy.session = Some(info.session.clone().context("the UIA 401 has no session")?);
    request.auth = Some(AuthData::Dummy(dummy));
    let response = client
        .matrix_auth()
        .register(request)
        .await
        .context("register with m.login.dummy and the session")?;
    ensure!(
        client.user_id() == Some(&*response.user_id),
        "the client is not logged in as {} after registering",
        response.user_id
    );
    Ok(response)
}
