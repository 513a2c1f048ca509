//! Names of things in the store and in the backlog: pure, so listing and restore agree
//! with the shipper by construction. See `docs/backup.md`.

use serde::{Deserialize, Serialize};

/// A generation's manifest (`generation.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationManifest {
    /// Its name.
    pub name: String,
    /// The last transaction the snapshot holds.
    pub base_txid: u64,
    /// When the snapshot was taken (unix ms): the generation's first recoverable instant.
    pub start_ms: i64,
    /// Database the generation belongs to.
    pub database: String,
}

/// A new generation's name: start time then randomness, so names sort by time and never
/// collide with those of a database of the same name that came before.
pub fn generation_name(start_ms: i64) -> String {
    format!("{start_ms:013}-{:08x}", rand::random::<u32>())
}

/// The start time a generation's name carries.
pub fn generation_start(name: &str) -> Option<i64> {
    name.split('-').next()?.parse().ok()
}

/// A segment's file name: first and last transaction, and the last one's commit time.
pub fn segment_name(first: u64, last: u64, last_ms: i64) -> String {
    format!("{first:020}-{last:020}-{last_ms:013}.seg")
}

/// `(first, last, last_ms)` from a segment's file name.
pub fn parse_segment_name(name: &str) -> Option<(u64, u64, i64)> {
    let stem = name.strip_suffix(".seg")?;
    let mut parts = stem.split('-');
    let first = parts.next()?.parse().ok()?;
    let last = parts.next()?.parse().ok()?;
    let ms = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((first, last, ms))
}

/// The store key prefix of a database's backups.
pub fn database_key(tenant: &str, database: &str) -> String {
    format!("{tenant}/{database}")
}

/// What the store holds for one generation, from a listing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedGeneration {
    /// Its name.
    pub name: String,
    /// Start (unix ms).
    pub start_ms: i64,
    /// Whether its snapshot and manifest are there (else it cannot be restored from).
    pub complete: bool,
    /// Segments `(first, last, last_ms)` in order.
    pub segments: Vec<(u64, u64, i64)>,
}

impl ListedGeneration {
    /// The last instant it can restore to.
    pub fn end_ms(&self) -> i64 {
        self.segments.last().map_or(self.start_ms, |s| s.2)
    }
}

/// What a listing says of one generation: snapshot there, manifest there, segments.
type Found = (bool, bool, Vec<(u64, u64, i64)>);

/// Group a listing of keys under a database's prefix (`<gen>/<file>`) by generation,
/// oldest first.
pub fn group(keys: &[String]) -> Vec<ListedGeneration> {
    let mut out: std::collections::BTreeMap<String, Found> = Default::default();
    for k in keys {
        let Some((gen, file)) = k.rsplit_once('/') else {
            continue;
        };
        let gen = gen.rsplit('/').next().unwrap_or(gen);
        let e = out.entry(gen.to_string()).or_default();
        match file {
            "snapshot.db" => e.0 = true,
            "generation.json" => e.1 = true,
            f => {
                if let Some(s) = parse_segment_name(f) {
                    e.2.push(s)
                }
            }
        }
    }
    out.into_iter()
        .filter_map(|(name, (snap, manifest, mut segments))| {
            segments.sort();
            Some(ListedGeneration {
                start_ms: generation_start(&name)?,
                name,
                complete: snap && manifest,
                segments,
            })
        })
        .collect()
}

/// The recoverable window `[first, last]` (unix ms) of a listing.
pub fn window(gens: &[ListedGeneration]) -> Option<(i64, i64)> {
    let complete: Vec<&ListedGeneration> = gens.iter().filter(|g| g.complete).collect();
    Some((
        complete.first()?.start_ms,
        complete.iter().map(|g| g.end_ms()).max()?,
    ))
}

/// The generation to restore `point` (unix ms; `None`: latest) from: the newest complete
/// one that started at or before it.
pub fn choose(gens: &[ListedGeneration], point: Option<i64>) -> Option<&ListedGeneration> {
    gens.iter()
        .filter(|g| g.complete && point.is_none_or(|p| g.start_ms <= p))
        .max_by_key(|g| g.start_ms)
}

/// Generations no instant at or after `window_start` needs: each one whose complete
/// successor started at or before the window's start (restores from there use the
/// successor). Incomplete generations are kept (a snapshot may still be on its way).
pub fn expired(gens: &[ListedGeneration], window_start: i64) -> Vec<String> {
    let complete: Vec<&ListedGeneration> = gens.iter().filter(|g| g.complete).collect();
    complete
        .windows(2)
        .filter(|w| w[1].start_ms <= window_start)
        .map(|w| w[0].name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_by_time() {
        assert_eq!(
            parse_segment_name(&segment_name(3, 9, 1_700_000_000_123)),
            Some((3, 9, 1_700_000_000_123))
        );
        assert_eq!(parse_segment_name("x.seg"), None);
        let (a, b) = (generation_name(1_000), generation_name(20_000));
        assert!(a < b);
        assert_eq!(generation_start(&b), Some(20_000));
    }

    #[test]
    fn groups_chooses_and_windows() {
        let g1 = "0000000001000-aaaaaaaa";
        let g2 = "0000000005000-bbbbbbbb";
        let keys: Vec<String> = [
            format!("{g1}/generation.json"),
            format!("{g1}/snapshot.db"),
            format!("{g1}/{}", segment_name(1, 4, 4_000)),
            format!("{g2}/generation.json"),
            format!("{g2}/snapshot.db"),
            format!("{g2}/{}", segment_name(5, 9, 9_000)),
            "0000000009500-cccccccc/generation.json".to_string(),
        ]
        .into_iter()
        .collect();
        let gens = group(&keys);
        assert_eq!(gens.len(), 3);
        assert!(!gens[2].complete, "no snapshot yet");
        assert_eq!(window(&gens), Some((1_000, 9_000)));
        assert_eq!(
            choose(&gens, Some(4_500)).map(|g| g.name.as_str()),
            Some(g1)
        );
        assert_eq!(
            choose(&gens, Some(5_000)).map(|g| g.name.as_str()),
            Some(g2)
        );
        assert_eq!(choose(&gens, None).map(|g| g.name.as_str()), Some(g2));
        assert_eq!(choose(&gens, Some(500)), None);
        assert!(
            expired(&gens, 4_999).is_empty(),
            "4999 still needs the first"
        );
        assert_eq!(expired(&gens, 5_000), vec![g1.to_string()]);
        assert_eq!(
            expired(&gens, 1_000_000),
            vec![g1.to_string()],
            "the newest complete one stays"
        );
    }
}
