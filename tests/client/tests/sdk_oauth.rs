//! Matrix 2.0 sign-in with matrix-rust-sdk's OAuth 2.0 support (`Client::oauth()`) against a
//! real Outpost homeserver: the SDK discovers the server metadata
//! (`/_matrix/client/v1/auth_metadata`), registers itself (dynamic client registration, a native
//! app with a loopback redirect URI), builds the authorization URL (PKCE S256, a device scope);
//! a scripted user agent (src/browser.rs) opens it, signs alice in on the unit's page and allows
//! the client on the consent page, both real HTML form POSTs with their CSRF tokens and the
//! session cookie; the SDK finishes the login with the URL of the 303 (code exchange, /whoami).
//! Then alice's OAuth device syncs, shares an encrypted room with bob (registered the legacy way)
//! and sends him a megolm message he decrypts; the SDK refreshes its token (forced) and the new
//! token works; the SDK resets alice's cross-signing identity through the `m.oauth` UIA stage
//! (the agent approves on the account page at the URL the SDK was given); finally the SDK logs out (RFC 7009 revocation) and the server refuses the
//! access token and the refresh token. The unit serves HTTPS from its dev CA, which the SDK
//! and the agents trust alone: the SDK's revocation (the `oauth2` crate) refuses a non-HTTPS
//! endpoint, as a client in the field would meet it.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use matrix_sdk::authentication::oauth::registration::{
    ApplicationType, ClientMetadata, Localized, OAuthGrantType,
};
use matrix_sdk::config::SyncSettings;
use matrix_sdk::encryption::CrossSigningResetAuthType;
use matrix_sdk::reqwest::{self, Url};
use matrix_sdk::ruma::api::client::room::create_room::v3::{
    Request as CreateRoomRequest, RoomPreset,
};
use matrix_sdk::ruma::api::client::uiaa;
use matrix_sdk::ruma::events::InitialStateEvent;
use matrix_sdk::ruma::events::room::encryption::RoomEncryptionEventContent;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::serde::Raw;
use matrix_sdk::ruma::{OwnedDeviceId, OwnedUserId};
use matrix_sdk::{Client, Room, RoomMemberships};
use outpost_client_tests::Server;
use outpost_client_tests::browser::UserAgent;
use outpost_client_tests::sdk::{self, register};
use serde_json::Value;
use tokio::time::Instant;

/// Deadline for each "wait until the other side sees it" step.
const STEP_DEADLINE: Duration = Duration::from_secs(60);
/// Long-poll timeout of each /sync request.
const SYNC_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline for the whole scenario.
const SCENARIO_DEADLINE: Duration = Duration::from_secs(240);
/// The redirect URI alice's app registers: a native app's loopback URI (any port at use).
const REGISTERED_REDIRECT: &str = "http://127.0.0.1/callback";
const SECRET: &str = "Signed in through OAuth, sent as megolm ciphertext";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_login_encrypted_message_refresh_and_logout() {
    let server = Server::start_tls().unwrap_or_else(|e| panic!("cannot start the homeserver: {e}"));
    eprintln!("homeserver up at {}", server.url());
    sdk::run_scenario(server, SCENARIO_DEADLINE, scenario).await;
}

/// A logged-in SDK client and who it is.
struct User {
    client: Client,
    id: OwnedUserId,
    device: OwnedDeviceId,
}

impl User {
    async fn sync_once(&self) -> Result<matrix_sdk::sync::SyncResponse> {
        self.client
            .sync_once(SyncSettings::new().timeout(SYNC_TIMEOUT))
            .await
            .with_context(|| format!("{}'s /sync", self.id))
    }
}

