//! The account page (spec "Account management", MSC4191 `account_management_uri`): the
//! signed-in user's display name, devices with a sign-out form each, password change,
//! deactivation, and signing the browser out. Signed out, it shows the sign-in form first and comes back.
//!
//! It is also where the `m.oauth` UIA stage is approved (spec v1.17 "OAuth authentication",
//! MSC4312): a device signed in through OAuth that replaces its user's cross-signing keys is
//! sent to `?action=org.matrix.cross_signing_reset&session=<UIA session>`; the page says what
//! the reset means and which device asked, and its form approves that one UIA session, for
//! that user, for `[auth] approval_secs` (`service::uia` keeps the approval).
//!
//! Every change asks for the session's CSRF token; password change and deactivation ask for
//! the current password again (checked with `/login`'s back-off).

use std::time::Duration;

use ruma::{DeviceId, UserId};
use serde::Deserialize;

use super::super::profile::{self, Field};
use super::super::uia::ApprovalPage;
use super::super::{Server, accounts};
use super::html::{self, DeviceLine};
use super::web::{
    PendingRequest, REQUEST_TTL_MS, RequestKind, WebAnswer, expired_page, page, redirect,
    sign_in_page, with_session,
};
use crate::error::{Error, ErrorCode, Result};
use crate::matrix::oauth::Scope;
use crate::store::oauth as store;
use crate::util::now_ms;

/// Where the account page lives.
pub const ACCOUNT_PATH: &str = "/_outpost/account";

/// The action of the `m.oauth` stage's URL (MSC4312): approve a cross-signing reset.
pub const CROSS_SIGNING_RESET: &str = "org.matrix.cross_signing_reset";

/// The actions the page serves (spec names, and MSC4191's earlier `session` names that
/// clients of the 1.14 generation send).
pub const ACTIONS: [&str; 9] = [
    "org.matrix.profile",
    "org.matrix.devices_list",
    "org.matrix.device_view",
    "org.matrix.device_delete",
    "org.matrix.account_deactivate",
    "org.matrix.sessions_list",
    "org.matrix.session_view",
    "org.matrix.session_end",
    CROSS_SIGNING_RESET,
];

/// The account page's query (spec "Account management URL parameters").
#[derive(Debug, Default, Deserialize)]
pub struct AccountQuery {
    /// One of [`ACTIONS`] (others show the whole page).
    pub action: Option<String>,
    /// The device an action is about.
    pub device_id: Option<String>,
    /// [`CROSS_SIGNING_RESET`]: the UIA session to approve.
    pub session: Option<String>,
}

/// Where the user approves a UIA operation of this device out of band (the `m.oauth` stage),
/// when the device was signed in through OAuth; `None` for a device of the legacy `/login`
/// (it keeps `m.login.password`) or a unit without a public base URL (no OAuth at all).
pub async fn approval_page(
    server: &Server,
    user: &UserId,
    device: &DeviceId,
) -> Result<Option<ApprovalPage>> {
    let Ok(issuer) = super::issuer(server) else {
        return Ok(None);
    };
    let (u, d) = (user.to_string(), device.to_string());
    let via_oauth = server
        .store
        .read(move |conn| store::session(conn, &u, &d))
        .await?
        .is_some();
    Ok(via_oauth.then(|| ApprovalPage {
        url: format!(
            "{}{ACCOUNT_PATH}?action={CROSS_SIGNING_RESET}",
            issuer.trim_end_matches('/')
        ),
        device_id: device.to_string(),
    }))
}

/// The page for a reset link that names no live UIA session of the signed-in user (unknown,
/// expired, finished, or another user's: the page does not tell which).
fn no_reset_waiting() -> WebAnswer {
    page(
        400,
        html::message(
            "No reset is waiting",
            "This link names no reset request of your account, or it has expired. Start the \
             reset again in your application.",
        ),
    )
}

fn user_of(user: &str) -> Result<ruma::OwnedUserId> {
    ruma::OwnedUserId::try_from(user).map_err(|err| Error::internal(err.to_string()))
}

