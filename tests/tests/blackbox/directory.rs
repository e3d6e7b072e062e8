//! The public room directory's pagination: `next_batch` / `prev_batch` are opaque tokens that
//! cannot be mistaken for numbers, a `since` that is not one is 400 `M_INVALID_PARAM`, and the
//! federation `publicRooms` (GET and POST) pages and filters the same way.

use std::net::{Ipv4Addr, SocketAddr};

use tests::federation::{Puppet, Unit, UnitOptions, free_port_on, unit_ip};
use tests::{TestEnv, Value, assert_error, enc, json, ok, str_field};

fn listed(body: &Value) -> Vec<String> {
    body["chunk"]
        .as_array()
        .unwrap_or_else(|| panic!("chunk array: {body:#}"))
        .iter()
        .map(|room| str_field(room, "room_id"))
        .collect()
}

/// A token a client could take for a number (or do arithmetic on) is not opaque.
fn assert_opaque(token: &str) {
    assert!(token.parse::<f64>().is_err(), "{token:?} reads as a number");
}

#[test]
fn client_directory_tokens_are_opaque_and_bad_ones_refused() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let mut rooms = Vec::new();
    for name in ["One", "Two", "Three"] {
        rooms.push(alice.create_room(&json!({
            "preset": "public_chat", "visibility": "public", "name": name,
        })));
    }
    let page1 = ok(
        alice.get("/_matrix/client/v3/publicRooms?limit=2"),
        "page 1",
    );
    let next = str_field(&page1, "next_batch");
    assert_opaque(&next);
    assert!(page1.get("prev_batch").is_none(), "{page1:#}");
    let page2 = ok(
        alice.get(&format!(
            "/_matrix/client/v3/publicRooms?limit=2&since={}",
            enc(&next)
        )),
        "page 2",
    );
    assert!(page2.get("next_batch").is_none(), "{page2:#}");
    assert_opaque(&str_field(&page2, "prev_batch"));
    let mut seen = listed(&page1);
    seen.extend(listed(&page2));
    seen.sort();
    rooms.sort();
    assert_eq!(seen, rooms);
    // The same token through the POST form.
    let posted = ok(
        alice.post(
            "/_matrix/client/v3/publicRooms",
            &json!({ "limit": 2, "since": next }),
        ),
        "POST page 2",
    );
    assert_eq!(listed(&posted), listed(&page2));

    for bad in ["2", "-1", "abc", "d", "dx"] {
        assert_error(
            &alice.get(&format!(
                "/_matrix/client/v3/publicRooms?since={}",
                enc(bad)
            )),
            400,
            "M_INVALID_PARAM",
        );
        assert_error(
            &alice.post("/_matrix/client/v3/publicRooms", &json!({ "since": bad })),
            400,
            "M_INVALID_PARAM",
        );
    }
}

#[test]
fn federation_directory_pages_and_filters() {
    let endpoint = SocketAddr::from((
        Ipv4Addr::new(127, 0, 0, 12),
        free_port_on(Ipv4Addr::new(127, 0, 0, 12)),
    ));
    let peer = Puppet::new("peer.test", endpoint);
    let mut a = Unit::new("unit-a.test", unit_ip(0), &UnitOptions::default());
    a.trust_card(peer.name(), peer.card());
    a.start();
    let alice = a.register("alice");
    let mut rooms = Vec::new();
    for name in ["Zebra", "Okapi", "Aardvark"] {
        rooms.push(alice.create_room(&json!({
            "preset": "public_chat", "visibility": "public", "name": name,
        })));
    }
    const PATH: &str = "/_matrix/federation/v1/publicRooms";

    let page1 = peer.request(&a, "GET", &format!("{PATH}?limit=2"), None);
    assert_eq!(page1.status, 200, "{}", page1.json());
    let page1 = page1.json();
    assert_eq!(listed(&page1).len(), 2, "limit honoured: {page1:#}");
    let next = str_field(&page1, "next_batch");
    assert_opaque(&next);
    let page2 = peer.request(
        &a,
        "GET",
        &format!("{PATH}?limit=2&since={}", enc(&next)),
        None,
    );
    assert_eq!(page2.status, 200, "{}", page2.json());
    let mut seen = listed(&page1);
    seen.extend(listed(&page2.json()));
    seen.sort();
    rooms.sort();
    assert_eq!(seen, rooms);

    let search = peer.request(
        &a,
        "POST",
        PATH,
        Some(&json!({ "limit": 5, "filter": { "generic_search_term": "okapi" } })),
    );
    assert_eq!(search.status, 200, "{}", search.json());
    assert_eq!(listed(&search.json()).len(), 1, "{}", search.json());

    let bad = peer.request(&a, "GET", &format!("{PATH}?since=2"), None);
    assert_eq!(bad.status, 400, "{}", bad.json());
    assert_eq!(bad.json()["errcode"], "M_INVALID_PARAM");
    let bad = peer.request(&a, "POST", PATH, Some(&json!({ "since": "nope" })));
    assert_eq!(bad.status, 400, "{}", bad.json());
    assert_eq!(bad.json()["errcode"], "M_INVALID_PARAM");
}
