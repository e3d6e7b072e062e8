//! The matrix-rust-sdk scenario against a real Outpost homeserver: two clients (alice, bob)
//! register with UIA `m.login.dummy`, alice creates a room and invites bob, bob sees the
//! invite over /sync and joins, alice sends 50 messages that bob receives in order over
//! /sync and again by back-paginating /messages, alice sets the room name and topic and
//! redacts one message, bob sees both, bob leaves and the room shows as left on both sides.
//! It runs over HTTPS (`homeserver dev --tls`), the client trusting only the unit's CA.
//! On failure it prints the step that failed, the SDK's error and the server's log.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use matrix_sdk::config::SyncSettings;
use matrix_sdk::deserialized_responses::TimelineEvent;
use matrix_sdk::room::MessagesOptions;
use matrix_sdk::ruma::api::client::filter::FilterDefinition;
use matrix_sdk::ruma::api::client::room::create_room::v3::{
    Request as CreateRoomRequest, RoomPreset,
};
use matrix_sdk::ruma::api::client::sync::sync_events::v3::Filter;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::{OwnedEventId, OwnedUserId, RoomId, uint};
use matrix_sdk::sync::SyncResponse;
use matrix_sdk::{Client, Room, RoomState};
use outpost_client_tests::{Server, sdk};
use serde_json::Value;
use tokio::time::Instant;

/// Messages alice sends.
const MESSAGES: usize = 50;
/// Which of them (0-based) alice redacts.
const REDACTED: usize = 10;
/// Deadline for each "wait until the other side sees it over /sync" step.
const SYNC_DEADLINE: Duration = Duration::from_secs(30);
/// Long-poll timeout of each /sync request.
const SYNC_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline for the whole scenario, so that a hung server fails the test instead of CI.
const SCENARIO_DEADLINE: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_chat_through_the_sdk() {
    // Over HTTPS, trusting only the unit's CA, as a real client on the unit's network would.
    let server = Server::start_tls().unwrap_or_else(|e| panic!("cannot start the homeserver: {e}"));
    assert!(server.url().starts_with("https://"), "{}", server.url());
    eprintln!(
        "homeserver up at {} (server name {})",
        server.url(),
        server.server_name()
    );
    sdk::run_scenario(server, SCENARIO_DEADLINE, scenario).await;
}

