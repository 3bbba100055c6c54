//! Regency boundaries, bundled with the collector (`collector/data/batas-kabkota.geojson`:
//! simplified, MIT, © Cahya DSN — the attribution travels with every copy served): which
//! stations lie outside their own regency, and the outlines the dashboard's map draws.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

use crate::domain::{RegionLevel, TpsCode};

/// Where the shapes come from; shown under the map and sent with the GeoJSON.
pub const ATTRIBUTION: &str = "Batas wilayah: cahyadsn/wilayah_boundaries (MIT, © 2024 Cahya DSN), Kepmendagri No 300.2.2-2138/2025; disederhanakan";

const GEOJSON: &str = include_str!("../data/batas-kabkota.geojson");

/// A ring of `[lon, lat]` points with its bounding box.
#[derive(Debug)]
struct Ring {
    points: Vec<(f64, f64)>,
    min: (f64, f64),
    max: (f64, f64),
}

impl Ring {
    fn new(points: Vec<(f64, f64)>) -> Ring {
        let mut min = (f64::INFINITY, f64::INFINITY);
        let mut max = (f64::NEG_INFINITY, f64::NEG_INFINITY);
        for &(x, y) in &points {
            min = (min.0.min(x), min.1.min(y));
            max = (max.0.max(x), max.1.max(y));
        }
        Ring { points, min, max }
    }

    /// Even-odd ray casting.
    fn contains(&self, x: f64, y: f64) -> bool {
        if x < self.min.0 || x > self.max.0 || y < self.min.1 || y > self.max.1 {
            return false;
        }
        let mut inside = false;
        let p = &self.points;
        let mut j = p.len().wrapping_sub(1);
        for i in 0..p.len() {
            let ((xi, yi), (xj, yj)) = (p[i], p[j]);
            if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
                inside = !inside;
            }
            j = i;
        }
        inside
    }
}

/// One regency: its polygons (outer ring, holes) and its feature as served.
#[derive(Debug)]
struct Regency {
    polygons: Vec<(Ring, Vec<Ring>)>,
    feature: String,
}

/// The bundled boundaries, by regency code (`21.71`).
#[derive(Debug, Default)]
pub struct Boundaries {
    regencies: HashMap<String, Regency>,
}

fn ring(v: &Value) -> Ring {
    let points = v
        .as_array()
        .map(|pts| {
            pts.iter()
                .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    Ring::new(points)
}

impl Boundaries {
    /// The shapes bundled with this build (parsed once).
    pub fn bundled() -> &'static Boundaries {
        static B: OnceLock<Boundaries> = OnceLock::new();
        B.get_or_init(|| Boundaries::parse(GEOJSON).unwrap_or_default())
    }

    /// Parses a FeatureCollection of (Multi)Polygons with a `code` property.
    pub fn parse(geojson: &str) -> Result<Boundaries, serde_json::Error> {
        let doc: Value = serde_json::from_str(geojson)?;
        let mut regencies = HashMap::new();
        for f in doc["features"].as_array().into_iter().flatten() {
            let Some(code) = f["properties"]["code"].as_str() else {
                continue;
            };
            let g = &f["geometry"];
            let polys: Vec<&Value> = match g["type"].as_str() {
                Some("MultiPolygon") => g["coordinates"].as_array().into_iter().flatten().collect(),
                Some("Polygon") => vec![&g["coordinates"]],
                _ => continue,
            };
            let polygons = polys
                .into_iter()
                .filter_map(|p| {
                    let rings = p.as_array()?;
                    let (outer, holes) = rings.split_first()?;
                    Some((ring(outer), holes.iter().map(ring).collect()))
                })
                .collect();
            regencies.insert(
                code.to_string(),
                Regency {
                    polygons,
                    feature: f.to_string(),
                },
            );
        }
        Ok(Boundaries { regencies })
    }

    /// Whether a point lies inside the regency; `None` when the regency has no shape.
    pub fn contains(&self, regency: &str, lat: f64, lon: f64) -> Option<bool> {
        let r = self.regencies.get(regency)?;
        Some(r.polygons.iter().any(|(outer, holes)| {
            outer.contains(lon, lat) && !holes.iter().any(|h| h.contains(lon, lat))
        }))
    }

    /// A GeoJSON FeatureCollection of the given regencies (those with a shape), with the
    /// attribution in `source`.
    pub fn geojson<'a>(&self, regencies: impl IntoIterator<Item = &'a str>) -> String {
        let mut out = String::from("{\"type\":\"FeatureCollection\",\"source\":");
        out.push_str(&Value::from(ATTRIBUTION).to_string());
        out.push_str(",\"features\":[");
        let mut first = true;
        for code in regencies {
            if let Some(r) = self.regencies.get(code) {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(&r.feature);
            }
        }
        out.push_str("]}");
        out
    }
}

