//! The station registry file: parsing and validating the station CSV into `Station`s.
//! Writing them is the store's job; nothing here touches the database, so a file with
//! any bad row is rejected before a single station changes.

use std::collections::HashMap;
use std::io::Read;

use crate::domain::{Station, TpsCode};

/// Columns of the registry CSV, in order (the format `make_registry.py` writes).
pub const COLUMNS: [&str; 10] = [
    "tps_code",
    "tps_number",
    "village_code",
    "village",
    "district",
    "regency",
    "province",
    "lat",
    "lon",
    "voters",
];

/// Most voters one TPS may have. KPU caps a TPS at 300 (2024 general election) and 600
/// (Pilkada); 1,000 leaves room for other elections and still catches typos.
pub const MAX_VOTERS: u32 = 1000;

/// One problem with one row; `line` is the 1-based line in the file (header = line 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    pub field: &'static str,
    pub problem: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.field, self.problem)
    }
}

/// Why a registry file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read the registry: {0}")]
    Io(#[from] std::io::Error),
    #[error("line 1: the header must be `{}`; {problem}", COLUMNS.join(","))]
    Header { problem: String },
    #[error("line {line}: {problem}")]
    Csv { line: u64, problem: String },
    #[error("{} bad row(s), nothing imported:\n{}{}", .total, .shown.iter().map(|e| format!("  {e}\n")).collect::<String>(), if *.total > .shown.len() { format!("  … and {} more", .total - .shown.len()) } else { String::new() })]
    Rows { total: usize, shown: Vec<RowError> },
    #[error("the registry file has no stations")]
    Empty,
}

/// How many row errors are listed in full; the rest are counted.
const SHOWN_ERRORS: usize = 50;

/// Parses and validates a whole registry. `progress` is called every `every` rows.
pub fn parse(
    input: impl Read,
    every: u64,
    mut progress: impl FnMut(u64),
) -> Result<Vec<Station>, RegistryError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(input);
    let header = rdr.headers().map_err(|e| RegistryError::Header {
        problem: e.to_string(),
    })?;
    let got: Vec<&str> = header.iter().collect();
    for (i, want) in COLUMNS.iter().enumerate() {
        match got.get(i) {
            Some(g) if g.trim_start_matches('\u{feff}') == *want => {}
            Some(g) => {
                return Err(RegistryError::Header {
                    problem: format!("column {} is `{g}`, expected `{want}`", i + 1),
                });
            }
            None => {
                return Err(RegistryError::Header {
                    problem: format!("column `{want}` is missing"),
                });
            }
        }
    }
    if got.len() > COLUMNS.len() {
        return Err(RegistryError::Header {
            problem: format!("unexpected extra column `{}`", got[COLUMNS.len()]),
        });
    }

    let mut stations = Vec::new();
    let mut errors = Vec::new();
    let mut total_errors = 0usize;
    let mut seen: HashMap<TpsCode, u64> = HashMap::new();
    let mut record = csv::StringRecord::new();
    let mut rows = 0u64;
    loop {
        match rdr.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                return Err(RegistryError::Csv {
                    line,
                    problem: e.to_string(),
                });
            }
        }
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        rows += 1;
        if rows.is_multiple_of(every) {
            progress(rows);
        }
        match row(line, &record) {
            Ok(st) => {
                if let Some(first) = seen.insert(st.tps_code, line) {
                    total_errors += 1;
                    if errors.len() < SHOWN_ERRORS {
                        errors.push(RowError {
                            line,
                            field: "tps_code",
                            problem: format!("{} is a duplicate of line {first}", st.tps_code),
                        });
                    }
                } else {
                    stations.push(st);
                }
            }
            Err(e) => {
                total_errors += 1;
                if errors.len() < SHOWN_ERRORS {
                    errors.push(e);
                }
            }
        }
    }
    progress(rows);
    if total_errors > 0 {
        return Err(RegistryError::Rows {
            total: total_errors,
            shown: errors,
        });
    }
    if stations.is_empty() {
        return Err(RegistryError::Empty);
    }
    Ok(stations)
}

