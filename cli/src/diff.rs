//! A line diff of two config values (pretty JSON when they are JSON), for
//! `config history`, `config diff` and `config import`.

use serde_json::Value;

/// Pretty JSON (or the text as it is), for a line diff.
fn pretty(bytes: &[u8]) -> String {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(_) => match std::str::from_utf8(bytes) {
            Ok(text) => text.to_string(),
            Err(_) => {
                let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
                format!("({} bytes, not UTF-8) {}", bytes.len(), hex.join(" "))
            }
        },
    }
}

/// A unified line diff of two values, `-`/`+`/` ` prefixed.
pub fn diff(old: &[u8], new: &[u8]) -> String {
    let (old, new) = (pretty(old), pretty(new));
    let text = similar::TextDiff::from_lines(&old, &new);
    let mut out = String::new();
    for change in text.iter_all_changes() {
        let sign = match change.tag() {
            similar::ChangeTag::Delete => '-',
            similar::ChangeTag::Insert => '+',
            similar::ChangeTag::Equal => ' ',
        };
        out.push(sign);
        out.push_str(change.value());
        if !change.value().ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// [`diff`] with each line indented, for a list of keys.
pub fn indented_diff(old: &[u8], new: &[u8]) -> String {
    indent(&diff(old, new))
}

/// Each line of `text` indented by four spaces.
pub fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn diff_marks_changed_lines() {
        let d = super::diff(br#"{"a":1,"b":2}"#, br#"{"a":1,"b":3}"#);
        assert!(d.contains("-  \"b\": 2"), "{d}");
        assert!(d.contains("+  \"b\": 3"), "{d}");
        assert!(d.contains("   \"a\": 1"), "{d}");
    }
}
