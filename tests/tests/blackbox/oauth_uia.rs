//! The `m.oauth` UIA stage (spec v1.17 "OAuth authentication", MSC4312), black-box: a device
//! signed in through OAuth that replaces its cross-signing keys gets 401 with the `m.oauth`
//! flow (and MSC4312's unstable name) and the account page URL; the user approves on that page
//! (signed in, the CSRF-protected form); the client's retry naming the session then succeeds.
//! Without approval, with another user's, or after the approval expired, the retry gets the
//! challenge again; a device of the legacy `/login` keeps `m.login.password`.

use std::time::Duration;

use tests::oauth_client::{self, Browser, Page};
use tests::{Client, TestEnv, Value, json, password_for};
use vodozemac::Ed25519Keypair;

const UPLOAD: &str = "/_matrix/client/v3/keys/device_signing/upload";
const RESET: &str = "org.matrix.cross_signing_reset";

/// A server with open registration and no rate limit, `[auth]` as given.
fn env_with(auth_toml: &str) -> TestEnv {
    TestEnv::with_config(&format!(
        "[registration]\nenabled = true\n\n[rate_limit]\nenabled = false\n\n[auth]\n{auth_toml}"
    ))
}

/// A cross-signing key object for `user` with `usage`, signed by `signer` (if any).
fn cross_key(
    user: &str,
    usage: &str,
    key: &Ed25519Keypair,
    signer: Option<&Ed25519Keypair>,
) -> Value {
    let public = key.public_key().to_base64();
    let mut object = json!({
        "user_id": user,
        "usage": [usage],
        "keys": { format!("ed25519:{public}"): public },
    });
    if let Some(signer) = signer {
        let signer_public = signer.public_key().to_base64();
        let signature = signer
            .sign(&tests::e2ee::signing_bytes(&object))
            .to_base64();
        object["signatures"][user][format!("ed25519:{signer_public}")] = json!(signature);
    }
    object
}

/// A fresh master key with its self-signing key; returns the upload body and the master's
/// public key.
fn new_identity(user: &str) -> (Value, String) {
    let master = Ed25519Keypair::new();
    let self_signing = Ed25519Keypair::new();
    let body = json!({
        "master_key": cross_key(user, "master", &master, None),
        "self_signing_key": cross_key(user, "self_signing", &self_signing, Some(&master)),
    });
    (body, master.public_key().to_base64())
}

