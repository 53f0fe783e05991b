//! The workflows' shape and per-step policy, from `workflows/notion_sync.toml`, validated at
//! start-up against the steps this build implements.

use std::{collections::BTreeMap, path::Path, time::Duration};

use serde::Deserialize;

/// The file built into the binary (the default when `WORKFLOW_FILE` is unset).
pub const BUILT_IN: &str = include_str!("../../workflows/notion_sync.toml");

pub const EVENT_WORKFLOW: &str = "notion_event";
pub const SYNC_WORKFLOW: &str = "notion_sync";

/// The steps this build implements, by workflow, with the steps whose output each one reads.
const IMPLEMENTED: &[(&str, &str, &[&str])] = &[
    (EVENT_WORKFLOW, "discover_users", &[]),
    (SYNC_WORKFLOW, "debounce", &[]),
    (SYNC_WORKFLOW, "fetch", &[]),
    (SYNC_WORKFLOW, "generate", &["fetch"]),
    (SYNC_WORKFLOW, "persist", &["fetch", "generate"]),
];

/// Which step a sync run starts at and where events join it.
pub const DEBOUNCE_STEP: &str = "debounce";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepPolicy {
    /// Longest a single attempt may run before it counts as a (retryable) failure.
    pub timeout: Duration,
    /// Attempts before the run fails.
    pub max_attempts: u32,
}

/// The policy of a stored run's step that the file no longer lists (see [`Definitions::policy`]).
const UNLISTED_STEP_POLICY: StepPolicy = StepPolicy { timeout: Duration::from_secs(30), max_attempts: 1 };

