//! Judging criteria: a few basic sets (writing, coding, exam, ...) that scenario sets inherit,
//! plus each scenario's own criteria, resolved once at start-up into a flat list per scenario.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

use crate::data::DataFile;
use crate::error::RouterError;

/// One criterion, as `Scenarios.GetCriteria` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Criterion {
    /// Short name, unique within its set.
    pub name: String,
    /// What the judge should check.
    pub content: String,
    /// The basic set it came from; `None` for the scenario's own criteria.
    pub inherited_from: Option<String>,
}

/// `criteria/basics/<name>.toml`.
#[derive(Debug, Deserialize)]
struct BasicSetFile {
    /// The set's name, referenced by `inherits`.
    name: String,
    /// The criteria of the set.
    #[serde(rename = "criterion", default)]
    criteria: Vec<CriterionEntry>,
}

/// `criteria/scenarios/<scenario>.toml`.
#[derive(Debug, Deserialize)]
struct ScenarioCriteriaFile {
    /// The scenario; must equal the file's stem.
    scenario: String,
    /// Basic sets whose criteria come first, in this order.
    #[serde(default)]
    inherits: Vec<String>,
    /// The scenario's own criteria.
    #[serde(rename = "criterion", default)]
    criteria: Vec<CriterionEntry>,
}

/// A `[[criterion]]` table.
#[derive(Debug, Deserialize)]
struct CriterionEntry {
    /// Short name.
    name: String,
    /// What to check.
    content: String,
}

/// Parses and validates every criteria file against the scenarios' names, returning each
/// scenario's resolved criteria (inherited first, then its own).
pub(crate) fn resolve(
    basics: &[DataFile],
    scenario_files: &[DataFile],
    scenarios: &[&str],
) -> Result<HashMap<String, Vec<Criterion>>, RouterError> {
    let mut sets: HashMap<String, Vec<CriterionEntry>> = HashMap::new();
    for file in basics {
        let set: BasicSetFile = file.parse_toml()?;
        check_unique_criteria(file, &set.criteria)?;
        if sets.contains_key(&set.name) {
            return Err(duplicate("basic set", &set.name, file));
        }
        sets.insert(set.name, set.criteria);
    }

    let known: HashSet<&str> = scenarios.iter().copied().collect();
    let mut resolved = HashMap::new();
    for file in scenario_files {
        let parsed: ScenarioCriteriaFile = file.parse_toml()?;
        if !known.contains(parsed.scenario.as_str()) || file.stem() != parsed.scenario {
            return Err(RouterError::UnknownScenarioFile {
                path: file.path.clone(),
                scenario: parsed.scenario,
            });
        }
        check_unique_criteria(file, &parsed.criteria)?;
        let mut list = Vec::new();
        for basic in &parsed.inherits {
            let set = sets
                .get(basic)
                .ok_or_else(|| RouterError::UnknownBasicSet {
                    path: file.path.clone(),
                    basic: basic.clone(),
                })?;
            list.extend(set.iter().map(|c| Criterion {
                name: c.name.clone(),
                content: c.content.clone(),
                inherited_from: Some(basic.clone()),
            }));
        }
        list.extend(parsed.criteria.into_iter().map(|c| Criterion {
            name: c.name,
            content: c.content,
            inherited_from: None,
        }));
        if resolved.insert(parsed.scenario.clone(), list).is_some() {
            return Err(duplicate("scenario criteria", &parsed.scenario, file));
        }
    }

    if let Some(missing) = scenarios.iter().find(|s| !resolved.contains_key(**s)) {
        return Err(RouterError::MissingCriteria {
            scenario: (*missing).to_owned(),
        });
    }
    Ok(resolved)
}

/// Rejects two criteria of the same name in one file.
fn check_unique_criteria(file: &DataFile, criteria: &[CriterionEntry]) -> Result<(), RouterError> {
    let mut seen = HashSet::new();
    match criteria.iter().find(|c| !seen.insert(c.name.as_str())) {
        Some(c) => Err(duplicate("criterion", &c.name, file)),
        None => Ok(()),
    }
}

/// Builds the duplicate-name error for `file`.
fn duplicate(kind: &'static str, name: &str, file: &DataFile) -> RouterError {
    RouterError::Duplicate {
        kind,
        name: name.to_owned(),
        path: file.path.clone(),
    }
}