/// The whole scenario; each step's failure says which step it was.
async fn scenario(server: &Server) -> Result<()> {
    let alice = new_client(server)
        .await
        .context("building alice's client")?;
    let bob = new_client(server).await.context("building bob's client")?;

    let alice_id = register(&alice, "alice")
        .await
        .context("step 1: register alice")?;
    let bob_id = register(&bob, "bob")
        .await
        .context("step 1: register bob")?;
    eprintln!("step 1 ok: registered {alice_id} and {bob_id}");

    // Alice syncs with an inline filter, bob with one uploaded to the server: both forms of
    // the `filter` parameter get used.
    let alice_sync = SyncSettings::new()
        .filter(Filter::FilterDefinition(timeline_filter()))
        .timeout(SYNC_TIMEOUT);
    let bob_filter = bob
        .get_or_upload_filter("outpost-client-test", timeline_filter())
        .await
        .context("step 1: bob uploads a filter (POST /user/{userId}/filter)")?;
    let bob_sync = SyncSettings::new()
        .filter(Filter::FilterId(bob_filter))
        .timeout(SYNC_TIMEOUT);
    bob.sync_once(bob_sync.clone())
        .await
        .context("step 1: bob's initial sync")?;

    // Step 2: alice creates a room and invites bob.
    let mut create = CreateRoomRequest::new();
    create.preset = Some(RoomPreset::PrivateChat);
    let room = alice
        .create_room(create)
        .await
        .context("step 2: alice creates a room")?;
    let room_id = room.room_id().to_owned();
    sync_until(
        &alice,
        &alice_sync,
        "alice sees the new room as joined",
        |response| response.rooms.joined.contains_key(&room_id),
    )
    .await
    .context("step 2: alice's sync after createRoom")?;
    ensure!(
        room.state() == RoomState::Joined,
        "alice's room state is {:?}",
        room.state()
    );
    room.invite_user_by_id(&bob_id)
        .await
        .context("step 2: alice invites bob")?;
    eprintln!("step 2 ok: alice created {room_id} and invited bob");

    // Step 3: bob sees the invite over /sync and joins.
    let mut invite_state = Vec::new();
    sync_until(
        &bob,
        &bob_sync,
        "bob sees the invite",
        |response| match response.rooms.invited.get(&room_id) {
            Some(invited) => {
                invite_state = invited.invite_state.events.clone();
                true
            }
            None => false,
        },
    )
    .await
    .context("step 3")?;
    let bob_room = bob
        .get_room(&room_id)
        .context("step 3: bob's client has no such room")?;
    ensure!(
        bob_room.state() == RoomState::Invited,
        "bob's room state {:?}",
        bob_room.state()
    );
    let stripped_types: Vec<String> = invite_state
        .iter()
        .filter_map(|event| event.get_field::<String>("type").ok().flatten())
        .collect();
    ensure!(
        stripped_types.iter().any(|t| t == "m.room.create"),
        "step 3: invite_state lacks m.room.create (required since spec v1.16); has {stripped_types:?}"
    );
    match bob_room.invite_details().await {
        Ok(invite) if invite.inviter_id == alice_id => {}
        Ok(invite) => bail!(
            "step 3: invite says inviter {} not {alice_id}",
            invite.inviter_id
        ),
        Err(e) => bail!(
            "step 3: the SDK cannot name the inviter ({e}): invite_state must carry bob's \
             m.room.member invite event; it has {stripped_types:?}"
        ),
    }
    bob_room
        .join()
        .await
        .context("step 3: bob joins (POST /join/{roomId})")?;
    sync_until(&bob, &bob_sync, "bob sees the room as joined", |response| {
        response.rooms.joined.contains_key(&room_id)
    })
    .await
    .context("step 3")?;
    ensure!(
        bob_room.state() == RoomState::Joined,
        "bob's room state {:?}",
        bob_room.state()
    );
    eprintln!("step 3 ok: bob saw the invite and joined");

    // Step 4: alice sends the messages while bob long-polls /sync for them.
    let (sent, received) = tokio::join!(
        send_messages(&room),
        receive_messages(&bob, &bob_sync, &room_id)
    );
    let sent = sent.context("step 4: alice sends")?;
    let received = received.context("step 4: bob receives over /sync")?;
    compare("step 4: /sync", &sent, &received)?;
    eprintln!("step 4 ok: bob received all {MESSAGES} messages over /sync, in order");

    // Step 5: bob back-paginates the whole room with /messages.
    let history = back_paginate(&bob_room)
        .await
        .context("step 5: /messages dir=b")?;
    let oldest = history.last().map(event_type);
    ensure!(
        oldest.as_deref() == Some("m.room.create"),
        "step 5: back-pagination ended at {oldest:?}, not at the room's m.room.create"
    );
    let mut chronological: Vec<(OwnedEventId, String)> =
        history.iter().rev().filter_map(text_message).collect();
    chronological.retain(|(_, body)| body.starts_with("message "));
    compare("step 5: /messages", &sent, &chronological)?;
    eprintln!("step 5 ok: /messages back-pagination returned all {MESSAGES} in order");

    // Step 6: room name and topic.
    let name = "Outpost client test";
    let topic = "Checked by matrix-rust-sdk";
    room.set_name(name.to_owned())
        .await
        .context("step 6: alice sets the name")?;
    room.set_room_topic(topic)
        .await
        .context("step 6: alice sets the topic")?;
    sync_until(&bob, &bob_sync, "bob sees the new name and topic", |_| {
        bob_room.name().as_deref() == Some(name) && bob_room.topic().as_deref() == Some(topic)
    })
    .await
    .with_context(|| {
        format!(
            "step 6: bob's room has name {:?} topic {:?}",
            bob_room.name(),
            bob_room.topic()
        )
    })?;
    eprintln!("step 6 ok: bob sees name {name:?} and topic {topic:?}");

    // Step 7: alice redacts one message; bob sees the redaction and the redacted event.
    let target = sent[REDACTED].clone();
    let redaction = room
        .redact(&target, Some("test redaction"), None)
        .await
        .context("step 7: alice redacts (PUT /redact)")?
        .event_id;
    sync_until(
        &bob,
        &bob_sync,
        "bob receives the m.room.redaction",
        |response| {
            response.rooms.joined.get(&room_id).is_some_and(|update| {
                update.timeline.events.iter().any(|event| {
                    let json = event_json(event);
                    json["event_id"] == redaction.as_str()
                        && json["type"] == "m.room.redaction"
                        && (json["content"]["redacts"] == target.as_str()
                            || json["redacts"] == target.as_str())
                })
            })
        },
    )
    .await
    .context("step 7")?;
    let fetched = bob_room
        .event(&target, None)
        .await
        .context("step 7: bob fetches the redacted event (GET /rooms/{roomId}/event/{eventId})")?;
    check_redacted("step 7: GET /event", &event_json(&fetched))?;
    let history = back_paginate(&bob_room)
        .await
        .context("step 7: /messages after redaction")?;
    let in_history = history
        .iter()
        .find(|event| event.event_id().as_ref() == Some(&target))
        .context("step 7: the redacted event is missing from /messages")?;
    check_redacted("step 7: /messages", &event_json(in_history))?;
    eprintln!("step 7 ok: bob sees message {REDACTED} redacted by {redaction}");

    // Step 8: bob leaves; both sides see it.
    bob_room
        .leave()
        .await
        .context("step 8: bob leaves (POST /leave)")?;
    sync_until(
        &bob,
        &bob_sync,
        "bob's sync lists the room under rooms.leave",
        |response| response.rooms.left.contains_key(&room_id),
    )
    .await
    .context("step 8")?;
    ensure!(
        bob_room.state() == RoomState::Left,
        "bob's room state {:?}",
        bob_room.state()
    );
    ensure!(
        !bob.joined_rooms().iter().any(|r| r.room_id() == room_id),
        "step 8: bob's client still lists the room as joined"
    );
    let alice_room = alice
        .get_room(&room_id)
        .context("step 8: alice lost the room")?;
    let deadline = Instant::now() + SYNC_DEADLINE;
    loop {
        let member = alice_room.get_member_no_sync(&bob_id).await?;
        let membership = member.as_ref().map(|m| m.membership().to_string());
        if membership.as_deref() == Some("leave") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "step 8: alice still sees bob's membership as {membership:?} after {SYNC_DEADLINE:?}"
        );
        alice
            .sync_once(alice_sync.clone())
            .await
            .context("step 8: alice's sync")?;
    }
    eprintln!("step 8 ok: bob left; bob's room is Left and alice sees bob's leave");
    Ok(())
}

