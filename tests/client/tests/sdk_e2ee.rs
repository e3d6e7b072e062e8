//! End-to-end encryption through matrix-rust-sdk against real Outpost homeservers, once with
//! both users on one server and once with alice on unit A and bob on unit B (federation):
//! alice and bob register with UIA `m.login.dummy`, their first /sync uploads their device
//! keys and one-time keys, each sees the other's device over /keys/query, alice creates a room
//! with `m.room.encryption` (megolm) in its initial state and invites bob, bob joins, each SDK
//! fetches the other's device list on its own, alice sends a text message (the SDK claims one
//! of bob's one-time keys, shares the megolm room key over /sendToDevice and sends
//! `m.room.encrypted`), bob receives it over /sync and decrypts it, both servers hold only the
//! ciphertext, and the same again for bob's reply.
//! The one-server case runs over HTTPS (`homeserver dev --tls`, the clients trusting only the
//! unit's CA); the federation case over the units' plain loopback client ports.
//! On failure it prints the step that failed, the SDK's error and the servers' logs. The SDK's
//! own warnings and errors are printed with them (set `OUTPOST_SDK_LOG`, e.g.
//! `matrix_sdk_crypto=debug`, for more), because the SDK only logs the errors of the key
//! requests it sends around /sync.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use matrix_sdk::config::SyncSettings;
use matrix_sdk::deserialized_responses::{AlgorithmInfo, TimelineEvent};
use matrix_sdk::ruma::api::client::keys::get_keys::v3::Request as KeysQueryRequest;
use matrix_sdk::ruma::api::client::room::create_room::v3::{
    Request as CreateRoomRequest, RoomPreset,
};
use matrix_sdk::ruma::api::client::room::get_room_event::v3::Request as GetEventRequest;
use matrix_sdk::ruma::events::InitialStateEvent;
use matrix_sdk::ruma::events::room::encryption::RoomEncryptionEventContent;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::{DeviceId, EventId, OwnedDeviceId, OwnedUserId, RoomId, UserId};
use matrix_sdk::{Client, Room, RoomMemberships, RoomState};
use outpost_client_tests::Server;
use outpost_client_tests::sdk::{self, register};
use serde_json::Value;
use tokio::time::Instant;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Deadline for each "wait until the other side sees it" step; federation included.
const STEP_DEADLINE: Duration = Duration::from_secs(60);
/// Long-poll timeout of each /sync request.
const SYNC_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline for a whole scenario, so that a hung server fails the test instead of CI.
const SCENARIO_DEADLINE: Duration = Duration::from_secs(240);
/// The `algorithm` of `m.room.encryption` and of megolm-encrypted room events.
const MEGOLM: &str = "m.megolm.v1.aes-sha2";

