//! JSON Web Encryption (RFC 7516, flattened JSON serialization) for the one
//! job the key broker has: wrapping a resource for the TEE's ephemeral key.
//!
//! Supported: `alg` ECDH-ES+A256KW on P-256 (RFC 7518 §4.6, the default of
//! Trustee's clients) or RSA-OAEP-256 (§4.3, for TEEs with RSA keys), and
//! `enc` A256GCM. The TEE generates a
//! [`TeeKeyPair`] per boot, sends its public JWK in the attestation
//! request (bound into the evidence), and only it can open the response.

use crate::kbs::Jwk;
use aes_kw::{KeyInit, KwAes256};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use p256::elliptic_curve::Generate;
use p256::elliptic_curve::sec1::{FromSec1Point, ToSec1Point};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

const ALG: &str = "ECDH-ES+A256KW";
const ALG_RSA: &str = "RSA-OAEP-256";
const ENC: &str = "A256GCM";

/// Why a JWE could not be made or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JweError {
    #[error("JWE: unsupported {field} {value:?} (only ECDH-ES+A256KW with A256GCM)")]
    Unsupported { field: &'static str, value: String },
    #[error("JWE: field `{0}` is missing or not base64url")]
    Encoding(&'static str),
    #[error("JWE: the recipient key is not a valid P-256 public key")]
    BadKey,
    #[error("JWE: the content key does not unwrap (not for this key)")]
    Unwrap,
    #[error("JWE: authentication failed (tampered ciphertext, tag or header)")]
    Authentication,
    #[error("JWE: random number generator failed")]
    Random,
}

/// A flattened JWE as the KBS returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwe {
    pub protected: String,
    pub encrypted_key: String,
    pub iv: String,
    pub ciphertext: String,
    pub tag: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Protected {
    alg: String,
    enc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    epk: Option<Jwk>,
}

/// RFC 7518 §4.6.2: Concat KDF (single round, SHA-256) with empty
/// PartyUInfo/PartyVInfo unless given.
fn concat_kdf(z: &[u8], alg: &str, apu: &[u8], apv: &[u8], key_bits: u32) -> Zeroizing<Vec<u8>> {
    // Holds the shared secret: zeroized when dropped.
    let mut input = Zeroizing::new(Vec::with_capacity(
        64usize
            .saturating_add(alg.len())
            .saturating_add(apu.len())
            .saturating_add(apv.len()),
    ));
    input.extend_from_slice(&1u32.to_be_bytes());
    input.extend_from_slice(z);
    for part in [alg.as_bytes(), apu, apv] {
        input.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        input.extend_from_slice(part);
    }
    input.extend_from_slice(&key_bits.to_be_bytes());
    let d = ring::digest::digest(&ring::digest::SHA256, &input);
    Zeroizing::new(
        d.as_ref()
            .get(..(key_bits / 8) as usize)
            .unwrap_or_default()
            .to_vec(),
    )
}

fn public_from_jwk(jwk: &Jwk) -> Result<p256::PublicKey, JweError> {
    if jwk.kty != "EC" || jwk.crv.as_deref() != Some("P-256") {
        return Err(JweError::BadKey);
    }
    let x = jwk
        .x
        .as_deref()
        .and_then(|x| B64.decode(x).ok())
        .ok_or(JweError::BadKey)?;
    let y = jwk
        .y
        .as_deref()
        .and_then(|y| B64.decode(y).ok())
        .ok_or(JweError::BadKey)?;
    if x.len() != 32 || y.len() != 32 {
        return Err(JweError::BadKey);
    }
    let mut sec1 = vec![4u8];
    sec1.extend_from_slice(&x);
    sec1.extend_from_slice(&y);
    let point = p256::Sec1Point::from_bytes(&sec1).map_err(|_| JweError::BadKey)?;
    Option::from(p256::PublicKey::from_sec1_point(&point)).ok_or(JweError::BadKey)
}

fn jwk_from_public(pk: &p256::PublicKey) -> Jwk {
    let point = pk.to_sec1_point(false);
    let b = point.as_bytes();
    Jwk::ec_p256(
        B64.encode(b.get(1..33).unwrap_or_default()),
        B64.encode(b.get(33..65).unwrap_or_default()),
    )
}

fn rng() -> rand_core::UnwrapErr<getrandom::SysRng> {
    rand_core::UnwrapErr(getrandom::SysRng)
}

/// Encrypts `plaintext` for the holder of `recipient`'s private key: an EC
/// P-256 key gets ECDH-ES+A256KW, an RSA key (≥ 2048 bits) RSA-OAEP-256.
pub fn encrypt(recipient: &Jwk, plaintext: &[u8]) -> Result<Jwe, JweError> {
    let mut cek = Zeroizing::new([0u8; 32]);
    getrandom::fill(cek.as_mut()).map_err(|_| JweError::Random)?;
    let (protected, wrapped) = match recipient.kty.as_str() {
        "EC" => {
            let their = public_from_jwk(recipient)?;
            let eph = p256::ecdh::EphemeralSecret::generate_from_rng(&mut rng());
            let z = eph.diffie_hellman(&their);
            let kek = concat_kdf(z.raw_secret_bytes().as_ref(), ALG, &[], &[], 256);
            let mut wrapped = [0u8; 40];
            KwAes256::new_from_slice(&kek)
                .map_err(|_| JweError::Random)?
                .wrap_key(cek.as_ref(), &mut wrapped)
                .map_err(|_| JweError::Random)?;
            (
                Protected {
                    alg: ALG.into(),
                    enc: ENC.into(),
                    epk: Some(jwk_from_public(&eph.public_key())),
                },
                wrapped.to_vec(),
            )
        }
        "RSA" => {
            let pk = rsa_from_jwk(recipient)?;
            let wrapped = pk
                .encrypt(&mut rng(), rsa::Oaep::<sha2::Sha256>::new(), cek.as_ref())
                .map_err(|_| JweError::BadKey)?;
            (
                Protected {
                    alg: ALG_RSA.into(),
                    enc: ENC.into(),
                    epk: None,
                },
                wrapped,
            )
        }
        other => {
            return Err(JweError::Unsupported {
                field: "recipient kty",
                value: other.into(),
            });
        }
    };
    // Canonical JSON (keys sorted at every level): Trustee's clients parse
    // the header and serialize it again, with sorted keys, to make the
    // AES-GCM associated data; only these bytes survive that round trip.
    let header = serde_json::to_value(&protected).map_err(|_| JweError::Random)?;
    let header = crate::jcs::canonicalize(&header).map_err(|_| JweError::Random)?;
    let protected_b64 = B64.encode(header.as_bytes());
    let mut iv = [0u8; 12];
    getrandom::fill(&mut iv).map_err(|_| JweError::Random)?;
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, cek.as_ref()).map_err(|_| JweError::Random)?,
    );
    let mut buf = plaintext.to_vec();
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(iv),
            Aad::from(protected_b64.as_bytes()),
            &mut buf,
        )
        .map_err(|_| JweError::Random)?;
    Ok(Jwe {
        protected: protected_b64,
        encrypted_key: B64.encode(wrapped),
        iv: B64.encode(iv),
        ciphertext: B64.encode(&buf),
        tag: B64.encode(tag.as_ref()),
    })
}

