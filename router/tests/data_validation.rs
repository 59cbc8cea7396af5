//! Bad scenario or criteria files are refused at start-up with a typed error naming the
//! problem: a scenario without criteria, an unknown basic set, a criteria file for an unknown
//! scenario, duplicate names, an unknown group.

mod common;

use std::fs;
use std::path::Path;

use autoj_router::{Catalog, DataSource, RouterError};
use common::fixture_dir;

/// Copies the fixture data into a temporary directory, applies `edit`, loads it.
fn load_edited(edit: impl FnOnce(&Path)) -> Result<Catalog, RouterError> {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture_dir(), dir.path());
    edit(dir.path());
    Catalog::load(&DataSource::Dir(dir.path().to_path_buf()))
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn append(path: &Path, text: &str) {
    let mut old = fs::read_to_string(path).unwrap();
    old.push_str(text);
    fs::write(path, old).unwrap();
}

#[test]
fn fixture_loads_with_inherited_criteria_first() {
    let catalog = load_edited(|_| {}).unwrap();
    let criteria = catalog.criteria("code_generation").unwrap();
    let from: Vec<_> = criteria
        .iter()
        .map(|c| c.inherited_from.as_deref())
        .collect();
    assert_eq!(
        from,
        [
            Some("basic_coding"),
            Some("basic_writing"),
            Some("basic_writing"),
            None
        ]
    );
}

#[test]
fn scenario_without_criteria_file() {
    let err = load_edited(|d| fs::remove_file(d.join("criteria/scenarios/chitchat.toml")).unwrap());
    assert!(
        matches!(err, Err(RouterError::MissingCriteria { scenario }) if scenario == "chitchat")
    );
}

#[test]
fn unknown_basic_set() {
    let err = load_edited(|d| {
        let f = d.join("criteria/scenarios/chitchat.toml");
        let text = fs::read_to_string(&f)
            .unwrap()
            .replace("basic_writing", "basic_poetry");
        fs::write(f, text).unwrap();
    });
    assert!(
        matches!(err, Err(RouterError::UnknownBasicSet { basic, .. }) if basic == "basic_poetry")
    );
}

#[test]
fn criteria_file_for_unknown_scenario() {
    let err = load_edited(|d| {
        fs::write(
            d.join("criteria/scenarios/poetry.toml"),
            "scenario = \"poetry\"\n",
        )
        .unwrap();
    });
    assert!(
        matches!(err, Err(RouterError::UnknownScenarioFile { scenario, .. }) if scenario == "poetry")
    );
}

#[test]
fn duplicate_scenario() {
    let err = load_edited(|d| {
        append(
            &d.join("scenarios.toml"),
            "\n[[scenario]]\nname = \"chitchat\"\ndescription = \"again\"\n",
        );
    });
    assert!(
        matches!(err, Err(RouterError::Duplicate { kind: "scenario", name, .. }) if name == "chitchat")
    );
}

#[test]
fn duplicate_criterion_and_basic_set() {
    let err = load_edited(|d| {
        append(
            &d.join("criteria/basics/basic_coding.toml"),
            "\n[[criterion]]\nname = \"correctness\"\ncontent = \"x\"\n",
        );
    });
    assert!(matches!(
        err,
        Err(RouterError::Duplicate {
            kind: "criterion",
            ..
        })
    ));
    let err = load_edited(|d| {
        fs::write(
            d.join("criteria/basics/copy.toml"),
            "name = \"basic_coding\"\n",
        )
        .unwrap();
    });
    assert!(matches!(
        err,
        Err(RouterError::Duplicate {
            kind: "basic set",
            ..
        })
    ));
}

#[test]
fn unknown_group() {
    let err = load_edited(|d| {
        let f = d.join("scenarios.toml");
        let text = fs::read_to_string(&f)
            .unwrap()
            .replace("group = \"Code\"", "group = \"Coding\"");
        fs::write(f, text).unwrap();
    });
    assert!(matches!(err, Err(RouterError::UnknownGroup { group, .. }) if group == "Coding"));
}

#[test]
fn malformed_toml_names_the_file() {
    let err = load_edited(|d| {
        append(
            &d.join("criteria/basics/basic_coding.toml"),
            "\n[[criterion]\n",
        )
    });
    let msg = err.unwrap_err().to_string();
    assert!(msg.contains("basic_coding.toml"), "{msg}");
}
