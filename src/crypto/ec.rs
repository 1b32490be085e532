//! P-256 (secp256r1, FIPS 186-5 §6 / SEC 2 §2.4.2) for keyroll: key pairs, public keys, ECDSA
//! signatures and ECDH shared secrets.
//!
//! **This is the one module that names the arithmetic backend: AWS-LC, through `aws-lc-rs`.** Every
//! key generation, ECDSA signature (FIPS 186-5 §6.4, SHA-256), ECDSA verification and ECDH (SEC 1
//! §3.3.1) of keyroll runs here: the CA, CRLs and the audit key (`authority`), path validation
//! (`pki`), the card's ECDSA and ECIES (`crypto::card_key`, `crypto::ecies`) and the
//! personalisation channel. The `p256`/`ecdsa` crates remain only as encodings (strict DER
//! `ECDSA-Sig-Value` parsing, SPKI types for x509-cert's builder) and as the second implementation
//! the conformance tests cross-check against; nothing on a hot path computes with them.
//!
//! Encodings (what keyroll's own types accept and emit):
//! - [`PublicKey`]: SEC 1 §2.3.3 points; emitted as the 65-byte uncompressed form, accepted
//!   uncompressed or compressed (SEC 1 §2.3.4); the identity, points off the curve and the hybrid
//!   forms are refused. AWS-LC checks the point (on the curve, not the identity) when it is parsed;
//!   P-256 has cofactor 1, so no subgroup check is needed.
//! - [`Signature`]: `r ‖ s` held as 64 bytes with `0 < r, s < n`; read from strict DER
//!   `ECDSA-Sig-Value` (RFC 3279 §2.2.3: minimal lengths and integers, no trailing bytes) or IEEE
//!   P1363 `r ‖ s`, written in either form.
//! - [`KeyPair`]: the secret scalar leaves only as a 32-byte big-endian integer (SEC 1 §2.3.7) or
//!   PKCS #8 (RFC 5208 with RFC 5915 inside), both in zeroizing buffers, for the caller to store
//!   encrypted (age) or in the card's own memory.
//!
//! Signatures: AWS-LC draws the nonce `k` from its DRBG (hedged with the key and the digest), so
//! signing is randomised, not RFC 6979 deterministic. [`KeyPair::sign`] always returns the low-S
//! form `s <= n/2`; verification accepts high-S as FIPS 186-5 and X9.62 do.
//!
//! Secrets: AWS-LC holds private scalars in its own `EC_KEY`, which it cleanses when freed;
//! keyroll's copies ([`SharedSecret`], exported scalars) are zeroized on drop. No type here shows a
//! secret in `Debug`.

use super::CryptoError;
use super::secret::SecretBytes;
use aws_lc_rs::agreement;
use aws_lc_rs::digest;
use aws_lc_rs::encoding::AsBigEndian;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{self as lc, KeyPair as _};
use std::sync::OnceLock;
use zeroize::Zeroizing;

/// Name of the backend, for reports and benchmarks.
pub const BACKEND: &str = "aws-lc-rs (AWS-LC)";

/// Length of an uncompressed SEC 1 P-256 point: `0x04 ‖ X ‖ Y`.
pub const PUBLIC_KEY_LEN: usize = 65;
/// Length of a compressed SEC 1 P-256 point: `0x02|0x03 ‖ X`.
pub const COMPRESSED_PUBLIC_KEY_LEN: usize = 33;
/// Length of a P-256 secret scalar.
pub const SCALAR_LEN: usize = 32;
/// Length of a P1363 (`r ‖ s`) P-256 signature.
pub const P1363_SIGNATURE_LEN: usize = 64;
/// Largest DER ECDSA P-256 signature: SEQUENCE of two INTEGERs of at most 33 content bytes.
pub const MAX_DER_SIGNATURE_LEN: usize = 72;
/// Length of an ECDH P-256 shared secret (the x-coordinate, SEC 1 §3.3.1).
pub const SHARED_SECRET_LEN: usize = 32;
/// Length of the DER `SubjectPublicKeyInfo` of a P-256 key with an uncompressed point (RFC 5480).
pub const SPKI_DER_LEN: usize = 91;

/// DER prefix of a P-256 `SubjectPublicKeyInfo` (RFC 5480 §2: id-ecPublicKey, namedCurve
/// secp256r1, BIT STRING with no unused bits) before the 65-byte uncompressed point.
const SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The group order n of P-256 (FIPS 186-5 / SEC 2 §2.4.2), big-endian.
const ORDER: [u8; 32] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xBC, 0xE6, 0xFA,
    0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
];
/// floor(n / 2): a signature is low-S when `s <= HALF_ORDER`.
const HALF_ORDER: [u8; 32] = [
    0x7F, 0xFF, 0xFF, 0xFF, 0x80, 0x00, 0x00, 0x00, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xDE, 0x73, 0x7D,
    0x56, 0xD3, 0x8B, 0xCF, 0x42, 0x79, 0xDC, 0xE5, 0x61, 0x7E, 0x31, 0x92, 0xA8,
];

// ---------------------------------------------------------------------------------------------
// Operation counts (debug builds only)
// ---------------------------------------------------------------------------------------------

