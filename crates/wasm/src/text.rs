//! Numbers in messages without `core::fmt`, which would add kilobytes to the wasm.

/// `n` in decimal.
pub(crate) fn decimal(mut n: u64) -> String {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    digits[at..].iter().map(|&d| d as char).collect()
}

#[cfg(test)]
mod tests {
    use super::decimal;

    #[test]
    fn writes_decimal() {
        assert_eq!(decimal(0), "0");
        assert_eq!(decimal(7), "7");
        assert_eq!(decimal(1001), "1001");
        assert_eq!(decimal(u64::MAX), u64::MAX.to_string());
    }
}
