//! When a get that asked R replicas asks the others too: the latency percentile of recent
//! replica reads (Cassandra's speculative retry). Past it, a replica is slower than nearly every
//! read this node has seen, and waiting longer is likelier to cost the client than another read
//! is to cost the cluster.

use alloc::vec::Vec;

use crate::id::Millis;

/// Replica reads remembered.
const WINDOW: usize = 128;
/// The threshold is recomputed after this many new reads (a sort of [`WINDOW`] numbers).
const RECOMPUTE_EVERY: usize = 32;
/// Fewer reads than this say too little: until then there is no threshold, and a slow replica
/// waits for the fallback time.
const MIN_SAMPLES: usize = 32;
/// The percentile of the window the threshold sits at.
const PERCENTILE: usize = 99;

/// The last [`WINDOW`] replica read latencies and their [`PERCENTILE`]th percentile.
#[derive(Clone, Debug, Default)]
pub(crate) struct ReadLatencies {
    samples: Vec<Millis>,
    /// Where the next sample goes once the window is full.
    next: usize,
    since_recompute: usize,
    threshold: Option<Millis>,
}

impl ReadLatencies {
    /// Records one replica's read latency.
    pub fn record(&mut self, latency: Millis) {
        if self.samples.len() < WINDOW {
            self.samples.push(latency);
        } else {
            self.samples[self.next] = latency;
            self.next = (self.next + 1) % WINDOW;
        }
        self.since_recompute += 1;
        if self.samples.len() >= MIN_SAMPLES
            && (self.threshold.is_none() || self.since_recompute >= RECOMPUTE_EVERY)
        {
            self.since_recompute = 0;
            let mut sorted = self.samples.clone();
            sorted.sort_unstable();
            let index = (sorted.len() * PERCENTILE / 100).min(sorted.len() - 1);
            self.threshold = Some(sorted[index]);
        }
    }

    /// How long a get waits for its first replicas before it asks the rest, if enough reads
    /// were seen to say: the percentile, and at least 1 ms.
    pub fn threshold(&self) -> Option<Millis> {
        self.threshold.map(|t| t.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_is_the_99th_percentile_of_the_recent_window() {
        let mut latencies = ReadLatencies::default();
        for _ in 0..MIN_SAMPLES - 1 {
            latencies.record(2);
        }
        assert_eq!(latencies.threshold(), None, "too few reads to say");
        latencies.record(2);
        assert_eq!(latencies.threshold(), Some(2));
        // One slow read in a hundred-odd moves the 99th percentile only once it is more than 1%.
        for i in 0..WINDOW {
            latencies.record(if i % 50 == 0 { 400 } else { 3 });
        }
        assert_eq!(latencies.threshold(), Some(400));
        for _ in 0..WINDOW {
            latencies.record(5);
        }
        assert_eq!(
            latencies.threshold(),
            Some(5),
            "the old reads left the window"
        );
        let mut zero = ReadLatencies::default();
        for _ in 0..WINDOW {
            zero.record(0);
        }
        assert_eq!(zero.threshold(), Some(1), "at least 1 ms");
    }
}