/// How many P-256 operations the current thread performed, so that tests can pin what a protocol
/// step costs (a redundant certificate validation or key restoration that comes back fails them).
/// Compiled only with debug assertions: release builds (benchmarks, the shipped binary) carry no
/// counter on any path.
#[cfg(debug_assertions)]
pub mod op_count {
    use std::cell::Cell;

    /// Counts per kind of operation.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Ops {
        /// ECDSA verifications (one double-scalar multiplication each).
        pub verify: u32,
        /// ECDSA signatures (one fixed-base multiplication each).
        pub sign: u32,
        /// ECDH agreements (one variable-base multiplication each).
        pub ecdh: u32,
        /// Fresh key pairs (one fixed-base multiplication each).
        pub generate: u32,
        /// Keys built from a stored scalar (one fixed-base multiplication each: AWS-LC derives the
        /// public point), including the ECDH key a key pair makes on its first agreement.
        pub from_scalar: u32,
        /// Public keys parsed and validated (point decoding and on-curve check).
        pub parse_public: u32,
    }

    thread_local! {
        static OPS: Cell<Ops> = Cell::new(Ops::default());
    }

    pub(super) fn bump(f: impl FnOnce(&mut Ops)) {
        OPS.with(|c| {
            let mut o = c.get();
            f(&mut o);
            c.set(o);
        });
    }

    /// The counts since the last call on this thread, and resets them.
    pub fn take() -> Ops {
        OPS.with(|c| c.replace(Ops::default()))
    }
}

/// Counts one operation of kind `$field` in debug builds; nothing in release builds.
macro_rules! count {
    ($field:ident) => {
        #[cfg(debug_assertions)]
        op_count::bump(|o| o.$field += 1);
    };
}

// ---------------------------------------------------------------------------------------------
// Public keys
// ---------------------------------------------------------------------------------------------

/// A validated P-256 public key: the uncompressed point, and AWS-LC's parsed forms of it, one for ECDSA
/// verification and one for ECDH, each made once and only when first needed. A key used for many
/// verifications (an issuer's, in a batch of certificates) is parsed once; a key used only for ECDH
/// (an envelope's ephemeral key) is never parsed for ECDSA; a point AWS-LC computed from a scalar of
/// ours (a fresh key's) is not parsed until it is used. The point is valid whichever way the key
/// was made: each constructor validates it, or computed it.
#[derive(Clone)]
pub struct PublicKey {
    sec1: [u8; PUBLIC_KEY_LEN],
    verifying: OnceLock<lc::ParsedPublicKey>,
    agreeing: OnceLock<agreement::ParsedPublicKey>,
}

impl PublicKey {
    /// A SEC 1 point, uncompressed (65 bytes) or compressed (33 bytes); anything else (other
    /// lengths, the 1-byte identity, hybrid `0x06`/`0x07` forms, points off the curve) is
    /// [`CryptoError::InvalidPublicKey`].
    pub fn from_sec1(sec1: &[u8]) -> Result<Self, CryptoError> {
        // Only the two forms a P-256 key takes; this also refuses the identity encoding and the
        // hybrid forms before the library sees them (AWS-LC would also try SPKI DER).
        match (sec1.first(), sec1.len()) {
            (Some(0x04), PUBLIC_KEY_LEN) => {
                let key = Self::unparsed(sec1.try_into().expect("65 bytes"));
                key.verifying()?;
                Ok(key)
            }
            (Some(0x02 | 0x03), COMPRESSED_PUBLIC_KEY_LEN) => {
                let parsed = lc::ParsedPublicKey::new(&lc::ECDSA_P256_SHA256_ASN1, sec1)
                    .map_err(|_| CryptoError::InvalidPublicKey)?;
                // AWS-LC re-encodes the key as SPKI with the uncompressed point.
                let spki = parsed.as_der().map_err(|_| CryptoError::InvalidPublicKey)?;
                let spki = spki.as_ref();
                if spki.len() != SPKI_DER_LEN || spki[..SPKI_PREFIX.len()] != SPKI_PREFIX {
                    return Err(CryptoError::InvalidPublicKey);
                }
                let mut out = [0u8; PUBLIC_KEY_LEN];
                out.copy_from_slice(&spki[SPKI_PREFIX.len()..]);
                Self::from_sec1(&out)
            }
            _ => Err(CryptoError::InvalidPublicKey),
        }
    }

    /// An uncompressed SEC 1 point that will serve for ECDH (an envelope's ephemeral key), validated
    /// by AWS-LC's ECDH parse as [`PublicKey::from_sec1`] validates it (on the curve, not the
    /// identity), so the point is decoded once, not once for each form. Only the uncompressed form
    /// (`0x04`, 65 bytes); anything else is [`CryptoError::InvalidPublicKey`].
    pub fn for_agreement(sec1: &[u8]) -> Result<Self, CryptoError> {
        let sec1: &[u8; PUBLIC_KEY_LEN] = sec1.try_into().map_err(|_| CryptoError::InvalidPublicKey)?;
        if sec1[0] != 0x04 {
            return Err(CryptoError::InvalidPublicKey);
        }
        let key = Self::unparsed(sec1);
        key.agreeing()?;
        Ok(key)
    }

