//! The settings tables of docs/configuration.md read, and compared with the settings a clap command
//! defines. Shared by this crate's check of the gateway's table and by the operator's check of its own
//! (`operator/tests/configuration_doc.rs` includes this file by path: the contract crate cannot depend
//! on the operator, and a test helper has no place in either library). A table belongs to the `##`
//! section it stands in, so that each check reads only its own program's table.

use clap::{Arg, Command};

/// docs/configuration.md, read where the test runs (the checkout cargo runs it from), not built in
/// with `env!`: a build reused from a checkout elsewhere would read that checkout's doc.
pub fn doc_path() -> String {
    format!(
        "{}/../docs/configuration.md",
        std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo for the tests it runs")
    )
}
/// The heading of the operator's section; every other section's tables are the gateway's.
pub const OPERATOR_SECTION: &str = "Operator";
/// The header cells that make a Markdown table a settings table.
const COLUMNS: [&str; 4] = ["Flag", "Environment", "YAML key", "Default"];

/// A setting as the code defines it; `None` where it has no flag, variable or YAML key.
#[derive(Debug)]
pub struct Setting {
    pub flag: Option<String>,
    pub env: Option<String>,
    pub yaml_key: Option<String>,
    /// The default the code writes as a literal, and where.
    pub default: Option<(String, String)>,
}

impl Setting {
    /// The flag, variable and default (when clap has one) of an argument; no YAML key.
    pub fn of(arg: &Arg) -> Self {
        let default: Vec<_> = arg.get_default_values().iter().map(|v| v.to_string_lossy()).collect();
        Self {
            flag: arg.get_long().map(|long| format!("--{long}")),
            env: arg.get_env().map(|env| env.to_string_lossy().into_owned()),
            yaml_key: None,
            default: (!default.is_empty()).then(|| (default.join(","), "clap's default_value".to_owned())),
        }
    }

    fn name(&self) -> String {
        let name = self.flag.as_ref().or(self.env.as_ref()).or(self.yaml_key.as_ref());
        format!("`{}`", name.map_or("?", String::as_str))
    }

    /// Whether `row` is about this setting: it names its flag, its variable or its YAML key.
    fn described_by(&self, row: &Row) -> bool {
        let same = |code: &Option<String>, doc: &str| code.as_deref().is_some_and(|code| code == doc);
        same(&self.flag, &row.flag) || same(&self.env, &row.env) || same(&self.yaml_key, &row.yaml_key)
    }
}

/// The arguments of `command` that are settings: those with a flag or a variable.
pub fn arguments(command: &Command) -> impl Iterator<Item = &Arg> {
    command
        .get_arguments()
        .filter(|arg| arg.get_long().is_some() || arg.get_env().is_some())
}

/// A row of a settings table, its cells trimmed and without their backticks (`default` kept whole).
#[derive(Debug)]
pub struct Row {
    pub line: usize,
    /// The heading of the `##` section the table stands in.
    pub section: String,
    pub flag: String,
    pub env: String,
    pub yaml_key: String,
    pub default: String,
}

impl Row {
    fn name(&self) -> String {
        let name = [&self.flag, &self.env, &self.yaml_key]
            .into_iter()
            .find(|cell| !cell.is_empty());
        format!("`{}`", name.map_or("?", String::as_str))
    }
}

/// The cells of a Markdown table line (`\|` does not split).
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|');
    let inner = inner.strip_suffix('|').filter(|s| !s.ends_with('\\')).unwrap_or(inner);
    let mut cells = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => cells.last_mut().expect("a cell").push(chars.next().expect("|")),
            '|' => cells.push(String::new()),
            c => cells.last_mut().expect("a cell").push(c),
        }
    }
    cells.into_iter().map(|cell| cell.trim().to_owned()).collect()
}

/// The content of a cell that is one code span (`` `20` ``), else `None` (prose such as `none (any)`).
fn code_span(cell: &str) -> Option<&str> {
    cell.strip_prefix('`')
        .and_then(|s| s.strip_suffix('`'))
        .filter(|s| !s.contains('`'))
}

/// A name cell for a message: in backticks, or "an empty cell".
fn shown(cell: &str) -> String {
    if cell.is_empty() {
        "an empty cell".to_owned()
    } else {
        format!("`{cell}`")
    }
}

/// Every row of the settings tables (a table whose header has the [`COLUMNS`]) of the doc's sections
/// that `section` accepts; at least one.
pub fn documented_rows(section: impl Fn(&str) -> bool) -> Vec<Row> {
    let doc = std::fs::read_to_string(doc_path()).expect("docs/configuration.md reads");
    let mut rows = Vec::new();
    let mut heading = String::new();
    let mut columns: Option<[usize; 4]> = None;
    let mut in_table = false;
    for (index, line) in doc.lines().enumerate() {
        if let Some(title) = line.strip_prefix("## ") {
            heading = title.trim().to_owned();
        }
        if !line.trim_start().starts_with('|') {
            (in_table, columns) = (false, None);
            continue;
        }
        let cells = cells(line);
        if !in_table {
            in_table = true;
            let position = |name: &str| cells.iter().position(|cell| cell == name);
            columns = COLUMNS
                .iter()
                .map(|name| position(name))
                .collect::<Option<Vec<_>>>()
                .map(|found| {
                    let mut columns = [0; 4];
                    columns.copy_from_slice(&found);
                    columns
                });
            continue;
        }
        let Some([flag, env, yaml_key, default]) = columns else {
            continue;
        };
        if cells.iter().all(|cell| cell.chars().all(|c| matches!(c, '-' | ':'))) {
            continue; // the header's separator
        }
        let cell = |column: usize| cells.get(column).cloned().unwrap_or_default();
        let bare = |column: usize| {
            let cell = cell(column);
            code_span(&cell).map_or(cell.clone(), str::to_owned)
        };
        rows.push(Row {
            line: index + 1,
            section: heading.clone(),
            flag: bare(flag),
            env: bare(env),
            yaml_key: bare(yaml_key),
            default: cell(default),
        });
    }
    rows.retain(|row| section(&row.section));
    assert!(
        !rows.is_empty(),
        "docs/configuration.md has no settings table in the expected section (a table whose header has \
         the columns {COLUMNS:?})"
    );
    rows
}

