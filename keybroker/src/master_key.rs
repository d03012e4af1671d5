//! The key store's master key: a file (the embedded default) or an AES-256
//! key inside a PKCS#11 token (an HSM; SoftHSM2 in the tests) that never
//! leaves it — data keys are sealed and opened by the token itself
//! (`CKM_AES_GCM`), so the broker's memory and disk hold the master key in
//! neither case of the HSM. Both seal the same way (AES-256-GCM, a 96-bit
//! nonce chosen by the broker, the resource path and version as associated
//! data), so the key store's file format does not depend on where the
//! master key lives.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use zeroize::Zeroizing;

/// Where the master key is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// The token's PKCS#11 module (e.g. `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// The token, by label.
    pub token_label: String,
    /// The AES-256 secret key object, by label.
    pub key_label: String,
    /// A file holding the user PIN (relative to the configuration file).
    pub pin_file: PathBuf,
}

/// Why the master key is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MasterKeyError {
    #[error("master key {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("PKCS#11 {module} (token {token:?}): {message}")]
    Pkcs11 {
        module: PathBuf,
        token: String,
        message: String,
    },
}

/// A sealing key for data keys.
pub enum MasterKey {
    Local(Box<LessSafeKey>),
    Pkcs11(TokenKey),
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MasterKey::Local(_) => f.write_str("MasterKey::Local"),
            MasterKey::Pkcs11(t) => write!(f, "MasterKey::Pkcs11({:?})", t.describe()),
        }
    }
}

/// An AES-256 key inside a token, used through one logged-in session.
#[allow(missing_debug_implementations)] // the session is not Debug; MasterKey's Debug describes it
pub struct TokenKey {
    // Kept alive for as long as the session; finalized when dropped.
    _context: Pkcs11,
    session: Mutex<Session>,
    key: ObjectHandle,
    module: PathBuf,
    token: String,
    label: String,
}

impl TokenKey {
    /// `op` on the token's session with AES-GCM under `nonce` and `aad`.
    fn with_gcm<T>(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        op: impl FnOnce(&Session, &Mechanism<'_>, ObjectHandle) -> cryptoki::error::Result<T>,
    ) -> Result<cryptoki::error::Result<T>, String> {
        let mut iv = nonce;
        let params = GcmParams::new(&mut iv, aad, TAG_BITS.into()).map_err(|e| e.to_string())?;
        let session = self
            .session
            .lock()
            .map_err(|_| "the token's session lock is poisoned")?;
        Ok(op(&session, &Mechanism::AesGcm(params), self.key))
    }

    fn describe(&self) -> String {
        format!(
            "{} token {:?} key {:?}",
            self.module.display(),
            self.token,
            self.label
        )
    }
}

/// The AES-GCM tag, bits.
const TAG_BITS: u64 = 128;

fn token_err(cfg: &Pkcs11Config, message: impl std::fmt::Display) -> MasterKeyError {
    MasterKeyError::Pkcs11 {
        module: cfg.module.clone(),
        token: cfg.token_label.clone(),
        message: message.to_string(),
    }
}

/// The PIN in `path` (surrounding whitespace ignored).
fn read_pin(cfg: &Pkcs11Config) -> Result<AuthPin, MasterKeyError> {
    let text = Zeroizing::new(
        std::fs::read_to_string(&cfg.pin_file)
            .map_err(|e| token_err(cfg, format!("PIN file {}: {e}", cfg.pin_file.display())))?,
    );
    Ok(AuthPin::new(text.trim().to_string().into()))
}

/// The module loaded, initialized, and a logged-in read-write session on
/// the token labelled `cfg.token_label`.
fn login(cfg: &Pkcs11Config) -> Result<(Pkcs11, Session), MasterKeyError> {
    let context = Pkcs11::new(&cfg.module).map_err(|e| token_err(cfg, format!("loading: {e}")))?;
    context
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| token_err(cfg, format!("C_Initialize: {e}")))?;
    let slots = context
        .get_slots_with_token()
        .map_err(|e| token_err(cfg, format!("listing slots: {e}")))?;
    let mut labels = Vec::new();
    let mut found = None;
    for slot in slots {
        let info = context
            .get_token_info(slot)
            .map_err(|e| token_err(cfg, format!("token info: {e}")))?;
        let label = info.label().trim_end().to_string();
        if label == cfg.token_label {
            found = Some(slot);
            break;
        }
        labels.push(label);
    }
    let slot = found
        .ok_or_else(|| token_err(cfg, format!("no such token; tokens present: {labels:?}")))?;
    let session = context
        .open_rw_session(slot)
        .map_err(|e| token_err(cfg, format!("opening a session: {e}")))?;
    session
        .login(UserType::User, Some(&read_pin(cfg)?))
        .map_err(|e| token_err(cfg, format!("login: {e}")))?;
    Ok((context, session))
}