    /// A point AWS-LC computed from a scalar of ours, so valid by construction: nothing to check
    /// until it is used. Every other constructor checks the point before it returns.
    fn computed(sec1: &[u8]) -> Result<Self, CryptoError> {
        match <&[u8; PUBLIC_KEY_LEN]>::try_from(sec1) {
            Ok(point @ &[0x04, ..]) => Ok(Self::unparsed(point)),
            _ => Err(CryptoError::Backend),
        }
    }

    fn unparsed(sec1: &[u8; PUBLIC_KEY_LEN]) -> Self {
        PublicKey { sec1: *sec1, verifying: OnceLock::new(), agreeing: OnceLock::new() }
    }

    /// AWS-LC's ECDSA form of the point, parsed (and checked) on first use.
    fn verifying(&self) -> Result<&lc::ParsedPublicKey, CryptoError> {
        if let Some(k) = self.verifying.get() {
            return Ok(k);
        }
        count!(parse_public);
        let k = lc::ParsedPublicKey::new(&lc::ECDSA_P256_SHA256_ASN1, &self.sec1[..])
            .map_err(|_| CryptoError::InvalidPublicKey)?;
        Ok(self.verifying.get_or_init(|| k))
    }

    /// AWS-LC's ECDH form of the point, parsed (and checked) on first use.
    fn agreeing(&self) -> Result<&agreement::ParsedPublicKey, CryptoError> {
        if let Some(k) = self.agreeing.get() {
            return Ok(k);
        }
        count!(parse_public);
        let k = agreement::ParsedPublicKey::try_from(&agreement::UnparsedPublicKey::new(
            &agreement::ECDH_P256,
            &self.sec1[..],
        ))
        .map_err(|_| CryptoError::InvalidPublicKey)?;
        Ok(self.agreeing.get_or_init(|| k))
    }

    /// The key inside a DER `SubjectPublicKeyInfo` (RFC 5480 §2): the algorithm must be
    /// `id-ecPublicKey` with the named curve `secp256r1` (explicit parameters, other curves and
    /// other algorithms are refused), the BIT STRING must have no unused bits, and no byte may
    /// follow. The structure is read with the `spki`/`der` crates, the point checked by AWS-LC.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, CryptoError> {
        use ::der::Decode;
        const ID_EC_PUBLIC_KEY: spki::ObjectIdentifier = spki::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
        const SECP256R1: spki::ObjectIdentifier = spki::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
        let info = spki::SubjectPublicKeyInfoRef::from_der(der).map_err(|_| CryptoError::InvalidPublicKey)?;
        if info.algorithm.oid != ID_EC_PUBLIC_KEY {
            return Err(CryptoError::InvalidPublicKey);
        }
        let curve = info
            .algorithm
            .parameters
            .and_then(|p| p.decode_as::<spki::ObjectIdentifier>().ok())
            .ok_or(CryptoError::InvalidPublicKey)?;
        if curve != SECP256R1 {
            return Err(CryptoError::InvalidPublicKey);
        }
        let point = info.subject_public_key.as_bytes().ok_or(CryptoError::InvalidPublicKey)?;
        Self::from_sec1(point)
    }

    /// The uncompressed SEC 1 point (65 bytes).
    pub fn sec1(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.sec1
    }

    /// The DER `SubjectPublicKeyInfo` (RFC 5480 §2, named curve, uncompressed point).
    pub fn to_spki_der(&self) -> [u8; SPKI_DER_LEN] {
        let mut out = [0u8; SPKI_DER_LEN];
        out[..SPKI_PREFIX.len()].copy_from_slice(&SPKI_PREFIX);
        out[SPKI_PREFIX.len()..].copy_from_slice(&self.sec1);
        out
    }

    /// The key identifier of RFC 5280 §4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING
    /// value (the uncompressed point), as the CA writes in SKI and AKI.
    pub fn key_identifier(&self) -> [u8; 20] {
        let d = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &self.sec1);
        let mut out = [0u8; 20];
        out.copy_from_slice(d.as_ref());
        out
    }

    /// Verify `signature` over the SHA-256 digest of `parts[0] ‖ parts[1] ‖ …`.
    pub fn verify(&self, parts: &[&[u8]], signature: &Signature) -> Result<(), CryptoError> {
        count!(verify);
        let der = signature.to_der();
        self.verifying()?.verify_digest_sig(&sha256(parts), der.as_bytes()).map_err(|_| CryptoError::BadSignature)
    }

    /// Verify a DER `ECDSA-Sig-Value` over `message`: [`CryptoError::MalformedSignature`] for
    /// anything but strict DER with `0 < r, s < n`, [`CryptoError::BadSignature`] when it does not
    /// verify.
    pub fn verify_der(&self, parts: &[&[u8]], der: &[u8]) -> Result<(), CryptoError> {
        let signature = Signature::from_der(der)?;
        count!(verify);
        // `der` passed the strict parse, so it is the canonical encoding: hand it over as is.
        self.verifying()?.verify_digest_sig(&sha256(parts), der).map_err(|_| CryptoError::BadSignature)?;
        debug_assert_eq!(signature.to_der().as_bytes(), der);
        Ok(())
    }

    /// Verify a P1363 `r ‖ s` signature over `message`; same errors as [`PublicKey::verify_der`].
    pub fn verify_p1363(&self, parts: &[&[u8]], p1363: &[u8]) -> Result<(), CryptoError> {
        self.verify(parts, &Signature::from_p1363(p1363)?)
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.sec1 == other.sec1
    }
}
impl Eq for PublicKey {}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", hex::encode(self.sec1))
    }
}

