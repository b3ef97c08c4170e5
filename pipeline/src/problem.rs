//! Configuration problems: each names where it is (stage, business, field)
//! and what is wrong; they are collected, never reported one at a time.

use std::fmt;

/// Where a problem is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// The file as a whole.
    Topology,
    /// The `[pipeline]` section.
    Pipeline,
    /// A `[businesses]` entry.
    Business(String),
    /// The `[auth]` section.
    Auth,
    /// A named stage.
    Stage(String),
    /// A stage without a usable name, by its position in `[[stages]]`.
    StageIndex(usize),
    /// A dotted field path (interpolation problems).
    Field(String),
}

/// One problem of a topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where it is.
    pub scope: Scope,
    /// What is wrong, as a sentence fragment naming the field.
    pub message: String,
}

impl Problem {
    /// A problem of the whole file.
    pub fn topology(message: impl Into<String>) -> Self {
        Problem { scope: Scope::Topology, message: message.into() }
    }
    /// A problem of `[pipeline]`.
    pub fn pipeline(message: impl Into<String>) -> Self {
        Problem { scope: Scope::Pipeline, message: message.into() }
    }
    /// A problem of `[auth]`.
    pub fn auth(message: impl Into<String>) -> Self {
        Problem { scope: Scope::Auth, message: message.into() }
    }
    /// A problem of one business.
    pub fn business(name: &str, message: impl Into<String>) -> Self {
        Problem { scope: Scope::Business(name.to_owned()), message: message.into() }
    }
    /// A problem of one stage.
    pub fn stage(name: &str, message: impl Into<String>) -> Self {
        Problem { scope: Scope::Stage(name.to_owned()), message: message.into() }
    }
    /// A problem of an unnamed stage.
    pub fn stage_index(index: usize, message: impl Into<String>) -> Self {
        Problem { scope: Scope::StageIndex(index), message: message.into() }
    }
    /// A problem at a dotted path such as `stages[2].url`.
    pub fn at_path(path: &str, message: impl Into<String>) -> Self {
        Problem { scope: Scope::Field(path.to_owned()), message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scope {
            Scope::Topology => write!(f, "topology: {}", self.message),
            Scope::Pipeline => write!(f, "[pipeline]: {}", self.message),
            Scope::Business(name) => write!(f, "business `{name}`: {}", self.message),
            Scope::Auth => write!(f, "[auth]: {}", self.message),
            Scope::Stage(name) => write!(f, "stage `{name}`: {}", self.message),
            Scope::StageIndex(index) => write!(f, "stages[{index}]: {}", self.message),
            Scope::Field(path) => write!(f, "{path}: {}", self.message),
        }
    }
}

/// Adds a problem when `value` is below `min` or above `max` (a value so
/// large it can only be a typo, or would let one setting take the
/// machine).
pub fn require_within(problems: &mut Vec<String>, field: &str, value: impl Into<u64>, min: u64, max: u64) {
    let value = value.into();
    if value < min {
        problems.push(format!("`{field}` must be at least {min}"));
    } else if value > max {
        problems.push(format!("`{field}` = {value} is more than {max}, the most accepted"));
    }
}

/// Every problem found; displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl From<Vec<Problem>> for Problems {
    fn from(problems: Vec<Problem>) -> Self {
        Problems(problems)
    }
}

impl Problems {
    /// Each problem rendered as a line, in order.
    pub fn lines(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.len();
        writeln!(f, "{count} problem{} in the topology:", if count == 1 { "" } else { "s" })?;
        for problem in &self.0 {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}
