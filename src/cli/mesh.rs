//! `atmosphere mesh init | admit | join | revoke`: the keys and certificates
//! of a closed mesh (`protocols/membership.md`). `init` and `admit` run where
//! the mesh key is kept; `join` on the admitted node; `revoke` hands a
//! revocation to a running node, which spreads it.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use ed25519_dalek::VerifyingKey;
use libp2p::PeerId;

use super::{ClientArgs, data_dir, emit, request};
use crate::identity;
use crate::member::{files, now_ms};
use crate::wire::member::{self, Grant, Revoke, Signed};

#[derive(Debug, Subcommand)]
pub enum MeshCommand {
    /// Make a mesh key (which admits nodes to a closed mesh) and admit this
    /// node; prints the `mesh.authority` every node of the mesh must set.
    Init {
        /// Where to write the mesh key (default: `mesh.key` in the data dir).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Roles for this node's own certificate; repeat for several.
        #[arg(long = "role")]
        roles: Vec<String>,
        #[command(flatten)]
        local: LocalArgs,
    },
    /// Sign a certificate admitting a node (its PeerId, from `atmosphere id`).
    Admit {
        peer_id: String,
        /// A role the certificate gives (what `share` lists may name); repeat
        /// for several.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// When it ends: a duration (`30d`, `12h`) or a UTC time
        /// (`2027-06-01T00:00:00Z`). Default: never.
        #[arg(long)]
        expires: Option<String>,
        /// The mesh key (default: `mesh.key` in the data dir).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Where to write the certificate (default: `<PeerId>.cert`).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        local: LocalArgs,
    },
    /// Install a certificate for this node (it must name this node's PeerId).
    Join {
        /// The certificate file `atmosphere mesh admit` wrote.
        file: PathBuf,
        #[command(flatten)]
        local: LocalArgs,
    },
    /// Make a private network's swarm key: only nodes holding it can connect
    /// at all (TCP only). Copy it to every node; `mesh.swarm_key` names it.
    SwarmKey {
        /// Where to write it (default: `swarm.key` in the data dir).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        local: LocalArgs,
    },
    /// Take a node out of the mesh: every certificate it was given until now
    /// is void. The revocation is handed to a running node (`--node`), which
    /// keeps it and spreads it to the mesh.
    Revoke {
        peer_id: String,
        /// The mesh key (default: `mesh.key` in the data dir).
        #[arg(long)]
        key: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
        /// Data dir where the mesh key is (default: the config's).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// Where this machine's node keeps its files.
#[derive(Debug, Args)]
pub struct LocalArgs {
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

fn parse_peer(text: &str) -> anyhow::Result<PeerId> {
    text.trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{text:?} is not a PeerId (`atmosphere id` prints a node's)"))
}

/// `--expires`: a duration from now or a UTC time, as unix milliseconds.
fn parse_expiry(text: &str, now_ms: u64) -> anyhow::Result<u64> {
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(now_ms.saturating_add(d.as_millis() as u64));
    }
    let at = humantime::parse_rfc3339_weak(text).map_err(|_| {
        anyhow::anyhow!(
            "--expires {text:?}: expected a duration (30d) or a UTC time (2027-06-01T00:00:00Z)"
        )
    })?;
    let ms = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64;
    if ms <= now_ms {
        bail!("--expires {text:?} is in the past");
    }
    Ok(ms)
}

fn certify(
    key: &ed25519_dalek::SigningKey,
    peer: PeerId,
    roles: Vec<String>,
    expires_ms: Option<u64>,
) -> anyhow::Result<Signed> {
    if let Some(bad) = roles.iter().find(|r| !crate::capability::is_role(r)) {
        bail!(
            "--role {bad:?}: a role is 1 to {} letters, digits, `-` or `_`",
            crate::capability::MAX_ROLE
        );
    }
    if roles.len() > member::MAX_ROLES {
        bail!("at most {} roles", member::MAX_ROLES);
    }
    let grant = Grant {
        version: member::VERSION,
        mesh: key.verifying_key().to_bytes(),
        peer: peer.to_bytes(),
        roles,
        issued_ms: now_ms(),
        expires_ms,
    };
    Ok(Signed::certify(&grant, key)?)
}

fn load_key(path: &Path) -> anyhow::Result<ed25519_dalek::SigningKey> {
    files::load_mesh_key(path)
        .context("the mesh key is needed (made by `atmosphere mesh init`; --key names it)")
}

fn config_lines(authority: &VerifyingKey) -> String {
    format!(
        "Every node of the mesh needs in its config:\n\n[mesh]\nauthority = \"{}\"\n",
        crate::config::authority_text(authority)
    )
}

pub async fn run(command: MeshCommand) -> anyhow::Result<()> {
    match command {
        MeshCommand::Init { key, roles, local } => {
            let dir = data_dir(local.config.as_ref(), local.data_dir)?;
            let key_path = key.unwrap_or_else(|| dir.join(files::MESH_KEY_FILE));
            let mesh_key = files::create_mesh_key(&key_path)?;
            let me = identity::peer_id(&identity::load_or_create(&dir)?);
            let cert = certify(&mesh_key, me, roles, None)?;
            let cert_path = dir.join(files::CERTIFICATE_FILE);
            files::write_certificate(&cert_path, &cert)?;
            emit(&format!(
                "Mesh key written to {} (keep it secret: it admits nodes).\n\
                 This node ({me}) is admitted: {}.\n\n{}",
                key_path.display(),
                cert_path.display(),
                config_lines(&mesh_key.verifying_key())
            ))
        }
        MeshCommand::Admit {
            peer_id,
            roles,
            expires,
            key,
            out,
            local,
        } => {
            let peer = parse_peer(&peer_id)?;
            let expires_ms = expires.map(|e| parse_expiry(&e, now_ms())).transpose()?;
            let key_path = match key {
                Some(k) => k,
                None => data_dir(local.config.as_ref(), local.data_dir)?.join(files::MESH_KEY_FILE),
            };
            let mesh_key = load_key(&key_path)?;
            let cert = certify(&mesh_key, peer, roles, expires_ms)?;
            let out = out.unwrap_or_else(|| PathBuf::from(format!("{peer}.cert")));
            files::write_certificate(&out, &cert)?;
            emit(&format!(
                "Certificate for {peer} written to {}; on that node run\n\n  atmosphere mesh join {}\n\n{}",
                out.display(),
                out.display(),
                config_lines(&mesh_key.verifying_key())
            ))
        }
        MeshCommand::Join { file, local } => {
            let dir = data_dir(local.config.as_ref(), local.data_dir)?;
            let cert = files::read_certificate(&file)?;
            let mesh = cert
                .mesh_key()
                .map_err(|e| anyhow::anyhow!("{}: not a certificate: {e}", file.display()))?;
            let member = cert
                .member(&mesh)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let me = identity::peer_id(&identity::load_or_create(&dir)?);
            if member.peer != me {
                bail!(
                    "{} admits {}, not this node ({me})",
                    file.display(),
                    member.peer
                );
            }
            if !member.valid_at(now_ms()) {
                bail!("{} has expired", file.display());
            }
            let path = dir.join(files::CERTIFICATE_FILE);
            files::write_certificate(&path, &cert)?;
            emit(&format!(
                "This node ({me}) is admitted (roles: {}): {}.\n\n{}",
                if member.roles.is_empty() {
                    "none".to_owned()
                } else {
                    member.roles.join(", ")
                },
                path.display(),
                config_lines(&mesh)
            ))
        }
        MeshCommand::SwarmKey { out, local } => {
            let path = match out {
                Some(p) => p,
                None => {
                    data_dir(local.config.as_ref(), local.data_dir)?.join(files::SWARM_KEY_FILE)
                }
            };
            let key = files::create_swarm_key(&path)?;
            emit(&format!(
                "Swarm key written to {} (fingerprint {}; keep it secret).\n\
                 Copy it to every node of the mesh and set in its config:\n\n\
                 [mesh]\nswarm_key = \"{}\"\n",
                path.display(),
                key.fingerprint(),
                path.display()
            ))
        }
        MeshCommand::Revoke {
            peer_id,
            key,
            client,
            data_dir: dir,
        } => {
            let peer = parse_peer(&peer_id)?;
            let key_path = match key {
                Some(k) => k,
                None => data_dir(None, dir)?.join(files::MESH_KEY_FILE),
            };
            let mesh_key = load_key(&key_path)?;
            let revocation = Signed::revoke(
                &Revoke {
                    version: member::VERSION,
                    mesh: mesh_key.verifying_key().to_bytes(),
                    peer: peer.to_bytes(),
                    before_ms: now_ms(),
                },
                &mesh_key,
            )?;
            let text = files::to_text(&revocation)?;
            let body = serde_json::json!({"revocation": text.trim()});
            let v = request(
                &client,
                reqwest::Method::POST,
                "/v1/mesh/revocations",
                Some(body),
            )
            .await?;
            if client.json {
                emit(&(serde_json::to_string_pretty(&v)? + "\n"))
            } else {
                emit(&format!(
                    "{peer} is revoked; {} spreads it to the mesh.\n",
                    client.node
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_a_duration_or_a_future_time() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_expiry("1h", now).expect("duration"), now + 3_600_000);
        assert_eq!(
            parse_expiry("2030-01-01T00:00:00Z", now).expect("time"),
            1_893_456_000_000
        );
        assert!(parse_expiry("2020-01-01T00:00:00Z", now).is_err());
        assert!(parse_expiry("soon", now).is_err());
    }
}
