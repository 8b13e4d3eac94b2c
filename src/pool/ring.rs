//! The ring consistent hashing walks: points, each owned by a backend,
//! placed by hashes of the backend's stable id, so that a backend's points
//! never depend on the others'. Weight `w` gives `w ×` [`POINTS_PER_WEIGHT`]
//! points, so about `w` times the keys. Lookups are constant time: a table
//! of the first point of each of about a third as many equal slices of the
//! hash space as there are points, then a short scan. Building is linear,
//! once per config.

use xxhash_rust::xxh3::xxh3_64;

/// Ring points per unit of weight. nginx's ketama uses 160, HAProxy 16;
/// 64 keeps a backend's share of keys within about 12.5% (one standard
/// deviation) while a ring of 1,000 backends builds in about half a
/// millisecond and stays small enough for the caches.
pub const POINTS_PER_WEIGHT: u32 = 64;

/// Spreads replica numbers before mixing (2^64 over the golden ratio).
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// Most points on a ring; heavier pools get fewer per unit of weight.
pub const MAX_POINTS: u64 = 1 << 22;

/// A backend's stable id on the ring: a hash of its upstream and address.
pub fn backend_id(upstream: &str, address: &str) -> u64 {
    xxh3_64(format!("{upstream}\0{address}").as_bytes())
}

/// The hash of a request's key.
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// splitmix64's finaliser: spreads `x` over all 64 bits.
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// One point: the top 32 bits of its hash, and the backend owning it
/// (its index in the upstream), side by side so a lookup reads one cache
/// line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Point {
    hash: u32,
    owner: u32,
}

/// The ring of one upstream.
#[derive(Debug)]
pub struct Ring {
    /// Sorted by hash (and by owner id between equal hashes).
    points: Box<[Point]>,
    /// `slices[s]` is the first point whose hash's top bits are `s` or
    /// more; one more entry at the end, `points.len()`.
    slices: Box<[u32]>,
    shift: u32,
}

impl Ring {
    /// The ring of backends with these `ids` and `weights` (same order).
    ///
    /// Built in linear time: the points are counted into about a third as
    /// many slices as there are (by the top bits of their hash), placed,
    /// and each slice's few points put in order; the slice table stays as
    /// the lookup's index.
    pub fn new(ids: &[u64], weights: &[u32]) -> Ring {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let per_weight = u64::from(POINTS_PER_WEIGHT)
            .min(MAX_POINTS / total.max(1))
            .max(1);
        let count = (total * per_weight) as usize;
        let bits = (usize::BITS - (count / 3).max(1).leading_zeros()).clamp(1, 24);
        let shift = 32 - bits;
        let mut raw: Vec<Point> = Vec::with_capacity(count);
        for (b, (&id, &w)) in ids.iter().zip(weights).enumerate() {
            for r in 0..u64::from(w) * per_weight {
                raw.push(Point {
                    hash: (mix(id.wrapping_add(r.wrapping_mul(GOLDEN))) >> 32) as u32,
                    owner: b as u32,
                });
            }
        }
        let (mut points, slices) = place(raw, bits);
        // Each slice holds a few points: insertion sort puts them in order,
        // by hash, then by the owner's id so that equal hashes order the
        // same whatever the order of the backends in the config.
        let after = |a: &Point, b: &Point| {
            a.hash > b.hash || (a.hash == b.hash && ids[a.owner as usize] > ids[b.owner as usize])
        };
        // One pass over the whole ring: a point never moves out of its
        // slice, and points of different slices are in order already.
        for i in 1..points.len() {
            let mut j = i;
            while j > 0 && after(&points[j - 1], &points[j]) {
                points.swap(j - 1, j);
                j -= 1;
            }
        }
        Ring {
            points: points.into_boxed_slice(),
            slices: slices.into_boxed_slice(),
            shift,
        }
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The first point at or after `key`'s place (the top 32 bits of its
    /// hash), wrapping to the first point. Only on a ring that is not
    /// empty.
    pub fn find(&self, key: u64) -> usize {
        let k = (key >> 32) as u32;
        let s = (k >> self.shift) as usize;
        let (mut i, end) = (self.slices[s] as usize, self.slices[s + 1] as usize);
        while i < end && self.points[i].hash < k {
            i += 1;
        }
        if i == self.points.len() {
            0
        } else {
            i
        }
    }

    /// The backend owning point `p`.
    pub fn owner(&self, p: usize) -> usize {
        self.points[p].owner as usize
    }

    /// The point after `p`, wrapping.
    pub fn next(&self, p: usize) -> usize {
        if p + 1 == self.points.len() {
            0
        } else {
            p + 1
        }
    }
}

/// Puts `raw` in order of the top `bits` bits of each hash (one counting
/// pass), and returns the points with the slice table: where each value of
/// the top bits starts, and one more entry, the number of points.
fn place(raw: Vec<Point>, bits: u32) -> (Vec<Point>, Vec<u32>) {
    let shift = 32 - bits;
    let mut slices = vec![0u32; (1 << bits) + 1];
    for p in &raw {
        slices[(p.hash >> shift) as usize + 1] += 1;
    }
    for i in 1..slices.len() {
        slices[i] += slices[i - 1];
    }
    let mut at: Vec<u32> = slices[..slices.len() - 1].to_vec();
    let mut points = vec![Point::default(); raw.len()];
    for p in raw {
        let i = (p.hash >> shift) as usize;
        points[at[i] as usize] = p;
        at[i] += 1;
    }
    (points, slices)
}

/// The most a backend may have in flight before it takes another request
/// under bounded load: `ceil(factor × (total + 1) / usable)`, at least 1.
pub fn bound(factor: f64, total: usize, usable: usize) -> usize {
    let mean = (total as f64 + 1.0) / usable.max(1) as f64;
    ((factor * mean).ceil() as usize).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize) -> (Ring, Vec<u64>) {
        let ids: Vec<u64> = (0..n)
            .map(|i| backend_id("app", &format!("10.0.0.{i}:80")))
            .collect();
        (Ring::new(&ids, &vec![1; n]), ids)
    }

