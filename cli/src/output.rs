//! Human tables by default, one JSON document per line with `-o json`.

use serde_json::Value;

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
            let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (k, v) in fields {
                println!("{k:<width$}  {v}");
            }
        }
    }
}

/// Aligned columns, two spaces apart, a header line first.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
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
}
