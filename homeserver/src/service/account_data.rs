//! Account data writes and their quotas.
//!
//! One item's content is capped at `[limits] account_data_max_bytes` and a user's total at
//! `[limits] account_data_quota_bytes`; both are answered 413 `M_TOO_LARGE`. Not
//! `M_RESOURCE_LIMIT_EXCEEDED`: the spec defines that for the homeserver as a whole reaching a
//! resource limit (it must carry an `admin_contact`, and clients show it as a server-wide
//! banner), while here one user's request is too large for what that user may store.

use crate::error::{Error, ErrorCode, Result};
use crate::service::Server;
use crate::store::misc;

/// Stores `content` (JSON text) as `user`'s account data `kind`, global when `room` is empty,
/// at a new stream position; 413 `M_TOO_LARGE` over the item size or the user's quota.
pub async fn put(
    server: &Server,
    user: String,
    room: String,
    kind: String,
    content: String,
) -> Result<()> {
    let limits = &server.config.limits;
    if content.len() > limits.account_data_max_bytes {
        return Err(Error::new(
            ErrorCode::TooLarge,
            format!(
                "Account data content is {} bytes; one item may hold at most {}",
                content.len(),
                limits.account_data_max_bytes
            ),
        ));
    }
    let quota = limits.account_data_quota_bytes;
    server
        .store
        .write(move |tx| {
            let others = misc::account_data_bytes_except(tx, &user, &room, &kind)?;
            if others + content.len() as u64 > quota {
                return Err(Error::new(
                    ErrorCode::TooLarge,
                    format!(
                        "Storing this would bring your account data to {} bytes; \
                         the quota is {quota}. Remove some first",
                        others + content.len() as u64
                    ),
                ));
            }
            let pos = tx.next_stream_pos();
            misc::set_account_data(tx, &user, &room, &kind, &content, pos)
        })
        .await
}
