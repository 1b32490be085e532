//! PKCS #11 custody (DESIGN.md §11): the issuer's three signing keys (CA root, scheme key, audit key)
//! are generated in a token as sensitive, non-extractable private keys and sign there; the stored
//! secrets (transfer keys, update keys, the card log master, the virtual manufacturer's key) are wrapped by an AES-256 key
//! generated in the same token, with AES key wrap with padding (`CKM_AES_KEY_WRAP_PAD`, RFC 5649;
//! PKCS #11 v2.40 §2.14.3). Nothing here is specific to SoftHSM2, the token the tests use.
//!
//! - **Finding the token**: by its label (`CKA_LABEL` of the token, PKCS #11 `CK_TOKEN_INFO.label`),
//!   in the module the caller names. The PIN is read only from [`PIN_ENV`]; it is never an argument,
//!   never printed, and held in a `secrecy` box that is zeroized when dropped.
//! - **Keys**: found by `CKA_ID` (16 random bytes chosen at `init`, recorded in the database's
//!   `token_keys` table with the token label and serial, bound to the signed log like every
//!   security-relevant row). Private keys: `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE`,
//!   `!CKA_EXTRACTABLE`, `CKA_SIGN` only; the wrap key: `CKA_WRAP`/`CKA_UNWRAP` only.
//! - **Signing**: the SHA-256 digest is computed in process and signed with raw `CKM_ECDSA`
//!   (PKCS #11 v2.40 §2.3.6); the `r ‖ s` answer is normalised to low S.
//! - **Wrapping a secret**: the secret becomes a session object (`CKO_SECRET_KEY`, `CKK_GENERIC_SECRET`,
//!   `CKA_TOKEN` false), is wrapped with `C_WrapKey` and the object destroyed at once; unwrapping is the
//!   reverse (`C_UnwrapKey` to a session object, read `CKA_VALUE` into a zeroizing buffer, destroy).
//!   The stored form is [`WRAPPED_PREFIX`] followed by the RFC 5649 output.
//! - **Sessions** ([`SessionPool`]): PKCS #11 sessions must not be used by two threads at once
//!   (PKCS #11 v2.40 §5.6: a session is a single thread of control). The pool hands each caller a
//!   session *by value*: it is taken out of the pool's list under a mutex, used by that one thread only,
//!   and put back when the operation ends; when the list is empty a new session is opened. So there are
//!   never more sessions than threads signing at once (one per worker thread of a parallel batch), and
//!   no session is ever reachable from two threads: the type system enforces it (`cryptoki::Session` is
//!   `Send` but not `Sync`, and the pool never lends a reference). Login is per application and
//!   slot (PKCS #11 v2.40 §5.6), so sessions opened after the first are logged in already.

use super::AuthorityError;
use super::store::{Store, params};
use crate::crypto::CryptoError;
use crate::crypto::ec::{self, PublicKey, Signature};
use crate::crypto::secret::SecretBytes;
use crate::crypto::signer::Signer;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
pub use cryptoki::types::AuthPin;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use zeroize::{Zeroize, Zeroizing};

/// The only place keyroll reads a token PIN from.
pub const PIN_ENV: &str = "KEYROLL_PKCS11_PIN";
/// Overrides the module path recorded at `init` (the token's library moved, or another machine).
pub const MODULE_ENV: &str = "KEYROLL_PKCS11_MODULE";
/// Marks a secret wrapped by the token's AES key (age ciphertext starts with `age-encryption.org/`).
pub const WRAPPED_PREFIX: &[u8] = b"keyroll-pkcs11-kwp/1\n";
/// The stored form of a secret whose length is not a multiple of 8 (a PKCS #8 key): the wrapped
/// plaintext is its length (2 octets, big-endian) and then the secret. RFC 5649 records the length
/// itself, but SoftHSM2 (2.6) hands back the unwrapped value with its zero padding, so keyroll keeps the
/// length where every token returns it (found by hsm::a_token_failing_mid_batch_…: the virtual
/// manufacturer's PKCS #8 key came back padded and no longer matched its root).
pub const WRAPPED_PREFIX_LEN: &[u8] = b"keyroll-pkcs11-kwp/2\n";

/// DER of the named curve secp256r1 (RFC 5480 §2.1.1.1), the `CKA_EC_PARAMS` of every key made here.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
/// Length of the `CKA_ID` keyroll gives its keys.
const KEY_ID_LEN: usize = 16;

