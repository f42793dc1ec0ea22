//! Pure bytes <-> types for every on-disk structure, exactly as `docs/format.md` specifies.
//! No I/O happens here, so every decoder can be fuzzed and golden-tested in isolation.
//! Decoders never panic on any input: they return `Err(FormatError)`.

pub mod catalog;
pub mod manifest;
pub mod root;
pub mod segment;
pub mod tier1;

/// The format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;

/// CRC-32C (Castagnoli).
#[inline]
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc_fast::crc32_iscsi(bytes)
}

/// CRC-32C over two byte strings as if concatenated.
pub fn crc32c_pair(first: &[u8], second: &[u8]) -> u32 {
    let mut digest = Crc32cDigest::new();
    digest.update(first);
    digest.update(second);
    digest.finish()
}

/// CRC-32C of bytes that arrive in pieces: `finish` gives what [`crc32c`] gives for the pieces
/// concatenated (a download checks an object as it streams in).
pub struct Crc32cDigest(crc_fast::Digest);

impl Crc32cDigest {
    pub fn new() -> Self {
        Crc32cDigest(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi))
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(&self) -> u32 {
        self.0.finalize() as u32
    }
}

impl std::fmt::Debug for Crc32cDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Crc32cDigest").field(&self.finish()).finish()
    }
}

impl Default for Crc32cDigest {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a decoder refused its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// Magic bytes do not match: not this kind of structure.
    BadMagic,
    /// Written by a newer format version.
    UnsupportedVersion(u16),
    /// Checksum mismatch.
    Checksum { stored: u32, computed: u32 },
    /// Input shorter than the structure.
    Truncated { needed: usize, available: usize },
    /// A field holds a value the format forbids.
    Invalid(String),
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormatError::BadMagic => write!(f, "bad magic"),
            FormatError::UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
            FormatError::Checksum { stored, computed } => {
                write!(
                    f,
                    "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
                )
            }
            FormatError::Truncated { needed, available } => {
                write!(f, "truncated: need {needed} bytes, have {available}")
            }
            FormatError::Invalid(what) => write!(f, "invalid field: {what}"),
        }
    }
}

pub(crate) type FormatResult<T> = Result<T, FormatError>;

/// Little-endian cursor over a byte slice; every read is bounds-checked.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, pos: 0 }
    }

    pub(crate) fn take(&mut self, n: usize) -> FormatResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(FormatError::Truncated {
                needed: self.pos.saturating_add(n),
                available: self.bytes.len(),
            })?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> FormatResult<u8> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> FormatResult<u16> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    pub(crate) fn u32(&mut self) -> FormatResult<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub(crate) fn u64(&mut self) -> FormatResult<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub(crate) fn u128(&mut self) -> FormatResult<u128> {
        Ok(u128::from_le_bytes(
            self.take(16)?.try_into().expect("16 bytes"),
        ))
    }
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
}

/// Read a little-endian u32 at `at` (caller guarantees bounds).
#[inline]
pub(crate) fn le_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Read a little-endian u64 at `at` (caller guarantees bounds).
#[inline]
pub(crate) fn le_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Check magic, version and the trailing CRC of a fixed-size structure.
pub(crate) fn check_fixed(bytes: &[u8], len: usize, magic: &[u8; 8]) -> FormatResult<()> {
    if bytes.len() < len {
        return Err(FormatError::Truncated {
            needed: len,
            available: bytes.len(),
        });
    }
    if &bytes[..8] != magic {
        return Err(FormatError::BadMagic);
    }
    let stored = le_u32(bytes, len - 4);
    let computed = crc32c(&bytes[..len - 4]);
    if stored != computed {
        return Err(FormatError::Checksum { stored, computed });
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version > FORMAT_VERSION || version == 0 {
        return Err(FormatError::UnsupportedVersion(version));
    }
    Ok(())
}

/// Seal a fixed-size structure: write its CRC over all bytes but the last four.
pub(crate) fn seal_fixed(bytes: &mut [u8]) {
    let len = bytes.len();
    let crc = crc32c(&bytes[..len - 4]);
    bytes[len - 4..].copy_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32c_check_value() {
        assert_eq!(super::crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(super::crc32c_pair(b"1234", b"56789"), 0xE306_9283);
    }

    #[test]
    fn crc32c_in_pieces_is_crc32c_of_the_whole() {
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 251) as u8).collect();
        for piece in [1, 7, 8, 1000, 4096, 10_000] {
            let mut digest = super::Crc32cDigest::new();
            for chunk in bytes.chunks(piece) {
                digest.update(chunk);
            }
            assert_eq!(digest.finish(), super::crc32c(&bytes), "pieces of {piece}");
        }
        assert_eq!(super::Crc32cDigest::new().finish(), super::crc32c(b""));
    }
}
