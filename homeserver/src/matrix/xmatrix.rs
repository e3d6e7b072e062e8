//! X-Matrix request authentication (spec: server-server "Request Authentication"): signing our
//! outbound requests and checking inbound ones, with no I/O — the caller supplies the keys.

use std::collections::BTreeMap;

use ruma::signatures::{PublicKeyMap, sign_json, verify_json};
use ruma::{CanonicalJsonObject, CanonicalJsonValue};
use serde_json::{Value, json};

use super::keys::SigningKey;

/// The parameters of an `Authorization: X-Matrix …` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XMatrix {
    /// The sending server.
    pub origin: String,
    /// The receiving server (required of senders since v1.3).
    pub destination: Option<String>,
    /// The key ID used.
    pub key: String,
    /// The signature.
    pub sig: String,
}

/// Why a request's authentication failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XMatrixError {
    /// The header is missing or malformed.
    #[error("malformed X-Matrix authorization: {0}")]
    Malformed(String),
    /// The signature does not verify.
    #[error("X-Matrix signature does not verify: {0}")]
    BadSignature(String),
}

fn request_object(
    method: &str,
    uri: &str,
    origin: &str,
    destination: &str,
    content: Option<&Value>,
) -> Result<CanonicalJsonObject, XMatrixError> {
    let mut request =
        json!({"method": method, "uri": uri, "origin": origin, "destination": destination});
    if let Some(content) = content {
        request["content"] = content.clone();
    }
    match ruma::canonical_json::to_canonical_value(&request)
        .map_err(|e| XMatrixError::Malformed(e.to_string()))?
    {
        CanonicalJsonValue::Object(object) => Ok(object),
        _ => Err(XMatrixError::Malformed(
            "request is not an object".to_owned(),
        )),
    }
}

/// The `Authorization` header value for an outbound request.
pub fn sign_request(
    key: &SigningKey,
    origin: &str,
    destination: &str,
    method: &str,
    uri: &str,
    content: Option<&Value>,
) -> Result<String, XMatrixError> {
    let mut object = request_object(method, uri, origin, destination, content)?;
    sign_json(origin, key.pair(), &mut object)
        .map_err(|e| XMatrixError::Malformed(e.to_string()))?;
    let signature = object
        .get("signatures")
        .and_then(|s| match s {
            CanonicalJsonValue::Object(by_server) => by_server.get(origin),
            _ => None,
        })
        .and_then(|s| match s {
            CanonicalJsonValue::Object(by_key) => by_key.get(&key.key_id()),
            _ => None,
        })
        .and_then(|s| match s {
            CanonicalJsonValue::String(sig) => Some(sig.clone()),
            _ => None,
        })
        .ok_or_else(|| XMatrixError::Malformed("signing produced no signature".to_owned()))?;
    Ok(format!(
        "X-Matrix origin=\"{origin}\",destination=\"{destination}\",key=\"{}\",sig=\"{signature}\"",
        key.key_id()
    ))
}

/// Parses an `Authorization` header value (RFC 9110 auth-param list, names case-insensitive,
/// quoted or token values, backslash escapes).
pub fn parse_header(value: &str) -> Result<XMatrix, XMatrixError> {
    let malformed = |why: &str| XMatrixError::Malformed(why.to_owned());
    let rest = value
        .strip_prefix("X-Matrix")
        .filter(|r| r.starts_with(' '))
        .ok_or_else(|| malformed("scheme is not X-Matrix"))?;
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    let mut chars = rest.trim_start().chars().peekable();
    loop {
        while chars
            .peek()
            .is_some_and(|c| *c == ' ' || *c == '\t' || *c == ',')
        {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if chars.next() != Some('=') {
            return Err(malformed("parameter without value"));
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => val.extend(chars.next()),
                    Some('"') => break,
                    Some(c) => val.push(c),
                    None => return Err(malformed("unterminated quoted value")),
                }
            }
        } else {
            val.extend(std::iter::from_fn(|| chars.next_if(|c| *c != ',')));
            val = val.trim_end().to_owned();
        }
        params.insert(name.trim().to_ascii_lowercase(), val);
    }
    let mut take = |name: &str| params.remove(name);
    Ok(XMatrix {
        origin: take("origin").ok_or_else(|| malformed("missing origin"))?,
        destination: take("destination"),
        key: take("key").ok_or_else(|| malformed("missing key"))?,
        sig: take("sig").ok_or_else(|| malformed("missing sig"))?,
    })
}

