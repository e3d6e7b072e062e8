//! The steps of the selftest: the round trip (which stops at the first failed step) and the
//! cleanup (which always runs), each step timed and reported through [`Report`].
//!
//! Ctrl-C (or SIGTERM, SIGHUP) stops the round trip wherever it is, and what the cleanup would
//! have undone is undone by the [`interrupt`](crate::base::interrupt) watcher instead: the temporary
//! accounts created so far are deactivated (an account is created and recorded, or deactivated
//! and forgotten, in one uninterruptible section, so none slips through), and on a peer B's
//! device is logged out. Only B's membership in the test room on the peer stays behind (it
//! holds no one else once A's account is deactivated).

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use vodozemac::megolm::{GroupSession, SessionConfig};

use homeserver::admin::wire::{CreateUser, UserSummary};
use homeserver::util::random_string;

use super::Plan;
use super::device::{Device, DeviceKeys, MEGOLM, encrypt_room_message, send_encrypted};
use super::matrix::{Deadline, Session, encode};
use super::report::{Report, Stopped};
use crate::base::admin_client::AdminClient;
use crate::base::interrupt::{self, Undo};

/// How long to wait between two looks at something that has not arrived yet (a key query
/// whose device is not listed yet); syncs long-poll instead.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Prefix of the temporary accounts' names.
const USER_PREFIX: &str = "selftest-";

/// How long the undo after an interruption may wait for each answer (the admin socket, or the
/// peer for B's logout) before the process ends anyway.
const INTERRUPT_DEADLINE: Duration = Duration::from_secs(10);

/// What the round trip made so far, for the next steps and for cleanup.
#[derive(Default)]
pub struct Trip {
    /// Temporary accounts created here, with their passwords.
    pub accounts: Vec<(String, String)>,
    /// The sending device.
    a: Option<Device>,
    /// The receiving device.
    b: Option<Device>,
    /// B's sync position.
    b_since: String,
    /// The test room.
    room: Option<String>,
    /// Whether B was invited to the room (so has something to leave).
    b_invited: bool,
    /// Temporary accounts deactivated by the cleanup.
    pub removed: Vec<String>,
    /// Temporary accounts created and not yet deactivated: what an interruption deactivates.
    pending: Arc<Mutex<Vec<String>>>,
    /// The deactivation of `pending` on an interruption, once there may be accounts.
    undo_accounts: Option<Undo>,
    /// B's logout on the peer on an interruption, until the cleanup logged B out.
    undo_b_login: Option<Undo>,
}

/// The accounts not yet deactivated (the list is consistent even if a holder panicked).
fn pending(list: &Mutex<Vec<String>>) -> std::sync::MutexGuard<'_, Vec<String>> {
    list.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The undo action for the temporary accounts: deactivates those still pending.
fn deactivate_on_interrupt(socket: PathBuf, list: Arc<Mutex<Vec<String>>>) -> Undo {
    interrupt::on_interrupt(
        "deactivating the selftest's temporary accounts",
        move || {
            let users = std::mem::take(&mut *pending(&list));
            let errors: Vec<String> = users
                .iter()
                .filter_map(|user| {
                    let path = format!("/v1/users/{}/deactivate", encode(user));
                    let deadline = Deadline::after(INTERRUPT_DEADLINE);
                    let err =
                        admin::<_, UserSummary>(&socket, &path, json!({}), &deadline).err()?;
                    Some(format!(
                        "{user}: {err} (deactivate it with `appliance user deactivate {user} \
                         --yes`)"
                    ))
                })
                .collect();
            if errors.is_empty() {
                Ok(())
            } else {
                Err(errors.join("; "))
            }
        },
    )
}

/// The undo action for B's login on a peer: logs that device out.
fn log_out_on_interrupt(session: Session, peer: &str) -> Undo {
    interrupt::on_interrupt(
        format!("logging the selftest's device out of {peer}"),
        move || session.logout(&Deadline::after(INTERRUPT_DEADLINE)),
    )
}

/// A sync filter for B: only the test room (none before there is one), no presence or
/// account data.
fn sync_filter(room: Option<&str>) -> Value {
    json!({
        "room": {
            "rooms": room.into_iter().collect::<Vec<_>>(),
            "timeline": { "limit": 50 },
        },
        "presence": { "types": [] },
        "account_data": { "types": [] },
    })
}

/// The devices, once both are logged in.
fn devices<'a>(
    a: &'a mut Option<Device>,
    b: &'a mut Option<Device>,
) -> Result<(&'a mut Device, &'a mut Device), String> {
    match (a.as_mut(), b.as_mut()) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err("the devices are not logged in".to_owned()),
    }
}

