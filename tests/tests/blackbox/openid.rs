//! OpenID: a client's token, presented by a third party (widget, call service) to the unit's
//! federation listener, names the user; a wrong or foreign token is refused.

use tests::federation::Federation;
use tests::{assert_error, enc, json};

#[test]
fn an_openid_token_resolves_to_its_user_through_userinfo() {
    let fed = Federation::start(&["unit-a.test"]);
    let unit = &fed.units[0];
    let alice = unit.register("alice");
    let bob = unit.register("bob");
    let path = format!(
        "/_matrix/client/v3/user/{}/openid/request_token",
        enc(&alice.user_id)
    );
    let token = alice.post_ok(&path, &json!({}));
    assert_eq!(token["token_type"], "Bearer", "{token:#}");
    assert_eq!(token["matrix_server_name"], "unit-a.test", "{token:#}");
    assert!(
        token["expires_in"].as_u64().is_some_and(|s| s > 0),
        "{token:#}"
    );
    let access = token["access_token"].as_str().expect("access_token");

    // The third party is no peer: no X-Matrix header at all.
    let info = unit
        .fed_client()
        .request(
            "GET",
            &format!(
                "/_matrix/federation/v1/openid/userinfo?access_token={}",
                enc(access)
            ),
            None,
            None,
        )
        .expect("userinfo");
    assert_eq!(info.status, 200, "{:#}", info.json());
    assert_eq!(info.json(), json!({ "sub": alice.user_id }));

    let wrong = unit
        .fed_client()
        .request(
            "GET",
            "/_matrix/federation/v1/openid/userinfo?access_token=nonsense",
            None,
            None,
        )
        .expect("userinfo");
    assert_eq!(wrong.status, 401, "{:#}", wrong.json());
    assert_eq!(wrong.json()["errcode"], "M_UNKNOWN_TOKEN");
    // The client access token itself is not an OpenID token.
    let bearer = unit
        .fed_client()
        .request(
            "GET",
            &format!(
                "/_matrix/federation/v1/openid/userinfo?access_token={}",
                enc(alice.access_token.as_deref().expect("logged in"))
            ),
            None,
            None,
        )
        .expect("userinfo");
    assert_eq!(bearer.status, 401);

    // Only for oneself.
    assert_error(&bob.post(&path, &json!({})), 403, "M_FORBIDDEN");
}
