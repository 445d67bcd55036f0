//! A deterministic fictional district: streets → communities → grids as a
//! lattice of polygons, persons in households with valid IDs, legal entities
//! with valid codes, and grid workers — everything placed in a grid.
//! The same seed and scale always give the same district.

pub mod seed;

use crate::datasets::codes::{CitizenId, Uscc};
use crate::proto::{
    Deceased, EntityStatus, Grid, GridKind, GridWorker, LegalEntity, LinearRing, Person, PersonTag,
    PersonTags, Polygon, PopulationType, Position, RegionLevel, RegionNode, RegisteredCapital,
    ResidenceStatus, WorkerRole,
};
use chrono::{Datelike, NaiveDate};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashSet;

pub const DISTRICT_CODE: &str = "310115";
pub const DISTRICT_NAME: &str = "示范区";
/// Persons per grid: ~300 households of ~2.3 people.
const PERSONS_PER_GRID: usize = 690;
const GRIDS_PER_COMMUNITY: usize = 4;
const COMMUNITIES_PER_STREET: usize = 5;
/// Cell size of the grid lattice, degrees.
const CELL: f64 = 0.005;
const ORIGIN: (f64, f64) = (121.50, 31.20);

pub struct District {
    pub regions: Vec<RegionNode>,
    pub grids: Vec<Grid>,
    pub workers: Vec<GridWorker>,
    pub persons: Vec<Person>,
    pub entities: Vec<LegalEntity>,
}

impl District {
    /// The lowest 9-digit street code.
    pub fn first_street(&self) -> &str {
        &self
            .regions
            .iter()
            .find(|r| r.level == RegionLevel::Street as i32)
            .expect("a street")
            .code
    }
}

const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭",
    "何", "林", "罗", "高",
];
const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明",
    "超", "秀英", "霞", "平", "刚", "桂英", "建华", "文", "辉", "玲",
];
const STREET_NAMES: &[&str] = &[
    "新华", "和平", "长江", "黄河", "东方", "明珠", "春晖", "金桥", "南园", "北苑", "西林", "东湖",
];
const COMMUNITY_WORDS: &[&str] = &[
    "阳光", "幸福", "安居", "绿苑", "康乐", "翠竹", "丰收", "锦绣", "福源", "和谐",
];
const OTHER_DIVISIONS: &[&str] = &[
    "320102", "330106", "340104", "410105", "510104", "420106", "430102", "360102",
];
const INDUSTRIES: &[(&str, &str)] = &[
    ("I6510", "软件开发"),
    ("F5211", "食品零售"),
    ("H6210", "餐饮服务"),
    ("C3311", "金属制品"),
    ("L7212", "商务咨询"),
    ("E4710", "房屋建筑"),
    ("O8010", "居民服务"),
];

fn name(rng: &mut ChaCha8Rng) -> String {
    let mut n = SURNAMES.choose(rng).unwrap().to_string();
    n.push_str(GIVEN.choose(rng).unwrap());
    if rng.gen_bool(0.5) {
        n.push_str(GIVEN.choose(rng).unwrap());
    }
    n
}

fn phone(rng: &mut ChaCha8Rng) -> String {
    format!(
        "1{}{:09}",
        ["38", "39", "58", "86", "77"].choose(rng).unwrap(),
        rng.gen_range(0..1_000_000_000u32)
    )[..11]
        .to_string()
}

fn square(col: usize, row: usize) -> Polygon {
    let (x0, y0) = (ORIGIN.0 + col as f64 * CELL, ORIGIN.1 + row as f64 * CELL);
    let pts = [
        (x0, y0),
        (x0 + CELL, y0),
        (x0 + CELL, y0 + CELL),
        (x0, y0 + CELL),
    ];
    Polygon {
        rings: vec![LinearRing {
            points: pts
                .iter()
                .map(|(lon, lat)| Position {
                    lon: *lon,
                    lat: *lat,
                })
                .collect(),
        }],
    }
}

/// Area of a lattice cell in m² (equirectangular approximation).
fn cell_area(lat: f64) -> f64 {
    let m_per_deg = 111_320.0;
    (CELL * m_per_deg) * (CELL * m_per_deg * lat.to_radians().cos())
}

