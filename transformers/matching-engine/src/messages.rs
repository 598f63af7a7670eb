//! The engine's JSON vocabulary: the commands it reads and the reports it writes.
//!
//! Both are internally tagged by `type` in snake_case, and both derive `Serialize` and
//! `Deserialize`, so a producer of orders and a consumer of reports can share these types.
//! Prices are integer ticks and quantities integer lots: a float or a negative number fails to
//! decode, so it never reaches the book.

use serde::{Deserialize, Serialize};

/// Which side of the book an order is on.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Bids: wants to buy at the price or lower.
    Buy,
    /// Asks: wants to sell at the price or higher.
    Sell,
}

impl Side {
    /// The side an order of this side trades against.
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

/// One input event on the engine's input key.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Buy or sell up to `quantity` at `price` or better; the remainder rests in the book.
    Limit { order_id: String, account: String, side: Side, price: u64, quantity: u64 },
    /// Buy or sell `quantity` at any price now; the remainder that finds no liquidity is cancelled.
    Market { order_id: String, account: String, side: Side, quantity: u64 },
    /// Remove a resting order from the book.
    Cancel { order_id: String },
}

/// One output event. An input yields its reports in this order: `accepted` or `rejected`;
/// then per execution a `trade`, followed by the maker's `filled` if the trade completed it;
/// then the order's outcome for this input: `filled`, `rested` or `cancelled`.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Report {
    /// The order passed the business rules and was matched; `price` is absent for a market order.
    Accepted {
        order_id: String,
        account: String,
        side: Side,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        price: Option<u64>,
        quantity: u64,
    },
    /// The command broke a business rule and changed nothing.
    Rejected { order_id: String, reason: RejectReason },
    /// An execution between the incoming order (taker) and a resting one (maker), at the maker's price.
    Trade {
        trade_id: u64,
        taker_order_id: String,
        maker_order_id: String,
        taker_account: String,
        maker_account: String,
        price: u64,
        quantity: u64,
        taker_side: Side,
    },
    /// The order has no quantity left and is gone from the book.
    Filled { order_id: String },
    /// The unfilled remainder of a limit order now waits in the book.
    Rested { order_id: String, side: Side, price: u64, remaining: u64 },
    /// The unfilled remainder of the order was removed, and why.
    Cancelled { order_id: String, remaining: u64, reason: CancelReason },
}

/// Why a command was rejected.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// An order with this id was accepted before; ids are never reused, so a replayed order
    /// cannot execute twice.
    DuplicateOrderId,
    /// The cancel names no resting order: never accepted, already filled or already cancelled.
    UnknownOrder,
    /// An order for zero lots.
    ZeroQuantity,
    /// A limit order at price zero.
    ZeroPrice,
}

/// Why an order's remainder was cancelled.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// A `cancel` command asked for it.
    Requested,
    /// A market order ran out of opposite orders.
    NoLiquidity,
    /// The order reached [`crate::FILLS_PER_ORDER_MAX`] executions; the rest is cancelled
    /// rather than rested, since resting it would cross the book.
    FillLimit,
}
