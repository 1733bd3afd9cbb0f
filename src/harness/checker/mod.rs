//! Checkers: each turns a paired history into a [`CheckResult`].

pub mod counter;
pub mod linearizable;
pub mod register;
pub mod set;

use serde::{Serialize, Serializer};
use serde_json::Value;
use std::fmt;

/// Jepsen's `:valid?`: `true`, `false` or `:unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Validity {
    Valid,
    Invalid,
    /// The checker could not decide (a budget ran out, or data was missing).
    Unknown,
}

impl Validity {
    /// Invalid beats unknown beats valid.
    pub fn merge(self, other: Validity) -> Validity {
        use Validity::*;
        match (self, other) {
            (Invalid, _) | (_, Invalid) => Invalid,
            (Unknown, _) | (_, Unknown) => Unknown,
            _ => Valid,
        }
    }

    pub fn from_bool(valid: bool) -> Validity {
        if valid {
            Validity::Valid
        } else {
            Validity::Invalid
        }
    }
}

impl Serialize for Validity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Validity::Valid => s.serialize_bool(true),
            Validity::Invalid => s.serialize_bool(false),
            Validity::Unknown => s.serialize_str("unknown"),
        }
    }
}

impl fmt::Display for Validity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Validity::Valid => "true",
            Validity::Invalid => "false",
            Validity::Unknown => "unknown",
        })
    }
}

/// One checker's verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub valid: Validity,
    /// One or two lines a person reads first.
    pub summary: String,
    /// Everything else, for the results file.
    pub details: Value,
}

impl CheckResult {
    pub fn new(name: &str, valid: Validity, summary: impl Into<String>, details: Value) -> Self {
        CheckResult {
            name: name.to_string(),
            valid,
            summary: summary.into(),
            details,
        }
    }

    pub fn is_valid(&self) -> bool {
        self.valid == Validity::Valid
    }
}
