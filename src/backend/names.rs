//! What a model's name says about it, for models discovered on a backend with
//! nothing else to describe them: its kind, readable words, and the specialty
//! that well-known model families advertise in their names (a `coder`, a
//! `math` model, a vision model), so that requests reach them by meaning.

use crate::capability::Kind;

/// What a model family is good at, recognised by a marker in its name.
struct Specialty {
    /// Lowercase fragments of a model name. Markers of three letters or fewer
    /// must be a whole word of the name; longer ones may sit anywhere in it.
    markers: &'static [&'static str],
    domain: &'static str,
    topics: &'static [&'static str],
    good_at: &'static str,
}

/// First match wins: the narrower families come before the broader ones
/// whose markers they contain (`sqlcoder` before `coder`).
const SPECIALTIES: &[Specialty] = &[
    Specialty {
        markers: &["sqlcoder", "nsql", "text2sql", "sql"],
        domain: "databases",
        topics: &["SQL", "database queries", "tables", "joins"],
        good_at: "writing and fixing SQL queries",
    },
    Specialty {
        markers: &[
            "coder",
            "codestral",
            "codellama",
            "codegemma",
            "starcoder",
            "devstral",
            "codeqwen",
            "granite-code",
            "phind",
            "code",
        ],
        domain: "programming",
        topics: &["code", "programming", "debugging", "software"],
        good_at: "writing, explaining and fixing code",
    },
    Specialty {
        markers: &["mathstral", "math", "numina"],
        domain: "mathematics",
        topics: &["math", "equations", "calculus", "proofs"],
        good_at: "solving math problems and proofs",
    },
    Specialty {
        markers: &[
            "llava",
            "bakllava",
            "moondream",
            "vision",
            "minicpm-v",
            "pixtral",
            "vl",
        ],
        domain: "images",
        topics: &["images", "photos", "pictures", "what is in an image"],
        good_at: "describing images and answering questions about them",
    },
    Specialty {
        markers: &[
            "meditron",
            "medllama",
            "med42",
            "medgemma",
            "biomistral",
            "medical",
            "clinical",
        ],
        domain: "medicine",
        topics: &["health", "symptoms", "medications", "diseases"],
        good_at: "answering medical and health questions",
    },
    Specialty {
        markers: &["saul", "legal", "lawyer", "law"],
        domain: "law",
        topics: &["legal questions", "contracts", "rights"],
        good_at: "answering legal questions",
    },
    Specialty {
        markers: &["guard", "shieldgemma"],
        domain: "safety",
        topics: &["content moderation", "unsafe content"],
        good_at: "classifying whether content is safe",
    },
    Specialty {
        markers: &["translate", "nllb", "madlad", "seamless"],
        domain: "translation",
        topics: &["translation", "languages"],
        good_at: "translating text between languages",
    },
];

/// The words of a model name, lowercase.
fn words(name: &str) -> Vec<String> {
    name.to_ascii_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether a short marker is a word of the name, also when a version number
/// is glued to its front (`qwen2.5vl`: `5vl` holds `vl`).
fn has_word(words: &[String], marker: &str) -> bool {
    words
        .iter()
        .any(|w| w == marker || w.trim_start_matches(|c: char| c.is_ascii_digit()) == marker)
}

fn specialty(name: &str) -> Option<&'static Specialty> {
    let lower = name.to_ascii_lowercase();
    let words = words(name);
    SPECIALTIES.iter().find(|s| {
        s.markers.iter().any(|m| {
            if m.len() <= 3 {
                has_word(&words, m)
            } else {
                lower.contains(m)
            }
        })
    })
}

/// A capability kind guessed from a model's name.
pub(crate) fn kind_from_model_name(name: &str) -> Kind {
    let lower = name.to_ascii_lowercase();
    if lower.contains("embed") || lower.contains("minilm") || lower.contains("bge-") {
        Kind::embed()
    } else {
        Kind::chat()
    }
}

/// Description, domain and topics of a model known by its name (and, when the
/// backend says so, its family).
pub(crate) fn describe_model(
    name: &str,
    backend: &str,
    family: Option<&str>,
) -> (String, String, Vec<String>) {
    let mut description = format!("{} model served by {backend}", words(name).join(" "));
    if let Some(family) = family.filter(|f| !f.is_empty()) {
        description.push_str(&format!(" ({family} family)"));
    }
    match specialty(name) {
        Some(s) => {
            description.push_str(&format!(", good at {}", s.good_at));
            (
                description,
                s.domain.to_owned(),
                s.topics.iter().map(|t| (*t).to_owned()).collect(),
            )
        }
        None => (description, String::new(), Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_names() {
        assert_eq!(kind_from_model_name("nomic-embed-text"), Kind::embed());
        assert_eq!(kind_from_model_name("llama3.2"), Kind::chat());
    }

    #[test]
    fn specialties_from_names() {
        let domain = |n: &str| describe_model(n, "b", None).1;
        assert_eq!(domain("qwen2.5-coder:7b"), "programming");
        assert_eq!(domain("sqlcoder:15b"), "databases");
        assert_eq!(domain("mathstral:latest"), "mathematics");
        assert_eq!(domain("llava:13b"), "images");
        assert_eq!(domain("qwen2.5-vl:7b"), "images");
        assert_eq!(domain("qwen2.5vl:7b"), "images");
        assert_eq!(domain("meditron:7b"), "medicine");
        assert_eq!(domain("llama3.2:latest"), "");
        // A short marker must be a whole word: "vl" is not in "devlin".
        assert_eq!(domain("devlin-7b"), "");
        let (description, _, topics) = describe_model("qwen2.5-coder:7b", "ollama", Some("qwen2"));
        assert!(
            description
                .starts_with("qwen2 5 coder 7b model served by ollama (qwen2 family), good at")
        );
        assert!(topics.contains(&"code".to_owned()));
    }
}