/// The round trip; stops at the first failed step.
pub fn round_trip(
    plan: &Plan,
    trip: &mut Trip,
    report: &mut Report,
    body: &str,
) -> Result<(), Stopped> {
    report.step("create test accounts", |step| {
        let wanted = if plan.peer.is_some() { 1 } else { 2 };
        trip.undo_accounts = Some(deactivate_on_interrupt(
            plan.socket.clone(),
            Arc::clone(&trip.pending),
        ));
        for _ in 0..wanted {
            let user = format!("{USER_PREFIX}{}", random_string(10).to_lowercase());
            let password = random_string(32);
            // Created and recorded together, so an interruption cannot miss it.
            let created: UserSummary = interrupt::uninterruptible(|| {
                let created: UserSummary = admin(
                    &plan.socket,
                    "/v1/users",
                    CreateUser {
                        user,
                        password: password.clone(),
                        admin: false,
                    },
                    &step.deadline,
                )?;
                pending(&trip.pending).push(created.user_id.clone());
                Ok::<_, String>(created)
            })?;
            trip.accounts.push((created.user_id, password));
        }
        let names: Vec<&str> = trip
            .accounts
            .iter()
            .map(|(user, _)| user.as_str())
            .collect();
        step.detail(names.join(", "));
        Ok(())
    })?;

    report.step("log in both devices", |step| {
        let deadline = &step.deadline;
        let (a_user, a_password) = trip.accounts.first().ok_or("no account for A")?;
        trip.a = Some(Device::new(plan.local.login(a_user, a_password, deadline)?));
        let b = match &plan.peer {
            Some(peer) => {
                let session = peer.api.login(&peer.user_id, &peer.password, deadline)?;
                trip.undo_b_login = Some(log_out_on_interrupt(session.clone(), &peer.name));
                session
            }
            None => {
                let (user, password) = trip.accounts.get(1).ok_or("no account for B")?;
                plan.local.login(user, password, deadline)?
            }
        };
        // Kept before anything else can fail, so the cleanup logs it out.
        trip.b = Some(Device::new(b));
        let (a, b) = devices(&mut trip.a, &mut trip.b)?;
        // Where B's syncs start: nothing from before the test matters.
        let start = b.session.sync(None, &sync_filter(None), deadline)?;
        trip.b_since = next_batch(&start)?;
        step.detail(format!(
            "A {} device {}, B {} device {}",
            a.user_id(),
            a.device_id(),
            b.user_id(),
            b.device_id()
        ));
        Ok(())
    })?;

    report.step("publish device and one-time keys", |step| {
        let (a, b) = devices(&mut trip.a, &mut trip.b)?;
        a.publish_keys(&step.deadline)?;
        b.publish_keys(&step.deadline)
    })?;

    let room = report.step("create an encrypted room", |step| {
        let (a, _) = devices(&mut trip.a, &mut trip.b)?;
        let created = a.session.post(
            "/_matrix/client/v3/createRoom",
            &json!({
                "preset": "private_chat",
                "name": "Outpost selftest",
                "topic": "A temporary room of `appliance selftest`.",
                "initial_state": [{
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": { "algorithm": MEGOLM },
                }],
            }),
            &step.deadline,
        )?;
        let room = created["room_id"]
            .as_str()
            .ok_or("the createRoom answer has no room_id")?
            .to_owned();
        trip.room = Some(room.clone());
        let state = a.session.get(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.encryption/",
                encode(&room)
            ),
            &step.deadline,
        )?;
        if state["algorithm"] != MEGOLM {
            return Err(format!(
                "the room's m.room.encryption state is {state}, not {MEGOLM}"
            ));
        }
        step.detail(room.clone());
        Ok(room)
    })?;

    report.step("invite B", |step| {
        let (a, b) = devices(&mut trip.a, &mut trip.b)?;
        let b_user = b.user_id().to_owned();
        a.session.post(
            &format!("/_matrix/client/v3/rooms/{}/invite", encode(&room)),
            &json!({ "user_id": b_user }),
            &step.deadline,
        )?;
        trip.b_invited = true;
        Ok(())
    })?;

    report.step("B joins the room", |step| {
        let filter = sync_filter(Some(&room));
        let mut since = trip.b_since.clone();
        let (_, b) = devices(&mut trip.a, &mut trip.b)?;
        loop {
            let sync = b.session.sync(Some(&since), &filter, &step.deadline)?;
            since = next_batch(&sync)?;
            if sync["rooms"]["invite"][&room].is_object() {
                break;
            }
            step.deadline.remaining().map_err(|_| {
                format!(
                    "the invite did not reach B within {} s",
                    step.deadline.secs()
                )
            })?;
        }
        b.session.post(
            &format!("/_matrix/client/v3/rooms/{}/join", encode(&room)),
            &json!({}),
            &step.deadline,
        )?;
        trip.b_since = since;
        Ok(())
    })?;

    let b_keys = report.step("A fetches and checks B's keys", |step| {
        let (a, b) = devices(&mut trip.a, &mut trip.b)?;
        let published = b.keys();
        let found = wait_for_keys(a, &published, &step.deadline)?;
        let key_id = a.claim_and_open(&found, &step.deadline)?;
        step.detail(format!(
            "signatures verified; claimed one-time key {key_id}"
        ));
        Ok(found)
    })?;

    let mut group = GroupSession::new(SessionConfig::version_1());
    report.step("A shares a room key (Olm to-device)", |step| {
        let (a, _) = devices(&mut trip.a, &mut trip.b)?;
        a.send_room_key(&b_keys, &room, &group, &step.deadline)?;
        step.detail(format!("Megolm session {}", group.session_id()));
        Ok(())
    })?;

    let event_id = report.step("A sends an encrypted message", |step| {
        let (a, _) = devices(&mut trip.a, &mut trip.b)?;
        let content = encrypt_room_message(a, &mut group, &room, body);
        let event_id = send_encrypted(a, &room, &content, &step.deadline)?;
        step.detail(event_id.clone());
        Ok(event_id)
    })?;

    // What B's syncs brought that a later step needs.
    let mut timeline: Vec<Value> = Vec::new();
    report.step("B checks A's keys, decrypts the key", |step| {
        let filter = sync_filter(Some(&room));
        let mut since = trip.b_since.clone();
        let (a, b) = devices(&mut trip.a, &mut trip.b)?;
        let a_keys = wait_for_keys(b, &a.keys(), &step.deadline)?;
        let key_event = loop {
            let sync = b.session.sync(Some(&since), &filter, &step.deadline)?;
            since = next_batch(&sync)?;
            timeline.extend(room_events(&sync, &room));
            let to_device = sync["to_device"]["events"].as_array();
            if let Some(event) = to_device.into_iter().flatten().find(|event| {
                event["type"] == "m.room.encrypted" && event["sender"] == a_keys.user_id
            }) {
                break event.clone();
            }
            step.deadline.remaining().map_err(|_| {
                format!(
                    "the to-device message did not reach B within {} s",
                    step.deadline.secs()
                )
            })?;
        };
        let session_id = b.receive_room_key(&key_event, &a_keys, &room)?;
        step.detail(format!("Megolm session {session_id}"));
        trip.b_since = since;
        Ok(())
    })?;

    report.step("B decrypts the message", |step| {
        let filter = sync_filter(Some(&room));
        let mut since = trip.b_since.clone();
        let (a, b) = devices(&mut trip.a, &mut trip.b)?;
        let a_user = a.user_id().to_owned();
        let event = loop {
            if let Some(event) = timeline.iter().find(|event| event["event_id"] == *event_id) {
                break event.clone();
            }
            step.deadline.remaining().map_err(|_| {
                format!(
                    "the message {event_id} did not reach B within {} s",
                    step.deadline.secs()
                )
            })?;
            let sync = b.session.sync(Some(&since), &filter, &step.deadline)?;
            since = next_batch(&sync)?;
            timeline.extend(room_events(&sync, &room));
        };
        trip.b_since = since;
        if event["sender"] != a_user || event["type"] != "m.room.encrypted" {
            return Err(format!(
                "{event_id} arrived as a {} from {}, not an m.room.encrypted from {a_user}",
                event["type"], event["sender"]
            ));
        }
        let plain = b.decrypt_room_event(&event)?;
        if plain["type"] != "m.room.message" || plain["room_id"] != *room {
            return Err(format!(
                "the decrypted event is a {} for room {}, not the message for the test room",
                plain["type"], plain["room_id"]
            ));
        }
        if plain["content"]["body"] != body {
            return Err(format!(
                "the decrypted text is {}, but A sent {body:?}",
                plain["content"]["body"]
            ));
        }
        step.detail(format!("the text matches what A sent: {body:?}"));
        Ok(())
    })?;
    Ok(())
}

