//! Notifications survive being moved from the staging table into the main one (migration
//! 0014: new notifications are written in stream order and folded in bulk every 128 stream
//! positions, to cut write amplification). Unread counts, `/notifications` pages, read receipts
//! and redactions must read the same across the fold as before it.

use std::collections::HashSet;

use tests::{Client, TestEnv, enc, json, str_field};

/// More messages than one fold span (128 stream positions), so some notifications sit in
/// the main table and the newest in the staging table.
const MESSAGES: usize = 300;

/// `(notification_count, highlight_count)` of a room in an initial sync.
fn counts(client: &Client, room: &str) -> (i64, i64) {
    let sync = client.sync(None, 0, None);
    let unread = &sync["rooms"]["join"][room]["unread_notifications"];
    (
        unread["notification_count"].as_i64().unwrap_or(-1),
        unread["highlight_count"].as_i64().unwrap_or(-1),
    )
}

/// Every notification of `client`, newest first, following `next_token` page by page.
fn all_notifications(client: &Client, limit: usize) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let path = match &from {
            Some(token) => format!(
                "/_matrix/client/v3/notifications?limit={limit}&from={}",
                enc(token)
            ),
            None => format!("/_matrix/client/v3/notifications?limit={limit}"),
        };
        let page = client.get_ok(&path);
        for notification in page["notifications"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            out.push((
                str_field(&notification["event"], "event_id"),
                notification["read"].as_bool().unwrap_or(false),
            ));
        }
        match page.get("next_token").and_then(|t| t.as_str()) {
            Some(token) => from = Some(token.to_owned()),
            None => return out,
        }
    }
}

#[test]
fn counts_lists_receipts_and_redactions_hold_across_the_fold() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let carol = env.register("carol");
    let room = alice.create_room(&json!({"preset": "public_chat"}));
    bob.join(&room);
    carol.join(&room);

    let mut sent = Vec::new();
    for i in 0..MESSAGES {
        let content = if i % 50 == 7 {
            json!({"msgtype": "m.text", "body": "bob!", "m.mentions": {"user_ids": [bob.user_id]}})
        } else {
            json!({"msgtype": "m.text", "body": format!("message {i}")})
        };
        let reply = alice.send_event(&room, "m.room.message", &format!("fold-{i}"), &content);
        sent.push(str_field(&tests::ok(reply, "send"), "event_id"));
    }
    let highlights = (0..MESSAGES).filter(|i| i % 50 == 7).count() as i64;
    assert_eq!(counts(&bob, &room), (MESSAGES as i64, highlights));
    assert_eq!(counts(&carol, &room), (MESSAGES as i64, 0));

    // Every notification listed once, newest first, across pages that straddle the fold.
    let listed = all_notifications(&bob, 37);
    let ids: Vec<&str> = listed.iter().map(|(id, _)| id.as_str()).collect();
    let newest_first: Vec<&str> = sent.iter().rev().map(String::as_str).collect();
    assert_eq!(ids, newest_first, "bob's notifications in order");
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        MESSAGES,
        "duplicates"
    );
    let only = bob.get_ok("/_matrix/client/v3/notifications?only=highlight&limit=100");
    assert_eq!(
        only["notifications"].as_array().map(Vec::len),
        Some(highlights as usize),
        "{only:#}"
    );

    // A read receipt in the middle counts only what follows it, in both tables.
    let middle = &sent[MESSAGES / 2 - 1];
    bob.post_ok(
        &format!(
            "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
            enc(&room),
            enc(middle)
        ),
        &json!({}),
    );
    let after = (MESSAGES / 2) as i64;
    let later_highlights = (MESSAGES / 2..MESSAGES).filter(|i| i % 50 == 7).count() as i64;
    assert_eq!(counts(&bob, &room), (after, later_highlights));
    let listed = all_notifications(&bob, 100);
    let read = listed.iter().filter(|(_, read)| *read).count();
    assert_eq!(read, MESSAGES / 2, "notifications marked read");

    // Redacting an old (folded) and a new (staged) message removes their notifications.
    for event_id in [&sent[0], &sent[MESSAGES - 1]] {
        alice.put_ok(
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/r-{}",
                enc(&room),
                enc(event_id),
                enc(event_id)
            ),
            &json!({}),
        );
    }
    assert_eq!(counts(&carol, &room), (MESSAGES as i64 - 2, 0));
    let listed = all_notifications(&carol, 100);
    assert_eq!(listed.len(), MESSAGES - 2);
    assert!(
        !listed
            .iter()
            .any(|(id, _)| id == &sent[0] || id == &sent[MESSAGES - 1]),
        "redacted events still listed"
    );
}