/// The user's published master key.
fn master_of(client: &Client, user: &str) -> String {
    let keys = client.post_ok(
        "/_matrix/client/v3/keys/query",
        &json!({ "device_keys": { user: [] } }),
    );
    let master = &keys["master_keys"][user]["keys"];
    master
        .as_object()
        .and_then(|keys| keys.values().next())
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no master key of {user}: {keys:#}"))
        .to_owned()
}

/// `body` with `auth`.
fn with_auth(body: &Value, auth: Value) -> Value {
    let mut body = body.clone();
    body["auth"] = auth;
    body
}

/// An OAuth session of `localpart` (a native client, signed in on the pages): its client.
fn oauth_device(env: &TestEnv, localpart: &str) -> Client {
    let (_, _, tokens) = oauth_client::login(env, localpart);
    env.with_token(tokens["access_token"].as_str().expect("access_token"))
}

/// Publishes a first identity (no UIA), then asks to replace it: the 401 challenge, checked
/// to be the `m.oauth` one, and the replacement body.
fn start_reset(env: &TestEnv, client: &Client, user: &str) -> (Value, Value) {
    let (first, _) = new_identity(user);
    let (status, body) = client.post(UPLOAD, &first);
    assert_eq!(status, 200, "first upload needs no UIA: {body:#}");
    let (replace, _) = new_identity(user);
    let (status, challenge) = client.post(UPLOAD, &replace);
    assert_eq!(status, 401, "{challenge:#}");
    assert_eq!(
        challenge["flows"],
        json!([{"stages": ["m.oauth"]}, {"stages": [RESET]}]),
        "an OAuth device is offered m.oauth (and its unstable name), never the password: \
         {challenge:#}"
    );
    let session = challenge["session"].as_str().expect("session");
    let account = env.base_url() + "/_outpost/account";
    let want = format!("{account}?action={RESET}&session={session}");
    assert_eq!(
        challenge["params"]["m.oauth"]["url"],
        json!(want),
        "{challenge:#}"
    );
    assert_eq!(
        challenge["params"][RESET]["url"],
        json!(want),
        "{challenge:#}"
    );
    assert_eq!(challenge["completed"], json!([]), "{challenge:#}");
    (challenge, replace)
}

fn url_of(challenge: &Value) -> String {
    challenge["params"]["m.oauth"]["url"]
        .as_str()
        .expect("m.oauth url")
        .to_owned()
}

fn session_of(challenge: &Value) -> Value {
    json!({ "session": challenge["session"] })
}

/// Opens the approval URL signed out, signs in as `localpart` on the way: the page it lands on.
fn open_signed_in(browser: &mut Browser, url: &str, localpart: &str) -> Page {
    browser.sign_in(url, localpart, &password_for(localpart))
}

/// Presses the reset page's one button.
fn approve(browser: &mut Browser, page: &Page) -> Page {
    let form = page.post_form();
    assert!(
        form.action
            .ends_with("/_outpost/account/cross_signing_reset"),
        "{form:?}"
    );
    browser.submit(page, &form, &[])
}

/// Asserts the retry is refused with the same session's challenge, nothing completed.
fn assert_still_challenged(client: &Client, replace: &Value, challenge: &Value, what: &str) {
    let (status, again) = client.post(UPLOAD, &with_auth(replace, session_of(challenge)));
    assert_eq!(status, 401, "{what}: {again:#}");
    assert_eq!(again["session"], challenge["session"], "{what}: {again:#}");
    assert_eq!(again["completed"], json!([]), "{what}: {again:#}");
    assert!(
        again["params"]["m.oauth"]["url"].is_string(),
        "{what}: {again:#}"
    );
}

#[test]
fn metadata_lists_the_cross_signing_reset_action() {
    let env = env_with("");
    let metadata = env.anon().get_ok("/_matrix/client/v1/auth_metadata");
    let actions = metadata["account_management_actions_supported"]
        .as_array()
        .expect("actions");
    assert!(actions.contains(&json!(RESET)), "{metadata:#}");
}

#[test]
fn an_oauth_device_resets_cross_signing_once_approved_on_the_account_page() {
    let env = env_with("");
    env.register("alice");
    let alice = oauth_device(&env, "alice");
    let user = "@alice:outpost.test";
    let (challenge, replace) = start_reset(&env, &alice, user);
    let old_master = master_of(&alice, user);

    // Not approved yet: the retry (with or without the type) gets the challenge again.
    assert_still_challenged(&alice, &replace, &challenge, "no approval");
    let typed = json!({ "type": "m.oauth", "session": challenge["session"] });
    let (status, again) = alice.post(UPLOAD, &with_auth(&replace, typed));
    assert_eq!(status, 401, "{again:#}");

    // The user opens the URL, signs in on the way, and sees what the reset means.
    let mut browser = Browser::new();
    let page = open_signed_in(&mut browser, &url_of(&challenge), "alice");
    assert_eq!(page.reply.status, 200, "{}", page.text());
    let text = page.text();
    assert!(text.contains("cross-signing"), "{text}");
    assert!(text.contains("verify you again"), "{text}");
    assert!(text.contains(user), "{text}");
    // A post without the page's CSRF token approves nothing.
    let form = page.post_form();
    let forged: Vec<(String, String)> = form
        .submission(&[])
        .into_iter()
        .map(|(k, v)| {
            if k == "csrf" {
                (k, "forged".to_owned())
            } else {
                (k, v)
            }
        })
        .collect();
    let refused = browser.post_fields(&page, &form, &forged);
    assert!(
        (400..500).contains(&refused.reply.status),
        "{}",
        refused.text()
    );
    assert_still_challenged(&alice, &replace, &challenge, "forged CSRF");

    let done = approve(&mut browser, &page);
    assert_eq!(done.reply.status, 200, "{}", done.text());
    assert!(done.text().contains("Reset approved"), "{}", done.text());

    // The client's retry with the session succeeds; the new identity is published.
    let (status, body) = alice.post(UPLOAD, &with_auth(&replace, session_of(&challenge)));
    assert_eq!(status, 200, "{body:#}");
    let new_master = master_of(&alice, user);
    assert_ne!(new_master, old_master);
    let want = replace["master_key"]["keys"]
        .as_object()
        .and_then(|k| k.values().next())
        .cloned();
    assert_eq!(Some(json!(new_master)), want);

    // The approval was for that one reset: the session is finished, a further one asks again.
    let (another, _) = new_identity(user);
    let (status, again) = alice.post(UPLOAD, &with_auth(&another, session_of(&challenge)));
    assert_eq!(status, 401, "{again:#}");
    assert_ne!(again["session"], challenge["session"], "{again:#}");
    assert_eq!(master_of(&alice, user), new_master);
}

#[test]
fn another_users_approval_never_counts() {
    let env = env_with("");
    env.register("alice");
    env.register("bob");
    let alice = oauth_device(&env, "alice");
    let (challenge, replace) = start_reset(&env, &alice, "@alice:outpost.test");

    // bob, signed in, opens alice's link: nothing to approve for him.
    let mut bob = Browser::new();
    let page = open_signed_in(&mut bob, &url_of(&challenge), "bob");
    assert_eq!(page.reply.status, 400, "{}", page.text());
    assert!(
        page.text().contains("No reset is waiting"),
        "{}",
        page.text()
    );
    assert!(!page.text().contains("@alice"), "{}", page.text());

    // bob posts the approval form with his own CSRF token and alice's session: refused.
    let mut own = Browser::new();
    let alice_page = open_signed_in(&mut own, &url_of(&challenge), "alice");
    let form = alice_page.post_form();
    let account = bob.get(&(env.base_url() + "/_outpost/account"));
    let csrf = account
        .forms()
        .iter()
        .find_map(|form| form.input("csrf").map(|input| input.value.clone()))
        .expect("bob's account page has a CSRF token");
    let fields: Vec<(String, String)> = form
        .submission(&[])
        .into_iter()
        .map(|(k, v)| {
            if k == "csrf" {
                (k, csrf.clone())
            } else {
                (k, v)
            }
        })
        .collect();
    let refused = bob.post_fields(&alice_page, &form, &fields);
    assert_eq!(refused.reply.status, 400, "{}", refused.text());
    assert!(
        refused.text().contains("No reset is waiting"),
        "{}",
        refused.text()
    );
    assert_still_challenged(&alice, &replace, &challenge, "bob's approval");

    // alice's own approval still works afterwards.
    let done = approve(&mut own, &alice_page);
    assert_eq!(done.reply.status, 200, "{}", done.text());
    let (status, body) = alice.post(UPLOAD, &with_auth(&replace, session_of(&challenge)));
    assert_eq!(status, 200, "{body:#}");
}

#[test]
fn an_expired_approval_does_not_count() {
    let env = env_with("approval_secs = 1\n");
    env.register("alice");
    let alice = oauth_device(&env, "alice");
    let (challenge, replace) = start_reset(&env, &alice, "@alice:outpost.test");
    let mut browser = Browser::new();
    let page = open_signed_in(&mut browser, &url_of(&challenge), "alice");
    let done = approve(&mut browser, &page);
    assert_eq!(done.reply.status, 200, "{}", done.text());
    // Past the approval's one second (a lower bound, so no race): it no longer counts.
    std::thread::sleep(Duration::from_millis(1500));
    assert_still_challenged(&alice, &replace, &challenge, "expired approval");
    // Approved again, the same session goes through.
    let page = browser.get(&url_of(&challenge));
    let done = approve(&mut browser, &page);
    assert_eq!(done.reply.status, 200, "{}", done.text());
    let (status, body) = alice.post(UPLOAD, &with_auth(&replace, session_of(&challenge)));
    assert_eq!(status, 200, "{body:#}");
}

#[test]
fn a_password_device_keeps_the_password_flow() {
    let env = env_with("");
    let alice = env.register("alice");
    // alice also has an OAuth session: what counts is how the asking device signed in.
    oauth_device(&env, "alice");
    let user = "@alice:outpost.test";
    let (first, _) = new_identity(user);
    alice.post_ok(UPLOAD, &first);
    let (replace, _) = new_identity(user);
    let (status, challenge) = alice.post(UPLOAD, &replace);
    assert_eq!(status, 401, "{challenge:#}");
    assert_eq!(
        challenge["flows"],
        json!([{"stages": ["m.login.password"]}]),
        "{challenge:#}"
    );
    assert!(
        challenge["params"].get("m.oauth").is_none(),
        "{challenge:#}"
    );
    // Naming m.oauth instead of the password passes nothing.
    let oauth = json!({ "type": "m.oauth", "session": challenge["session"] });
    let (status, body) = alice.post(UPLOAD, &with_auth(&replace, oauth));
    assert_eq!(status, 401, "{body:#}");
    let password = json!({
        "type": "m.login.password", "session": challenge["session"],
        "identifier": { "type": "m.id.user", "user": "alice" }, "password": password_for("alice"),
    });
    let (status, body) = alice.post(UPLOAD, &with_auth(&replace, password));
    assert_eq!(status, 200, "{body:#}");
}
