//! OAuth 2.0 request shapes for the tests: a scripted user agent ([`Browser`]) that keeps the
//! `outpost_session` cookie, reads a page's form and posts it as a browser would, PKCE pairs,
//! and form-encoded requests to the token endpoints. No behaviour is asserted here.

use crate::{Client, Reply, TestEnv, Value, enc, json, password_for};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Base64url without padding (RFC 4648 section 5), for PKCE challenges.
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// A PKCE `(verifier, S256 challenge)` pair; `seed` makes the verifier unique.
pub fn pkce(seed: &str) -> (String, String) {
    let verifier = format!("{:0<64}", format!("verifier-{seed}-"));
    let challenge = base64url(&Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// Form-encodes `pairs`.
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The value of `name` in a `a=b&c=d` string (percent- and `+`-decoded).
pub fn param(encoded: &str, name: &str) -> Option<String> {
    encoded.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode(&v.replace('+', " ")))
    })
}

fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&raw[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Undoes the five HTML escapes the server uses.
pub fn html_unescape(raw: &str) -> String {
    raw.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// A page's first form: its `action` and hidden inputs.
#[derive(Debug, Clone)]
pub struct Form {
    /// Where it posts.
    pub action: String,
    /// Hidden `(name, value)` pairs, in order.
    pub hidden: Vec<(String, String)>,
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
    let end = tag[start..].find('"')? + start;
    Some(html_unescape(&tag[start..end]))
}

/// Reads the first `<form>` of a page.
pub fn parse_form(html: &str) -> Option<Form> {
    let start = html.find("<form ")?;
    let end = html[start..].find("</form>")? + start;
    let body = &html[start..end];
    let open_end = body.find('>')?;
    let action = attr(&body[..open_end], "action")?;
    let hidden = body
        .split("<input ")
        .skip(1)
        .filter_map(|rest| {
            let tag = &rest[..rest.find('>')?];
            (attr(tag, "type").as_deref() == Some("hidden"))
                .then(|| Some((attr(tag, "name")?, attr(tag, "value").unwrap_or_default())))
                .flatten()
        })
        .collect();
    Some(Form { action, hidden })
}

/// A scripted user agent: follows no redirects by itself, keeps the session cookie.
pub struct Browser {
    agent: ureq::Agent,
    base: String,
    /// The `outpost_session` cookie value, once set.
    pub cookie: Option<String>,
    /// Every `Set-Cookie` header received, in order.
    pub set_cookies: Vec<String>,
}

impl Browser {
    /// A fresh browser against `env`'s client listener (plain HTTP).
    pub fn new(env: &TestEnv) -> Browser {
        Browser::at(&env.base_url())
    }

    /// A fresh browser against a plain-HTTP base URL.
    pub fn at(base: &str) -> Browser {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .new_agent();
        Browser {
            agent,
            base: base.to_owned(),
            cookie: None,
            set_cookies: Vec::new(),
        }
    }

    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            format!("{}{path_or_url}", self.base)
        }
    }

    fn finish(&mut self, response: ureq::http::Response<ureq::Body>) -> Reply {
        let status = response.status().as_u16();
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        for (name, value) in &headers {
            if name == "set-cookie" {
                self.set_cookies.push(value.clone());
                if let Some(rest) = value.strip_prefix("outpost_session=") {
                    self.cookie = Some(rest.split(';').next().unwrap_or_default().to_owned());
                }
            }
        }
        let body = response
            .into_body()
            .read_to_vec()
            .expect("reading a response body");
        Reply {
            status,
            headers,
            body,
        }
    }

    /// `GET` a path or absolute URL.
    pub fn get(&mut self, path_or_url: &str) -> Reply {
        let mut builder = ureq::http::Request::builder()
            .method("GET")
            .uri(self.url(path_or_url));
        if let Some(cookie) = &self.cookie {
            builder = builder.header("Cookie", format!("outpost_session={cookie}"));
        }
        let request = builder.body(()).expect("a GET request");
        let response = self.agent.run(request).expect("GET transport");
        self.finish(response)
    }

    /// `POST` a form body.
    pub fn post(&mut self, path: &str, body: &str) -> Reply {
        let mut builder = ureq::http::Request::builder()
            .method("POST")
            .uri(self.url(path))
            .header("Content-Type", "application/x-www-form-urlencoded");
        if let Some(cookie) = &self.cookie {
            builder = builder.header("Cookie", format!("outpost_session={cookie}"));
        }
        let request = builder.body(body.as_bytes()).expect("a POST request");
        let response = self.agent.run(request).expect("POST transport");
        self.finish(response)
    }

    /// Submits `page`'s form with its hidden inputs plus `fields`.
    pub fn submit(&mut self, page: &Reply, fields: &[(&str, &str)]) -> Reply {
        let html = String::from_utf8_lossy(&page.body).into_owned();
        let parsed = parse_form(&html).unwrap_or_else(|| panic!("no form in page:\n{html}"));
        let mut pairs: Vec<(&str, &str)> = parsed
            .hidden
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        pairs.extend_from_slice(fields);
        self.post(&parsed.action, &form(&pairs))
    }

    /// Follows a 303 to a page on the server.
    pub fn follow(&mut self, reply: &Reply) -> Reply {
        assert_eq!(
            reply.status,
            303,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        let location = reply.header("location").expect("Location").to_owned();
        self.get(&location)
    }
}

/// The page text of a reply.
pub fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

/// Registers a client (`POST` the metadata); returns `(status, body)`.
pub fn register_client(env: &TestEnv, metadata: &Value) -> (u16, Value) {
    env.anon().post("/_outpost/oauth/register", metadata)
}

/// A web client of `https://app.example` with one redirect URI; returns its `client_id`.
pub fn web_client(env: &TestEnv, redirect_uri: &str) -> String {
    web_client_of(&env.anon(), redirect_uri)
}

/// [`web_client`] through any anonymous client of a server.
pub fn web_client_of(anon: &Client, redirect_uri: &str) -> String {
    let (status, body) = anon.post(
        "/_outpost/oauth/register",
        &json!({
            "client_name": "Test App",
            "client_uri": "https://app.example/",
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token",
                            "urn:ietf:params:oauth:grant-type:device_code"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            "application_type": "web",
        }),
    );
    assert_eq!(status, 201, "{body:#}");
    body["client_id"].as_str().expect("client_id").to_owned()
}

/// `POST`s a form to an OAuth endpoint; returns `(status, JSON body)`.
pub fn post_form(env: &TestEnv, path: &str, pairs: &[(&str, &str)]) -> (u16, Value) {
    post_form_of(&env.anon(), path, pairs)
}

/// [`post_form`] through any anonymous client of a server.
pub fn post_form_of(anon: &Client, path: &str, pairs: &[(&str, &str)]) -> (u16, Value) {
    let reply = anon.request(
        "POST",
        path,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(form(pairs).as_bytes()),
    );
    (reply.status, reply.json())
}

/// An authorisation request URL.
pub fn authorize_path(
    client_id: &str,
    redirect_uri: &str,
    device_id: &str,
    state: &str,
    challenge: &str,
    extra: &[(&str, &str)],
) -> String {
    let scope = format!("urn:matrix:client:api:* urn:matrix:client:device:{device_id}");
    let mut pairs = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("scope", scope.as_str()),
        ("state", state),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ];
    pairs.extend_from_slice(extra);
    format!("/_outpost/oauth/authorize?{}", form(&pairs))
}

/// Signs `localpart` in on the page a reply shows and allows access; returns the final 303
/// (to the client's redirect URI).
pub fn sign_in_and_allow(browser: &mut Browser, sign_in_page: &Reply, localpart: &str) -> Reply {
    sign_in_with(browser, sign_in_page, localpart, &password_for(localpart))
}

/// [`sign_in_and_allow`] with an explicit password.
pub fn sign_in_with(
    browser: &mut Browser,
    sign_in_page: &Reply,
    localpart: &str,
    password: &str,
) -> Reply {
    assert_eq!(sign_in_page.status, 200, "{}", text(sign_in_page));
    let after = browser.submit(
        sign_in_page,
        &[("username", localpart), ("password", password)],
    );
    let consent = browser.follow(&after);
    assert_eq!(consent.status, 200, "{}", text(&consent));
    browser.submit(&consent, &[("action", "allow")])
}

/// The query (or fragment) parameters of a redirect's `Location`.
pub fn location_params(reply: &Reply) -> String {
    let location = reply.header("location").expect("Location");
    location
        .split_once('#')
        .or_else(|| location.split_once('?'))
        .map(|(_, p)| p.to_owned())
        .unwrap_or_default()
}