/// What a token key is for (the `role` column of `token_keys`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Ca,
    Scheme,
    Audit,
    Wrap,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Ca => "ca",
            Role::Scheme => "scheme",
            Role::Audit => "audit",
            Role::Wrap => "wrap",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Ca, Role::Scheme, Role::Audit, Role::Wrap].into_iter().find(|r| r.name() == s)
    }
}

/// Errors of PKCS #11 custody: each says what was wrong; none carries the PIN or key material.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot load the PKCS #11 module {path}: {why}")]
    Module { path: PathBuf, why: String },
    #[error("no initialised token labelled {label:?} in the PKCS #11 module {module}")]
    NoToken { label: String, module: PathBuf },
    #[error("{n} tokens are labelled {label:?} in the PKCS #11 module {module}; keyroll needs exactly one")]
    AmbiguousToken { label: String, module: PathBuf, n: usize },
    #[error("no token PIN: keyroll reads it only from the environment variable {PIN_ENV}")]
    NoPin,
    #[error("the token {label:?} refused the PIN (from {PIN_ENV})")]
    WrongPin { label: String },
    #[error("the token {label:?} has locked its user PIN")]
    PinLocked { label: String },
    #[error("the token {label:?} holds no {role} key with id {id} (removed, or another token with the same label)")]
    KeyMissing { label: String, role: &'static str, id: String },
    #[error("the token {label:?} {role} key with id {id} is not the key this database recorded")]
    KeyMismatch { label: String, role: &'static str, id: String },
    #[error("the token {label:?} does not offer {mechanism}")]
    Mechanism { label: String, mechanism: &'static str },
    #[error(
        "the token labelled {label:?} has serial {found}, but this database's keys are in the token with serial {expected}"
    )]
    OtherToken { label: String, expected: String, found: String },
    #[error("a stored secret is not wrapped by a PKCS #11 token")]
    NotWrapped,
    #[error("PKCS #11 {op} failed: {why}")]
    Failed { op: &'static str, why: String },
}

fn failed(op: &'static str) -> impl FnOnce(P11Error) -> TokenError {
    move |e| TokenError::Failed { op, why: e.to_string() }
}

fn rv(e: &P11Error) -> Option<RvError> {
    match e {
        P11Error::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// Where the token is: the module (a shared library) and the token's label.
#[derive(Clone, Debug)]
pub struct TokenSpec {
    pub module: PathBuf,
    pub label: String,
}

/// Each module is loaded and `C_Initialize`d once per process (a second `C_Initialize` of the same
/// library is `CKR_CRYPTOKI_ALREADY_INITIALIZED`) and stays loaded.
fn module(path: &Path) -> Result<Pkcs11, TokenError> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut map = MODULES.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = map.get(path) {
        return Ok(m.clone());
    }
    let bad = |why: String| TokenError::Module { path: path.to_path_buf(), why };
    if !path.is_file() {
        return Err(bad("no such file".into()));
    }
    let ctx = Pkcs11::new(path).map_err(|e| bad(e.to_string()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => {}
        Err(e) if rv(&e) == Some(RvError::CryptokiAlreadyInitialized) => {}
        Err(e) => return Err(bad(format!("C_Initialize: {e}"))),
    }
    map.insert(path.to_path_buf(), ctx.clone());
    Ok(ctx)
}

/// Sessions of one logged-in token, lent out by value to one thread at a time (see the module notes).
pub struct SessionPool {
    ctx: Pkcs11,
    slot: Slot,
    idle: Mutex<Vec<Session>>,
}

impl SessionPool {
    /// Run `f` with a session no other thread holds; the session goes back to the pool afterwards.
    pub fn with<T>(&self, f: impl FnOnce(&Session) -> Result<T, P11Error>) -> Result<T, P11Error> {
        let taken = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let session = match taken {
            Some(s) => s,
            None => self.ctx.open_rw_session(self.slot)?,
        };
        let out = f(&session);
        // A session the token closed (removed device) is not kept.
        let dead = matches!(
            out.as_ref().map_err(rv),
            Err(Some(RvError::SessionHandleInvalid | RvError::SessionClosed | RvError::DeviceRemoved))
        );
        if !dead {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(session);
        }
        out
    }

    /// Sessions currently open and idle (for tests and the benchmark).
    pub fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// A logged-in token.
pub struct Token {
    pub label: String,
    pub serial: String,
    pub module: PathBuf,
    pool: SessionPool,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token {{ label: {:?}, serial: {:?}, module: {} }}", self.label, self.serial, self.module.display())
    }
}

/// The PIN from [`PIN_ENV`] (never from an argument).
fn pin_from_env() -> Result<AuthPin, TokenError> {
    match std::env::var(PIN_ENV) {
        Ok(p) if !p.is_empty() => Ok(AuthPin::from(p)),
        _ => Err(TokenError::NoPin),
    }
}

impl Token {
    /// Load the module, find the token by label and log in with the PIN from [`PIN_ENV`]. Nothing on
    /// the token changes.
    pub fn open(spec: &TokenSpec) -> Result<Arc<Token>, TokenError> {
        Self::open_with(spec, pin_from_env)
    }

    /// [`Token::open`] with the PIN from `pin` (asked for only once the token is found), for programs
    /// that embed the library; the CLI reads it from [`PIN_ENV`] only.
    pub fn open_with(
        spec: &TokenSpec,
        pin: impl FnOnce() -> Result<AuthPin, TokenError>,
    ) -> Result<Arc<Token>, TokenError> {
        let ctx = module(&spec.module)?;
        let mut found = Vec::new();
        for slot in ctx.get_slots_with_token().map_err(failed("C_GetSlotList"))? {
            let Ok(info) = ctx.get_token_info(slot) else { continue };
            if info.token_initialized() && info.label().trim_end() == spec.label {
                found.push((slot, info));
            }
        }
        let (slot, info) = match found.len() {
            1 => found.pop().expect("one"),
            0 => return Err(TokenError::NoToken { label: spec.label.clone(), module: spec.module.clone() }),
            n => {
                return Err(TokenError::AmbiguousToken { label: spec.label.clone(), module: spec.module.clone(), n });
            }
        };
        let label = spec.label.clone();
        if info.user_pin_locked() {
            return Err(TokenError::PinLocked { label });
        }
        let pin = pin()?;
        let pool = SessionPool { ctx: ctx.clone(), slot, idle: Mutex::new(Vec::new()) };
        pool.with(|s| match s.login(UserType::User, Some(&pin)) {
            Err(e) if rv(&e) == Some(RvError::UserAlreadyLoggedIn) => Ok(()),
            r => r,
        })
        .map_err(|e| match rv(&e) {
            Some(RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange) => {
                TokenError::WrongPin { label: label.clone() }
            }
            Some(RvError::PinLocked) => TokenError::PinLocked { label: label.clone() },
            _ => TokenError::Failed { op: "C_Login", why: e.to_string() },
        })?;
        let token =
            Token { serial: info.serial_number().trim_end().to_string(), module: spec.module.clone(), label, pool };
        for (m, name) in [
            (cryptoki::mechanism::MechanismType::ECDSA, "CKM_ECDSA"),
            (cryptoki::mechanism::MechanismType::ECC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN"),
            (cryptoki::mechanism::MechanismType::AES_KEY_WRAP_PAD, "CKM_AES_KEY_WRAP_PAD"),
        ] {
            if ctx.get_mechanism_info(slot, m).is_err() {
                return Err(TokenError::Mechanism { label: token.label.clone(), mechanism: name });
            }
        }
        Ok(Arc::new(token))
    }

    /// The session pool.
    pub fn pool(&self) -> &SessionPool {
        &self.pool
    }

    fn new_id() -> Result<Vec<u8>, TokenError> {
        Ok(crate::crypto::random::bytes::<KEY_ID_LEN>()
            .map_err(|_| TokenError::Failed { op: "random", why: "the OS random generator failed".into() })?
            .to_vec())
    }

    /// Generate a P-256 signing key in the token: the private half sensitive, non-extractable,
    /// private, sign-only. Returns its `CKA_ID` and the signer.
    pub fn generate_signing_key(self: &Arc<Self>, role: Role, issuer: &str) -> Result<TokenKey, TokenError> {
        let id = Self::new_id()?;
        let label = format!("keyroll {} {}", role.name(), issuer).into_bytes();
        let public_template = vec![
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
            Attribute::Derive(false),
            Attribute::EcParams(P256_PARAMS.to_vec()),
            Attribute::Id(id.clone()),
            Attribute::Label(label.clone()),
        ];
        let private_template = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Derive(false),
            Attribute::Unwrap(false),
            Attribute::Id(id.clone()),
            Attribute::Label(label),
        ];
        let (public, private) = self
            .pool
            .with(|s| s.generate_key_pair(&Mechanism::EccKeyPairGen, &public_template, &private_template))
            .map_err(failed("C_GenerateKeyPair"))?;
        let point = self
            .pool
            .with(|s| s.get_attributes(public, &[AttributeType::EcPoint]))
            .map_err(failed("C_GetAttributeValue"))?;
        let public = ec_point(&point)
            .ok_or(TokenError::Failed { op: "C_GetAttributeValue", why: "no P-256 CKA_EC_POINT".into() })?;
        Ok(TokenKey { token: self.clone(), role, id, handle: private, public })
    }

    /// Generate the AES-256 key that wraps stored secrets: wrap/unwrap only, sensitive,
    /// non-extractable, private. Returns its `CKA_ID`.
    pub fn generate_wrap_key(self: &Arc<Self>, issuer: &str) -> Result<WrapKey, TokenError> {
        let id = Self::new_id()?;
        let template = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::ValueLen(32.into()),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
            Attribute::Id(id.clone()),
            Attribute::Label(format!("keyroll wrap {issuer}").into_bytes()),
        ];
        let handle =
            self.pool.with(|s| s.generate_key(&Mechanism::AesKeyGen, &template)).map_err(failed("C_GenerateKey"))?;
        Ok(WrapKey { token: self.clone(), id, handle })
    }

    fn find(&self, class: ObjectClass, role: Role, id: &[u8]) -> Result<ObjectHandle, TokenError> {
        let found = self
            .pool
            .with(|s| s.find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())]))
            .map_err(failed("C_FindObjects"))?;
        match found.as_slice() {
            [h] => Ok(*h),
            _ => Err(TokenError::KeyMissing { label: self.label.clone(), role: role.name(), id: hex::encode(id) }),
        }
    }

    /// The signing key with `id`, which must be the key whose public half the database recorded
    /// (`expected`, SEC 1): one test signature over a fixed digest is verified against it.
    pub fn signing_key(self: &Arc<Self>, role: Role, id: &[u8], expected: &[u8]) -> Result<TokenKey, TokenError> {
        let handle = self.find(ObjectClass::PRIVATE_KEY, role, id)?;
        let mismatch = || TokenError::KeyMismatch { label: self.label.clone(), role: role.name(), id: hex::encode(id) };
        let public = PublicKey::from_sec1(expected).map_err(|_| mismatch())?;
        let key = TokenKey { token: self.clone(), role, id: id.to_vec(), handle, public };
        let probe: [&[u8]; 2] = [b"keyroll token key probe", role.name().as_bytes()];
        let rs = key.sign_digest_raw(&ec::digest_parts(&probe))?;
        let sig = Signature::from_p1363(&rs).map_err(|_| mismatch())?;
        key.public.verify(&probe, &sig).map_err(|_| mismatch())?;
        Ok(key)
    }

    /// The wrap key with `id`.
    pub fn wrap_key(self: &Arc<Self>, id: &[u8]) -> Result<WrapKey, TokenError> {
        let handle = self.find(ObjectClass::SECRET_KEY, Role::Wrap, id)?;
        Ok(WrapKey { token: self.clone(), id: id.to_vec(), handle })
    }

    /// Destroy objects this process made (an `init` that failed half-way leaves the token as it was).
    pub fn destroy(&self, handles: &[ObjectHandle]) {
        for h in handles {
            let _ = self.pool.with(|s| s.destroy_object(*h));
        }
    }

    /// Every private key and secret key on the token with `id` (public halves included), for cleanup.
    pub fn objects_with_id(&self, id: &[u8]) -> Vec<ObjectHandle> {
        self.pool.with(|s| s.find_objects(&[Attribute::Id(id.to_vec())])).unwrap_or_default()
    }
}

