//! The root file `aof2.root` (64 bytes): identifies a directory as an aof2 root.

use super::{FORMAT_VERSION, FormatResult, check_fixed, le_u64, seal_fixed};

pub const ROOT_MAGIC: &[u8; 8] = b"AOF2ROOT";
pub const ROOT_FILE_BYTES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootFile {
    pub root_id: u128,
    pub created_ms: u64,
}

impl RootFile {
    pub fn encode(&self) -> [u8; ROOT_FILE_BYTES] {
        let mut b = [0u8; ROOT_FILE_BYTES];
        b[..8].copy_from_slice(ROOT_MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[16..32].copy_from_slice(&self.root_id.to_le_bytes());
        b[32..40].copy_from_slice(&self.created_ms.to_le_bytes());
        seal_fixed(&mut b);
        b
    }

    pub fn decode(bytes: &[u8]) -> FormatResult<Self> {
        check_fixed(bytes, ROOT_FILE_BYTES, ROOT_MAGIC)?;
        Ok(RootFile {
            root_id: u128::from_le_bytes(bytes[16..32].try_into().expect("16 bytes")),
            created_ms: le_u64(bytes, 32),
        })
    }
}
