//! The agent's identity at the collector (agent id, bearer token, TPS code), kept in
//! `credentials.toml` in the state directory, readable by the agent's user only.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub agent_id: u64,
    pub token: String,
    pub tps_code: String,
    /// The collector that issued the token.
    pub collector: String,
}

/// The token stays out of logs and panic messages.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("agent_id", &self.agent_id)
            .field("token", &"<hidden>")
            .field("tps_code", &self.tps_code)
            .field("collector", &self.collector)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "this agent is not enrolled yet ({0} does not exist): run `tps-agent enroll --collector URL --tps CODE --code XXXX-XXXX`"
    )]
    Missing(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is damaged ({message}); enroll again")]
    Damaged { path: PathBuf, message: String },
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("credentials.toml")
}

pub fn load(state_dir: &Path) -> Result<Credentials, CredentialsError> {
    let p = path(state_dir);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CredentialsError::Missing(p));
        }
        Err(source) => return Err(CredentialsError::Io { path: p, source }),
    };
    toml::from_str(&text).map_err(|e| CredentialsError::Damaged {
        path: p,
        message: e.to_string(),
    })
}

/// Writes atomically (temporary file, fsync, rename) with mode 0600.
pub fn save(state_dir: &Path, c: &Credentials) -> Result<(), CredentialsError> {
    let p = path(state_dir);
    let io = |source| CredentialsError::Io {
        path: p.clone(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(io)?;
    crate::platform::restrict_to_admins(state_dir);
    let tmp = state_dir.join("credentials.toml.tmp");
    let text = toml::to_string(c).map_err(|e| io(std::io::Error::other(e)))?;
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, &p).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn debug_output_hides_the_token() {
        let c = Credentials {
            agent_id: 7,
            token: "s3cret-token-value".into(),
            tps_code: "2171011002001".into(),
            collector: "http://c".into(),
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("2171011002001"),
            "{shown}"
        );
        let uplink = crate::uplink::Uplink::new(
            tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy(),
            c.token.clone(),
        );
        let shown = format!("{uplink:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn round_trip_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(CredentialsError::Missing(_))
        ));
        let c = Credentials {
            agent_id: 7,
            token: "tps_x".into(),
            tps_code: "2171011002001".into(),
            collector: "http://c:1".into(),
        };
        save(dir.path(), &c).unwrap();
        assert_eq!(load(dir.path()).unwrap(), c);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