/// The validated definitions.
#[derive(Debug, Clone)]
pub struct Definitions {
    workflows: BTreeMap<String, Vec<String>>,
    policies: BTreeMap<String, StepPolicy>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid workflow definition ({source_name}): {reason}")]
pub struct DefinitionError {
    pub source_name: String,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    workflows: BTreeMap<String, WorkflowSpec>,
    steps: BTreeMap<String, StepSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkflowSpec {
    steps: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepSpec {
    timeout_seconds: u64,
    attempts: Attempts,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Attempts {
    Fixed(u32),
    /// `"notion"`: NOTION_MAX_RETRIES + 1.
    Named(String),
}

impl Definitions {
    /// Loads `path`, or the built-in file when `None`.
    pub fn load(path: Option<&Path>, notion_max_retries: u32) -> Result<Self, DefinitionError> {
        match path {
            None => Self::parse(BUILT_IN, "built-in workflows/notion_sync.toml", notion_max_retries),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| DefinitionError {
                    source_name: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                Self::parse(&text, &path.display().to_string(), notion_max_retries)
            }
        }
    }

    pub fn parse(text: &str, source_name: &str, notion_max_retries: u32) -> Result<Self, DefinitionError> {
        let err = |reason: String| DefinitionError { source_name: source_name.to_owned(), reason };
        let file: File = toml::from_str(text).map_err(|e| err(e.to_string()))?;

        for (workflow, step, _) in IMPLEMENTED {
            let Some(spec) = file.workflows.get(*workflow) else {
                return Err(err(format!("workflow `{workflow}` is missing")));
            };
            if !spec.steps.iter().any(|s| s == step) {
                return Err(err(format!("workflow `{workflow}` must include step `{step}`")));
            }
        }
        for (workflow, spec) in &file.workflows {
            let mut seen: Vec<&str> = Vec::new();
            for step in &spec.steps {
                let Some((_, _, reads)) = IMPLEMENTED.iter().find(|(w, s, _)| w == workflow && s == step)
                else {
                    return Err(err(format!(
                        "workflow `{workflow}` names step `{step}`, which this build does not implement"
                    )));
                };
                if seen.contains(&step.as_str()) {
                    return Err(err(format!("workflow `{workflow}` names step `{step}` twice")));
                }
                if let Some(missing) = reads.iter().find(|r| !seen.contains(r)) {
                    return Err(err(format!(
                        "in `{workflow}`, step `{step}` reads the output of `{missing}`, which must come before it"
                    )));
                }
                if !file.steps.contains_key(step) {
                    return Err(err(format!("step `{step}` has no [steps.{step}] policy")));
                }
                seen.push(step);
            }
        }
        if file.workflows.get(SYNC_WORKFLOW).and_then(|w| w.steps.first()).map(String::as_str)
            != Some(DEBOUNCE_STEP)
        {
            return Err(err(format!(
                "`{SYNC_WORKFLOW}` must start with `{DEBOUNCE_STEP}` (events join a sync there)"
            )));
        }

        let mut policies = BTreeMap::new();
        for (name, spec) in file.steps {
            let max_attempts = match spec.attempts {
                Attempts::Fixed(0) => return Err(err(format!("step `{name}`: attempts must be at least 1"))),
                Attempts::Fixed(n) => n,
                Attempts::Named(ref s) if s == "notion" => notion_max_retries + 1,
                Attempts::Named(other) => {
                    return Err(err(format!(
                        "step `{name}`: attempts must be a number or \"notion\", not \"{other}\""
                    )));
                }
            };
            if spec.timeout_seconds == 0 {
                return Err(err(format!("step `{name}`: timeout_seconds must be at least 1")));
            }
            policies.insert(
                name,
                StepPolicy { timeout: Duration::from_secs(spec.timeout_seconds), max_attempts },
            );
        }
        let workflows = file.workflows.into_iter().map(|(name, spec)| (name, spec.steps)).collect();
        Ok(Self { workflows, policies })
    }

    /// The step after `step` in `workflow`, or `None` after the last one.
    pub fn next_step(&self, workflow: &str, step: &str) -> Option<&str> {
        let steps = self.workflows.get(workflow)?;
        let at = steps.iter().position(|s| s == step)?;
        steps.get(at + 1).map(String::as_str)
    }

    /// The step's policy. Steps of stored runs that this file no longer lists still get one
    /// (the strictest), so such a run fails clearly instead of hanging.
    pub fn policy(&self, step: &str) -> StepPolicy {
        self.policies.get(step).cloned().unwrap_or(UNLISTED_STEP_POLICY)
    }

    /// The longest any step may run (a step no longer listed included).
    pub fn longest_timeout(&self) -> Duration {
        self.policies.values().map(|p| p.timeout).fold(UNLISTED_STEP_POLICY.timeout, Duration::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_file_is_valid() {
        let defs = Definitions::parse(BUILT_IN, "built-in", 3).expect("valid");
        assert_eq!(defs.next_step(SYNC_WORKFLOW, "debounce"), Some("fetch"));
        assert_eq!(defs.next_step(SYNC_WORKFLOW, "persist"), None);
        assert_eq!(defs.next_step(EVENT_WORKFLOW, "discover_users"), None);
        assert_eq!(defs.policy("fetch").max_attempts, 4, "NOTION_MAX_RETRIES + 1");
        assert_eq!(defs.policy("generate").max_attempts, 5);
    }

    #[test]
    fn an_order_that_reads_outputs_before_they_exist_is_refused() {
        let swapped = BUILT_IN.replace(
            r#"["debounce", "fetch", "generate", "persist"]"#,
            r#"["debounce", "generate", "fetch", "persist"]"#,
        );
        let e = Definitions::parse(&swapped, "t", 3).unwrap_err();
        assert!(e.reason.contains("reads the output of `fetch`"), "{e}");
    }

    #[test]
    fn unknown_steps_missing_policies_and_bad_values_are_refused() {
        let unknown = BUILT_IN.replace(r#""persist"]"#, r#""persist", "notify"]"#);
        assert!(Definitions::parse(&unknown, "t", 3).unwrap_err().reason.contains("does not implement"));
        let no_policy = BUILT_IN.replace("[steps.persist]\ntimeout_seconds = 30\nattempts = 10\n", "");
        assert!(Definitions::parse(&no_policy, "t", 3).unwrap_err().reason.contains("no [steps.persist]"));
        let zero = BUILT_IN.replace("attempts = 5", "attempts = 0");
        assert!(Definitions::parse(&zero, "t", 3).is_err());
        let missing = BUILT_IN.replace(r#"steps = ["discover_users"]"#, "steps = []");
        assert!(Definitions::parse(&missing, "t", 3).is_err());
    }
}
