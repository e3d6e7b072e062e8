//! The unit's OAuth pages as HTML: plain string building, with every value that comes from a
//! client, a user or the configuration passed through [`escape`] — the one escaping function.
//!
//! The pages need no JavaScript and load nothing from elsewhere (styles are inline). Every
//! input has a `<label for>`, controls come in reading order, each form submits with Enter,
//! and the layout is a single column that fits a 360 px wide screen.

use super::PREFIX;

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn escape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;padding:1rem;\
background:#f4f5f7;color:#17191c}main{max-width:26rem;margin:2rem auto;background:#fff;\
padding:1.5rem;border-radius:.5rem;box-shadow:0 1px 3px #0003}h1{font-size:1.4rem;\
margin-top:0}label{display:block;margin:.8rem 0 .2rem;font-weight:600}\
input[type=text],input[type=password]{box-sizing:border-box;width:100%;padding:.6rem;\
font-size:1rem;border:1px solid #8a8f98;border-radius:.3rem}button{font-size:1rem;\
padding:.6rem 1.2rem;margin:1rem .5rem 0 0;border-radius:.3rem;border:1px solid #0b5cad;\
background:#0b5cad;color:#fff}button.secondary{background:#fff;color:#0b5cad}\
:focus{outline:3px solid #f2a900;outline-offset:2px}.error{color:#a4001d;font-weight:600}\
ul{padding-left:1.2rem}code{word-break:break-all}p.small{font-size:.9rem;color:#4a4f57}";

/// A whole page around `body` (already HTML).
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head>\
         <body><main>{body}</main></body></html>\n",
        title = escape(title),
    )
}

/// The error line of a form, if any.
fn error_line(error: Option<&str>) -> String {
    error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default()
}

fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        escape(name),
        escape(value)
    )
}

/// Who is asking, as the sign-in and consent pages introduce it.
pub struct ClientView<'a> {
    /// The client's name (or URI).
    pub name: &'a str,
    /// Its client URI.
    pub uri: &'a str,
    /// Its terms of service, if any.
    pub tos_uri: Option<&'a str>,
    /// Its policy, if any.
    pub policy_uri: Option<&'a str>,
}

fn client_intro(client: &ClientView<'_>) -> String {
    let mut links = String::new();
    if let Some(tos) = client.tos_uri {
        links.push_str(&format!(
            " <a href=\"{}\" rel=\"noreferrer\">Terms of service</a>",
            escape(tos)
        ));
    }
    if let Some(policy) = client.policy_uri {
        links.push_str(&format!(
            " <a href=\"{}\" rel=\"noreferrer\">Privacy policy</a>",
            escape(policy)
        ));
    }
    format!(
        "<p><strong>{}</strong> (<code>{}</code>){links}</p>",
        escape(client.name),
        escape(client.uri)
    )
}

/// The sign-in page: `username`, `password`, posting to `/login`.
pub fn sign_in(
    server_name: &str,
    csrf: &str,
    request: &str,
    client: Option<&ClientView<'_>>,
    username: &str,
    error: Option<&str>,
    can_create: bool,
) -> String {
    let intro = match client {
        Some(client) => format!("<p>Sign in to continue to:</p>{}", client_intro(client)),
        None => String::new(),
    };
    let create = if can_create {
        format!(
            "<p class=\"small\">No account yet? <a href=\"{PREFIX}/create?request={}\">Create one</a>.</p>",
            escape(request)
        )
    } else {
        String::new()
    };
    page(
        "Sign in",
        &format!(
            "<h1>Sign in to {server}</h1>{intro}{error}\
             <form method=\"post\" action=\"{PREFIX}/login\">{csrf}{request}\
             <label for=\"username\">Username</label>\
             <input type=\"text\" id=\"username\" name=\"username\" value=\"{username}\" \
             autocomplete=\"username\" autocapitalize=\"none\" spellcheck=\"false\" required autofocus>\
             <label for=\"password\">Password</label>\
             <input type=\"password\" id=\"password\" name=\"password\" \
             autocomplete=\"current-password\" required>\
             <button type=\"submit\">Sign in</button></form>{create}",
            server = escape(server_name),
            error = error_line(error),
            csrf = hidden("csrf", csrf),
            request = hidden("request", request),
            username = escape(username),
        ),
    )
}

