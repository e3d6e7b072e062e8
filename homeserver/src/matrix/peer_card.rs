//! Peer cards: what one unit hands another (on a USB stick) to be put on its allow-list.
//!
//! A card names the unit's server name, the `host:port` endpoints that reach it, its ed25519
//! verify keys and its TLS CA, and is signed (Matrix signed-JSON) with one of those keys. Its
//! fingerprint — a short base32 string over the keys — is what two admins read aloud to each
//! other before trusting a card. The schema is `provisioning/peer-card.schema.json`.

use std::collections::BTreeMap;

use ruma::signatures::{PublicKeyMap, sign_json, verify_json};
use ruma::{CanonicalJsonObject, CanonicalJsonValue};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::keys::SigningKey;

/// The card format version this server writes and reads.
pub const CARD_VERSION: u32 = 1;

/// How to authenticate the peer's TLS certificate: exactly one of a CA or an SPKI pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsTrust {
    /// The CA (PEM) that issued the peer's federation certificate: the unit CA for Outpost
    /// units, an organisation CA for others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// Unpadded base64 SHA-256 of the DER SubjectPublicKeyInfo of the peer's certificate, for
    /// servers with a self-signed certificate and no CA (a Synapse set up by hand, say). The
    /// pin is the whole trust: neither a name nor a validity period is checked, so the peer
    /// can renew its certificate on the same key without a new card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spki_sha256: Option<String>,
}

/// What a peer's certificate is checked against, as [`TlsTrust`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsAnchor<'a> {
    /// Chains to this CA (PEM).
    Ca(&'a str),
    /// Has a public key with this SHA-256 (of its DER SubjectPublicKeyInfo).
    Spki([u8; 32]),
}

impl TlsTrust {
    /// Trust in the CA `ca_pem`.
    pub fn ca(ca_pem: String) -> Self {
        Self {
            ca_pem: Some(ca_pem),
            spki_sha256: None,
        }
    }

    /// Trust in the certificate key whose SubjectPublicKeyInfo hashes to `spki_sha256`
    /// (unpadded or padded base64, as `openssl ... | openssl base64` prints it).
    pub fn spki(spki_sha256: &str) -> Self {
        Self {
            ca_pem: None,
            spki_sha256: Some(spki_sha256.trim().trim_end_matches('=').to_owned()),
        }
    }

    /// The anchor, or why the card's `tls` object names none or both.
    pub fn anchor(&self) -> Result<TlsAnchor<'_>, CardError> {
        match (&self.ca_pem, &self.spki_sha256) {
            (Some(ca), None) => Ok(TlsAnchor::Ca(ca)),
            (None, Some(pin)) => {
                let bytes =
                    ruma::serde::Base64::<ruma::serde::base64::Standard, Vec<u8>>::parse(pin)
                        .map_err(|e| CardError::Malformed(format!("tls.spki_sha256: {e}")))?;
                let digest = <[u8; 32]>::try_from(bytes.as_bytes()).map_err(|_| {
                    CardError::Malformed(format!(
                        "tls.spki_sha256 is {} bytes, a SHA-256 is 32",
                        bytes.as_bytes().len()
                    ))
                })?;
                Ok(TlsAnchor::Spki(digest))
            }
            (None, None) => Err(CardError::Malformed(
                "tls names neither ca_pem nor spki_sha256".to_owned(),
            )),
            (Some(_), Some(_)) => Err(CardError::Malformed(
                "tls names both ca_pem and spki_sha256; give one".to_owned(),
            )),
        }
    }
}

/// A key that signed events in the past and may still need verifying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OldKey {
    /// Unpadded base64 public key.
    pub key: String,
    /// When it stopped being used (ms since epoch).
    pub expired_ts: u64,
}

/// A peer card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerCard {
    /// Card format version.
    pub version: u32,
    /// The peer's Matrix server name (may carry a port).
    pub server_name: String,
    /// `host:port` endpoints of its federation listener, tried in order. Never resolved
    /// through DNS SRV or `.well-known`.
    pub endpoints: Vec<String>,
    /// Current verify keys: key ID → unpadded base64 public key.
    pub verify_keys: BTreeMap<String, String>,
    /// Keys used before a rotation.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub old_verify_keys: BTreeMap<String, OldKey>,
    /// TLS trust anchor.
    pub tls: TlsTrust,
    /// When the card was made (ms since epoch).
    pub issued_at: u64,
    /// Matrix signed-JSON signatures; absent on a peer added by hand (e.g. a Synapse server).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub signatures: BTreeMap<String, BTreeMap<String, String>>,
}

