//! When an agent answers in its channels: shared by the agent records
//! (`agents`) and their JSON shape (`views`), below both.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// When an agent answers in the channels it is a member of.
// Read through a string so a wrong type or value is an error naming the field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum ResponsePolicy {
    /// When a message mentions it by name (`@name`).
    #[default]
    Mention,
    /// To every message a human sends.
    Always,
    /// Never on its own; only runs started explicitly.
    Manual,
}

impl ResponsePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponsePolicy::Mention => "mention",
            ResponsePolicy::Always => "always",
            ResponsePolicy::Manual => "manual",
        }
    }

    /// The stored form. A value this version does not know (written by a
    /// newer one) reads as `manual`: an agent that stays quiet is the safe side.
    pub fn from_stored(s: &str) -> Self {
        match s {
            "mention" => ResponsePolicy::Mention,
            "always" => ResponsePolicy::Always,
            _ => ResponsePolicy::Manual,
        }
    }
}

impl TryFrom<String> for ResponsePolicy {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        match s.as_str() {
            "mention" => Ok(ResponsePolicy::Mention),
            "always" => Ok(ResponsePolicy::Always),
            "manual" => Ok(ResponsePolicy::Manual),
            _ => Err(format!("must be `mention`, `always` or `manual` (got {s:?})")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_round_trip_through_the_store_form() {
        for p in [ResponsePolicy::Mention, ResponsePolicy::Always, ResponsePolicy::Manual] {
            assert_eq!(ResponsePolicy::from_stored(p.as_str()), p);
        }
        assert_eq!(ResponsePolicy::from_stored("from-the-future"), ResponsePolicy::Manual);
        assert_eq!(ResponsePolicy::default(), ResponsePolicy::Mention);
        assert_eq!(ResponsePolicy::try_from("always".to_owned()), Ok(ResponsePolicy::Always));
        assert!(ResponsePolicy::try_from("Always".to_owned()).is_err());
    }
}