/// Queries `wanted`'s device as `asker` until its unit lists it (at once on one unit; over
/// federation after the peers exchanged the device list), and checks the keys are the ones
/// the device published.
fn wait_for_keys(
    asker: &Device,
    wanted: &DeviceKeys,
    deadline: &Deadline,
) -> Result<DeviceKeys, String> {
    loop {
        if let Some(found) = asker.query(&wanted.user_id, &wanted.device_id, deadline)? {
            if found.curve25519 != wanted.curve25519 || found.ed25519 != wanted.ed25519 {
                return Err(format!(
                    "{}'s server answers other keys for {}/{} than the device published",
                    asker.user_id(),
                    wanted.user_id,
                    wanted.device_id
                ));
            }
            return Ok(found);
        }
        if deadline.remaining()? <= RETRY_PAUSE {
            let remote = server_of(asker.user_id()) != server_of(&wanted.user_id);
            return Err(format!(
                "{}'s server does not list the device {} of {} after {} s{}",
                asker.user_id(),
                wanted.device_id,
                wanted.user_id,
                deadline.secs(),
                if remote {
                    " (over federation: the other unit does not answer, or this unit holds an \
                     outdated list of that user's devices)"
                } else {
                    ""
                }
            ));
        }
        std::thread::sleep(RETRY_PAUSE);
    }
}

