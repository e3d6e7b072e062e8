//! Third-party identifiers on a closed unit: every email/phone validation and binding is
//! refused with `M_THREEPID_DENIED`; listing is empty and removal is a harmless no-op.

use tests::{TestEnv, assert_error, json, ok};

#[test]
fn threepid_endpoints_answer_with_the_spec_errors() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let token_body =
        json!({ "client_secret": "s3cret", "email": "a@example.org", "send_attempt": 1 });
    for path in [
        "/_matrix/client/v3/register/email/requestToken",
        "/_matrix/client/v3/register/msisdn/requestToken",
        "/_matrix/client/v3/account/password/email/requestToken",
        "/_matrix/client/v3/account/3pid/email/requestToken",
        "/_matrix/client/v3/account/3pid/msisdn/requestToken",
    ] {
        assert_error(
            &env.anon().post(path, &token_body),
            403,
            "M_THREEPID_DENIED",
        );
    }
    let add = json!({ "client_secret": "s3cret", "sid": "1" });
    assert_error(
        &alice.post("/_matrix/client/v3/account/3pid/add", &add),
        403,
        "M_THREEPID_DENIED",
    );
    assert_error(
        &alice.post("/_matrix/client/v3/account/3pid/bind", &add),
        403,
        "M_THREEPID_DENIED",
    );
    let removed = ok(
        alice.post(
            "/_matrix/client/v3/account/3pid/delete",
            &json!({ "medium": "email", "address": "a@example.org" }),
        ),
        "delete",
    );
    assert_eq!(removed["id_server_unbind_result"], "no-support");
    assert_eq!(
        alice.get_ok("/_matrix/client/v3/account/3pid")["threepids"],
        json!([])
    );
    assert_error(
        &env.anon().post("/_matrix/client/v3/account/3pid/add", &add),
        401,
        "M_MISSING_TOKEN",
    );
}