/// An RSA public key from a JWK (`n`, `e` base64url), at least 2048 bits.
fn rsa_from_jwk(jwk: &Jwk) -> Result<rsa::PublicKey, JweError> {
    let n = jwk
        .n
        .as_deref()
        .and_then(|n| B64.decode(n).ok())
        .ok_or(JweError::BadKey)?;
    let e = jwk
        .e
        .as_deref()
        .and_then(|e| B64.decode(e).ok())
        .ok_or(JweError::BadKey)?;
    if n.len() < 256 || n.len() > 1024 || e.is_empty() || e.len() > 8 {
        return Err(JweError::BadKey);
    }
    let n = rsa::BoxedUint::from_be_slice_vartime(&n);
    let e = rsa::BoxedUint::from_be_slice_vartime(&e);
    rsa::PublicKey::new(n, e).map_err(|_| JweError::BadKey)
}

/// The TEE's ephemeral key pair for one key-release session.
pub struct TeeKeyPair {
    secret: p256::SecretKey,
}

impl std::fmt::Debug for TeeKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeeKeyPair")
            .field("public", &self.public_jwk())
            .finish_non_exhaustive()
    }
}

impl TeeKeyPair {
    pub fn generate() -> Self {
        TeeKeyPair {
            secret: p256::SecretKey::generate_from_rng(&mut rng()),
        }
    }

