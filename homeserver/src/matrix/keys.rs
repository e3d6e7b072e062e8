//! This unit's signing identity: the ed25519 signing key (generation and the on-disk text
//! form) and the [`Signer`] (server name plus current key) that signs events and requests.
//!
//! The file's first line is the current key, `ed25519 <version> <base64 PKCS#8 DER>`, so an
//! admin can tell what it is. `appliance keys rotate` appends one line per retired key,
//! `old ed25519:<version> <base64 public key> <expired_ts>`: only the public half is kept, so
//! events signed before the rotation still verify (peers get these as `old_verify_keys`). A
//! file of one line is a key that was never rotated. Reading and writing the file is the
//! caller's job.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use rand::Rng;
use ruma::signatures::Ed25519KeyPair;

/// This server's identity for signing events and federation requests: pure key material,
/// handed to the transport (request signing) and the services (event signing) alike.
pub struct Signer {
    /// Our server name.
    pub server_name: ruma::OwnedServerName,
    /// Our current signing key.
    pub key: SigningKey,
}

/// A signing key with its key id (`ed25519:<version>`), plus the public halves of the keys it
/// replaced.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    der: Vec<u8>,
    old: Vec<OldVerifyKey>,
}

/// A retired key: it no longer signs, but what it signed still verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldVerifyKey {
    /// `ed25519:<version>`.
    pub key_id: String,
    /// Unpadded base64 public key.
    pub public_key: String,
    /// When it was retired (ms since the epoch).
    pub expired_ts: u64,
}

/// Why a key file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("signing key file is malformed: {0}")]
pub struct KeyParseError(String);

impl SigningKey {
    /// Generates a fresh key with a random version.
    pub fn generate() -> Self {
        let der = Ed25519KeyPair::generate();
        let version: String = rand::thread_rng()
            .sample_iter(rand::distributions::Alphanumeric)
            .take(6)
            .map(char::from)
            .collect();
        Self::from_der(der.to_vec(), format!("a_{version}")).expect("a fresh key parses")
    }

    fn from_der(der: Vec<u8>, version: String) -> Result<Self, KeyParseError> {
        let pair = Ed25519KeyPair::from_der(&der, version)
            .map_err(|err| KeyParseError(err.to_string()))?;
        Ok(Self {
            pair,
            der,
            old: Vec::new(),
        })
    }

    /// Parses the key file's text form: the current key's line, then any `old` lines.
    pub fn parse(text: &str) -> Result<Self, KeyParseError> {
        let mut lines = text.lines().map(str::trim).filter(|line| !line.is_empty());
        let mut parts = lines.next().unwrap_or_default().split_whitespace();
        let (Some("ed25519"), Some(version), Some(encoded), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(KeyParseError(
                "expected `ed25519 <version> <base64>`".to_owned(),
            ));
        };
        let der = STANDARD_NO_PAD
            .decode(encoded.trim_end_matches('='))
            .map_err(|err| KeyParseError(err.to_string()))?;
        let mut key = Self::from_der(der, version.to_owned())?;
        for line in lines {
            let old = parse_old_line(line)?;
            if old.key_id == key.key_id() || key.old.iter().any(|k| k.key_id == old.key_id) {
                return Err(KeyParseError(format!("key {} appears twice", old.key_id)));
            }
            key.old.push(old);
        }
        Ok(key)
    }

    /// The key file's text form.
    pub fn serialize(&self) -> String {
        let mut text = format!(
            "ed25519 {} {}\n",
            self.pair.version(),
            STANDARD_NO_PAD.encode(&self.der)
        );
        for old in &self.old {
            text.push_str(&format!(
                "old {} {} {}\n",
                old.key_id, old.public_key, old.expired_ts
            ));
        }
        text
    }

    /// A fresh key that replaces this one; this key (and every key it replaced) becomes an old
    /// verify key retired at `now_ms`. The new key's ID differs from every old one.
    pub fn rotate(&self, now_ms: u64) -> Self {
        let mut next = Self::generate();
        while next.key_id() == self.key_id() || self.old.iter().any(|k| k.key_id == next.key_id()) {
            next = Self::generate();
        }
        next.old = self.old.clone();
        next.old.push(OldVerifyKey {
            key_id: self.key_id(),
            public_key: self.public_key_base64(),
            expired_ts: now_ms,
        });
        next
    }

    /// The keys this one replaced, oldest first.
    pub fn old_verify_keys(&self) -> &[OldVerifyKey] {
        &self.old
    }

    /// The key id, `ed25519:<version>`.
    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.pair.version())
    }

    /// The unpadded base64 public key, as published in `/_matrix/key/v2/server`.
    pub fn public_key_base64(&self) -> String {
        STANDARD_NO_PAD.encode(self.pair.public_key())
    }

    /// The ruma key pair, for signing events and JSON.
    pub fn pair(&self) -> &Ed25519KeyPair {
        &self.pair
    }
}