/// Generates a district of about `persons` residents.
pub fn generate(seed: u64, persons: usize) -> District {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let grid_count = persons.div_ceil(PERSONS_PER_GRID).max(4);
    let community_count = grid_count.div_ceil(GRIDS_PER_COMMUNITY);
    let street_count = community_count.div_ceil(COMMUNITIES_PER_STREET).max(2);
    let mut d = District {
        regions: Vec::new(),
        grids: Vec::new(),
        workers: Vec::new(),
        persons: Vec::new(),
        entities: Vec::new(),
    };
    d.regions.push(RegionNode {
        code: DISTRICT_CODE.into(),
        name: DISTRICT_NAME.into(),
        level: RegionLevel::District.into(),
        ..Default::default()
    });
    let width = (grid_count as f64).sqrt().ceil() as usize;
    let mut grid_codes = Vec::new();
    let mut g = 0usize;
    'streets: for s in 0..street_count {
        let street = format!("{DISTRICT_CODE}{:03}", s + 1);
        d.regions.push(RegionNode {
            code: street.clone(),
            name: format!("{}街道", STREET_NAMES[s % STREET_NAMES.len()]),
            level: RegionLevel::Street.into(),
            parent_code: DISTRICT_CODE.into(),
            ..Default::default()
        });
        for c in 0..COMMUNITIES_PER_STREET {
            // Every street gets at least one community; the rest share what remains.
            if g >= grid_count && c > 0 {
                continue 'streets;
            }
            let community = format!("{street}{:03}", c + 1);
            let community_name = format!(
                "{}{}社区",
                STREET_NAMES[s % STREET_NAMES.len()],
                COMMUNITY_WORDS[c % COMMUNITY_WORDS.len()]
            );
            d.regions.push(RegionNode {
                code: community.clone(),
                name: community_name.clone(),
                level: RegionLevel::Community.into(),
                parent_code: street.clone(),
                ..Default::default()
            });
            for k in 0..GRIDS_PER_COMMUNITY {
                let code = format!("{community}{:03}", k + 1);
                let (col, row) = (g % width, g / width);
                let boundary = square(col, row);
                let grid_name = format!("{community_name}第{}网格", k + 1);
                d.regions.push(RegionNode {
                    code: code.clone(),
                    name: grid_name.clone(),
                    level: RegionLevel::Grid.into(),
                    parent_code: community.clone(),
                    ..Default::default()
                });
                d.grids.push(Grid {
                    grid_code: Some(code.clone()),
                    name: Some(grid_name),
                    community_code: Some(community.clone()),
                    kind: Some(if g % 17 == 16 {
                        GridKind::Dedicated
                    } else {
                        GridKind::Basic
                    } as i32),
                    area_m2: Some(cell_area(ORIGIN.1 + row as f64 * CELL).round()),
                    boundary: Some(boundary),
                    ..Default::default()
                });
                for (n, role) in [
                    WorkerRole::Leader,
                    WorkerRole::FullTime,
                    WorkerRole::PartTime,
                ]
                .into_iter()
                .enumerate()
                {
                    d.workers.push(GridWorker {
                        worker_id: Some(format!("W{code}{n}")),
                        name: Some(name(&mut rng)),
                        phone: Some(phone(&mut rng)),
                        role: Some(role as i32),
                        grid_code: Some(code.clone()),
                        since: Some(format!(
                            "20{:02}-0{}-01",
                            rng.gen_range(15..25),
                            rng.gen_range(1..10)
                        )),
                        ..Default::default()
                    });
                }
                grid_codes.push((code, boundary_address(&community_name)));
                g += 1;
            }
        }
    }
    let mut used = HashSet::new();
    let today = NaiveDate::from_ymd_opt(2026, 1, 1).expect("date");
    let mut household = 0usize;
    let per_grid = persons.div_ceil(grid_codes.len()).max(1);
    while d.persons.len() < persons {
        let (grid, street_word) =
            &grid_codes[(d.persons.len() / per_grid).min(grid_codes.len() - 1)];
        household += 1;
        let size = *[1, 2, 2, 2, 3, 3, 3, 4, 4, 2].choose(&mut rng).unwrap();
        let floating = rng.gen_bool(0.1);
        let address = format!(
            "{street_word}{}弄{}号{}室",
            rng.gen_range(1..300),
            rng.gen_range(1..40),
            rng.gen_range(101..1800)
        );
        let head_age = rng.gen_range(25..85);
        for member in 0..size.min(persons - d.persons.len()) {
            let age = match member {
                0 => head_age,
                1 => (head_age as i32 + rng.gen_range(-5..5)).max(20) as u32,
                _ => rng.gen_range(0..(head_age - 18).max(1)),
            };
            let birth = today
                .with_year(today.year() - age as i32)
                .and_then(|d| d.with_ordinal(rng.gen_range(1..=365)))
                .unwrap_or(today);
            let male = if member == 1 {
                d.persons.last().is_some_and(|p: &Person| p.sex == Some(2))
            } else {
                rng.gen_bool(0.5)
            };
            let division = if floating {
                *OTHER_DIVISIONS.choose(&mut rng).unwrap()
            } else {
                DISTRICT_CODE
            };
            let id = loop {
                let seq = rng.gen_range(0..500u16) * 2 + u16::from(male);
                let id = CitizenId::from_parts(division, birth, seq);
                if used.insert(id.as_str().to_string()) {
                    break id;
                }
            };
            let mut tags = Vec::new();
            if age >= 70 && size == 1 && rng.gen_bool(0.5) {
                tags.push("elderly-alone");
            }
            if rng.gen_bool(0.03) {
                tags.push(*["dibao", "tekun", "disability"].choose(&mut rng).unwrap());
            }
            let restricted = rng.gen_bool(0.005).then(|| {
                *[
                    "community-correction",
                    "released-prisoner",
                    "severe-mental-disorder",
                ]
                .choose(&mut rng)
                .unwrap()
            });
            let tag = |code: &str| PersonTag {
                code: code.into(),
                source_department: "civil-affairs".into(),
                valid_from: "2024-01-01".into(),
                valid_to: String::new(),
            };
            let deceased = rng.gen_bool(0.002);
            d.persons.push(Person {
                id_number: Some(id.as_str().into()),
                name: Some(name(&mut rng)),
                sex: Some(id.sex() as i32),
                birth_date: Some(id.birth_date().to_string()),
                ethnicity: Some(if rng.gen_bool(0.95) { "01" } else { "03" }.into()),
                marital_status: Some(
                    if age < 22 {
                        "10"
                    } else {
                        *["10", "20", "20", "20", "40"].choose(&mut rng).unwrap()
                    }
                    .into(),
                ),
                education: Some(format!("{}0", rng.gen_range(1..9))),
                hukou_division: Some(division.into()),
                hukou_address: Some(if floating {
                    format!("{division}某路{}号", rng.gen_range(1..500))
                } else {
                    address.clone()
                }),
                residence_grid: Some(grid.clone()),
                residence_address: Some(address.clone()),
                residence_status: Some(if floating {
                    ResidenceStatus::ResidentElsewhereHukou
                } else {
                    ResidenceStatus::Matched
                } as i32),
                population_type: Some(if floating {
                    PopulationType::Floating
                } else {
                    PopulationType::Registered
                } as i32),
                phone: (age >= 16).then(|| phone(&mut rng)),
                household_id: Some(format!("H{grid}{household:06}")),
                relation_to_head: Some(
                    match member {
                        0 => "02",
                        1 => "10",
                        _ => "20",
                    }
                    .into(),
                ),
                tags: (!tags.is_empty()).then(|| PersonTags {
                    items: tags.iter().map(|t| tag(t)).collect(),
                }),
                restricted_tags: restricted.map(|r| PersonTags {
                    items: vec![tag(r)],
                }),
                deceased: Some(Deceased {
                    deceased,
                    date: if deceased {
                        "2025-06-01".into()
                    } else {
                        String::new()
                    },
                }),
                ..Default::default()
            });
        }
    }
    let entity_count = persons * 15 / 100;
    let alphabet: Vec<char> = "0123456789ABCDEFGHJKLMNPQRTUWXY".chars().collect();
    let mut used = HashSet::new();
    for i in 0..entity_count {
        let (grid, street_word) = &grid_codes[i * grid_codes.len() / entity_count.max(1)];
        let (industry, trade) = INDUSTRIES.choose(&mut rng).unwrap();
        let category = *["91", "91", "91", "92", "93"].choose(&mut rng).unwrap();
        let uscc = loop {
            let org: String = (0..9)
                .map(|_| *alphabet.choose(&mut rng).unwrap())
                .collect();
            let u = Uscc::with_check(&format!("{category}{DISTRICT_CODE}{org}"));
            if used.insert(u.as_str().to_string()) {
                break u;
            }
        };
        let established = NaiveDate::from_ymd_opt(
            rng.gen_range(1995..2025),
            rng.gen_range(1..13),
            rng.gen_range(1..29),
        )
        .expect("date");
        d.entities.push(LegalEntity {
            uscc: Some(uscc.as_str().into()),
            name: Some(format!(
                "{}{}{}有限公司",
                DISTRICT_NAME,
                SURNAMES.choose(&mut rng).unwrap(),
                trade
            )),
            category: Some(category.into()),
            enterprise_type: Some(
                if category == "92" {
                    "个体工商户"
                } else {
                    "有限责任公司"
                }
                .into(),
            ),
            legal_representative: Some(name(&mut rng)),
            registered_capital: Some(RegisteredCapital {
                amount: format!("{}.00", rng.gen_range(1..5000)),
                currency: "CNY".into(),
            }),
            established_date: Some(established.to_string()),
            term_end: Some(String::new()),
            status: Some(
                *[
                    EntityStatus::Active,
                    EntityStatus::Active,
                    EntityStatus::Active,
                    EntityStatus::Active,
                    EntityStatus::Cancelled,
                ]
                .choose(&mut rng)
                .unwrap() as i32,
            ),
            domicile: Some(format!("{street_word}{}号", rng.gen_range(1..900))),
            domicile_grid: Some(grid.clone()),
            business_scope: Some(format!("{trade}；一般经营项目")),
            registration_authority: Some(format!("{DISTRICT_NAME}市场监督管理局")),
            industry_code: Some((*industry).into()),
            phone: Some(phone(&mut rng)),
            ..Default::default()
        });
    }
    d
}