/// A client with the in-memory store, pointed at the test server, with bounded retries.
async fn new_client(server: &Server) -> Result<Client> {
    Ok(sdk::client_builder(server).build().await?)
}

/// Registers `username` ([`sdk::register`]) and checks what this scenario is about: the
/// answer carries an access token and `whoami` names the new account.
async fn register(client: &Client, username: &str) -> Result<OwnedUserId> {
    let response = sdk::register(client, username).await?;
    ensure!(
        response.access_token.is_some(),
        "register gave no access_token"
    );
    let whoami = client.whoami().await.context("GET /account/whoami")?;
    ensure!(
        whoami.user_id == response.user_id,
        "whoami says {}",
        whoami.user_id
    );
    Ok(response.user_id)
}

/// Room timelines of up to 100 events per sync, so 50 messages never need a gap fill.
fn timeline_filter() -> FilterDefinition {
    let mut filter = FilterDefinition::default();
    filter.room.timeline.limit = Some(uint!(100));
    filter
}

/// Syncs (long-polling, reusing the last token) until `done` holds for a response, for at most
/// [`SYNC_DEADLINE`].
async fn sync_until(
    client: &Client,
    settings: &SyncSettings,
    what: &str,
    mut done: impl FnMut(&SyncResponse) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + SYNC_DEADLINE;
    loop {
        let response = client
            .sync_once(settings.clone())
            .await
            .with_context(|| format!("/sync ({what})"))?;
        if done(&response) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{what}: not seen over /sync within {SYNC_DEADLINE:?}");
        }
    }
}

/// Alice's side of step 4: sends the messages one by one, returning their event IDs in order.
async fn send_messages(room: &Room) -> Result<Vec<OwnedEventId>> {
    let mut sent = Vec::with_capacity(MESSAGES);
    for i in 0..MESSAGES {
        let content = RoomMessageEventContent::text_plain(format!("message {i}"));
        let result = room
            .send(content)
            .await
            .with_context(|| format!("sending message {i}"))?;
        sent.push(result.response.event_id);
    }
    Ok(sent)
}