const ALICE_SAYS: &str = "Hello bob, this travels as megolm ciphertext";
const BOB_SAYS: &str = "Hello alice, decrypted and answered";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_room_on_one_server() {
    init_sdk_logging();
    let server = Server::start_tls().unwrap_or_else(|e| panic!("cannot start the homeserver: {e}"));
    eprintln!(
        "homeserver up at {} (server name {})",
        server.url(),
        server.server_name()
    );
    run(vec![server], 0, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_room_across_federation() {
    init_sdk_logging();
    let units = Server::start_federation(&["unit-a.test", "unit-b.test"])
        .unwrap_or_else(|e| panic!("cannot start the federation: {e}"));
    for unit in &units {
        eprintln!("unit {} up at {}", unit.server_name(), unit.url());
    }
    run(units, 0, 1).await;
}

/// Runs the scenario with alice on `servers[alice_on]` and bob on `servers[bob_on]` under
/// [`SCENARIO_DEADLINE`], then stops every server (each must exit 0 on SIGTERM). Panics with the
/// failed step and every server's log.
async fn run(mut servers: Vec<Server>, alice_on: usize, bob_on: usize) {
    let mut notes = Vec::new();
    let started = Instant::now();
    let outcome = tokio::time::timeout(
        SCENARIO_DEADLINE,
        scenario(&servers[alice_on], &servers[bob_on], &mut notes),
    )
    .await
    .unwrap_or_else(|_| Err(anyhow!("scenario exceeded {SCENARIO_DEADLINE:?}")));
    eprintln!("scenario took {:.1?}", started.elapsed());
    for note in &notes {
        eprintln!("note: {note}");
    }
    let stopped: Vec<_> = servers.iter_mut().map(Server::stop).collect();
    if let Err(e) = outcome {
        panic!("FAILED: {e:#}\n{}", logs(&servers));
    }
    for (server, stopped) in servers.iter().zip(stopped) {
        match stopped {
            Ok(status) if status.success() => {
                eprintln!("{} exited cleanly on SIGTERM", server.server_name());
            }
            Ok(status) => panic!(
                "{} exited with {status} after SIGTERM (contract: 0)\n{}",
                server.server_name(),
                logs(&servers)
            ),
            Err(e) => panic!("stopping {}: {e}\n{}", server.server_name(), logs(&servers)),
        }
    }
}

/// Every server's log, each between markers.
fn logs(servers: &[Server]) -> String {
    servers
        .iter()
        .map(|server| {
            format!(
                "\n----- log of {} -----\n{}\n----- end of log of {} -----\n",
                server.server_name(),
                server.log(),
                server.server_name()
            )
        })
        .collect()
}

/// Prints the SDK's tracing output into the test's captured output: warnings and errors by
/// default, or the `tracing` targets in `OUTPOST_SDK_LOG` (e.g. `matrix_sdk_crypto=debug`).
fn init_sdk_logging() {
    let targets = std::env::var("OUTPOST_SDK_LOG").unwrap_or_else(|_| "warn".into());
    let filter: tracing_subscriber::filter::Targets = targets
        .parse()
        .unwrap_or_else(|e| panic!("OUTPOST_SDK_LOG={targets:?} is not a target list: {e}"));
    // Both tests of this file call it; the second one finds the subscriber already set.
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_test_writer())
        .with(filter)
        .try_init();
}

/// One user of the scenario: the SDK client and who it is.
struct User {
    client: Client,
    id: OwnedUserId,
    device: OwnedDeviceId,
    sync: SyncSettings,
}

impl User {
    /// Registers `name` on `server` and logs the client in.
    async fn register(server: &Server, name: &str) -> Result<User> {
        let client = sdk::client_builder(server)
            .build()
            .await
            .with_context(|| format!("building {name}'s client"))?;
        let id = register(&client, name).await?.user_id;
        let device = client
            .device_id()
            .context("the client has no device ID after registering")?
            .to_owned();
        ensure!(
            client.encryption().ed25519_key().await.is_some(),
            "{name}'s client has no Olm account after logging in (is e2e-encryption enabled?)"
        );
        Ok(User {
            client,
            id,
            device,
            sync: SyncSettings::new().timeout(SYNC_TIMEOUT),
        })
    }

    /// One /sync; the SDK sends its pending key requests (upload, query, claim) around it.
    async fn sync_once(&self) -> Result<matrix_sdk::sync::SyncResponse> {
        self.client
            .sync_once(self.sync.clone())
            .await
            .with_context(|| format!("{}'s /sync", self.id))
    }

    /// Syncs until `done` holds for a response, for at most [`STEP_DEADLINE`].
    async fn sync_until(
        &self,
        what: &str,
        mut done: impl FnMut(&matrix_sdk::sync::SyncResponse) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + STEP_DEADLINE;
        loop {
            if done(&self.sync_once().await?) {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "{what}: not seen over /sync within {STEP_DEADLINE:?}"
            );
        }
    }
}

/// The whole scenario; each step's failure says which step it was.
async fn scenario(
    alice_server: &Server,
    bob_server: &Server,
    notes: &mut Vec<String>,
) -> Result<()> {
    let alice = User::register(alice_server, "alice")
        .await
        .context("step 1: register alice")?;
    let bob = User::register(bob_server, "bob")
        .await
        .context("step 1: register bob")?;
    eprintln!(
        "step 1 ok: registered {} (device {}) and {} (device {})",
        alice.id, alice.device, bob.id, bob.device
    );

    // Step 2: the first syncs upload device keys and one-time keys; each user's device is then
    // visible to the other over /keys/query (through the other's server when federated).
    alice.sync_once().await.context("step 2")?;
    bob.sync_once().await.context("step 2")?;
    wait_device_published(&bob, &alice)
        .await
        .context("step 2: bob's device keys, queried by alice")?;
    wait_device_published(&alice, &bob)
        .await
        .context("step 2: alice's device keys, queried by bob")?;
    eprintln!("step 2 ok: both devices uploaded their keys and are visible to the other user");

    // Step 3: alice creates an encrypted room and invites bob.
    let mut create = CreateRoomRequest::new();
    create.preset = Some(RoomPreset::PrivateChat);
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
        .context("step 3: alice creates a room with m.room.encryption in initial_state")?;
    let room_id = room.room_id().to_owned();
    alice
        .sync_until("alice sees the new room as joined", |response| {
            response.rooms.joined.contains_key(&room_id)
        })
        .await
        .context("step 3")?;
    check_encrypted_room("step 3: alice's room", &room)?;
    room.invite_user_by_id(&bob.id)
        .await
        .context("step 3: alice invites bob")?;
    eprintln!("step 3 ok: alice created the encrypted room {room_id} and invited bob");

    // Step 4: bob joins; alice sees him join.
    bob.sync_until("bob sees the invite", |response| {
        response.rooms.invited.contains_key(&room_id)
    })
    .await
    .context("step 4")?;
    let bob_room = bob
        .client
        .get_room(&room_id)
        .context("step 4: bob's client has no such room")?;
    bob_room
        .join()
        .await
        .context("step 4: bob joins (POST /join/{roomId})")?;
    bob.sync_until("bob sees the room as joined", |response| {
        response.rooms.joined.contains_key(&room_id)
    })
    .await
    .context("step 4")?;
    ensure!(
        bob_room.state() == RoomState::Joined,
        "step 4: bob's room state is {:?}",
        bob_room.state()
    );
    check_encrypted_room("step 4: bob's room", &bob_room)?;
    wait_joined(&alice, &room, &bob.id)
        .await
        .context("step 4: alice sees bob's join")?;
    eprintln!("step 4 ok: bob joined and alice sees him as a member");

    // Step 5: now that they share an encrypted room, each SDK tracks the other user and fetches
    // their device list (/keys/query around /sync) without being asked.
    wait_device_known(&alice, &bob)
        .await
        .context("step 5: alice's SDK learns bob's device")?;
    wait_device_known(&bob, &alice)
        .await
        .context("step 5: bob's SDK learns alice's device")?;
    eprintln!("step 5 ok: each SDK has the other's device keys");

    // Step 6: alice -> bob.
    exchange(&alice, &room, &bob, &bob_room, ALICE_SAYS, notes)
        .await
        .context("step 6: alice sends, bob decrypts")?;
    eprintln!("step 6 ok: bob decrypted alice's message");

    // Step 7: bob -> alice.
    exchange(&bob, &bob_room, &alice, &room, BOB_SAYS, notes)
        .await
        .context("step 7: bob replies, alice decrypts")?;
    eprintln!("step 7 ok: alice decrypted bob's reply");
    Ok(())
}

/// `sender` sends `body` in `sender_room`; `receiver` must get it over /sync decrypted, with the
/// sender's user and device as the encryption info, and both servers must hold it as
/// `m.room.encrypted` ciphertext only.
async fn exchange(
    sender: &User,
    sender_room: &Room,
    receiver: &User,
    receiver_room: &Room,
    body: &str,
    notes: &mut Vec<String>,
) -> Result<()> {
    let room_id = sender_room.room_id();
    let sent = sender_room
        .send(RoomMessageEventContent::text_plain(body))
        .await
        .with_context(|| {
            format!(
                "{} sends (/members, /keys/query, /keys/claim, /sendToDevice, PUT /send)",
                sender.id
            )
        })?;
    ensure!(
        sent.encryption_info.is_some(),
        "the SDK sent the message unencrypted although the room is encrypted"
    );
    let event_id = sent.response.event_id;

    let event = receive_decrypted(receiver, receiver_room, &event_id, notes).await?;
    let json = event_json(&event);
    ensure!(
        json["type"] == "m.room.message" && json["content"]["body"] == body,
        "decrypted event is not the m.room.message with body {body:?}: {json}"
    );
    ensure!(
        json["sender"] == sender.id.as_str(),
        "decrypted event has sender {} not {}",
        json["sender"],
        sender.id
    );
    let info = event
        .encryption_info()
        .context("a decrypted event without encryption info")?;
    ensure!(
        info.sender == sender.id,
        "encryption info names sender {} not {}",
        info.sender,
        sender.id
    );
    match &info.sender_device {
        Some(device) => ensure!(
            *device == sender.device,
            "encryption info names device {device} not {}",
            sender.device
        ),
        // The server serves the sender's device keys (`/keys/query`), so the SDK must know
        // which device sent it; without it every message shows "unknown device".
        None => {
            bail!("the decrypted event {event_id} carries no sender device in its encryption info")
        }
    }
    ensure!(
        matches!(info.algorithm_info, AlgorithmInfo::MegolmV1AesSha2 { .. }),
        "decrypted with {:?}, not megolm",
        info.algorithm_info
    );

    check_ciphertext_on_server(&sender.client, room_id, &event_id)
        .await
        .with_context(|| format!("GET /event on {}'s server", sender.id))?;
    check_ciphertext_on_server(&receiver.client, room_id, &event_id)
        .await
        .with_context(|| format!("GET /event on {}'s server", receiver.id))
}

/// Syncs `user` until `event_id` arrives in `room`'s timeline and returns it decrypted. An event
/// that arrives before its room key (possible when the to-device message and the event take
/// different federation transactions) is decrypted again after each later sync, and noted.
async fn receive_decrypted(
    user: &User,
    room: &Room,
    event_id: &EventId,
    notes: &mut Vec<String>,
) -> Result<TimelineEvent> {
    let deadline = Instant::now() + STEP_DEADLINE;
    let mut undecrypted: Option<TimelineEvent> = None;
    let mut to_device = 0;
    loop {
        let response = user.sync_once().await?;
        to_device += response.to_device.len();
        let arrived = response
            .rooms
            .joined
            .get(room.room_id())
            .and_then(|update| {
                update
                    .timeline
                    .events
                    .iter()
                    .find(|event| event.event_id().as_deref() == Some(event_id))
            })
            .cloned();
        if let Some(event) = arrived {
            if event.encryption_info().is_some() {
                return Ok(event);
            }
            ensure!(
                event.kind.is_utd(),
                "{event_id} arrived as a plaintext event: {}",
                event.raw().json().get()
            );
            undecrypted = Some(event);
        }
        if let Some(event) = &undecrypted {
            let retried = room
                .decrypt_event(event.raw().cast_ref_unchecked(), None)
                .await
                .context("decrypting again")?;
            if retried.encryption_info().is_some() {
                notes.push(format!(
                    "{event_id} reached {} over /sync before its room key; decrypted once the \
                     key arrived",
                    user.id
                ));
                return Ok(retried);
            }
        }
        if Instant::now() >= deadline {
            match &undecrypted {
                Some(event) => bail!(
                    "{} got {event_id} over /sync but could not decrypt it within \
                     {STEP_DEADLINE:?} ({to_device} to-device events arrived meanwhile): {:?}",
                    user.id,
                    event.kind
                ),
                None => bail!(
                    "{event_id} did not reach {} over /sync within {STEP_DEADLINE:?}",
                    user.id
                ),
            }
        }
    }
}

/// The event as the server stores and serves it (GET /rooms/{roomId}/event/{eventId}, without
/// the SDK's decryption) is `m.room.encrypted` with megolm ciphertext and no plaintext body.
async fn check_ciphertext_on_server(
    client: &Client,
    room_id: &RoomId,
    event_id: &EventId,
) -> Result<()> {
    let response = client
        .send(GetEventRequest::new(
            room_id.to_owned(),
            event_id.to_owned(),
        ))
        .await?;
    let json: Value = serde_json::from_str(response.event.json().get())?;
    let content = &json["content"];
    ensure!(
        json["type"] == "m.room.encrypted"
            && content["algorithm"] == MEGOLM
            && content["ciphertext"].is_string()
            && content["session_id"].is_string()
            && content.get("body").is_none(),
        "not an m.room.encrypted event with megolm ciphertext: {json}"
    );
    Ok(())
}

/// The room has `m.room.encryption` with megolm in the state the client synced.
fn check_encrypted_room(what: &str, room: &Room) -> Result<()> {
    let state = room.encryption_state();
    ensure!(
        state.is_encrypted(),
        "{what}: encryption state {state:?} after /sync"
    );
    let algorithm = room
        .encryption_settings()
        .and_then(|settings| settings.algorithm);
    ensure!(
        algorithm.as_ref().map(|a| a.as_str()) == Some(MEGOLM),
        "{what}: m.room.encryption algorithm {algorithm:?}"
    );
    Ok(())
}

/// Syncs `user` until their client lists `member` as joined in `room`.
async fn wait_joined(user: &User, room: &Room, member: &UserId) -> Result<()> {
    let deadline = Instant::now() + STEP_DEADLINE;
    loop {
        let joined = room.members_no_sync(RoomMemberships::JOIN).await?;
        if joined.iter().any(|m| m.user_id() == member) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{member} not joined after {STEP_DEADLINE:?}; joined: {:?}",
            joined.iter().map(|m| m.user_id()).collect::<Vec<_>>()
        );
        user.sync_once().await?;
    }
}