fn row(line: u64, r: &csv::StringRecord) -> Result<Station, RowError> {
    let err = |field: &'static str, problem: String| RowError {
        line,
        field,
        problem,
    };
    if r.len() != COLUMNS.len() {
        return Err(err(
            "row",
            format!("has {} fields, expected {}", r.len(), COLUMNS.len()),
        ));
    }
    let get = |i: usize| r.get(i).unwrap_or("");
    let tps_code: TpsCode = get(0)
        .parse()
        .map_err(|e: crate::domain::BadTpsCode| err("tps_code", e.to_string()))?;
    let number = get(1);
    if number.len() != 3 || !number.bytes().all(|b| b.is_ascii_digit()) || number == "000" {
        return Err(err(
            "tps_number",
            format!("{number:?} is not a 3-digit TPS number 001-999"),
        ));
    }
    if number != tps_code.number() {
        return Err(err(
            "tps_number",
            format!("{number} does not match the last 3 digits of tps_code {tps_code}"),
        ));
    }
    let village_code = get(2);
    if !valid_village_code(village_code) {
        return Err(err(
            "village_code",
            format!("{village_code:?} is not a village code like 21.71.01.1001"),
        ));
    }
    if village_code.replace('.', "") != tps_code.village_digits() {
        return Err(err(
            "village_code",
            format!("{village_code} does not match the first 10 digits of tps_code {tps_code}"),
        ));
    }
    let name = |i: usize, field: &'static str| -> Result<String, RowError> {
        let v = get(i);
        if v.is_empty() {
            Err(err(field, "is empty".into()))
        } else if v.len() > 200 {
            Err(err(field, "is longer than 200 characters".into()))
        } else {
            Ok(v.to_string())
        }
    };
    let village = name(3, "village")?;
    let district = name(4, "district")?;
    let regency = name(5, "regency")?;
    let province = name(6, "province")?;
    let coord = |i: usize, field: &'static str, limit: f64| -> Result<Option<f64>, RowError> {
        let v = get(i);
        if v.is_empty() {
            return Ok(None);
        }
        let x: f64 = v
            .parse()
            .map_err(|_| err(field, format!("{v:?} is not a number")))?;
        if !x.is_finite() || x.abs() > limit {
            return Err(err(field, format!("{v} is outside -{limit}..{limit}")));
        }
        Ok(Some(x))
    };
    let lat = coord(7, "lat", 90.0)?;
    let lon = coord(8, "lon", 180.0)?;
    if lat.is_some() != lon.is_some() {
        let field = if lat.is_none() { "lat" } else { "lon" };
        return Err(err(
            field,
            "is empty while the other coordinate is given; give both or neither".into(),
        ));
    }
    let v = get(9);
    let voters: u32 = v
        .parse()
        .map_err(|_| err("voters", format!("{v:?} is not a whole number")))?;
    if voters > MAX_VOTERS {
        return Err(err("voters", format!("{voters} is more than {MAX_VOTERS}")));
    }
    Ok(Station {
        tps_code,
        village_code: village_code.to_string(),
        village,
        district,
        regency,
        province,
        lat,
        lon,
        voters,
    })
}

fn valid_village_code(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 4
        && [2usize, 2, 2, 4]
            .iter()
            .zip(&parts)
            .all(|(n, p)| p.len() == *n && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "tps_code,tps_number,village_code,village,district,regency,province,lat,lon,voters\n";

    fn parse_str(s: &str) -> Result<Vec<Station>, RegistryError> {
        parse(s.as_bytes(), 1000, |_| {})
    }

    #[test]
    fn parses_good_rows() {
        let csv = format!(
            "{HEADER}2171011001001,001,21.71.01.1001,Tanjung Uma,Lubuk Baja,Kota Batam,Kepulauan Riau,1.1,104.0,300\n\
             2171011001002,002,21.71.01.1001,Tanjung Uma,Lubuk Baja,Kota Batam,Kepulauan Riau,,,250\n"
        );
        let st = parse_str(&csv).unwrap();
        assert_eq!(st.len(), 2);
        assert_eq!(st[0].lat, Some(1.1));
        assert_eq!(st[1].lat, None);
        assert_eq!(st[1].voters, 250);
    }

    #[test]
    fn bad_rows_are_named_by_line_and_field() {
        let csv = format!(
            "{HEADER}2171011001001,001,21.71.01.1001,A,B,C,D,1,104,300\n\
             2171011001002,003,21.71.01.1001,A,B,C,D,1,104,300\n\
             2171011001003,003,21.71.01.1002,A,B,C,D,1,104,300\n\
             217101100100X,004,21.71.01.1001,A,B,C,D,1,104,300\n\
             2171011001005,005,21.71.01.1001,A,B,C,D,91,104,300\n\
             2171011001006,006,21.71.01.1001,A,B,C,D,1,,300\n\
             2171011001007,007,21.71.01.1001,A,B,C,D,1,104,many\n\
             2171011001001,001,21.71.01.1001,A,B,C,D,1,104,300\n\
             2171011001008,008,21.71.01.1001,,B,C,D,1,104,300\n"
        );
        match parse_str(&csv) {
            Err(RegistryError::Rows { total, shown }) => {
                let got: Vec<(u64, &str)> = shown.iter().map(|e| (e.line, e.field)).collect();
                assert_eq!(
                    got,
                    vec![
                        (3, "tps_number"),
                        (4, "village_code"),
                        (5, "tps_code"),
                        (6, "lat"),
                        (7, "lon"),
                        (8, "voters"),
                        (9, "tps_code"),
                        (10, "village"),
                    ]
                );
                assert_eq!(total, 8);
                assert!(
                    shown[6].problem.contains("duplicate of line 2"),
                    "{}",
                    shown[6].problem
                );
            }
            other => panic!("expected row errors, got {other:?}"),
        }
    }

    #[test]
    fn header_must_match() {
        let csv = "tps_code,number,village_code\n";
        match parse_str(csv) {
            Err(RegistryError::Header { problem }) => {
                assert!(problem.contains("column 2 is `number`"), "{problem}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn empty_file_is_an_error() {
        assert!(matches!(parse_str(HEADER), Err(RegistryError::Empty)));
    }
}
