//! The scenario catalog: Auto-J's scenarios with their groups, descriptions and resolved
//! criteria, loaded and validated once at start-up so that serving never meets a bad file.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

use crate::criteria::{self, Criterion};
use crate::data::{DataFile, DataSource};
use crate::error::RouterError;

/// One scenario of the taxonomy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// Name, e.g. `code_generation`; also the classifier's label.
    pub name: String,
    /// Group, e.g. `Code`; `None` for the few scenarios outside the groups.
    pub group: Option<String>,
    /// What queries of this scenario ask for.
    pub description: String,
}

/// `scenarios.toml`.
#[derive(Debug, Deserialize)]
struct ScenariosFile {
    /// The groups, in display order.
    groups: Vec<String>,
    /// The scenarios, in display order.
    #[serde(rename = "scenario", default)]
    scenarios: Vec<ScenarioEntry>,
}

/// A `[[scenario]]` table.
#[derive(Debug, Deserialize)]
struct ScenarioEntry {
    name: String,
    group: Option<String>,
    description: String,
}

/// Every scenario with its criteria; immutable after loading and cheap to share.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// Group names in file order.
    groups: Vec<String>,
    /// Scenarios in file order (the order `Scenarios.List` answers with).
    scenarios: Vec<Scenario>,
    /// Name -> position in `scenarios`.
    index: HashMap<String, usize>,
    /// Name -> resolved criteria (inherited first).
    criteria: HashMap<String, Vec<Criterion>>,
}

impl Catalog {
    /// Loads the files embedded in the binary.
    pub fn embedded() -> Result<Self, RouterError> {
        Self::load(&DataSource::Embedded)
    }

    /// Loads and validates the catalog from `source`: unique names, known groups, one
    /// criteria file per scenario and none for unknown scenarios, known basic sets.
    pub fn load(source: &DataSource) -> Result<Self, RouterError> {
        let files = source.read()?;
        let (groups, scenarios) = parse_scenarios(&files.scenarios)?;
        let names: Vec<&str> = scenarios.iter().map(|s| s.name.as_str()).collect();
        let criteria = criteria::resolve(&files.basics, &files.scenario_criteria, &names)?;
        let index = scenarios
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        Ok(Self {
            groups,
            scenarios,
            index,
            criteria,
        })
    }

    /// The group names, in file order.
    pub fn groups(&self) -> &[String] {
        &self.groups
    }

    /// Whether `group` is one of the groups.
    pub fn has_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// Every scenario, in file order.
    pub fn scenarios(&self) -> &[Scenario] {
        &self.scenarios
    }

    /// The scenario called `name`.
    pub fn get(&self, name: &str) -> Option<&Scenario> {
        self.index.get(name).map(|&i| &self.scenarios[i])
    }

    /// The resolved criteria of scenario `name` (inherited first, then its own).
    pub fn criteria(&self, name: &str) -> Option<&[Criterion]> {
        self.criteria.get(name).map(Vec::as_slice)
    }
}

/// Parses `scenarios.toml` and checks names and groups.
fn parse_scenarios(file: &DataFile) -> Result<(Vec<String>, Vec<Scenario>), RouterError> {
    let parsed: ScenariosFile = file.parse_toml()?;
    let dup = |kind, name: &str| RouterError::Duplicate {
        kind,
        name: name.to_owned(),
        path: file.path.clone(),
    };
    let mut seen = HashSet::new();
    if let Some(g) = parsed.groups.iter().find(|g| !seen.insert(g.as_str())) {
        return Err(dup("group", g));
    }
    let mut names = HashSet::new();
    let mut scenarios = Vec::with_capacity(parsed.scenarios.len());
    for entry in parsed.scenarios {
        if !names.insert(entry.name.clone()) {
            return Err(dup("scenario", &entry.name));
        }
        if let Some(group) = &entry.group {
            if !seen.contains(group.as_str()) {
                return Err(RouterError::UnknownGroup {
                    scenario: entry.name,
                    group: group.clone(),
                });
            }
        }
        scenarios.push(Scenario {
            name: entry.name,
            group: entry.group,
            description: entry.description,
        });
    }
    Ok((parsed.groups, scenarios))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_data_is_valid() {
        let catalog = Catalog::embedded().expect("router/data must validate");
        assert!(
            catalog.get("default").is_some(),
            "`default` scenario missing"
        );
        for s in catalog.scenarios() {
            assert!(
                catalog.criteria(&s.name).is_some_and(|c| !c.is_empty()),
                "{}",
                s.name
            );
        }
    }
}
