//! docs/configuration.md checked against the code, so that the reference cannot drift from the settings
//! it documents. The code is the truth: the settings are `herald_contract::Options` (the gateway's whole
//! command line: its `Cli` flattens `Options`, every argument `global = true`, and its subcommands add
//! none), their flags and variables as clap defines them, their YAML keys as serde reads them, and their
//! defaults as clap (`default_value`) or `contract/src/defaults.rs` write them. A default constant is the
//! setting's name in capitals (`max_message_bytes`: `MAX_MESSAGE_BYTES`), the convention every default
//! there follows, so no mapping is kept here by hand. Every difference is listed at once. The Meaning
//! column is prose and not checked.

use std::collections::BTreeMap;

use clap::{Arg, Args, Command};
use herald_contract::Options;
use serde::Deserialize;

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
const DEFAULTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/defaults.rs");
/// The header cells that make a Markdown table a settings table.
const COLUMNS: [&str; 4] = ["Flag", "Environment", "YAML key", "Default"];

/// The gateway's settings on its command line (`gateway/src/config/mod.rs` flattens `Options` into its
/// `Cli`; the subcommands have no arguments of their own).
fn command() -> Command {
    Options::augment_args(Command::new("herald-gateway"))
}

/// A setting as the code defines it; `None` where it has no flag, variable or YAML key.
#[derive(Debug)]
struct Setting {
    flag: Option<String>,
    env: Option<String>,
    yaml_key: Option<String>,
    /// The default the code writes as a literal, and where.
    default: Option<(String, String)>,
}

impl Setting {
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

/// Every setting: each argument with a flag or a variable, then each YAML key without an argument
/// (`#[arg(skip)]`: the YAML-only lists).
fn settings() -> Vec<Setting> {
    let yaml_keys = yaml_keys();
    let defaults = literal_defaults(&std::fs::read_to_string(DEFAULTS).expect("contract/src/defaults.rs reads"));
    let mut settings: Vec<Setting> = command()
        .get_arguments()
        .filter(|arg| arg.get_long().is_some() || arg.get_env().is_some())
        .map(|arg| {
            let id = arg.get_id().as_str();
            let clap_default = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy())
                .collect::<Vec<_>>();
            let constant = id.to_uppercase();
            let default = if clap_default.is_empty() {
                defaults
                    .get(&constant)
                    .map(|value| (value.clone(), format!("defaults::{constant}")))
            } else {
                Some((clap_default.join(","), "clap's default_value".to_owned()))
            };
            Setting {
                flag: arg.get_long().map(|long| format!("--{long}")),
                env: arg.get_env().map(|env| env.to_string_lossy().into_owned()),
                yaml_key: yaml_keys.contains(&id).then(|| id.to_owned()),
                default,
            }
        })
        .collect();
    let with_argument: Vec<String> = command().get_arguments().map(|arg| arg.get_id().to_string()).collect();
    for key in yaml_keys
        .iter()
        .filter(|key| !with_argument.iter().any(|id| id == *key))
    {
        let constant = key.to_uppercase();
        settings.push(Setting {
            flag: None,
            env: None,
            yaml_key: Some((*key).to_owned()),
            default: defaults
                .get(&constant)
                .map(|value| (value.clone(), format!("defaults::{constant}"))),
        });
    }
    settings
}