/// The uncompressed point in a `CKA_EC_POINT` (a DER OCTET STRING around it, PKCS #11 v2.40 §2.3.3;
/// some tokens give the bare point).
fn ec_point(attrs: &[Attribute]) -> Option<PublicKey> {
    let v = attrs.iter().find_map(|a| match a {
        Attribute::EcPoint(v) => Some(v.as_slice()),
        _ => None,
    })?;
    let point = match v {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest,
        p if p.len() == 65 => p,
        _ => return None,
    };
    PublicKey::from_sec1(point).ok()
}

/// A P-256 private key in a token, signing through the session pool.
pub struct TokenKey {
    token: Arc<Token>,
    pub role: Role,
    pub id: Vec<u8>,
    handle: ObjectHandle,
    public: PublicKey,
}

impl TokenKey {
    pub fn handle(&self) -> ObjectHandle {
        self.handle
    }

    fn sign_digest_raw(&self, digest: &[u8; ec::DIGEST_LEN]) -> Result<[u8; ec::P1363_SIGNATURE_LEN], TokenError> {
        let rs = self.token.pool.with(|s| s.sign(&Mechanism::Ecdsa, self.handle, digest)).map_err(failed("C_Sign"))?;
        rs.try_into().map_err(|v: Vec<u8>| TokenError::Failed {
            op: "C_Sign",
            why: format!("a {}-byte signature, not the 64-byte r ‖ s of P-256", v.len()),
        })
    }
}

