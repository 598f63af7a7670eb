//! Pipelines and the shard function.
//!
//! A log of P pipelines is P independent total orders: pipeline `p` is partition `p` of the
//! log's topic (and of its snapshot topics). Each has its own canonical rule, its own event
//! indexes and its own replicas; nothing orders events of two pipelines. A producer picks the
//! pipeline of an event from a shard key (an account, a book, a tenant), by a function every
//! language computes the same way (docs/RECORD_FORMAT.md, "Pipelines"):
//!
//! `pipeline = u64_big_endian(sha256(shard_key)[0..8]) mod P`
//!
//! ```
//! use competing_transformers::shard::{pipeline_of, Pipelines};
//! let four = Pipelines::new(4).unwrap();
//! assert_eq!(pipeline_of(b"account-42", four), 1);
//! assert_eq!(pipeline_of(b"book-eu", four), 0);
//! ```

use sha2::{Digest as _, Sha256};

/// The most pipelines a log may have: a replica per pipeline per DET per host is already
/// this many clients.
pub const PIPELINES_MAX: u32 = 1024;

/// How many pipelines a log has: `1..=PIPELINES_MAX`. Fixed for the life of a log, since the
/// shard function depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pipelines(u32);

impl Pipelines {
    /// One pipeline: the whole log is one total order.
    pub const ONE: Pipelines = Pipelines(1);

    /// `count` pipelines, `None` outside `1..=PIPELINES_MAX`.
    pub fn new(count: u32) -> Option<Self> {
        (1..=PIPELINES_MAX).contains(&count).then_some(Self(count))
    }

    /// How many.
    pub fn count(self) -> u32 {
        self.0
    }

    /// Every pipeline's number, `0..count`.
    pub fn all(self) -> std::ops::Range<u32> {
        0..self.0
    }
}

impl Default for Pipelines {
    fn default() -> Self {
        Self::ONE
    }
}

/// The pipeline of the events sharded by `shard_key` on a log of `pipelines`.
pub fn pipeline_of(shard_key: &[u8], pipelines: Pipelines) -> u32 {
    let hash = Sha256::digest(shard_key);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    (u64::from_be_bytes(first) % u64::from(pipelines.0)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_examples_hold() {
        let pipelines = |count| Pipelines::new(count).unwrap();
        // sha256("account-42") starts be781897291dcfd5 = 13724746901920534485.
        assert_eq!(pipeline_of(b"account-42", pipelines(4)), 1);
        assert_eq!(pipeline_of(b"account-42", pipelines(3)), 0);
        // sha256("book-eu") starts 1aa0891b6e36e8d4 = 1918684192166045908.
        assert_eq!(pipeline_of(b"book-eu", pipelines(4)), 0);
        assert_eq!(pipeline_of(b"book-eu", pipelines(3)), 1);
        assert_eq!(pipeline_of(b"anything", Pipelines::ONE), 0);
    }

    #[test]
    fn counts_outside_the_range_are_refused() {
        assert_eq!(Pipelines::new(0), None);
        assert_eq!(Pipelines::new(PIPELINES_MAX + 1), None);
        assert_eq!(Pipelines::new(PIPELINES_MAX).map(Pipelines::count), Some(PIPELINES_MAX));
    }

    #[test]
    fn keys_spread_over_every_pipeline() {
        let four = Pipelines::new(4).unwrap();
        let mut seen = [0u32; 4];
        for account in 0..4_000 {
            seen[pipeline_of(format!("account-{account}").as_bytes(), four) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    }
}
