//! Sealing destination secrets at rest with AES-256-GCM (`COURIER_SECRET_KEY`).
//!
//! A sealed secret is `v1:` + base64(nonce ‖ ciphertext ‖ tag). The destination id is bound
//! in as associated data, so a sealed secret copied onto another destination won't open.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use courier_core::destination::Secret;

use crate::StoreError;

const VERSION: &str = "v1:";
const NONCE_LEN: usize = 12;

/// Encrypts and decrypts destination secrets. `Debug` never shows the key.
#[derive(Clone)]
pub struct SecretCipher {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretCipher(***)")
    }
}

impl SecretCipher {
    /// From `COURIER_SECRET_KEY`: base64 of exactly 32 bytes.
    pub fn from_base64(key: &str) -> Result<Self, String> {
        let bytes = B64
            .decode(key.trim())
            .map_err(|_| "COURIER_SECRET_KEY must be base64 (e.g. `openssl rand -base64 32`)")?;
        if bytes.len() != 32 {
            return Err(format!(
                "COURIER_SECRET_KEY must decode to 32 bytes, not {}",
                bytes.len()
            ));
        }
        Ok(Self {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
        })
    }

    /// Encrypts `secret` for the record named `context` (the destination id).
    pub fn seal(&self, secret: &Secret, context: &str) -> String {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: secret.expose().as_bytes(),
            aad: context.as_bytes(),
        };
        let ct = self
            .cipher
            .encrypt(&nonce, payload)
            .expect("AES-GCM encryption of a short secret cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        format!("{VERSION}{}", B64.encode(out))
    }

    /// Decrypts what [`seal`](Self::seal) produced for the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Secret, StoreError> {
        let raw = sealed
            .strip_prefix(VERSION)
            .and_then(|b| B64.decode(b).ok())
            .filter(|r| r.len() > NONCE_LEN)
            .ok_or(StoreError::Decrypt)?;
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
            .map_err(|_| StoreError::Decrypt)?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| StoreError::Decrypt)
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
}
