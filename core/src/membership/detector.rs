//! The phi-accrual failure detector (Hayashibara et al., 2004), as Cassandra and Akka use it.
//!
//! Instead of a yes/no timeout, the detector keeps the last `window` intervals between arrivals
//! from each peer and reports *phi*: how unlikely the current silence is under a normal
//! distribution fitted to those intervals, on a log10 scale. Phi 1 means a 10% chance that the
//! peer is merely late, phi 8 (the default threshold) one in 10^8. A peer whose arrivals are
//! regular is suspected quickly; a peer whose arrivals are jittery is given slack automatically.
//!
//! As in Akka, the fitted mean is lengthened by `acceptable_pause_ms` (so a GC pause or a burst of
//! scheduling delay is not a failure), the standard deviation is floored at `min_std_dev_ms` (so
//! perfectly regular heartbeats do not make the detector hair-triggered), and the normal tail is
//! the logistic approximation `1 / (1 + e^(-y (1.5976 + 0.070566 y^2)))`.
//!
//! The transcendental functions come from the pure-Rust `libm` crate: `f64::exp` and `f64::ln` are
//! not in `core`, and a software implementation gives bit-identical phi on every platform the core
//! runs on (native, wasm, Python), which the deterministic simulator relies on. Phi is computed in
//! the log domain, so it stays finite however long the silence.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::id::Millis;
use crate::id::NodeId;

/// Intervals longer than this (about 49.7 days) are recorded as this, so that the running sums
/// of intervals and of their squares cannot overflow.
const MAX_INTERVAL_MS: u64 = u32::MAX as u64;

/// The smallest standard deviation used, whatever the configuration, so that phi never divides
/// by zero.
const MIN_STD_DEV_FLOOR_MS: f64 = 0.001;

/// Settings of a [`FailureDetector`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectorConfig {
    /// Phi at or above which a peer is taken to be down. Default 8 (Akka's default; Cassandra's
    /// is 8 as well).
    pub threshold: f64,
    /// How many of the latest intervals are kept per peer. Default 100. A window of 0 counts as 1.
    pub window: usize,
    /// Floor of the standard deviation, in milliseconds. Default 100.
    pub min_std_dev_ms: f64,
    /// Added to the mean interval: silence this much longer than usual is still not suspicious.
    /// Default 1000.
    pub acceptable_pause_ms: u64,
    /// The interval assumed before a peer's second arrival: the first arrival seeds the history
    /// with this mean (and a standard deviation of a quarter of it). Default 1000.
    pub first_heartbeat_estimate_ms: u64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            threshold: 8.0,
            window: 100,
            min_std_dev_ms: 100.0,
            acceptable_pause_ms: 1000,
            first_heartbeat_estimate_ms: 1000,
        }
    }
}

/// A change of a peer's liveness, reported once by [`FailureDetector::poll_changes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// The peer's phi reached the threshold.
    Down {
        /// The peer.
        peer: NodeId,
        /// The `now` of the [`FailureDetector::poll_changes`] call that noticed.
        since: Millis,
    },
    /// A peer reported down has been heard from again.
    Up {
        /// The peer.
        peer: NodeId,
    },
}

/// What the detector knows of one peer.
#[derive(Clone, Debug)]
struct History {
    /// The latest intervals between arrivals, oldest first, at most `window` of them.
    intervals: VecDeque<u64>,
    /// Sum of `intervals`.
    sum: u128,
    /// Sum of the squares of `intervals`.
    squares: u128,
    /// When the peer was last heard from.
    last: Millis,
    /// When [`FailureDetector::poll_changes`] last reported the peer down, until it reports it up.
    down_since: Option<Millis>,
    /// [`History::mean_and_std_dev`] as of the last arrival, kept so that liveness checks (a
    /// few per peer per gossip round) do not recompute the square root.
    fitted: (f64, f64),
}

