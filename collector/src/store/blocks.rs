//! The compact form of stored measurements: one block per agent, target and hour, its
//! rows in sequence order, each field a varint of its difference to the row before
//! (start times as differences of differences). RTTs are kept to the microsecond.
//! Pure encoding; the SQL that stores blocks is in [`super::compact`].

use crate::domain::{Measurement, Method, Rtt};

/// The format's first byte; a block of another version is refused, not misread.
const VERSION: u8 = 1;

/// One measurement as a block holds it: the measurement and when it was received.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub m: Measurement,
    pub received_ms: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a measurement block is damaged: {0}")]
pub struct BlockError(&'static str);

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_i(out: &mut Vec<u8>, v: i64) {
    put(out, zigzag(v));
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Milliseconds as whole microseconds.
fn us(ms: f64) -> i64 {
    (ms * 1000.0).round() as i64
}

fn ms(us: i64) -> f64 {
    us as f64 / 1000.0
}

/// Encodes rows of one agent and target (sorted here by sequence number).
pub fn encode(rows: &mut [Row]) -> Vec<u8> {
    rows.sort_by_key(|r| r.m.seq);
    let mut out = Vec::with_capacity(16 + rows.len() * 18);
    out.push(VERSION);
    put(&mut out, rows.len() as u64);
    // Address and method seldom change within an hour: a small dictionary of them.
    let mut dict: Vec<(&str, Method)> = Vec::new();
    for r in rows.iter() {
        let k = (r.m.target_address.as_str(), r.m.method);
        if !dict.contains(&k) {
            dict.push(k);
        }
    }
    put(&mut out, dict.len() as u64);
    for (addr, method) in &dict {
        out.push(match method {
            Method::Icmp => 0,
            Method::Tcp => 1,
        });
        put_str(&mut out, addr);
    }
    let name = rows.first().map_or("", |r| r.m.target_name.as_str());
    put_str(&mut out, name);
    let (mut seq, mut start, mut step, mut recv, mut sent, mut avg) =
        (0i64, 0i64, 0i64, 0i64, 0i64, 0i64);
    for (i, r) in rows.iter().enumerate() {
        let m = &r.m;
        let k = (m.target_address.as_str(), m.method);
        let d = dict.iter().position(|x| *x == k).unwrap_or(0) as u64;
        let jitter = m.rtt.as_ref().and_then(|r| r.jitter_ms);
        let tag = d << 2 | u64::from(jitter.is_some()) << 1 | u64::from(m.rtt.is_some());
        put(&mut out, tag);
        let s = m.seq as i64;
        put_i(&mut out, s.wrapping_sub(seq));
        seq = s;
        let this_step = m.start_ms.wrapping_sub(start);
        if i == 0 {
            put_i(&mut out, m.start_ms);
        } else {
            put_i(&mut out, this_step.wrapping_sub(step));
            step = this_step;
        }
        start = m.start_ms;
        let base = if i == 0 { m.start_ms } else { recv };
        put_i(&mut out, r.received_ms.wrapping_sub(base));
        recv = r.received_ms;
        put_i(&mut out, i64::from(m.sent) - sent);
        sent = i64::from(m.sent);
        put(&mut out, u64::from(m.sent.saturating_sub(m.received)));
        put(&mut out, u64::from(m.errors));
        if let Some(rtt) = &m.rtt {
            let a = us(rtt.avg_ms);
            put_i(&mut out, a - avg);
            avg = a;
            put_i(&mut out, a - us(rtt.min_ms));
            put_i(&mut out, us(rtt.max_ms) - a);
            if let Some(j) = jitter {
                put_i(&mut out, us(j));
            }
        }
    }
    out
}

/// Most bytes in one part of a block. SQLite keeps a row of at most about a quarter of a
/// 4 KB page beside three others on the page; much longer rows of an hour (2–3 KB) would
/// take a page each, half of it empty.
pub const PART_BYTES: usize = 960;

/// One encoded part: rows `first..=last` of the sorted input.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub seq_min: u64,
    pub seq_max: u64,
    pub rows: usize,
    pub data: Vec<u8>,
}

/// Encodes rows of one agent and target as few parts as keep each within `max` bytes
/// (a single row may exceed it), in sequence order.
pub fn encode_parts(rows: &mut [Row], max: usize) -> Vec<Part> {
    rows.sort_by_key(|r| r.m.seq);
    if rows.is_empty() {
        return Vec::new();
    }
    let whole = encode(rows);
    let mut k = whole.len().div_ceil(max.max(1));
    if k <= 1 {
        return vec![part(rows, whole)];
    }
    loop {
        let size = rows.len().div_ceil(k);
        let parts: Vec<Part> = rows
            .chunks_mut(size)
            .map(|c| {
                let data = encode(c);
                part(c, data)
            })
            .collect();
        if size == 1 || parts.iter().all(|p| p.data.len() <= max) {
            return parts;
        }
        k += 1;
    }
}

fn part(rows: &[Row], data: Vec<u8>) -> Part {
    Part {
        seq_min: rows.first().map_or(0, |r| r.m.seq),
        seq_max: rows.last().map_or(0, |r| r.m.seq),
        rows: rows.len(),
        data,
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, BlockError> {
        let (b, rest) = self.0.split_first().ok_or(BlockError("cut short"))?;
        self.0 = rest;
        Ok(*b)
    }
    fn u(&mut self) -> Result<u64, BlockError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(BlockError("a number is too long"))
    }
    fn i(&mut self) -> Result<i64, BlockError> {
        Ok(unzigzag(self.u()?))
    }
    fn u32(&mut self) -> Result<u32, BlockError> {
        u32::try_from(self.u()?).map_err(|_| BlockError("a count is out of range"))
    }
    fn str(&mut self) -> Result<String, BlockError> {
        let n = usize::try_from(self.u()?).map_err(|_| BlockError("bad length"))?;
        if n > self.0.len() {
            return Err(BlockError("cut short"));
        }
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        String::from_utf8(s.to_vec()).map_err(|_| BlockError("a name is not UTF-8"))
    }
}

/// Decodes a block made by [`encode`], rows in sequence order.
pub fn decode(bytes: &[u8]) -> Result<Vec<Row>, BlockError> {
    let mut r = Reader(bytes);
    if r.byte()? != VERSION {
        return Err(BlockError("unknown version"));
    }
    let n = usize::try_from(r.u()?).map_err(|_| BlockError("bad row count"))?;
    if n > bytes.len() {
        return Err(BlockError("more rows than bytes"));
    }
    let nd = r.u()?;
    if nd > 1000 {
        return Err(BlockError("bad dictionary"));
    }
    let mut dict = Vec::new();
    for _ in 0..nd {
        let method = match r.byte()? {
            0 => Method::Icmp,
            1 => Method::Tcp,
            _ => return Err(BlockError("unknown method")),
        };
        dict.push((r.str()?, method));
    }
    let name = r.str()?;
    let (mut seq, mut start, mut step, mut recv, mut sent, mut avg) =
        (0i64, 0i64, 0i64, 0i64, 0i64, 0i64);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let tag = r.u()?;
        let (addr, method) = dict
            .get((tag >> 2) as usize)
            .ok_or(BlockError("bad dictionary index"))?;
        seq = seq.wrapping_add(r.i()?);
        if i == 0 {
            start = r.i()?;
        } else {
            step = step.wrapping_add(r.i()?);
            start = start.wrapping_add(step);
        }
        let base = if i == 0 { start } else { recv };
        recv = base.wrapping_add(r.i()?);
        sent += r.i()?;
        let s = u32::try_from(sent).map_err(|_| BlockError("bad probe count"))?;
        let lost = r.u32()?;
        let errors = r.u32()?;
        let rtt = if tag & 1 == 1 {
            avg += r.i()?;
            let min = avg - r.i()?;
            let max = avg + r.i()?;
            let jitter = if tag & 2 == 2 { Some(ms(r.i()?)) } else { None };
            Some(Rtt {
                min_ms: ms(min),
                avg_ms: ms(avg),
                max_ms: ms(max),
                jitter_ms: jitter,
            })
        } else {
            None
        };
        out.push(Row {
            m: Measurement {
                seq: seq as u64,
                start_ms: start,
                target_name: name.clone(),
                target_address: addr.clone(),
                method: *method,
                sent: s,
                received: s.saturating_sub(lost),
                errors,
                rtt,
            },
            received_ms: recv,
        });
    }
    if !r.0.is_empty() {
        return Err(BlockError("bytes left over"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: u64, start_ms: i64, received_ms: i64, answered: bool) -> Row {
        let avg = 40.0 + (seq % 13) as f64 * 0.731_234;
        Row {
            m: Measurement {
                seq,
                start_ms,
                target_name: "gateway".into(),
                target_address: if seq.is_multiple_of(50) {
                    "192.0.2.9"
                } else {
                    "192.0.2.1"
                }
                .into(),
                method: if seq.is_multiple_of(77) {
                    Method::Tcp
                } else {
                    Method::Icmp
                },
                sent: 5,
                received: if answered { 5 - (seq % 3) as u32 } else { 0 },
                errors: u32::from(!answered),
                rtt: answered.then(|| Rtt {
                    min_ms: avg - 3.25,
                    avg_ms: avg,
                    max_ms: avg + 11.5,
                    jitter_ms: (!seq.is_multiple_of(5)).then_some(1.875),
                }),
            },
            received_ms,
        }
    }

    /// An hour of one target: a round every 30 s, pushed in pairs every minute.
    fn hour() -> Vec<Row> {
        let t0 = 1_796_000_000_000i64;
        (0..120u64)
            .map(|i| {
                let start = t0 + i as i64 * 30_000 + (i as i64 * 37 % 11);
                let received = t0 + (i as i64 / 2 + 1) * 60_000 + 250;
                row(1000 + i * 3, start, received, i % 17 != 0)
            })
            .collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 0.0005 + 1e-9
    }

    #[test]
    fn a_block_decodes_to_its_rows_with_rtts_to_the_microsecond() {
        let mut rows = hour();
        let bytes = encode(&mut rows.clone());
        let back = decode(&bytes).unwrap();
        rows.sort_by_key(|r| r.m.seq);
        assert_eq!(back.len(), rows.len());
        for (a, b) in rows.iter().zip(&back) {
            let (mut a2, mut b2) = (a.clone(), b.clone());
            let (ra, rb) = (a2.m.rtt.take(), b2.m.rtt.take());
            assert_eq!(a2, b2, "every field but the RTTs exactly");
            match (ra, rb) {
                (None, None) => {}
                (Some(x), Some(y)) => {
                    assert!(close(x.min_ms, y.min_ms) && close(x.avg_ms, y.avg_ms));
                    assert!(close(x.max_ms, y.max_ms));
                    assert_eq!(x.jitter_ms.is_some(), y.jitter_ms.is_some());
                    assert!(close(
                        x.jitter_ms.unwrap_or(0.0),
                        y.jitter_ms.unwrap_or(0.0)
                    ));
                }
                other => panic!("RTT presence differs: {other:?}"),
            }
        }
    }

    #[test]
    fn an_hour_takes_under_twenty_bytes_a_measurement() {
        let bytes = encode(&mut hour());
        let per = bytes.len() as f64 / 120.0;
        assert!(per < 20.0, "{per} bytes per measurement");
    }

    #[test]
    fn an_hour_is_cut_into_parts_that_fit_four_to_a_page() {
        let mut rows = hour();
        let parts = encode_parts(&mut rows, PART_BYTES);
        assert!(parts.len() >= 2, "{} parts", parts.len());
        assert!(parts.iter().all(|p| p.data.len() <= PART_BYTES));
        let back: Vec<Row> = parts
            .iter()
            .flat_map(|p| decode(&p.data).unwrap())
            .collect();
        assert_eq!(back.len(), rows.len());
        assert!(
            back.windows(2).all(|w| w[0].m.seq < w[1].m.seq),
            "in order, none lost"
        );
        assert_eq!(parts.iter().map(|p| p.rows).sum::<usize>(), rows.len());
        assert_eq!(parts[0].seq_min, rows[0].m.seq);
        assert_eq!(parts.last().unwrap().seq_max, rows.last().unwrap().m.seq);
        assert_eq!(encode_parts(&mut rows[..3], PART_BYTES).len(), 1);
    }

    #[test]
    fn out_of_order_rows_and_odd_values_survive() {
        let mut rows = vec![
            row(9, 5_000, 4_000, true),
            row(2, 9_000_000, 9_000_001, false),
            row(u64::MAX >> 1, -5, 0, true),
        ];
        let back = decode(&encode(&mut rows)).unwrap();
        assert_eq!(
            back.iter().map(|r| r.m.seq).collect::<Vec<_>>(),
            vec![2, 9, u64::MAX >> 1]
        );
        assert_eq!(back[1].m.start_ms, 5_000);
        assert_eq!(back[1].received_ms, 4_000);
        assert_eq!(back[2].m.start_ms, -5);
    }

    #[test]
    fn damage_is_an_error_not_a_wrong_answer() {
        let bytes = encode(&mut hour());
        for cut in [0, 1, 5, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(decode(&extra), Err(BlockError("bytes left over")));
        let mut v = bytes;
        v[0] = 9;
        assert_eq!(decode(&v), Err(BlockError("unknown version")));
    }
}