async fn scenario(server: &Server) -> Result<()> {
    // Accounts: bob with the legacy API; alice's account too (her legacy session logs out, so
    // that her only device is the OAuth one).
    let bob_client = sdk::client_builder(server).build().await?;
    let bob_id = register(&bob_client, "bob").await?.user_id;
    let bob = User {
        device: bob_client.device_id().context("bob's device")?.to_owned(),
        client: bob_client,
        id: bob_id,
    };
    let legacy = sdk::client_builder(server).build().await?;
    register(&legacy, "alice").await?;
    legacy
        .logout()
        .await
        .context("alice's legacy session logs out")?;
    eprintln!("step 1 ok: bob and alice have accounts");

    // Step 2: discovery and registration through the SDK.
    let client = sdk::client_builder(server)
        .handle_refresh_tokens()
        .build()
        .await?;
    let oauth = client.oauth();
    let metadata = oauth
        .server_metadata()
        .await
        .context("step 2: the SDK's discovery of /_matrix/client/v1/auth_metadata")?;
    ensure!(
        metadata.issuer.as_str() == format!("{}/", server.url()),
        "step 2: issuer {} is not the unit's base URL {}/",
        metadata.issuer,
        server.url()
    );
    let redirect = Url::parse(REGISTERED_REDIRECT)?;
    let mut client_metadata = ClientMetadata::new(
        ApplicationType::Native,
        vec![OAuthGrantType::AuthorizationCode {
            redirect_uris: vec![redirect],
        }],
        Localized::new(Url::parse("https://client.example.org/")?, []),
    );
    client_metadata.client_name = Some(Localized::new("Outpost SDK test".to_owned(), []));
    let registered = oauth
        .register_client(&Raw::new(&client_metadata)?)
        .await
        .context("step 2: dynamic client registration")?;
    eprintln!(
        "step 2 ok: registered as client {}",
        registered.client_id.as_str()
    );

    // Step 3: the authorization URL, the user's part in the scripted agent, the SDK finishes.
    let redirect_uri = Url::parse("http://127.0.0.1:41234/callback")?;
    let authorization = oauth
        .login(redirect_uri, None, None, None)
        .build()
        .await
        .context("step 3: building the authorization URL")?;
    let url = authorization.url.to_string();
    ensure!(
        url.starts_with(metadata.authorization_endpoint.as_str())
            && url.contains("code_challenge_method=S256"),
        "step 3: unexpected authorization URL {url}"
    );
    let mut agent = UserAgent::new(server.ca_pem().as_deref())?;
    let callback = agent
        .authorize(&url, "alice", "alice-password-1234")
        .await
        .context("step 3: signing in and allowing on the unit's pages")?;
    ensure!(
        callback.starts_with("http://127.0.0.1:41234/callback?"),
        "step 3: the unit redirected to {callback}"
    );
    oauth
        .finish_login(Url::parse(&callback)?.into())
        .await
        .context("step 3: the SDK's finish_login (token request, /whoami)")?;
    let whoami = client.whoami().await.context("step 3: /whoami")?;
    let device = client
        .device_id()
        .context("no device after login")?
        .to_owned();
    ensure!(
        whoami.user_id.as_str() == format!("@alice:{}", server.server_name()),
        "step 3: signed in as {}",
        whoami.user_id
    );
    ensure!(
        whoami.device_id.as_deref() == Some(&*device),
        "step 3: /whoami names device {:?}, the SDK allocated {device}",
        whoami.device_id
    );
    let tokens = client.session_tokens().context("no session tokens")?;
    ensure!(
        tokens.refresh_token.is_some(),
        "step 3: no refresh token was issued"
    );
    eprintln!("step 3 ok: alice signed in through OAuth on device {device}");
    let alice = User {
        client,
        id: whoami.user_id,
        device,
    };

    // Step 4: an encrypted room; alice's OAuth device sends, bob decrypts.
    alice.sync_once().await.context("step 4")?;
    bob.sync_once().await.context("step 4")?;
    let mut create = CreateRoomRequest::new();
    create.preset = Some(RoomPreset::PrivateChat);
    create.invite = vec![bob.id.clone()];
    create.initial_state = vec![
        InitialStateEvent::with_empty_state_key(
            RoomEncryptionEventContent::with_recommended_defaults(),
        )
        .to_raw_any(),
    ];
    let room = alice
        .client
        .create_room(create)
        .await
        .context("step 4: alice creates an encrypted room inviting bob")?;
    let room_id = room.room_id().to_owned();
    let deadline = Instant::now() + STEP_DEADLINE;
    let bob_room = loop {
        bob.sync_once().await?;
        if let Some(room) = bob.client.get_room(&room_id) {
            break room;
        }
        ensure!(
            Instant::now() < deadline,
            "step 4: bob never saw the invite"
        );
    };
    bob_room.join().await.context("step 4: bob joins")?;
    wait_joined(&alice, &room, &bob).await.context("step 4")?;
    wait_device_known(&alice, &bob).await.context("step 4")?;
    wait_device_known(&bob, &alice).await.context("step 4")?;
    send_and_decrypt(&alice, &room, &bob, &bob_room, SECRET)
        .await
        .context("step 4: alice sends, bob decrypts")?;
    eprintln!("step 4 ok: bob decrypted the message from alice's OAuth device");

    // Step 5: a forced refresh rotates both tokens; the new access token works.
    let before = alice.client.session_tokens().context("tokens")?;
    alice
        .client
        .oauth()
        .refresh_access_token()
        .await
        .context("step 5: refresh_access_token")?;
    let after = alice.client.session_tokens().context("tokens")?;
    ensure!(
        after.access_token != before.access_token,
        "step 5: the access token did not change"
    );
    ensure!(
        after.refresh_token.is_some() && after.refresh_token != before.refresh_token,
        "step 5: the refresh token did not rotate"
    );
    let again = alice.client.whoami().await.context("step 5: /whoami")?;
    ensure!(
        again.device_id.as_deref() == Some(&*alice.device),
        "step 5: after the refresh /whoami names device {:?}",
        again.device_id
    );
    send_and_decrypt(
        &alice,
        &room,
        &bob,
        &bob_room,
        "and again after the refresh",
    )
    .await
    .context("step 5: a message after the refresh")?;
    eprintln!("step 5 ok: tokens rotated, the device kept working");

    // Step 5b: a first cross-signing identity needs no UIA; replacing it asks for `m.oauth`.
    // The agent, still signed in on the unit's pages, approves at the URL the SDK was given;
    // then the SDK's handle retries with the session and the reset goes through.
    let encryption = alice.client.encryption();
    encryption
        .bootstrap_cross_signing(None)
        .await
        .context("step 5b: the first cross-signing identity")?;
    let handle = encryption
        .reset_cross_signing()
        .await
        .context("step 5b: reset_cross_signing")?
        .context("step 5b: replacing the identity asked for no authentication")?;
    let info = match handle.auth_type() {
        CrossSigningResetAuthType::OAuth(info) => info.clone(),
        CrossSigningResetAuthType::Uiaa(uiaa) => {
            bail!("step 5b: offered UIA {:?} instead of m.oauth", uiaa.flows)
        }
    };
    let page = agent
        .open(info.approval_url.as_str())
        .await
        .context("step 5b: opening the approval URL")?;
    ensure!(
        page.status == 200 && page.body.contains("cross-signing"),
        "step 5b: the approval URL {} answered {}:\n{}",
        info.approval_url,
        page.status,
        page.body
    );
    let approved = agent
        .submit(&page, &[])
        .await
        .context("step 5b: approving")?;
    ensure!(
        approved.status == 200 && approved.body.contains("Reset approved"),
        "step 5b: approving answered {}:\n{}",
        approved.status,
        approved.body
    );
    let mut auth = uiaa::OAuth::new();
    auth.session = info.session.clone();
    handle
        .auth(Some(uiaa::AuthData::OAuth(auth)))
        .await
        .context("step 5b: the SDK finishes the reset")?;
    let status = encryption
        .cross_signing_status()
        .await
        .context("step 5b: cross-signing status")?;
    ensure!(
        status.is_complete(),
        "step 5b: after the reset the identity is incomplete: {status:?}"
    );
    eprintln!("step 5b ok: cross-signing reset through the m.oauth stage");

    // Step 6: logout revokes; the server refuses both tokens.
    alice
        .client
        .logout()
        .await
        .context("step 6: the SDK's logout (revocation)")?;
    // Trusting only the unit's CA, as every client here does.
    let mut http = reqwest::Client::builder();
    if let Some(pem) = server.ca_pem() {
        http = http.tls_certs_only(vec![reqwest::Certificate::from_pem(&pem)?]);
    }
    let http = http.build()?;
    let refused = http
        .get(format!("{}/_matrix/client/v3/account/whoami", server.url()))
        .bearer_auth(&after.access_token)
        .send()
        .await?;
    let status = refused.status().as_u16();
    let body: Value = serde_json::from_str(&refused.text().await?).unwrap_or(Value::Null);
    ensure!(
        status == 401 && body["errcode"] == "M_UNKNOWN_TOKEN",
        "step 6: the access token still answers {status} {body} after logout"
    );
    let refresh = after.refresh_token.clone().unwrap_or_default();
    let client_id = registered.client_id.as_str();
    let grant = http
        .post(metadata.token_endpoint.as_str())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=refresh_token&refresh_token={}&client_id={}",
            outpost_client_tests::html::form_encode(&refresh),
            outpost_client_tests::html::form_encode(client_id),
        ))
        .send()
        .await?;
    let status = grant.status().as_u16();
    let body: Value = serde_json::from_str(&grant.text().await?).unwrap_or(Value::Null);
    ensure!(
        status == 400 && body["error"] == "invalid_grant",
        "step 6: the refresh token still answers {status} {body} after logout"
    );
    eprintln!("step 6 ok: after logout both tokens are refused");
    Ok(())
}

