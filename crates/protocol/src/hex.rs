//! Fixed-width, zero-padded hexadecimal numbers.
//!
//! Every number on the gotalk wire is ASCII hex of a fixed width: 3 digits for name lengths,
//! 4 for heartbeat load, 8 for sizes, waits, times and codes. Peers write lowercase; a reader
//! must accept either case.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Writes `value` as `out.len()` lowercase hex digits, most significant first.
///
/// Digits above the width are dropped, so callers pass values that fit.
pub fn write_hex(out: &mut [u8], mut value: u32) {
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

/// Parses hex digits of either case; `None` for an empty input, a non-hex byte, or more than
/// eight digits.
pub fn parse_hex(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let mut value: u32 = 0;
    for &d in digits {
        let nibble = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return None,
        };
        value = (value << 4) | u32::from(nibble);
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_lowercase_zero_padded() {
        let mut out = [0u8; 8];
        write_hex(&mut out, 0x1388);
        assert_eq!(&out, b"00001388");
        let mut out = [0u8; 3];
        write_hex(&mut out, 0xabc);
        assert_eq!(&out, b"abc");
    }

    #[test]
    fn parses_either_case() {
        assert_eq!(parse_hex(b"0000002e"), Some(0x2e));
        assert_eq!(parse_hex(b"0000002E"), Some(0x2e));
        assert_eq!(parse_hex(b"ffffffff"), Some(u32::MAX));
        assert_eq!(parse_hex(b"FfFfFfFf"), Some(u32::MAX));
    }

    #[test]
    fn rejects_non_hex() {
        assert_eq!(parse_hex(b"00g0"), None);
        assert_eq!(parse_hex(b" 001"), None);
        assert_eq!(parse_hex(b"+001"), None);
        assert_eq!(parse_hex(b""), None);
        assert_eq!(parse_hex(b"123456789"), None);
    }
}
