//! Randomness from the operating system (challenges, nonces, keys).

use super::CryptoError;

/// `N` random bytes from the operating system's generator.
pub fn bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|_| CryptoError::Random)?;
    Ok(b)
}

/// A random `u64`.
pub fn u64() -> Result<u64, CryptoError> {
    getrandom::u64().map_err(|_| CryptoError::Random)
}

/// Fill `buf` from the operating system's generator (one call for a whole batch).
pub fn fill(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::fill(buf).map_err(|_| CryptoError::Random)
}