/// Length of a SHA-256 digest.
pub const DIGEST_LEN: usize = 32;

/// SHA-256 over `parts[0] ‖ parts[1] ‖ …` (FIPS 180-4): what an ECDSA P-256 signature of this crate
/// covers, computed once in process whichever device then signs it.
pub fn digest_parts(parts: &[&[u8]]) -> [u8; DIGEST_LEN] {
    let mut out = [0u8; DIGEST_LEN];
    out.copy_from_slice(sha256(parts).as_ref());
    out
}

fn sha256(parts: &[&[u8]]) -> digest::Digest {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    ctx.finish()
}

// ---------------------------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------------------------

/// An ECDSA P-256 signature `(r, s)` with `0 < r, s < n`, held as the fixed 64-byte `r ‖ s`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    rs: [u8; P1363_SIGNATURE_LEN],
}

/// A DER `ECDSA-Sig-Value` in a fixed buffer (no allocation).
#[derive(Clone, Copy)]
pub struct DerSignature {
    bytes: [u8; MAX_DER_SIGNATURE_LEN],
    len: usize,
}

impl DerSignature {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl std::fmt::Debug for DerSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DerSignature({})", hex::encode(self.as_bytes()))
    }
}

/// `0 < x < n` for a 32-byte big-endian integer.
fn in_scalar_range(x: &[u8]) -> bool {
    x.iter().any(|&b| b != 0) && x < &ORDER[..]
}

impl Signature {
    /// From strict DER (RFC 3279 §2.2.3 `ECDSA-Sig-Value`; the `ecdsa` crate's strict reader:
    /// minimal lengths and integers, no trailing bytes) with `0 < r, s < n`.
    pub fn from_der(der: &[u8]) -> Result<Self, CryptoError> {
        if der.len() > MAX_DER_SIGNATURE_LEN {
            return Err(CryptoError::MalformedSignature);
        }
        let sig = p256::ecdsa::Signature::from_der(der).map_err(|_| CryptoError::MalformedSignature)?;
        Self::from_p1363(&sig.to_bytes())
    }

    /// From IEEE P1363 `r ‖ s` (32 bytes each, big-endian) with `0 < r, s < n`.
    pub fn from_p1363(rs: &[u8]) -> Result<Self, CryptoError> {
        let rs: [u8; P1363_SIGNATURE_LEN] = rs.try_into().map_err(|_| CryptoError::MalformedSignature)?;
        if !in_scalar_range(&rs[..32]) || !in_scalar_range(&rs[32..]) {
            return Err(CryptoError::MalformedSignature);
        }
        Ok(Signature { rs })
    }

    /// `r ‖ s`, 64 bytes.
    pub fn to_p1363(&self) -> [u8; P1363_SIGNATURE_LEN] {
        self.rs
    }

    /// The DER `ECDSA-Sig-Value` (RFC 3279 §2.2.3), minimal INTEGERs.
    pub fn to_der(&self) -> DerSignature {
        let mut out = DerSignature { bytes: [0u8; MAX_DER_SIGNATURE_LEN], len: 2 };
        for half in [&self.rs[..32], &self.rs[32..]] {
            let first = half.iter().position(|&b| b != 0).unwrap_or(31);
            let digits = &half[first..];
            let pad = usize::from(digits[0] & 0x80 != 0);
            out.bytes[out.len] = 0x02;
            out.bytes[out.len + 1] = (digits.len() + pad) as u8;
            out.len += 2 + pad; // the pad byte, if any, is already 0
            out.bytes[out.len..out.len + digits.len()].copy_from_slice(digits);
            out.len += digits.len();
        }
        out.bytes[0] = 0x30;
        out.bytes[1] = (out.len - 2) as u8; // at most 70: short form
        out
    }

    /// Whether `s <= n/2` (the low-S form).
    pub fn is_low_s(&self) -> bool {
        self.rs[32..] <= HALF_ORDER[..]
    }

    /// The same signature with `s` replaced by `n - s` when `s > n/2` (both verify; ECDSA is
    /// malleable).
    pub fn normalize_s(mut self) -> Self {
        if !self.is_low_s() {
            let s = &mut self.rs[32..];
            let mut borrow = 0u16;
            for i in (0..32).rev() {
                let d = u16::from(ORDER[i]).wrapping_sub(u16::from(s[i])).wrapping_sub(borrow);
                s[i] = d as u8;
                borrow = (d >> 8) & 1;
            }
        }
        self
    }
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({})", hex::encode(self.rs))
    }
}

// ---------------------------------------------------------------------------------------------
// Key pairs
// ---------------------------------------------------------------------------------------------

/// A P-256 key pair for ECDSA signing and, on demand, ECDH. The scalar lives in AWS-LC (cleansed
/// when freed); `Debug` shows only the public key.
pub struct KeyPair {
    signing: lc::EcdsaKeyPair,
    public: PublicKey,
    /// The same scalar as an ECDH key, made on first use (most keys never do key agreement).
    agreement: OnceLock<agreement::PrivateKey>,
}

