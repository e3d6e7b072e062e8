//! Every black-box test of the built binaries, one module per area, in one test binary.
//!
//! One binary instead of one per file: each file was a crate of its own that cargo compiled,
//! instantiated the shared helpers of `tests/src` for, and linked separately (74 links, about
//! four CPU-minutes of a cold build on two cores). The tests still run two at a time, as they
//! did inside each file's binary; every server a test starts takes free ports of its own.
//!
//! One area: `cargo test --release -p tests --test blackbox -- media::`; the real-software tests
//! `tests/run.sh` runs on their own are `#[ignore]`d here (see its steps for their filters).

mod account_limits;
mod accounts;
mod aggregations;
mod appliance;
mod appliance_appservice;
mod appliance_backup_crypt;
mod appliance_peers;
mod appliance_selftest;
mod appliance_tls;
mod appliance_wizard;
mod appservice_client;
mod appservice_e2ee;
mod appservice_federation;
mod appservice_irc;
mod appservice_mautrix;
mod appservice_push;
mod backup;
mod cleanup;
mod client_nio;
mod client_spec;
mod client_tls;
mod connections;
mod delayed_events;
mod directory;
mod discovery;
mod disk_full;
mod durability;
mod e2ee;
mod e2ee_federation;
mod errors;
mod federation;
mod federation_hostile;
mod federation_synapse;
mod history_visibility;
mod ignore;
mod key_requests;
mod knock;
mod knock_federation;
mod legacy;
mod lifecycle;
mod login_throttle;
mod malformed_input;
mod media;
mod media_bomb;
mod media_federation;
mod notification_fold;
mod notification_shared;
mod oauth_browser;
mod oauth_protocol;
mod oauth_security;
mod oauth_uia;
mod openid;
mod presence;
mod push;
mod ratelimit;
mod relations;
mod reports;
mod request_bodies;
mod restricted_federation;
mod room_versions;
mod rooms;
mod search;
mod sliding_sync;
mod space;
mod space_federation;
mod sync;
mod sync_edges;
mod sync_shape;
mod sync_wake;
mod tags;
mod threepid;
mod timestamp;
mod uia;
mod upgrade;
