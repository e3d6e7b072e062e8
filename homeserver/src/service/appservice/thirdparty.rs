//! Third-party lookups (spec: Client-Server API "Third-party networks", answered by the
//! appservices that bridge them through `GET /_matrix/app/v1/thirdparty/...`).
//!
//! A protocol is known when a registration lists it in `protocols`; its metadata is what the
//! first of its appservices answers, with the instances of all of them (each given an
//! `instance_id` of `<appservice id>|<network_id>`, unique on this homeserver). Lookups go to
//! every appservice of the protocol (reverse lookups: to every appservice interested in the
//! alias or user) and their lists are joined; an appservice that fails is left out (logged),
//! as one bridge being down must not hide the others' answers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::matrix::appservice::{NamespaceKind, Registration};
use crate::service::Server;
use crate::transport::appservice::call;

use crate::util::urlencode as enc;

/// What a lookup asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// `location/{protocol}` or `location?alias=`.
    Location,
    /// `user/{protocol}` or `user?userid=`.
    User,
}

impl Lookup {
    fn segment(self) -> &'static str {
        match self {
            Self::Location => "location",
            Self::User => "user",
        }
    }
}

async fn get(server: &Server, reg: &Registration, path: &str) -> Option<Value> {
    let url = reg.url.as_deref()?;
    let timeout = Duration::from_secs(server.config.appservices.request_timeout_secs);
    match call(url, &reg.hs_token, Method::GET, path, None, timeout).await {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(value) => Some(value),
            Err(err) => {
                tracing::warn!(appservice = %reg.id, %path, error = %err, "third-party answer is not JSON");
                None
            }
        },
        Err(err) => {
            tracing::info!(appservice = %reg.id, %path, error = %err, "third-party lookup failed");
            None
        }
    }
}

fn with_protocol(server: &Server, protocol: &str) -> Vec<Arc<Registration>> {
    server
        .appservices
        .all()
        .iter()
        .filter(|r| r.protocols.iter().any(|p| p == protocol))
        .cloned()
        .collect()
}

/// An appservice's answer to `GET /thirdparty/protocol/{protocol}` (spec: `Protocol`), typed
/// as far as this server reads it: the instances, each with the `network_id` that their
/// `instance_id` is made of. The rest is the bridge's own JSON, passed on as it came.
#[derive(Deserialize)]
struct ProtocolAnswer {
    /// The networks the bridge serves.
    instances: Vec<ProtocolInstance>,
    /// The other fields.
    #[serde(flatten)]
    other: Map<String, Value>,
}

/// One instance of a protocol (`network_id` required).
#[derive(Deserialize)]
struct ProtocolInstance {
    /// The bridge's ID of the network.
    network_id: String,
    /// The other fields.
    #[serde(flatten)]
    other: Map<String, Value>,
}

/// The metadata of `protocol` merged from its appservices; `None` when no appservice
/// registers it or none answered.
/// The answer is the first appservice's protocol object (spec: `Protocol`, whose field types
/// and instance `fields` are the bridge's own JSON) with every appservice's instances.
pub async fn protocol(server: &Server, protocol: &str) -> Result<Option<Map<String, Value>>> {
    let mut merged: Option<Map<String, Value>> = None;
    let mut instances = Vec::new();
    let path = format!("/_matrix/app/v1/thirdparty/protocol/{}", enc(protocol));
    for reg in with_protocol(server, protocol) {
        let Some(answer) = get(server, &reg, &path).await else {
            continue;
        };
        let answer = match ProtocolAnswer::deserialize(answer) {
            Ok(answer) => answer,
            Err(err) => {
                tracing::warn!(appservice = %reg.id, protocol, %err, "malformed protocol answer: left out");
                continue;
            }
        };
        for mut instance in answer.instances {
            instance.other.insert(
                "instance_id".to_owned(),
                Value::String(format!("{}|{}", reg.id, instance.network_id)),
            );
            instance
                .other
                .insert("network_id".to_owned(), Value::String(instance.network_id));
            instances.push(Value::Object(instance.other));
        }
        merged.get_or_insert(answer.other);
    }
    Ok(merged.map(|mut m| {
        m.insert("instances".to_owned(), Value::Array(instances));
        m
    }))
}

/// Every registered protocol with its merged metadata (protocols no appservice answered for
/// are left out).
pub async fn protocols(server: &Server) -> Result<BTreeMap<String, Map<String, Value>>> {
    let mut names: Vec<String> = server
        .appservices
        .all()
        .iter()
        .flat_map(|r| r.protocols.clone())
        .collect();
    names.sort();
    names.dedup();
    let mut out = BTreeMap::new();
    for name in names {
        if let Some(meta) = protocol(server, &name).await? {
            out.insert(name, meta);
        }
    }
    Ok(out)
}

/// `GET /thirdparty/{location,user}/{protocol}?<fields>`: the joined answers of the
/// protocol's appservices; 404 when the protocol is unknown or nothing was found.
pub async fn lookup(
    server: &Server,
    kind: Lookup,
    protocol: &str,
    query: &str,
) -> Result<Vec<Value>> {
    let regs = with_protocol(server, protocol);
    if regs.is_empty() {
        return Err(Error::not_found(format!("unknown protocol {protocol:?}")));
    }
    let mut path = format!(
        "/_matrix/app/v1/thirdparty/{}/{}",
        kind.segment(),
        enc(protocol)
    );
    if !query.is_empty() {
        path.push('?');
        path.push_str(query);
    }
    joined(server, &regs, &path).await
}

/// `GET /thirdparty/location?alias=` and `GET /thirdparty/user?userid=`: asked of the
/// appservices interested in the alias or user.
pub async fn reverse(server: &Server, kind: Lookup, id: &str) -> Result<Vec<Value>> {
    let (ns, param) = match kind {
        Lookup::Location => (NamespaceKind::Aliases, "alias"),
        Lookup::User => (NamespaceKind::Users, "userid"),
    };
    let regs = server.appservices.interested(ns, id);
    let path = format!(
        "/_matrix/app/v1/thirdparty/{}?{param}={}",
        kind.segment(),
        enc(id)
    );
    joined(server, &regs, &path).await
}

/// The appservices' `Location` or `User` objects, passed on as they answered them (their
/// `fields` are the bridge's arbitrary JSON).
async fn joined(server: &Server, regs: &[Arc<Registration>], path: &str) -> Result<Vec<Value>> {
    let mut all = Vec::new();
    for reg in regs {
        if let Some(Value::Array(list)) = get(server, reg, path).await {
            all.extend(list);
        }
    }
    if all.is_empty() {
        return Err(Error::not_found("no third-party results"));
    }
    Ok(all)
}