/// Parses `old ed25519:<version> <base64 public key> <expired_ts>`.
fn parse_old_line(line: &str) -> Result<OldVerifyKey, KeyParseError> {
    let mut parts = line.split_whitespace();
    let (Some("old"), Some(key_id), Some(public_key), Some(expired_ts), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(KeyParseError(
            "expected `old ed25519:<version> <base64 public key> <expired_ts>`".to_owned(),
        ));
    };
    if key_id
        .strip_prefix("ed25519:")
        .is_none_or(|version| version.is_empty())
    {
        return Err(KeyParseError(format!(
            "old key ID {key_id:?} is not ed25519:<version>"
        )));
    }
    let public = STANDARD_NO_PAD
        .decode(public_key.trim_end_matches('='))
        .map_err(|err| KeyParseError(format!("old key {key_id}: {err}")))?;
    if public.len() != 32 {
        return Err(KeyParseError(format!(
            "old key {key_id} is {} bytes, not 32",
            public.len()
        )));
    }
    let expired_ts = expired_ts
        .parse()
        .map_err(|err| KeyParseError(format!("old key {key_id}: expired_ts: {err}")))?;
    Ok(OldVerifyKey {
        key_id: key_id.to_owned(),
        public_key: STANDARD_NO_PAD.encode(public),
        expired_ts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trips() {
        let key = SigningKey::generate();
        let text = key.serialize();
        assert_eq!(text.lines().count(), 1, "a fresh key is one line");
        let again = SigningKey::parse(&text).expect("parses");
        assert_eq!(again.key_id(), key.key_id());
        assert_eq!(again.public_key_base64(), key.public_key_base64());
        assert!(again.old_verify_keys().is_empty());
    }

    #[test]
    fn rotation_keeps_old_public_keys_in_the_file() {
        let first = SigningKey::generate();
        let second = first.rotate(1_000);
        let third = second.rotate(2_000);
        assert_ne!(third.key_id(), second.key_id());
        let old = third.old_verify_keys();
        assert_eq!(old.len(), 2);
        assert_eq!(
            (
                old[0].key_id.as_str(),
                old[0].public_key.as_str(),
                old[0].expired_ts
            ),
            (
                first.key_id().as_str(),
                first.public_key_base64().as_str(),
                1_000
            )
        );
        assert_eq!(old[1].key_id, second.key_id());
        let again = SigningKey::parse(&third.serialize()).expect("parses");
        assert_eq!(again.key_id(), third.key_id());
        assert_eq!(again.old_verify_keys(), old);
        assert!(third.serialize().contains(&format!(
            "old {} {} 1000\n",
            first.key_id(),
            first.public_key_base64()
        )));
    }

    #[test]
    fn rejects_malformed_old_keys() {
        let key = SigningKey::generate().serialize();
        let public = SigningKey::generate().public_key_base64();
        for bad in [
            format!("{key}old ed25519:x {public}\n"),
            format!("{key}old rsa:x {public} 5\n"),
            format!("{key}old ed25519:x AAAA 5\n"),
            format!("{key}old ed25519:x {public} soon\n"),
            format!("{key}old ed25519:x {public} 5\nold ed25519:x {public} 6\n"),
        ] {
            assert!(SigningKey::parse(&bad).is_err(), "accepted {bad:?}");
        }
    }

    /// The spec's test key (appendices, "Signing Key"): seed `YJDBA9…`, key `ed25519:1`.
    fn spec_key() -> SigningKey {
        // The spec's seed has non-zero trailing bits, so decode leniently.
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_encode_padding(false)
                .with_decode_allow_trailing_bits(true)
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let seed = lenient
            .decode("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1")
            .expect("b64");
        // PKCS#8 v1 wrapping of a raw ed25519 seed.
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&seed);
        let key = SigningKey::from_der(der, "1".to_owned()).expect("spec key");
        // And through our own file format, as the server would load it.
        SigningKey::parse(&key.serialize()).expect("round trip")
    }

    #[test]
    fn signs_json_exactly_as_the_spec_example() {
        let mut object: ruma::CanonicalJsonObject =
            serde_json::from_str(r#"{"one": 1, "two": "Two"}"#).expect("json");
        ruma::signatures::sign_json("domain", spec_key().pair(), &mut object).expect("signs");
        let signature = object["signatures"].clone();
        let expected: ruma::CanonicalJsonValue = serde_json::from_str(
            r#"{"domain": {"ed25519:1": "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"}}"#,
        )
        .expect("json");
        assert_eq!(signature, expected);
    }

    #[test]
    fn signs_events_exactly_as_the_spec_example() {
        let mut event: ruma::CanonicalJsonObject = serde_json::from_str(
            r#"{"room_id": "!x:domain", "sender": "@a:domain", "origin": "domain",
                "origin_server_ts": 1000000, "signatures": {}, "hashes": {}, "type": "X",
                "content": {}, "prev_events": [], "auth_events": [], "depth": 3,
                "unsigned": {"age_ts": 1000000}}"#,
        )
        .expect("json");
        let rules = ruma::RoomVersionId::V1.rules().expect("v1 rules");
        ruma::signatures::hash_and_sign_event(
            "domain",
            spec_key().pair(),
            &mut event,
            &rules.redaction,
        )
        .expect("signs");
        assert_eq!(
            serde_json::to_string(&event["hashes"]).expect("json"),
            r#"{"sha256":"5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"}"#
        );
        assert_eq!(
            serde_json::to_string(&event["signatures"]).expect("json"),
            r#"{"domain":{"ed25519:1":"KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"}}"#
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(SigningKey::parse("rsa 1 abc").is_err());
        assert!(SigningKey::parse("ed25519 a_1 !!!").is_err());
        assert!(SigningKey::parse("").is_err());
    }
}
