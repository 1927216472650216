//! Why a member cannot be delivered. Such a job is set aside into the failed list
//! with this reason, and no request is made.

use std::fmt;

/// A malformed job: the field at fault (when one is) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// The member's field, e.g. `callback` or `headers`; `None` when the member as a
    /// whole is at fault (not JSON, too large).
    pub field: Option<&'static str>,
    /// What is wrong, as the end of a sentence that starts with the field.
    pub problem: String,
}

impl Malformed {
    /// The member as a whole is at fault.
    pub fn member(problem: impl Into<String>) -> Malformed {
        Malformed {
            field: None,
            problem: problem.into(),
        }
    }

    /// One field is at fault.
    pub fn field(field: &'static str, problem: impl Into<String>) -> Malformed {
        Malformed {
            field: Some(field),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(field) => write!(f, "malformed job: `{field}` {}", self.problem),
            None => write!(f, "malformed job: {}", self.problem),
        }
    }
}

impl std::error::Error for Malformed {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_as_a_sentence_naming_the_field() {
        let e = Malformed::field("maxRetry", "must be a whole number from 0 to 1000, got -1");
        assert_eq!(
            e.to_string(),
            "malformed job: `maxRetry` must be a whole number from 0 to 1000, got -1"
        );
        let e = Malformed::member("the member is not a JSON object");
        assert_eq!(
            e.to_string(),
            "malformed job: the member is not a JSON object"
        );
    }
}
