//! Simplified sliding sync (MSC4186) with the real matrix-rust-sdk client Element X is built
//! on: the client discovers sliding sync from `/versions` (as Element X does), bob's room-list
//! connection (list window, `$LAZY`/`$ME` required state, every extension) shows alice's
//! invite to an encrypted room, then the joined room with its name, then alice's new message,
//! which bob's SDK decrypts with the room key it received through the `to_device` extension
//! after uploading its keys around sliding sync requests (alice uses `/v3/sync`). Everything
//! goes through the SDK's own parsing of our answers. On failure it prints the step and the
//! server's log.
//! It runs over HTTPS (`homeserver dev --tls`), the clients trusting only the unit's CA.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use matrix_sdk::config::SyncSettings;
use matrix_sdk::deserialized_responses::EncryptionInfo;
use matrix_sdk::ruma::RoomId;
use matrix_sdk::ruma::api::client::room::create_room::v3::Request as CreateRoomRequest;
use matrix_sdk::ruma::events::room::encryption::RoomEncryptionEventContent;
use matrix_sdk::ruma::events::room::message::{
    OriginalSyncRoomMessageEvent, RoomMessageEventContent,
};
use matrix_sdk::ruma::events::{InitialStateEvent, StateEventType};
use matrix_sdk::sliding_sync::{Version, VersionBuilder};
use matrix_sdk::{
    Client, RoomMemberships, RoomState, SlidingSync, SlidingSyncList, SlidingSyncMode,
};
use outpost_client_tests::Server;
use outpost_client_tests::sdk::{self, register};
use tokio::time::Instant;

/// Deadline for each "wait until bob's connection shows it" step.
const STEP_DEADLINE: Duration = Duration::from_secs(30);
/// Deadline for the whole scenario, so a hung server fails the test instead of CI.
const SCENARIO_DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn element_x_style_sliding_sync_through_the_sdk() {
    let server = Server::start_tls().unwrap_or_else(|e| panic!("cannot start the homeserver: {e}"));
    sdk::run_scenario(server, SCENARIO_DEADLINE, scenario).await;
}

async fn scenario(server: &Server) -> Result<()> {
    let alice = registered(server, "alice")
        .await
        .context("register alice")?;
    let bob = registered(server, "bob").await.context("register bob")?;
    if !matches!(bob.sliding_sync_version(), Version::Native) {
        bail!("the SDK did not discover sliding sync from /versions");
    }
    let bob_id = bob.user_id().context("bob's user id")?.to_owned();

    let mut create = CreateRoomRequest::new();
    create.name = Some("Sliding".to_owned());
    create.invite = vec![bob_id.clone()];
    create.initial_state = vec![
        InitialStateEvent::with_empty_state_key(
            RoomEncryptionEventContent::with_recommended_defaults(),
        )
        .to_raw_any(),
    ];
    let room = alice
        .create_room(create)
        .await
        .context("alice creates a room")?;
    let room_id = room.room_id().to_owned();

    // (body, whether it arrived encrypted) of every message bob's SDK hands out.
    let seen = Arc::new(Mutex::new(Vec::<(String, bool)>::new()));
    let sink = Arc::clone(&seen);
    bob.add_event_handler(
        move |event: OriginalSyncRoomMessageEvent, encryption: Option<EncryptionInfo>| {
            let sink = Arc::clone(&sink);
            async move {
                if let Ok(mut seen) = sink.lock() {
                    seen.push((event.content.body().to_owned(), encryption.is_some()));
                }
            }
        },
    );

    let sync = bob
        .sliding_sync("room-list")?
        .add_list(
            SlidingSyncList::builder("all_rooms")
                .sync_mode(SlidingSyncMode::new_selective().add_range(0..=19))
                .timeline_limit(10)
                .required_state(vec![
                    (StateEventType::RoomCreate, String::new()),
                    (StateEventType::RoomName, String::new()),
                    (StateEventType::RoomEncryption, String::new()),
                    (StateEventType::RoomMember, "$LAZY".to_owned()),
                    (StateEventType::RoomMember, "$ME".to_owned()),
                ]),
        )
        .with_all_extensions()
        .poll_timeout(Duration::from_secs(2))
        .build()
        .await
        .context("build bob's sliding sync")?;

    until(&sync, "bob sees the invite", || {
        room_state(&bob, &room_id) == Some(RoomState::Invited)
    })
    .await?;
    let invited = bob.get_room(&room_id).context("bob's invited room")?;
    invited.join().await.context("bob joins")?;
    until(
        &sync,
        "bob sees the joined encrypted room with its name",
        || {
            bob.get_room(&room_id).is_some_and(|room| {
                room.state() == RoomState::Joined
                    && room.name().as_deref() == Some("Sliding")
                    && room.encryption_state().is_encrypted()
            })
        },
    )
    .await?;

    // Alice (on /v3/sync) must see bob's join before her SDK shares the room key with him.
    let start = Instant::now();
    loop {
        alice
            .sync_once(SyncSettings::new().timeout(Duration::from_secs(1)))
            .await
            .context("alice's /sync")?;
        let joined = room.members_no_sync(RoomMemberships::JOIN).await?;
        if room.encryption_state().is_encrypted() && joined.iter().any(|m| m.user_id() == bob_id) {
            break;
        }
        if start.elapsed() > STEP_DEADLINE {
            bail!("alice does not see bob joined in an encrypted room");
        }
    }
    room.send(RoomMessageEventContent::text_plain(
        "hello over sliding sync",
    ))
    .await
    .context("alice's encrypted message")?;
    until(&sync, "bob receives and decrypts alice's message", || {
        seen.lock().is_ok_and(|seen| {
            seen.iter()
                .any(|(body, encrypted)| body == "hello over sliding sync" && *encrypted)
        })
    })
    .await?;
    Ok(())
}

/// A client that discovers sliding sync the way Element X does, registered with one
/// `m.login.dummy` request.
async fn registered(server: &Server, username: &str) -> Result<Client> {
    let client = sdk::client_builder(server)
        .sliding_sync_version_builder(VersionBuilder::DiscoverNative)
        .build()
        .await?;
    register(&client, username).await?;
    Ok(client)
}

fn room_state(client: &Client, room_id: &RoomId) -> Option<RoomState> {
    client.get_room(room_id).map(|room| room.state())
}

/// Runs sliding sync requests until `done` holds, failing after [`STEP_DEADLINE`].
async fn until(sync: &SlidingSync, step: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    loop {
        sync.sync_once()
            .await
            .with_context(|| format!("{step}: sliding sync request"))?;
        if done() {
            return Ok(());
        }
        if start.elapsed() > STEP_DEADLINE {
            bail!("{step}: not reached within {STEP_DEADLINE:?}");
        }
    }
}
