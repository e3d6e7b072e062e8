//! What Element users touch every day, through matrix-rust-sdk's own APIs, against a real
//! Outpost homeserver: alice and bob register, alice creates a room and invites bob, bob joins;
//! then
//! 1. typing: alice types, bob's handler for the `m.typing` ephemeral event sees her, then sees
//!    the list empty once she stops;
//! 2. receipts: bob sends a read receipt for alice's message and alice's client stores it;
//! 3. media: alice uploads random bytes and sends them as `m.file`, bob downloads them over the
//!    authenticated media API and gets the same bytes; a small PNG comes back as a thumbnail;
//! 4. display name: alice renames herself and bob's client shows the new name on her member;
//! 5. tags: bob marks the room as a favourite and his client lists the tag;
//! 6. notification counts: three messages from alice count 3 for bob, a message mentioning him
//!    highlights, and his read receipt on the newest event brings the counts back to 0.
//!
//! It runs over HTTPS (`homeserver dev --tls`), the clients trusting only the unit's CA.
//!
//! The steps share only the setup, so every step runs even if an earlier one failed. On failure
//! it prints each failed step with the SDK's error, then the server's log.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use matrix_sdk::config::SyncSettings;
use matrix_sdk::media::{MediaFormat, MediaRequestParameters, MediaThumbnailSettings};
use matrix_sdk::ruma::api::MatrixVersion;
use matrix_sdk::ruma::api::client::receipt::create_receipt::v3::ReceiptType as SendReceiptType;
use matrix_sdk::ruma::api::client::room::create_room::v3::{
    Request as CreateRoomRequest, RoomPreset,
};
use matrix_sdk::ruma::events::Mentions;
use matrix_sdk::ruma::events::receipt::{ReceiptThread, ReceiptType};
use matrix_sdk::ruma::events::room::MediaSource;
use matrix_sdk::ruma::events::room::message::{
    FileMessageEventContent, MessageType, RoomMessageEventContent,
};
use matrix_sdk::ruma::events::tag::{TagInfo, TagName};
use matrix_sdk::ruma::events::typing::SyncTypingEvent;
use matrix_sdk::ruma::{OwnedEventId, OwnedMxcUri, OwnedRoomId, OwnedUserId};
use matrix_sdk::sync::SyncResponse;
use matrix_sdk::{Client, Room, RoomState};
use outpost_client_tests::Server;
use outpost_client_tests::sdk::{self, register};
use serde_json::Value;
use tokio::time::Instant;

/// Deadline for each "wait until the other side sees it over /sync" step.
const STEP_DEADLINE: Duration = Duration::from_secs(30);
/// Long-poll timeout of each /sync request.
const SYNC_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline for the whole scenario, so that a hung server fails the test instead of CI.
const SCENARIO_DEADLINE: Duration = Duration::from_secs(240);
/// Size of the random file of step 3.
const FILE_SIZE: usize = 5 * 1024;
/// Side of the square PNG of step 3, and of the thumbnail asked for.
const PNG_SIDE: u32 = 64;
const THUMBNAIL_SIDE: u32 = 32;
/// Alice's display name after step 4.
const ALICE_NAME: &str = "Alice Liddell";
/// Plain messages alice sends in step 6 (none of them mentions bob).
const PLAIN_MESSAGES: u64 = 3;

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
const JPEG_MAGIC: &[u8] = b"\xff\xd8\xff";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everyday_features_through_the_sdk() {
    let server = Server::start_tls().unwrap_or_else(|e| panic!("cannot start the homeserver: {e}"));
    eprintln!(
        "homeserver up at {} (server name {})",
        server.url(),
        server.server_name()
    );
    let started = Instant::now();
    sdk::run_scenario(server, SCENARIO_DEADLINE, async |server| {
        let outcome = scenario(server).await;
        eprintln!("scenario took {:.1?}", started.elapsed());
        outcome
    })
    .await;
}

