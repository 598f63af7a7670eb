//! The canonical rule: how every reader turns the log into the same verdicts.
//!
//! Kafka has no conditional append, so the log itself arbitrates `exists_or_write`: every
//! reader applies this rule to the records of one partition in offset order and therefore
//! reaches the same verdict for every event. Pure: no I/O, no clock.
//!
//! For each event of a decoded record, in record order, with `count(key)` the number of
//! canonical events of its key so far:
//!
//! - no index: **canonical**, takes index `count(key)`;
//! - index `== count(key)`: **canonical**;
//! - index `< count(key)`: a **duplicate** (a replica lost the race); if its digest differs
//!   from the canonical event at that index it is a **divergent** duplicate;
//! - index `> count(key)`: **rejected** (the precondition failed).
//!
//! A record that does not decode is **malformed**: skipped and counted.
//!
//! Before all of that, an event on a key the rule's [`Trust`] table protects, in a record not
//! signed by one of that key's writers, is **unauthorized**: hidden, counted, and it changes no
//! count, so a forged event takes no index a writer's group needs (`crate::signature`).
//!
//! Malformed, canonical (with its index), rejected and duplicate-or-divergent are functions
//! of the records alone: every reader agrees on them. Telling a divergent duplicate from a
//! plain one needs the canonical digest, kept for the last [`DIGEST_WINDOW_DEFAULT`] indexes
//! of each key; beyond that window the split is advisory (see `docs/RECORD_FORMAT.md`).

use std::collections::{HashMap, VecDeque};

use crate::event::{Digest, EventSourceKey, Offset};
use crate::record::{DecodeError, Record, RecordView};
use crate::signature::{RecordAuthority, Trust};

/// How many recent canonical digests per key a rule keeps by default, to check duplicates
/// for divergence. Duplicates older than the window are counted but not compared.
///
/// The format makes this window the least every reader keeps: a duplicate at index `i` with
/// `count(key) - i <= DIGEST_WINDOW_DEFAULT` is compared by every reader, so calling it
/// divergent is reader-independent; an older one is advisory, a plain duplicate here.
pub const DIGEST_WINDOW_DEFAULT: usize = 65_536;

/// The verdict on one event.
///
/// Every reader reaches the same verdict, except that [`Verdict::Duplicate`] with no winner
/// (a copy older than the digest window) may be [`Verdict::Divergent`] to a reader that kept
/// more digests: both hide the copy and change no count.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verdict {
    /// The event is part of its key's stream, at this index.
    Canonical {
        /// The index it holds.
        index: u64,
    },
    /// A copy of an event already canonical at `index`, with the same digest, or too old
    /// to compare (`winner` is `None`). Hidden from subscribers.
    Duplicate {
        /// The index it claimed.
        index: u64,
        /// Where the canonical event at that index is, when still in the digest window.
        winner: Option<Offset>,
    },
    /// A copy of an event already canonical at `index`, with a different digest: the writer
    /// is not deterministic. Hidden from subscribers.
    Divergent {
        /// The index it claimed.
        index: u64,
        /// Where the canonical event at that index is.
        winner: Offset,
    },
    /// The claimed index was ahead of the count: the write had no effect.
    Rejected {
        /// The index it claimed.
        index: u64,
        /// The key's count when the event was read.
        count: u64,
    },
    /// The key is protected and the record is not signed by one of its writers: a forgery,
    /// or a writer without its key. Hidden from subscribers; changes no count.
    Unauthorized {
        /// The index it claimed, if any.
        index: Option<u64>,
    },
}

impl Verdict {
    /// Whether subscribers see the event.
    pub fn is_canonical(&self) -> bool {
        matches!(self, Verdict::Canonical { .. })
    }
}

/// What the rule has seen of one key.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct KeyStats {
    /// Canonical events: the key's count.
    pub canonical: u64,
    /// Duplicates with a matching (or unchecked) digest. `duplicates + divergent` is the same
    /// for every reader; the split depends on the digest window beyond the default one.
    pub duplicates: u64,
    /// Duplicates with a different digest.
    pub divergent: u64,
    /// Events whose index was ahead of the count.
    pub rejected: u64,
    /// Events on the key, protected, in records not signed by one of its writers.
    pub unauthorized: u64,
}

