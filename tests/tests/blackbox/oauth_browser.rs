//! The unit's OAuth sign-in and consent pages in a real browser: Debian's headless Chromium,
//! driven over the DevTools protocol on `--remote-debugging-pipe` (file descriptors 3 and 4, so no
//! driver program and no extra crate), on a phone-sized viewport (360 CSS px, mobile emulation).
//! With the keyboard only (Tab, typing, Enter) it signs alice in and allows the client; the
//! browser then lands on the client's loopback redirect URI (a listener in this test) with a
//! code and the state, and the code is exchanged for a token that `/whoami` accepts. On each
//! page it checks that every visible field has a `<label for>`, that Tab visits the controls in
//! reading order, and that nothing scrolls sideways. Screenshots of every step are kept under
//! `target/tmp/oauth-browser/` (test artefacts, not in the repository).
//!
//! Chromium comes from tests/host-tools.sh (`chromium`, stage suite), so the test is `#[ignore]`d
//! for a plain `cargo test` and tests/run.sh runs it in its own step. The flags are those this
//! closed network needs (no background networking, component updates or sync).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use tests::oauth_client::{AuthRequest, AuthServer, callback_params, pair};
use tests::{TempDir, TestEnv, Value, json, password_for};

/// The browser under test.
const CHROMIUM: &str = "/usr/bin/chromium";
/// How long one DevTools command or one page load may take.
const STEP: Duration = Duration::from_secs(30);

/// Headless Chromium with a DevTools session on one page.
struct Browser {
    child: Child,
    to_browser: ChildStdin,
    from_browser: Receiver<Value>,
    next_id: u64,
    session: String,
    _profile: TempDir,
}

