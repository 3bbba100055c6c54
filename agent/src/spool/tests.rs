use super::*;

fn entry(start_ms: i64) -> NewEntry {
    NewEntry {
        start_ms,
        offset_ms: None,
        clock_epoch: 1,
        target_name: "gateway".into(),
        target_address: "192.0.2.1".into(),
        method: Method::Icmp,
        round: Round {
            sent: 5,
            received: 4,
            errors: 1,
            rtt: Some(RttStats {
                min_ms: 1.0,
                avg_ms: 2.0,
                max_ms: 3.0,
                jitter_ms: Some(0.5),
            }),
        },
    }
}

const BIG: Limits = Limits {
    max_bytes: 1 << 30,
    max_entries: u64::MAX,
};

fn seqs(s: &mut Spool) -> Vec<u64> {
    s.batch(100_000).unwrap().iter().map(|e| e.seq).collect()
}

/// Rows in the file, acknowledged or not.
fn rows(s: &Spool) -> u64 {
    s.conn
        .query_row("SELECT count(*) FROM spool", [], |r| r.get::<_, i64>(0))
        .unwrap() as u64
}

#[test]
fn sequence_survives_reopen_and_ack() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(dir.path(), BIG).unwrap();
    assert_eq!(s.append(&[entry(1000), entry(1000)]).unwrap(), vec![1, 2]);
    s.ack(2);
    drop(s); // trims
    let mut s = Spool::open(dir.path(), BIG).unwrap();
    assert_eq!(rows(&s), 0);
    assert_eq!(
        s.append(&[entry(3000)]).unwrap(),
        vec![3],
        "never reused after emptying"
    );
    let b = s.batch(10).unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].round, entry(0).round, "ICMP errors and RTTs come back");
}

#[test]
fn an_acknowledgement_is_kept_in_memory_and_deleted_with_the_next_round() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(dir.path(), BIG).unwrap();
    s.append(&[entry(1), entry(1), entry(1)]).unwrap();
    s.ack(2);
    assert_eq!(
        seqs(&mut s),
        vec![3],
        "acknowledged entries are not sent again"
    );
    assert_eq!(s.depth().unwrap(), 1);
    assert_eq!(rows(&s), 3, "no write of its own");
    s.append(&[entry(2)]).unwrap();
    assert_eq!(rows(&s), 2, "deleted in the round's transaction");
    assert_eq!(seqs(&mut s), vec![3, 4]);
}

#[test]
fn the_age_bound_counts_rounds_not_clock_time() {
    let dir = tempfile::tempdir().unwrap();
    // 60 s of 20 s rounds of 2 targets: 6 entries.
    let limits = Limits::new(Duration::from_secs(60), Duration::from_secs(20), 2, 1 << 30);
    assert_eq!(limits.max_entries, 6);
    let mut s = Spool::open(dir.path(), limits).unwrap();
    // A clock that jumps from 1970 to now deletes nothing.
    s.append(&[entry(1_000), entry(1_000)]).unwrap();
    s.append(&[entry(1_800_000_000_000), entry(1_800_000_000_000)])
        .unwrap();
    assert_eq!(s.dropped().unwrap(), 0);
    for _ in 0..3 {
        s.append(&[entry(1_800_000_000_000), entry(1_800_000_000_000)])
            .unwrap();
    }
    assert_eq!(seqs(&mut s), (5..=10).collect::<Vec<_>>());
    assert_eq!(
        s.dropped_by_reason().unwrap(),
        BTreeMap::from([(DropReason::TooOld, 4)])
    );
}

#[test]
fn the_size_bound_holds_in_bytes_on_disk_and_counts_every_drop() {
    let dir = tempfile::tempdir().unwrap();
    let max = 512 * 1024;
    let mut s = Spool::open(
        dir.path(),
        Limits {
            max_bytes: max,
            max_entries: u64::MAX,
        },
    )
    .unwrap();
    for round in 0..400 {
        let batch: Vec<_> = (0..25).map(|_| entry(round * 1000)).collect();
        s.append(&batch).unwrap();
        assert!(
            s.footprint_bytes() <= max,
            "round {round}: {} bytes on disk",
            s.footprint_bytes()
        );
    }
    let dropped = s.dropped().unwrap();
    let depth = s.depth().unwrap();
    assert!(dropped > 0);
    assert_eq!(
        dropped + depth,
        10_000,
        "every entry is either kept or counted as dropped"
    );
    assert_eq!(
        s.dropped_by_reason().unwrap().keys().collect::<Vec<_>>(),
        vec![&DropReason::SpoolFull]
    );
    // What is kept is the newest.
    assert_eq!(s.batch(1).unwrap()[0].seq, dropped + 1);
    let wal = std::fs::metadata(dir.path().join("spool.sqlite-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(wal <= WAL_ALLOWANCE, "the log is checkpointed: {wal} bytes");
    assert!(
        !dir.path().join("spool.sqlite-shm").exists(),
        "no shared-memory file"
    );
}

#[test]
fn renumbering_only_when_the_collector_holds_more_than_was_ever_numbered() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(dir.path(), BIG).unwrap();
    s.append(&(1..=6).map(entry).collect::<Vec<_>>()).unwrap();
    assert_eq!(s.renumber_above(1).unwrap(), 0, "the spool is ahead");
    // The collector stored 1–6, the agent died before deleting them: they are the
    // ones it holds, not new ones.
    assert_eq!(s.renumber_above(6).unwrap(), 0);
    s.ack(6);
    assert!(seqs(&mut s).is_empty());
    assert_eq!(s.append(&[entry(7)]).unwrap(), vec![7]);
    // A spool that was replaced: the collector holds up to 20.
    assert_eq!(s.renumber_above(20).unwrap(), 14);
    assert_eq!(seqs(&mut s), vec![21]);
    assert_eq!(s.append(&[entry(8)]).unwrap(), vec![22]);
}

#[test]
fn discarding_counts_as_refused_and_keeps_the_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(dir.path(), BIG).unwrap();
    s.append(&[entry(1), entry(2)]).unwrap();
    assert_eq!(s.discard(&[1, 2]).unwrap(), 2);
    assert_eq!(s.depth().unwrap(), 0);
    assert_eq!(
        s.dropped_by_reason().unwrap(),
        BTreeMap::from([(DropReason::Refused, 2)])
    );
    assert_eq!(s.append(&[entry(3)]).unwrap(), vec![3]);
}

