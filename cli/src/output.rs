//! Human tables by default, one JSON document per line with `-o json`.

use serde_json::Value;
use unicode_width::UnicodeWidthStr;

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON document per line, for scripts.
    Json,
}

/// Print rows: a table with `headers`, or each row as a JSON object (`json`
/// gives the object of a row).
pub fn rows(format: Format, headers: &[&str], rows: &[Vec<String>], json: impl Fn(usize) -> Value) {
    match format {
        Format::Json => {
            for i in 0..rows.len() {
                println!("{}", json(i));
            }
        }
        Format::Table => print!("{}", table(headers, rows)),
    }
}

/// One record: `key: value` lines, or one JSON object.
pub fn record(format: Format, fields: &[(&str, String)], json: Value) {
    match format {
        Format::Json => println!("{json}"),
        Format::Table => {
            let width = fields.iter().map(|(k, _)| k.width()).max().unwrap_or(0);
            for (k, v) in fields {
                println!("{}  {v}", padded(k, width));
            }
        }
    }
}

/// `text` followed by spaces up to `width` columns of a terminal: a CJK
/// character takes two columns, a combining mark none.
fn padded(text: &str, width: usize) -> String {
    format!("{text}{}", " ".repeat(width.saturating_sub(text.width())))
}

/// Aligned columns, two spaces apart, a header line first. Widths are display
/// columns, so text in Chinese or Japanese lines up.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.width()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.width());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&padded(cell, widths[i]));
                out.push_str("  ");
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_are_aligned() {
        let t = super::table(&["A", "BB"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    BB\nxyz  1\n");
    }

    #[test]
    fn wide_characters_take_two_columns() {
        let t = super::table(
            &["NAME", "ADDR"],
            &[
                vec!["订单服务".into(), "10.0.0.1:7001".into()],
                vec!["orders".into(), "10.0.0.2:7001".into()],
            ],
        );
        // "订单服务" is 4 characters and 8 columns wide: "orders" gets 2 more spaces.
        assert_eq!(
            t,
            "NAME      ADDR\n订单服务  10.0.0.1:7001\norders    10.0.0.2:7001\n"
        );
    }
}
