//! What a chat name may be, and when two names are the same.
//!
//! A name is taken in NFKC, so fullwidth `ａｌｉｃｅ` and ligatures read as the letters they
//! show, trimmed, with runs of spaces made one. It is refused when it holds a character a
//! reader cannot see or that changes how the text around it is shown: controls, bidirectional
//! controls (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F, U+061C), format characters
//! (general category Cf: zero-width spaces and joiners, U+2060–U+2064, U+FEFF, U+00AD, tag
//! characters), variation selectors and other invisible marks and fillers, private-use and
//! unassigned code points, and separators other than the space. A name that mixes scripts
//! (a Cyrillic `а` among Latin letters) is refused too, except Latin beside the Chinese,
//! Japanese and Korean scripts, which are written together.
//!
//! Two names are the same when their keys are: NFKC of the name upper-cased then lower-cased,
//! a case folding that also makes `ß` and `ss`, `ς` and `σ` one.
//!
//! Not caught: names written wholly in another script that look alike (an all-Cyrillic `асе`
//! beside Latin `ace`) and look-alikes within one script (`I` and `l`). Telling those apart
//! needs Unicode's confusables data, and in this chat a name is a label, not an identity: the
//! member list carries each member's connection id and relay id, and direct messages go to the
//! relay id, never to a name.

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};
use unicode_script::{Script, ScriptExtension, UnicodeScript};

/// A name as kept and shown, and the key it is compared by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Name {
    pub(crate) shown: String,
    pub(crate) key: String,
}

/// Why a name was refused. Every text begins with `name`, so a page can tell a refused name
/// from a refused room.
pub(crate) fn refusal(why: impl std::fmt::Display) -> String {
    format!("name {why}")
}

/// Normalises `raw` and checks it against the rules above, with at most `max_chars`
/// characters once normalised.
pub(crate) fn normalise(raw: &str, max_chars: usize) -> Result<Name, String> {
    // NFKC may grow a character up to 18 times; far past that the input is not a name, and
    // normalising it would only cost time.
    if raw.len() > max_chars.saturating_mul(72).max(1024) {
        return Err(too_long(max_chars, raw.chars().count()));
    }
    let mut shown = String::with_capacity(raw.len());
    for word in raw.nfkc().collect::<String>().split(' ').filter(|w| !w.is_empty()) {
        if !shown.is_empty() {
            shown.push(' ');
        }
        shown.push_str(word);
    }
    let chars = shown.chars().count();
    if chars == 0 {
        return Err(refusal("cannot be empty"));
    }
    if chars > max_chars {
        return Err(too_long(max_chars, chars));
    }
    if let Some((c, what)) = shown.chars().find_map(|c| refused(c).map(|what| (c, what))) {
        return Err(refusal(format_args!("cannot hold U+{:04X} ({what})", c as u32)));
    }
    if shown
        .chars()
        .next()
        .is_some_and(|c| c.general_category_group() == GeneralCategoryGroup::Mark)
    {
        return Err(refusal("cannot begin with a combining mark"));
    }
    if let Some(scripts) = mixed_scripts(&shown) {
        return Err(refusal(format_args!(
            "{shown:?} mixes scripts ({}): write it in one",
            scripts.join(", ")
        )));
    }
    Ok(Name { key: key(&shown), shown })
}

/// The key a normalised name is compared by. Kept apart so a name another instance of a
/// cluster took is compared as if taken here.
pub(crate) fn key(shown: &str) -> String {
    shown.to_uppercase().to_lowercase().nfkc().collect()
}

fn too_long(max: usize, chars: usize) -> String {
    refusal(format_args!("is at most {max} characters; this one has {chars}"))
}

/// Why `c` may not be in a name, if it may not.
fn refused(c: char) -> Option<&'static str> {
    match c {
        '\u{202A}'..='\u{202E}'
        | '\u{2066}'..='\u{2069}'
        | '\u{200E}'
        | '\u{200F}'
        | '\u{061C}' => return Some("a bidirectional control"),
        // Marks and letters that show nothing: the combining grapheme joiner, variation
        // selectors, Hangul fillers, the blank Braille pattern.
        '\u{034F}'
        | '\u{180B}'..='\u{180F}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{E0100}'..='\u{E01EF}'
        | '\u{115F}'
        | '\u{1160}'
        | '\u{3164}'
        | '\u{FFA0}'
        | '\u{2800}' => return Some("an invisible character"),
        ' ' => return None,
        _ => {}
    }
    match c.general_category() {
        GeneralCategory::Control => Some("a control character"),
        GeneralCategory::Format => Some("an invisible or formatting character"),
        GeneralCategory::PrivateUse => Some("a private-use character"),
        GeneralCategory::Unassigned | GeneralCategory::Surrogate => {
            Some("an unassigned code point")
        }
        GeneralCategory::SpaceSeparator
        | GeneralCategory::LineSeparator
        | GeneralCategory::ParagraphSeparator => Some("a separator other than the space"),
        _ => None,
    }
}

