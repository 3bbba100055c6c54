//! The embedded SQLite store: opening the database, schema migrations, and every query
//! outside the hot write path (registry import, enrollment codes, revocation, reads).
//! The hot path — pushes and enrollments — goes through the single batching writer in
//! [`writer`].
//!
//! Durability: WAL journal with `synchronous = FULL` by default, so a commit is on disk
//! (fsync of the WAL) before a push is acknowledged; a power cut loses nothing that was
//! acknowledged. `synchronous = NORMAL` can be configured: it survives a process crash
//! but a power cut may lose the last commits (acknowledged ones included).

pub mod blocks;
pub mod checkpoint;
pub mod compact;
pub mod flags;
pub mod integrity;
pub mod notify;
pub mod operators;
pub mod readers;
pub mod rollups;
pub mod space;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::domain::{
    AgentId, AgentStatus, Measurement, Method, RegionLevel, Rtt, Station, TpsCode,
};

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync on every commit: acknowledged data survives a power cut.
    Full,
    /// fsync at checkpoints only: survives a crash of the process, not of the machine.
    Normal,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("cannot use the data directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the database schema is version {found}, newer than this program knows ({known}); use a newer tps-collector"
    )]
    TooNew { found: i64, known: i64 },
    #[error("{0}")]
    NotFound(String),
    #[error("the commit failed: {0}")]
    CommitFailed(String),
    #[error("the store writer has stopped")]
    WriterGone,
    #[error(transparent)]
    Block(#[from] blocks::BlockError),
    #[error(
        "the database {path} is damaged ({detail}). The collector will not serve it. Stop \
         anything using it, keep a copy of the data directory, then restore the last backup, \
         or recover what is readable: `sqlite3 collector.sqlite .recover | sqlite3 recovered.sqlite` \
         and put recovered.sqlite in its place"
    )]
    Damaged { path: PathBuf, detail: String },
}

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE stations (
    tps_code      TEXT PRIMARY KEY,
    village_code  TEXT NOT NULL,
    village       TEXT NOT NULL,
    district      TEXT NOT NULL,
    regency       TEXT NOT NULL,
    province      TEXT NOT NULL,
    -- dotted region codes derived from tps_code, for grouping
    regency_code  TEXT NOT NULL,
    district_code TEXT NOT NULL,
    lat           REAL,
    lon           REAL,
    voters        INTEGER NOT NULL,
    created_ms    INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX stations_district ON stations(district_code);

-- One unused enrollment code per station; the row is deleted when the code is used.
CREATE TABLE enrollment_codes (
    tps_code   TEXT PRIMARY KEY REFERENCES stations(tps_code),
    code_hash  BLOB NOT NULL,
    issued_ms  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE agents (
    -- AUTOINCREMENT: an id is never reused, even after the newest agent is deleted
    agent_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    tps_code       TEXT NOT NULL REFERENCES stations(tps_code),
    token_hash     BLOB NOT NULL UNIQUE,
    hostname       TEXT NOT NULL,
    os             TEXT NOT NULL,
    agent_version  TEXT NOT NULL,
    enrolled_ms    INTEGER NOT NULL,
    revoked_ms     INTEGER,
    revoked_reason TEXT,
    acked_seq      INTEGER NOT NULL DEFAULT 0,
    last_seen_ms   INTEGER,
    clock_skew_ms  INTEGER,
    status_json    TEXT
);
CREATE INDEX agents_tps ON agents(tps_code);
CREATE INDEX agents_revoked ON agents(revoked_ms) WHERE revoked_ms IS NOT NULL;

-- Every stored measurement. The rowid gives insertion order: the cursor for sinks.
CREATE TABLE measurements (
    id             INTEGER PRIMARY KEY,
    agent_id       INTEGER NOT NULL,
    seq            INTEGER NOT NULL,
    start_ms       INTEGER NOT NULL,
    target_name    TEXT NOT NULL,
    target_address TEXT NOT NULL,
    method         TEXT NOT NULL,
    sent           INTEGER NOT NULL,
    received       INTEGER NOT NULL,
    rtt_min_ms     REAL,
    rtt_avg_ms     REAL,
    rtt_max_ms     REAL,
    jitter_ms      REAL,
    received_ms    INTEGER NOT NULL,
    UNIQUE (agent_id, seq)
);

-- The newest measurement per agent and target, so the live view rebuilds without a scan.
CREATE TABLE latest (
    agent_id       INTEGER NOT NULL,
    target_name    TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    start_ms       INTEGER NOT NULL,
    target_address TEXT NOT NULL,
    method         TEXT NOT NULL,
    sent           INTEGER NOT NULL,
    received       INTEGER NOT NULL,
    rtt_min_ms     REAL,
    rtt_avg_ms     REAL,
    rtt_max_ms     REAL,
    jitter_ms      REAL,
    PRIMARY KEY (agent_id, target_name)
) WITHOUT ROWID;
"#,
    r#"
-- Coverage status transitions per station: the history that availability and reports
-- are computed from. The rowid gives insertion order: the cursor for sinks.
CREATE TABLE status_changes (
    id        INTEGER PRIMARY KEY,
    tps_code  TEXT NOT NULL,
    at_ms     INTEGER NOT NULL,
    state     TEXT NOT NULL,
    previous  TEXT,
    reason    TEXT,
    cause     TEXT
);
CREATE INDEX status_changes_station ON status_changes(tps_code, at_ms);

-- How far each sink has durably written, by rowid of its source table.
CREATE TABLE sink_cursors (
    name    TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    r#"
-- Series queries read one agent's measurements by time.
CREATE INDEX measurements_agent_time ON measurements(agent_id, start_ms);

-- Per-station adjustments made by an admin.
CREATE TABLE station_overrides (
    tps_code      TEXT PRIMARY KEY REFERENCES stations(tps_code),
    link_type     TEXT,
    exempt_reason TEXT,
    updated_ms    INTEGER NOT NULL,
    updated_by    TEXT NOT NULL
) WITHOUT ROWID;

-- People who use the status API and dashboard; tokens stored as SHA-256.
CREATE TABLE operators (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL,
    token_hash BLOB NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER
);

-- The follow-up queue: one flag per uncovered episode of a station.
-- status: open -> acknowledged -> resolved (by a person) or closed (station recovered).
CREATE TABLE flags (
    id         INTEGER PRIMARY KEY,
    tps_code   TEXT NOT NULL REFERENCES stations(tps_code),
    reason     TEXT NOT NULL,
    cause      TEXT,
    since_ms   INTEGER NOT NULL,
    opened_ms  INTEGER NOT NULL,
    status     TEXT NOT NULL,
    assignee   TEXT,
    resolution TEXT,
    ended_ms   INTEGER,
    updated_ms INTEGER NOT NULL
);
CREATE INDEX flags_station ON flags(tps_code, id);
CREATE INDEX flags_active ON flags(status) WHERE status IN ('open', 'acknowledged');

-- Who did what to a flag, and when: the audit trail (notes are events too).
CREATE TABLE flag_events (
    id      INTEGER PRIMARY KEY,
    flag_id INTEGER NOT NULL REFERENCES flags(id),
    at_ms   INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    detail  TEXT
);
CREATE INDEX flag_events_flag ON flag_events(flag_id, id);
"#,
    r#"
-- Per agent, day (midnight in the report time zone) and target: rounds and histograms
-- of round RTT and loss, folded in by the rollup from a cursor over measurements.
CREATE TABLE daily_rollups (
    agent_id    INTEGER NOT NULL,
    day_ms      INTEGER NOT NULL,
    target_name TEXT NOT NULL,
    rounds      INTEGER NOT NULL,
    rtt_hist    BLOB NOT NULL,
    loss_hist   BLOB NOT NULL,
    PRIMARY KEY (agent_id, day_ms, target_name)
) WITHOUT ROWID;
-- The report reads flags as they stood at the end of a week.
CREATE INDEX flags_station_opened ON flags(tps_code, opened_ms);
"#,
    r#"
-- Probes answered by an ICMP error (destination unreachable, time exceeded): lost, but
-- told apart from probes nothing answered.
ALTER TABLE measurements ADD COLUMN errors INTEGER NOT NULL DEFAULT 0;
ALTER TABLE latest ADD COLUMN errors INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- Small counters: `registry_generation` grows with every import that changed a station,
-- so a running collector notices imports made from the command line.
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
-- Enrollment lockouts (too many wrong codes), kept across restarts.
CREATE TABLE enroll_lockouts (
    key       TEXT PRIMARY KEY,
    locked_ms INTEGER NOT NULL,
    until_ms  INTEGER NOT NULL,
    failures  INTEGER NOT NULL
) WITHOUT ROWID;
-- The follow-up queue in its order (outages first, oldest first), active flags only: the
-- first page is read from the index instead of sorting every active flag.
CREATE INDEX flags_queue ON flags(
    (CASE WHEN reason IN ('no_agent', 'offline') THEN 0 ELSE 1 END), since_ms, id
) WHERE status IN ('open', 'acknowledged');
"#,
    r#"
-- Measurements older than a day, compacted: per agent, hour (of start_ms) and target,
-- the rows encoded by `store::blocks` in one or more parts of under 1 KB each. A
-- measurement is either a row of `measurements` or in a block, never both (moved in one
-- transaction).
CREATE TABLE measurement_blocks (
    id          INTEGER PRIMARY KEY,
    agent_id    INTEGER NOT NULL,
    hour_ms     INTEGER NOT NULL,
    target_name TEXT NOT NULL,
    part        INTEGER NOT NULL,
    seq_min     INTEGER NOT NULL,
    seq_max     INTEGER NOT NULL,
    rows        INTEGER NOT NULL,
    data        BLOB NOT NULL,
    UNIQUE (agent_id, hour_ms, target_name, part)
);
-- A re-sent measurement is looked for among the blocks holding its agent's sequence range.
CREATE INDEX measurement_blocks_seq ON measurement_blocks(agent_id, seq_max);
-- Retention deletes the oldest hours first.
CREATE INDEX measurement_blocks_hour ON measurement_blocks(hour_ms);
-- The highest sequence number moved into blocks per agent: a re-sent measurement at or
-- below it may be in a block.
ALTER TABLE agents ADD COLUMN compacted_seq INTEGER NOT NULL DEFAULT 0;

-- Per agent, hour and target, kept longer than the measurements: what series with steps
-- of an hour or more, and reports of old weeks, read.
CREATE TABLE hourly_rollups (
    agent_id         INTEGER NOT NULL,
    hour_ms          INTEGER NOT NULL,
    target_name      TEXT NOT NULL,
    rounds           INTEGER NOT NULL,
    sent             INTEGER NOT NULL,
    received         INTEGER NOT NULL,
    errors           INTEGER NOT NULL,
    -- Sum over rounds of each round's loss (0..1), for the mean loss.
    loss_sum         REAL NOT NULL,
    -- Rounds with an RTT, and the sum of their mean RTTs; the extremes.
    rtt_rounds       INTEGER NOT NULL,
    rtt_avg_sum_ms   REAL NOT NULL,
    rtt_min_ms       REAL,
    rtt_max_ms       REAL,
    jitter_rounds    INTEGER NOT NULL,
    jitter_sum_ms    REAL NOT NULL,
    rtt_hist         BLOB NOT NULL,
    last_received_ms INTEGER NOT NULL,
    PRIMARY KEY (agent_id, hour_ms, target_name)
) WITHOUT ROWID;
CREATE INDEX hourly_rollups_hour ON hourly_rollups(hour_ms);
"#,
    r#"
-- Notifications (see `store::notify`). The planner reads flag_events from the cursor
-- 'notify' in sink_cursors; an existing store starts from now, not from its history.
INSERT OR IGNORE INTO sink_cursors (name, last_id) SELECT 'notify', coalesce(max(id), 0) FROM flag_events;
-- Flag events taken from the log and held for their group's window.
CREATE TABLE notify_pending (
    id        INTEGER PRIMARY KEY,
    route     TEXT NOT NULL,
    group_key TEXT NOT NULL,
    kind      TEXT NOT NULL,
    flag_id   INTEGER NOT NULL,
    at_ms     INTEGER NOT NULL
);
CREATE INDEX notify_pending_group ON notify_pending(route, group_key);
CREATE INDEX notify_pending_flag ON notify_pending(flag_id);
-- Flags a route has told of: for reminders, escalation and the recovery message.
CREATE TABLE notify_told (
    route     TEXT NOT NULL,
    flag_id   INTEGER NOT NULL,
    told_ms   INTEGER NOT NULL,
    last_ms   INTEGER NOT NULL,
    acked     INTEGER NOT NULL DEFAULT 0,
    escalated INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (route, flag_id)
) WITHOUT ROWID;
CREATE INDEX notify_told_flag ON notify_told(flag_id);
-- When each group last had a message.
CREATE TABLE notify_groups (
    route     TEXT NOT NULL,
    group_key TEXT NOT NULL,
    sent_ms   INTEGER NOT NULL,
    PRIMARY KEY (route, group_key)
) WITHOUT ROWID;
-- The outbox: one row per message and receiver, written in the transaction that took
-- its events off the pending list; state queued -> sending -> sent | failed.
CREATE TABLE notify_outbox (
    id             INTEGER PRIMARY KEY,
    receiver       TEXT NOT NULL,
    route          TEXT NOT NULL,
    scope          TEXT NOT NULL,
    created_ms     INTEGER NOT NULL,
    -- the oldest flag event in it: time from a flag to its message
    first_event_ms INTEGER NOT NULL,
    due_ms         INTEGER NOT NULL,
    state          TEXT NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    -- a send was under way when the collector stopped: it may have arrived
    maybe_sent     INTEGER NOT NULL DEFAULT 0,
    sent_ms        INTEGER,
    last_error     TEXT,
    remote_id      TEXT,
    body           TEXT NOT NULL
);
CREATE INDEX notify_outbox_due ON notify_outbox(receiver, due_ms) WHERE state IN ('queued', 'sending');
CREATE INDEX notify_outbox_created ON notify_outbox(created_ms);
"#,
];

/// The database file inside a data directory.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("collector.sqlite")
}

/// Opens (creating if needed) the database in `data_dir` and brings its schema up to date.
pub fn open(data_dir: &Path, sync: Synchronous) -> Result<Connection, StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Dir {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let mut conn = Connection::open(db_path(data_dir))?;
    conn.busy_timeout(Duration::from_secs(30))?;
    let damage = |e: rusqlite::Error| {
        if integrity::is_damage(&e) {
            integrity::damaged(data_dir, e.to_string())
        } else {
            e.into()
        }
    };
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(damage)?;
    conn.pragma_update(
        None,
        "synchronous",
        match sync {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        },
    )?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // 16 MB of page cache per connection (SQLite's default is 2 MB); the writer takes more.
    conn.pragma_update(None, "cache_size", -16_384)?;
    migrate(&mut conn).map_err(|e| match e {
        StoreError::Sql(e) => damage(e),
        other => other,
    })?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::TooNew {
            found: version,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied schema migration");
    }
    Ok(())
}

/// What an import changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportSummary {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Stations in the store that the file does not list; kept, with their history.
    pub not_in_file: u64,
}

