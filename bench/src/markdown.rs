//! Markdown tables, and the file they are written into.
//!
//! `docs/BENCHMARKS.md` is written by hand: its prose says what each table measures
//! and what the figures mean. The bench only fills the tables (each followed by a link
//! to its plot, when [`crate::plot`] drew one), each between a pair of markers
//! (`<!-- bench:NAME -->` … `<!-- /bench:NAME -->`), and leaves every other line as it
//! is ([`splice`]).

use std::fmt::Write as _;

/// A markdown table with the notes printed under it.
#[derive(Clone, Debug, Default)]
pub struct Table {
    head: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    /// A table with these column headers; a header starting with `>` is a column of
    /// figures, aligned right (the `>` is not printed).
    pub fn new(columns: &[&str]) -> Self {
        Self {
            head: columns
                .iter()
                .map(|column| column.trim_start_matches('>').to_owned())
                .collect(),
            right: columns
                .iter()
                .map(|column| column.starts_with('>'))
                .collect(),
            ..Self::default()
        }
    }

    /// Adds a row; `|` inside a cell is escaped, and missing cells are left blank.
    pub fn row<I: IntoIterator<Item = S>, S: ToString>(&mut self, cells: I) {
        let mut row: Vec<String> = cells
            .into_iter()
            .map(|cell| cell.to_string().replace('|', "\\|"))
            .collect();
        row.resize(row.len().max(self.head.len()), String::new());
        self.rows.push(row);
    }

    /// Adds a note, printed as a list item under the table.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Adds the note `what: error` when there is an error.
    pub fn error(&mut self, what: impl std::fmt::Display, error: &Option<String>) {
        if let Some(error) = error {
            self.notes.push(format!("{what}: {error}"));
        }
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table and its notes, ending in a newline.
    pub fn render(&self) -> String {
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        let rule: Vec<String> = self
            .right
            .iter()
            .map(|&right| if right { "---:" } else { "---" }.to_owned())
            .collect();
        let mut out = line(&self.head);
        out.push_str(&format!("|{}|\n", rule.join("|")));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        if !self.notes.is_empty() {
            out.push('\n');
        }
        for note in &self.notes {
            out.push_str(&list_item(note, NOTE_WIDTH));
        }
        out
    }
}

/// The widest line of a note under a table: docs/ keeps its lines within 120
/// characters (scripts/check-docs.sh), and a note names a backend, an implementation's
/// label and a reason, which together often run longer.
pub const NOTE_WIDTH: usize = 120;

/// `text` as a markdown list item (`- `) whose lines are at most `width` characters
/// where its words allow, continued on lines indented by two spaces; ends in a newline.
pub fn list_item(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::from("-");
    let mut words = 0;
    for word in text.split_whitespace() {
        if words > 0 && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line = String::from(" ");
            words = 0;
        }
        line.push(' ');
        line.push_str(word);
        words += 1;
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// The marker that opens section `name`.
pub fn begin(name: &str) -> String {
    format!("<!-- bench:{name} -->")
}

/// The marker that closes section `name`.
pub fn end(name: &str) -> String {
    format!("<!-- /bench:{name} -->")
}

/// `document` with the text between the markers of each section replaced by its
/// body; a section without markers in `document` is appended at the end, with its
/// title as a heading, so that a new table is never lost.
pub fn splice(document: &str, sections: &[(&str, &str, String)]) -> String {
    let mut out = document.to_owned();
    for (name, title, body) in sections {
        let (begin, end) = (begin(name), end(name));
        let block = format!("{begin}\n{}\n{end}", body.trim_end());
        let found = out.find(&begin).and_then(|start| {
            let stop = start + out[start..].find(&end)? + end.len();
            Some((start, stop))
        });
        match found {
            Some((start, stop)) => out.replace_range(start..stop, &block),
            None => {
                if !out.is_empty() && !out.ends_with("\n\n") {
                    out.push_str(if out.ends_with('\n') { "\n" } else { "\n\n" });
                }
                let _ = writeln!(out, "## {title}\n\n{block}");
            }
        }
    }
    out
}