#[test]
fn a_refused_write_holds_rounds_in_memory_until_the_disk_takes_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(dir.path(), BIG).unwrap();
    s.append(&[entry(0)]).unwrap();
    // The file may not grow: SQLite answers "database or disk is full".
    let pages: i64 = s
        .conn
        .pragma_query_value(None, "page_count", |r| r.get(0))
        .unwrap();
    s.conn.pragma_update(None, "max_page_count", pages).unwrap();
    let big = |t| NewEntry {
        target_name: "x".repeat(4000),
        ..entry(t)
    };
    let e = s.append(&[big(1)]).unwrap_err();
    assert_eq!(e.storage_problem(dir.path()), Some(StorageProblem::Full));
    for t in 2..(HELD_ROUNDS as i64 + 11) {
        assert!(s.append(&[big(t)]).is_err());
    }
    assert_eq!(s.held_rounds(), HELD_ROUNDS);
    assert_eq!(
        s.depth().unwrap(),
        1 + HELD_ROUNDS as u64,
        "held rounds wait too"
    );
    assert_eq!(
        s.dropped_by_reason().unwrap(),
        BTreeMap::from([(DropReason::DiskFull, 10)]),
        "the oldest held rounds went, counted"
    );
    // Room again: everything held is written, in order, with the drop count.
    s.conn
        .pragma_update(None, "max_page_count", 1_000_000)
        .unwrap();
    let written = s.append(&[entry(99_999)]).unwrap();
    assert_eq!(written.len(), HELD_ROUNDS + 1);
    assert_eq!(s.held_rounds(), 0);
    let b = s.batch(100_000).unwrap();
    assert_eq!(b.len(), HELD_ROUNDS + 2);
    assert_eq!(b[1].start_ms, 11, "the oldest ten held rounds were dropped");
    assert!(
        b.windows(2)
            .all(|w| w[0].seq < w[1].seq && w[0].start_ms < w[1].start_ms)
    );
    drop(s);
    let s = Spool::open(dir.path(), BIG).unwrap();
    assert_eq!(s.dropped().unwrap(), 10, "the count is on disk");
}

#[test]
fn an_offset_reaches_the_rounds_of_its_epoch_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(dir.path(), BIG).unwrap();
    let other = NewEntry {
        clock_epoch: 2,
        ..entry(10)
    };
    s.append(&[entry(10), other]).unwrap();
    assert_eq!(s.set_offset(1, 5_000).unwrap(), vec![1]);
    let b = s.batch(10).unwrap();
    assert_eq!(b[0].corrected_start_ms(), 5_010);
    assert_eq!(
        b[1].corrected_start_ms(),
        10,
        "another epoch keeps its time"
    );
    assert!(
        s.set_offset(1, 9_000).unwrap().is_empty(),
        "a stamped round keeps its offset"
    );
    // A round stamped before the offset was learned, written after: it gets it.
    s.append(&[entry(20)]).unwrap();
    let b = s.batch(10).unwrap();
    assert_eq!(b[2].corrected_start_ms(), 9_020);
    // Not across epochs.
    s.append(&[NewEntry {
        clock_epoch: 3,
        ..entry(30)
    }])
    .unwrap();
    assert_eq!(s.batch(10).unwrap()[3].corrected_start_ms(), 30);
}

#[test]
fn a_version_1_spool_is_migrated_with_its_numbers_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = Connection::open(dir.path().join("spool.sqlite")).unwrap();
        c.execute_batch(
            "CREATE TABLE spool (
                seq INTEGER PRIMARY KEY AUTOINCREMENT, start_ms INTEGER NOT NULL,
                target_name TEXT NOT NULL, target_address TEXT NOT NULL, method TEXT NOT NULL,
                sent INTEGER NOT NULL, received INTEGER NOT NULL,
                rtt_min_ms REAL, rtt_avg_ms REAL, rtt_max_ms REAL, jitter_ms REAL);
             CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT INTO counters VALUES ('dropped', 4);
             INSERT INTO spool VALUES (41, 5, 'gw', '192.0.2.1', 'icmp', 5, 0, NULL, NULL, NULL, NULL);
             UPDATE sqlite_sequence SET seq = 57 WHERE name = 'spool';",
        )
        .unwrap();
    }
    let mut s = Spool::open(dir.path(), BIG).unwrap();
    assert_eq!(seqs(&mut s), vec![41]);
    assert_eq!(s.last_seq().unwrap(), 57);
    assert_eq!(
        s.dropped_by_reason().unwrap(),
        BTreeMap::from([(DropReason::SpoolFull, 4)])
    );
    assert_eq!(s.append(&[entry(6)]).unwrap(), vec![58]);
}