impl History {
    fn push(&mut self, interval: u64, window: usize) {
        let interval = interval.min(MAX_INTERVAL_MS);
        while self.intervals.len() >= window {
            match self.intervals.pop_front() {
                Some(old) => {
                    self.sum -= u128::from(old);
                    self.squares -= u128::from(old) * u128::from(old);
                }
                None => break,
            }
        }
        self.intervals.push_back(interval);
        self.sum += u128::from(interval);
        self.squares += u128::from(interval) * u128::from(interval);
        self.fitted = self.mean_and_std_dev();
    }

    fn mean_and_std_dev(&self) -> (f64, f64) {
        let count = self.intervals.len().max(1) as f64;
        let mean = self.sum as f64 / count;
        // E[x^2] - E[x]^2 can come out a hair below zero in floating point.
        let variance = (self.squares as f64 / count - mean * mean).max(0.0);
        (mean, libm::sqrt(variance))
    }
}

/// A peer heard from once: see [`FailureDetector::watched`].
#[derive(Clone, Debug)]
struct Watch {
    /// The arrival (or the start of the clock).
    since: Millis,
    /// As [`History::down_since`].
    down_since: Option<Millis>,
}

/// Per-peer phi-accrual failure detection.
///
/// The host calls [`FailureDetector::heartbeat`] for everything it hears from a peer and asks
/// [`FailureDetector::is_alive`] when routing, or drains [`FailureDetector::poll_changes`] each
/// tick to learn of transitions. Time is always passed in.
///
/// A peer never heard from is alive (phi 0), so a fresh cluster can start talking. To have a peer
/// that never answers declared down, call `heartbeat(peer, now)` once when starting to watch it:
/// the first-heartbeat estimate then applies from `now`.
#[derive(Clone, Debug)]
pub struct FailureDetector {
    config: DetectorConfig,
    /// Peers heard from at least twice.
    peers: BTreeMap<NodeId, History>,
    /// Peers heard from once (or whose clock was started, as a node does for every member it
    /// learns of): their history is still the seeded one, so only when is kept. In a large
    /// cluster most members are in this state most of the time, and a full history each cost
    /// a few hundred bytes per member per node.
    watched: BTreeMap<NodeId, Watch>,
    /// The seeded history (see [`FailureDetector::heartbeat`]) every peer starts with.
    seeded: History,
    /// Phi grows with `y` (the silence in standard deviations beyond the mean): below this `y`
    /// it is surely under the threshold, above `dead_above` surely at or over it, so liveness
    /// is decided without the exponential and logarithm except in a hair-thin band between.
    alive_below: f64,
    dead_above: f64,
}

/// Phi for a silence of `y` standard deviations beyond the (lengthened) mean.
fn phi_of_y(y: f64) -> f64 {
    // P(interval > elapsed) = 1 / (1 + e^t), so phi = -log10 of it = ln(1 + e^t) / ln 10,
    // computed as a softplus that neither overflows nor loses precision at either end.
    let t = y * (1.5976 + 0.070566 * y * y);
    let softplus = if t > 0.0 {
        t + libm::log1p(libm::exp(-t))
    } else {
        libm::log1p(libm::exp(t))
    };
    softplus / core::f64::consts::LN_10
}