/// One user of the scenario: the SDK client, who it is and its sync settings.
struct User {
    client: Client,
    id: OwnedUserId,
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
        Ok(User {
            client,
            id,
            sync: SyncSettings::new().timeout(SYNC_TIMEOUT),
        })
    }

    /// Syncs (long-polling, reusing the last token) until `done` holds after a response has
    /// been processed, for at most [`STEP_DEADLINE`]. `done` may read the client's state.
    async fn sync_until(
        &self,
        what: &str,
        mut done: impl AsyncFnMut(SyncResponse) -> Result<bool>,
    ) -> Result<()> {
        let deadline = Instant::now() + STEP_DEADLINE;
        loop {
            let response = self
                .client
                .sync_once(self.sync.clone())
                .await
                .with_context(|| format!("{}'s /sync ({what})", self.id))?;
            if done(response).await? {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "{what}: not seen over {}'s /sync within {STEP_DEADLINE:?}",
                self.id
            );
        }
    }

    /// This user's view of the room.
    fn room(&self, room_id: &OwnedRoomId) -> Result<Room> {
        self.client
            .get_room(room_id)
            .with_context(|| format!("{}'s client does not know {room_id}", self.id))
    }
}

/// The whole scenario. The six steps share only the setup, so each one runs even if an earlier
/// one failed; the error lists every failed step.
async fn scenario(server: &Server) -> Result<()> {
    let alice = User::register(server, "alice")
        .await
        .context("setup: register alice")?;
    let bob = User::register(server, "bob")
        .await
        .context("setup: register bob")?;
    let (alice_room, bob_room) = shared_room(&alice, &bob).await.context("setup")?;
    eprintln!(
        "setup ok: {} and {} share {}",
        alice.id,
        bob.id,
        alice_room.room_id()
    );

    let mut failed = Vec::new();
    let mut check = |step: &str, outcome: Result<()>| match outcome {
        Ok(()) => eprintln!("{step} ok"),
        Err(e) => {
            eprintln!("{step} FAILED: {e:#}");
            failed.push(format!("{step}: {e:#}"));
        }
    };
    check(
        "step 1 (typing: bob sees alice typing, then not)",
        typing(&alice, &bob, &alice_room, &bob_room).await,
    );
    check(
        "step 2 (alice sees bob's read receipt)",
        receipts(&alice, &bob, &alice_room, &bob_room).await,
    );
    check(
        "step 3 (media: file round trip, PNG thumbnail)",
        media(&alice, &bob, &alice_room, &bob_room).await,
    );
    check(
        "step 4 (bob sees alice's new display name)",
        display_name(&alice, &bob, &bob_room).await,
    );
    check(
        "step 5 (bob's room tagged m.favourite)",
        tags(&bob, &bob_room).await,
    );
    check(
        "step 6 (notification counts 3, highlight, 0 after the receipt)",
        notification_counts(&bob, &alice_room, &bob_room).await,
    );
    match failed.as_slice() {
        [] => Ok(()),
        failed => bail!("{} step(s) failed:\n{}", failed.len(), failed.join("\n")),
    }
}

/// Alice creates a private room inviting bob; bob sees the invite and joins; both clients see
/// the room as joined with both members in it.
async fn shared_room(alice: &User, bob: &User) -> Result<(Room, Room)> {
    bob.sync_until("bob's initial sync", async |_| Ok(true))
        .await?;
    let mut create = CreateRoomRequest::new();
    create.preset = Some(RoomPreset::PrivateChat);
    create.invite = vec![bob.id.clone()];
    let alice_room = alice
        .client
        .create_room(create)
        .await
        .context("alice creates a room inviting bob")?;
    let room_id = alice_room.room_id().to_owned();

    bob.sync_until("bob sees the invite", async |response| {
        Ok(response.rooms.invited.contains_key(&room_id))
    })
    .await?;
    let bob_room = bob.room(&room_id)?;
    bob_room.join().await.context("bob joins")?;
    bob.sync_until("bob sees the room as joined", async |response| {
        Ok(response.rooms.joined.contains_key(&room_id))
    })
    .await?;
    ensure!(
        bob_room.state() == RoomState::Joined,
        "bob's room state {:?}",
        bob_room.state()
    );
    alice
        .sync_until("alice sees bob's join", async |_| {
            let member = alice_room.get_member_no_sync(&bob.id).await?;
            Ok(member.is_some_and(|m| m.membership().as_str() == "join"))
        })
        .await?;
    ensure!(
        alice_room.state() == RoomState::Joined,
        "alice's room state {:?}",
        alice_room.state()
    );
    Ok((alice_room, bob_room))
}