/// Syncs `user` until `member` is joined in `room` as `user`'s client sees it.
async fn wait_joined(user: &User, room: &Room, member: &User) -> Result<()> {
    let deadline = Instant::now() + STEP_DEADLINE;
    loop {
        let joined = room.members_no_sync(RoomMemberships::JOIN).await?;
        if joined.iter().any(|m| m.user_id() == member.id) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{} not joined after {STEP_DEADLINE:?}",
            member.id
        );
        user.sync_once().await?;
    }
}

/// Syncs `user` until their SDK holds `other`'s device keys.
async fn wait_device_known(user: &User, other: &User) -> Result<()> {
    let expected = other.client.encryption().ed25519_key().await;
    let deadline = Instant::now() + STEP_DEADLINE;
    loop {
        let device = user
            .client
            .encryption()
            .get_device(&other.id, &other.device)
            .await?;
        let key = device
            .as_ref()
            .and_then(|device| device.ed25519_key())
            .map(|key| key.to_base64());
        if device.is_some() && key == expected {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{}'s SDK never learnt {}'s device {}",
            user.id,
            other.id,
            other.device
        );
        user.sync_once().await?;
        other.sync_once().await?;
    }
}

/// `sender` sends `body` encrypted; `receiver` syncs until it arrives and decrypts it.
async fn send_and_decrypt(
    sender: &User,
    room: &Room,
    receiver: &User,
    receiver_room: &Room,
    body: &str,
) -> Result<()> {
    let sent = room
        .send(RoomMessageEventContent::text_plain(body))
        .await
        .context("sending")?;
    ensure!(
        sent.encryption_info.is_some(),
        "the SDK sent the message unencrypted"
    );
    let event_id = sent.response.event_id;
    let deadline = Instant::now() + STEP_DEADLINE;
    loop {
        let response = receiver.sync_once().await?;
        let arrived = response
            .rooms
            .joined
            .get(room.room_id())
            .and_then(|update| {
                update
                    .timeline
                    .events
                    .iter()
                    .find(|event| event.event_id().as_deref() == Some(&*event_id))
            })
            .cloned();
        let event = match arrived {
            Some(event) if event.encryption_info().is_some() => event,
            // Arrived before its room key: decrypt again once more to-device events came.
            Some(event) => receiver_room
                .decrypt_event(event.raw().cast_ref_unchecked(), None)
                .await
                .context("decrypting again")?,
            None => {
                ensure!(
                    Instant::now() < deadline,
                    "{event_id} never reached {}",
                    receiver.id
                );
                continue;
            }
        };
        let json: Value = serde_json::from_str(event.raw().json().get())?;
        let info = event
            .encryption_info()
            .context("the receiver could not decrypt the message")?;
        ensure!(
            json["content"]["body"] == body && info.sender == sender.id,
            "decrypted {json} from {}",
            info.sender
        );
        match &info.sender_device {
            Some(device) if *device == sender.device => return Ok(()),
            other => bail!("decrypted as from device {other:?}, not {}", sender.device),
        }
    }
}
