//! Values as the pages show them: pretty in their codec, binary as hex, and
//! the line diff between two.

use coordkit::config::Codec;
use maud::{html, Markup};

/// A value for reading: pretty-printed when it decodes in `codec` (JSON
/// re-indented), as text when it is UTF-8, else as hex (`binary` true).
pub(crate) fn shown(codec: Codec, key: &str, bytes: &[u8]) -> (String, bool) {
    if codec == Codec::Json {
        if let Ok(v) = codec.decode::<serde_json::Value>(key, bytes) {
            if let Ok(pretty) = serde_json::to_string_pretty(&v) {
                return (pretty, false);
            }
        }
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_string(), false),
        Err(_) => (hex(bytes), true),
    }
}

/// The key id an encrypted value was sealed with, if it is one
/// (`coordkit-sealed:v1:<id>:…`).
pub(crate) fn sealed_by(bytes: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(bytes).ok()?;
    let rest = text.strip_prefix("coordkit-sealed:v1:")?;
    rest.split_once(':').map(|(id, _)| id)
}

/// A value for editing: its text, or `None` if it is not UTF-8 (such a value
/// is not edited in a text area).
pub(crate) fn editable(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

/// Whether `text` decodes in `codec`; the reason if not.
pub(crate) fn validate(codec: Codec, key: &str, text: &str) -> Result<(), String> {
    codec
        .decode::<serde::de::IgnoredAny>(key, text.as_bytes())
        .map(drop)
        .map_err(|e| e.to_string())
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(if i % 16 == 0 { '\n' } else { ' ' });
        }
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The line diff of two values as shown, `-` old, `+` new, in a `pre` whose
/// lines are marked for styling (and for tests: `del`/`ins` elements).
pub(crate) fn diff(codec: Codec, key: &str, old: &[u8], new: &[u8]) -> Markup {
    let (old, _) = shown(codec, key, old);
    let (new, _) = shown(codec, key, new);
    let text = similar::TextDiff::from_lines(&old, &new);
    let changed = text
        .ops()
        .iter()
        .any(|op| op.tag() != similar::DiffTag::Equal);
    html! {
        @if !changed { p.same { "No difference." } }
        pre.diff {
            @for change in text.iter_all_changes() {
                @let line = change.value().trim_end_matches('\n');
                @match change.tag() {
                    similar::ChangeTag::Delete => { del { "- " (line) } "\n" }
                    similar::ChangeTag::Insert => { ins { "+ " (line) } "\n" }
                    similar::ChangeTag::Equal => { span { "  " (line) } "\n" }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_pretty_and_binary_is_hex() {
        assert_eq!(
            shown(Codec::Json, "k", br#"{"a":1}"#),
            ("{\n  \"a\": 1\n}".into(), false)
        );
        assert_eq!(shown(Codec::Json, "k", b"plain"), ("plain".into(), false));
        assert_eq!(
            shown(Codec::Json, "k", &[0xff, 0x00]),
            ("ff 00".into(), true)
        );
        assert!(validate(Codec::Json, "k", "{\"a\": 1}").is_ok());
        assert!(validate(Codec::Json, "k", "{a: 1}").is_err());
    }

    #[test]
    fn diff_marks_lines_and_escapes_markup() {
        let html = diff(Codec::Json, "k", br#"{"a":"<b>"}"#, br#"{"a":"<i>"}"#).into_string();
        assert!(html.contains("<del>- "), "{html}");
        assert!(html.contains("<ins>+ "), "{html}");
        assert!(
            html.contains("&lt;i&gt;") && !html.contains("<i>"),
            "{html}"
        );
    }
}