/// Leaves and logs out on the peer, then deactivates the temporary accounts; each part is a
/// step of its own and runs even when an earlier one failed.
pub fn clean_up(plan: &Plan, trip: &mut Trip, report: &mut Report) {
    if plan.peer.is_some()
        && let Some(b) = &trip.b
    {
        if let (Some(room), true) = (&trip.room, trip.b_invited) {
            let _ = report.step("B leaves the room", |step| {
                b.session
                    .post(
                        &format!("/_matrix/client/v3/rooms/{}/leave", encode(room)),
                        &json!({}),
                        &step.deadline,
                    )
                    .map(drop)
            });
        }
        let _ = report.step("log B out of the peer", |step| {
            interrupt::uninterruptible(|| {
                b.session.logout(&step.deadline)?;
                trip.undo_b_login = None;
                Ok::<_, String>(())
            })?;
            step.detail(format!(
                "deleted device {} of {}",
                b.device_id(),
                b.user_id()
            ));
            Ok(())
        });
    }
    if trip.accounts.is_empty() {
        trip.undo_accounts = None;
        return;
    }
    let _ = report.step("remove test accounts", |step| {
        let mut errors = Vec::new();
        for (user, _) in &trip.accounts {
            let path = format!("/v1/users/{}/deactivate", encode(user));
            // Deactivated and forgotten together, so an interruption neither misses it nor
            // deactivates it twice.
            let deactivated = interrupt::uninterruptible(|| {
                let answer =
                    admin::<_, UserSummary>(&plan.socket, &path, json!({}), &step.deadline);
                if answer.is_ok() {
                    pending(&trip.pending).retain(|pending| pending != user);
                }
                answer
            });
            match deactivated {
                Ok(_) => trip.removed.push(user.clone()),
                Err(err) => errors.push(format!("{user}: {err}")),
            }
        }
        if errors.is_empty() {
            step.detail(format!("deactivated {}", trip.removed.join(", ")));
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    });
    if pending(&trip.pending).is_empty() {
        trip.undo_accounts = None;
    }
}

/// `POST path` on the admin socket, giving up at the deadline (the request itself is left to
/// finish in the background).
fn admin<B, T>(socket: &Path, path: &str, body: B, deadline: &Deadline) -> Result<T, String>
where
    B: Serialize + Send + 'static,
    T: DeserializeOwned + Send + 'static,
{
    let (socket, path) = (socket.to_owned(), path.to_owned());
    let (answer, answered) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = answer.send(AdminClient::new(socket).post::<B, T>(&path, &body));
    });
    match answered.recv_timeout(deadline.remaining()?) {
        Ok(result) => result.map_err(|failure| format!("admin socket: {failure}")),
        Err(RecvTimeoutError::Timeout) => Err(format!("admin socket: {}", deadline.expired())),
        Err(RecvTimeoutError::Disconnected) => {
            Err("the admin request ended without an answer".to_owned())
        }
    }
}

/// The timeline events of `room` in a sync answer.
fn room_events(sync: &Value, room: &str) -> Vec<Value> {
    sync["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The server name part of a user ID.
fn server_of(user_id: &str) -> &str {
    user_id.split_once(':').map_or("", |(_, server)| server)
}

/// A sync answer's `next_batch`.
fn next_batch(sync: &Value) -> Result<String, String> {
    sync["next_batch"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "the sync answer has no next_batch".to_owned())
}