/// Writes a validated registry in one transaction: new stations are added, known ones
/// updated in place (their agents and history stay), none removed.
pub fn import_stations(
    conn: &mut Connection,
    stations: &[Station],
    now_ms: i64,
    progress: impl FnMut(u64),
) -> Result<ImportSummary, StoreError> {
    let tx = conn.transaction()?;
    let s = import_stations_in(&tx, stations, now_ms, progress)?;
    tx.commit()?;
    Ok(s)
}

/// [`import_stations`] inside a transaction the caller commits (the writer's, for an
/// import through the API).
pub fn import_stations_in(
    tx: &rusqlite::Transaction<'_>,
    stations: &[Station],
    now_ms: i64,
    mut progress: impl FnMut(u64),
) -> Result<ImportSummary, StoreError> {
    let mut s = ImportSummary {
        inserted: 0,
        updated: 0,
        unchanged: 0,
        not_in_file: 0,
    };
    {
        let mut insert = tx.prepare(
            "INSERT INTO stations (tps_code, village_code, village, district, regency, province,
                 regency_code, district_code, lat, lon, voters, created_ms, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)
             ON CONFLICT (tps_code) DO UPDATE SET
                 village_code = excluded.village_code, village = excluded.village,
                 district = excluded.district, regency = excluded.regency,
                 province = excluded.province, lat = excluded.lat, lon = excluded.lon,
                 voters = excluded.voters, updated_ms = excluded.updated_ms
             WHERE (village_code, village, district, regency, province, lat, lon, voters)
                IS NOT (excluded.village_code, excluded.village, excluded.district,
                        excluded.regency, excluded.province, excluded.lat, excluded.lon,
                        excluded.voters)
             RETURNING created_ms = updated_ms",
        )?;
        for (i, st) in stations.iter().enumerate() {
            let code = st.tps_code.as_str();
            let changed: Option<bool> = insert
                .query_row(
                    params![
                        code,
                        st.village_code,
                        st.village,
                        st.district,
                        st.regency,
                        st.province,
                        st.tps_code.region(RegionLevel::Regency),
                        st.tps_code.region(RegionLevel::District),
                        st.lat,
                        st.lon,
                        st.voters,
                        now_ms
                    ],
                    |r| r.get(0),
                )
                .optional()?;
            match changed {
                Some(true) => s.inserted += 1,
                Some(false) => s.updated += 1,
                None => s.unchanged += 1,
            }
            if (i + 1) % 100_000 == 0 {
                progress(i as u64 + 1);
            }
        }
    }
    let total: u64 = tx.query_row("SELECT count(*) FROM stations", [], |r| r.get(0))?;
    s.not_in_file = total - (s.inserted + s.updated + s.unchanged);
    if s.inserted + s.updated > 0 {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('registry_generation', 1)
             ON CONFLICT (key) DO UPDATE SET value = value + 1",
            [],
        )?;
    }
    progress(stations.len() as u64);
    Ok(s)
}