/// Bob's side of step 4: the test messages in the order his /sync timelines delivered them.
async fn receive_messages(
    client: &Client,
    settings: &SyncSettings,
    room_id: &RoomId,
) -> Result<Vec<(OwnedEventId, String)>> {
    let deadline = Instant::now() + SYNC_DEADLINE;
    let mut received = Vec::new();
    while received.len() < MESSAGES {
        ensure!(
            Instant::now() < deadline,
            "only {} of {MESSAGES} messages arrived over /sync within {SYNC_DEADLINE:?}",
            received.len()
        );
        let response = client
            .sync_once(settings.clone())
            .await
            .context("bob's /sync")?;
        let Some(update) = response.rooms.joined.get(room_id) else {
            continue;
        };
        ensure!(
            !update.timeline.limited,
            "/sync returned a limited timeline (gap) with {} events although the filter allows 100",
            update.timeline.events.len()
        );
        for event in &update.timeline.events {
            check_shape(event).context("bob's /sync timeline")?;
        }
        received.extend(
            update
                .timeline
                .events
                .iter()
                .filter_map(text_message)
                .filter(|(_, body)| body.starts_with("message ")),
        );
    }
    Ok(received)
}

/// Pages backwards through the room from the newest event, 10 at a time, until the server
/// says there is no more; returns the events newest first.
async fn back_paginate(room: &Room) -> Result<Vec<TimelineEvent>> {
    let mut events = Vec::new();
    let mut seen = HashSet::new();
    let mut from: Option<String> = None;
    for page in 0..100 {
        let mut options = MessagesOptions::backward().from(from.as_deref());
        options.limit = uint!(10);
        let response = room
            .messages(options)
            .await
            .with_context(|| format!("page {page}"))?;
        for event in &response.chunk {
            check_shape(event).with_context(|| format!("page {page}"))?;
            let id = event
                .event_id()
                .with_context(|| format!("page {page}: event without id"))?;
            ensure!(
                seen.insert(id.clone()),
                "page {page}: event {id} returned twice"
            );
        }
        let empty = response.chunk.is_empty();
        events.extend(response.chunk);
        match response.end {
            Some(end) if !empty => {
                ensure!(
                    from.as_deref() != Some(&end),
                    "page {page}: `end` did not move ({end})"
                );
                from = Some(end);
            }
            _ => return Ok(events),
        }
    }
    bail!("more than 100 pages of /messages: the `end` token never ran out")
}

/// Checks that `got` holds exactly the events of `sent`, in the same order.
fn compare(what: &str, sent: &[OwnedEventId], got: &[(OwnedEventId, String)]) -> Result<()> {
    let got_ids: Vec<&OwnedEventId> = got.iter().map(|(id, _)| id).collect();
    let sent_ids: Vec<&OwnedEventId> = sent.iter().collect();
    if got_ids == sent_ids {
        for (i, (_, body)) in got.iter().enumerate() {
            ensure!(
                *body == format!("message {i}"),
                "{what}: event {i} has body {body:?}"
            );
        }
        return Ok(());
    }
    let bodies: Vec<&str> = got.iter().map(|(_, body)| body.as_str()).collect();
    bail!(
        "{what}: got {} messages, expected {} in send order; bodies: {bodies:?}",
        got.len(),
        sent.len()
    )
}

/// The event ID and body of an `m.room.message` that is not redacted.
fn text_message(event: &TimelineEvent) -> Option<(OwnedEventId, String)> {
    let json = event_json(event);
    if json["type"] != "m.room.message" {
        return None;
    }
    let body = json["content"]["body"].as_str()?.to_owned();
    Some((event.event_id()?, body))
}

/// A redacted `m.room.message`: empty content and `unsigned.redacted_because`.
fn check_redacted(what: &str, json: &Value) -> Result<()> {
    let content_empty = json["content"]
        .as_object()
        .is_some_and(|content| content.is_empty());
    ensure!(
        content_empty,
        "{what}: redacted event still has content {}",
        json["content"]
    );
    ensure!(
        json["unsigned"]["redacted_because"].is_object(),
        "{what}: redacted event has no unsigned.redacted_because: {json}"
    );
    Ok(())
}

/// The event deserializes as the SDK's typed timeline event (ruma's schema for its type).
fn check_shape(event: &TimelineEvent) -> Result<()> {
    match event.raw().deserialize() {
        Ok(_) => Ok(()),
        Err(e) => bail!(
            "event does not match its schema ({e}): {}",
            event.raw().json().get()
        ),
    }
}

fn event_type(event: &TimelineEvent) -> String {
    event_json(event)["type"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn event_json(event: &TimelineEvent) -> Value {
    serde_json::from_str(event.raw().json().get()).unwrap_or(Value::Null)
}
