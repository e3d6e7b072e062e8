//! The server-to-server transport of closed federation: the unit's TLS identity, the
//! allow-list of peers (from peer cards), the outbound client that only ever dials
//! allow-listed endpoints (with its connection pool), the durable per-peer sender, and the
//! fetch of other units' media; and the client listener's certificate ([`client_tls`], with
//! the pure checks in [`client_cert`]). Mechanism only: it uses `matrix` and `store`, never
//! the services; what federation does with rooms is `service::federation`.
//!
//! Deviation from the spec, by design: no DNS/SRV/`.well-known` resolution, no notary key
//! queries, no fetching of keys from the network. Peers' verify keys are pinned from their
//! cards and do not expire after `valid_until_ts`; a key stays valid until the admin rotates
//! it. See ARCHITECTURE.md.

pub mod appservice;
pub mod client;
pub mod client_cert;
pub mod client_tls;
pub mod media;
pub mod peers;
pub mod pool;
pub mod sender;
pub mod tls;