/// Station codes under a region prefix (`21`, `21.71`, `21.71.01`, a village code, or a
/// whole TPS code); all stations for `None`.
pub fn station_codes(conn: &Connection, region: Option<&str>) -> Result<Vec<String>, StoreError> {
    let prefix = region.map(|r| r.replace('.', "")).unwrap_or_default();
    let mut st = conn.prepare(
        "SELECT tps_code FROM stations WHERE tps_code >= ?1 AND tps_code < ?1 || ':' ORDER BY tps_code",
    )?;
    let codes = st
        .query_map([prefix], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(codes)
}

/// Replaces the unused enrollment codes of the given stations in one transaction.
pub fn store_codes(
    conn: &mut Connection,
    hashes: &[(String, crate::auth::Digest32)],
    now_ms: i64,
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    {
        let mut up = tx.prepare(
            "INSERT INTO enrollment_codes (tps_code, code_hash, issued_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (tps_code) DO UPDATE SET code_hash = excluded.code_hash, issued_ms = excluded.issued_ms",
        )?;
        for (code, hash) in hashes {
            up.execute(params![code, &hash[..], now_ms])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Revokes one agent; returns its station. Revoking twice keeps the first time.
pub fn revoke_agent(
    conn: &Connection,
    agent_id: AgentId,
    reason: &str,
    now_ms: i64,
) -> Result<String, StoreError> {
    conn.query_row(
        "UPDATE agents SET revoked_ms = coalesce(revoked_ms, ?2), revoked_reason = coalesce(revoked_reason, ?3)
         WHERE agent_id = ?1 RETURNING tps_code",
        params![agent_id as i64, now_ms, reason],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("no agent with id {agent_id}")))
}

/// A trivial read: the store answers.
pub fn ping(conn: &Connection) -> Result<(), StoreError> {
    conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?;
    Ok(())
}

/// Whether any station was registered before `ms`.
pub fn stations_before(conn: &Connection, ms: i64) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM stations WHERE created_ms < ?1)",
        [ms],
        |r| r.get(0),
    )?)
}