impl Clone for KeyPair {
    fn clone(&self) -> Self {
        KeyPair { signing: self.signing.clone(), public: self.public.clone(), agreement: OnceLock::new() }
    }
}

impl KeyPair {
    fn wrap(signing: lc::EcdsaKeyPair) -> Result<Self, CryptoError> {
        let public = PublicKey::computed(signing.public_key().as_ref())?;
        Ok(KeyPair { signing, public, agreement: OnceLock::new() })
    }

    /// A fresh key pair from AWS-LC's generator (seeded by the operating system).
    pub fn generate() -> Result<Self, CryptoError> {
        count!(generate);
        let signing =
            lc::EcdsaKeyPair::generate(&lc::ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|_| CryptoError::Random)?;
        Self::wrap(signing)
    }

    /// From the 32-byte big-endian secret scalar (SEC 1 §2.3.7); any other length, zero and values
    /// `>= n` are [`CryptoError::InvalidPrivateKey`].
    pub fn from_scalar(scalar: &[u8]) -> Result<Self, CryptoError> {
        if scalar.len() != SCALAR_LEN || !in_scalar_range(scalar) {
            return Err(CryptoError::InvalidPrivateKey);
        }
        count!(from_scalar);
        // RFC 5915 ECPrivateKey without the optional fields; AWS-LC derives the public point.
        let mut der = Zeroizing::new([0u8; 7 + SCALAR_LEN + 12]);
        der[..7].copy_from_slice(&[0x30, 5 + SCALAR_LEN as u8 + 12, 0x02, 0x01, 0x01, 0x04, SCALAR_LEN as u8]);
        der[7..7 + SCALAR_LEN].copy_from_slice(scalar);
        // [0] parameters: namedCurve secp256r1 (RFC 5915 §3, RFC 5480 §2.1.1.1).
        der[7 + SCALAR_LEN..]
            .copy_from_slice(&[0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]);
        let signing = lc::EcdsaKeyPair::from_private_key_der(&lc::ECDSA_P256_SHA256_FIXED_SIGNING, &der[..])
            .map_err(|_| CryptoError::InvalidPrivateKey)?;
        Self::wrap(signing)
    }

    /// The 32-byte big-endian secret scalar, in a zeroizing buffer (for the card's memory, or to
    /// be encrypted by the caller).
    pub fn to_scalar(&self) -> Result<SecretBytes, CryptoError> {
        let bin = self.signing.private_key().as_be_bytes().map_err(|_| CryptoError::InvalidPrivateKey)?;
        Ok(SecretBytes::new(bin.as_ref().to_vec()))
    }

    /// From PKCS #8 `PrivateKeyInfo` DER (RFC 5208, v1 or v2, RFC 5915 inside) of a P-256 key;
    /// anything else is [`CryptoError::InvalidPrivateKey`].
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CryptoError> {
        count!(from_scalar);
        let signing = lc::EcdsaKeyPair::from_pkcs8(&lc::ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|_| CryptoError::InvalidPrivateKey)?;
        Self::wrap(signing)
    }

    /// PKCS #8 v1 `PrivateKeyInfo` DER (RFC 5208, RFC 5915 inside), in a zeroizing buffer.
    pub fn to_pkcs8_der(&self) -> Result<SecretBytes, CryptoError> {
        let doc = self.signing.to_pkcs8v1().map_err(|_| CryptoError::InvalidPrivateKey)?;
        Ok(SecretBytes::new(doc.as_ref().to_vec()))
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// ECDSA P-256 / SHA-256 (FIPS 186-5 §6.4) over `parts[0] ‖ parts[1] ‖ …`, low-S.
    pub fn sign(&self, parts: &[&[u8]]) -> Result<Signature, CryptoError> {
        self.sign_digest(&sha256(parts))
    }

    /// ECDSA over one message (the CA's TBS bytes), low-S.
    pub fn sign_message(&self, message: &[u8]) -> Result<Signature, CryptoError> {
        self.sign_digest(&digest::digest(&digest::SHA256, message))
    }

    /// ECDSA over a SHA-256 digest the caller computed ([`digest_parts`]), low-S: the one operation a
    /// [`crate::crypto::signer::Signer`] must provide, whether the key is here or in a token.
    pub fn sign_prehashed(&self, digest: &[u8; DIGEST_LEN]) -> Result<Signature, CryptoError> {
        let d = digest::Digest::import_less_safe(digest, &digest::SHA256).map_err(|_| CryptoError::Backend)?;
        self.sign_digest(&d)
    }

    fn sign_digest(&self, digest: &digest::Digest) -> Result<Signature, CryptoError> {
        count!(sign);
        let sig = self.signing.sign_digest(digest).map_err(|_| CryptoError::Backend)?;
        Ok(Signature::from_p1363(sig.as_ref())?.normalize_s())
    }

    /// ECDH (SEC 1 §3.3.1) with `peer`: the x-coordinate of `d · Q`.
    pub fn agree(&self, peer: &PublicKey) -> Result<SharedSecret, CryptoError> {
        agree(self.agreement_key()?, peer)
    }

    /// Make the ECDH form of this key now rather than at its first [`KeyPair::agree`] (a card's key
    /// object, made once, is ready for both uses).
    pub fn prepare_agreement(&self) -> Result<(), CryptoError> {
        self.agreement_key().map(|_| ())
    }

    /// The same scalar as an ECDH key, made on first use.
    fn agreement_key(&self) -> Result<&agreement::PrivateKey, CryptoError> {
        Ok(match self.agreement.get() {
            Some(k) => k,
            None => {
                count!(from_scalar);
                // From the signing key's RFC 5915 `ECPrivateKey`, which carries the public point: AWS-LC
                // then checks `d·G` against it once instead of first deriving it (`from_private_key`
                // with the bare scalar costs a second fixed-base multiplication, ≈10 µs). The DER lives
                // in a buffer AWS-LC-RS zeroizes on drop.
                let der = self.signing.private_key().as_der().map_err(|_| CryptoError::Backend)?;
                let k = agreement::PrivateKey::from_private_key_der(&agreement::ECDH_P256, der.as_ref())
                    .map_err(|_| CryptoError::Backend)?;
                self.agreement.get_or_init(|| k)
            }
        })
    }
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair {{ public: {}, secret: <redacted> }}", hex::encode(self.public.sec1))
    }
}