impl Browser {
    /// Starts Chromium on an empty profile and attaches to a fresh page.
    fn launch(log: &Path) -> Browser {
        assert!(
            Path::new(CHROMIUM).is_file(),
            "{CHROMIUM} missing: `bash tests/host-tools.sh ensure suite` installs Debian's chromium"
        );
        let profile = TempDir::new();
        let log = std::fs::File::create(log).expect("create the browser log");
        // The pipe transport reads commands from fd 3 and writes replies to fd 4: the shell maps
        // them onto the child's stdin and stdout.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>&2"#)
            .arg(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-default-apps",
                "--disable-dev-shm-usage",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn chromium");
        let to_browser = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut message = Vec::new();
                match reader.read_until(0, &mut message) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if message.last() == Some(&0) {
                            message.pop();
                        }
                        if let Ok(value) = serde_json::from_slice::<Value>(&message)
                            && tx.send(value).is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        let mut browser = Browser {
            child,
            to_browser,
            from_browser: rx,
            next_id: 0,
            session: String::new(),
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        browser.call("Page.enable", json!({}));
        browser.call("Runtime.enable", json!({}));
        browser
    }

    /// Sends one command (to the page session once attached) and waits for its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        let mut bytes = message.to_string().into_bytes();
        bytes.push(0);
        self.to_browser
            .write_all(&bytes)
            .and_then(|()| self.to_browser.flush())
            .unwrap_or_else(|e| panic!("{method}: writing to chromium: {e}"));
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = self
                .from_browser
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("{method}: no answer from chromium: {e}"));
            if reply["id"] == id {
                if let Some(error) = reply.get("error") {
                    panic!("{method}: {error}");
                }
                return reply["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page; its JSON value.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {:#}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Waits until the page at a URL starting with `prefix` has loaded; returns its URL.
    fn wait_for_page(&mut self, prefix: &str, what: &str) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let state = self.eval("[location.href, document.readyState]");
            let href = state[0].as_str().unwrap_or("").to_owned();
            if href.starts_with(prefix) && state[1] == "complete" {
                return href;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: still at {href} ({}) after {STEP:?}",
                state[1]
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Presses and releases one key.
    fn key(&mut self, key: &str, code: &str, key_code: u32, text: Option<&str>) {
        let mut down = json!({
            "type": "keyDown",
            "key": key,
            "code": code,
            "windowsVirtualKeyCode": key_code,
            "nativeVirtualKeyCode": key_code,
        });
        if let Some(text) = text {
            down["text"] = json!(text);
            down["unmodifiedText"] = json!(text);
        }
        self.call("Input.dispatchKeyEvent", down);
        self.call(
            "Input.dispatchKeyEvent",
            json!({"type": "keyUp", "key": key, "code": code,
                   "windowsVirtualKeyCode": key_code, "nativeVirtualKeyCode": key_code}),
        );
    }

    fn tab(&mut self) {
        self.key("Tab", "Tab", 9, None);
    }

    fn enter(&mut self) {
        self.key("Enter", "Enter", 13, Some("\r"));
    }

    /// Types `text` one key at a time into the focused field.
    fn type_text(&mut self, text: &str) {
        for c in text.chars() {
            let s = c.to_string();
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": "keyDown", "key": s, "text": s, "unmodifiedText": s}),
            );
            self.call("Input.dispatchKeyEvent", json!({"type": "keyUp", "key": s}));
        }
    }

    /// `tag name value` of the focused element.
    fn focused(&mut self) -> String {
        self.eval(
            "(e => `${e.tagName.toLowerCase()} ${e.name || ''} ${e.value === undefined ? '' : \
             (e.type === 'password' ? '*' : e.value)}`.trim())(document.activeElement)",
        )
        .as_str()
        .unwrap_or("")
        .to_owned()
    }

    /// Tabs from the top of the page until `wanted` (a `focused()` prefix) has the focus.
    fn tab_to(&mut self, wanted: &str) {
        for _ in 0..20 {
            self.tab();
            if self.focused().starts_with(wanted) {
                return;
            }
        }
        panic!("20 presses of Tab never reached {wanted}");
    }

    /// Saves a full-page PNG as `dir/name`.
    fn screenshot(&mut self, dir: &Path, name: &str) {
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = base64_decode(shot["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!("screenshot: {}", path.display());
    }

    /// The checks every page gets: real labels, Tab in reading order, no sideways scrolling on
    /// the phone-sized viewport. Leaves the focus on the first control.
    fn check_page(&mut self, what: &str) {
        let unlabelled = self.eval(
            "[...document.querySelectorAll('input:not([type=hidden]),select,textarea')]\
             .filter(e => e.labels.length === 0 || !e.id).map(e => e.name)",
        );
        assert_eq!(unlabelled, json!([]), "{what}: fields without <label for>");
        let width = self.eval(
            "[document.documentElement.clientWidth, document.documentElement.scrollWidth, \
             document.body.scrollWidth]",
        );
        assert_eq!(
            width[0], 360,
            "{what}: layout viewport {width} (is there a meta viewport?)"
        );
        assert!(
            width[1].as_u64() <= Some(360) && width[2].as_u64() <= Some(360),
            "{what}: the page scrolls sideways at 360px: {width}"
        );
        // Reading order: the focusable controls in document order; Tab must visit them so.
        let reading = self.eval(
            "[...document.querySelectorAll('a[href],input:not([type=hidden]),button,select,\
             textarea,[tabindex]')].filter(e => !e.disabled && e.tabIndex >= 0 && \
             e.getClientRects().length > 0).map(e => `${e.tagName.toLowerCase()} ${e.name || ''} \
             ${e.value === undefined ? '' : (e.type === 'password' ? '*' : e.value)}`.trim())",
        );
        let reading: Vec<String> = reading
            .as_array()
            .expect("a list")
            .iter()
            .map(|v| v.as_str().unwrap_or("").to_owned())
            .collect();
        assert!(!reading.is_empty(), "{what}: nothing to focus");
        // A page may focus its first field on load (autofocus): the keyboard starts there.
        let mut visited = Vec::new();
        let start = self.focused();
        if start != "body" {
            visited.push(start);
        }
        while visited.len() < reading.len() {
            self.tab();
            visited.push(self.focused());
        }
        assert_eq!(visited, reading, "{what}: Tab order is not reading order");
        self.eval("document.activeElement.blur()");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Standard base64 (padding ignored), for the screenshots DevTools sends.
fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for byte in text.bytes() {
        let v = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// A one-shot HTTP listener for the client's redirect URI: answers the first request with a
/// small page and sends its request target over the channel.
fn redirect_listener() -> (u16, Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the redirect listener");
    let port = listener.local_addr().expect("local addr").port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
            let body = "<!doctype html><title>Signed in</title><p>The client got its code.";
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            if target.starts_with("/callback") && tx.send(target).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

/// Where the screenshots go: `target/tmp/oauth-browser/` of the test build.
fn artefact_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("oauth-browser");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

#[test]
#[ignore = "needs Debian's chromium (tests/host-tools.sh); tests/run.sh runs it with --ignored"]
fn sign_in_and_consent_with_the_keyboard_on_a_phone_sized_viewport() {
    let env = TestEnv::unlimited();
    env.register("alice");
    let server = AuthServer::discover(&env);
    let client_id = server.register_native("Keyboard Client");
    let (port, callbacks) = redirect_listener();
    let request = AuthRequest::new(&client_id, &format!("http://127.0.0.1:{port}/callback"));
    let shots = artefact_dir();
    let mut browser = Browser::launch(&shots.join("chromium.log"));
    browser.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 360, "height": 740, "deviceScaleFactor": 2, "mobile": true}),
    );

    // The authorization URL opens the sign-in page (after any redirects on the unit).
    browser.call("Page.navigate", json!({"url": request.url(&server)}));
    let base = env.base_url();
    let sign_in_url = browser.wait_for_page(&base, "the sign-in page");
    browser.screenshot(&shots, "1-sign-in.png");
    browser.check_page("sign-in page");

    // Keyboard only: Tab to the username, type, Tab to the password, type, Enter submits.
    browser.tab_to("input username");
    browser.type_text("alice");
    browser.tab();
    assert!(
        browser.focused().starts_with("input password"),
        "Tab from the username went to {:?}, not the password",
        browser.focused()
    );
    browser.type_text(&password_for("alice"));
    browser.screenshot(&shots, "2-sign-in-filled.png");
    browser.enter();

    // The consent page: the client's name is shown; Tab to "allow", Enter.
    let deadline = Instant::now() + STEP;
    let consent_url = loop {
        let state = browser.eval(
            "[location.href, document.readyState, \
             !!document.querySelector('button[name=action][value=allow]')]",
        );
        if state[1] == "complete" && state[2] == true {
            break state[0].as_str().unwrap_or("").to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no consent page after signing in: at {} ({})",
            state[0],
            browser.eval("document.body ? document.body.innerText : ''")
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert!(
        consent_url.starts_with(&base),
        "the consent page is not on the unit: {consent_url} (sign-in was {sign_in_url})"
    );
    let text = browser.eval("document.body.innerText");
    assert!(
        text.as_str().unwrap_or("").contains("Keyboard Client"),
        "the consent page does not name the client: {text}"
    );
    browser.screenshot(&shots, "3-consent.png");
    browser.check_page("consent page");
    browser.tab_to("button action allow");
    browser.enter();

    // The browser lands on the client's redirect URI with the code and the state.
    let target = callbacks
        .recv_timeout(STEP)
        .expect("the browser never reached the redirect URI");
    let landed = browser.wait_for_page(&format!("http://127.0.0.1:{port}/callback"), "callback");
    browser.screenshot(&shots, "4-redirect-uri.png");
    let params = callback_params(&landed, "query");
    assert_eq!(
        pair(&params, "state"),
        Some(request.state.as_str()),
        "{landed}"
    );
    let code = pair(&params, "code").unwrap_or_else(|| panic!("no code in {landed}"));
    assert!(target.contains("code="), "the listener saw {target}");

    // The code is good: the client gets a token for alice's new device.
    let (status, tokens) = server.exchange(&request, code);
    assert_eq!(status, 200, "{tokens:#}");
    let token = tokens["access_token"].as_str().expect("access_token");
    let me = env
        .with_token(token)
        .get_ok("/_matrix/client/v3/account/whoami");
    assert_eq!(
        me["user_id"],
        format!("@alice:{}", env.server_name()),
        "{me:#}"
    );
    assert_eq!(me["device_id"], request.device_id.as_str(), "{me:#}");
}
