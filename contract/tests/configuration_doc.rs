//! docs/configuration.md checked against the code, so that the reference cannot drift from the settings
//! it documents. The code is the truth: the settings are `herald_contract::Options` (the gateway's whole
//! command line: its `Cli` flattens `Options`, every argument `global = true`, and its subcommands add
//! none), their flags and variables as clap defines them, their YAML keys as serde reads them, and their
//! defaults as clap (`default_value`) or `contract/src/defaults.rs` write them. A default constant is the
//! setting's name in capitals (`max_message_bytes`: `MAX_MESSAGE_BYTES`), the convention every default
//! there follows, so no mapping is kept here by hand. Every difference is listed at once. The Meaning
//! column is prose and not checked.

use std::collections::BTreeMap;

use clap::{Args, Command};
use herald_contract::Options;
use serde::Deserialize;

mod settings_doc;
use settings_doc::{Row, Setting};

/// Where the doc's truth is, for its messages.
const TRUTH: &str = "contract/src/settings.rs, contract/src/defaults.rs";

/// The gateway's settings on its command line (`gateway/src/config/mod.rs` flattens `Options` into its
/// `Cli`; the subcommands have no arguments of their own).
fn command() -> Command {
    Options::augment_args(Command::new("herald-gateway"))
}

/// The gateway's tables: every settings table but the operator's (`operator/tests/configuration_doc.rs`).
fn documented_rows() -> Vec<Row> {
    settings_doc::documented_rows(|section| section != settings_doc::OPERATOR_SECTION)
}

/// Every setting: each argument with a flag or a variable, then each YAML key without an argument
/// (`#[arg(skip)]`: the YAML-only lists).
fn settings() -> Vec<Setting> {
    let yaml_keys = yaml_keys();
    // Read where the test runs (the checkout cargo runs it from), not built in with `env!`: a build
    // reused from a checkout elsewhere would read that checkout's file.
    let defaults_file = format!(
        "{}/src/defaults.rs",
        std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo for the tests it runs")
    );
    let defaults = literal_defaults(&std::fs::read_to_string(defaults_file).expect("contract/src/defaults.rs reads"));
    let command = command();
    let mut settings: Vec<Setting> = settings_doc::arguments(&command)
        .map(|arg| {
            let id = arg.get_id().as_str();
            let mut setting = Setting::of(arg);
            setting.yaml_key = yaml_keys.contains(&id).then(|| id.to_owned());
            if setting.default.is_none() {
                let constant = id.to_uppercase();
                setting.default = defaults
                    .get(&constant)
                    .map(|value| (value.clone(), format!("defaults::{constant}")));
            }
            setting
        })
        .collect();
    let with_argument: Vec<String> = command.get_arguments().map(|arg| arg.get_id().to_string()).collect();
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

#[test]
fn every_setting_is_documented_with_its_flag_variable_and_yaml_key() {
    settings_doc::assert_every_setting_documented(&settings(), &documented_rows(), TRUTH);
}

#[test]
fn every_documented_row_names_a_setting() {
    settings_doc::assert_no_stale_row(&settings(), &documented_rows(), TRUTH);
}

#[test]
fn documented_defaults_match_the_code() {
    settings_doc::assert_defaults_match(&settings(), &documented_rows(), command(), TRUTH);
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
