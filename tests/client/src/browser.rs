//! A scripted user agent for the unit's OAuth pages, what a matrix-rust-sdk app hands the
//! authorization URL to: reqwest (the SDK's own, re-exported) with its own cookie jar and no
//! automatic redirects. It follows redirects on the unit's origin, submits each page's one POST
//! form with every hidden input (the CSRF token among them) plus what a user types, and stops at
//! the redirect to the client's redirect URI, whose URL it returns. The forms are read with the
//! black-box suite's parser (`tests/src/html.rs`, included here as `crate::html`).

use anyhow::{Context, Result, bail, ensure};
use matrix_sdk::reqwest;

use crate::html::{self, Form};

/// A page or redirect the agent received.
#[derive(Debug, Clone)]
pub struct Page {
    /// The absolute URL requested.
    pub url: String,
    /// The HTTP status.
    pub status: u16,
    /// The `Location` header resolved against `url`, if any.
    pub location: Option<String>,
    /// The body as text.
    pub body: String,
}

impl Page {
    /// The page's one `method="post"` form.
    pub fn post_form(&self) -> Result<Form> {
        let forms: Vec<Form> = html::forms(&self.body)
            .into_iter()
            .filter(|form| form.method == "post")
            .collect();
        ensure!(
            forms.len() == 1,
            "{} (status {}) has {} POST forms, expected one:\n{}",
            self.url,
            self.status,
            forms.len(),
            self.body
        );
        Ok(forms.into_iter().next().expect("one form"))
    }
}

/// The scripted browser.
#[derive(Debug)]
pub struct UserAgent {
    http: reqwest::Client,
    cookies: Vec<(String, String)>,
}

impl UserAgent {
    /// An agent with an empty jar, trusting `ca_pem` (a TLS unit's CA) when given.
    pub fn new(ca_pem: Option<&[u8]>) -> Result<UserAgent> {
        let mut builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = ca_pem {
            builder = builder.tls_certs_only(vec![reqwest::Certificate::from_pem(pem)?]);
        }
        Ok(UserAgent {
            http: builder.build()?,
            cookies: Vec::new(),
        })
    }

    async fn request(&mut self, url: &str, form: Option<String>) -> Result<Page> {
        let mut request = match &form {
            Some(_) => self.http.post(url),
            None => self.http.get(url),
        };
        if !self.cookies.is_empty() {
            let cookie = self
                .cookies
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect::<Vec<_>>()
                .join("; ");
            request = request.header("Cookie", cookie);
        }
        if let Some(body) = form {
            request = request
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("request to {url}"))?;
        for value in response.headers().get_all("set-cookie") {
            let header = value.to_str().unwrap_or("");
            if let Some((name, value)) = header.split(';').next().and_then(|p| p.split_once('=')) {
                let name = name.trim().to_owned();
                self.cookies.retain(|(known, _)| *known != name);
                self.cookies.push((name, value.trim().to_owned()));
            }
        }
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|value| value.to_str().ok())
            .map(|location| html::resolve(url, location));
        let body = response.text().await.unwrap_or_default();
        Ok(Page {
            url: url.to_owned(),
            status,
            location,
            body,
        })
    }

    /// GETs `url`, following redirects while they stay on its origin.
    pub async fn open(&mut self, url: &str) -> Result<Page> {
        let page = self.request(url, None).await?;
        self.follow(page).await
    }

    /// Follows redirects from `page` while they stay on the unit's origin; a redirect
    /// elsewhere (the client's redirect URI) is returned unfollowed.
    pub async fn follow(&mut self, mut page: Page) -> Result<Page> {
        let origin = html::origin(&page.url).unwrap_or("").to_owned();
        for _ in 0..10 {
            let next = match (&page.location, page.status) {
                (Some(next), 300..=399) => next.clone(),
                _ => return Ok(page),
            };
            if html::origin(&next) != Some(origin.as_str()) {
                return Ok(page);
            }
            page = self.request(&next, None).await?;
        }
        bail!("more than 10 redirects from {}", page.url)
    }

    /// Submits `page`'s POST form with its hidden inputs plus `fill`; follows redirects on the
    /// unit.
    pub async fn submit(&mut self, page: &Page, fill: &[(&str, &str)]) -> Result<Page> {
        let form = page.post_form()?;
        let action = html::resolve(&page.url, &form.action);
        let answer = self
            .request(&action, Some(html::form_body(&form.submission(fill))))
            .await?;
        self.follow(answer).await
    }

    /// The user's part of the authorization code flow: opens `auth_url`, signs in with
    /// `username` and `password`, allows the client on the consent page, and returns the URL
    /// the unit's 303 sends the browser to (the client's redirect URI with the code).
    pub async fn authorize(
        &mut self,
        auth_url: &str,
        username: &str,
        password: &str,
    ) -> Result<String> {
        let sign_in = self
            .open(auth_url)
            .await
            .context("opening the authorization URL")?;
        ensure!(
            sign_in.status == 200,
            "the authorization URL led to {} at {} (Location {:?}):\n{}",
            sign_in.status,
            sign_in.url,
            sign_in.location,
            sign_in.body
        );
        let form = sign_in.post_form().context("the sign-in page")?;
        ensure!(
            form.input("username").is_some() && form.input("password").is_some(),
            "the page at {} has no username and password fields: {form:?}",
            sign_in.url
        );
        let consent = self
            .submit(&sign_in, &[("username", username), ("password", password)])
            .await
            .context("submitting the sign-in form")?;
        ensure!(
            consent.status == 200,
            "signing in answered {} at {}:\n{}",
            consent.status,
            consent.url,
            consent.body
        );
        let form = consent.post_form().context("the consent page")?;
        ensure!(
            form.buttons
                .iter()
                .any(|button| button.name == "action" && button.value == "allow"),
            "the page after signing in has no allow button: {}",
            consent.body
        );
        let action = html::resolve(&consent.url, &form.action);
        let answer = self
            .request(
                &action,
                Some(html::form_body(&form.submission(&[("action", "allow")]))),
            )
            .await
            .context("submitting the consent form")?;
        ensure!(
            answer.status == 303,
            "allowing answered {} (expected 303 See Other):\n{}",
            answer.status,
            answer.body
        );
        answer
            .location
            .context("the 303 after consent has no Location")
    }
}