impl Signer for TokenKey {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign_prehashed(&self, digest: &[u8; ec::DIGEST_LEN]) -> Result<Signature, CryptoError> {
        let rs = self.sign_digest_raw(digest).map_err(|e| CryptoError::Device(e.to_string()))?;
        Ok(Signature::from_p1363(&rs)?.normalize_s())
    }
}

/// The token's AES key that wraps stored secrets.
pub struct WrapKey {
    token: Arc<Token>,
    pub id: Vec<u8>,
    handle: ObjectHandle,
}

impl WrapKey {
    pub fn handle(&self) -> ObjectHandle {
        self.handle
    }

    /// Wrap `secret` (RFC 5649 in the token); the stored form starts with [`WRAPPED_PREFIX`].
    pub fn wrap(&self, secret: &[u8]) -> Result<Vec<u8>, TokenError> {
        let (prefix, mut value) = if secret.len() % 8 == 0 {
            (WRAPPED_PREFIX, Zeroizing::new(secret.to_vec()))
        } else {
            let len = u16::try_from(secret.len())
                .map_err(|_| TokenError::Failed { op: "C_WrapKey", why: "secret longer than 65535 octets".into() })?;
            let mut v = Zeroizing::new(len.to_be_bytes().to_vec());
            v.extend_from_slice(secret);
            (WRAPPED_PREFIX_LEN, v)
        };
        let mut template = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
            Attribute::Value(std::mem::take(&mut *value)),
        ];
        let wrapped = self.token.pool.with(|s| {
            let object = s.create_object(&template)?;
            let out = s.wrap_key(&Mechanism::AesKeyWrapPad, self.handle, object);
            let gone = s.destroy_object(object);
            let out = out?;
            gone?;
            Ok(out)
        });
        for a in &mut template {
            if let Attribute::Value(v) = a {
                v.zeroize();
            }
        }
        let wrapped = wrapped.map_err(failed("C_WrapKey"))?;
        let mut out = Vec::with_capacity(prefix.len() + wrapped.len());
        out.extend_from_slice(prefix);
        out.extend_from_slice(&wrapped);
        Ok(out)
    }

    /// Unwrap a stored secret into a zeroizing buffer (the token's session object is destroyed at once).
    pub fn unwrap(&self, stored: &[u8]) -> Result<SecretBytes, TokenError> {
        let (wrapped, with_len) = match stored.strip_prefix(WRAPPED_PREFIX) {
            Some(w) => (w, false),
            None => (stored.strip_prefix(WRAPPED_PREFIX_LEN).ok_or(TokenError::NotWrapped)?, true),
        };
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
        ];
        let mut attrs = self
            .token
            .pool
            .with(|s| {
                let object = s.unwrap_key(&Mechanism::AesKeyWrapPad, self.handle, wrapped, &template)?;
                let value = s.get_attributes(object, &[AttributeType::Value]);
                let gone = s.destroy_object(object);
                let value = value?;
                gone?;
                Ok(value)
            })
            .map_err(failed("C_UnwrapKey"))?;
        let mut out = Zeroizing::new(Vec::new());
        for a in &mut attrs {
            if let Attribute::Value(v) = a {
                out.extend_from_slice(v);
                v.zeroize();
            }
        }
        if with_len {
            let len = match out.get(..2) {
                Some(l) => u16::from_be_bytes([l[0], l[1]]) as usize,
                None => return Err(TokenError::NotWrapped),
            };
            if out.len() < 2 + len {
                return Err(TokenError::NotWrapped);
            }
            return Ok(SecretBytes::new(out[2..2 + len].to_vec()));
        }
        Ok(SecretBytes::new(std::mem::take(&mut *out)))
    }
}