    fn owner_of(ring: &Ring, key: u64) -> usize {
        ring.owner(ring.find(key))
    }

    /// The reference: the first point at or after the key, by a scan.
    fn scan(ring: &Ring, key: u64) -> usize {
        let k = (key >> 32) as u32;
        ring.points.iter().position(|p| p.hash >= k).unwrap_or(0)
    }

    #[test]
    fn find_is_the_first_point_at_or_after_the_key() {
        let (r, _) = ring(7);
        for k in 0..5000u64 {
            let key = mix(k);
            assert_eq!(r.find(key), scan(&r, key), "key {key}");
        }
        assert_eq!(r.find(u64::MAX), scan(&r, u64::MAX));
        assert_eq!(r.find(0), 0);
        assert_eq!(r.len(), 7 * POINTS_PER_WEIGHT as usize);
    }

    #[test]
    fn weights_own_their_share_of_keys() {
        let ids: Vec<u64> = (0..4)
            .map(|i| backend_id("app", &format!("b{i}")))
            .collect();
        let weights = [1, 2, 3, 4];
        let r = Ring::new(&ids, &weights);
        let mut counts = [0usize; 4];
        const KEYS: usize = 100_000;
        for k in 0..KEYS {
            counts[owner_of(&r, key_hash(format!("user-{k}").as_bytes()))] += 1;
        }
        // Each within 25% of its share: with 64 points per unit of weight a
        // backend's share spreads by about 1/sqrt(64 w), 12.5% at weight 1.
        for (b, &w) in weights.iter().enumerate() {
            let share = KEYS as f64 * f64::from(w) / 10.0;
            let off = (counts[b] as f64 - share).abs() / share;
            assert!(
                off < 0.25,
                "backend {b} (weight {w}): {} keys, {share} expected",
                counts[b]
            );
        }
        // Over many backends the spread is what the number of points says.
        let ids: Vec<u64> = (0..100)
            .map(|i| backend_id("app", &format!("b{i}")))
            .collect();
        let r = Ring::new(&ids, &[1; 100]);
        let mut counts = [0usize; 100];
        for k in 0..KEYS {
            counts[owner_of(&r, key_hash(format!("user-{k}").as_bytes()))] += 1;
        }
        let mean = KEYS as f64 / 100.0;
        let sd = (counts
            .iter()
            .map(|&c| (c as f64 - mean).powi(2))
            .sum::<f64>()
            / 100.0)
            .sqrt();
        assert!(
            sd / mean < 0.18,
            "spread {:.1}% of the mean",
            100.0 * sd / mean
        );
    }

    #[test]
    fn removing_one_of_ten_moves_only_its_keys_and_adding_it_back_returns_them() {
        let (all, ids) = ring(10);
        // Without backend 3: the other nine, in the same order.
        let others: Vec<u64> = ids
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 3)
            .map(|(_, &id)| id)
            .collect();
        let without = Ring::new(&others, &[1; 9]);
        let index_in_all = |j: usize| if j >= 3 { j + 1 } else { j };
        const KEYS: usize = 100_000;
        let mut moved = 0;
        for k in 0..KEYS {
            let key = key_hash(format!("session-{k}").as_bytes());
            let before = owner_of(&all, key);
            let after = index_in_all(owner_of(&without, key));
            if before != after {
                assert_eq!(
                    before, 3,
                    "key {k} moved between survivors {before} -> {after}"
                );
                moved += 1;
            }
        }
        let share = moved as f64 / KEYS as f64;
        assert!(share <= 0.1 + 0.02, "{share} of the keys moved");
        // The same ids and weights give the same ring: its keys return.
        let again = Ring::new(&ids, &[1; 10]);
        assert_eq!(again.points, all.points);
        assert!(
            all.points.windows(2).all(|w| w[0].hash <= w[1].hash),
            "sorted"
        );
    }

    #[test]
    fn the_bound_is_the_factor_times_the_mean_rounded_up() {
        assert_eq!(bound(1.25, 0, 3), 1);
        assert_eq!(bound(1.25, 29, 3), 13);
        assert_eq!(bound(1.0, 5, 2), 3);
        assert_eq!(bound(2.0, 9, 0), 20);
    }
}