/// The keys serde reads `Options` from in the YAML file: the field list its derive hands to
/// `deserialize_struct` (skipped fields left out; an alias would be there too, and need a row of its
/// own), caught by a deserializer that reads nothing.
fn yaml_keys() -> Vec<&'static str> {
    #[derive(Debug)]
    struct Caught(Option<&'static [&'static str]>);
    impl std::fmt::Display for Caught {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("not a struct")
        }
    }
    impl std::error::Error for Caught {}
    impl serde::de::Error for Caught {
        fn custom<T: std::fmt::Display>(_: T) -> Self {
            Caught(None)
        }
    }
    struct Fields;
    impl<'de> serde::Deserializer<'de> for Fields {
        type Error = Caught;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Caught> {
            Err(Caught(None))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Caught> {
            Err(Caught(Some(fields)))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    match Options::deserialize(Fields) {
        Err(Caught(Some(fields))) => fields.to_vec(),
        other => panic!("Options is no longer a serde struct: {other:?}"),
    }
}

/// The constants of defaults.rs whose value is a literal, as the doc writes it: a string, or an integer
/// written as a product of integers and other constants (`64 * 1024`: `65536`). Others (`SocketAddr`s)
/// are left out: their settings' documented defaults are only required to be there and accepted.
fn literal_defaults(source: &str) -> BTreeMap<String, String> {
    let expressions: BTreeMap<&str, &str> = source
        .split("pub const ")
        .skip(1)
        .filter_map(|item| {
            let (head, rest) = item.split_once('=')?;
            let (name, _type) = head.split_once(':')?;
            let (expression, _) = rest.split_once(';')?;
            Some((name.trim(), expression.trim()))
        })
        .collect();
    fn integer(expression: &str, expressions: &BTreeMap<&str, &str>) -> Option<u128> {
        expression.split('*').map(str::trim).try_fold(1u128, |product, factor| {
            let value = match factor.replace('_', "").parse::<u128>() {
                Ok(value) => value,
                Err(_) => integer(expressions.get(factor)?, expressions)?,
            };
            product.checked_mul(value)
        })
    }
    expressions
        .iter()
        .filter_map(|(name, expression)| {
            let string = expression.strip_prefix('"').and_then(|s| s.strip_suffix('"'));
            let value = match string {
                Some(s) if !s.contains(['"', '\\']) => s.to_owned(),
                _ => integer(expression, &expressions)?.to_string(),
            };
            Some(((*name).to_owned(), value))
        })
        .collect()
}

/// A row of a settings table, its cells trimmed and without their backticks (`default` kept whole).
#[derive(Debug)]
struct Row {
    line: usize,
    flag: String,
    env: String,
    yaml_key: String,
    default: String,
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

/// Every row of every settings table of the doc (a table whose header has the [`COLUMNS`]).
fn documented_rows() -> Vec<Row> {
    let doc = std::fs::read_to_string(DOC).expect("docs/configuration.md reads");
    let mut rows = Vec::new();
    let mut columns: Option<[usize; 4]> = None;
    let mut in_table = false;
    for (index, line) in doc.lines().enumerate() {
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
            flag: bare(flag),
            env: bare(env),
            yaml_key: bare(yaml_key),
            default: cell(default),
        });
    }
    assert!(
        !rows.is_empty(),
        "docs/configuration.md has no settings table (a table whose header has the columns {COLUMNS:?})"
    );
    rows
}

/// The rows about `setting`.
fn rows_of<'a>(setting: &Setting, rows: &'a [Row]) -> Vec<&'a Row> {
    rows.iter().filter(|row| setting.described_by(row)).collect()
}

fn assert_none(problems: Vec<String>, what: &str) {
    assert!(
        problems.is_empty(),
        "docs/configuration.md disagrees with the settings' code (contract/src/settings.rs, \
         contract/src/defaults.rs), which is the truth: {what}\n  - {}\n",
        problems.join("\n  - ")
    );
}

#[test]
fn every_setting_is_documented_with_its_flag_variable_and_yaml_key() {
    let rows = documented_rows();
    let mut problems = Vec::new();
    for setting in settings() {
        let matches = rows_of(&setting, &rows);
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
    assert_none(problems, "settings missing or named differently");
}

#[test]
fn every_documented_row_names_a_setting() {
    let settings = settings();
    let problems = documented_rows()
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
    assert_none(problems, "stale rows");
}

#[test]
fn documented_defaults_match_the_code() {
    let rows = documented_rows();
    // Without environment variables, so that the test's own environment cannot refuse a value.
    let parser = command().mut_args(|arg: Arg| arg.env(None));
    let mut problems = Vec::new();
    for setting in settings() {
        // A missing or repeated row is every_setting_is_documented_with_its_flag_variable_and_yaml_key's.
        let [row] = rows_of(&setting, &rows)[..] else { continue };
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
            if let Err(error) = parser
                .clone()
                .try_get_matches_from(["herald-gateway", &format!("{flag}={value}")])
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
    assert_none(problems, "defaults");
}

#[test]
fn literal_defaults_are_read_as_the_doc_writes_them() {
    let source = "pub const A: u16 = 8080;\n/// x = y\npub const B: usize = 64 * 1024;\n\
                  pub const C: u64 = 2 * A;\npub const D: &str = \"herald:\";\n\
                  pub const E: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, A));\n\
                  pub const F: u64 = 10_000;\n";
    let read = literal_defaults(source);
    let read: Vec<(&str, &str)> = read.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        read,
        [
            ("A", "8080"),
            ("B", "65536"),
            ("C", "16160"),
            ("D", "herald:"),
            ("F", "10000")
        ]
    );
}
