//! Who writes a group at once and how long the others hold it back (`docs/DESIGN.md`,
//! "Adaptive racing").
//!
//! [`Racing`] is the mode a replica is configured with. In the default mode,
//! [`Racing::Adaptive`], a replica settles both questions from the log alone:
//!
//! - **Who leads**: the writer of the latest canonical event on the replica's own keys
//!   (output and dead letters). It writes each new group at once.
//! - **Who follows, in what order**: every other replica holds a group back. Its rank is 1
//!   plus the number of writers other than the leader that won more recently than it did
//!   (within the last [`WINNER_MEMORY_EVENTS`] canonical events); it holds rank × the hold
//!   time, and writes the group only if no copy is canonical by then.
//! - **How long**: the hold time is twice the 99th percentile of how long this replica, as a
//!   follower, waited to see other replicas' copies of its held groups land (canonical, or
//!   after its own copy when it had stopped waiting), plus 1 ms, within
//!   [`Adaptive::hold_min_ms`] and [`Adaptive::hold_max_ms`].
//!
//! A follower whose copy wins becomes the leader by the same rule, on every replica alike:
//! the leader and the ranks a replica uses for a group are a function of the log up to the
//! group's input, so replicas reading the same log agree on them. Only the hold time depends
//! on the clock. None of it decides what is written: the canonical rule does, so outputs and
//! dead letters are the same whoever writes them.
//!
//! Pure: no clock, no I/O. Time comes in as `now_ms`, as in the rest of the core.

use std::collections::VecDeque;

/// How a replica races the others to write a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Racing {
    /// The leader read from the log writes at once; the others hold back for a time learnt
    /// from the log (see the module's documentation). The default.
    Adaptive(Adaptive),
    /// Every replica writes every group at once: the lowest latency whatever happens, about
    /// one copy per replica.
    AllAtOnce,
    /// Ranks and delays configured per replica ([`Stagger`]).
    Staggered(Stagger),
}

impl Default for Racing {
    fn default() -> Self {
        Racing::Adaptive(Adaptive::default())
    }
}

/// The bounds of the adaptive hold time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Adaptive {
    /// The shortest hold of a rank-1 follower, whatever the delays seen.
    pub hold_min_ms: u64,
    /// The longest hold of a rank-1 follower: what a stalled or dead leader costs a group at
    /// most before the next replica writes it. Also the hold before any delay was seen.
    pub hold_max_ms: u64,
}

impl Default for Adaptive {
    fn default() -> Self {
        Self { hold_min_ms: HOLD_MIN_MS_DEFAULT, hold_max_ms: HOLD_MAX_MS_DEFAULT }
    }
}

/// The default [`Adaptive::hold_min_ms`]: one tick of a millisecond clock more than a
/// same-millisecond answer.
pub const HOLD_MIN_MS_DEFAULT: u64 = 2;
/// The default [`Adaptive::hold_max_ms`].
pub const HOLD_MAX_MS_DEFAULT: u64 = 10;

/// How replicas take turns to write first, configured per replica, trading a little latency
/// under a stall for fewer duplicates when all are healthy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stagger {
    /// This replica's rank: 0 writes at once, 1 waits `delay_ms`, 2 waits twice that, …
    pub rank: u64,
    /// How long each rank waits more than the one before it.
    pub delay_ms: u64,
}

/// Canonical events after which a writer that won none of them no longer ranks ahead of
/// replicas that never won: a replica gone for good stops delaying the others' turns.
pub const WINNER_MEMORY_EVENTS: u64 = 100_000;
/// Writers remembered, most recent winner first.
const WINNERS_MAX: usize = 16;
/// The highest rank: a follower never holds more than this many hold times.
const RANK_MAX: u64 = 3;
/// Delays kept for the percentile: the most recent.
const DELAYS_KEPT: usize = 256;
/// Delays at or over this many ms count as this many (far above any hold).
const DELAY_MS_MAX: usize = 255;
/// Held groups watched for the delay of their canonical copy, per key: a replica that
/// holds more only samples fewer.
const WATCHED_MAX: usize = 4_096;

/// What a replica in adaptive mode has learnt from the log: who won lately, and how late the
/// other replicas' copies of its held groups landed.
#[derive(Clone, Debug)]
pub(crate) struct Leadership {
    me: String,
    limits: Adaptive,
    /// Canonical events seen on the own keys.
    seen: u64,
    /// Writers of canonical events, most recent first, with the count at their latest win.
    winners: VecDeque<(String, u64)>,
    /// Held groups per key (output, dead letters) by first index, with when they were
    /// first held; in index order.
    watched: [VecDeque<(u64, u64)>; 2],
    /// Watched groups whose canonical copy was this replica's, waiting for another's copy:
    /// how late that lands counts too, or the delays would only ever be those under the hold.
    won: [VecDeque<(u64, u64)>; 2],
    /// When groups were first held whose canonical copy, another replica's, was read since
    /// the last time the core learnt the time.
    landed: Vec<u64>,
    delays: Delays,
}