/// Grows with every import that changed the registry.
pub fn registry_generation(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE key = 'registry_generation'")?
        .query_row([], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// The newest change of any station (Unix ms; 0 for an empty registry).
pub fn stations_updated_max(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row(
        "SELECT coalesce(max(updated_ms), 0) FROM stations",
        [],
        |r| r.get(0),
    )?)
}

/// Enrollment lockouts still in force at `now_ms`: (key, until_ms, failures).
pub fn enroll_lockouts(
    conn: &Connection,
    now_ms: i64,
) -> Result<Vec<(String, i64, u32)>, StoreError> {
    let mut st =
        conn.prepare("SELECT key, until_ms, failures FROM enroll_lockouts WHERE until_ms > ?1")?;
    let rows = st.query_map([now_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Records a lockout (and forgets ended ones).
pub fn store_enroll_lockout(
    conn: &Connection,
    key: &str,
    now_ms: i64,
    until_ms: i64,
    failures: u32,
) -> Result<(), StoreError> {
    conn.execute("DELETE FROM enroll_lockouts WHERE until_ms <= ?1", [now_ms])?;
    conn.execute(
        "INSERT INTO enroll_lockouts (key, locked_ms, until_ms, failures) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (key) DO UPDATE SET locked_ms = excluded.locked_ms,
             until_ms = excluded.until_ms, failures = excluded.failures",
        params![key, now_ms, until_ms, failures],
    )?;
    Ok(())
}

/// Forgets stored lockouts (a right code ended them).
pub fn clear_enroll_lockouts(conn: &Connection, keys: &[String]) -> Result<(), StoreError> {
    let mut st = conn.prepare_cached("DELETE FROM enroll_lockouts WHERE key = ?1")?;
    for k in keys {
        st.execute([k])?;
    }
    Ok(())
}

/// Agents revoked at or after `since_ms` (for the running collector to pick up
/// revocations made from the command line).
pub fn revoked_since(conn: &Connection, since_ms: i64) -> Result<Vec<AgentId>, StoreError> {
    let mut st = conn.prepare_cached("SELECT agent_id FROM agents WHERE revoked_ms >= ?1")?;
    let ids = st
        .query_map([since_ms], |r| r.get::<_, i64>(0))?
        .map(|r| r.map(|v| v as AgentId))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ids)
}

/// An agent as loaded into the live view at start.
#[derive(Debug, Clone)]
pub struct AgentRow {
    pub agent_id: AgentId,
    pub tps_code: TpsCode,
    pub token_hash: crate::auth::Digest32,
    pub hostname: String,
    pub os: String,
    pub agent_version: String,
    pub enrolled_ms: i64,
    pub revoked_ms: Option<i64>,
    pub acked_seq: u64,
    pub last_seen_ms: Option<i64>,
    pub clock_skew_ms: Option<i64>,
    pub status: Option<AgentStatus>,
}

pub fn load_agents(conn: &Connection) -> Result<Vec<AgentRow>, StoreError> {
    let mut st = conn.prepare(
        "SELECT agent_id, tps_code, token_hash, hostname, os, agent_version, enrolled_ms,
                revoked_ms, acked_seq, last_seen_ms, clock_skew_ms, status_json FROM agents",
    )?;
    let rows = st.query_map([], |r| {
        let code: String = r.get(1)?;
        let hash: Vec<u8> = r.get(2)?;
        let status: Option<String> = r.get(11)?;
        Ok(AgentRow {
            agent_id: r.get::<_, i64>(0)? as AgentId,
            tps_code: code.parse().map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    1,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?,
            token_hash: hash.as_slice().try_into().unwrap_or([0; 32]),
            hostname: r.get(3)?,
            os: r.get(4)?,
            agent_version: r.get(5)?,
            enrolled_ms: r.get(6)?,
            revoked_ms: r.get(7)?,
            acked_seq: r.get::<_, i64>(8)? as u64,
            last_seen_ms: r.get(9)?,
            clock_skew_ms: r.get(10)?,
            status: status.and_then(|s| serde_json::from_str(&s).ok()),
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn measurement_from_row(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Measurement> {
    // Column order: seq, start_ms, target_name, target_address, method, sent, received,
    // rtt_min_ms, rtt_avg_ms, rtt_max_ms, jitter_ms, errors
    let method: String = r.get(first + 4)?;
    let min: Option<f64> = r.get(first + 7)?;
    let avg: Option<f64> = r.get(first + 8)?;
    let max: Option<f64> = r.get(first + 9)?;
    Ok(Measurement {
        seq: r.get::<_, i64>(first)? as u64,
        start_ms: r.get(first + 1)?,
        target_name: r.get(first + 2)?,
        target_address: r.get(first + 3)?,
        method: Method::parse(&method).unwrap_or(Method::Icmp),
        sent: r.get(first + 5)?,
        received: r.get(first + 6)?,
        errors: r.get(first + 11)?,
        rtt: match (min, avg, max) {
            (Some(min_ms), Some(avg_ms), Some(max_ms)) => Some(Rtt {
                min_ms,
                avg_ms,
                max_ms,
                jitter_ms: r.get(first + 10)?,
            }),
            _ => None,
        },
    })
}

/// The newest measurement per agent and target.
pub fn load_latest(conn: &Connection) -> Result<Vec<(AgentId, Measurement)>, StoreError> {
    let mut st = conn.prepare(
        "SELECT agent_id, seq, start_ms, target_name, target_address, method, sent, received,
                rtt_min_ms, rtt_avg_ms, rtt_max_ms, jitter_ms, errors FROM latest",
    )?;
    let rows = st.query_map([], |r| {
        Ok((r.get::<_, i64>(0)? as AgentId, measurement_from_row(r, 1)?))
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Registry facts of one station.
pub fn station(conn: &Connection, code: &TpsCode) -> Result<Option<Station>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT village_code, village, district, regency, province, lat, lon, voters
         FROM stations WHERE tps_code = ?1",
    )?;
    Ok(st
        .query_row([code.as_str()], |r| {
            Ok(Station {
                tps_code: *code,
                village_code: r.get(0)?,
                village: r.get(1)?,
                district: r.get(2)?,
                regency: r.get(3)?,
                province: r.get(4)?,
                lat: r.get(5)?,
                lon: r.get(6)?,
                voters: r.get(7)?,
            })
        })
        .optional()?)
}

/// Every stored measurement of one agent (raw rows and blocks), in sequence order (tests
/// and audits).
pub fn measurements_of(
    conn: &Connection,
    agent_id: AgentId,
) -> Result<Vec<Measurement>, StoreError> {
    let mut st = conn.prepare(
        "SELECT seq, start_ms, target_name, target_address, method, sent, received,
                rtt_min_ms, rtt_avg_ms, rtt_max_ms, jitter_ms, errors
         FROM measurements WHERE agent_id = ?1 ORDER BY seq",
    )?;
    let rows = st.query_map([agent_id as i64], |r| measurement_from_row(r, 0))?;
    let mut out = rows.collect::<Result<Vec<_>, _>>()?;
    out.extend(
        compact::block_rows(conn, agent_id, None, None)?
            .into_iter()
            .map(|r| r.m),
    );
    out.sort_by_key(|m| m.seq);
    Ok(out)
}

/// A stored measurement with what a time-series sink tags it with.
#[derive(Debug, Clone)]
pub struct SinkMeasurement {
    pub id: i64,
    pub agent_id: AgentId,
    pub tps_code: String,
    pub measurement: Measurement,
}

/// Measurements stored after rowid `after`, oldest first.
pub fn measurements_after(
    conn: &Connection,
    after: i64,
    limit: usize,
) -> Result<Vec<SinkMeasurement>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT m.id, m.agent_id, a.tps_code, m.seq, m.start_ms, m.target_name, m.target_address, m.method,
                m.sent, m.received, m.rtt_min_ms, m.rtt_avg_ms, m.rtt_max_ms, m.jitter_ms, m.errors
         FROM measurements m JOIN agents a ON a.agent_id = m.agent_id
         WHERE m.id > ?1 ORDER BY m.id LIMIT ?2",
    )?;
    let rows = st.query_map(params![after, limit as i64], |r| {
        Ok(SinkMeasurement {
            id: r.get(0)?,
            agent_id: r.get::<_, i64>(1)? as AgentId,
            tps_code: r.get(2)?,
            measurement: measurement_from_row(r, 3)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// A stored coverage status change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    pub id: i64,
    pub tps_code: String,
    pub at_ms: i64,
    pub state: String,
    pub previous: Option<String>,
    pub reason: Option<String>,
    pub cause: Option<String>,
}

/// Maps `id, tps_code, at_ms, state, previous, reason, cause`.
fn status_change_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StatusChange> {
    Ok(StatusChange {
        id: r.get(0)?,
        tps_code: r.get(1)?,
        at_ms: r.get(2)?,
        state: r.get(3)?,
        previous: r.get(4)?,
        reason: r.get(5)?,
        cause: r.get(6)?,
    })
}

/// Records a status change; returns its id.
pub fn insert_status_change(conn: &Connection, c: &StatusChange) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO status_changes (tps_code, at_ms, state, previous, reason, cause)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        c.tps_code, c.at_ms, c.state, c.previous, c.reason, c.cause
    ])?;
    Ok(conn.last_insert_rowid())
}

/// Status changes stored after rowid `after`, oldest first.
pub fn status_changes_after(
    conn: &Connection,
    after: i64,
    limit: usize,
) -> Result<Vec<StatusChange>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT id, tps_code, at_ms, state, previous, reason, cause FROM status_changes
         WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = st.query_map(params![after, limit as i64], status_change_from_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// A sink's durable position (0 before anything was written).
pub fn sink_cursor(conn: &Connection, name: &str) -> Result<i64, StoreError> {
    Ok(conn
        .query_row(
            "SELECT last_id FROM sink_cursors WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

pub fn set_sink_cursor(conn: &Connection, name: &str, last_id: i64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO sink_cursors (name, last_id) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET last_id = excluded.last_id",
        params![name, last_id],
    )?;
    Ok(())
}

/// Every registered station, in code order.
pub fn load_stations(conn: &Connection) -> Result<Vec<Station>, StoreError> {
    stations_updated_since(conn, i64::MIN)
}

/// Stations added or changed at or after `since_ms`, in code order.
pub fn stations_updated_since(
    conn: &Connection,
    since_ms: i64,
) -> Result<Vec<Station>, StoreError> {
    let mut st = conn.prepare(
        "SELECT tps_code, village_code, village, district, regency, province, lat, lon, voters
         FROM stations WHERE updated_ms >= ?1 ORDER BY tps_code",
    )?;
    let rows = st.query_map([since_ms], |r| {
        let code: String = r.get(0)?;
        Ok(Station {
            tps_code: code.parse().map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?,
            village_code: r.get(1)?,
            village: r.get(2)?,
            district: r.get(3)?,
            regency: r.get(4)?,
            province: r.get(5)?,
            lat: r.get(6)?,
            lon: r.get(7)?,
            voters: r.get(8)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// The newest status change of every station that has one.
pub fn last_status_changes(conn: &Connection) -> Result<Vec<StatusChange>, StoreError> {
    let mut st = conn.prepare(
        "SELECT id, tps_code, at_ms, state, previous, reason, cause FROM status_changes
         WHERE id IN (SELECT max(id) FROM status_changes GROUP BY tps_code)",
    )?;
    let rows = st.query_map([], status_change_from_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Recent status changes of one station, newest first.
pub fn status_changes_of(
    conn: &Connection,
    tps: &str,
    limit: usize,
) -> Result<Vec<StatusChange>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT id, tps_code, at_ms, state, previous, reason, cause FROM status_changes
         WHERE tps_code = ?1 ORDER BY at_ms DESC, id DESC LIMIT ?2",
    )?;
    let rows = st.query_map(params![tps, limit as i64], status_change_from_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Every station override.
pub fn load_overrides(
    conn: &Connection,
) -> Result<Vec<(String, crate::state::coverage::Override)>, StoreError> {
    let mut st =
        conn.prepare("SELECT tps_code, link_type, exempt_reason FROM station_overrides")?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get(0)?,
            crate::state::coverage::Override {
                link_type: r.get(1)?,
                exempt_reason: r.get(2)?,
            },
        ))
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Sets (or clears, with both fields empty) a station's override.
pub fn set_override(
    conn: &Connection,
    tps: &str,
    o: &crate::state::coverage::Override,
    by: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    if o.link_type.is_none() && o.exempt_reason.is_none() {
        conn.execute("DELETE FROM station_overrides WHERE tps_code = ?1", [tps])?;
    } else {
        conn.execute(
            "INSERT INTO station_overrides (tps_code, link_type, exempt_reason, updated_ms, updated_by)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (tps_code) DO UPDATE SET link_type = excluded.link_type,
                 exempt_reason = excluded.exempt_reason, updated_ms = excluded.updated_ms,
                 updated_by = excluded.updated_by",
            params![tps, o.link_type, o.exempt_reason, now_ms, by],
        )?;
    }
    Ok(())
}

/// Measurements of some agents between two times (raw rows and blocks), oldest first
/// (for series).
pub fn measurements_between(
    conn: &Connection,
    agent_ids: &[AgentId],
    target: Option<&str>,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(AgentId, Measurement)>, StoreError> {
    let mut out = raw_between(conn, agent_ids, target, from_ms, to_ms)?;
    for id in agent_ids {
        for r in compact::block_rows(conn, *id, target, Some((from_ms, to_ms)))? {
            out.push((*id, r.m));
        }
    }
    out.sort_by_key(|(_, m)| m.start_ms);
    Ok(out)
}

/// Like [`measurements_between`], raw rows only: what is not yet in blocks (and so not
/// yet in hourly rollups).
pub fn raw_between(
    conn: &Connection,
    agent_ids: &[AgentId],
    target: Option<&str>,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(AgentId, Measurement)>, StoreError> {
    let mut out = Vec::new();
    let mut st = conn.prepare_cached(
        "SELECT seq, start_ms, target_name, target_address, method, sent, received,
                rtt_min_ms, rtt_avg_ms, rtt_max_ms, jitter_ms, errors
         FROM measurements WHERE agent_id = ?1 AND start_ms >= ?2 AND start_ms < ?3
           AND (?4 IS NULL OR target_name = ?4)
         ORDER BY start_ms",
    )?;
    for id in agent_ids {
        let rows = st.query_map(params![*id as i64, from_ms, to_ms, target], |r| {
            measurement_from_row(r, 0)
        })?;
        for m in rows {
            out.push((*id, m?));
        }
    }
    out.sort_by_key(|(_, m)| m.start_ms);
    Ok(out)
}

/// The highest rowid of a table (0 when empty).
pub fn max_id(conn: &Connection, table: &str) -> Result<i64, StoreError> {
    // Only called with our own table names.
    Ok(conn.query_row(
        &format!("SELECT coalesce(max(id), 0) FROM {table}"),
        [],
        |r| r.get(0),
    )?)
}

pub fn count(conn: &Connection, table: &str) -> Result<u64, StoreError> {
    // Only called with our own table names.
    Ok(conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
}