/// Writes a district as the JSON Lines `govshare import` reads: the grid
/// dataset (regions, then grids, then workers), persons, legal entities.
pub fn write_jsonl(d: &District, dir: &std::path::Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    use crate::proto::UpsertGridsRequest;
    use crate::proto::upsert_grids_request::Item;
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let write = |name: &str, lines: Vec<serde_json::Value>| -> anyhow::Result<std::path::PathBuf> {
        let path = dir.join(name);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for l in lines {
            writeln!(f, "{l}")?;
        }
        f.flush()?;
        Ok(path)
    };
    // Grid leaves of the region tree come with their grid.
    let grid_items = d
        .regions
        .iter()
        .filter(|r| r.level != RegionLevel::Grid as i32)
        .cloned()
        .map(Item::Region)
        .chain(d.grids.iter().cloned().map(Item::Grid))
        .chain(d.workers.iter().cloned().map(Item::Worker))
        .map(|i| crate::proto::json::to_value(&UpsertGridsRequest { item: Some(i) }))
        .collect();
    Ok(vec![
        write("grid.jsonl", grid_items)?,
        write(
            "population.jsonl",
            d.persons.iter().map(crate::proto::json::to_value).collect(),
        )?,
        write(
            "legal_entity.jsonl",
            d.entities
                .iter()
                .map(crate::proto::json::to_value)
                .collect(),
        )?,
    ])
}