/// A `token_keys` row: which token holds which key (DESIGN.md §11).
#[derive(Clone, Debug)]
pub struct KeyRecord {
    pub role: Role,
    pub token_label: String,
    pub token_serial: String,
    pub module: PathBuf,
    pub key_id: Vec<u8>,
    pub public_key: Option<Vec<u8>>,
}

/// The token key records (empty for a database in age custody).
pub fn records(conn: &Store) -> Result<Vec<KeyRecord>, AuthorityError> {
    super::rows::decode_all(
        conn,
        "token_keys",
        "SELECT id, role, token_label, token_serial, module, key_id, public_key FROM token_keys ORDER BY id",
        params![],
        |r| {
            let role: String = super::rows::col(r, 1)?;
            Ok(KeyRecord {
                role: Role::parse(&role).ok_or_else(|| format!("unknown role {role:?}"))?,
                token_label: super::rows::col(r, 2)?,
                token_serial: super::rows::col(r, 3)?,
                module: PathBuf::from(super::rows::col::<String>(r, 4)?),
                key_id: super::rows::col(r, 5)?,
                public_key: super::rows::col(r, 6)?,
            })
        },
    )
}

/// Record a key made in `token` (inside `init`'s transaction, before the entry that binds it).
pub(super) fn insert_record(
    conn: &Store,
    token: &Token,
    role: Role,
    key_id: &[u8],
    public_key: Option<&[u8]>,
) -> Result<(), AuthorityError> {
    conn.execute(
        "INSERT INTO token_keys (role, token_label, token_serial, module, key_id, public_key, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            role.name(),
            token.label,
            token.serial,
            token.module.display().to_string(),
            key_id,
            public_key,
            super::now()
        ],
    )?;
    Ok(())
}

