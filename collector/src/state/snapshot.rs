//! The immutable picture of coverage that readers (the API, the dashboard) use without
//! locks: the registry as the owner knows it (shared until the registry changes), each
//! station's state in chunks (only changed chunks are copied when a new picture is
//! published), and the counts per region.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::domain::{RegionLevel, Station, TpsCode};
use crate::state::coverage::{Cause, Counts, Coverage, Reason, Rules, State};
use crate::state::flags::FlagRules;

/// Stations per chunk of states.
pub const CHUNK: usize = 4096;

/// What does not change between registry imports.
#[derive(Debug, Clone)]
pub struct StationInfo {
    pub tps_code: TpsCode,
    /// Position in [`Registry::villages`] (about ten stations share a village).
    village: u32,
    /// Position in [`Registry::districts`].
    district: u32,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    /// Its coordinates fall outside its own regency's boundary (a registry error).
    pub outside_regency: bool,
}

/// A village's name, as written and lowercased for search.
#[derive(Debug, Clone)]
struct Village {
    name: Box<str>,
    lowercase: Box<str>,
}

/// The registry in the owner's order (the order coverage keeps), with a code index and
/// the code order for listing.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    pub stations: Vec<StationInfo>,
    pub index: HashMap<TpsCode, u32>,
    /// Positions in `stations`, sorted by TPS code.
    pub order: Vec<u32>,
    /// Region code → name (`21.71` → `Kota Batam`).
    pub region_names: HashMap<String, String>,
    villages: Vec<Village>,
    /// Village code (the TPS code's first ten digits) → position in `villages`.
    village_index: HashMap<[u8; 10], u32>,
    /// Dotted district codes (`21.71.01`), and the index by the TPS code's first six digits.
    districts: Vec<String>,
    district_index: HashMap<[u8; 6], u32>,
    /// Stations outside their own regency, by region code (`""`: all), as of the last
    /// upsert.
    outside: HashMap<String, usize>,
}

impl Registry {
    /// Adds or updates stations (the order of known ones is kept); returns how many were new.
    pub fn upsert(&mut self, stations: &[Station]) -> usize {
        let before = self.stations.len();
        for st in stations {
            for (level, name) in [
                (RegionLevel::Province, &st.province),
                (RegionLevel::Regency, &st.regency),
                (RegionLevel::District, &st.district),
            ] {
                self.region_names
                    .insert(st.tps_code.region(level), name.clone());
            }
            let mut key = [0u8; 10];
            key.copy_from_slice(&st.tps_code.as_str().as_bytes()[..10]);
            let village = match self.village_index.get(&key) {
                Some(&v) => {
                    let known = &mut self.villages[v as usize];
                    if *known.name != *st.village {
                        *known = Village {
                            name: st.village.clone().into(),
                            lowercase: st.village.to_lowercase().into(),
                        };
                    }
                    v
                }
                None => {
                    let v = self.villages.len() as u32;
                    self.villages.push(Village {
                        name: st.village.clone().into(),
                        lowercase: st.village.to_lowercase().into(),
                    });
                    self.village_index.insert(key, v);
                    v
                }
            };
            let mut dkey = [0u8; 6];
            dkey.copy_from_slice(&key[..6]);
            let district = match self.district_index.get(&dkey) {
                Some(&d) => d,
                None => {
                    let d = self.districts.len() as u32;
                    self.districts
                        .push(st.tps_code.region(RegionLevel::District));
                    self.district_index.insert(dkey, d);
                    d
                }
            };
            let info = StationInfo {
                tps_code: st.tps_code,
                village,
                district,
                lat: st.lat,
                lon: st.lon,
                outside_regency: crate::boundaries::outside_own_regency(
                    &st.tps_code,
                    st.lat,
                    st.lon,
                ),
            };
            match self.index.get(&st.tps_code) {
                Some(&i) => self.stations[i as usize] = info,
                None => {
                    self.index.insert(st.tps_code, self.stations.len() as u32);
                    self.stations.push(info);
                }
            }
        }
        let added = self.stations.len() - before;
        if added > 0 || self.order.len() != self.stations.len() {
            let mut order: Vec<u32> = (0..self.stations.len() as u32).collect();
            order.sort_unstable_by_key(|&i| self.stations[i as usize].tps_code);
            self.order = order;
        }
        self.outside = HashMap::new();
        for s in self.stations.iter().filter(|s| s.outside_regency) {
            *self.outside.entry(String::new()).or_default() += 1;
            for level in [
                RegionLevel::Province,
                RegionLevel::Regency,
                RegionLevel::District,
            ] {
                *self.outside.entry(s.tps_code.region(level)).or_default() += 1;
            }
        }
        added
    }

    /// Stations of a region (`""`: all; `21`, `21.71`, `21.71.01`) placed outside their
    /// own regency.
    pub fn outside_regency(&self, region: &str) -> usize {
        self.outside.get(region).copied().unwrap_or(0)
    }

    pub fn name(&self, region: &str) -> Option<&str> {
        self.region_names.get(region).map(String::as_str)
    }

    /// The village name of a station.
    pub fn village(&self, info: &StationInfo) -> &str {
        &self.villages[info.village as usize].name
    }
}

/// A station's coverage in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StationState {
    pub state: State,
    pub reason: Reason,
    pub since_ms: i64,
    pub cause: Option<Cause>,
    pub exempt: bool,
}

/// One station as readers see it.
#[derive(Debug, Clone, Copy)]
pub struct StationRow<'a> {
    pub info: &'a StationInfo,
    pub state: StationState,
    registry: &'a Registry,
}

