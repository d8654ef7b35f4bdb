//! `[[mcp]]`: Model Context Protocol servers whose tools this node offers.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::capability::{Kind, Share};

/// `[[mcp]]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// What the server is called here (its tools are listed under it).
    pub name: String,
    /// A program to start, spoken to over its stdin and stdout.
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment of the program, on top of the node's.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Or a server reached over streamable HTTP.
    #[serde(default)]
    pub url: Option<String>,
    /// Who besides this node's own clients may call its tools: `"local"`
    /// (the default: a tool can move a camera or spend money), `"mesh"` or
    /// a list of PeerIds and roles, as a capability's `share`.
    #[serde(default = "local")]
    pub share: Share,
    /// Longest a call (or a listing) may take.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Longest the server may take to start and answer `initialize`: a
    /// program that loads a runtime or installs itself on its first run
    /// (Python, `npx`) can need far more than a call.
    #[serde(default = "default_start_timeout", with = "humantime_serde")]
    pub start_timeout: Duration,
    /// The kind of its tools as capabilities (`tool/*`; `tool/mcp` unless
    /// set), and their domain: what typed intents and routing go by.
    #[serde(default = "default_kind")]
    pub kind: Kind,
    #[serde(default)]
    pub domain: String,
    /// What the operator adds to single tools, by the tool's name on the
    /// server: a kind, a domain, examples of requests it is for.
    #[serde(default)]
    pub tools: BTreeMap<String, ToolConfig>,
}

/// `[mcp.tools.<name>]`: what a server does not say about one of its tools.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    #[serde(default)]
    pub kind: Option<Kind>,
    #[serde(default)]
    pub domain: Option<String>,
    /// Requests the tool is for (routing by meaning uses them as it uses a
    /// capability's examples).
    #[serde(default)]
    pub examples: Vec<String>,
}

fn default_kind() -> Kind {
    Kind::tool()
}

fn local() -> Share {
    Share::Local
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_start_timeout() -> Duration {
    Duration::from_secs(60)
}

/// How a server is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpTransport {
    /// A child process: program, arguments, environment.
    Stdio {
        command: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
    },
    /// Streamable HTTP at this URL.
    Http(String),
}

impl McpConfig {
    /// A server started as `command args`, with the defaults of the rest.
    pub fn stdio(name: &str, command: &str, args: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            command: Some(command.to_owned()),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: BTreeMap::new(),
            url: None,
            share: Share::Local,
            timeout: default_timeout(),
            start_timeout: default_start_timeout(),
            kind: default_kind(),
            domain: String::new(),
            tools: BTreeMap::new(),
        }
    }

    /// A server reached over streamable HTTP at `url`.
    pub fn http(name: &str, url: &str) -> Self {
        Self {
            command: None,
            url: Some(url.to_owned()),
            ..Self::stdio(name, "", &[])
        }
    }

    /// How it is reached (the config was validated: exactly one of the two).
    pub fn transport(&self) -> McpTransport {
        match (&self.command, &self.url) {
            (Some(command), _) => McpTransport::Stdio {
                command: command.clone(),
                args: self.args.clone(),
                env: self.env.clone(),
            },
            (None, url) => McpTransport::Http(url.clone().unwrap_or_default()),
        }
    }
}

/// Longest server name (it is part of every tool's name in the mesh).
pub const MAX_NAME: usize = 32;