/// Step 1: `PUT /rooms/{roomId}/typing/{userId}` true then false; bob's handler for the
/// `m.typing` ephemeral event records each list of typing users it is given.
async fn typing(alice: &User, bob: &User, alice_room: &Room, bob_room: &Room) -> Result<()> {
    let seen: Arc<Mutex<Option<Vec<OwnedUserId>>>> = Arc::default();
    let handler_seen = Arc::clone(&seen);
    let handle =
        bob.client
            .add_room_event_handler(bob_room.room_id(), move |event: SyncTypingEvent| {
                let seen = Arc::clone(&handler_seen);
                async move {
                    *seen.lock().expect("no panic while holding the lock") =
                        Some(event.content.user_ids);
                }
            });
    let typing_users = || {
        seen.lock()
            .expect("no panic while holding the lock")
            .clone()
    };

    alice_room
        .typing_notice(true)
        .await
        .context("alice starts typing")?;
    let started = bob
        .sync_until("bob's m.typing handler lists alice", async |_| {
            let users = typing_users();
            Ok(users.is_some_and(|users| users == [alice.id.clone()]))
        })
        .await
        .with_context(|| format!("last typing users seen: {:?}", typing_users()));

    let stopped = match started {
        Ok(()) => {
            alice_room
                .typing_notice(false)
                .await
                .context("alice stops typing")?;
            bob.sync_until("bob's m.typing handler gets an empty list", async |_| {
                let users = typing_users();
                Ok(users.is_some_and(|users| users.is_empty()))
            })
            .await
            .with_context(|| format!("last typing users seen: {:?}", typing_users()))
        }
        Err(e) => Err(e),
    };
    bob.client.remove_event_handler(handle);
    stopped
}

/// Step 2: alice sends a message, bob receives it and sends `m.read` on it
/// (`POST /rooms/{roomId}/receipt/m.read/{eventId}`); alice's client stores bob's receipt from
/// the `m.receipt` ephemeral event of her /sync.
async fn receipts(alice: &User, bob: &User, alice_room: &Room, bob_room: &Room) -> Result<()> {
    let event_id = send_text(alice_room, "did you read this?")
        .await
        .context("alice sends a message")?;
    bob.sync_until("bob receives alice's message", async |response| {
        Ok(in_timeline(&response, bob_room, &event_id).is_some())
    })
    .await?;
    bob_room
        .send_single_receipt(
            SendReceiptType::Read,
            ReceiptThread::Unthreaded,
            event_id.clone(),
        )
        .await
        .context("bob sends m.read")?;
    alice
        .sync_until("alice's client stores bob's m.read receipt", async |_| {
            let receipt = alice_room
                .load_user_receipt(ReceiptType::Read, ReceiptThread::Unthreaded, &bob.id)
                .await?;
            Ok(receipt.is_some_and(|(on, _)| on == event_id))
        })
        .await
}

/// Step 3: `POST /_matrix/media/v3/upload`, an `m.file` message, then bob's
/// `GET /_matrix/client/v1/media/download/...` and `.../thumbnail/...` through the SDK.
async fn media(alice: &User, bob: &User, alice_room: &Room, bob_room: &Room) -> Result<()> {
    let supported = bob
        .client
        .supported_versions()
        .await
        .context("bob's client reads /versions")?;
    ensure!(
        supported
            .versions
            .iter()
            .any(|v| *v >= MatrixVersion::V1_11),
        "the server advertises no spec version >= v1.11 ({:?}), so the SDK would use the \
         deprecated unauthenticated media API instead of /_matrix/client/v1/media",
        supported.versions
    );

    let data = random_bytes(FILE_SIZE);
    let uploaded = alice
        .client
        .media()
        .upload(&mime::APPLICATION_OCTET_STREAM, data.clone(), None)
        .await
        .context("alice uploads the file")?
        .content_uri;
    let content = RoomMessageEventContent::new(MessageType::File(FileMessageEventContent::plain(
        "random.bin".to_owned(),
        uploaded.clone(),
    )));
    let event_id = alice_room
        .send(content)
        .await
        .context("alice sends the m.file message")?
        .response
        .event_id;

    let mut url = None;
    bob.sync_until("bob receives the m.file message", async |response| {
        let json = in_timeline(&response, bob_room, &event_id);
        if let Some(json) = &json {
            url = json["content"]["url"].as_str().map(OwnedMxcUri::from);
        }
        Ok(json.is_some())
    })
    .await?;
    let url = url.context("bob's copy of the m.file message has no content.url")?;
    ensure!(
        url == uploaded,
        "m.file url {url} is not the uploaded {uploaded}"
    );
    let request = MediaRequestParameters {
        source: MediaSource::Plain(url),
        format: MediaFormat::File,
    };
    let downloaded = bob
        .client
        .media()
        .get_media_content(&request, false)
        .await
        .context("bob downloads the file")?;
    ensure!(
        downloaded == data,
        "bob downloaded {} bytes that differ from the {} uploaded",
        downloaded.len(),
        data.len()
    );

    let png = png_rgb(PNG_SIDE);
    let png_uri = alice
        .client
        .media()
        .upload(&mime::IMAGE_PNG, png, None)
        .await
        .context("alice uploads a PNG")?
        .content_uri;
    let request = MediaRequestParameters {
        source: MediaSource::Plain(png_uri),
        format: MediaFormat::Thumbnail(MediaThumbnailSettings::new(
            THUMBNAIL_SIDE.into(),
            THUMBNAIL_SIDE.into(),
        )),
    };
    let thumbnail = bob
        .client
        .media()
        .get_media_content(&request, false)
        .await
        .context("bob asks for a thumbnail of the PNG")?;
    ensure!(
        thumbnail.starts_with(PNG_MAGIC) || thumbnail.starts_with(JPEG_MAGIC),
        "the thumbnail ({} bytes) is neither PNG nor JPEG; starts with {:02x?}",
        thumbnail.len(),
        &thumbnail[..thumbnail.len().min(16)]
    );
    Ok(())
}