/// Whether a station's coordinates fall outside its own regency's boundary (`false`
/// without coordinates or without a shape for the regency).
pub fn outside_own_regency(tps_code: &TpsCode, lat: Option<f64>, lon: Option<f64>) -> bool {
    let (Some(lat), Some(lon)) = (lat, lon) else {
        return false;
    };
    let regency = tps_code.region(RegionLevel::Regency);
    Boundaries::bundled().contains(&regency, lat, lon) == Some(false)
}

/// The stations of a registry whose coordinates fall outside their own regency, with
/// their line in the file (header = line 1, one line a station).
pub fn outside_in_registry(
    stations: &[crate::domain::Station],
) -> Vec<(u64, &crate::domain::Station)> {
    stations
        .iter()
        .enumerate()
        .filter(|(_, s)| outside_own_regency(&s.tps_code, s.lat, s.lon))
        .map(|(i, s)| (i as u64 + 2, s))
        .collect()
}

/// What an import says about stations outside their regency: how many, and the first
/// few as lines an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutsideWarning {
    pub count: usize,
    pub first: Vec<String>,
}

/// Lines shown in full by [`warn_outside`].
const SHOWN: usize = 5;

pub fn warn_outside(stations: &[crate::domain::Station]) -> OutsideWarning {
    let outside = outside_in_registry(stations);
    OutsideWarning {
        count: outside.len(),
        first: outside
            .iter()
            .take(SHOWN)
            .map(|(line, s)| {
                format!(
                    "line {line}: TPS {} at {:.5}, {:.5} is outside {}",
                    s.tps_code,
                    s.lat.unwrap_or_default(),
                    s.lon.unwrap_or_default(),
                    s.regency
                )
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_inside_outside_and_in_a_hole() {
        let b = Boundaries::parse(
            r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"code":"99.01"},
            "geometry":{"type":"Polygon","coordinates":[[[0,0],[10,0],[10,10],[0,10],[0,0]],[[4,4],[6,4],[6,6],[4,6],[4,4]]]}}]}"#,
        )
        .unwrap();
        assert_eq!(b.contains("99.01", 1.0, 1.0), Some(true));
        assert_eq!(b.contains("99.01", 5.0, 5.0), Some(false), "in the hole");
        assert_eq!(b.contains("99.01", 11.0, 1.0), Some(false));
        assert_eq!(b.contains("99.02", 1.0, 1.0), None);
        let g: Value = serde_json::from_str(&b.geojson(["99.01", "99.02"])).unwrap();
        assert_eq!(g["features"].as_array().unwrap().len(), 1);
        assert!(g["source"].as_str().unwrap().contains("Cahya DSN"));
    }

    #[test]
    fn the_bundled_kepri_registry_lies_inside_its_regencies_and_batam_is_north() {
        let b = Boundaries::bundled();
        assert_eq!(b.regencies.len(), 514);
        // Batam (21.71) is north of the equator; the old mirrored latitude is not in it.
        assert_eq!(b.contains("21.71", 1.08, 104.03), Some(true));
        assert_eq!(b.contains("21.71", -1.08, 104.03), Some(false));
        let csv = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/stations/kepri-3327.csv"
        ))
        .unwrap();
        let stations = crate::registry::parse(csv.as_bytes(), u64::MAX, |_| {}).unwrap();
        assert_eq!(outside_in_registry(&stations).len(), 0);
        // The same registry with its latitudes mirrored (the old file's fault).
        let mirrored: Vec<_> = stations
            .iter()
            .cloned()
            .map(|mut s| {
                s.lat = s.lat.map(|l| -l);
                s
            })
            .collect();
        let outside = outside_in_registry(&mirrored);
        assert!(outside.len() > 3000, "{} outside", outside.len());
        assert_eq!(outside[0].0, 2, "the first station is on line 2");
        let w = warn_outside(&mirrored);
        assert_eq!(w.count, outside.len());
        assert_eq!(w.first.len(), 5);
        assert!(
            w.first[0].starts_with("line 2: TPS 2101041005001 at -1.")
                && w.first[0].ends_with("is outside Kabupaten Bintan"),
            "{}",
            w.first[0]
        );
    }
}
