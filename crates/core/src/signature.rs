//! Authenticated writers: protected event-source keys and signed records.
//!
//! Kafka grants writes per topic, so any client that may write the log can write any key.
//! A [`Trust`] table names *protected* keys and, for each, the Ed25519 public keys of its
//! writers. An event on a protected key counts only when its record is signed (format
//! version 2, `docs/RECORD_FORMAT.md`) by one of those keys; otherwise the canonical rule
//! calls it unauthorized: hidden, counted, and it changes no count. The table is part of the
//! log's configuration, like its topic: every reader must apply the same one.
//!
//! The signature covers the record value as written up to the signature (its public key
//! included); it is part of no digest, so racing copies of one group compare equal whoever
//! signed them. Verification is cofactorless, as RFC 8032 and OpenSSL do it, so every
//! reader (this crate, `interop/reader.py`) reaches the same verdict.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use ed25519_dalek::{Signer as _, Verifier as _};

use crate::event::EventSourceKey;

/// Bytes of an Ed25519 public key.
pub const PUBLIC_KEY_BYTES: usize = 32;
/// Bytes of an Ed25519 secret key (the seed RFC 8032 calls the private key).
pub const SECRET_KEY_BYTES: usize = 32;
/// Bytes of an Ed25519 signature.
pub const SIGNATURE_BYTES: usize = 64;
/// Bytes a signed record value carries after its last event: public key, then signature.
pub const SEAL_BYTES: usize = PUBLIC_KEY_BYTES + SIGNATURE_BYTES;

/// Why text is not a key. Never holds the text: it may be a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Not standard base64 (with padding).
    #[error("is not base64 (standard alphabet, with padding)")]
    NotBase64,
    /// Base64 of the wrong number of bytes.
    #[error("holds {found} bytes; an Ed25519 key is {expected} bytes, base64-encoded")]
    WrongLength {
        /// The bytes a key of this kind has.
        expected: usize,
        /// The bytes decoded.
        found: usize,
    },
    /// Thirty-two bytes that are no point of the curve.
    #[error("is not an Ed25519 public key (not a point of the curve)")]
    NotAPoint,
}

fn decode_32(text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(|_| KeyError::NotBase64)?;
    let found = bytes.len();
    bytes.try_into().map_err(|_| KeyError::WrongLength { expected: 32, found })
}

/// An Ed25519 public key: who may write a protected key. Text form: base64 of its 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; PUBLIC_KEY_BYTES]);

impl PublicKey {
    /// The key from its 32 bytes, as a record carries them (not checked to be a point: a
    /// record's key is only compared with the table's, which are checked).
    pub fn from_bytes(bytes: [u8; PUBLIC_KEY_BYTES]) -> Self {
        Self(bytes)
    }

    /// Parses the base64 text form, checking the bytes are a point of the curve.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let bytes = decode_32(text)?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::NotAPoint)?;
        Ok(Self(bytes))
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_BYTES] {
        &self.0
    }

    /// The base64 text form.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// An Ed25519 signing key: what a protected key's writers hold. Its `Debug` shows the public
/// key only; the secret is zeroed when dropped and never printed.
#[derive(Clone)]
pub struct Signer {
    key: ed25519_dalek::SigningKey,
}

impl Signer {
    /// The signer of a 32-byte secret key (RFC 8032's private key: a uniformly random seed).
    pub fn from_secret(secret: &[u8; SECRET_KEY_BYTES]) -> Self {
        Self { key: ed25519_dalek::SigningKey::from_bytes(secret) }
    }

    /// Parses the text form: base64 of the 32-byte secret key, surrounding blanks ignored
    /// (as `transformer-launcher keys generate` writes it).
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let mut secret = decode_32(text)?;
        let signer = Self::from_secret(&secret);
        secret.fill(0);
        Ok(signer)
    }

    /// The text form of the secret key: for writing a new key's file, never for logs.
    pub fn secret_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.key.to_bytes())
    }

    /// The public key readers check signatures with.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.key.verifying_key().to_bytes())
    }

    /// The signature of `message` (deterministic: the same bytes, the same signature).
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_BYTES] {
        self.key.sign(message).to_bytes()
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer(public key {})", self.public_key())
    }
}

/// The signature block of a signed record, with the bytes it covers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Seal<'a> {
    /// The key the record says signed it.
    pub public_key: PublicKey,
    /// The signature.
    pub signature: [u8; SIGNATURE_BYTES],
    /// The bytes signed: the record value up to the signature (the public key included).
    pub signed: &'a [u8],
}

impl Seal<'_> {
    /// Whether the signature is `public_key`'s over `signed` (RFC 8032 verification, with a
    /// canonical `S`; a public key that is no point of the curve verifies nothing).
    pub fn verify(&self) -> bool {
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(self.public_key.as_bytes()) else { return false };
        key.verify(self.signed, &ed25519_dalek::Signature::from_bytes(&self.signature)).is_ok()
    }
}

