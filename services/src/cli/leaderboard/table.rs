//! Tables of figures shared by the text output and the HTML report: each table is built
//! once from the metrics object, then printed as aligned text or written as an HTML table,
//! so the two show the same numbers in the same form.

use serde_json::Value;

/// One column: its heading, its minimum width in the text output, and its alignment.
#[derive(Debug, Clone)]
pub struct Column {
    /// Heading, printed and written as is.
    pub name: String,
    /// Minimum width in characters in the text output (wider cells widen the column).
    pub width: usize,
    /// Left-aligned (names) rather than right-aligned (numbers).
    pub left: bool,
}

impl Column {
    /// A left-aligned column of names.
    pub fn name(heading: &str, width: usize) -> Self {
        Self {
            name: heading.into(),
            width,
            left: true,
        }
    }

    /// A right-aligned column of numbers.
    pub fn number(heading: &str, width: usize) -> Self {
        Self {
            name: heading.into(),
            width,
            left: false,
        }
    }
}

/// A table of figures, every cell already formatted as it is shown.
#[derive(Debug, Clone)]
pub struct Table {
    /// Stable name: the HTML table's id is `table-<id>`.
    pub id: &'static str,
    /// A line printed above the table, and the HTML caption.
    pub title: Option<String>,
    /// The columns, first one naming the row.
    pub columns: Vec<Column>,
    /// The rows, one cell per column.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// The table as aligned text lines (title, heading, rows), each ending in a newline.
    pub fn text(&self) -> String {
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let cells = self.rows.iter().filter_map(|r| r.get(i)).map(String::len);
                cells.chain([c.width, c.name.len()]).max().unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| -> String {
            let parts: Vec<String> = cells
                .iter()
                .zip(&self.columns)
                .zip(&widths)
                .map(|((cell, col), &w)| match col.left {
                    true => format!("{cell:<w$}"),
                    false => format!("{cell:>w$}"),
                })
                .collect();
            format!("{}\n", parts.join(" ").trim_end())
        };
        let mut out = String::new();
        if let Some(title) = &self.title {
            out.push_str(title);
            out.push('\n');
        }
        let heading: Vec<String> = self.columns.iter().map(|c| c.name.clone()).collect();
        out.push_str(&line(&heading));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }

    /// Prints [`Table::text`] to stdout.
    pub fn print(&self) {
        print!("{}", self.text());
    }
}

/// A percentage or other real figure as printed: 2 decimals, `-` when absent.
pub fn real(v: &Value) -> String {
    v.as_f64().map_or("-".to_string(), |x| format!("{x:.2}"))
}

/// A count as printed: the number, `-` when absent.
pub fn count(v: &Value) -> String {
    v.as_u64().map_or("-".to_string(), |x| x.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_widen_to_fit_and_align() {
        let t = Table {
            id: "t",
            title: Some("title".into()),
            columns: vec![Column::name("g", 4), Column::number("n", 3)],
            rows: vec![vec!["a-long-name".into(), "1234".into()]],
        };
        assert_eq!(t.text(), "title\ng              n\na-long-name 1234\n");
        assert_eq!(real(&serde_json::json!(2.5)), "2.50");
        assert_eq!(real(&Value::Null), "-");
    }
}