/// Verifies an inbound request signed by `auth.origin` with `public_key` (the pinned key named
/// by `auth.key`), for our server name `destination`.
pub fn verify_request(
    auth: &XMatrix,
    public_key: &str,
    destination: &str,
    method: &str,
    uri: &str,
    content: Option<&Value>,
) -> Result<(), XMatrixError> {
    let mut object = request_object(method, uri, &auth.origin, destination, content)?;
    let signatures = json!({ auth.origin.clone(): { auth.key.clone(): auth.sig } });
    object.insert(
        "signatures".to_owned(),
        ruma::canonical_json::to_canonical_value(&signatures)
            .map_err(|e| XMatrixError::Malformed(e.to_string()))?,
    );
    let key = ruma::serde::Base64::parse(public_key)
        .map_err(|e| XMatrixError::Malformed(e.to_string()))?;
    let mut keys = PublicKeyMap::new();
    keys.insert(
        auth.origin.clone(),
        [(auth.key.clone(), key)].into_iter().collect(),
    );
    verify_json(&keys, &object).map_err(|e| XMatrixError::BadSignature(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_requests_verify_and_tampering_fails() {
        let key = SigningKey::generate();
        let body = json!({"pdus": [], "edus": []});
        let header = sign_request(
            &key,
            "a.example",
            "b.example",
            "PUT",
            "/_matrix/federation/v1/send/1",
            Some(&body),
        )
        .expect("signs");
        let auth = parse_header(&header).expect("parses");
        assert_eq!(auth.origin, "a.example");
        assert_eq!(auth.destination.as_deref(), Some("b.example"));
        let public = key.public_key_base64();
        verify_request(
            &auth,
            &public,
            "b.example",
            "PUT",
            "/_matrix/federation/v1/send/1",
            Some(&body),
        )
        .expect("verifies");
        // Replayed to another destination, another path, or with another body: refused.
        assert!(
            verify_request(
                &auth,
                &public,
                "c.example",
                "PUT",
                "/_matrix/federation/v1/send/1",
                Some(&body)
            )
            .is_err()
        );
        assert!(
            verify_request(
                &auth,
                &public,
                "b.example",
                "PUT",
                "/_matrix/federation/v1/send/2",
                Some(&body)
            )
            .is_err()
        );
        assert!(
            verify_request(
                &auth,
                &public,
                "b.example",
                "PUT",
                "/_matrix/federation/v1/send/1",
                Some(&json!({}))
            )
            .is_err()
        );
        // Another key: refused.
        let other = SigningKey::generate().public_key_base64();
        assert!(
            verify_request(
                &auth,
                &other,
                "b.example",
                "PUT",
                "/_matrix/federation/v1/send/1",
                Some(&body)
            )
            .is_err()
        );
    }

    #[test]
    fn parses_header_variants() {
        let parsed = parse_header(
            r#"X-Matrix origin=a.example:8448,Key="ed25519:1", sig="x\"y",destination="b""#,
        )
        .expect("parses");
        assert_eq!(parsed.origin, "a.example:8448");
        assert_eq!(parsed.key, "ed25519:1");
        assert_eq!(parsed.sig, "x\"y");
        assert!(parse_header("Bearer abc").is_err());
        assert!(parse_header("X-Matrix origin=\"a\"").is_err());
    }
}