/// Which event-source keys are protected, and by which public keys (several per key, so a
/// key can be rotated: add the new public key, move the writers, then drop the old one).
/// Cheap to clone. The empty table protects nothing: every record reads as before.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct Trust {
    protected: Arc<HashMap<String, Vec<PublicKey>>>,
}

impl Trust {
    /// A table that protects nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// The table with `key` protected by `writers` as well (added to any it had).
    pub fn protect(mut self, key: &EventSourceKey, writers: impl IntoIterator<Item = PublicKey>) -> Self {
        let entry = Arc::make_mut(&mut self.protected).entry(key.as_str().to_string()).or_default();
        for writer in writers {
            if !entry.contains(&writer) {
                entry.push(writer);
            }
        }
        self
    }

    /// Whether the table protects no key.
    pub fn is_empty(&self) -> bool {
        self.protected.is_empty()
    }

    /// The public keys that may write `key`, if it is protected.
    pub fn writers(&self, key: &str) -> Option<&[PublicKey]> {
        self.protected.get(key).map(Vec::as_slice)
    }

    /// Every protected key with its writers, sorted by key.
    pub fn protected(&self) -> Vec<(&str, &[PublicKey])> {
        let mut all: Vec<_> = self.protected.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        all.sort_by_key(|(key, _)| *key);
        all
    }

    /// Whether `signer` may write `key` (always, for a key the table does not protect).
    pub fn allows(&self, key: &str, signer: &PublicKey) -> bool {
        self.writers(key).is_none_or(|writers| writers.contains(signer))
    }

    /// The judge of one record's events: verifies its seal at most once, and only if one of
    /// its events is on a protected key.
    pub fn record<'t, 'a>(&'t self, seal: Option<&'t Seal<'a>>) -> RecordAuthority<'t, 'a> {
        RecordAuthority { trust: self, seal, verified: None }
    }
}

/// Whether a record's events may count, under one [`Trust`] table.
#[derive(Debug)]
pub struct RecordAuthority<'t, 'a> {
    trust: &'t Trust,
    seal: Option<&'t Seal<'a>>,
    /// The signature's check, once made.
    verified: Option<bool>,
}

impl RecordAuthority<'_, '_> {
    /// Whether an event on `key` in this record may count: the key is not protected, or the
    /// record is signed by one of its writers with a signature that verifies.
    pub fn authorizes(&mut self, key: &str) -> bool {
        let Some(writers) = self.trust.writers(key) else { return true };
        let Some(seal) = self.seal else { return false };
        if !writers.contains(&seal.public_key) {
            return false;
        }
        *self.verified.get_or_insert_with(|| seal.verify())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(byte: u8) -> Signer {
        Signer::from_secret(&[byte; 32])
    }

    #[test]
    fn a_signature_verifies_over_its_bytes_only() {
        let signer = signer(1);
        let message = b"record bytes".to_vec();
        let seal = Seal { public_key: signer.public_key(), signature: signer.sign(&message), signed: &message };
        assert!(seal.verify());
        let other = b"record byteS".to_vec();
        assert!(!Seal { signed: &other, ..seal }.verify());
        assert!(!Seal { public_key: self::signer(2).public_key(), ..seal }.verify());
    }

    #[test]
    fn keys_round_trip_as_base64_and_never_show_the_secret() {
        let signer = signer(7);
        let again = Signer::from_base64(&format!("  {}\n", signer.secret_base64())).unwrap();
        assert_eq!(again.public_key(), signer.public_key());
        assert_eq!(PublicKey::from_base64(&signer.public_key().to_base64()).unwrap(), signer.public_key());
        assert!(!format!("{signer:?}").contains(&signer.secret_base64()));
        assert_eq!(Signer::from_base64("not base64!").unwrap_err(), KeyError::NotBase64);
        assert_eq!(PublicKey::from_base64("AAAA").unwrap_err(), KeyError::WrongLength { expected: 32, found: 3 });
    }

    #[test]
    fn only_protected_keys_need_a_writer_s_signature() {
        let (writer, forger) = (signer(1), signer(2));
        let trust = Trust::new().protect(&EventSourceKey::new("ledger").unwrap(), [writer.public_key()]);
        let message = b"bytes".to_vec();
        let by = |s: &Signer| Seal { public_key: s.public_key(), signature: s.sign(&message), signed: &message };
        let (signed, forged) = (by(&writer), by(&forger));
        assert!(trust.record(None).authorizes("orders"));
        assert!(!trust.record(None).authorizes("ledger"));
        assert!(!trust.record(Some(&forged)).authorizes("ledger"));
        assert!(trust.record(Some(&signed)).authorizes("ledger"));
        // Claiming a writer's key without its secret does not verify.
        let claimed = Seal { public_key: writer.public_key(), ..forged };
        assert!(!trust.record(Some(&claimed)).authorizes("ledger"));
    }
}