/// # `GET /_outpost/account`
pub async fn show(
    server: &Server,
    cookie: Option<String>,
    query: AccountQuery,
) -> Result<WebAnswer> {
    let (session_id, session, new) = server.oauth.web.session(cookie.as_deref())?;
    let Some(user) = session.user_id.clone() else {
        let mut return_to = ACCOUNT_PATH.to_owned();
        let params: Vec<(&str, &str)> = [
            ("action", &query.action),
            ("device_id", &query.device_id),
            ("session", &query.session),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect();
        if !params.is_empty() {
            return_to.push('?');
            return_to.push_str(&serde_urlencoded::to_string(&params).unwrap_or_default());
        }
        let request = server.oauth.web.add_request(PendingRequest {
            session: session_id.clone(),
            client_id: String::new(),
            scope: Scope {
                device_id: String::new(),
                unstable: false,
            },
            kind: RequestKind::Account { return_to },
            expires_ms: now_ms() + REQUEST_TTL_MS,
        })?;
        let answer = sign_in_page(server, &session, &request, None, "", None, 200);
        return Ok(with_session(answer, new.then_some(session_id)));
    };
    if query.action.as_deref() == Some(CROSS_SIGNING_RESET) {
        let pending = query
            .session
            .as_deref()
            .and_then(|id| server.uia.pending_approval(id, &user).map(|p| (id, p)));
        let answer = match pending {
            Some((id, pending)) => page(
                200,
                html::cross_signing_reset(&session.csrf, &user, &pending.device_id, id),
            ),
            None => no_reset_waiting(),
        };
        return Ok(with_session(answer, new.then_some(session_id)));
    }
    let user_id = user_of(&user)?;
    let devices = accounts::devices(server, &user_id).await?;
    let (displayname, _) = profile::load(server, &user_id).await?;
    let highlighted = query.device_id.as_deref();
    let lines: Vec<DeviceLine<'_>> = devices
        .iter()
        .map(|d| DeviceLine {
            device_id: &d.device_id,
            name: d.display_name.as_deref(),
            highlighted: highlighted == Some(d.device_id.as_str()),
        })
        .collect();
    let notice = match (query.action.as_deref(), highlighted) {
        (Some("org.matrix.device_delete" | "org.matrix.session_end"), Some(device)) => {
            Some(format!("To sign out {device}, use its button below."))
        }
        (Some("org.matrix.account_deactivate"), _) => {
            Some("To deactivate the account, use the form at the bottom.".to_owned())
        }
        _ => None,
    };
    Ok(with_session(
        page(
            200,
            html::account(
                &session.csrf,
                &user,
                displayname.as_deref().unwrap_or_default(),
                &lines,
                notice.as_deref(),
            ),
        ),
        new.then_some(session_id),
    ))
}

/// A form of the account page: the CSRF token and the fields of each action.
#[derive(Debug, Default, Deserialize)]
pub struct AccountForm {
    /// CSRF token.
    #[serde(default)]
    pub csrf: String,
    /// `device_delete`: the device.
    #[serde(default)]
    pub device_id: String,
    /// `password`: the current password.
    #[serde(default)]
    pub current_password: String,
    /// `password`: the new one; `deactivate`: the current one.
    #[serde(default)]
    pub password: String,
    /// `password`: the new one again.
    #[serde(default)]
    pub password_confirm: String,
    /// `profile`: the display name (empty clears it).
    #[serde(default)]
    pub displayname: String,
    /// `cross_signing_reset`: the UIA session approved.
    #[serde(default)]
    pub session: String,
}

/// The account page's actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountAction {
    /// Set the display name.
    Profile,
    /// Sign one device out.
    DeviceDelete,
    /// Change the password.
    Password,
    /// Deactivate the account.
    Deactivate,
    /// Sign this browser out.
    Logout,
    /// Approve a cross-signing reset (the `m.oauth` stage of one UIA session).
    CrossSigningReset,
}

/// Checks the password again for a sensitive change; the answer page when it is wrong.
async fn recheck(
    server: &Server,
    user: &ruma::UserId,
    password: String,
) -> Result<Option<WebAnswer>> {
    match accounts::check_password(server, user, password).await {
        Ok(()) => Ok(None),
        Err(Error::RateLimited { retry_after_ms }) => Ok(Some(page(
            429,
            html::message(
                "Too many attempts",
                &format!(
                    "Wait {} seconds, then try again.",
                    retry_after_ms.div_ceil(1000).max(1)
                ),
            ),
        ))),
        Err(Error::Matrix {
            code: ErrorCode::Forbidden,
            ..
        }) => Ok(Some(page(
            401,
            html::message(
                "Wrong password",
                "Nothing was changed. Go back and try again.",
            ),
        ))),
        Err(err) => Err(err),
    }
}

/// # `POST /_outpost/account/{action}`
pub async fn act(
    server: &Server,
    cookie: Option<String>,
    action: AccountAction,
    form: AccountForm,
) -> Result<WebAnswer> {
    let Some((session_id, user)) = server
        .oauth
        .web
        .signed_in_session(cookie.as_deref(), &form.csrf)?
    else {
        return Ok(expired_page());
    };
    let user_id = user_of(&user)?;
    match action {
        AccountAction::CrossSigningReset => {
            let valid_for = Duration::from_secs(server.config.auth.approval_secs);
            if !server.uia.approve(&form.session, &user, valid_for) {
                return Ok(no_reset_waiting());
            }
            tracing::info!(%user, "cross-signing reset approved on the account page");
            Ok(page(
                200,
                html::message(
                    "Reset approved",
                    &format!(
                        "Go back to your application: it can now finish the reset, within {} \
                         minutes. Until it does, nothing has changed.",
                        server.config.auth.approval_secs.div_ceil(60).max(1)
                    ),
                ),
            ))
        }
        AccountAction::Logout => {
            server.oauth.web.sign_out(&session_id)?;
            Ok(page(
                200,
                html::message("Signed out", "This browser is signed out."),
            ))
        }
        AccountAction::Profile => {
            let name = form.displayname.trim();
            let value = (!name.is_empty()).then(|| name.to_owned());
            profile::set_field(server, &user_id, Field::DisplayName, value).await?;
            Ok(redirect(ACCOUNT_PATH.to_owned()))
        }
        AccountAction::DeviceDelete => {
            accounts::delete_devices(server, &user_id, vec![form.device_id.as_str().into()])
                .await?;
            tracing::info!(%user, device = %form.device_id, "device signed out on the account page");
            Ok(redirect(ACCOUNT_PATH.to_owned()))
        }
        AccountAction::Password => {
            if form.password.is_empty() || form.password != form.password_confirm {
                return Ok(page(
                    400,
                    html::message(
                        "Passwords differ",
                        "The new password and its repetition must match. Nothing was changed.",
                    ),
                ));
            }
            if let Some(refused) = recheck(server, &user_id, form.current_password).await? {
                return Ok(refused);
            }
            accounts::change_password(server, &user_id, None, form.password, false).await?;
            Ok(page(
                200,
                html::message("Password changed", "Use the new password from now on."),
            ))
        }
        AccountAction::Deactivate => {
            if let Some(refused) = recheck(server, &user_id, form.password).await? {
                return Ok(refused);
            }
            accounts::deactivate(server, user_id).await?;
            server.oauth.web.sign_out(&session_id)?;
            Ok(page(
                200,
                html::message(
                    "Account deactivated",
                    "Every device of the account is signed out.",
                ),
            ))
        }
    }
}