/// The create-account page: `username`, `password`, `password_confirm`, posting to `/create`.
pub fn create_account(
    server_name: &str,
    csrf: &str,
    request: &str,
    client: Option<&ClientView<'_>>,
    username: &str,
    error: Option<&str>,
) -> String {
    let intro = client
        .map(|c| {
            format!(
                "<p>Your new account will be used with:</p>{}",
                client_intro(c)
            )
        })
        .unwrap_or_default();
    page(
        "Create an account",
        &format!(
            "<h1>Create an account on {server}</h1>{intro}{error}\
             <form method=\"post\" action=\"{PREFIX}/create\">{csrf}{request}\
             <label for=\"username\">Username</label>\
             <input type=\"text\" id=\"username\" name=\"username\" value=\"{username}\" \
             autocomplete=\"username\" autocapitalize=\"none\" spellcheck=\"false\" required autofocus>\
             <label for=\"password\">Password</label>\
             <input type=\"password\" id=\"password\" name=\"password\" \
             autocomplete=\"new-password\" required>\
             <label for=\"password_confirm\">Repeat the password</label>\
             <input type=\"password\" id=\"password_confirm\" name=\"password_confirm\" \
             autocomplete=\"new-password\" required>\
             <button type=\"submit\">Create account</button></form>\
             <p class=\"small\">Already have an account? \
             <a href=\"{PREFIX}/consent?request={request_q}\">Sign in</a>.</p>",
            server = escape(server_name),
            error = error_line(error),
            csrf = hidden("csrf", csrf),
            request = hidden("request", request),
            request_q = escape(request),
            username = escape(username),
        ),
    )
}

/// The consent page: buttons `action=allow` and `action=deny`, posting to `/consent`.
pub fn consent(
    csrf: &str,
    request: &str,
    client: &ClientView<'_>,
    user_id: &str,
    device_id: &str,
) -> String {
    page(
        "Allow access?",
        &format!(
            "<h1>Allow access to your account?</h1>{intro}\
             <p>You are signed in as <strong>{user}</strong>. The application asks for:</p>\
             <ul><li>Full access to your account: your rooms, messages and settings \
             (<code>urn:matrix:client:api:*</code>)</li>\
             <li>A session on the device <code>{device}</code> \
             (<code>urn:matrix:client:device:{device}</code>)</li></ul>\
             <form method=\"post\" action=\"{PREFIX}/consent\">{csrf}{request}\
             <button type=\"submit\" name=\"action\" value=\"allow\" autofocus>Allow</button>\
             <button type=\"submit\" name=\"action\" value=\"deny\" class=\"secondary\">Deny</button>\
             </form>",
            intro = client_intro(client),
            user = escape(user_id),
            device = escape(device_id),
            csrf = hidden("csrf", csrf),
            request = hidden("request", request),
        ),
    )
}

/// The device verification page (RFC 8628's `verification_uri`): `user_code`.
pub fn link(csrf: &str, user_code: &str, error: Option<&str>) -> String {
    page(
        "Connect a device",
        &format!(
            "<h1>Connect a device</h1>\
             <p>Type the code your other device shows.</p>{error}\
             <form method=\"post\" action=\"{PREFIX}/link\">{csrf}\
             <label for=\"user_code\">Code</label>\
             <input type=\"text\" id=\"user_code\" name=\"user_code\" value=\"{code}\" \
             autocomplete=\"off\" autocapitalize=\"characters\" spellcheck=\"false\" required autofocus>\
             <button type=\"submit\">Continue</button></form>",
            error = error_line(error),
            csrf = hidden("csrf", csrf),
            code = escape(user_code),
        ),
    )
}

/// One device on the account page.
pub struct DeviceLine<'a> {
    /// Its ID.
    pub device_id: &'a str,
    /// Its name, if any.
    pub name: Option<&'a str>,
    /// Whether the account page was opened for it (`device_id=`).
    pub highlighted: bool,
}