/// The scripts of `name` in the order they first appear, when no one script (or Latin with
/// the CJK scripts) covers every character.
fn mixed_scripts(name: &str) -> Option<Vec<&'static str>> {
    let cjk = [Script::Han, Script::Hiragana, Script::Katakana, Script::Hangul, Script::Bopomofo];
    let family = cjk.iter().fold(ScriptExtension::from(Script::Latin), |f, &s| f.union(s.into()));
    let mut common = ScriptExtension::from(Script::Common);
    for c in name.chars() {
        let mut ext = c.script_extension();
        if !ext.is_common() && !ext.is_inherited() && cjk.iter().any(|&s| ext.contains_script(s)) {
            ext = ext.union(family);
        }
        common.intersect_with(ext);
    }
    if !common.is_empty() {
        return None;
    }
    let mut scripts = Vec::new();
    for c in name.chars() {
        let script = c.script();
        if !matches!(script, Script::Common | Script::Inherited | Script::Unknown) {
            let name = script.full_name();
            if !scripts.contains(&name) {
                scripts.push(name);
            }
        }
    }
    Some(scripts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> String {
        normalise(name, 32).unwrap().key
    }

    fn why(name: &str) -> String {
        normalise(name, 32).unwrap_err()
    }

    #[test]
    fn nfkc_case_and_spaces_make_one_name() {
        let fullwidth = normalise("ａｌｉｃｅ", 32).unwrap();
        assert_eq!(fullwidth.shown, "alice", "shown as the letters it reads as");
        for same in ["alice", "ALICE", "Alice", " alice  ", "ａＬＩＣＥ", "alic\u{0065}"] {
            assert_eq!(key(same), "alice", "{same:?}");
        }
        assert_eq!(normalise("  Ada \u{3000}  Lovelace ", 32).unwrap().shown, "Ada Lovelace");
        assert_eq!(key("STRASSE"), key("straße"));
        assert_eq!(key("ΟΔΟΣ"), key("οδοσ"));
        assert_eq!(key("ﬁ"), key("fi"), "a ligature is its letters");
        // A composed and a decomposed é are one name, shown composed.
        assert_eq!(normalise("Zoe\u{0301}", 32).unwrap().shown, "Zoé");
        assert_eq!(key("Zoé"), key("ZOE\u{0301}"));
        // Emoji, digits, punctuation and non-Latin scripts are names like any.
        for fine in [
            "Zoë 😀",
            "r2-d2",
            "Ἀλέξανδρος",
            "Фёдор",
            "山田太郎",
            "やまだ",
            "김민준",
            "Tanaka 田中",
            "אבי",
            "محمد",
        ] {
            assert!(normalise(fine, 32).is_ok(), "{fine:?}: {:?}", normalise(fine, 32));
        }
    }

    #[test]
    fn invisible_and_bidi_characters_are_refused() {
        assert_eq!(
            why("al\u{200b}ice"),
            "name cannot hold U+200B (an invisible or formatting character)"
        );
        assert_eq!(why("\u{202e}ecila"), "name cannot hold U+202E (a bidirectional control)");
        for bidi in
            ['\u{202A}', '\u{202D}', '\u{2066}', '\u{2069}', '\u{200E}', '\u{200F}', '\u{061C}']
        {
            assert!(why(&format!("a{bidi}b")).contains("bidirectional control"), "{bidi:?}");
        }
        for hidden in [
            '\u{200C}',
            '\u{200D}',
            '\u{2060}',
            '\u{2064}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{E0041}',
            '\u{E0001}',
        ] {
            assert!(why(&format!("a{hidden}b")).contains("formatting"), "{hidden:?}");
        }
        for hidden in [
            '\u{FE0F}',
            '\u{FE00}',
            '\u{E0100}',
            '\u{034F}',
            '\u{3164}',
            '\u{115F}',
            '\u{2800}',
            '\u{180B}',
        ] {
            assert!(why(&format!("a{hidden}b")).contains("invisible"), "{hidden:?}");
        }
        assert!(why("a\u{0007}b").contains("control character"));
        assert!(why("a\nb").contains("control character"));
        assert!(why("a\u{E000}b").contains("private-use"));
        assert!(why("a\u{0378}b").contains("unassigned"));
        assert!(why("a\u{2028}b").contains("separator"));
        assert!(why("a\u{1680}b").contains("separator"));
        assert_eq!(why("\u{0301}a"), "name cannot begin with a combining mark");
        // Every refusal says it is about the name.
        assert_eq!(why(" \u{3000} "), "name cannot be empty");
    }

    #[test]
    fn mixed_scripts_are_refused() {
        // A Cyrillic а (U+0430) among Latin letters.
        assert_eq!(
            why("\u{0430}lice"),
            "name \"аlice\" mixes scripts (Cyrillic, Latin): write it in one"
        );
        assert!(why("pаypal").contains("(Latin, Cyrillic)"));
        assert!(why("Αlice").contains("Greek"), "a Greek capital alpha");
        assert!(why("山田 Фёдор").contains("mixes scripts"));
        // Digits and punctuation are common to every script.
        assert!(normalise("Фёдор-2", 32).is_ok());
    }

    #[test]
    fn length_counts_characters_after_normalising() {
        assert!(normalise("😀😀😀😀", 4).is_ok());
        assert_eq!(
            normalise("😀😀😀😀😀", 4).unwrap_err(),
            "name is at most 4 characters; this one has 5"
        );
        // Four fullwidth letters are four letters; a decomposed é is one.
        assert!(normalise("ａｂｃｄ", 4).is_ok());
        assert!(normalise("abce\u{0301}", 4).is_ok());
        // Far too long is refused before normalising.
        let huge = "a".repeat(100_000);
        assert_eq!(
            normalise(&huge, 4).unwrap_err(),
            "name is at most 4 characters; this one has 100000"
        );
    }
}
