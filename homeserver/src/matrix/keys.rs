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

    #[test]
    fn rejects_garbage() {
        assert!(SigningKey::parse("rsa 1 abc").is_err());
        assert!(SigningKey::parse("ed25519 a_1 !!!").is_err());
        assert!(SigningKey::parse("").is_err());
    }
}
