//! The text of an ErrorResult, with an optional error code in front.
//!
//! An ErrorResult carries text, and gotalk.js and Go show it as is. A code lets a program
//! act on the error (`not_found`, `unauthorized`) while a person still reads the text, so a
//! code travels inside the text, in front:
//!
//! ```text
//! [not_found] no such room
//! ```
//!
//! The exact format: `[`, the code, `]`, then either the end of the text or one space and the
//! message (which is any text, brackets and newlines included). A code is 1 to
//! [`MAX_CODE_LEN`] bytes of lowercase ASCII letters, digits, `_`, `.` and `-`, starting with a
//! letter. Text of any other shape has no code: all of it is the message. So every text reads
//! one way, and what [`write()`] makes [`split()`] reads back.
//!
//! Why brackets rather than `not_found: …`: Go's own errors begin with a lowercase word and a
//! colon (`json: cannot unmarshal …`, `open x: no such file`), so a Go peer's plain error
//! would read as coded. No error text of Go gotalk, gotalk.js or this project begins with `[`.
//!
//! ```
//! use gotalk_protocol::error_text::{split, write};
//!
//! let text = write("not_found", "no such room");
//! assert_eq!(text, "[not_found] no such room");
//! assert_eq!(split(&text), (Some("not_found"), "no such room"));
//! // A Go peer's error has no code.
//! assert_eq!(split("json: cannot unmarshal"), (None, "json: cannot unmarshal"));
//! ```

/// The longest code, in bytes.
pub const MAX_CODE_LEN: usize = 64;

/// Whether `code` may be sent as an error code: 1 to [`MAX_CODE_LEN`] bytes of `a`–`z`,
/// `0`–`9`, `_`, `.` and `-`, starting with a letter.
pub fn is_code(code: &str) -> bool {
    let bytes = code.as_bytes();
    matches!(bytes.first(), Some(b'a'..=b'z'))
        && bytes.len() <= MAX_CODE_LEN
        && bytes.iter().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'))
}

/// The text of an ErrorResult with `code` in front of `message`. `code` must pass
/// [`is_code`], or the text will not read back as coded.
pub fn write(code: &str, message: &str) -> String {
    if message.is_empty() {
        return format!("[{code}]");
    }
    format!("[{code}] {message}")
}

/// An ErrorResult's text as its code, if it has one, and its message.
pub fn split(text: &str) -> (Option<&str>, &str) {
    let Some(rest) = text.strip_prefix('[') else { return (None, text) };
    // No indexing: the browser client runs this, and a slice that can panic brings the
    // formatting of its panic message into the wasm (kilobytes).
    let Some((code, after)) = rest.split_once(']') else { return (None, text) };
    if !is_code(code) {
        return (None, text);
    }
    match after.strip_prefix(' ') {
        Some(message) => (Some(code), message),
        None if after.is_empty() => (Some(code), after),
        None => (None, text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for (code, message) in [
            ("not_found", "no such room"),
            ("a", ""),
            ("rate.limit-2", "[x] y: z\nw"),
            ("internal", "internal error (ref 00ff)"),
        ] {
            assert_eq!(split(&write(code, message)), (Some(code), message));
        }
        let longest = "a".repeat(MAX_CODE_LEN);
        assert_eq!(split(&write(&longest, "m")), (Some(longest.as_str()), "m"));
    }

    #[test]
    fn other_shapes_have_no_code() {
        let too_long = format!("[{}] m", "a".repeat(MAX_CODE_LEN + 1));
        for text in [
            "",
            "intentional failure",
            "json: cannot unmarshal",
            "[] empty",
            "[Not_found] capital",
            "[1st] digit first",
            "[not found] space",
            "[not_found]no space",
            "[not_found",
            "[né] accent",
            "unknown operation \"[x] y\"",
            too_long.as_str(),
        ] {
            assert_eq!(split(text), (None, text), "{text:?}");
        }
    }

    #[test]
    fn codes() {
        assert!(is_code("not_found"));
        assert!(!is_code(""));
        assert!(!is_code("-x"));
        assert!(!is_code("x]"));
    }
}