/// Recent canonical digests of one key, with where each event sits.
#[derive(Clone, Debug, Default)]
struct DigestWindow {
    first_index: u64,
    entries: VecDeque<(Digest, Offset)>,
}

/// The canonical rule's state: counts and recent digests per key.
#[derive(Clone, Debug)]
pub struct CanonicalRule {
    keys: HashMap<EventSourceKey, (KeyStats, DigestWindow)>,
    malformed: u64,
    /// Events rejected on keys with no canonical event: counted, never given an entry.
    rejected_unseen: u64,
    digest_window: usize,
    next_offset: Offset,
    /// Which keys need a writer's signature.
    trust: Trust,
}

impl Default for CanonicalRule {
    fn default() -> Self {
        Self::new(DIGEST_WINDOW_DEFAULT)
    }
}

impl CanonicalRule {
    /// A rule that has read nothing, keeping `digest_window` digests per key.
    pub fn new(digest_window: usize) -> Self {
        assert!(digest_window > 0, "the digest window must hold at least one digest");
        Self {
            keys: HashMap::new(),
            malformed: 0,
            rejected_unseen: 0,
            digest_window,
            next_offset: 0,
            trust: Trust::default(),
        }
    }

    /// The rule with the log's trust table: events on its protected keys count only in
    /// records their writers signed. Every reader of a log must use the same table.
    pub fn with_trust(mut self, trust: Trust) -> Self {
        self.trust = trust;
        self
    }

    /// The trust table the rule applies.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// A rule resumed at `next_offset` from `counts` (the keys' canonical counts there, as a
    /// snapshot holds them), with no digests yet: duplicates of earlier indexes are counted,
    /// not compared.
    pub fn resumed(digest_window: usize, next_offset: Offset, counts: &[(EventSourceKey, u64)]) -> Self {
        let mut rule = Self::new(digest_window);
        rule.next_offset = next_offset;
        for (key, count) in counts.iter().filter(|(_, count)| *count > 0) {
            let stats = KeyStats { canonical: *count, ..KeyStats::default() };
            rule.keys.insert(key.clone(), (stats, DigestWindow { first_index: *count, entries: VecDeque::new() }));
        }
        rule
    }

    /// Applies the rule to the record at `offset`, returning one verdict per event, or the
    /// decode error for a malformed record. Offsets must increase from call to call.
    ///
    /// An owned [`Record`] carries no signature: its events on protected keys are
    /// unauthorized. Readers of a log with protected keys apply [`RecordView`]s.
    pub fn apply(
        &mut self,
        offset: Offset,
        record: Result<&Record, &DecodeError>,
    ) -> Result<Vec<Verdict>, DecodeError> {
        let record = self.enter(offset, record)?;
        let trust = self.trust.clone();
        let mut authority = trust.record(None);
        Ok(record
            .events
            .iter()
            .map(|e| self.judge(offset, e.key.as_str(), e.index, e.digest, &mut authority))
            .collect())
    }

    /// [`CanonicalRule::apply`] to a record decoded in place, its signature included.
    pub fn apply_view(
        &mut self,
        offset: Offset,
        record: Result<&RecordView<'_>, &DecodeError>,
    ) -> Result<Vec<Verdict>, DecodeError> {
        let record = self.enter(offset, record)?;
        let trust = self.trust.clone();
        let mut authority = trust.record(record.seal.as_ref());
        Ok(record.events.iter().map(|e| self.judge(offset, e.key, e.index, e.digest, &mut authority)).collect())
    }

