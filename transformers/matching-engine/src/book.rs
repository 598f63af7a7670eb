//! The order book: resting limit orders by side and price, oldest first within a price.
//!
//! Pure data and matching; it knows nothing of JSON, reports or the log. Only ordered
//! collections are used, so every walk over the book has one order on every replica.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::messages::Side;

/// A limit order waiting in the book.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RestingOrder {
    /// The id its owner gave it.
    pub order_id: String,
    /// The account that placed it.
    pub account: String,
    /// The side it rests on.
    pub side: Side,
    /// Its limit price, in ticks.
    pub price: u64,
    /// Lots not yet filled; never zero while it rests.
    pub remaining: u64,
}

/// One execution of an incoming order against a resting one, as [`OrderBook::take`] makes it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Fill {
    /// The resting order's id.
    pub maker_order_id: String,
    /// The resting order's account.
    pub maker_account: String,
    /// The resting order's price: trades execute at the maker's price.
    pub price: u64,
    /// Lots exchanged.
    pub quantity: u64,
    /// Lots the resting order keeps; zero means it left the book.
    pub maker_remaining: u64,
}

/// Total resting quantity at one price.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Level {
    /// The price, in ticks.
    pub price: u64,
    /// The lots resting there, all orders together.
    pub quantity: u64,
}

/// Resting orders of both sides, matched in price-time priority. Serialized as part of the
/// engine's snapshot state.
#[derive(Clone, Default, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderBook {
    bids: BTreeMap<u64, VecDeque<RestingOrder>>,
    asks: BTreeMap<u64, VecDeque<RestingOrder>>,
    /// Side and price of each resting order, so that a cancel finds its level without a scan.
    locations: BTreeMap<String, (Side, u64)>,
}

impl OrderBook {
    /// The highest bid price, if any bid rests.
    pub fn best_bid(&self) -> Option<u64> {
        self.bids.keys().next_back().copied()
    }

    /// The lowest ask price, if any ask rests.
    pub fn best_ask(&self) -> Option<u64> {
        self.asks.keys().next().copied()
    }

    /// The price levels of one side, best first.
    pub fn depth(&self, side: Side) -> Vec<Level> {
        let level = |(price, orders): (&u64, &VecDeque<RestingOrder>)| Level {
            price: *price,
            quantity: orders.iter().fold(0, |sum: u64, order| sum.saturating_add(order.remaining)),
        };
        match side {
            Side::Buy => self.bids.iter().rev().map(level).collect(),
            Side::Sell => self.asks.iter().map(level).collect(),
        }
    }

    /// The resting order with this id, if it rests.
    pub fn order(&self, order_id: &str) -> Option<&RestingOrder> {
        let (side, price) = self.locations.get(order_id)?;
        self.levels(*side).get(price)?.iter().find(|order| order.order_id == order_id)
    }

    /// How many orders rest, both sides together.
    pub fn len(&self) -> usize {
        self.locations.len()
    }

    /// Whether no order rests.
    pub fn is_empty(&self) -> bool {
        self.locations.is_empty()
    }

    /// Whether the best bid reaches the best ask: a state matching must never leave behind.
    pub fn is_crossed(&self) -> bool {
        matches!((self.best_bid(), self.best_ask()), (Some(bid), Some(ask)) if bid >= ask)
    }

    /// Whether an incoming order of `side` with this limit (`None`: a market order) would
    /// trade against the best opposite order now.
    pub fn is_matchable(&self, side: Side, limit: Option<u64>) -> bool {
        match (side, limit) {
            (Side::Buy, None) => self.best_ask().is_some(),
            (Side::Sell, None) => self.best_bid().is_some(),
            (Side::Buy, Some(limit)) => self.best_ask().is_some_and(|ask| ask <= limit),
            (Side::Sell, Some(limit)) => self.best_bid().is_some_and(|bid| bid >= limit),
        }
    }

    /// Rests an order at the back of its price level. The caller matches it first
    /// ([`OrderBook::take`]): resting an order that could trade would cross the book.
    pub fn insert(&mut self, order: RestingOrder) {
        debug_assert!(order.remaining > 0, "an empty order cannot rest");
        debug_assert!(!self.is_matchable(order.side, Some(order.price)), "a resting order would cross the book");
        let previous = self.locations.insert(order.order_id.clone(), (order.side, order.price));
        debug_assert!(previous.is_none(), "order id {} already rests", order.order_id);
        self.levels_mut(order.side).entry(order.price).or_default().push_back(order);
    }

    /// Removes a resting order and returns it, or `None` if no order with this id rests.
    pub fn remove(&mut self, order_id: &str) -> Option<RestingOrder> {
        let (side, price) = self.locations.remove(order_id)?;
        let levels = self.levels_mut(side);
        let level = levels.get_mut(&price).expect("a located order's level exists");
        let position =
            level.iter().position(|order| order.order_id == order_id).expect("a located order is in its level");
        let order = level.remove(position);
        if level.is_empty() {
            levels.remove(&price);
        }
        order
    }

    /// Matches an incoming order of `side` against the opposite side: best price first, oldest
    /// first within a price, at each maker's price. Stops when `quantity` is filled, when the
    /// best opposite price is worse than `limit` (`None`: any price), or after `fills_max`
    /// fills. Makers that fill completely leave the book.
    pub fn take(&mut self, side: Side, limit: Option<u64>, quantity: u64, fills_max: usize) -> Vec<Fill> {
        let mut fills = Vec::new();
        let mut remaining = quantity;
        while remaining > 0 && fills.len() < fills_max && self.is_matchable(side, limit) {
            let levels = self.levels_mut(side.opposite());
            let mut best = match side {
                Side::Buy => levels.first_entry(),
                Side::Sell => levels.last_entry(),
            }
            .expect("a matchable side has a level");
            let maker = best.get_mut().front_mut().expect("levels are never empty");
            let executed = remaining.min(maker.remaining);
            maker.remaining -= executed;
            remaining -= executed;
            fills.push(Fill {
                maker_order_id: maker.order_id.clone(),
                maker_account: maker.account.clone(),
                price: maker.price,
                quantity: executed,
                maker_remaining: maker.remaining,
            });
            if maker.remaining == 0 {
                let filled = best.get_mut().pop_front().expect("the maker is at the front");
                if best.get().is_empty() {
                    best.remove();
                }
                self.locations.remove(&filled.order_id);
            }
        }
        fills
    }

    /// Whether the book keeps its invariants: every order rests once, on its own side and
    /// price, with lots left; no level is empty; the index of locations names exactly the
    /// resting orders; the book is not crossed. A restored book is checked before it is used.
    pub fn check(&self) -> Result<(), String> {
        let mut orders = 0;
        for side in [Side::Buy, Side::Sell] {
            for (price, level) in self.levels(side) {
                if level.is_empty() {
                    return Err(format!("the {side:?} level at {price} is empty"));
                }
                for order in level {
                    orders += 1;
                    let located = self.locations.get(&order.order_id) == Some(&(side, *price));
                    if order.side != side || order.price != *price || order.remaining == 0 || !located {
                        return Err(format!("order `{}` does not rest where the book says", order.order_id));
                    }
                }
            }
        }
        if orders != self.locations.len() {
            return Err(format!("{} orders rest but {} are located", orders, self.locations.len()));
        }
        if self.is_crossed() {
            return Err("the book is crossed".into());
        }
        Ok(())
    }

    fn levels(&self, side: Side) -> &BTreeMap<u64, VecDeque<RestingOrder>> {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    fn levels_mut(&mut self, side: Side) -> &mut BTreeMap<u64, VecDeque<RestingOrder>> {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }
}