/// Names unique, well-formed and unlike a backend's; exactly one of
/// `command` and `url`, an http(s) URL; timeouts of 1 s to 10 min.
pub(super) fn validate(
    servers: &[McpConfig],
    backends: &[super::BackendConfig],
) -> Result<(), String> {
    let mut names = std::collections::HashSet::new();
    for m in servers {
        let well_formed = !m.name.is_empty()
            && m.name.len() <= MAX_NAME
            && m.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !well_formed {
            return Err(format!(
                "mcp name {:?}: 1 to {MAX_NAME} letters, digits, '-' or '_'",
                m.name
            ));
        }
        if !names.insert(m.name.as_str()) || backends.iter().any(|b| b.name == m.name) {
            return Err(format!(
                "mcp name {:?} is used twice (by a [[backend]] or another [[mcp]])",
                m.name
            ));
        }
        match (&m.command, &m.url) {
            (Some(c), None) if !c.trim().is_empty() => {}
            (None, Some(url)) => {
                let ok = reqwest::Url::parse(url)
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
                if !ok {
                    return Err(format!(
                        "mcp {:?}: url {url:?} is not an http(s) URL",
                        m.name
                    ));
                }
            }
            _ => {
                return Err(format!(
                    "mcp {:?}: give either command (a program spoken to over stdio) or url (streamable HTTP)",
                    m.name
                ));
            }
        }
        if m.url.is_some() && (!m.args.is_empty() || !m.env.is_empty()) {
            return Err(format!(
                "mcp {:?}: args and env are for a command, not a url",
                m.name
            ));
        }
        let kinds =
            std::iter::once(&m.kind).chain(m.tools.values().filter_map(|t| t.kind.as_ref()));
        for kind in kinds {
            if kind.category() != "tool" {
                return Err(format!(
                    "mcp {:?}: kind {kind} is not a tool kind (tool/...)",
                    m.name
                ));
            }
        }
        for (field, value) in [("timeout", m.timeout), ("start_timeout", m.start_timeout)] {
            if !(Duration::from_secs(1)..=Duration::from_secs(600)).contains(&value) {
                return Err(format!(
                    "mcp {:?}: {field} must be between 1s and 10m",
                    m.name
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn servers_are_read_with_tools_kept_local_by_default() {
        let c = parse(
            r#"
[[mcp]]
name = "camera"
command = "python3"
args = ["camera.py", "--fast"]
env = { CAMERA = "front" }

[[mcp]]
name = "search"
url = "http://127.0.0.1:9000/mcp"
share = "mesh"
timeout = "5s"
"#,
        )
        .expect("valid");
        assert_eq!(c.mcp[0].share, Share::Local);
        assert_eq!(c.mcp[0].timeout, Duration::from_secs(30));
        assert_eq!(c.mcp[0].start_timeout, Duration::from_secs(60));
        assert_eq!(
            c.mcp[0].transport(),
            McpTransport::Stdio {
                command: "python3".into(),
                args: vec!["camera.py".into(), "--fast".into()],
                env: BTreeMap::from([("CAMERA".into(), "front".into())]),
            }
        );
        assert_eq!(c.mcp[1].share, Share::Mesh);
        assert_eq!(
            c.mcp[1].transport(),
            McpTransport::Http("http://127.0.0.1:9000/mcp".into())
        );
    }

    #[test]
    fn tools_get_a_kind_a_domain_and_examples() {
        let c = parse(
            r#"
[[mcp]]
name = "camera"
command = "python3"
kind = "tool/camera"
domain = "barn"

[mcp.tools.camera-front]
examples = ["Take a photo of the paddock"]

[mcp.tools.snapshot]
kind = "tool/iot"
"#,
        )
        .expect("valid");
        let m = &c.mcp[0];
        assert_eq!(m.kind.as_str(), "tool/camera");
        assert_eq!(m.domain, "barn");
        assert_eq!(m.tools["camera-front"].examples.len(), 1);
        assert_eq!(
            m.tools["snapshot"].kind.as_ref().map(|k| k.as_str()),
            Some("tool/iot")
        );
        assert_eq!(McpConfig::stdio("x", "y", &[]).kind.as_str(), "tool/mcp");
    }

    #[test]
    fn bad_servers_are_refused_with_the_reason() {
        for (bad, says) in [
            ("name = \"cam\"", "either command"),
            (
                "name = \"cam\"\ncommand = \"x\"\nurl = \"http://a/mcp\"",
                "either command",
            ),
            ("name = \"cam\"\ncommand = \" \"", "either command"),
            (
                "name = \"cam\"\ncommand = \"x\"\nkind = \"llm/chat\"",
                "not a tool kind",
            ),
            (
                "name = \"cam\"\ncommand = \"x\"\n[mcp.tools.a]\nkind = \"vision/x\"",
                "not a tool kind",
            ),
            ("name = \"cam\"\nurl = \"ftp://a/mcp\"", "http(s) URL"),
            ("name = \"cam\"\nurl = \"not a url\"", "http(s) URL"),
            (
                "name = \"cam\"\nurl = \"http://a/mcp\"\nargs = [\"x\"]",
                "for a command",
            ),
            ("name = \"a b\"\ncommand = \"x\"", "letters, digits"),
            ("name = \"\"\ncommand = \"x\"", "letters, digits"),
            (
                "name = \"cam\"\ncommand = \"x\"\ntimeout = \"0s\"",
                "timeout",
            ),
            (
                "name = \"cam\"\ncommand = \"x\"\nstart_timeout = \"11m\"",
                "start_timeout must be between",
            ),
            (
                "name = \"cam\"\ncommand = \"x\"\nshare = \"everyone\"",
                "share",
            ),
            (
                "name = \"cam\"\ncommand = \"x\"\ncolour = 1",
                "unknown field",
            ),
        ] {
            let err = parse(&format!("[[mcp]]\n{bad}\n")).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
        let twice =
            "[[mcp]]\nname = \"cam\"\ncommand = \"x\"\n[[mcp]]\nname = \"cam\"\ncommand = \"y\"\n";
        assert!(parse(twice).expect_err("twice").contains("used twice"));
        let like_backend = "[[backend]]\nname = \"cam\"\nkind = \"openai\"\nurl = \"http://a\"\n[[mcp]]\nname = \"cam\"\ncommand = \"y\"\n";
        assert!(
            parse(like_backend)
                .expect_err("backend")
                .contains("used twice")
        );
    }
}
