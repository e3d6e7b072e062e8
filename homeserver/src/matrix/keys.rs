//! This unit's ed25519 signing key: generation and the on-disk text form.
//!
//! The file holds one line, `ed25519 <version> <base64 PKCS#8 DER>`, so an admin can tell what
//! it is, and rotation (issue: appliance keys rotate) can append old keys later. Reading and
//! writing the file is the caller's job.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use rand::Rng;
use ruma::signatures::Ed25519KeyPair;

/// A signing key with its key id (`ed25519:<version>`).
pub struct SigningKey {
    pair: Ed25519KeyPair,
    der: Vec<u8>,
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
        Ok(Self { pair, der })
    }

    /// Parses the key file's text form.
    pub fn parse(text: &str) -> Result<Self, KeyParseError> {
        let mut parts = text.split_whitespace();
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
        Self::from_der(der, version.to_owned())
    }

    /// The key file's text form.
    pub fn serialize(&self) -> String {
        format!(
            "ed25519 {} {}\n",
            self.pair.version(),
            STANDARD_NO_PAD.encode(&self.der)
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trips() {
        let key = SigningKey::generate();
        let text = key.serialize();
        let again = SigningKey::parse(&text).expect("parses");
        assert_eq!(again.key_id(), key.key_id());
        assert_eq!(again.public_key_base64(), key.public_key_base64());
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
