//! `decode_wal_record` over a whole WAL body, the way the manifest replay walks it: never
//! panics; every record it returns re-encodes to exactly the bytes it consumed, it always makes
//! progress, and a valid record cut short anywhere reads as torn (or the end), never as another
//! edit.
#![no_main]

use aof2::format::manifest::{WalRead, decode_wal_record, encode_wal_record};
use aof2_fuzz::fix_wal_records;
use libfuzzer_sys::fuzz_target;

fn walk(bytes: &[u8]) {
    let mut pos = 0usize;
    while pos <= bytes.len() {
        match decode_wal_record(&bytes[pos..]) {
            Ok(WalRead::Edit(edit, used)) => {
                assert!(
                    used > 0 && pos + used <= bytes.len(),
                    "record of {used} bytes"
                );
                let record = encode_wal_record(&edit);
                assert_eq!(&record[..], &bytes[pos..pos + used], "{edit:?}");
                // Cut anywhere: torn or the end, never an edit.
                for cut in [0, 1, 4, 7, 8, used / 2, used - 1] {
                    let r = decode_wal_record(&record[..cut.min(used - 1)]);
                    assert!(
                        matches!(r, Ok(WalRead::Torn) | Ok(WalRead::End)),
                        "cut at {cut} of {used}: {r:?}"
                    );
                }
                pos += used;
            }
            Ok(WalRead::End) => {
                assert_eq!(pos, bytes.len(), "End before the end of the bytes");
                break;
            }
            Ok(WalRead::Torn) | Err(_) => break,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    walk(data);
    let mut fixed = data.to_vec();
    fix_wal_records(&mut fixed);
    walk(&fixed);
});