    /// [`CanonicalRule::apply_view`] for a reader that follows only the keys `follows`
    /// accepts: the others' events get no verdict and no entry.
    pub fn apply_view_where(
        &mut self,
        offset: Offset,
        record: Result<&RecordView<'_>, &DecodeError>,
        follows: impl Fn(&str) -> bool,
    ) -> Result<Vec<Option<Verdict>>, DecodeError> {
        let record = self.enter(offset, record)?;
        let trust = self.trust.clone();
        let mut authority = trust.record(record.seal.as_ref());
        Ok(record
            .events
            .iter()
            .map(|e| follows(e.key).then(|| self.judge(offset, e.key, e.index, e.digest, &mut authority)))
            .collect())
    }

    /// Steps over the record at `offset` without applying it: for a reader that follows
    /// some keys only, a record holding none of them changes none of their verdicts.
    pub fn pass(&mut self, offset: Offset) {
        assert!(
            offset >= self.next_offset,
            "records must be applied in log order: offset {offset} after {}",
            self.next_offset
        );
        self.next_offset = offset + 1;
    }

    /// Steps to `offset`, counting a record that did not decode.
    fn enter<'r, R>(&mut self, offset: Offset, record: Result<&'r R, &DecodeError>) -> Result<&'r R, DecodeError> {
        self.pass(offset);
        record.map_err(|error| {
            self.malformed += 1;
            error.clone()
        })
    }

    fn judge(
        &mut self,
        offset: Offset,
        key: &str,
        index: Option<u64>,
        digest: Digest,
        authority: &mut RecordAuthority<'_, '_>,
    ) -> Verdict {
        if !authority.authorizes(key) {
            // Protected keys are few (the table's): an entry per key costs nothing lasting.
            let (stats, _) = self.keys.entry(EventSourceKey::checked(key)).or_default();
            stats.unauthorized += 1;
            return Verdict::Unauthorized { index };
        }
        let window_max = self.digest_window;
        let (stats, window) = match self.keys.get_mut(key) {
            Some(entry) => entry,
            // A key that never had a canonical event keeps no entry, so forged keys whose
            // events are all rejected cost nothing lasting.
            None if index.is_some_and(|i| i > 0) => {
                self.rejected_unseen += 1;
                return Verdict::Rejected { index: index.unwrap_or_default(), count: 0 };
            }
            None => self.keys.entry(EventSourceKey::checked(key)).or_default(),
        };
        let count = stats.canonical;
        let index = index.unwrap_or(count);
        if index == count {
            stats.canonical += 1;
            window.entries.push_back((digest, offset));
            if window.entries.len() > window_max {
                window.entries.pop_front();
                window.first_index += 1;
            }
            Verdict::Canonical { index }
        } else if index < count {
            match window.get(index) {
                Some((canonical, winner)) if canonical != digest => {
                    stats.divergent += 1;
                    Verdict::Divergent { index, winner }
                }
                found => {
                    stats.duplicates += 1;
                    Verdict::Duplicate { index, winner: found.map(|(_, at)| at) }
                }
            }
        } else {
            stats.rejected += 1;
            Verdict::Rejected { index, count }
        }
    }

    /// The number of canonical events of `key`: the index its next event takes.
    pub fn count(&self, key: &EventSourceKey) -> u64 {
        self.keys.get(key).map_or(0, |(stats, _)| stats.canonical)
    }

    /// The digest and offset of the canonical event at (`key`, `index`), if still in the
    /// window.
    pub fn canonical_at(&self, key: &EventSourceKey, index: u64) -> Option<(Digest, Offset)> {
        self.keys.get(key).and_then(|(_, window)| window.get(index))
    }

    /// What the rule has seen of `key`.
    pub fn stats(&self, key: &EventSourceKey) -> KeyStats {
        self.keys.get(key).map(|(stats, _)| *stats).unwrap_or_default()
    }

    /// Every key seen so far with its stats, sorted by key.
    pub fn all_stats(&self) -> Vec<(EventSourceKey, KeyStats)> {
        let mut all: Vec<_> = self.keys.iter().map(|(k, (s, _))| (k.clone(), *s)).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Records that did not decode.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Events rejected on keys that had no canonical event then: counted here alone, since
    /// such keys get no entry (they are not in [`CanonicalRule::all_stats`]).
    pub fn rejected_on_unseen_keys(&self) -> u64 {
        self.rejected_unseen
    }

    /// The offset after the last record applied: where reading goes on.
    pub fn next_offset(&self) -> Offset {
        self.next_offset
    }
}

