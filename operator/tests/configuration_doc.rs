//! The operator's table in docs/configuration.md ("Operator") checked against its settings, as
//! contract/tests/configuration_doc.rs checks the gateway's: the code is the truth, here
//! `herald_operator::app::Settings` (the binary's whole command line flattens it), its flags and
//! variables and its defaults as clap defines them. The operator reads no YAML file, so no row has a
//! YAML key. A documented default may write `<version>` for the operator's own version (the default
//! gateway image's tag). The Meaning column is prose and not checked.

use clap::{Args, Command};
use herald_operator::app::Settings;

#[path = "../../contract/tests/settings_doc/mod.rs"]
mod settings_doc;
use settings_doc::{Row, Setting};

const TRUTH: &str = "operator/src/app.rs, Settings";

/// The operator's command line (`operator/src/bin/herald-operator.rs` flattens `Settings` into its `Cli`).
fn command() -> Command {
    Settings::augment_args(Command::new("herald-operator"))
}

fn settings() -> Vec<Setting> {
    settings_doc::arguments(&command()).map(Setting::of).collect()
}

/// The rows of the operator's section, `<version>` read as this version.
fn documented_rows() -> Vec<Row> {
    let mut rows = settings_doc::documented_rows(|section| section == settings_doc::OPERATOR_SECTION);
    for row in &mut rows {
        row.default = row.default.replace("<version>", env!("CARGO_PKG_VERSION"));
    }
    rows
}

#[test]
fn every_operator_setting_is_documented_with_its_flag_and_variable() {
    settings_doc::assert_every_setting_documented(&settings(), &documented_rows(), TRUTH);
}

#[test]
fn every_documented_operator_row_names_a_setting() {
    settings_doc::assert_no_stale_row(&settings(), &documented_rows(), TRUTH);
}

#[test]
fn documented_operator_defaults_match_the_code() {
    settings_doc::assert_defaults_match(&settings(), &documented_rows(), command(), TRUTH);
}