/// The band of `y` in which `phi_of_y` crosses `threshold`, found by bisection and widened by a
/// margin far above rounding noise; (-inf, inf) (always compute phi) when there is no crossing.
fn threshold_band(threshold: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (-1.0e3, 1.0e3);
    if !(phi_of_y(lo) < threshold && phi_of_y(hi) >= threshold) {
        return (f64::NEG_INFINITY, f64::INFINITY);
    }
    for _ in 0..200 {
        let mid = lo + (hi - lo) / 2.0;
        if mid <= lo || mid >= hi {
            break;
        }
        if phi_of_y(mid) < threshold {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let margin = |y: f64| 1.0e-6 * (1.0 + y.abs());
    (lo - margin(lo), hi + margin(hi))
}

impl FailureDetector {
    /// A detector that knows no peer yet. A `window` of 0 is taken as 1.
    pub fn new(mut config: DetectorConfig) -> Self {
        config.window = config.window.max(1);
        let (alive_below, dead_above) = threshold_band(config.threshold);
        FailureDetector {
            seeded: FailureDetector::seeded_history(&config),
            config,
            peers: BTreeMap::new(),
            watched: BTreeMap::new(),
            alive_below,
            dead_above,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// Anything heard from `peer` (a message or a gossip heartbeat) at `now`.
    ///
    /// Arrivals out of order (`now` before the last one) are ignored, and arrivals in the same
    /// millisecond count once. As in Akka, the interval that ends an outage is recorded like any
    /// other: it slows detection for the next `window` arrivals, but it is also how the detector
    /// adapts when a peer's rhythm really changes, and skipping it would make such a peer flap.
    pub fn heartbeat(&mut self, peer: &NodeId, now: Millis) {
        let window = self.config.window;
        if let Some(history) = self.peers.get_mut(peer) {
            if now <= history.last {
                return;
            }
            history.push(now - history.last, window);
            history.last = now;
            return;
        }
        let Some(watch) = self.watched.get(peer) else {
            // The first arrival: the peer's history is the seeded one, from now.
            self.watched.insert(
                peer.clone(),
                Watch {
                    since: now,
                    down_since: None,
                },
            );
            return;
        };
        if now <= watch.since {
            return;
        }
        // The second: the seeded history becomes the peer's own.
        let mut history = self.seeded.clone();
        history.last = watch.since;
        history.down_since = watch.down_since;
        history.push(now - watch.since, window);
        history.last = now;
        self.watched.remove(peer);
        self.peers.insert(peer.clone(), history);
    }

    /// Starts the clock of each of `peers` never heard from, as a first
    /// [`FailureDetector::heartbeat`] at `now` would; peers already heard from are left as
    /// they are. (Many peers at once, as a node does for the members of its view at start:
    /// cheaper, and denser in memory, than a heartbeat each.)
    pub fn start_clocks<'a>(&mut self, peers: impl IntoIterator<Item = &'a NodeId>, now: Millis) {
        let fresh = peers
            .into_iter()
            .filter(|peer| !self.peers.contains_key(*peer) && !self.watched.contains_key(*peer))
            .map(|peer| {
                let watch = Watch {
                    since: now,
                    down_since: None,
                };
                (peer.clone(), watch)
            })
            .collect::<Vec<_>>();
        if self.watched.is_empty() {
            self.watched = fresh.into_iter().collect();
        } else {
            self.watched.extend(fresh);
        }
    }

    /// The history every peer starts with (see [`FailureDetector::heartbeat`]), last at 0.
    fn seeded_history(config: &DetectorConfig) -> History {
        let mut history = History {
            intervals: VecDeque::new(),
            sum: 0,
            squares: 0,
            last: 0,
            down_since: None,
            fitted: (0.0, 0.0),
        };
        // As Akka does: two intervals a quarter of the estimate either side of it, i.e.
        // the estimate as mean and a quarter of it as standard deviation.
        let estimate = config.first_heartbeat_estimate_ms.min(MAX_INTERVAL_MS);
        let spread = estimate / 4;
        history.push(estimate - spread, config.window);
        history.push(estimate + spread, config.window);
        history
    }

    /// What liveness is judged from for `peer`: its last arrival, its fitted mean and standard
    /// deviation, and when it was reported down. `None` for a peer never heard from.
    fn state(&self, peer: &NodeId) -> Option<(Millis, (f64, f64), Option<Millis>)> {
        match self.peers.get(peer) {
            Some(history) => Some((history.last, history.fitted, history.down_since)),
            None => self
                .watched
                .get(peer)
                .map(|watch| (watch.since, self.seeded.fitted, watch.down_since)),
        }
    }

    /// How unlikely it is that `peer` is alive, given that it has been silent since its last
    /// arrival: `-log10` of the probability that an interval is at least this long. 0 for a peer
    /// never heard from, and for `now` before its last arrival. Always finite and non-negative.
    pub fn phi(&self, peer: &NodeId, now: Millis) -> f64 {
        let Some((last, fitted, _)) = self.state(peer) else {
            return 0.0;
        };
        phi_of_y(self.silence(last, fitted, now))
    }

    /// How many standard deviations beyond the lengthened mean the silence since `last` is.
    fn silence(&self, last: Millis, (mean, std_dev): (f64, f64), now: Millis) -> f64 {
        let elapsed = now.saturating_sub(last) as f64;
        let mean = mean + self.config.acceptable_pause_ms as f64;
        let std_dev = std_dev
            .max(self.config.min_std_dev_ms)
            .max(MIN_STD_DEV_FLOOR_MS);
        (elapsed - mean) / std_dev
    }

    /// Whether phi is below the threshold after silence since `last`, computing phi only near
    /// the crossing.
    fn alive(&self, last: Millis, fitted: (f64, f64), now: Millis) -> bool {
        let y = self.silence(last, fitted, now);
        if y < self.alive_below {
            true
        } else if y > self.dead_above {
            false
        } else {
            phi_of_y(y) < self.config.threshold
        }
    }

    /// Whether `peer`'s phi is below the threshold. A peer never heard from is alive.
    pub fn is_alive(&self, peer: &NodeId, now: Millis) -> bool {
        self.state(peer)
            .is_none_or(|(last, fitted, _)| self.alive(last, fitted, now))
    }

    /// The peers [`FailureDetector::poll_changes`] has reported down and not yet up again, in
    /// id order. Right after a `poll_changes(now)` call, exactly the tracked peers not alive at
    /// `now`.
    pub fn reported_down(&self) -> Vec<&NodeId> {
        let mut down: Vec<&NodeId> = self
            .peers
            .iter()
            .filter(|(_, h)| h.down_since.is_some())
            .map(|(peer, _)| peer)
            .chain(
                self.watched
                    .iter()
                    .filter(|(_, w)| w.down_since.is_some())
                    .map(|(peer, _)| peer),
            )
            .collect();
        down.sort_unstable();
        down
    }

    /// The liveness transitions since the last call, in peer id order: peers whose phi reached the
    /// threshold (reported once, until they are heard from again) and peers reported down that have
    /// been heard from since.
    #[must_use]
    pub fn poll_changes(&mut self, now: Millis) -> Vec<Liveness> {
        let mut changes: Vec<(NodeId, Liveness)> = Vec::new();
        let alive: Vec<bool> = self
            .peers
            .values()
            .map(|h| self.alive(h.last, h.fitted, now))
            .collect();
        let seeded = self.seeded.fitted;
        let watched_alive: Vec<bool> = self
            .watched
            .values()
            .map(|w| self.alive(w.since, seeded, now))
            .collect();
        let states = self
            .peers
            .iter_mut()
            .map(|(peer, h)| (peer, &mut h.down_since))
            .zip(alive)
            .chain(
                self.watched
                    .iter_mut()
                    .map(|(peer, w)| (peer, &mut w.down_since))
                    .zip(watched_alive),
            );
        for ((peer, down_since), alive) in states {
            match (*down_since, alive) {
                (None, false) => {
                    *down_since = Some(now);
                    let change = Liveness::Down {
                        peer: peer.clone(),
                        since: now,
                    };
                    changes.push((peer.clone(), change));
                }
                (Some(_), true) => {
                    *down_since = None;
                    changes.push((peer.clone(), Liveness::Up { peer: peer.clone() }));
                }
                _ => {}
            }
        }
        // A peer is in one map or the other: ordering by id merges the two.
        changes.sort_by(|a, b| a.0.cmp(&b.0));
        changes.into_iter().map(|(_, change)| change).collect()
    }

    /// How long `peer` has been down: `now` minus the time [`FailureDetector::poll_changes`]
    /// reported it down, while it is still not alive. `None` for a live or unknown peer.
    pub fn down_for(&self, peer: &NodeId, now: Millis) -> Option<Millis> {
        let (last, fitted, down_since) = self.state(peer)?;
        let since = down_since?;
        if self.alive(last, fitted, now) {
            None
        } else {
            Some(now.saturating_sub(since))
        }
    }

    /// When `peer` was last heard from, if ever.
    pub fn last_heard(&self, peer: &NodeId) -> Option<Millis> {
        self.state(peer).map(|(last, _, _)| last)
    }

    /// Stops tracking `peer` (for instance once it is removed from the cluster); it is then a peer
    /// never heard from again. No change is reported for it.
    pub fn forget(&mut self, peer: &NodeId) {
        self.peers.remove(peer);
        self.watched.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::vec;

    fn peer() -> NodeId {
        NodeId::new("p")
    }

    /// A detector that has heard from `p` every `interval` ms from 0 to `until`.
    fn regular(interval: u64, until: u64) -> FailureDetector {
        let mut detector = FailureDetector::new(DetectorConfig::default());
        for now in (0..=until).step_by(interval as usize) {
            detector.heartbeat(&peer(), now);
        }
        detector
    }

    #[test]
    fn unknown_peers_are_alive() {
        let mut detector = FailureDetector::new(DetectorConfig::default());
        assert_eq!(detector.phi(&peer(), 1_000_000), 0.0);
        assert!(detector.is_alive(&peer(), u64::MAX));
        assert!(detector.poll_changes(u64::MAX).is_empty());
        assert_eq!(detector.down_for(&peer(), 5), None);
        assert_eq!(detector.last_heard(&peer()), None);
    }

    #[test]
    fn regular_heartbeats_keep_a_peer_alive() {
        let mut detector = FailureDetector::new(DetectorConfig::default());
        for now in (0..100_000).step_by(1000) {
            // Just before each heartbeat the silence is one interval: far from suspicious.
            assert!(
                detector.phi(&peer(), now) < 1.0,
                "phi {} at {now}",
                detector.phi(&peer(), now)
            );
            detector.heartbeat(&peer(), now);
            assert!(detector.poll_changes(now + 999).is_empty());
        }
    }

    #[test]
    fn silence_marks_a_peer_down_once_and_up_once() {
        let mut detector = regular(1000, 60_000);
        // The default settings tolerate the mean plus the acceptable pause, and a little more.
        assert!(detector.is_alive(&peer(), 62_300));
        assert!(!detector.is_alive(&peer(), 63_000));
        assert!(detector.poll_changes(61_000).is_empty());
        let silent_until = 60_000 + 10 * 1000;
        assert_eq!(
            detector.poll_changes(silent_until),
            vec![Liveness::Down {
                peer: peer(),
                since: silent_until
            }]
        );
        assert!(detector.poll_changes(silent_until + 1).is_empty());
        assert_eq!(detector.down_for(&peer(), silent_until + 5000), Some(5000));
        detector.heartbeat(&peer(), silent_until + 5000);
        assert_eq!(detector.down_for(&peer(), silent_until + 5000), None);
        assert_eq!(
            detector.poll_changes(silent_until + 5000),
            vec![Liveness::Up { peer: peer() }]
        );
        assert!(detector.poll_changes(silent_until + 5001).is_empty());
        assert_eq!(detector.last_heard(&peer()), Some(silent_until + 5000));
    }

    #[test]
    fn phi_grows_with_silence_and_stays_finite() {
        let detector = regular(1000, 10_000);
        let mut last = 0.0;
        for now in (10_000..40_000).step_by(50) {
            let phi = detector.phi(&peer(), now);
            assert!(phi >= last && phi.is_finite(), "phi {phi} at {now}");
            last = phi;
        }
        let far = detector.phi(&peer(), u64::MAX);
        assert!(far.is_finite() && far > 1e6);
        // Before the last arrival there is no silence at all.
        assert!(detector.phi(&peer(), 0) < 0.01);
    }

    #[test]
    fn jittered_heartbeats_do_not_flap() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut detector = FailureDetector::new(DetectorConfig::default());
        let mut now = 0;
        for _ in 0..2000 {
            // Every 1000 ms give or take 400, and now and then a 1.5 s hiccup.
            now += if rng.gen_bool(0.02) {
                2500
            } else {
                rng.gen_range(600..=1400)
            };
            assert!(detector.is_alive(&peer(), now), "suspected at {now}");
            detector.heartbeat(&peer(), now);
            assert!(detector.poll_changes(now).is_empty());
        }
    }

    #[test]
    fn phi_matches_akkas_formula() {
        // Akka's direct form, with std's transcendental functions.
        let akka = |elapsed: f64, mean: f64, std_dev: f64| {
            let y = (elapsed - mean) / std_dev;
            let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
            if elapsed > mean {
                -(e / (1.0 + e)).log10()
            } else {
                -(1.0 - 1.0 / (1.0 + e)).log10()
            }
        };
        // Past the seeded first intervals: every interval is 1000, so the floor of 100 applies.
        let detector = regular(1000, 200_000);
        for silence in (0..3000).step_by(100) {
            let ours = detector.phi(&peer(), 200_000 + silence);
            let theirs = akka(silence as f64, 2000.0, 100.0);
            // (Akka's form loses relative precision when phi is tiny; ours does not.)
            assert!(
                (ours - theirs).abs() <= 1e-6 * theirs + 1e-12,
                "{silence}: {ours} vs {theirs}"
            );
        }
    }

    #[test]
    fn the_first_heartbeat_starts_the_clock() {
        let mut detector = FailureDetector::new(DetectorConfig::default());
        detector.heartbeat(&peer(), 500);
        assert!(detector.is_alive(&peer(), 2500));
        assert!(!detector.is_alive(&peer(), 5000));
        assert_eq!(detector.poll_changes(5000).len(), 1);
    }

    #[test]
    fn stale_and_duplicate_arrivals_change_nothing() {
        let mut detector = regular(1000, 10_000);
        let phi = detector.phi(&peer(), 11_500);
        detector.heartbeat(&peer(), 3_000);
        detector.heartbeat(&peer(), 10_000);
        assert_eq!(detector.phi(&peer(), 11_500), phi);
        assert_eq!(detector.last_heard(&peer()), Some(10_000));
    }

    #[test]
    fn forgetting_drops_all_state() {
        let mut detector = regular(1000, 10_000);
        let _ = detector.poll_changes(30_000);
        detector.forget(&peer());
        assert!(detector.is_alive(&peer(), 40_000));
        assert!(detector.poll_changes(40_000).is_empty());
        assert_eq!(detector.down_for(&peer(), 40_000), None);
    }

    #[test]
    fn odd_configurations_do_not_panic() {
        let config = DetectorConfig {
            window: 0,
            min_std_dev_ms: 0.0,
            acceptable_pause_ms: 0,
            first_heartbeat_estimate_ms: u64::MAX,
            threshold: f64::NAN,
        };
        let mut detector = FailureDetector::new(config);
        assert_eq!(detector.config().window, 1);
        for now in [0, 1, 1, 2, u64::MAX - 1, u64::MAX] {
            detector.heartbeat(&peer(), now);
            assert!(detector.phi(&peer(), now).is_finite());
            let _ = detector.poll_changes(now);
        }
        assert!(detector.phi(&peer(), u64::MAX).is_finite());
    }

    #[test]
    fn many_peers_are_tracked_apart() {
        let mut detector = FailureDetector::new(DetectorConfig::default());
        let (a, b) = (NodeId::new("a"), NodeId::new("b"));
        for now in (0..20_000).step_by(1000) {
            detector.heartbeat(&a, now);
            if now < 5000 {
                detector.heartbeat(&b, now);
            }
        }
        assert!(detector.is_alive(&a, 19_500));
        assert!(!detector.is_alive(&b, 19_500));
        assert_eq!(
            detector.poll_changes(19_500),
            vec![Liveness::Down {
                peer: b,
                since: 19_500
            }]
        );
    }
}
