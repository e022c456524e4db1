//! A tiny aligned-table formatter for human output.
//!
//! Columns are separated by two spaces, padded to the widest cell; numeric columns can be
//! right-aligned. The last column is never padded, so lines carry no trailing spaces. Cells are
//! passed through [`super::printable`] so a file name with a newline cannot break the layout.

/// A table under construction.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers, all left-aligned.
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            right: vec![false; headers.len()],
            rows: Vec::new(),
        }
    }

    /// Right-aligns the columns at these indexes (for numbers).
    pub fn right_align(mut self, columns: &[usize]) -> Self {
        for &c in columns {
            if let Some(r) = self.right.get_mut(c) {
                *r = true;
            }
        }
        self
    }

    /// Adds a row; missing cells are empty, extra cells are dropped.
    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut row: Vec<String> = cells
            .into_iter()
            .take(self.headers.len())
            .map(|c| super::printable(c.as_ref()))
            .collect();
        row.resize(self.headers.len(), String::new());
        self.rows.push(row);
    }

    /// Number of rows added so far.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row after the header, each line ending in `\n`.
    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let last = self.headers.len().saturating_sub(1);
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                let pad = widths[i] - width(cell);
                if self.right[i] {
                    text.extend(std::iter::repeat_n(' ', pad));
                    text.push_str(cell);
                } else {
                    text.push_str(cell);
                    if i != last {
                        text.extend(std::iter::repeat_n(' ', pad));
                    }
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns_and_numbers() {
        let mut t = Table::new(&["NAME", "COUNT", "NOTE"]).right_align(&[1]);
        t.row(["a", "5", "short"]);
        t.row(["longer-name", "12345", ""]);
        assert_eq!(
            t.render(),
            "NAME         COUNT  NOTE\n\
             a                5  short\n\
             longer-name  12345\n"
        );
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn header_only_when_empty() {
        let t = Table::new(&["A", "B"]);
        assert!(t.is_empty());
        assert_eq!(t.render(), "A  B\n");
    }

    #[test]
    fn ragged_rows_and_unicode_widths() {
        let mut t = Table::new(&["X", "Y"]);
        t.row(["é", "1", "dropped"]);
        t.row(["ab"]);
        assert_eq!(t.render(), "X   Y\né   1\nab\n");
    }

    #[test]
    fn control_characters_cannot_break_lines() {
        let mut t = Table::new(&["PATH", "N"]);
        t.row(["a\nb", "1"]);
        assert_eq!(t.render(), "PATH  N\na\\nb  1\n");
    }
}
