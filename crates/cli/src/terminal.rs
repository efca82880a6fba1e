//! What the commands print from a peer, made safe for the operator's terminal.
//!
//! A peer's bytes reach the terminal through `listen`, `call` and error messages. Written raw,
//! control characters are commands to the terminal, not text: ESC sequences retitle the window,
//! clear the screen, or write the clipboard (OSC 52); a carriage return overwrites the line
//! already printed; bidi overrides show text in another order than it is. So everything that
//! is not printable is escaped unless the user asks for the bytes with `--raw`.
//!
//! The escapes are JSON's (`\r`, `\n`, `\u001b`, `\u202e`), so a JSON result whose strings held
//! such characters prints as JSON that decodes to the same value: `gotalk call … | jq` keeps
//! working. A backslash already in the text is left as it is: the escaped form is for reading
//! and JSON, `--raw` is for exact bytes.

use std::borrow::Cow;

/// Which line breaks a peer's text may keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lines {
    /// `\n` stays a line break: the text is printed as a block of its own (`call`'s result).
    Keep,
    /// `\n` is escaped too, so one record is one line and a peer cannot forge the next
    /// (`listen`, error messages).
    Escape,
}

/// True for what a terminal must not get raw: C0 controls but tab (and `\n`, when `lines`
/// keeps it), DEL, C1 controls (U+0080 to U+009F: U+009B is a CSI on its own), and the bidi
/// embeddings, overrides and isolates (U+202A to U+202E, U+2066 to U+2069).
fn must_escape(c: char, lines: Lines) -> bool {
    match c {
        '\t' => false,
        '\n' => lines == Lines::Escape,
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => true,
        c => c.is_control(),
    }
}

/// `text` with everything a terminal would act on escaped; borrowed when there is nothing to
/// escape.
pub(crate) fn escape(text: &str, lines: Lines) -> Cow<'_, str> {
    if !text.chars().any(|c| must_escape(c, lines)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if must_escape(c, lines) {
            match c {
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                // Everything escaped is in the Basic Multilingual Plane: four digits suffice.
                c => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A peer's bytes as text for the terminal: invalid UTF-8 becomes U+FFFD, then [`escape`].
pub(crate) fn escape_bytes(bytes: &[u8], lines: Lines) -> String {
    escape(&String::from_utf8_lossy(bytes), lines).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_text_is_borrowed_unchanged() {
        for text in ["", "hello", "{\"a\":\"b\\\\c\"}", "tab\there", "é 😀 中文 \u{a0}\u{200b}"]
        {
            assert!(matches!(escape(text, Lines::Escape), Cow::Borrowed(t) if t == text), "{text}");
        }
        assert!(matches!(escape("a\nb", Lines::Keep), Cow::Borrowed("a\nb")));
    }

    #[test]
    fn terminal_commands_are_escaped() {
        for (raw, escaped) in [
            ("\u{1b}]0;pwned\u{7}", "\\u001b]0;pwned\\u0007"),
            ("\u{1b}[2J\u{1b}[H", "\\u001b[2J\\u001b[H"),
            ("\u{1b}]52;c;cm0gLXJmIH4=\u{1b}\\", "\\u001b]52;c;cm0gLXJmIH4=\\u001b\\"),
            ("ok\rFAKE", "ok\\rFAKE"),
            ("nul\0del\u{7f}bs\u{8}", "nul\\u0000del\\u007fbs\\b"),
            (
                "c1 csi \u{9b}2J nel \u{85} \u{80}\u{9f}",
                "c1 csi \\u009b2J nel \\u0085 \\u0080\\u009f",
            ),
            ("\u{202e}txt.exe\u{202c}", "\\u202etxt.exe\\u202c"),
            ("\u{202a}\u{202b}\u{202d}", "\\u202a\\u202b\\u202d"),
            ("\u{2066}\u{2067}\u{2068}\u{2069}", "\\u2066\\u2067\\u2068\\u2069"),
            ("form\u{c}feed \u{1f}", "form\\ffeed \\u001f"),
        ] {
            assert_eq!(escape(raw, Lines::Keep), escaped, "{raw:?}");
            assert_eq!(escape(raw, Lines::Escape), escaped, "{raw:?}");
        }
    }

    #[test]
    fn newlines_are_kept_only_when_asked() {
        assert_eq!(escape("one\ntwo\r\n", Lines::Keep), "one\ntwo\\r\n");
        assert_eq!(escape("one\ntwo\r\n", Lines::Escape), "one\\ntwo\\r\\n");
    }

    #[test]
    fn the_neighbours_of_the_escaped_ranges_are_printed() {
        for c in ['\u{20}', '\u{7e}', '\u{a0}', '\u{2029}', '\u{202f}', '\u{2065}', '\u{206a}'] {
            let text = c.to_string();
            assert_eq!(escape(&text, Lines::Escape), text, "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn a_json_result_stays_json_with_the_same_value() {
        let value = serde_json::json!({
            "title": "\u{1b}]0;pwned\u{7}",
            "c1": "\u{9b}31m\u{85}",
            "bidi": ["\u{202e}gnp.exe", "\u{2066}x\u{2069}"],
            "del": "\u{7f}\r\n\t\u{8}\u{c}",
        });
        // serde_json leaves DEL, C1 and bidi controls raw in strings; they are valid JSON.
        // Pretty JSON keeps its line breaks only where they are kept.
        let compact = serde_json::to_string(&value).unwrap();
        let pretty = serde_json::to_string_pretty(&value).unwrap();
        assert!(compact.contains('\u{9b}') && compact.contains('\u{202e}'));
        for (text, lines) in
            [(&compact, Lines::Escape), (&compact, Lines::Keep), (&pretty, Lines::Keep)]
        {
            let escaped = escape(text, lines);
            assert!(!escaped.contains(|c: char| must_escape(c, lines)), "{escaped}");
            let back: serde_json::Value = serde_json::from_str(&escaped).unwrap();
            assert_eq!(back, value);
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_become_replacement_characters() {
        assert_eq!(escape_bytes(b"a\xff\x1b[31mb", Lines::Escape), "a\u{fffd}\\u001b[31mb");
        // A C1 control in UTF-8 (C2 9B) is escaped; the lone byte 9B is not UTF-8 at all.
        assert_eq!(escape_bytes(b"\xc2\x9b\x9b", Lines::Escape), "\\u009b\u{fffd}");
    }
}
