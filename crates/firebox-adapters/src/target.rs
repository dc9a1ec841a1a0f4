//! Which layers an adapter attaches to, by module path.
//!
//! Burn names every parameter by its field path (`blocks.0.attn.q.weight`); the *layer* is that
//! path without the trailing `.weight` (`blocks.0.attn.q`), the same string PyTorch's
//! `named_modules()` gives for the equivalent model. Three ways to select layers:
//!
//! - [`Targets::Names`]: HF peft's list form. A layer matches an entry when its path equals the
//!   entry or ends with `"." + entry` (`"q"` hits `blocks.0.attn.q` and `blocks.1.attn.q`).
//! - [`Targets::Regex`]: peft's string form, a regular expression that must match the **whole**
//!   path (`re.fullmatch`).
//! - [`Targets::Glob`]: shell-style patterns over the whole path, `*` for any run of characters
//!   (dots included) and `?` for one (`*.query`, `encoder.layers.*.mlp.fc1`).

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::AdapterError;

/// A selection of layers by module path (see the [module docs](self)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Targets {
    /// peft's list form: exact path or `.`-suffix match.
    Names(Vec<String>),
    /// peft's string form: a regular expression matching the whole path.
    Regex(String),
    /// Shell-style globs over the whole path (`*` any run, `?` one character).
    Glob(Vec<String>),
}

impl Targets {
    /// peft's list form from string slices.
    pub fn names<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Self {
        Targets::Names(names.into_iter().map(|s| s.as_ref().to_string()).collect())
    }

    /// A regular expression that must match the whole layer path.
    pub fn regex(pattern: impl Into<String>) -> Self {
        Targets::Regex(pattern.into())
    }

    /// Shell-style globs.
    pub fn glob<S: AsRef<str>>(patterns: impl IntoIterator<Item = S>) -> Self {
        Targets::Glob(
            patterns
                .into_iter()
                .map(|s| s.as_ref().to_string())
                .collect(),
        )
    }

    /// Compiles the selection into a matcher; a bad regular expression is an error naming it.
    pub fn matcher(&self) -> Result<TargetMatcher, AdapterError> {
        let compile = |pattern: String| {
            Regex::new(&pattern).map_err(|e| AdapterError::BadPattern {
                pattern: pattern.clone(),
                message: e.to_string(),
            })
        };
        Ok(match self {
            Targets::Names(names) => TargetMatcher::Names(names.clone()),
            Targets::Regex(pattern) => TargetMatcher::Regex(compile(format!("^(?:{pattern})$"))?),
            Targets::Glob(patterns) => {
                let alternatives: Vec<String> = patterns.iter().map(|p| glob_to_regex(p)).collect();
                TargetMatcher::Regex(compile(format!("^(?:{})$", alternatives.join("|")))?)
            }
        })
    }
}

impl std::fmt::Display for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Targets::Names(names) => write!(f, "names {names:?}"),
            Targets::Regex(pattern) => write!(f, "regex `{pattern}`"),
            Targets::Glob(patterns) => write!(f, "globs {patterns:?}"),
        }
    }
}

fn glob_to_regex(glob: &str) -> String {
    let mut out = String::new();
    for c in glob.chars() {
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    out
}

/// A compiled [`Targets`].
#[derive(Clone, Debug)]
pub enum TargetMatcher {
    /// peft list semantics.
    Names(Vec<String>),
    /// Anchored regular expression.
    Regex(Regex),
}

impl TargetMatcher {
    /// Whether the layer at `path` is selected.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            TargetMatcher::Names(names) => names.iter().any(|name| {
                path == name
                    || (path.len() > name.len()
                        && path.ends_with(name.as_str())
                        && path.as_bytes()[path.len() - name.len() - 1] == b'.')
            }),
            TargetMatcher::Regex(regex) => regex.is_match(path),
        }
    }
}

/// The layer path of a parameter path: `blocks.0.attn.q.weight` → `Some("blocks.0.attn.q")`;
/// `None` for parameters not named `weight`. A model that is itself a `Linear` has layer `""`.
pub fn layer_of_weight(param_path: &str) -> Option<&str> {
    if param_path == "weight" {
        Some("")
    } else {
        param_path.strip_suffix(".weight")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peft_list_matches_exact_names_and_dot_suffixes_only() {
        let m = Targets::names(["q", "mlp.fc1"]).matcher().unwrap();
        assert!(m.matches("blocks.0.attn.q"));
        assert!(m.matches("q"));
        assert!(m.matches("blocks.1.mlp.fc1"));
        assert!(!m.matches("blocks.0.attn.qq"));
        assert!(!m.matches("blocks.0.attn.xq"));
        assert!(!m.matches("blocks.0.mlp.fc2"));
    }

    #[test]
    fn regex_must_match_the_whole_path() {
        let m = Targets::regex(r"blocks\.0\.attn\.(q|k)").matcher().unwrap();
        assert!(m.matches("blocks.0.attn.q"));
        assert!(!m.matches("blocks.0.attn.qx"));
        assert!(!m.matches("xblocks.0.attn.q"));
        assert!(!m.matches("blocks.1.attn.q"));
    }

    #[test]
    fn globs_span_path_components() {
        let m = Targets::glob(["*.query", "encoder.layers.*.mlp.fc1"])
            .matcher()
            .unwrap();
        assert!(m.matches("encoder.layers.3.attn.query"));
        assert!(m.matches("encoder.layers.10.mlp.fc1"));
        assert!(!m.matches("encoder.layers.1.mlp.fc2"));
        assert!(!m.matches("query"));
    }

    #[test]
    fn a_bad_regex_is_an_error_naming_it() {
        let err = Targets::regex("blocks.(").matcher().unwrap_err();
        assert!(err.to_string().contains("blocks.("), "{err}");
    }

    #[test]
    fn layer_paths_drop_the_weight_suffix() {
        assert_eq!(layer_of_weight("a.b.weight"), Some("a.b"));
        assert_eq!(layer_of_weight("weight"), Some(""));
        assert_eq!(layer_of_weight("a.b.bias"), None);
        assert_eq!(layer_of_weight("a.bweight"), None);
    }
}
