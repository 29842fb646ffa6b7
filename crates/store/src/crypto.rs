//! Sealing destination secrets at rest with AES-256-GCM (`COURIER_SECRET_KEY`).
//!
//! A sealed secret is `v2:` + the sealing key's id + `:` + base64(nonce ‖ ciphertext ‖ tag).
//! The destination id is bound in as associated data, so a sealed secret copied onto another
//! destination won't open. The key id is a check value of the key (the first 4 bytes of an
//! AES-GCM tag computed under it over a fixed input, in hex): it names the key without
//! revealing it, so a process can tell which key a secret needs, and whether it has it,
//! before trying to open anything.
//!
//! A process holds one current key, which seals, and any number of previous keys
//! (`COURIER_PREVIOUS_SECRET_KEYS`), which only open; `courier secrets rotate` re-seals every
//! destination with the current key. Secrets sealed before key ids existed (`v1:`) open
//! with whichever key fits.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use courier_core::destination::Secret;

use crate::StoreError;

const V1: &str = "v1:";
const V2: &str = "v2:";
const NONCE_LEN: usize = 12;

/// One key and its id.
#[derive(Clone)]
struct SealingKey {
    id: String,
    cipher: Aes256Gcm,
}

impl SealingKey {
    fn from_base64(key: &str, variable: &str) -> Result<Self, String> {
        let bytes = B64
            .decode(key.trim())
            .map_err(|_| format!("{variable} must be base64 (e.g. `openssl rand -base64 32`)"))?;
        if bytes.len() != 32 {
            return Err(format!(
                "{variable} must decode to 32 bytes, not {}",
                bytes.len()
            ));
        }
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes));
        let check = cipher
            .encrypt(
                Nonce::from_slice(&[0u8; NONCE_LEN]),
                Payload {
                    msg: &[],
                    aad: b"courier secret key id",
                },
            )
            .expect("AES-GCM over an empty message cannot fail");
        let id = check[..4].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self { id, cipher })
    }

    fn open(&self, raw: &[u8], context: &str) -> Option<Secret> {
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: context.as_bytes(),
                },
            )
            .ok()?;
        String::from_utf8(plain).ok().map(Secret::new)
    }
}

/// Encrypts and decrypts destination secrets. `Debug` never shows a key.
#[derive(Clone)]
pub struct SecretCipher {
    current: SealingKey,
    previous: Vec<SealingKey>,
}

impl std::fmt::Debug for SecretCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretCipher(key {}, ***)", self.current.id)
    }
}

/// The parts of a sealed secret.
struct Sealed<'a> {
    /// `None` for `v1:` secrets, sealed before key ids existed.
    key_id: Option<&'a str>,
    raw: Vec<u8>,
}

fn parse(sealed: &str) -> Option<Sealed<'_>> {
    let (key_id, b64) = if let Some(rest) = sealed.strip_prefix(V2) {
        let (id, b64) = rest.split_once(':')?;
        (Some(id), b64)
    } else {
        (None, sealed.strip_prefix(V1)?)
    };
    let raw = B64.decode(b64).ok().filter(|r| r.len() > NONCE_LEN)?;
    Some(Sealed { key_id, raw })
}

impl SecretCipher {
    /// From `COURIER_SECRET_KEY`: base64 of exactly 32 bytes.
    pub fn from_base64(key: &str) -> Result<Self, String> {
        Ok(Self {
            current: SealingKey::from_base64(key, "COURIER_SECRET_KEY")?,
            previous: Vec::new(),
        })
    }