impl StationRow<'_> {
    pub fn village(&self) -> &str {
        self.registry.village(self.info)
    }
    pub fn regency(&self) -> String {
        self.info.tps_code.region(RegionLevel::Regency)
    }
    pub fn district(&self) -> String {
        self.info.tps_code.region(RegionLevel::District)
    }
}

/// Everything readers see, as of one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Collector time of the picture.
    pub as_of_ms: i64,
    /// Facts applied before it was taken.
    pub applied: u64,
    pub rules: Rules,
    pub flag_rules: FlagRules,
    pub registry: Arc<Registry>,
    chunks: Vec<Arc<Vec<StationState>>>,
    counts: Arc<HashMap<String, Counts>>,
    active_flags: Arc<HashMap<String, u64>>,
}

fn state_of(c: &Coverage, i: usize) -> StationState {
    let s = &c.stations()[i];
    StationState {
        state: s.state,
        reason: s.reason,
        since_ms: s.since_ms,
        cause: s.cause,
        exempt: s.overrides.exempt_reason.is_some(),
    }
}

fn chunk_of(c: &Coverage, k: usize) -> Arc<Vec<StationState>> {
    let n = c.stations().len();
    Arc::new(
        (k * CHUNK..((k + 1) * CHUNK).min(n))
            .map(|i| state_of(c, i))
            .collect(),
    )
}

impl Snapshot {
    /// A first picture of everything.
    pub fn build(
        coverage: &Coverage,
        flag_rules: FlagRules,
        registry: Arc<Registry>,
        active_flags: Arc<HashMap<String, u64>>,
        now_ms: i64,
    ) -> Snapshot {
        let n = coverage.stations().len();
        Snapshot {
            as_of_ms: now_ms,
            applied: 0,
            rules: coverage.rules,
            flag_rules,
            registry,
            chunks: (0..n.div_ceil(CHUNK))
                .map(|k| chunk_of(coverage, k))
                .collect(),
            counts: Arc::new(coverage.all_counts().clone()),
            active_flags,
        }
    }

    /// The next picture: copies only the chunks holding `changed` stations.
    pub fn next(
        &self,
        coverage: &Coverage,
        registry: Arc<Registry>,
        active_flags: Arc<HashMap<String, u64>>,
        changed: &HashSet<usize>,
        now_ms: i64,
    ) -> Snapshot {
        let n = coverage.stations().len();
        let mut chunks = self.chunks.clone();
        chunks.truncate(n.div_ceil(CHUNK));
        for k in 0..n.div_ceil(CHUNK) {
            let grown = chunks
                .get(k)
                .is_none_or(|c| c.len() < CHUNK.min(n - k * CHUNK));
            if grown || changed.contains(&k) {
                let c = chunk_of(coverage, k);
                if k < chunks.len() {
                    chunks[k] = c;
                } else {
                    chunks.push(c);
                }
            }
        }
        Snapshot {
            as_of_ms: now_ms,
            applied: self.applied,
            rules: coverage.rules,
            flag_rules: self.flag_rules,
            registry,
            chunks,
            counts: Arc::new(coverage.all_counts().clone()),
            active_flags,
        }
    }

    /// Open or acknowledged flags under a region code (`""` for all).
    pub fn active_flags(&self, region: &str) -> u64 {
        self.active_flags.get(region).copied().unwrap_or(0)
    }

    fn state_at(&self, i: u32) -> StationState {
        let i = i as usize;
        self.chunks[i / CHUNK][i % CHUNK]
    }

    pub fn station(&self, tps: &TpsCode) -> Option<StationRow<'_>> {
        let &i = self.registry.index.get(tps)?;
        Some(StationRow {
            info: &self.registry.stations[i as usize],
            state: self.state_at(i),
            registry: &self.registry,
        })
    }

    /// Every station in TPS code order.
    pub fn stations(&self) -> impl Iterator<Item = StationRow<'_>> {
        self.registry.order.iter().map(|&i| StationRow {
            info: &self.registry.stations[i as usize],
            state: self.state_at(i),
            registry: &self.registry,
        })
    }

    pub fn station_count(&self) -> usize {
        self.registry.stations.len()
    }

    /// Counts for a region code prefix (`""` for everything).
    pub fn counts(&self, region: &str) -> Counts {
        self.counts.get(region).copied().unwrap_or_default()
    }

    /// Counts of every region at one level, optionally under a parent, by code.
    pub fn region_counts(&self, level: RegionLevel, parent: Option<&str>) -> Vec<(String, Counts)> {
        crate::state::coverage::regions_at(&self.counts, level, parent)
    }

    /// A search for `needle` (lowercase): matches a TPS code prefix, the village name or
    /// the district name. Names are matched once per village and district, so the
    /// matcher is a lookup per station.
    pub fn matcher(&self, needle: &str) -> impl Fn(&StationRow<'_>) -> bool + use<> {
        let districts: Vec<bool> = self
            .registry
            .districts
            .iter()
            .map(|code| {
                self.registry
                    .name(code)
                    .is_some_and(|n| n.to_lowercase().contains(needle))
            })
            .collect();
        let villages: Vec<bool> = self
            .registry
            .villages
            .iter()
            .map(|v| v.lowercase.contains(needle))
            .collect();
        let needle = needle.to_string();
        move |row: &StationRow<'_>| {
            row.info.tps_code.as_str().starts_with(needle.as_str())
                || villages[row.info.village as usize]
                || districts[row.info.district as usize]
        }
    }
}
