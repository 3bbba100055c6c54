//! The agent's identity at the collector (agent id, bearer token, TPS code), kept in
//! `credentials.toml` in the state directory, readable by the agent's user only.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub agent_id: u64,
    pub token: String,
    pub tps_code: String,
    /// The collector that issued the token.
    pub collector: String,
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