impl Leadership {
    /// A replica called `me` that has read nothing yet.
    pub(crate) fn new(me: &str, limits: Adaptive) -> Self {
        Self {
            me: me.to_string(),
            limits,
            seen: 0,
            winners: VecDeque::new(),
            watched: Default::default(),
            won: Default::default(),
            landed: Vec::new(),
            delays: Delays::default(),
        }
    }

    /// A canonical event at `index` of own key `slot` (0: output, 1: dead letters), written
    /// by `writer`, in log order.
    pub(crate) fn on_canonical(&mut self, slot: usize, index: u64, writer: &str) {
        self.seen += 1;
        match self.winners.iter().position(|(w, _)| w == writer) {
            Some(0) => self.winners[0].1 = self.seen,
            Some(at) => {
                let (w, _) = self.winners.remove(at).expect("found");
                self.winners.push_front((w, self.seen));
            }
            None => {
                self.winners.push_front((writer.to_string(), self.seen));
                self.winners.truncate(WINNERS_MAX);
            }
        }
        let watched = &mut self.watched[slot];
        while watched.front().is_some_and(|&(first, _)| first < index) {
            watched.pop_front();
        }
        if watched.front().is_some_and(|&(first, _)| first == index) {
            let (_, since) = watched.pop_front().expect("a front");
            if writer != self.me {
                self.landed.push(since);
            } else {
                self.won[slot].push_back((index, since));
                if self.won[slot].len() > WATCHED_MAX {
                    self.won[slot].pop_front();
                }
            }
        }
    }

    /// A duplicate at `index` of own key `slot`, written by `writer`, in log order: another
    /// replica's copy of a group this replica may have won after holding it.
    pub(crate) fn on_duplicate(&mut self, slot: usize, index: u64, writer: &str) {
        if writer == self.me {
            return;
        }
        let won = &mut self.won[slot];
        while won.front().is_some_and(|&(first, _)| first < index) {
            won.pop_front();
        }
        if won.front().is_some_and(|&(first, _)| first == index) {
            let (_, since) = won.pop_front().expect("a front");
            self.landed.push(since);
        }
    }

    /// A group of key `slot` starting at `first_index` is held from `now_ms` on.
    pub(crate) fn on_held(&mut self, slot: usize, first_index: u64, now_ms: u64) {
        let watched = &mut self.watched[slot];
        if watched.back().is_none_or(|&(last, _)| last < first_index) {
            watched.push_back((first_index, now_ms));
            if watched.len() > WATCHED_MAX {
                watched.pop_front();
            }
        }
    }

    /// The time: the delays of copies read canonical since the last call end now.
    pub(crate) fn tick(&mut self, now_ms: u64) {
        for since in self.landed.drain(..) {
            self.delays.push(now_ms.saturating_sub(since));
        }
    }

    /// This replica's rank by what it has read: 0 if it leads or no one has won yet.
    pub(crate) fn rank(&self) -> u64 {
        let Some((leader, _)) = self.winners.front() else { return 0 };
        if *leader == self.me {
            return 0;
        }
        let recent = |at: u64| self.seen - at < WINNER_MEMORY_EVENTS;
        let ahead =
            self.winners.iter().skip(1).take_while(|(w, _)| *w != self.me).filter(|(_, at)| recent(*at)).count();
        (1 + ahead as u64).min(RANK_MAX)
    }

    /// The writer of the latest canonical event, if any.
    pub(crate) fn leader(&self) -> Option<&str> {
        self.winners.front().map(|(w, _)| w.as_str())
    }

    /// How long a rank-1 follower holds a group now.
    pub(crate) fn hold_ms(&self) -> u64 {
        let (min, max) = (self.limits.hold_min_ms, self.limits.hold_max_ms.max(self.limits.hold_min_ms));
        match self.delays.p99_ms() {
            Some(p99) => (2 * p99 + 1).clamp(min, max),
            None => max,
        }
    }
}

/// The most recent delays, in ms, with a histogram for their percentile.
#[derive(Clone, Debug)]
struct Delays {
    recent: VecDeque<u8>,
    counts: Box<[u32; DELAY_MS_MAX + 1]>,
}

impl Default for Delays {
    fn default() -> Self {
        Self { recent: VecDeque::with_capacity(DELAYS_KEPT), counts: Box::new([0; DELAY_MS_MAX + 1]) }
    }
}

impl Delays {
    fn push(&mut self, delay_ms: u64) {
        let delay = delay_ms.min(DELAY_MS_MAX as u64) as u8;
        if self.recent.len() == DELAYS_KEPT {
            let old = self.recent.pop_front().expect("full");
            self.counts[usize::from(old)] -= 1;
        }
        self.recent.push_back(delay);
        self.counts[usize::from(delay)] += 1;
    }