impl DigestWindow {
    fn get(&self, index: u64) -> Option<(Digest, Offset)> {
        let at = index.checked_sub(self.first_index)?;
        self.entries.get(usize::try_from(at).ok()?).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use proptest::prelude::*;

    fn key(name: &str) -> EventSourceKey {
        EventSourceKey::new(name).unwrap()
    }

    fn event(k: &str, index: Option<u64>, payload: &[u8]) -> Event {
        Event::new(key(k), index, None, 0, "text/plain", payload.to_vec())
    }

    fn record(events: Vec<Event>) -> Record {
        Record { source: events[0].key.clone(), writer: "w".into(), events }
    }

    fn apply(rule: &mut CanonicalRule, offset: Offset, events: Vec<Event>) -> Vec<Verdict> {
        rule.apply(offset, Ok(&record(events))).unwrap()
    }

    #[test]
    fn the_event_at_the_count_is_canonical_and_advances_it() {
        let mut rule = CanonicalRule::default();
        assert_eq!(apply(&mut rule, 0, vec![event("a", Some(0), b"x")]), [Verdict::Canonical { index: 0 }]);
        assert_eq!(rule.count(&key("a")), 1);
        assert_eq!(rule.count(&key("b")), 0);
    }

    #[test]
    fn an_unconditional_write_takes_the_next_index() {
        let mut rule = CanonicalRule::default();
        apply(&mut rule, 0, vec![event("a", Some(0), b"x")]);
        assert_eq!(apply(&mut rule, 1, vec![event("a", None, b"y")]), [Verdict::Canonical { index: 1 }]);
        assert_eq!(rule.count(&key("a")), 2);
    }

    #[test]
    fn a_lower_index_with_the_same_digest_is_a_duplicate_naming_the_winner() {
        let mut rule = CanonicalRule::default();
        apply(&mut rule, 3, vec![event("a", Some(0), b"x")]);
        assert_eq!(
            apply(&mut rule, 4, vec![event("a", Some(0), b"x")]),
            [Verdict::Duplicate { index: 0, winner: Some(3) }]
        );
        assert_eq!(rule.count(&key("a")), 1);
        assert_eq!(rule.stats(&key("a")).duplicates, 1);
    }

    #[test]
    fn a_lower_index_with_another_digest_is_divergent() {
        let mut rule = CanonicalRule::default();
        apply(&mut rule, 0, vec![event("a", Some(0), b"x")]);
        assert_eq!(
            apply(&mut rule, 1, vec![event("a", Some(0), b"other")]),
            [Verdict::Divergent { index: 0, winner: 0 }]
        );
        assert_eq!(rule.stats(&key("a")).divergent, 1);
        assert_eq!(rule.count(&key("a")), 1);
    }

    #[test]
    fn a_higher_index_is_rejected_and_changes_nothing() {
        let mut rule = CanonicalRule::default();
        assert_eq!(apply(&mut rule, 0, vec![event("a", Some(1), b"x")]), [Verdict::Rejected { index: 1, count: 0 }]);
        assert_eq!(rule.count(&key("a")), 0);
        assert_eq!(rule.rejected_on_unseen_keys(), 1);
        assert_eq!(apply(&mut rule, 1, vec![event("a", Some(0), b"x")]), [Verdict::Canonical { index: 0 }]);
        assert_eq!(apply(&mut rule, 2, vec![event("a", Some(3), b"x")]), [Verdict::Rejected { index: 3, count: 1 }]);
        assert_eq!(rule.stats(&key("a")).rejected, 1);
    }

    #[test]
    fn keys_whose_events_are_all_rejected_keep_no_entry() {
        let mut rule = CanonicalRule::default();
        let forged: Vec<Event> = (0..10_000).map(|i| event(&format!("forged-{i}"), Some(1 + i), b"x")).collect();
        let verdicts = apply(&mut rule, 0, forged);
        assert!(verdicts.iter().all(|v| matches!(v, Verdict::Rejected { count: 0, .. })));
        assert!(rule.all_stats().is_empty(), "no entry for a key with no canonical event");
        assert_eq!(rule.rejected_on_unseen_keys(), 10_000);
    }

    #[test]
    fn events_of_one_record_are_judged_in_order_and_per_key() {
        let mut rule = CanonicalRule::default();
        let verdicts = apply(
            &mut rule,
            0,
            vec![
                event("a", Some(0), b"1"),
                event("a", Some(1), b"2"),
                event("b", Some(0), b"3"),
                event("a", Some(5), b"4"),
            ],
        );
        assert_eq!(
            verdicts,
            [
                Verdict::Canonical { index: 0 },
                Verdict::Canonical { index: 1 },
                Verdict::Canonical { index: 0 },
                Verdict::Rejected { index: 5, count: 2 }
            ]
        );
    }

    #[test]
    fn a_malformed_record_is_counted_and_changes_no_count() {
        let mut rule = CanonicalRule::default();
        assert_eq!(rule.apply(0, Err(&DecodeError::BadMagic)), Err(DecodeError::BadMagic));
        assert_eq!(rule.malformed(), 1);
        assert_eq!(rule.next_offset(), 1);
        assert!(rule.all_stats().is_empty());
    }

    #[test]
    fn duplicates_older_than_the_window_are_counted_unchecked() {
        let mut rule = CanonicalRule::new(2);
        for i in 0..4 {
            apply(&mut rule, i, vec![event("a", Some(i), b"x")]);
        }
        assert_eq!(
            apply(&mut rule, 10, vec![event("a", Some(0), b"changed")]),
            [Verdict::Duplicate { index: 0, winner: None }]
        );
        assert_eq!(
            apply(&mut rule, 11, vec![event("a", Some(3), b"changed")]),
            [Verdict::Divergent { index: 3, winner: 3 }]
        );
        assert_eq!(rule.canonical_at(&key("a"), 2).map(|(_, at)| at), Some(2));
        assert_eq!(rule.canonical_at(&key("a"), 1), None);
    }

    #[test]
    #[should_panic(expected = "log order")]
    fn applying_out_of_order_is_a_bug() {
        let mut rule = CanonicalRule::default();
        apply(&mut rule, 5, vec![event("a", None, b"x")]);
        apply(&mut rule, 5, vec![event("a", None, b"x")]);
    }

    mod protected {
        use super::*;
        use crate::record::FetchedRecord;
        use crate::signature::{Signer, Trust};

        fn signer(byte: u8) -> Signer {
            Signer::from_secret(&[byte; 32])
        }

        /// The record as a reader fetches it, signed by `signer` if given.
        fn fetched(offset: Offset, events: Vec<Event>, signer: Option<&Signer>) -> FetchedRecord {
            let encoded = record(events).encode_signed(false, signer).unwrap();
            FetchedRecord { offset, key: Some(encoded.key), value: Some(encoded.value), ..Default::default() }
        }

        fn judge(rule: &mut CanonicalRule, record: &FetchedRecord) -> Vec<Verdict> {
            let view = RecordView::parse_fetched(record).unwrap();
            rule.apply_view(record.offset, Ok(&view)).unwrap()
        }

        fn ledger_protected_by(signers: &[&Signer]) -> CanonicalRule {
            CanonicalRule::default()
                .with_trust(Trust::new().protect(&key("ledger"), signers.iter().map(|s| s.public_key())))
        }

        #[test]
        fn a_forged_event_on_a_protected_key_is_unauthorized_and_changes_no_count() {
            let (writer, forger) = (signer(1), signer(2));
            let mut rule = ledger_protected_by(&[&writer]);
            let unsigned = fetched(0, vec![event("ledger", Some(0), b"forged")], None);
            let forged = fetched(1, vec![event("ledger", Some(0), b"forged")], Some(&forger));
            assert_eq!(judge(&mut rule, &unsigned), [Verdict::Unauthorized { index: Some(0) }]);
            assert_eq!(judge(&mut rule, &forged), [Verdict::Unauthorized { index: Some(0) }]);
            assert_eq!(rule.count(&key("ledger")), 0);
            // The writer's own event at the same index is canonical, whatever came before.
            let honest = fetched(2, vec![event("ledger", Some(0), b"real")], Some(&writer));
            assert_eq!(judge(&mut rule, &honest), [Verdict::Canonical { index: 0 }]);
            let stats = rule.stats(&key("ledger"));
            assert_eq!((stats.canonical, stats.unauthorized, stats.divergent), (1, 2, 0));
            // A forged copy after it is no divergence either.
            let late = fetched(3, vec![event("ledger", Some(0), b"forged")], None);
            assert_eq!(judge(&mut rule, &late), [Verdict::Unauthorized { index: Some(0) }]);
            assert_eq!(rule.stats(&key("ledger")).divergent, 0);
        }

        #[test]
        fn only_events_on_protected_keys_need_the_signature() {
            let writer = signer(1);
            let mut rule = ledger_protected_by(&[&writer]);
            let mixed = fetched(0, vec![event("orders", None, b"o"), event("ledger", Some(0), b"l")], None);
            assert_eq!(
                judge(&mut rule, &mixed),
                [Verdict::Canonical { index: 0 }, Verdict::Unauthorized { index: Some(0) }]
            );
            // A signed record on an unprotected key reads as an unsigned one would.
            let signed = fetched(1, vec![event("orders", None, b"p")], Some(&signer(9)));
            assert_eq!(judge(&mut rule, &signed), [Verdict::Canonical { index: 1 }]);
        }

        #[test]
        fn a_tampered_signed_record_is_unauthorized() {
            let writer = signer(1);
            let mut rule = ledger_protected_by(&[&writer]);
            let mut record = fetched(0, vec![event("ledger", Some(0), b"x")], Some(&writer));
            let value = record.value.as_mut().unwrap();
            let last = value.len() - 1;
            value[last] ^= 1;
            assert_eq!(judge(&mut rule, &record), [Verdict::Unauthorized { index: Some(0) }]);
        }

        #[test]
        fn a_key_rotates_by_trusting_both_for_a_while() {
            let (old, new) = (signer(1), signer(2));
            let mut both = ledger_protected_by(&[&old, &new]);
            let mut only_new = ledger_protected_by(&[&new]);
            let by_old = fetched(0, vec![event("ledger", Some(0), b"a")], Some(&old));
            let by_new = fetched(1, vec![event("ledger", Some(1), b"b")], Some(&new));
            assert_eq!(judge(&mut both, &by_old), [Verdict::Canonical { index: 0 }]);
            assert_eq!(judge(&mut both, &by_new), [Verdict::Canonical { index: 1 }]);
            // A table without the old key reads the old key's records as forged: drop a key
            // only from a log whose readers all agree (a new log, or a table by position).
            assert_eq!(judge(&mut only_new, &by_old), [Verdict::Unauthorized { index: Some(0) }]);
            assert_eq!(judge(&mut only_new, &by_new), [Verdict::Rejected { index: 1, count: 0 }]);
        }

        #[test]
        fn an_owned_record_carries_no_signature() {
            let mut rule = ledger_protected_by(&[&signer(1)]);
            let verdicts = rule.apply(0, Ok(&record(vec![event("ledger", Some(0), b"x")]))).unwrap();
            assert_eq!(verdicts, [Verdict::Unauthorized { index: Some(0) }]);
        }
    }

    fn arbitrary_log() -> impl Strategy<Value = Vec<Result<Record, DecodeError>>> {
        let event = (0..3usize, proptest::option::of(0u64..6), 0u8..3)
            .prop_map(|(k, index, payload)| event(["a", "b", "c"][k], index, &[payload]));
        let record = prop_oneof![
            9 => proptest::collection::vec(event, 1..4).prop_map(|events| Ok(record(events))),
            1 => Just(Err(DecodeError::BadMagic)),
        ];
        proptest::collection::vec(record, 0..40)
    }

    /// A verdict with divergence folded into duplication: what every reader agrees on.
    fn reader_independent(verdict: &Verdict) -> (u8, u64) {
        match *verdict {
            Verdict::Canonical { index } => (0, index),
            Verdict::Duplicate { index, .. } | Verdict::Divergent { index, .. } => (1, index),
            Verdict::Rejected { index, .. } => (2, index),
            Verdict::Unauthorized { index } => (3, index.unwrap_or(u64::MAX)),
        }
    }

    proptest! {
        /// A reader keeping fewer digests differs only in calling old mismatching copies
        /// plain duplicates: within its window it agrees exactly, and outside it the copy is
        /// hidden either way.
        #[test]
        fn only_the_divergence_of_copies_older_than_the_window_depends_on_it(log in arbitrary_log(), window in 1usize..4) {
            let (mut wide, mut narrow) = (CanonicalRule::default(), CanonicalRule::new(window));
            for (at, r) in log.iter().enumerate() {
                let (w, n) = (wide.apply(at as u64, r.as_ref()), narrow.apply(at as u64, r.as_ref()));
                prop_assert_eq!(w.is_ok(), n.is_ok());
                let (Ok(w), Ok(n)) = (w, n) else { continue };
                for (w, n) in w.iter().zip(&n) {
                    prop_assert_eq!(reader_independent(w), reader_independent(n));
                    // They differ only where the narrow reader could not compare.
                    if w != n {
                        prop_assert!(matches!(n, Verdict::Duplicate { winner: None, .. }), "{:?} against {:?}", n, w);
                    }
                }
            }
            for ((k, a), (_, b)) in wide.all_stats().iter().zip(narrow.all_stats()) {
                prop_assert_eq!(
                    (a.canonical, a.rejected, a.duplicates + a.divergent),
                    (b.canonical, b.rejected, b.duplicates + b.divergent),
                    "{}", k
                );
            }
        }

        /// Readers that see the same records reach the same verdicts, however their reads
        /// are split into batches and whenever they started keeping state.
        #[test]
        fn verdicts_do_not_depend_on_batch_boundaries(log in arbitrary_log(), cuts in proptest::collection::vec(0usize..40, 0..6)) {
            let mut whole = CanonicalRule::default();
            let expected: Vec<_> = log.iter().enumerate()
                .map(|(at, r)| whole.apply(at as u64, r.as_ref())).collect();

            let mut cuts = cuts; cuts.push(log.len()); cuts.sort();
            let mut batched = CanonicalRule::default();
            let mut got = Vec::new();
            let mut start = 0;
            for cut in cuts {
                let cut = cut.min(log.len());
                let batch: Vec<_> = (start..cut.max(start)).collect();
                for at in batch { got.push(batched.apply(at as u64, log[at].as_ref())); }
                start = cut.max(start);
                // A clone taken between batches carries on identically.
                batched = batched.clone();
            }
            prop_assert_eq!(got, expected);
            prop_assert_eq!(batched.all_stats(), whole.all_stats());
        }

        /// Counts equal the canonical verdicts; canonical indexes of a key are 0, 1, 2, …
        #[test]
        fn canonical_indexes_have_no_gap_and_no_repeat(log in arbitrary_log()) {
            let mut rule = CanonicalRule::default();
            let mut seen: HashMap<EventSourceKey, Vec<u64>> = HashMap::new();
            for (at, r) in log.iter().enumerate() {
                if let (Ok(verdicts), Ok(record)) = (rule.apply(at as u64, r.as_ref()), r) {
                    for (v, e) in verdicts.iter().zip(&record.events) {
                        if let Verdict::Canonical { index } = v { seen.entry(e.key.clone()).or_default().push(*index); }
                    }
                }
            }
            for (k, indexes) in seen {
                prop_assert_eq!(indexes.clone(), (0..indexes.len() as u64).collect::<Vec<_>>());
                prop_assert_eq!(rule.count(&k), indexes.len() as u64);
            }
        }
    }
}