/// The rows about `setting`.
fn rows_of<'a>(setting: &Setting, rows: &'a [Row]) -> Vec<&'a Row> {
    rows.iter().filter(|row| setting.described_by(row)).collect()
}

/// Fails listing every problem, naming `truth`: the code the doc disagrees with.
fn assert_none(problems: Vec<String>, truth: &str, what: &str) {
    assert!(
        problems.is_empty(),
        "docs/configuration.md disagrees with the settings' code ({truth}), which is the truth: {what}\n  - {}\n",
        problems.join("\n  - ")
    );
}

/// Fails unless every setting has one row, under its flag, variable and YAML key.
pub fn assert_every_setting_documented(settings: &[Setting], rows: &[Row], truth: &str) {
    let mut problems = Vec::new();
    for setting in settings {
        let matches = rows_of(setting, rows);
        let row = match matches.as_slice() {
            [] => {
                let shown = |name: &Option<String>| name.as_deref().map_or("none".to_owned(), |n| format!("`{n}`"));
                problems.push(format!(
                    "{} is not documented (flag {}, variable {}, YAML key {})",
                    setting.name(),
                    shown(&setting.flag),
                    shown(&setting.env),
                    shown(&setting.yaml_key)
                ));
                continue;
            }
            [row] => row,
            several => {
                let lines: Vec<usize> = several.iter().map(|row| row.line).collect();
                problems.push(format!("{} is documented on several lines: {lines:?}", setting.name()));
                continue;
            }
        };
        let columns = [("flag", &setting.flag, &row.flag), ("variable", &setting.env, &row.env)];
        let columns = columns
            .into_iter()
            .chain([("YAML key", &setting.yaml_key, &row.yaml_key)]);
        for (column, code, doc) in columns {
            if code.as_deref().unwrap_or_default() != doc.as_str() {
                let code = code
                    .as_deref()
                    .map_or("none (an empty cell)".to_owned(), |c| format!("`{c}`"));
                problems.push(format!(
                    "line {}: {}: the {column} is {code}, the doc says {}",
                    row.line,
                    setting.name(),
                    shown(doc)
                ));
            }
        }
    }
    assert_none(problems, truth, "settings missing or named differently");
}

/// Fails if a row names no setting, or several.
pub fn assert_no_stale_row(settings: &[Setting], rows: &[Row], truth: &str) {
    let problems = rows
        .iter()
        .filter_map(|row| {
            let about: Vec<String> = settings
                .iter()
                .filter(|setting| setting.described_by(row))
                .map(Setting::name)
                .collect();
            match about.as_slice() {
                [] => Some(format!(
                    "line {}: {} names no setting (flag {}, variable {}, YAML key {})",
                    row.line,
                    row.name(),
                    shown(&row.flag),
                    shown(&row.env),
                    shown(&row.yaml_key)
                )),
                [_] => None,
                several => Some(format!(
                    "line {}: one row mixes several settings: {}",
                    row.line,
                    several.join(", ")
                )),
            }
        })
        .collect();
    assert_none(problems, truth, "stale rows");
}

/// Fails if a documented default differs from the code's, is missing, or is refused by `command`.
pub fn assert_defaults_match(settings: &[Setting], rows: &[Row], command: Command, truth: &str) {
    // Without environment variables, so that the test's own environment cannot refuse a value.
    let parser = command.mut_args(|arg: Arg| arg.env(None));
    let mut problems = Vec::new();
    for setting in settings {
        // A missing or repeated row is `assert_every_setting_documented`'s.
        let [row] = rows_of(setting, rows)[..] else { continue };
        let documented = code_span(&row.default);
        match &setting.default {
            Some((value, source)) if documented != Some(value.as_str()) => problems.push(format!(
                "line {}: {}: the default is `{value}` ({source}), the doc says {}",
                row.line,
                setting.name(),
                if row.default.is_empty() {
                    "an empty cell"
                } else {
                    &row.default
                }
            )),
            None if row.default.is_empty() => problems.push(format!(
                "line {}: {}: the default is not documented",
                row.line,
                setting.name()
            )),
            _ => {}
        }
        if let (Some(flag), Some(value)) = (&setting.flag, documented) {
            let program = parser.get_name().to_owned();
            if let Err(error) = parser
                .clone()
                .try_get_matches_from([program, format!("{flag}={value}")])
            {
                let reason = error.to_string();
                let reason = reason.lines().next().unwrap_or_default();
                problems.push(format!(
                    "line {}: {}: the documented default `{value}` is refused: {reason}",
                    row.line,
                    setting.name()
                ));
            }
        }
    }
    assert_none(problems, truth, "defaults");
}
