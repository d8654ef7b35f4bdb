//! The links a chat's content parts carry, judged before the request goes
//! anywhere ([`super::media`] calls it): any field whose name ends in `url`,
//! `http(s)` only, and no private, loopback or link-local address, an IPv6
//! address judged by any IPv4 address it carries, a name by every address
//! it resolves to here (refused when it resolves to none).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use serde_json::Value;

use super::ApiError;

/// Longest wait for a link's name to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Every string under a key ending in `url` within `value`, with where it
/// is: `(param, url)`.
pub(super) fn links<'a>(
    value: &'a Value,
    at: &str,
    depth: usize,
    out: &mut Vec<(String, &'a str)>,
) {
    let Value::Object(fields) = value else {
        return;
    };
    if depth > 4 {
        return;
    }
    for (key, v) in fields {
        let here = format!("{at}.{key}");
        match v {
            Value::String(url) if key.to_ascii_lowercase().ends_with("url") => {
                out.push((here, url.as_str()));
            }
            Value::Object(_) => links(v, &here, depth + 1, out),
            _ => {}
        }
    }
}

/// A link whose host is a name: judged by the addresses it resolves to.
#[derive(Debug)]
pub(super) struct Named {
    param: String,
    pub(super) host: String,
    pub(super) port: u16,
}

impl Named {
    pub(super) async fn resolve(self) -> Result<(), ApiError> {
        let looked = tokio::time::timeout(
            RESOLVE_TIMEOUT,
            tokio::net::lookup_host((self.host.as_str(), self.port)),
        )
        .await;
        let addrs: Vec<IpAddr> = match looked {
            Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
            _ => Vec::new(),
        };
        if addrs.is_empty() {
            return Err(link_refused(
                &self.param,
                &format!(
                    "its host {} cannot be resolved from this node, so where it leads cannot be checked",
                    self.host
                ),
            ));
        }
        if let Some(ip) = addrs.into_iter().find(|ip| private_ip(*ip)) {
            return Err(link_refused(
                &self.param,
                &format!(
                    "its host {} resolves to {ip}, in a private network",
                    self.host
                ),
            ));
        }
        Ok(())
    }
}

/// A link checked as far as it can be without a lookup: `Some` when its
/// host is a name to resolve. `data:` URLs pass (their content is judged
/// by the part's own check, their size by the body's limit).
pub(super) fn judge_link(param: &str, url: &str) -> Result<Option<Named>, ApiError> {
    if url.starts_with("data:") {
        return Ok(None);
    }
    let link = reqwest::Url::parse(url)
        .map_err(|e| bad_link(param, &format!("not a link or data: URL ({e})")))?;
    if !matches!(link.scheme(), "http" | "https") {
        return Err(bad_link(
            param,
            &format!("links must be http or https, not {}", link.scheme()),
        ));
    }
    let Some(host) = link.host_str() else {
        return Err(bad_link(param, "it names no host"));
    };
    // Addresses come normalised (`http://2130706433/` is 127.0.0.1); an
    // IPv6 one in brackets.
    if let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        if private_ip(ip) {
            return Err(link_refused(
                param,
                &format!("{ip} is in a private network"),
            ));
        }
        return Ok(None);
    }
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    let local_name = name == "localhost"
        || [".localhost", ".local", ".internal", ".lan", ".home.arpa"]
            .iter()
            .any(|s| name.ends_with(s))
        || !name.contains('.');
    if local_name {
        return Err(link_refused(
            param,
            &format!("{name} names a private network"),
        ));
    }
    Ok(Some(Named {
        param: param.to_owned(),
        port: link.port_or_known_default().unwrap_or(443),
        host: name,
    }))
}

/// A link that is not one: `invalid_image` for an image, else
/// `invalid_link`.
fn bad_link(param: &str, why: &str) -> ApiError {
    if param.ends_with("image_url.url") {
        return invalid_image(param, why);
    }
    ApiError::invalid(
        param,
        format!("The link is not one this node takes: {why}."),
    )
    .code("invalid_link")
}

/// The refusal of a link into a private network (`image_link_not_allowed`
/// for an image, `media_link_not_allowed` for the others).
fn link_refused(param: &str, why: &str) -> ApiError {
    let (what, code) = if param.ends_with("image_url.url") {
        ("image link", "image_link_not_allowed")
    } else {
        ("link", "media_link_not_allowed")
    };
    ApiError::invalid(
        param,
        format!(
            "The {what} is not allowed: {why}. This node does not have anything fetched from private networks on a client's behalf (http.private_image_links allows it)."
        ),
    )
    .code(code)
}

/// Whether an address is this machine's or a private network's: loopback,
/// private, link-local, shared or unspecified, or an IPv6 address that
/// carries such an IPv4 address (mapped, compatible, translated, NAT64,
/// 6to4, Teredo).
fn private_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || (a == 100 && (64..128).contains(&b)) // shared (CGNAT)
                || a == 0
        }
        IpAddr::V6(v6) => {
            if embedded_v4(v6)
                .into_iter()
                .any(|v4| private_ip(IpAddr::V4(v4)))
            {
                return true;
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0], s[1], s[2]) == (0x64, 0xff9b, 1) // NAT64 for local use
        }
    }
}

/// The IPv4 addresses an IPv6 address carries, by the forms that route to
/// them.
fn embedded_v4(v6: Ipv6Addr) -> Vec<Ipv4Addr> {
    let s = v6.segments();
    let low = Ipv4Addr::from(v6.to_bits() as u32);
    let mut found = Vec::new();
    if let Some(v4) = v6.to_ipv4_mapped() {
        found.push(v4); // ::ffff:a.b.c.d
    }
    if s[..6] == [0; 6] && !(v6.is_loopback() || v6.is_unspecified()) {
        found.push(low); // ::a.b.c.d, compatible (deprecated)
    }
    if s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 {
        found.push(low); // ::ffff:0:a.b.c.d, translated
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        found.push(low); // 64:ff9b::a.b.c.d, NAT64
    }
    if s[0] == 0x2002 {
        found.push(Ipv4Addr::from((u32::from(s[1]) << 16) | u32::from(s[2]))); // 6to4
    }
    if s[0] == 0x2001 && s[1] == 0 {
        found.push(Ipv4Addr::from((u32::from(s[2]) << 16) | u32::from(s[3]))); // Teredo server
        found.push(Ipv4Addr::from(!(v6.to_bits() as u32))); // Teredo client
    }
    found
}

/// The refusal of an image that is not one this node takes.
pub(super) fn invalid_image(param: &str, why: &str) -> ApiError {
    ApiError::invalid(
        param,
        format!("The image is not one this node takes: {why}."),
    )
    .code("invalid_image")
}