fn key_template(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

impl MasterKey {
    /// A 32-byte key stored as hex in `path`.
    pub fn from_file(path: &Path) -> Result<Self, MasterKeyError> {
        let err = |m: String| MasterKeyError::File {
            path: path.to_path_buf(),
            message: m,
        };
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?);
        let bytes =
            Zeroizing::new(hex::decode(text.trim()).map_err(|e| err(format!("not hex: {e}")))?);
        if bytes.len() != 32 {
            return Err(err(format!("{} bytes, expected 32", bytes.len())));
        }
        Self::from_bytes(&bytes, path)
    }

    /// A key held in memory (tests, and `from_file`).
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<Self, MasterKeyError> {
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| MasterKeyError::File {
            path: origin.to_path_buf(),
            message: "not an AES-256 key".into(),
        })?;
        Ok(MasterKey::Local(Box::new(LessSafeKey::new(key))))
    }

    /// The key labelled `cfg.key_label` in the token.
    pub fn open_pkcs11(cfg: &Pkcs11Config) -> Result<Self, MasterKeyError> {
        let (context, session) = login(cfg)?;
        let keys = session
            .find_objects(&key_template(&cfg.key_label))
            .map_err(|e| token_err(cfg, format!("finding the key: {e}")))?;
        let key = match keys.as_slice() {
            [one] => *one,
            [] => {
                return Err(token_err(
                    cfg,
                    format!(
                        "no AES key labelled {:?} (ciel kbs init --pkcs11-… makes one)",
                        cfg.key_label
                    ),
                ));
            }
            _ => {
                return Err(token_err(
                    cfg,
                    format!(
                        "{} AES keys are labelled {:?}; one is needed",
                        keys.len(),
                        cfg.key_label
                    ),
                ));
            }
        };
        Ok(MasterKey::Pkcs11(TokenKey {
            _context: context,
            session: Mutex::new(session),
            key,
            module: cfg.module.clone(),
            token: cfg.token_label.clone(),
            label: cfg.key_label.clone(),
        }))
    }

    /// Makes the token's key: AES-256, generated inside the token,
    /// persistent, sensitive and never extractable, usable only to encrypt
    /// and decrypt. Refuses if a key with that label exists.
    pub fn generate_pkcs11(cfg: &Pkcs11Config) -> Result<(), MasterKeyError> {
        let (_context, session) = login(cfg)?;
        let existing = session
            .find_objects(&key_template(&cfg.key_label))
            .map_err(|e| token_err(cfg, format!("finding keys: {e}")))?;
        if !existing.is_empty() {
            return Err(token_err(
                cfg,
                format!(
                    "a key labelled {:?} exists already; not replacing it",
                    cfg.key_label
                ),
            ));
        }
        let mut template = key_template(&cfg.key_label);
        template.retain(|a| a.attribute_type() != AttributeType::Class);
        template.extend([
            Attribute::ValueLen(32.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
        ]);
        session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(|e| token_err(cfg, format!("generating the key: {e}")))?;
        Ok(())
    }

    /// `plaintext` sealed under `nonce` and `aad`: ciphertext ‖ tag.
    pub fn seal(&self, nonce: [u8; 12], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            MasterKey::Local(key) => {
                let mut buf = plaintext.to_vec();
                key.seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    &mut buf,
                )
                .map_err(|_| "sealing failed".to_string())?;
                Ok(buf)
            }
            MasterKey::Pkcs11(t) => t
                .with_gcm(nonce, aad, |session, mechanism, key| {
                    session.encrypt(mechanism, key, plaintext)
                })?
                .map_err(|e| format!("{}: C_Encrypt: {e}", t.describe())),
        }
    }

    /// Opens what [`MasterKey::seal`] made; None when it does not
    /// authenticate (another key, another nonce or associated data, an
    /// edited ciphertext).
    pub fn open(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
        match self {
            MasterKey::Local(key) => {
                let mut buf = Zeroizing::new(sealed.to_vec());
                match key.open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    &mut buf,
                ) {
                    Ok(plain) => {
                        let n = plain.len();
                        buf.truncate(n);
                        Ok(Some(buf))
                    }
                    Err(_) => Ok(None),
                }
            }
            MasterKey::Pkcs11(t) => {
                let decrypted = t.with_gcm(nonce, aad, |session, mechanism, key| {
                    session.decrypt(mechanism, key, sealed)
                })?;
                match decrypted {
                    Ok(plain) => Ok(Some(Zeroizing::new(plain))),
                    // A tag that does not verify: the standard's codes, and
                    // CKR_GENERAL_ERROR, which SoftHSM2 (OpenSSL's GCM)
                    // returns for it.
                    Err(cryptoki::error::Error::Pkcs11(
                        cryptoki::error::RvError::EncryptedDataInvalid
                        | cryptoki::error::RvError::EncryptedDataLenRange
                        | cryptoki::error::RvError::GeneralError,
                        _,
                    )) => Ok(None),
                    Err(e) => Err(format!("{}: C_Decrypt: {e}", t.describe())),
                }
            }
        }
    }
}