// ---------------------------------------------------------------------------------------------
// ECDH
// ---------------------------------------------------------------------------------------------

/// A P-256 key used only for ECDH: an ephemeral key (ECIES, SCP11) or a static key-agreement key.
pub struct EcdhKey {
    key: agreement::PrivateKey,
    public: PublicKey,
}

impl EcdhKey {
    /// A fresh key from AWS-LC's generator.
    pub fn generate() -> Result<Self, CryptoError> {
        count!(generate);
        let key = agreement::PrivateKey::generate(&agreement::ECDH_P256).map_err(|_| CryptoError::Random)?;
        let public = key.compute_public_key().map_err(|_| CryptoError::Backend)?;
        let public = PublicKey::computed(public.as_ref())?;
        Ok(EcdhKey { key, public })
    }

    /// From the 32-byte big-endian secret scalar (tests and known-answer vectors).
    pub fn from_scalar(scalar: &[u8]) -> Result<Self, CryptoError> {
        if scalar.len() != SCALAR_LEN || !in_scalar_range(scalar) {
            return Err(CryptoError::InvalidPrivateKey);
        }
        count!(from_scalar);
        let key = agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, scalar)
            .map_err(|_| CryptoError::InvalidPrivateKey)?;
        let public = key.compute_public_key().map_err(|_| CryptoError::Backend)?;
        let public = PublicKey::computed(public.as_ref())?;
        Ok(EcdhKey { key, public })
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// ECDH (SEC 1 §3.3.1) with `peer`.
    pub fn agree(&self, peer: &PublicKey) -> Result<SharedSecret, CryptoError> {
        agree(&self.key, peer)
    }
}

impl std::fmt::Debug for EcdhKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EcdhKey {{ public: {}, secret: <redacted> }}", hex::encode(self.public.sec1))
    }
}

fn agree(key: &agreement::PrivateKey, peer: &PublicKey) -> Result<SharedSecret, CryptoError> {
    count!(ecdh);
    // AWS-LC's `agree` takes the parsed key by value; the clone shares it (a reference count).
    agreement::agree(key, peer.agreeing()?.clone(), CryptoError::InvalidPublicKey, |z| {
        let mut out = Zeroizing::new([0u8; SHARED_SECRET_LEN]);
        if z.len() != SHARED_SECRET_LEN {
            return Err(CryptoError::Backend);
        }
        out.copy_from_slice(z);
        Ok(SharedSecret(out))
    })
}

/// An ECDH shared secret (32 bytes), zeroized on drop, compared in constant time, never shown.
pub struct SharedSecret(Zeroizing<[u8; SHARED_SECRET_LEN]>);

impl SharedSecret {
    /// The raw bytes, for the KDF that needs them. Keep the borrow short.
    pub fn expose(&self) -> &[u8; SHARED_SECRET_LEN] {
        &self.0
    }
}