fn boundary_address(community_name: &str) -> String {
    format!("{}路", community_name.trim_end_matches("社区"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::Record;

    #[test]
    fn the_district_is_deterministic_and_every_record_validates() {
        let a = generate(7, 3000);
        let b = generate(7, 3000);
        assert_eq!(a.persons, b.persons);
        assert_eq!(a.persons.len(), 3000);
        assert_eq!(a.entities.len(), 450);
        assert!(
            a.regions
                .iter()
                .filter(|r| r.level == RegionLevel::Street as i32)
                .count()
                >= 2
        );
        let small = generate(7, 1500);
        let street = small.first_street();
        let outside = small
            .persons
            .iter()
            .filter(|p| !p.residence_grid.as_ref().unwrap().starts_with(street));
        assert!(
            outside.count() > 300,
            "residents live in every street, not only the first"
        );
        for p in &a.persons {
            p.clone()
                .validate()
                .unwrap_or_else(|e| panic!("{e}: {p:?}"));
        }
        for e in &a.entities {
            let c = e.clone().validate().unwrap();
            assert!(c.warnings.is_empty());
        }
        for g in &a.grids {
            g.clone().validate().unwrap();
        }
        for w in &a.workers {
            w.clone().validate().unwrap();
        }
        let households: HashSet<_> = a.persons.iter().map(|p| p.household_id.clone()).collect();
        let per = a.persons.len() as f64 / households.len() as f64;
        assert!((2.0..2.7).contains(&per), "household size {per}");
    }

    /// The embedded store reads a record by key from where it last found
    /// it only when the place names its key: ends in NUL and the key, the
    /// key free of NUL (`store::place_hints`). That a record found at such
    /// a place is the key's rests on every type's `index_key` ending so
    /// (this test, on each type's demo records) and on published keys
    /// being free of NUL (each type's validation).
    #[test]
    fn every_records_place_names_its_key() {
        fn check<R: Record>(records: &[R]) {
            assert!(!records.is_empty(), "{}", R::NAME);
            for r in records {
                let (place, key) = (r.index_key(), r.key().as_bytes());
                assert!(!key.contains(&0), "{} {key:?}", R::NAME);
                let tail = [&b"\0"[..], key].concat();
                assert!(place.ends_with(&tail), "{}: {place:?}", R::NAME);
            }
        }
        let d = generate(7, 1500);
        check(&d.regions);
        check(&d.grids);
        check(&d.workers);
        check(&d.persons);
        check(&d.entities);
    }
}