    /// The smallest delay at or above 99 % of those kept.
    fn p99_ms(&self) -> Option<u64> {
        let n = self.recent.len();
        if n == 0 {
            return None;
        }
        // At most this many may lie above the percentile.
        let above_max = n - (n * 99).div_ceil(100);
        let mut above = 0;
        for (delay, &count) in self.counts.iter().enumerate().rev() {
            above += count as usize;
            if above > above_max {
                return Some(delay as u64);
            }
        }
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leadership(me: &str) -> Leadership {
        Leadership::new(me, Adaptive::default())
    }

    #[test]
    fn no_one_leads_before_a_canonical_event_so_everyone_writes_at_once() {
        let l = leadership("a");
        assert_eq!((l.rank(), l.leader()), (0, None));
        assert_eq!(l.hold_ms(), HOLD_MAX_MS_DEFAULT, "no delay seen yet: the longest hold");
    }

    #[test]
    fn the_latest_winner_leads_and_the_others_rank_by_their_latest_win() {
        let mut a = leadership("a");
        let mut c = leadership("c");
        for (index, writer) in ["b", "a", "b"].into_iter().enumerate() {
            a.on_canonical(0, index as u64, writer);
            c.on_canonical(0, index as u64, writer);
        }
        assert_eq!(a.leader(), Some("b"));
        assert_eq!(a.rank(), 1, "a won last after the leader");
        assert_eq!(c.rank(), 2, "c never won: after every recent winner");
        c.on_canonical(1, 0, "c");
        assert_eq!((c.rank(), c.leader()), (0, Some("c")), "a follower's win makes it lead");
    }

    #[test]
    fn a_writer_gone_for_long_stops_ranking_ahead() {
        let mut c = leadership("c");
        c.on_canonical(0, 0, "gone");
        for index in 1..=WINNER_MEMORY_EVENTS {
            c.on_canonical(0, index, "b");
        }
        assert_eq!(c.rank(), 1);
    }

    #[test]
    fn ranks_stop_at_the_highest() {
        let mut z = leadership("z");
        for (index, writer) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            z.on_canonical(0, index as u64, writer);
        }
        assert_eq!(z.rank(), RANK_MAX);
    }

    #[test]
    fn the_hold_follows_the_delays_of_other_copies_within_its_bounds() {
        let mut a = leadership("a");
        for index in 0..200 {
            a.on_held(0, index, index * 10);
            a.on_canonical(0, index, "b");
            a.tick(index * 10 + 3);
        }
        assert_eq!(a.hold_ms(), 7, "2 × 3 ms + 1");
        // Its own copies winning say nothing of the others' delays until theirs land.
        for index in 200..400 {
            a.on_held(0, index, index * 10);
            a.on_canonical(0, index, "a");
            a.tick(index * 10 + 100);
        }
        assert_eq!(a.hold_ms(), 7);
        for index in 400..403 {
            a.on_held(0, index, 4_000);
            a.on_canonical(0, index, "a");
        }
        a.on_duplicate(0, 401, "b");
        a.on_duplicate(0, 402, "a");
        a.tick(4_004);
        assert_eq!(*a.delays.recent.back().unwrap(), 4, "b's copy of 401 came 4 ms after a held it");
        assert_eq!(a.delays.recent.len(), 201);
        for index in 403..700 {
            a.on_held(0, index, index * 10);
            a.on_canonical(0, index, "b");
            a.tick(index * 10 + 40);
        }
        assert_eq!(a.hold_ms(), HOLD_MAX_MS_DEFAULT, "capped");
        for index in 700..1_000 {
            a.on_held(0, index, index * 10);
            a.on_canonical(0, index, "b");
            a.tick(index * 10);
        }
        assert_eq!(a.hold_ms(), HOLD_MIN_MS_DEFAULT, "floored");
    }

    #[test]
    fn the_percentile_ignores_the_top_percent() {
        let mut delays = Delays::default();
        for _ in 0..DELAYS_KEPT - 2 {
            delays.push(4);
        }
        delays.push(200);
        delays.push(200);
        assert_eq!(delays.p99_ms(), Some(4), "2 of 256 over it: under 1 %");
        delays.push(200);
        assert_eq!(delays.p99_ms(), Some(200));
    }

    #[test]
    fn groups_made_canonical_unwatched_or_by_other_keys_do_not_count() {
        let mut a = leadership("a");
        a.on_held(0, 5, 0);
        a.on_held(1, 0, 0);
        a.on_canonical(0, 7, "b");
        a.tick(9);
        assert_eq!(a.delays.recent.len(), 0, "group 5 was passed over");
        a.on_canonical(1, 0, "b");
        a.tick(9);
        assert_eq!(a.delays.recent.iter().copied().collect::<Vec<_>>(), [9]);
    }
}