/// Step 4: `PUT /profile/{userId}/displayname`; the server updates alice's membership event and
/// bob's client shows the name on her member.
async fn display_name(alice: &User, bob: &User, bob_room: &Room) -> Result<()> {
    alice
        .client
        .account()
        .set_display_name(Some(ALICE_NAME))
        .await
        .context("alice sets her display name")?;
    let mut last = None;
    bob.sync_until("bob sees alice's new display name", async |_| {
        let member = bob_room
            .get_member(&alice.id)
            .await?
            .context("alice is not a member of bob's room")?;
        last = member.display_name().map(str::to_owned);
        Ok(last.as_deref() == Some(ALICE_NAME))
    })
    .await
    .with_context(|| format!("alice's display name in bob's room is {last:?}"))
}

/// Step 5: `PUT /user/{userId}/rooms/{roomId}/tags/m.favourite`; the `m.tag` room account data
/// reaches bob's client over /sync.
async fn tags(bob: &User, bob_room: &Room) -> Result<()> {
    bob_room
        .set_tag(TagName::Favorite, TagInfo::new())
        .await
        .context("bob tags the room as favourite")?;
    let mut last = None;
    bob.sync_until("bob's room tags contain m.favourite", async |_| {
        last = bob_room.tags().await?;
        Ok(last
            .as_ref()
            .is_some_and(|tags| tags.contains_key(&TagName::Favorite)))
    })
    .await
    .with_context(|| format!("bob's room tags: {last:?}"))
}

/// Step 6: the `unread_notifications` of bob's joined room in /sync, computed by the server from
/// the default push rules and bob's read receipt.
async fn notification_counts(bob: &User, alice_room: &Room, bob_room: &Room) -> Result<()> {
    let counts = || {
        let counts = bob_room.unread_notification_counts();
        (counts.notification_count, counts.highlight_count)
    };
    // Bob reads everything up to a fresh message, so the counts start from 0.
    let start = send_text(alice_room, "catching up")
        .await
        .context("alice sends the starting message")?;
    bob.sync_until("bob receives the starting message", async |response| {
        Ok(in_timeline(&response, bob_room, &start).is_some())
    })
    .await?;
    bob_room
        .send_single_receipt(SendReceiptType::Read, ReceiptThread::Unthreaded, start)
        .await
        .context("bob sends m.read on the starting message")?;
    bob.sync_until("bob's counts start at 0 after his receipt", async |_| {
        Ok(counts() == (0, 0))
    })
    .await
    .with_context(|| format!("(notification_count, highlight_count) = {:?}", counts()))?;

    for i in 0..PLAIN_MESSAGES {
        send_text(alice_room, &format!("plain message {i}"))
            .await
            .with_context(|| format!("alice sends plain message {i}"))?;
    }
    bob.sync_until(
        "bob's notification_count reaches 3, highlight_count 0",
        async |_| {
            let now = counts();
            Ok(now == (PLAIN_MESSAGES, 0))
        },
    )
    .await
    .with_context(|| format!("(notification_count, highlight_count) = {:?}", counts()))?;

    let mention = RoomMessageEventContent::text_plain(format!("{}: lunch?", bob.id))
        .add_mentions(Mentions::with_user_ids([bob.id.clone()]));
    let latest = alice_room
        .send(mention)
        .await
        .context("alice sends a message mentioning bob")?
        .response
        .event_id;
    bob.sync_until(
        "bob's counts show the mention: notification_count 4, highlight_count >= 1",
        async |_| {
            let now = counts();
            Ok(now.0 == PLAIN_MESSAGES + 1 && now.1 >= 1)
        },
    )
    .await
    .with_context(|| format!("(notification_count, highlight_count) = {:?}", counts()))?;

    bob_room
        .send_single_receipt(SendReceiptType::Read, ReceiptThread::Unthreaded, latest)
        .await
        .context("bob sends m.read on the newest event")?;
    bob.sync_until("bob's counts go back to 0 after his receipt", async |_| {
        let now = counts();
        Ok(now == (0, 0))
    })
    .await
    .with_context(|| format!("(notification_count, highlight_count) = {:?}", counts()))
}