/// Why a card is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum CardError {
    /// Not a card.
    #[error("not a valid peer card: {0}")]
    Malformed(String),
    /// An endpoint is not `host:port` ([`check_endpoint`] says why).
    #[error("not a valid peer card: endpoint {endpoint:?} is not host:port ({reason})")]
    Endpoint {
        /// The endpoint as written on the card.
        endpoint: String,
        /// Why it is refused.
        reason: String,
    },
    /// The self-signature does not verify against the card's own keys.
    #[error("peer card signature does not verify: {0}")]
    BadSignature(String),
}

/// Checks that `endpoint` is `host:port`: a host name, an IPv4 address or a bracketed IPv6
/// address, and a port from 1 to 65535. The one check for cards the server loads and for the
/// endpoints `appliance peer add` is given; the error is the reason, to be put in a sentence.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let name = <&ruma::ServerName>::try_from(endpoint).map_err(|err| err.to_string())?;
    match name.port() {
        Some(0) => Err("port 0".to_owned()),
        Some(_) => Ok(()),
        None => Err("no port".to_owned()),
    }
}

/// Why a verify key on a card (or given to `appliance peer add`) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key ID's algorithm is not `ed25519` (the only one Matrix server keys use).
    #[error("only ed25519 keys are supported")]
    NotEd25519,
    /// The version after `ed25519:` is empty or has characters the spec does not allow.
    #[error("the key ID must be ed25519: followed by letters, digits or _")]
    BadKeyId,
    /// The key is not base64.
    #[error("not base64 ({0})")]
    NotBase64(String),
    /// The key decodes to the wrong length.
    #[error("an ed25519 public key is 32 bytes, this is {0}")]
    WrongLength(usize),
}

/// Checks one verify key, `id` → `key` (padded or unpadded base64), and returns the key as
/// unpadded base64, the form cards carry.
pub fn check_verify_key(id: &str, key: &str) -> Result<String, KeyError> {
    let version = id.strip_prefix("ed25519:").ok_or(KeyError::NotEd25519)?;
    if version.is_empty()
        || !version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(KeyError::BadKeyId);
    }
    let decoded = ruma::serde::Base64::<ruma::serde::base64::Standard, Vec<u8>>::parse(
        key.trim_end_matches('='),
    )
    .map_err(|err| KeyError::NotBase64(err.to_string()))?;
    if decoded.as_bytes().len() != 32 {
        return Err(KeyError::WrongLength(decoded.as_bytes().len()));
    }
    Ok(decoded.encode())
}

fn to_object(card: &PeerCard) -> Result<CanonicalJsonObject, CardError> {
    match ruma::canonical_json::to_canonical_value(card)
        .map_err(|e| CardError::Malformed(e.to_string()))?
    {
        CanonicalJsonValue::Object(object) => Ok(object),
        _ => Err(CardError::Malformed("card is not an object".to_owned())),
    }
}

impl PeerCard {
    /// Parses and checks a card: format, server name, endpoints, keys, and (when signed) the
    /// self-signature.
    pub fn parse(text: &str) -> Result<Self, CardError> {
        let card: PeerCard =
            serde_json::from_str(text).map_err(|e| CardError::Malformed(e.to_string()))?;
        if card.version != CARD_VERSION {
            return Err(CardError::Malformed(format!(
                "unsupported card version {}",
                card.version
            )));
        }
        ruma::OwnedServerName::try_from(card.server_name.as_str())
            .map_err(|e| CardError::Malformed(format!("server_name: {e}")))?;
        if card.endpoints.is_empty() {
            return Err(CardError::Malformed("no endpoints".to_owned()));
        }
        for endpoint in &card.endpoints {
            check_endpoint(endpoint).map_err(|reason| CardError::Endpoint {
                endpoint: endpoint.clone(),
                reason,
            })?;
        }
        card.tls.anchor()?;
        if card.verify_keys.is_empty() {
            return Err(CardError::Malformed("no verify keys".to_owned()));
        }
        let old_keys = card.old_verify_keys.iter().map(|(id, old)| (id, &old.key));
        for (id, key) in card.verify_keys.iter().chain(old_keys) {
            check_verify_key(id, key)
                .map_err(|e| CardError::Malformed(format!("verify key {id}: {e}")))?;
        }
        if !card.signatures.is_empty() {
            card.verify()?;
        }
        Ok(card)
    }