/// The keys of a database in token custody, found in the token its records name and checked against
/// the public keys the database recorded.
pub struct TokenCustody {
    pub token: Arc<Token>,
    pub audit: Arc<TokenKey>,
    pub ca: Arc<TokenKey>,
    pub scheme: Arc<TokenKey>,
    pub wrap: Arc<WrapKey>,
}

impl TokenCustody {
    /// Open the token the records name (module from [`MODULE_ENV`] if set) and find every key in it.
    pub fn open(records: &[KeyRecord]) -> Result<TokenCustody, AuthorityError> {
        let get = |role: Role| {
            records.iter().find(|r| r.role == role).ok_or(AuthorityError::BadRow {
                table: "token_keys",
                row: 0,
                why: format!("no {} key recorded", role.name()),
            })
        };
        let first = get(Role::Audit)?;
        let module = std::env::var_os(MODULE_ENV).map(PathBuf::from).unwrap_or_else(|| first.module.clone());
        let token = Token::open(&TokenSpec { module, label: first.token_label.clone() })?;
        if token.serial != first.token_serial {
            return Err(TokenError::OtherToken {
                label: token.label.clone(),
                expected: first.token_serial.clone(),
                found: token.serial.clone(),
            }
            .into());
        }
        let signing = |role: Role| -> Result<Arc<TokenKey>, AuthorityError> {
            let r = get(role)?;
            let public = r.public_key.as_deref().ok_or(AuthorityError::BadRow {
                table: "token_keys",
                row: 0,
                why: format!("the {} key has no public key", role.name()),
            })?;
            Ok(Arc::new(token.signing_key(role, &r.key_id, public)?))
        };
        Ok(TokenCustody {
            audit: signing(Role::Audit)?,
            ca: signing(Role::Ca)?,
            scheme: signing(Role::Scheme)?,
            wrap: Arc::new(token.wrap_key(&get(Role::Wrap)?.key_id)?),
            token,
        })
    }
}
