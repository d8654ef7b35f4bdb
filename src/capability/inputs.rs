//! What a request carries (text, images, audio) and what a capability takes:
//! a chat with an image goes only to capabilities that take images.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{Kind, ParseError};

/// One kind of content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Input {
    Text,
    Image,
    Audio,
}

impl Input {
    pub const ALL: [Input; 3] = [Input::Text, Input::Image, Input::Audio];

    pub fn as_str(self) -> &'static str {
        match self {
            Input::Text => "text",
            Input::Image => "image",
            Input::Audio => "audio",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl FromStr for Input {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Input::ALL
            .into_iter()
            .find(|i| i.as_str() == s)
            .ok_or_else(|| ParseError(format!("input {s:?} must be text, image or audio")))
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of inputs: what a capability takes, or what a request carries.
/// Written as a list of names (`["text", "image"]`).
#[derive(Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct Inputs(u8);

impl Inputs {
    pub const NONE: Inputs = Inputs(0);
    pub const TEXT: Inputs = Inputs(1);

    pub fn with(self, input: Input) -> Self {
        Self(self.0 | input.bit())
    }

    pub fn without(self, input: Input) -> Self {
        Self(self.0 & !input.bit())
    }

    pub fn has(self, input: Input) -> bool {
        self.0 & input.bit() != 0
    }

    /// Whether every input of `other` is in this set.
    pub fn covers(self, other: Inputs) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Input> {
        Input::ALL.into_iter().filter(move |i| self.has(*i))
    }

    /// What a capability of `kind` takes unless it says: vision models an
    /// image (with a question about it), audio models audio, every other
    /// kind text.
    pub fn of_kind(kind: &Kind) -> Self {
        match kind.category() {
            "vision" => Inputs::TEXT.with(Input::Image),
            "audio" => Inputs::NONE.with(Input::Audio),
            _ => Inputs::TEXT,
        }
    }

    /// The known names of `names` (others are left out: a peer may know of
    /// inputs this node does not).
    pub fn known(names: &[String]) -> Self {
        names
            .iter()
            .filter_map(|n| n.parse().ok())
            .fold(Inputs::NONE, Inputs::with)
    }
}

impl FromIterator<Input> for Inputs {
    fn from_iter<I: IntoIterator<Item = Input>>(iter: I) -> Self {
        iter.into_iter().fold(Inputs::NONE, Inputs::with)
    }
}

impl fmt::Debug for Inputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl fmt::Display for Inputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Input::as_str).collect();
        if names.is_empty() {
            f.write_str("nothing")
        } else {
            f.write_str(&names.join(", "))
        }
    }
}

impl TryFrom<Vec<String>> for Inputs {
    type Error = ParseError;
    fn try_from(names: Vec<String>) -> Result<Self, Self::Error> {
        names.iter().map(|n| n.parse::<Input>()).collect()
    }
}

impl From<Inputs> for Vec<String> {
    fn from(inputs: Inputs) -> Self {
        inputs.iter().map(|i| i.as_str().to_owned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_of_inputs() {
        let vlm = Inputs::TEXT.with(Input::Image);
        let photo_question = Inputs::TEXT.with(Input::Image);
        assert!(vlm.covers(photo_question));
        assert!(vlm.covers(Inputs::TEXT));
        assert!(!Inputs::TEXT.covers(photo_question));
        assert!(!vlm.covers(Inputs::NONE.with(Input::Audio)));
        assert_eq!(vlm.to_string(), "text, image");
        let kind = |k: &str| Inputs::of_kind(&k.parse().expect("kind"));
        assert_eq!(kind("llm/chat"), Inputs::TEXT);
        assert_eq!(kind("vision/classify"), vlm);
        assert_eq!(kind("audio/transcribe"), Inputs::NONE.with(Input::Audio));
        let names = vec!["image".to_owned(), "video".to_owned()];
        assert_eq!(Inputs::known(&names), Inputs::NONE.with(Input::Image));
        assert!(
            Inputs::try_from(names).is_err(),
            "a config names only known inputs"
        );
        let json: Inputs = serde_json::from_str(r#"["audio", "text"]"#).expect("inputs");
        assert_eq!(
            serde_json::to_string(&json).expect("json"),
            r#"["text","audio"]"#
        );
    }
}