    /// Whether the card carries a self-signature (cards of Outpost units do; peers added by
    /// hand do not).
    pub fn is_signed(&self) -> bool {
        !self.signatures.is_empty()
    }

    fn key_map(&self) -> Result<PublicKeyMap, CardError> {
        let mut keys = BTreeMap::new();
        for (id, key) in &self.verify_keys {
            let key =
                ruma::serde::Base64::parse(key).map_err(|e| CardError::Malformed(e.to_string()))?;
            keys.insert(id.clone(), key);
        }
        let mut map = PublicKeyMap::new();
        map.insert(self.server_name.clone(), keys);
        Ok(map)
    }

    /// Verifies the self-signature against the card's own current keys.
    pub fn verify(&self) -> Result<(), CardError> {
        let object = to_object(self)?;
        verify_json(&self.key_map()?, &object).map_err(|e| CardError::BadSignature(e.to_string()))
    }

    /// Signs the card with our key (replacing earlier signatures).
    pub fn sign(mut self, key: &SigningKey) -> Result<Self, CardError> {
        self.signatures.clear();
        let mut object = to_object(&self)?;
        sign_json(&self.server_name, key.pair(), &mut object)
            .map_err(|e| CardError::Malformed(e.to_string()))?;
        let signed: PeerCard = serde_json::from_value(
            serde_json::to_value(&object).map_err(|e| CardError::Malformed(e.to_string()))?,
        )
        .map_err(|e| CardError::Malformed(e.to_string()))?;
        Ok(signed)
    }

    /// The read-aloud fingerprint: the first 100 bits of SHA-256 over the canonical JSON of
    /// the server name, verify keys and TLS anchor, in base32, grouped by four.
    pub fn fingerprint(&self) -> String {
        let subject = serde_json::json!({
            "server_name": self.server_name,
            "verify_keys": self.verify_keys,
            "tls": self.tls,
        });
        let canonical = match ruma::canonical_json::to_canonical_value(&subject) {
            Ok(value) => value.to_string(),
            Err(_) => subject.to_string(),
        };
        let digest = Sha256::digest(canonical.as_bytes());
        let text = base32(&digest);
        text.as_bytes()[..20]
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("-")
    }
}

