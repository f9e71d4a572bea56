//! What a notification's `title` and `body` may contain: plain text that shows what it says. It is
//! stored and delivered exactly as sent; nothing is stripped, so a publisher learns (400, with the
//! field and the code point) instead of seeing its text silently changed.
//!
//! Refused, because they make text display other than it reads or hide text from the reader:
//! control characters (a title is one line; a body may hold `\n` and `\t`), bidirectional
//! embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069: `U+202E` turns `gpj.exe` into
//! what looks like `exe.jpg`), line and paragraph separators (U+2028, U+2029: some clients break
//! lines there, JavaScript string literals end there; use `\n`), and invisible characters
//! (U+200B, U+2060-U+2064, U+FEFF, U+180E, and the tag characters U+E0000-U+E007F that can carry a
//! hidden message). The three subdivision flags built from tag characters are refused with them.
//!
//! Allowed although invisible, because real text needs them: the zero-width joiner and non-joiner
//! (U+200D, U+200C: emoji sequences such as woman + U+200D + laptop, Persian and Indic scripts), but
//! only between two visible characters, where they join or separate something; and the directional
//! marks (U+200E, U+200F, U+061C), which only settle the direction of neutral characters in
//! right-to-left text and cannot reorder a run of letters.
//!
//! HTML is not refused: `<b>` in a title is three characters of text (`a < b` is ordinary text), and
//! clients render titles and bodies as text, never as HTML (docs/security.md).

/// Where a text goes: one line (a title) or several (a body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    One,
    Many,
}

/// Ok when `text` is plain text as above; otherwise what is wrong, naming the first offending code
/// point and its position (1-based, in characters).
pub fn check_plain_text(text: &str, lines: Lines) -> Result<(), String> {
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let refused = match c {
            '\n' | '\t' if lines == Lines::Many => None,
            '\n' if lines == Lines::One => Some("a line break (a title is one line)"),
            c if c.is_control() => Some("a control character"),
            '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' => Some("a bidirectional control"),
            '\u{2028}' | '\u{2029}' => Some("a line or paragraph separator (use \\n in a body)"),
            '\u{200B}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{180E}' | '\u{E0000}'..='\u{E007F}' => {
                Some("an invisible character")
            }
            '\u{200C}' | '\u{200D}' if !between_visible(&chars, i) => {
                Some("a zero-width joiner or non-joiner that is not between two visible characters")
            }
            _ => None,
        };
        if let Some(what) = refused {
            return Err(format!(
                "must be plain text: U+{:04X} at character {} is {what}",
                u32::from(c),
                i + 1
            ));
        }
    }
    Ok(())
}

/// A joiner joins (or separates) the characters on both sides: neither may be missing, white space or
/// another joiner.
fn between_visible(chars: &[char], i: usize) -> bool {
    let visible = |c: Option<&char>| {
        c.is_some_and(|c| !c.is_whitespace() && !c.is_control() && !matches!(c, '\u{200C}' | '\u{200D}'))
    };
    i > 0 && visible(chars.get(i - 1)) && visible(chars.get(i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str, lines: Lines) -> String {
        check_plain_text(text, lines).expect_err(text)
    }

    #[test]
    fn ordinary_text_of_any_script_is_plain_text() {
        for text in [
            "Your upload is ready",
            "<b>not bold</b> & \"quoted\" 'text' <script>",
            "a < b > c",
            "Привет, 世界, مرحبا",
            "\u{200F}تم رفع 3 ملفات",
            "👩\u{200D}💻 ❤\u{FE0F}\u{200D}🔥 👍🏽",
            "می\u{200C}خواهم",
        ] {
            assert_eq!(check_plain_text(text, Lines::One), Ok(()), "{text}");
        }
        assert_eq!(check_plain_text("line 1\nline 2\n\tindented", Lines::Many), Ok(()));
    }

    #[test]
    fn control_characters_and_line_breaks_are_refused_where_they_do_not_belong() {
        assert!(refused("two\nlines", Lines::One).contains("U+000A at character 4 is a line break"));
        assert!(refused("tab\there", Lines::One).contains("control"));
        assert!(refused("bell\u{7}", Lines::Many).contains("U+0007"));
        assert!(refused("crlf\r\n", Lines::Many).contains("U+000D"));
        assert!(refused("nel\u{85}", Lines::Many).contains("U+0085"));
    }

    #[test]
    fn bidirectional_controls_are_refused() {
        for c in [
            '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
        ] {
            let text = format!("invoice{c}fdp.exe");
            assert!(refused(&text, Lines::One).contains("bidirectional"), "{c:?}");
            assert!(refused(&text, Lines::Many).contains("bidirectional"), "{c:?}");
        }
    }

    #[test]
    fn line_and_paragraph_separators_are_refused_even_in_a_body() {
        assert!(refused("a\u{2028}b", Lines::Many).contains("U+2028"));
        assert!(refused("a\u{2029}b", Lines::Many).contains("U+2029"));
    }

    #[test]
    fn invisible_characters_are_refused() {
        for c in ['\u{200B}', '\u{2060}', '\u{2064}', '\u{FEFF}', '\u{180E}', '\u{E0041}'] {
            assert!(refused(&format!("ad{c}min"), Lines::One).contains("invisible"), "{c:?}");
        }
    }

    #[test]
    fn joiners_are_refused_where_they_join_nothing() {
        for text in [
            "\u{200D}start",
            "end\u{200C}",
            "a \u{200D}b",
            "a\u{200D}\u{200D}b",
            "\u{200D}",
        ] {
            assert!(refused(text, Lines::One).contains("joiner"), "{text:?}");
        }
    }
}
