//! `LocateGrid`: which grid contains a point. Grids' bounding boxes sit in an
//! R-tree; candidates are confirmed with an even-odd point-in-polygon test
//! over all rings (so holes work).

use crate::proto::{Grid, Polygon};
use rstar::primitives::{GeomWithData, Rectangle};
use rstar::{AABB, RTree};
use std::collections::HashMap;
use std::sync::RwLock;

type Entry = GeomWithData<Rectangle<[f64; 2]>, String>;

#[derive(Default)]
struct Index {
    tree: RTree<Entry>,
    polygons: HashMap<String, (Rectangle<[f64; 2]>, Polygon)>,
}

#[derive(Default)]
pub struct GridLocator {
    index: RwLock<Index>,
}

impl GridLocator {
    pub fn upsert(&self, g: &Grid) {
        let (Some(code), Some(poly)) = (g.grid_code.as_ref(), g.boundary.as_ref()) else {
            return;
        };
        let pts: Vec<[f64; 2]> = poly
            .rings
            .iter()
            .flat_map(|r| &r.points)
            .map(|p| [p.lon, p.lat])
            .collect();
        if pts.is_empty() {
            return;
        }
        let aabb = AABB::from_points(pts.iter());
        let rect = Rectangle::from_corners(aabb.lower(), aabb.upper());
        let mut idx = self.index.write().expect("locator lock");
        if let Some((old, _)) = idx.polygons.remove(code) {
            idx.tree.remove(&GeomWithData::new(old, code.clone()));
        }
        idx.tree.insert(GeomWithData::new(rect, code.clone()));
        idx.polygons.insert(code.clone(), (rect, poly.clone()));
    }

    /// Codes of the grids whose boundary contains the point, in code order.
    pub fn locate(&self, lon: f64, lat: f64) -> Vec<String> {
        let idx = self.index.read().expect("locator lock");
        let mut hits: Vec<String> = idx
            .tree
            .locate_all_at_point(&[lon, lat])
            .filter(|e| {
                idx.polygons
                    .get(&e.data)
                    .is_some_and(|(_, p)| contains(p, lon, lat))
            })
            .map(|e| e.data.clone())
            .collect();
        hits.sort();
        hits
    }
}

/// Even-odd rule over every ring.
pub fn contains(poly: &Polygon, x: f64, y: f64) -> bool {
    let mut inside = false;
    for ring in &poly.rings {
        let pts = &ring.points;
        let n = pts.len();
        for i in 0..n {
            let (a, b) = (&pts[i], &pts[(i + n - 1) % n]);
            if (a.lat > y) != (b.lat > y)
                && x < (b.lon - a.lon) * (y - a.lat) / (b.lat - a.lat) + a.lon
            {
                inside = !inside;
            }
        }
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{LinearRing, Position};

    fn ring(pts: &[(f64, f64)]) -> LinearRing {
        LinearRing {
            points: pts
                .iter()
                .map(|(lon, lat)| Position {
                    lon: *lon,
                    lat: *lat,
                })
                .collect(),
        }
    }

    #[test]
    fn finds_the_containing_grid_and_respects_holes() {
        let square = |x0: f64| ring(&[(x0, 0.0), (x0 + 1.0, 0.0), (x0 + 1.0, 1.0), (x0, 1.0)]);
        let loc = GridLocator::default();
        let mut a = Grid {
            grid_code: Some("a".into()),
            boundary: Some(Polygon {
                rings: vec![square(0.0)],
            }),
            ..Default::default()
        };
        loc.upsert(&a);
        loc.upsert(&Grid {
            grid_code: Some("b".into()),
            boundary: Some(Polygon {
                rings: vec![square(1.0)],
            }),
            ..Default::default()
        });
        assert_eq!(loc.locate(0.5, 0.5), vec!["a"]);
        assert_eq!(loc.locate(1.5, 0.5), vec!["b"]);
        assert!(loc.locate(2.5, 0.5).is_empty());
        // a hole in `a`, then `a` moved: old box must be gone
        a.boundary = Some(Polygon {
            rings: vec![
                square(0.0),
                ring(&[(0.4, 0.4), (0.6, 0.4), (0.6, 0.6), (0.4, 0.6)]),
            ],
        });
        loc.upsert(&a);
        assert!(loc.locate(0.5, 0.5).is_empty());
        assert_eq!(loc.locate(0.2, 0.2), vec!["a"]);
    }
}