    /// Adds `COURIER_PREVIOUS_SECRET_KEYS`: comma-separated keys that still open secrets
    /// sealed with them, but seal nothing.
    pub fn with_previous(mut self, keys: &str) -> Result<Self, String> {
        for key in keys.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            let key = SealingKey::from_base64(key, "COURIER_PREVIOUS_SECRET_KEYS")?;
            if key.id != self.current.id && !self.previous.iter().any(|p| p.id == key.id) {
                self.previous.push(key);
            }
        }
        Ok(self)
    }

    /// The id of the key that seals.
    pub fn key_id(&self) -> &str {
        &self.current.id
    }

    /// Whether this cipher holds the key with id `key_id`.
    pub fn has_key(&self, key_id: &str) -> bool {
        self.keys().any(|k| k.id == key_id)
    }

    fn keys(&self) -> impl Iterator<Item = &SealingKey> {
        std::iter::once(&self.current).chain(&self.previous)
    }

    /// The id of the key that sealed `sealed`; `None` for a `v1:` secret or one that is not
    /// a sealed secret at all.
    pub fn sealed_with(sealed: &str) -> Option<&str> {
        parse(sealed).and_then(|s| s.key_id)
    }

    /// Whether `sealed` should be sealed again with the current key.
    pub fn needs_reseal(&self, sealed: &str) -> bool {
        Self::sealed_with(sealed) != Some(self.key_id())
    }

    /// Encrypts `secret` for the record named `context` (the destination id).
    pub fn seal(&self, secret: &Secret, context: &str) -> String {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: secret.expose().as_bytes(),
            aad: context.as_bytes(),
        };
        let ct = self
            .current
            .cipher
            .encrypt(&nonce, payload)
            .expect("AES-GCM encryption of a short secret cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        format!("{V2}{}:{}", self.current.id, B64.encode(out))
    }

    /// Decrypts what [`seal`](Self::seal) produced for the same `context`, with whichever
    /// of this cipher's keys sealed it.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Secret, StoreError> {
        let parsed = parse(sealed).ok_or(StoreError::Decrypt)?;
        match parsed.key_id {
            Some(id) => self
                .keys()
                .find(|k| k.id == id)
                .ok_or_else(|| StoreError::UnknownSecretKey(id.to_owned()))?
                .open(&parsed.raw, context)
                .ok_or(StoreError::Decrypt),
            None => self
                .keys()
                .find_map(|k| k.open(&parsed.raw, context))
                .ok_or(StoreError::Decrypt),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher(byte: u8) -> SecretCipher {
        SecretCipher::from_base64(&B64.encode([byte; 32])).unwrap()
    }

    #[test]
    fn round_trip_and_binding() {
        let c = cipher(7);
        let s = Secret::new("wJalrXUtnFEMI/K7MDENG");
        let sealed = c.seal(&s, "dst_a");
        assert!(!sealed.contains("wJalr"));
        assert_eq!(c.open(&sealed, "dst_a").unwrap(), s);
        assert!(
            c.open(&sealed, "dst_b").is_err(),
            "bound to its destination"
        );
        assert!(cipher(8).open(&sealed, "dst_a").is_err(), "other key");
        assert_ne!(sealed, c.seal(&s, "dst_a"), "fresh nonce each time");
    }

    #[test]
    fn key_must_be_32_bytes_of_base64() {
        assert!(SecretCipher::from_base64("nope!").is_err());
        assert!(SecretCipher::from_base64(&B64.encode([1u8; 16])).is_err());
        assert!(format!("{:?}", cipher(1)).contains("***"));
    }

    #[test]
    fn sealed_secrets_name_their_key_without_revealing_it() {
        let c = cipher(7);
        assert_eq!(c.key_id().len(), 8);
        assert_ne!(c.key_id(), cipher(8).key_id());
        assert_eq!(c.key_id(), cipher(7).key_id(), "the id is stable");
        let sealed = c.seal(&Secret::new("s3cr3t"), "dst_a");
        assert!(
            sealed.starts_with(&format!("v2:{}:", c.key_id())),
            "{sealed}"
        );
        assert_eq!(SecretCipher::sealed_with(&sealed), Some(c.key_id()));
        assert!(!c.needs_reseal(&sealed));
    }

    #[test]
    fn previous_keys_open_and_only_the_current_one_seals() {
        let old = cipher(1);
        let sealed_old = old.seal(&Secret::new("old"), "dst_a");
        let new = cipher(2)
            .with_previous(&format!(" {} ,", B64.encode([1u8; 32])))
            .unwrap();
        assert_eq!(new.open(&sealed_old, "dst_a").unwrap(), Secret::new("old"));
        assert!(new.needs_reseal(&sealed_old));
        assert!(new.has_key(old.key_id()));
        let resealed = new.seal(&Secret::new("old"), "dst_a");
        assert_eq!(SecretCipher::sealed_with(&resealed), Some(new.key_id()));
        // Without the previous key the secret is refused, naming the key it needs.
        match cipher(2).open(&sealed_old, "dst_a") {
            Err(StoreError::UnknownSecretKey(id)) => assert_eq!(id, old.key_id()),
            other => panic!("{other:?}"),
        }
        assert!(cipher(2).with_previous("nope").is_err());
    }

    #[test]
    fn secrets_sealed_before_key_ids_still_open() {
        // A v1 secret: nonce ‖ ciphertext ‖ tag under key 1, without a key id.
        let key = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&[1u8; 32]));
        let nonce = [9u8; NONCE_LEN];
        let ct = key
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: b"legacy",
                    aad: b"dst_a",
                },
            )
            .unwrap();
        let sealed = format!("v1:{}", B64.encode([nonce.as_slice(), &ct].concat()));
        let c = cipher(2).with_previous(&B64.encode([1u8; 32])).unwrap();
        assert_eq!(c.open(&sealed, "dst_a").unwrap(), Secret::new("legacy"));
        assert_eq!(SecretCipher::sealed_with(&sealed), None);
        assert!(c.needs_reseal(&sealed));
        assert!(cipher(2).open(&sealed, "dst_a").is_err());
    }
}