/// The account page: the display name, the user's devices (one sign-out form each), password change,
/// deactivation, and signing this browser out. `notice` is a line shown on top.
pub fn account(
    csrf: &str,
    user_id: &str,
    displayname: &str,
    devices: &[DeviceLine<'_>],
    notice: Option<&str>,
) -> String {
    let csrf = hidden("csrf", csrf);
    let mut list = String::new();
    for (n, device) in devices.iter().enumerate() {
        let name = device.name.unwrap_or("(no name)");
        let mark = if device.highlighted {
            " aria-current=\"true\""
        } else {
            ""
        };
        list.push_str(&format!(
            "<li{mark}><strong>{name}</strong> <code>{id}</code>\
             <form method=\"post\" action=\"/_outpost/account/device_delete\">{csrf}{device}\
             <button type=\"submit\" class=\"secondary\" id=\"end{n}\">Sign out this device</button>\
             </form></li>",
            name = escape(name),
            id = escape(device.device_id),
            device = hidden("device_id", device.device_id),
        ));
    }
    if devices.is_empty() {
        list.push_str("<li>No devices are signed in.</li>");
    }
    let notice = notice
        .map(|n| format!("<p role=\"status\"><strong>{}</strong></p>", escape(n)))
        .unwrap_or_default();
    page(
        "Your account",
        &format!(
            "<h1>Your account</h1>{notice}<p>Signed in as <strong>{user}</strong>.</p>\
             <h2 id=\"profile\">Profile</h2>\
             <form method=\"post\" action=\"/_outpost/account/profile\">{csrf}\
             <label for=\"displayname\">Display name</label>\
             <input type=\"text\" id=\"displayname\" name=\"displayname\" value=\"{name}\" \
             autocomplete=\"nickname\">\
             <button type=\"submit\">Save</button></form>\
             <h2 id=\"devices\">Devices</h2><ul>{list}</ul>\
             <h2 id=\"password\">Change password</h2>\
             <form method=\"post\" action=\"/_outpost/account/password\">{csrf}\
             <label for=\"current_password\">Current password</label>\
             <input type=\"password\" id=\"current_password\" name=\"current_password\" \
             autocomplete=\"current-password\" required>\
             <label for=\"new_password\">New password</label>\
             <input type=\"password\" id=\"new_password\" name=\"password\" \
             autocomplete=\"new-password\" required>\
             <label for=\"new_password_confirm\">Repeat the new password</label>\
             <input type=\"password\" id=\"new_password_confirm\" name=\"password_confirm\" \
             autocomplete=\"new-password\" required>\
             <button type=\"submit\">Change password</button></form>\
             <h2 id=\"deactivate\">Deactivate the account</h2>\
             <p>This signs out every device and leaves every room. It cannot be undone.</p>\
             <form method=\"post\" action=\"/_outpost/account/deactivate\">{csrf}\
             <label for=\"deactivate_password\">Password</label>\
             <input type=\"password\" id=\"deactivate_password\" name=\"password\" \
             autocomplete=\"current-password\" required>\
             <button type=\"submit\">Deactivate my account</button></form>\
             <h2 id=\"browser\">This browser</h2>\
             <form method=\"post\" action=\"/_outpost/account/logout\">{csrf}\
             <button type=\"submit\" class=\"secondary\">Sign out of this page</button></form>",
            user = escape(user_id),
            name = escape(displayname),
        ),
    )
}

/// The approval of a cross-signing reset (the `m.oauth` UIA stage): what the reset means,
/// which device asked, and one form posting `session` to `/_outpost/account/cross_signing_reset`.
pub fn cross_signing_reset(csrf: &str, user_id: &str, device_id: &str, session: &str) -> String {
    page(
        "Reset your encryption identity?",
        &format!(
            "<h1>Reset your encryption identity?</h1>\
             <p>You are signed in as <strong>{user}</strong>. Your device <code>{device}</code> \
             asks to replace your cross-signing keys: the identity your devices and the people \
             you talk to use to verify that encrypted messages come from you.</p>\
             <p>After the reset:</p><ul>\
             <li>everyone who verified you sees that your identity changed, and must verify you again;</li>\
             <li>your other devices must be verified again from the new identity;</li>\
             <li>messages you can read now stay readable only where a device or a key backup keeps their keys.</li></ul>\
             <p class=\"error\">Approve only if you started the reset yourself, on <code>{device}</code>. \
             If you did not, someone with access to that device may be taking over your identity: \
             do not approve, and sign that device out on <a href=\"/_outpost/account\">your account page</a>.</p>\
             <form method=\"post\" action=\"/_outpost/account/cross_signing_reset\">{csrf}{session}\
             <button type=\"submit\">Approve the reset</button></form>\
             <p class=\"small\">Nothing changes until your application finishes the reset.</p>",
            user = escape(user_id),
            device = escape(device_id),
            csrf = hidden("csrf", csrf),
            session = hidden("session", session),
        ),
    )
}

/// A page that only says something (an error, or a finished device sign-in).
pub fn message(title: &str, text: &str) -> String {
    page(
        title,
        &format!("<h1>{}</h1><p>{}</p>", escape(title), escape(text)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn client_values_are_escaped_on_the_consent_page() {
        let client = ClientView {
            name: "<script>alert(1)</script>",
            uri: "https://example.com/\"onmouseover=\"x",
            tos_uri: None,
            policy_uri: None,
        };
        let html = consent("c\"srf", "req", &client, "@a:b", "DEV<1>");
        assert!(!html.contains("<script>"));
        assert!(!html.contains("\"onmouseover"));
        assert!(html.contains("DEV&lt;1&gt;"));
        assert_eq!(html.matches("<form ").count(), 1);
        assert!(html.contains("name=\"csrf\" value=\"c&quot;srf\""));
    }

    #[test]
    fn every_input_has_a_label() {
        for html in [
            sign_in("unit", "c", "r", None, "", Some("bad"), true),
            create_account("unit", "c", "r", None, "", None),
            link("c", "", None),
        ] {
            for id in ["username", "password", "password_confirm", "user_code"] {
                if html.contains(&format!("id=\"{id}\"")) {
                    assert!(html.contains(&format!("<label for=\"{id}\">")), "{id}");
                }
            }
            assert_eq!(html.matches("<form ").count(), 1);
        }
    }
}
