//! Assets: the native stake asset and the assets any key issues.
//!
//! An asset is fungible (amounts with a precision) or a class of unique
//! items (each item id exists once, ever). Its id is fixed when it is issued
//! and derived from the issuing transaction's first input, which can be
//! spent only once, so no two issues ever produce the same id.

use crate::identity::PeerKey;
use crate::ledger::output::OutputId;
use proofs::{Domain, Hash, Hasher};
use serde::{Deserialize, Serialize};

/// Domain of issued asset ids.
pub const ASSET_ID_DOMAIN: Domain = Domain::new("pos/ledger/asset-id/v1");

/// Longest asset name, in bytes.
pub const MAX_ASSET_NAME: usize = 32;
/// Largest precision (decimal places) of a fungible asset.
pub const MAX_PRECISION: u8 = 24;

/// An asset's id: all zeros for the native asset, a hash otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AssetId(pub Hash);

impl AssetId {
    pub const NATIVE: AssetId = AssetId(Hash::ZERO);

    /// The id of the asset issued by action `action` of the transaction
    /// whose first input is `first_input`.
    pub fn issued(first_input: &OutputId, action: u32) -> AssetId {
        let mut h = Hasher::new(ASSET_ID_DOMAIN);
        h.update(&first_input.0).update(&action.to_le_bytes());
        AssetId(h.finalize())
    }

    pub fn is_native(&self) -> bool {
        *self == AssetId::NATIVE
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AssetClass {
    /// Amounts in base units; `precision` decimal places for display.
    Fungible { precision: u8 },
    /// Unique items named by 32-byte ids (a ticket, an invoice hash).
    Unique,
}

/// What an issue fixes forever about an asset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetDef {
    pub name: String,
    pub class: AssetClass,
    /// The key that signs mints.
    pub issuer: PeerKey,
    /// Whether the issuer may mint after the issuing transaction. A fixed
    /// supply is whatever the issuing transaction minted.
    pub mintable: bool,
}

/// Why a name or definition is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name of {0} bytes exceeds {1}")]
    TooLong(usize, usize),
    #[error("name has a character outside the allowed set")]
    BadChar,
    #[error("name must not start or end with a separator")]
    BadEdge,
    #[error("precision {0} exceeds {MAX_PRECISION}")]
    Precision(u8),
}

/// Asset names: 1..=32 bytes of ASCII letters, digits, `-`, `_` and `.`,
/// starting and ending with a letter or digit. Names are labels, not ids:
/// two assets may share one; wallets show the id's prefix beside it.
pub fn check_asset_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_ASSET_NAME {
        return Err(NameError::TooLong(name.len(), MAX_ASSET_NAME));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(NameError::BadChar);
    }
    let edge = |b: u8| b.is_ascii_alphanumeric();
    if !edge(name.as_bytes()[0]) || !edge(name.as_bytes()[name.len() - 1]) {
        return Err(NameError::BadEdge);
    }
    Ok(())
}

impl AssetDef {
    pub fn check(&self) -> Result<(), NameError> {
        check_asset_name(&self.name)?;
        if let AssetClass::Fungible { precision } = self.class {
            if precision > MAX_PRECISION {
                return Err(NameError::Precision(precision));
            }
        }
        Ok(())
    }
}

/// An asset's current state: its definition and supply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetState {
    pub def: AssetDef,
    /// Base units (fungible) or live items (unique) in existence.
    pub supply: u128,
    /// Height of the issuing transaction.
    pub issued_at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_asset_name("USD").is_ok());
        assert!(check_asset_name("gold.bar-2_x").is_ok());
        assert_eq!(check_asset_name(""), Err(NameError::Empty));
        assert_eq!(check_asset_name("-a"), Err(NameError::BadEdge));
        assert_eq!(check_asset_name("a b"), Err(NameError::BadChar));
        assert_eq!(check_asset_name("é"), Err(NameError::BadChar));
        assert!(check_asset_name(&"a".repeat(33)).is_err());
    }

    #[test]
    fn issued_ids_differ_by_input_and_action() {
        let a = AssetId::issued(&Hash([1; 32]), 0);
        assert_ne!(a, AssetId::issued(&Hash([1; 32]), 1));
        assert_ne!(a, AssetId::issued(&Hash([2; 32]), 0));
        assert!(!a.is_native());
    }
}