/// Sends a plain-text message and returns its event ID.
async fn send_text(room: &Room, body: &str) -> Result<OwnedEventId> {
    Ok(room
        .send(RoomMessageEventContent::text_plain(body))
        .await?
        .response
        .event_id)
}

/// The JSON of event `event_id` if this response's timeline of `room` holds it.
fn in_timeline(response: &SyncResponse, room: &Room, event_id: &OwnedEventId) -> Option<Value> {
    response
        .rooms
        .joined
        .get(room.room_id())?
        .timeline
        .events
        .iter()
        .find(|event| event.event_id().as_ref() == Some(event_id))
        .and_then(|event| serde_json::from_str(event.raw().json().get()).ok())
}

/// `len` bytes from xorshift64*, seeded from the clock: different in every run.
fn random_bytes(len: usize) -> Vec<u8> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    // Truncating the nanoseconds keeps their fast-changing low bits; `| 1` avoids the zero state.
    let mut state = (nanos as u64) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A `side`×`side` 8-bit RGB PNG with a colour gradient, its image data in stored (uncompressed)
/// deflate blocks.
fn png_rgb(side: u32) -> Vec<u8> {
    let mut raw = Vec::new();
    for y in 0..side {
        raw.push(0); // filter type None
        for x in 0..side {
            let scale = |v: u32| u8::try_from(v * 255 / (side - 1)).unwrap_or(u8::MAX);
            raw.extend_from_slice(&[scale(x), scale(y), scale(side - 1 - x)]);
        }
    }

    // zlib stream: header (deflate, 32K window, no preset dictionary), stored blocks, Adler-32.
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(usize::from(u16::MAX)).collect();
    for (i, block) in blocks.iter().enumerate() {
        let last = u8::from(i + 1 == blocks.len());
        let len = u16::try_from(block.len()).expect("chunks of at most u16::MAX bytes");
        zlib.push(last); // BFINAL, BTYPE 00 (stored)
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    zlib.extend_from_slice(&adler32(&raw).to_be_bytes());

    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&side.to_be_bytes());
    // Bit depth 8, colour type 2 (RGB), deflate, adaptive filtering, no interlace.
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);

    let mut png = PNG_MAGIC.to_vec();
    png_chunk(&mut png, b"IHDR", &ihdr);
    png_chunk(&mut png, b"IDAT", &zlib);
    png_chunk(&mut png, b"IEND", &[]);
    png
}

/// Appends a PNG chunk: length, type, data, CRC-32 of type and data.
fn png_chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    let len = u32::try_from(data.len()).expect("PNG chunks of this test are small");
    png.extend_from_slice(&len.to_be_bytes());
    let start = png.len();
    png.extend_from_slice(kind);
    png.extend_from_slice(data);
    let crc = crc32(&png[start..]);
    png.extend_from_slice(&crc.to_be_bytes());
}

/// CRC-32 (IEEE 802.3, reflected, as PNG uses), bit by bit.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xedb8_8320 & mask);
        }
    }
    !crc
}

/// Adler-32, the zlib checksum.
fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}
