//! Reporting content: users report an event, a room and a user; errors for what they cannot
//! see or what does not exist; the admin reads the reports with `appliance reports`, through
//! the admin socket while the homeserver runs and from the database when it is stopped.

use tests::appliance::{STRONG_PASSWORD, Unit};
use tests::{assert_error, enc, json, ok};

#[test]
fn reports_reach_the_admin() {
    let mut unit = Unit::new();
    unit.setup("unit-a.test");
    unit.start();
    let admin = unit.login_ok("admin", STRONG_PASSWORD);
    let room = admin.create_room(&json!({ "preset": "private_chat", "name": "Ops" }));
    let event = admin.send_text(&room, "offending words");

    let path = format!(
        "/_matrix/client/v3/rooms/{}/report/{}",
        enc(&room),
        enc(&event)
    );
    ok(
        admin.post(&path, &json!({ "reason": "rude" })),
        "report event",
    );
    ok(
        admin.post(
            &format!("/_matrix/client/v3/rooms/{}/report", enc(&room)),
            &json!({ "reason": "" }),
        ),
        "report room",
    );
    ok(
        admin.post(
            &format!(
                "/_matrix/client/v3/users/{}/report",
                enc("@admin:unit-a.test")
            ),
            &json!({ "reason": "testing" }),
        ),
        "report user",
    );

    // Unknown or invisible things are M_NOT_FOUND; a bad body is M_BAD_JSON.
    assert_error(
        &admin.post(
            &format!(
                "/_matrix/client/v3/rooms/{}/report/{}",
                enc(&room),
                enc("$nope")
            ),
            &json!({ "reason": "x" }),
        ),
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &admin.post(
            &format!(
                "/_matrix/client/v3/users/{}/report",
                enc("@ghost:unit-a.test")
            ),
            &json!({ "reason": "x" }),
        ),
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &admin.post(
            &format!(
                "/_matrix/client/v3/rooms/{}/report",
                enc("!unknown:unit-a.test")
            ),
            &json!({ "reason": "x" }),
        ),
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &admin.post(&path, &json!({ "reason": 5 })),
        400,
        "M_BAD_JSON",
    );

    let list = unit
        .appliance(&["reports", "--json"])
        .ok("reports online")
        .json();
    let reports = list["reports"].as_array().expect("reports");
    let kinds: Vec<&str> = reports.iter().filter_map(|r| r["kind"].as_str()).collect();
    assert_eq!(kinds, ["event", "room", "user"], "{list:#}");
    assert_eq!(reports[0]["event_id"], event.as_str());
    assert_eq!(reports[0]["target_user"], "@admin:unit-a.test");
    assert_eq!(reports[0]["reason"], "rude");

    unit.stop();
    let text = unit
        .appliance(&["reports"])
        .ok("reports offline")
        .stdout
        .clone();
    assert!(
        text.contains("reported event") && text.contains("reason: rude"),
        "{text}"
    );
}

/// Server notices: `appliance notice` puts the admin's message in a per-user room that only
/// the notices account may post in, tagged `m.server_notice`; later notices reuse the room.
#[test]
fn server_notices_reach_users() {
    let mut unit = Unit::new();
    unit.setup("unit-a.test");
    unit.start();
    let admin = unit.login_ok("admin", STRONG_PASSWORD);
    unit.appliance(&["notice", "--user", "admin", "Maintenance at 18:00"])
        .ok("notice to one user");
    unit.appliance(&["notice", "Second notice"])
        .ok("notice to everyone");
    unit.appliance(&["notice", "--user", "nobody", "x"])
        .expect(3, "unknown user is rejected");

    let sync = admin.sync(None, 0, None);
    let invites = sync["rooms"]["invite"].as_object().expect("invites");
    assert_eq!(invites.len(), 1, "one notices room: {sync:#}");
    let room = invites.keys().next().expect("room").clone();
    assert_eq!(admin.join(&room), room);
    let sync = admin.sync(None, 0, None);
    let events = tests::timeline(&sync, &room);
    let notices: Vec<&str> = events
        .iter()
        .filter(|e| e["content"]["msgtype"] == "m.server_notice")
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(
        notices,
        ["Maintenance at 18:00", "Second notice"],
        "{sync:#}"
    );
    assert!(
        events
            .iter()
            .all(|e| e["type"] != "m.room.message" || e["sender"] == "@server-notices:unit-a.test")
    );
    let tags = &sync["rooms"]["join"][&room]["account_data"]["events"];
    assert!(
        tags.as_array().is_some_and(|a| a
            .iter()
            .any(|e| e["type"] == "m.tag" && e["content"]["tags"]["m.server_notice"].is_object())),
        "{sync:#}"
    );
    // Users cannot post there, and nobody can register the notices account.
    let (status, _) = admin.send_event(
        &room,
        "m.room.message",
        "t1",
        &json!({ "msgtype": "m.text", "body": "hi" }),
    );
    assert_eq!(status, 403);
    unit.appliance_with_stdin(
        &["user", "create", "server-notices", "--password-file", "-"],
        Some("Quiet-Harbor-42\n"),
    )
    .expect(3, "reserved name");
}