    /// The public key as the `tee-pubkey` JWK.
    pub fn public_jwk(&self) -> Jwk {
        jwk_from_public(&self.secret.public_key())
    }

    /// Opens a JWE addressed to this key. Plaintext is zeroized on drop.
    pub fn decrypt(&self, jwe: &Jwe) -> Result<Zeroizing<Vec<u8>>, JweError> {
        let protected_json = B64
            .decode(&jwe.protected)
            .map_err(|_| JweError::Encoding("protected"))?;
        let p: Protected =
            serde_json::from_slice(&protected_json).map_err(|_| JweError::Encoding("protected"))?;
        if p.alg != ALG {
            return Err(JweError::Unsupported {
                field: "alg",
                value: p.alg,
            });
        }
        if p.enc != ENC {
            return Err(JweError::Unsupported {
                field: "enc",
                value: p.enc,
            });
        }
        let epk = public_from_jwk(p.epk.as_ref().ok_or(JweError::Encoding("protected.epk"))?)?;
        let z = p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), epk.as_affine());
        let kek = concat_kdf(z.raw_secret_bytes().as_ref(), ALG, &[], &[], 256);
        let wrapped = B64
            .decode(&jwe.encrypted_key)
            .map_err(|_| JweError::Encoding("encrypted_key"))?;
        let mut cek = Zeroizing::new([0u8; 32]);
        KwAes256::new_from_slice(&kek)
            .map_err(|_| JweError::Unwrap)?
            .unwrap_key(&wrapped, cek.as_mut())
            .map_err(|_| JweError::Unwrap)?;
        let iv: [u8; 12] = B64
            .decode(&jwe.iv)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(JweError::Encoding("iv"))?;
        let mut buf = Zeroizing::new(
            B64.decode(&jwe.ciphertext)
                .map_err(|_| JweError::Encoding("ciphertext"))?,
        );
        buf.extend(
            B64.decode(&jwe.tag)
                .map_err(|_| JweError::Encoding("tag"))?,
        );
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, cek.as_ref()).map_err(|_| JweError::Unwrap)?,
        );
        let n = key
            .open_in_place(
                Nonce::assume_unique_for_key(iv),
                Aad::from(jwe.protected.as_bytes()),
                buf.as_mut_slice(),
            )
            .map_err(|_| JweError::Authentication)?
            .len();
        buf.truncate(n);
        Ok(buf)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_protected_header_is_canonical_json_as_trustee_clients_rebuild_it() {
        let tee = TeeKeyPair::generate();
        let jwe = encrypt(&tee.public_jwk(), b"key").unwrap();
        let text = String::from_utf8(B64.decode(&jwe.protected).unwrap()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(text, crate::jcs::canonicalize(&value).unwrap());
        assert!(
            text.starts_with(r#"{"alg":"ECDH-ES+A256KW","enc":"A256GCM","epk":{"#),
            "{text}"
        );
        assert_eq!(tee.decrypt(&jwe).unwrap().as_slice(), b"key");
    }

    #[test]
    fn concat_kdf_matches_rfc7518_appendix_c() {
        // RFC 7518 Appendix C: ECDH-ES, enc A128GCM, apu "Alice", apv "Bob".
        let z = [
            158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156, 251, 49,
            110, 163, 218, 128, 106, 72, 246, 218, 167, 121, 140, 254, 144, 196,
        ];
        let k = concat_kdf(&z, "A128GCM", b"Alice", b"Bob", 128);
        assert_eq!(B64.encode(k.as_slice()), "VqqN6vgjbSBcIijNcacQGg");
    }

    #[test]
    fn round_trip_and_tamper() {
        let tee = TeeKeyPair::generate();
        let jwe = encrypt(&tee.public_jwk(), b"the data key").unwrap();
        assert_eq!(tee.decrypt(&jwe).unwrap().as_slice(), b"the data key");
        // Another key cannot open it.
        assert_eq!(
            TeeKeyPair::generate().decrypt(&jwe).unwrap_err(),
            JweError::Unwrap
        );
        // Each part is authenticated.
        let mut t = jwe.clone();
        let mut ct = B64.decode(&t.ciphertext).unwrap();
        ct[0] ^= 1;
        t.ciphertext = B64.encode(ct);
        assert_eq!(tee.decrypt(&t).unwrap_err(), JweError::Authentication);
        let mut t = jwe.clone();
        let mut tag = B64.decode(&t.tag).unwrap();
        tag[3] ^= 1;
        t.tag = B64.encode(tag);
        assert_eq!(tee.decrypt(&t).unwrap_err(), JweError::Authentication);
        let mut t = jwe.clone();
        t.encrypted_key = B64.encode([0u8; 40]);
        assert_eq!(tee.decrypt(&t).unwrap_err(), JweError::Unwrap);
        // A protected header re-encoded (even equivalently) changes the AAD.
        let mut t = jwe.clone();
        let hdr: serde_json::Value =
            serde_json::from_slice(&B64.decode(&t.protected).unwrap()).unwrap();
        t.protected = B64.encode(serde_json::to_vec_pretty(&hdr).unwrap());
        assert_eq!(tee.decrypt(&t).unwrap_err(), JweError::Authentication);
        // Unsupported algorithms are named.
        let mut t = jwe;
        t.protected = B64.encode(br#"{"alg":"dir","enc":"A256GCM","epk":{"kty":"EC"}}"#);
        assert!(matches!(
            tee.decrypt(&t),
            Err(JweError::Unsupported { field: "alg", .. })
        ));
    }

    #[test]
    fn rsa_oaep_256_recipients() {
        use rsa::traits::PublicKeyParts;
        let sk = rsa::PrivateKey::new(&mut rng(), 2048).unwrap();
        let pk = sk.to_public_key();
        let jwk = Jwk {
            kty: "RSA".into(),
            alg: Some("RSA-OAEP-256".into()),
            crv: None,
            x: None,
            y: None,
            n: Some(B64.encode(pk.n().to_be_bytes_trimmed_vartime())),
            e: Some(B64.encode(pk.e().to_be_bytes_trimmed_vartime())),
        };
        let jwe = encrypt(&jwk, b"model key").unwrap();
        let hdr: serde_json::Value =
            serde_json::from_slice(&B64.decode(&jwe.protected).unwrap()).unwrap();
        assert_eq!(hdr["alg"], "RSA-OAEP-256");
        // Open it as an RSA TEE would: unwrap the CEK, then AES-GCM.
        let cek = sk
            .decrypt(
                rsa::Oaep::<sha2::Sha256>::new(),
                &B64.decode(&jwe.encrypted_key).unwrap(),
            )
            .unwrap();
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &cek).unwrap());
        let mut buf = B64.decode(&jwe.ciphertext).unwrap();
        buf.extend(B64.decode(&jwe.tag).unwrap());
        let iv: [u8; 12] = B64.decode(&jwe.iv).unwrap().try_into().unwrap();
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(iv),
                Aad::from(jwe.protected.as_bytes()),
                &mut buf,
            )
            .unwrap();
        assert_eq!(plain, b"model key");
        // Small RSA keys are refused.
        let mut small = jwk.clone();
        small.n = Some(B64.encode([0xffu8; 128]));
        assert_eq!(encrypt(&small, b"k").unwrap_err(), JweError::BadKey);
    }

    #[test]
    fn invalid_recipient_keys_are_refused() {
        let mut jwk = TeeKeyPair::generate().public_jwk();
        jwk.x = Some(B64.encode([0u8; 32]));
        assert_eq!(encrypt(&jwk, b"k").unwrap_err(), JweError::BadKey);
        let mut jwk = TeeKeyPair::generate().public_jwk();
        jwk.crv = Some("P-384".into());
        assert_eq!(encrypt(&jwk, b"k").unwrap_err(), JweError::BadKey);
    }
}