/// Syncs `user` until their SDK's crypto store holds `other`'s device with the ed25519 key of
/// `other`'s Olm account.
async fn wait_device_known(user: &User, other: &User) -> Result<()> {
    let expected = other.client.encryption().ed25519_key().await;
    let deadline = Instant::now() + STEP_DEADLINE;
    loop {
        let device = user
            .client
            .encryption()
            .get_device(&other.id, &other.device)
            .await
            .context("reading the crypto store")?;
        let key = device
            .as_ref()
            .and_then(|device| device.ed25519_key())
            .map(|key| key.to_base64());
        if device.is_some() && key == expected {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{}'s SDK has no device {} of {} with ed25519 key {expected:?} after \
             {STEP_DEADLINE:?} (has {key:?})",
            user.id,
            other.device,
            other.id
        );
        user.sync_once().await?;
    }
}

/// Waits until `observer`'s POST /keys/query returns `owner`'s device with the ed25519 key of
/// `owner`'s Olm account, syncing `owner` between attempts (its SDK uploads keys around /sync).
async fn wait_device_published(owner: &User, observer: &User) -> Result<()> {
    let expected = owner
        .client
        .encryption()
        .ed25519_key()
        .await
        .context("owner has no Olm account")?;
    let deadline = Instant::now() + STEP_DEADLINE;
    loop {
        let found = query_device(&observer.client, &owner.id, &owner.device).await?;
        let key = found
            .as_ref()
            .and_then(|keys| keys["keys"][format!("ed25519:{}", owner.device)].as_str());
        if key == Some(expected.as_str()) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "/keys/query never returned device {} with ed25519 key {expected} within \
             {STEP_DEADLINE:?}; last answer for it: {found:?}",
            owner.device
        );
        owner.sync_once().await?;
    }
}

/// POST /keys/query for one device: its `device_keys` entry, if the answer has one. Errors if
/// the answer lists the user's server under `failures`.
async fn query_device(client: &Client, user: &UserId, device: &DeviceId) -> Result<Option<Value>> {
    let mut request = KeysQueryRequest::new();
    request
        .device_keys
        .insert(user.to_owned(), vec![device.to_owned()]);
    let response = client.send(request).await.context("POST /keys/query")?;
    ensure!(
        response.failures.is_empty(),
        "/keys/query reports failures {:?}",
        response.failures
    );
    let Some(raw) = response
        .device_keys
        .get(user)
        .and_then(|devices| devices.get(device))
    else {
        return Ok(None);
    };
    let json: Value = serde_json::from_str(raw.json().get())?;
    ensure!(
        json["user_id"] == user.as_str() && json["device_id"] == device.as_str(),
        "/keys/query returned keys for another device: {json}"
    );
    Ok(Some(json))
}

fn event_json(event: &TimelineEvent) -> Value {
    serde_json::from_str(event.raw().json().get()).unwrap_or(Value::Null)
}
