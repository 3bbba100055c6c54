//! People who use the status API and the dashboard: a name, a role and a bearer token
//! (stored as SHA-256). viewer reads; operator also works flags; admin also manages
//! stations and agents.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::auth;
use crate::store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        [Role::Viewer, Role::Operator, Role::Admin]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// An authenticated person.
#[derive(Debug, Clone, Serialize)]
pub struct Operator {
    pub name: String,
    pub role: Role,
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error(
        "operator name must be 1 to 64 letters, digits, dots, dashes or underscores, got {0:?}"
    )]
    BadName(String),
    #[error("an operator named {0:?} exists already")]
    Exists(String),
    #[error("no operator named {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates an operator; returns the token (shown once).
pub fn add(
    conn: &Connection,
    name: &str,
    role: Role,
    now_ms: i64,
) -> Result<String, OperatorError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !ok {
        return Err(OperatorError::BadName(name.to_string()));
    }
    let exists: Option<i64> = conn
        .query_row("SELECT id FROM operators WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()
        .map_err(StoreError::from)?;
    if exists.is_some() {
        return Err(OperatorError::Exists(name.to_string()));
    }
    let (token, hash) = auth::new_token();
    conn.execute(
        "INSERT INTO operators (name, role, token_hash, created_ms) VALUES (?1, ?2, ?3, ?4)",
        params![name, role.as_str(), &hash[..], now_ms],
    )
    .map_err(StoreError::from)?;
    Ok(token)
}

pub fn revoke(conn: &Connection, name: &str, now_ms: i64) -> Result<(), OperatorError> {
    let n = conn
        .execute(
            "UPDATE operators SET revoked_ms = coalesce(revoked_ms, ?2) WHERE name = ?1",
            params![name, now_ms],
        )
        .map_err(StoreError::from)?;
    if n == 0 {
        return Err(OperatorError::NotFound(name.to_string()));
    }
    Ok(())
}

/// Every operator: (name, role, revoked).
pub fn list(conn: &Connection) -> Result<Vec<(String, String, bool)>, StoreError> {
    let mut st =
        conn.prepare("SELECT name, role, revoked_ms IS NOT NULL FROM operators ORDER BY name")?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// The operator of this name, unless revoked.
pub fn by_name(conn: &Connection, name: &str) -> Result<Option<Operator>, StoreError> {
    let row: Option<(String, String)> = conn
        .prepare_cached("SELECT name, role FROM operators WHERE name = ?1 AND revoked_ms IS NULL")?
        .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(row.and_then(|(name, role)| Role::parse(&role).map(|role| Operator { name, role })))
}

/// The operator a token belongs to, unless revoked.
pub fn authenticate(conn: &Connection, token: &str) -> Result<Option<Operator>, StoreError> {
    let hash = auth::token_hash(token);
    let row: Option<(String, String)> = conn
        .prepare_cached(
            "SELECT name, role FROM operators WHERE token_hash = ?1 AND revoked_ms IS NULL",
        )?
        .query_row([&hash[..]], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(row.and_then(|(name, role)| Role::parse(&role).map(|role| Operator { name, role })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_authenticate_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open(dir.path(), crate::store::Synchronous::Normal).unwrap();
        let t = add(&conn, "siti", Role::Operator, 1).unwrap();
        assert!(matches!(
            add(&conn, "siti", Role::Admin, 1),
            Err(OperatorError::Exists(_))
        ));
        assert!(matches!(
            add(&conn, "no spaces", Role::Admin, 1),
            Err(OperatorError::BadName(_))
        ));
        let op = authenticate(&conn, &t).unwrap().unwrap();
        assert_eq!((op.name.as_str(), op.role), ("siti", Role::Operator));
        assert!(authenticate(&conn, "tps_nope").unwrap().is_none());
        revoke(&conn, "siti", 2).unwrap();
        assert!(authenticate(&conn, &t).unwrap().is_none());
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
    }
}