impl PartialEq for SharedSecret {
    fn eq(&self, other: &Self) -> bool {
        subtle::ConstantTimeEq::ct_eq(&self.0[..], &other.0[..]).into()
    }
}
impl Eq for SharedSecret {}

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedSecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    //! Cross-checks against the `p256`/`ecdsa` crates (the second implementation).

    use super::*;
    use p256::ecdsa::signature::{Signer as _, Verifier as _};
    use p256::elliptic_curve::sec1::ToSec1Point;

    fn p256_signing(k: &KeyPair) -> p256::ecdsa::SigningKey {
        p256::ecdsa::SigningKey::from_slice(k.to_scalar().unwrap().expose()).unwrap()
    }

    #[test]
    fn public_key_agrees_with_the_p256_crate() {
        for byte in [0x01u8, 0x42, 0xAB] {
            let k = KeyPair::from_scalar(&[byte; 32]).unwrap();
            let theirs = p256_signing(&k).verifying_key().as_affine().to_sec1_point(false);
            assert_eq!(&k.public_key().sec1()[..], theirs.as_bytes());
        }
        let k = KeyPair::generate().unwrap();
        let theirs = p256_signing(&k).verifying_key().as_affine().to_sec1_point(false);
        assert_eq!(&k.public_key().sec1()[..], theirs.as_bytes());
    }

    #[test]
    fn signatures_cross_verify_both_ways() {
        let k = KeyPair::generate().unwrap();
        let theirs = p256_signing(&k);
        let msg = b"keyroll cross-check";
        // AWS-LC signs, p256 verifies (DER and P1363).
        let ours = k.sign(&[b"keyroll ", b"cross-check"]).unwrap();
        assert!(ours.is_low_s());
        let sig = p256::ecdsa::Signature::from_der(ours.to_der().as_bytes()).unwrap();
        assert_eq!(sig.to_bytes().as_slice(), &ours.to_p1363()[..]);
        theirs.verifying_key().verify(msg, &sig).unwrap();
        // p256 signs, AWS-LC verifies.
        let sig: p256::ecdsa::Signature = theirs.sign(msg);
        k.public_key().verify_der(&[msg], sig.to_der().as_bytes()).unwrap();
        k.public_key().verify_p1363(&[msg], &sig.to_bytes()).unwrap();
        assert_eq!(k.public_key().verify_der(&[b"other"], sig.to_der().as_bytes()), Err(CryptoError::BadSignature));
    }

    #[test]
    fn der_encoding_and_low_s_agree_with_the_ecdsa_crate() {
        let k = KeyPair::generate().unwrap();
        for i in 0..200u32 {
            let ours = k.sign(&[&i.to_be_bytes()]).unwrap();
            let theirs = p256::ecdsa::Signature::from_slice(&ours.to_p1363()).unwrap();
            assert_eq!(ours.to_der().as_bytes(), theirs.to_der().as_bytes());
            // Flip to high-S with the p256 crate's arithmetic, normalise back with ours.
            let high = p256::ecdsa::Signature::from_scalars(theirs.r().to_bytes(), (-*theirs.s()).to_bytes()).unwrap();
            let ours_high = Signature::from_p1363(&high.to_bytes()).unwrap();
            assert!(!ours_high.is_low_s());
            assert_eq!(ours_high.normalize_s(), ours);
            assert_eq!(ours_high.to_der().as_bytes(), high.to_der().as_bytes());
            k.public_key().verify(&[&i.to_be_bytes()], &ours_high).unwrap();
        }
        // Short r and s (leading zero bytes) encode minimally.
        let mut rs = [0u8; 64];
        rs[31] = 1;
        rs[32] = 0x80;
        let s = Signature::from_p1363(&rs).unwrap();
        let theirs = p256::ecdsa::Signature::from_slice(&rs).unwrap();
        assert_eq!(s.to_der().as_bytes(), theirs.to_der().as_bytes());
        assert_eq!(Signature::from_der(s.to_der().as_bytes()).unwrap(), s);
    }

    #[test]
    fn ranges_and_encodings_are_refused() {
        assert_eq!(Signature::from_p1363(&[0u8; 64]), Err(CryptoError::MalformedSignature));
        let mut rs = [0u8; 64];
        rs[..32].copy_from_slice(&ORDER);
        rs[63] = 1;
        assert_eq!(Signature::from_p1363(&rs), Err(CryptoError::MalformedSignature));
        assert_eq!(Signature::from_p1363(&[1u8; 63]), Err(CryptoError::MalformedSignature));
        assert_eq!(Signature::from_der(&[0x30, 0x00]), Err(CryptoError::MalformedSignature));
        assert_eq!(KeyPair::from_scalar(&[0u8; 32]).unwrap_err(), CryptoError::InvalidPrivateKey);
        assert_eq!(KeyPair::from_scalar(&ORDER).unwrap_err(), CryptoError::InvalidPrivateKey);
        assert_eq!(KeyPair::from_scalar(&[1u8; 31]).unwrap_err(), CryptoError::InvalidPrivateKey);
        assert_eq!(EcdhKey::from_scalar(&[0xFF; 32]).unwrap_err(), CryptoError::InvalidPrivateKey);
        let mut n_minus_1 = ORDER;
        n_minus_1[31] -= 1;
        KeyPair::from_scalar(&n_minus_1).unwrap();
    }

    #[test]
    fn ecdh_agrees_with_the_p256_crate() {
        let a = KeyPair::generate().unwrap();
        let b = EcdhKey::generate().unwrap();
        let ab = a.agree(b.public_key()).unwrap();
        assert_eq!(ab, b.agree(a.public_key()).unwrap());
        let secret = p256::NonZeroScalar::try_from(a.to_scalar().unwrap().expose()).unwrap();
        let peer = p256::PublicKey::from_sec1_bytes(b.public_key().sec1()).unwrap();
        let theirs = p256::elliptic_curve::ecdh::diffie_hellman(secret, peer.as_affine());
        assert_eq!(&ab.expose()[..], theirs.raw_secret_bytes().as_slice());
        // The lazily made agreement key survives a clone.
        assert_eq!(a.clone().agree(b.public_key()).unwrap(), ab);
    }

    #[test]
    fn pkcs8_interoperates_with_the_p256_crate() {
        use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
        let k = KeyPair::generate().unwrap();
        let ours = k.to_pkcs8_der().unwrap();
        let theirs = p256::ecdsa::SigningKey::from_pkcs8_der(ours.expose()).unwrap();
        assert_eq!(theirs.verifying_key().as_affine().to_sec1_point(false).as_bytes(), &k.public_key().sec1()[..]);
        // A key written by the p256 crate (what databases before this backend hold) reads back.
        let old = p256::ecdsa::SigningKey::from_slice(&[0x5A; 32]).unwrap().to_pkcs8_der().unwrap();
        let back = KeyPair::from_pkcs8_der(old.as_bytes()).unwrap();
        assert_eq!(back.to_scalar().unwrap().expose(), &[0x5A; 32]);
        assert_eq!(KeyPair::from_pkcs8_der(b"not a key").unwrap_err(), CryptoError::InvalidPrivateKey);
    }

    #[test]
    fn spki_and_compressed_points() {
        use p256::pkcs8::EncodePublicKey;
        let k = KeyPair::generate().unwrap();
        let theirs = p256::PublicKey::from_sec1_bytes(k.public_key().sec1()).unwrap();
        assert_eq!(&k.public_key().to_spki_der()[..], theirs.to_public_key_der().unwrap().as_bytes());
        assert_eq!(PublicKey::from_spki_der(&k.public_key().to_spki_der()).unwrap(), *k.public_key());
        let compressed = theirs.as_affine().to_sec1_point(true);
        assert_eq!(PublicKey::from_sec1(compressed.as_bytes()).unwrap(), *k.public_key());
        let mut hybrid = *k.public_key().sec1();
        hybrid[0] = 0x06 | (hybrid[64] & 1);
        assert_eq!(PublicKey::from_sec1(&hybrid).unwrap_err(), CryptoError::InvalidPublicKey);
        assert_eq!(PublicKey::from_sec1(&[0x00]).unwrap_err(), CryptoError::InvalidPublicKey);
        let mut off = *k.public_key().sec1();
        off[64] ^= 1;
        assert_eq!(PublicKey::from_sec1(&off).unwrap_err(), CryptoError::InvalidPublicKey);
        // SPKI DER itself is not a SEC 1 point here, though AWS-LC alone would take it.
        assert_eq!(PublicKey::from_sec1(&k.public_key().to_spki_der()).unwrap_err(), CryptoError::InvalidPublicKey);
    }

    /// A key made for ECDH only is checked by AWS-LC's ECDH parse: it refuses what `from_sec1` refuses
    /// among 65-byte points, takes only the uncompressed form, and agrees as the fully parsed key does.
    /// A fresh key's own point, never parsed where it is made, still verifies and agrees.
    #[test]
    fn a_key_for_agreement_only_is_checked_as_strictly() {
        let k = KeyPair::generate().unwrap();
        let e = EcdhKey::generate().unwrap();
        let mut off = *k.public_key().sec1();
        off[64] ^= 1;
        let mut hybrid = *k.public_key().sec1();
        hybrid[0] = 0x06 | (hybrid[64] & 1);
        let mut x_too_big = [0xFFu8; PUBLIC_KEY_LEN];
        x_too_big[0] = 0x04;
        let zeros = {
            let mut z = [0u8; PUBLIC_KEY_LEN];
            z[0] = 0x04;
            z
        };
        for bad in [&off[..], &hybrid[..], &x_too_big[..], &zeros[..], &k.public_key().sec1()[..64], &[0x04][..]] {
            assert_eq!(
                PublicKey::for_agreement(bad).unwrap_err(),
                CryptoError::InvalidPublicKey,
                "{}",
                hex::encode(bad)
            );
            assert!(PublicKey::from_sec1(bad).is_err());
        }
        let theirs = p256::PublicKey::from_sec1_bytes(k.public_key().sec1()).unwrap();
        let compressed = theirs.as_affine().to_sec1_point(true);
        assert_eq!(PublicKey::for_agreement(compressed.as_bytes()).unwrap_err(), CryptoError::InvalidPublicKey);
        let only = PublicKey::for_agreement(k.public_key().sec1()).unwrap();
        assert_eq!(only, *k.public_key());
        assert_eq!(e.agree(&only).unwrap(), e.agree(&PublicKey::from_sec1(k.public_key().sec1()).unwrap()).unwrap());
        // Used for a verification after all, it is parsed then.
        let sig = k.sign(&[b"m"]).unwrap();
        only.verify(&[b"m"], &sig).unwrap();
        k.public_key().verify(&[b"m"], &sig).unwrap();
        assert_eq!(k.agree(e.public_key()).unwrap(), e.agree(k.public_key()).unwrap());
    }

    #[test]
    fn debug_shows_no_secret() {
        let k = KeyPair::from_scalar(&[0xAB; 32]).unwrap();
        let shown = format!("{k:?}");
        assert!(shown.contains("redacted") && !shown.contains(&"ab".repeat(8)), "{shown}");
        let e = EcdhKey::from_scalar(&[0xCD; 32]).unwrap();
        assert!(!format!("{e:?}").contains(&"cd".repeat(8)));
        let z = k.agree(e.public_key()).unwrap();
        assert_eq!(format!("{z:?}"), "SharedSecret(<redacted>)");
    }
}