/// RFC 4648 base32 without padding; letters and digits that are easy to read aloud.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(key: &SigningKey) -> PeerCard {
        PeerCard {
            version: CARD_VERSION,
            server_name: "unit-a.example:8448".to_owned(),
            endpoints: vec!["127.0.0.2:8448".to_owned()],
            verify_keys: [(key.key_id(), key.public_key_base64())]
                .into_iter()
                .collect(),
            old_verify_keys: BTreeMap::new(),
            tls: TlsTrust {
                ca_pem: Some("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".to_owned()),
                spki_sha256: None,
            },
            issued_at: 1_700_000_000_000,
            signatures: BTreeMap::new(),
        }
    }

    #[test]
    fn base32_matches_rfc4648_vectors() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
    }

    #[test]
    fn signed_card_round_trips_and_tampering_is_caught() {
        let key = SigningKey::generate();
        let signed = card(&key).sign(&key).expect("signs");
        let text = serde_json::to_string_pretty(&signed).expect("json");
        let parsed = PeerCard::parse(&text).expect("parses and verifies");
        assert_eq!(parsed.fingerprint(), signed.fingerprint());
        assert_eq!(parsed.fingerprint().len(), 24);

        let mut tampered = parsed.clone();
        tampered.endpoints = vec!["10.9.9.9:8448".to_owned()];
        assert!(matches!(tampered.verify(), Err(CardError::BadSignature(_))));

        let other = SigningKey::generate();
        let mut swapped = parsed;
        swapped.verify_keys = [(other.key_id(), other.public_key_base64())]
            .into_iter()
            .collect();
        assert!(swapped.verify().is_err());
    }

    #[test]
    fn shipped_example_card_parses_and_verifies() {
        let text = include_str!("../../../provisioning/peer-card.example.json");
        let card = PeerCard::parse(text).expect("the example in provisioning/ is a valid card");
        assert!(card.is_signed());
        assert_eq!(card.fingerprint(), "HR2Z-CUYH-AVVD-TAUS-LCZ5");
    }

    #[test]
    fn malformed_cards_are_refused() {
        let key = SigningKey::generate();
        let mut no_endpoints = card(&key);
        no_endpoints.endpoints.clear();
        let text = serde_json::to_string(&no_endpoints).expect("json");
        assert!(PeerCard::parse(&text).is_err());
        assert!(PeerCard::parse("{}").is_err());
        assert!(PeerCard::parse("not json").is_err());

        let mut bad_endpoint = card(&key);
        bad_endpoint.endpoints = vec!["127.0.0.2:0".to_owned()];
        let text = serde_json::to_string(&bad_endpoint).expect("json");
        assert!(matches!(
            PeerCard::parse(&text),
            Err(CardError::Endpoint { reason, .. }) if reason == "port 0"
        ));
        let mut short_key = card(&key);
        short_key.verify_keys = [("ed25519:a_1".to_owned(), "AAAA".to_owned())].into();
        let text = serde_json::to_string(&short_key).expect("json");
        assert!(PeerCard::parse(&text).is_err(), "3 bytes is no ed25519 key");
    }

    #[test]
    fn endpoints_must_be_host_and_port() {
        for good in ["127.0.0.1:8448", "unit-b.example:8448", "[::1]:8448"] {
            assert_eq!(check_endpoint(good), Ok(()), "{good}");
        }
        for bad in [
            "unit-b.example",
            "unit-b.example:",
            ":8448",
            "unit-b.example:port",
            "::1:8448",
            "host:0",
            "host:70000",
            "a b:1",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn verify_keys_are_ed25519_with_a_spec_key_id() {
        let key = "l8Hft5qXKn1vfHrg3p4+W8gELQVo8N13JkluMfmn2sQ";
        assert_eq!(check_verify_key("ed25519:a_1", key), Ok(key.to_owned()));
        assert_eq!(
            check_verify_key("ed25519:a_1", &format!("{key}=")),
            Ok(key.to_owned())
        );
        assert_eq!(check_verify_key("rsa:1", key), Err(KeyError::NotEd25519));
        assert_eq!(check_verify_key("ed25519:", key), Err(KeyError::BadKeyId));
        assert_eq!(
            check_verify_key("ed25519:a-b", key),
            Err(KeyError::BadKeyId)
        );
        assert_eq!(
            check_verify_key("ed25519:a_1", "AAAA"),
            Err(KeyError::WrongLength(3))
        );
        assert!(matches!(
            check_verify_key("ed25519:a_1", "!!!"),
            Err(KeyError::NotBase64(_))
        ));
    }

    #[test]
    fn tls_names_exactly_one_anchor() {
        let key = SigningKey::generate();
        let parse_with = |tls: TlsTrust| {
            let mut card = card(&key);
            card.tls = tls;
            PeerCard::parse(&serde_json::to_string(&card).expect("json"))
        };
        let pin = ruma::serde::Base64::<ruma::serde::base64::Standard, Vec<u8>>::new(vec![7; 32]);
        let pinned = parse_with(TlsTrust::spki(&format!("{}=", pin.encode()))).expect("a pin");
        assert_eq!(
            pinned.tls.anchor().expect("anchor"),
            TlsAnchor::Spki([7; 32])
        );

        let neither = TlsTrust {
            ca_pem: None,
            spki_sha256: None,
        };
        assert!(parse_with(neither).is_err());
        let both = TlsTrust {
            ca_pem: Some("pem".to_owned()),
            spki_sha256: Some(pin.encode()),
        };
        assert!(parse_with(both).is_err());
        assert!(
            parse_with(TlsTrust::spki("AAAA")).is_err(),
            "3 bytes is no SHA-256"
        );
        assert!(parse_with(TlsTrust::spki("not base64!")).is_err());
    }
}
