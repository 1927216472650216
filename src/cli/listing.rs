//! Printing a list as it is read, a page at a time: a table, or one JSON document
//! whose array is written element by element. A million rows are never held in
//! memory, and a reader that goes away (`| head`) ends the reading.

use std::io::{self, Write};

use serde_json::Value;

use crate::cli::error::Error;

/// Columns assumed when neither the terminal nor `$COLUMNS` says: output piped or
/// redirected.
const DEFAULT_COLUMNS: usize = 100;
/// The last column keeps at least this many characters, however wide the others.
const MIN_LAST: usize = 16;

pub struct Listing<'w> {
    out: &'w mut dyn Write,
    json: bool,
    columns: usize,
    header: Vec<String>,
    /// Fixed by the first page: the table is printed before the rest is read.
    widths: Option<Vec<usize>>,
    rows: usize,
    /// The reader closed the pipe: nothing more is written, and the caller stops.
    closed: bool,
    /// The JSON document's opening, written with the first page or the end, so that a
    /// command failing before it read anything prints nothing on stdout.
    opening: Option<String>,
}

impl<'w> Listing<'w> {
    /// `array`: the name of the JSON array the rows go in; `header`: the table's.
    pub fn start(out: &'w mut dyn Write, json: bool, array: &str, header: &[&str]) -> Listing<'w> {
        Listing {
            out,
            json,
            columns: terminal_columns(
                crate::cli::top::term::window().map(|(columns, _)| columns),
                std::env::var("COLUMNS").ok().as_deref(),
            ),
            header: header.iter().map(|h| h.to_string()).collect(),
            widths: None,
            rows: 0,
            closed: false,
            opening: json.then(|| format!("{{{}:[", Value::String(array.into()))),
        }
    }

    /// Rows are wanted as JSON values, not table cells.
    pub fn json(&self) -> bool {
        self.json
    }

    pub fn closed(&self) -> bool {
        self.closed
    }

    /// One page of rows: the table's cells and the JSON element of each.
    pub fn page(&mut self, rows: Vec<(Vec<String>, Value)>) -> Result<(), Error> {
        let mut text = Vec::new();
        for (cells, value) in &rows {
            if self.json {
                if self.rows > 0 {
                    text.push(b',');
                }
                serde_json::to_writer(&mut text, value)
                    .map_err(io::Error::other)
                    .map_err(output_error)?;
            } else {
                if self.widths.is_none() {
                    let cells: Vec<&Vec<String>> = rows.iter().map(|(c, _)| c).collect();
                    let widths = widths(&self.header, &cells);
                    text.extend(self.line(&self.header, &widths).into_bytes());
                    self.widths = Some(widths);
                }
                let widths = self.widths.as_deref().unwrap_or_default();
                text.extend(self.line(cells, widths).into_bytes());
            }
            self.rows += 1;
        }
        self.write(&text)
    }

    /// Ends the list: `footer`, a line under the table; `fields`, the JSON document's
    /// other members (an object).
    pub fn finish(&mut self, footer: Option<String>, fields: Value) -> Result<(), Error> {
        let mut text = String::new();
        if self.json {
            text.push(']');
            if let Value::Object(fields) = fields {
                for (k, v) in fields {
                    text.push_str(&format!(",{}:{v}", Value::String(k)));
                }
            }
            text.push_str("}\n");
        } else {
            if self.widths.is_none() {
                let widths = widths(&self.header, &[]);
                text.push_str(&self.line(&self.header, &widths));
            }
            if let Some(footer) = footer {
                text.push_str(&footer);
                text.push('\n');
            }
        }
        self.write(text.as_bytes())
    }

    /// A row, columns two spaces apart, the last cut to the terminal's width.
    fn line(&self, cells: &[String], widths: &[usize]) -> String {
        let mut out = String::new();
        let last = cells.len().saturating_sub(1);
        for (c, cell) in cells.iter().enumerate() {
            if c < last {
                let width = widths.get(c).copied().unwrap_or(0);
                out.push_str(&format!("{cell:<width$}  "));
            } else {
                let used = out.chars().count();
                out.push_str(&cut(cell, self.columns.saturating_sub(used).max(MIN_LAST)));
            }
        }
        out.push('\n');
        out
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if self.closed {
            return Ok(());
        }
        let opening = self.opening.take().unwrap_or_default();
        let written = self
            .out
            .write_all(opening.as_bytes())
            .and_then(|()| self.out.write_all(bytes))
            .and_then(|()| self.out.flush());
        match written {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(output_error(e)),
        }
    }
}

fn output_error(e: io::Error) -> Error {
    Error::Os(format!("cannot write the output: {e}"))
}

/// Widths of every column but the last (which is cut to fit, not padded).
fn widths(header: &[String], rows: &[&Vec<String>]) -> Vec<usize> {
    let columns = header.len().saturating_sub(1);
    (0..columns)
        .map(|c| {
            std::iter::once(header)
                .chain(rows.iter().map(|r| r.as_slice()))
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect()
}

/// The width of the terminal stdout is (`tty`: bash does not export `$COLUMNS`, so
/// in a terminal that is what says), else `$COLUMNS`, else [`DEFAULT_COLUMNS`]. Piped
/// or redirected there is no terminal to ask: the same lines in a pipe and in a test.
pub fn terminal_columns(tty: Option<usize>, columns: Option<&str>) -> usize {
    tty.or_else(|| columns.and_then(|c| c.trim().parse::<usize>().ok()))
        .filter(|c| *c >= 20)
        .unwrap_or(DEFAULT_COLUMNS)
}

/// At most `max` characters of `s`, the last of them an ellipsis when cut.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `1,000,000`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_widths_and_cuts() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(12_345), "12,345");
        assert_eq!(terminal_columns(None, Some("132")), 132);
        assert_eq!(terminal_columns(None, Some("x")), 100);
        assert_eq!(terminal_columns(None, Some("3")), 100);
        assert_eq!(terminal_columns(None, None), 100);
        assert_eq!(
            terminal_columns(Some(160), Some("132")),
            160,
            "the tty first"
        );
        assert_eq!(terminal_columns(Some(160), None), 160);
        assert_eq!(terminal_columns(Some(3), Some("132")), 100);
        assert_eq!(cut("abcdef", 6), "abcdef");
        assert_eq!(cut("abcdefg", 6), "abcde…");
        assert_eq!(cut("ééééééé", 3), "éé…");
    }

    #[test]
    fn a_table_is_cut_to_the_width_and_json_is_one_document() {
        let mut out = Vec::new();
        let mut l = Listing::start(&mut out, false, "jobs", &["ID", "BODY"]);
        l.columns = 30;
        let long = "x".repeat(100);
        l.page(vec![(vec!["a1".into(), long.clone()], json!(1))])
            .unwrap();
        l.finish(Some("showing 1 of 2".into()), json!({})).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ID  BODY");
        assert_eq!(lines[1].chars().count(), 30, "{text}");
        assert!(lines[1].ends_with("x…"), "{text}");
        assert_eq!(lines[2], "showing 1 of 2");

        let mut out = Vec::new();
        let mut l = Listing::start(&mut out, true, "jobs", &["ID"]);
        l.page(vec![(vec![], json!({"a": long})), (vec![], json!(2))])
            .unwrap();
        l.page(vec![(vec![], json!(3))]).unwrap();
        l.finish(None, json!({"total": 9})).unwrap();
        let doc: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(doc, json!({"jobs": [{"a": long}, 2, 3], "total": 9}));
    }
}
