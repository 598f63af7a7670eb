//! A price-time priority order-matching engine as a deterministic event transform.
//!
//! It reads [`Command`]s (JSON, or Avro under [`COMMAND_SCHEMA`]) from the `orders` stream, matches them against an in-memory
//! [`OrderBook`] (best price first, then earliest order; trades at the maker's price) and writes
//! [`Report`]s to the `matching-engine` stream. State is the book, the order ids seen and a
//! trade counter; no clock, no randomness, ordered collections only, so every replica writes
//! the same bytes.
//!
//! - [`messages`]: the JSON commands and reports.
//! - [`book`]: the pure order book and its matching walk.
//!
//! Its reports are JSON, or Avro under [`REPORT_SCHEMA`] when configured with `codec = "avro"`.
//!
//! Input errors: a payload that is not JSON or not a known command is a
//! `decode` [`TransformError`] (dead-lettered). A command that breaks a business rule (duplicate
//! order id, unknown cancel, zero quantity, zero price) is answered with a `rejected` report, as
//! an exchange would. Only values that cannot be addressed at all, an empty or over-long
//! `order_id` or `account`, are a [`TransformError::Schema`].
//!
//! ```
//! # use matching_engine::{Command, MatchingEngine};
//! let mut engine = MatchingEngine::new();
//! let mut run = |json: &str| -> Vec<String> {
//!     let command: Command = serde_json::from_str(json).unwrap();
//!     engine.execute(command).unwrap().iter().map(|r| serde_json::to_string(r).unwrap()).collect()
//! };
//! run(r#"{"type":"limit","order_id":"a1","account":"alice","side":"sell","price":101,"quantity":5}"#);
//! assert_eq!(run(r#"{"type":"market","order_id":"b1","account":"bob","side":"buy","quantity":7}"#), [
//!     r#"{"type":"accepted","order_id":"b1","account":"bob","side":"buy","quantity":7}"#,
//!     r#"{"type":"trade","trade_id":1,"taker_order_id":"b1","maker_order_id":"a1","taker_account":"bob","maker_account":"alice","price":101,"quantity":5,"taker_side":"buy"}"#,
//!     r#"{"type":"filled","order_id":"a1"}"#,
//!     r#"{"type":"cancelled","order_id":"b1","remaining":2,"reason":"no_liquidity"}"#,
//! ]);
//! ```

pub mod book;
pub mod messages;

use std::collections::BTreeSet;

use competing_transformers::snapshot::{state_from_bytes, state_to_bytes};
use competing_transformers::transform::{Input, Outputs, Transform, TransformError};
use competing_transformers::EventSourceKey;
use serde::{Deserialize, Serialize};

pub use book::{Fill, Level, OrderBook, RestingOrder};
pub use messages::{CancelReason, Command, RejectReason, Report, Side};

/// The Avro schema of [`Command`] (`schemas/matching-engine/command.avsc`): orders may come
/// as JSON or as Avro in the Confluent wire format under this schema.
pub const COMMAND_SCHEMA: &str = include_str!("../../../schemas/matching-engine/command.avsc");
/// The Avro schema of [`Report`] (`schemas/matching-engine/report.avsc`), registered under
/// `matching-engine-value` when the engine runs with `codec = "avro"`.
pub const REPORT_SCHEMA: &str = include_str!("../../../schemas/matching-engine/report.avsc");

/// Longest `order_id`, in bytes: bounds the state per order and the size of each report.
pub const ORDER_ID_BYTES_MAX: usize = 64;
/// Longest `account`, in bytes, for the same reasons.
pub const ACCOUNT_BYTES_MAX: usize = 64;
/// Most executions one incoming order may make. Each costs at most two reports (trade and
/// maker filled), so one input stays well under the framework's per-input output limits
/// ([`competing_transformers::transform::OUTPUT_EVENTS_MAX`] and `OUTPUT_BYTES_MAX`).
pub const FILLS_PER_ORDER_MAX: usize = 400;

/// The matching engine: one order book, fed by one input stream.
#[derive(Clone, Debug)]
pub struct MatchingEngine {
    name: EventSourceKey,
    input_key: EventSourceKey,
    book: OrderBook,
    /// Every order id ever accepted, so none is reused. Grows by one per accepted order.
    order_ids: BTreeSet<String>,
    /// The id the next trade takes; the first is 1.
    next_trade_id: u64,
}

impl MatchingEngine {
    /// The engine named `matching-engine`, reading `orders`.
    pub fn new() -> Self {
        let key = |name: &str| EventSourceKey::new(name).expect("a valid constant key");
        Self::with_names(key("matching-engine"), key("orders"))
    }

    /// An engine whose output stream is `name` and which reads `input_key`, to run several
    /// books (one per instrument) side by side.
    pub fn with_names(name: EventSourceKey, input_key: EventSourceKey) -> Self {
        Self { name, input_key, book: OrderBook::default(), order_ids: BTreeSet::new(), next_trade_id: 1 }
    }

    /// The order book, for inspection.
    pub fn book(&self) -> &OrderBook {
        &self.book
    }

    /// Executes one command and returns its reports, in order: the pure core of [`Transform::apply`].
    pub fn execute(&mut self, command: Command) -> Result<Vec<Report>, TransformError> {
        let reports = match command {
            Command::Limit { order_id, account, side, price, quantity } => {
                check_text("order_id", &order_id, ORDER_ID_BYTES_MAX)?;
                check_text("account", &account, ACCOUNT_BYTES_MAX)?;
                self.submit(order_id, account, side, Some(price), quantity)
            }
            Command::Market { order_id, account, side, quantity } => {
                check_text("order_id", &order_id, ORDER_ID_BYTES_MAX)?;
                check_text("account", &account, ACCOUNT_BYTES_MAX)?;
                self.submit(order_id, account, side, None, quantity)
            }
            Command::Cancel { order_id } => {
                check_text("order_id", &order_id, ORDER_ID_BYTES_MAX)?;
                vec![match self.book.remove(&order_id) {
                    Some(order) => {
                        Report::Cancelled { order_id, remaining: order.remaining, reason: CancelReason::Requested }
                    }
                    None => Report::Rejected { order_id, reason: RejectReason::UnknownOrder },
                }]
            }
        };
        assert!(!self.book.is_crossed(), "matching left the book crossed");
        Ok(reports)
    }

    /// Checks the business rules, matches, then rests (limit) or cancels (market) what is left.
    fn submit(
        &mut self,
        order_id: String,
        account: String,
        side: Side,
        limit: Option<u64>,
        quantity: u64,
    ) -> Vec<Report> {
        let rejection = if self.order_ids.contains(&order_id) {
            Some(RejectReason::DuplicateOrderId)
        } else if quantity == 0 {
            Some(RejectReason::ZeroQuantity)
        } else if limit == Some(0) {
            Some(RejectReason::ZeroPrice)
        } else {
            None
        };
        if let Some(reason) = rejection {
            return vec![Report::Rejected { order_id, reason }];
        }
        self.order_ids.insert(order_id.clone());
        let mut reports = vec![Report::Accepted {
            order_id: order_id.clone(),
            account: account.clone(),
            side,
            price: limit,
            quantity,
        }];
        let mut remaining = quantity;
        for fill in self.book.take(side, limit, quantity, FILLS_PER_ORDER_MAX) {
            remaining -= fill.quantity;
            reports.push(Report::Trade {
                trade_id: self.next_trade_id,
                taker_order_id: order_id.clone(),
                maker_order_id: fill.maker_order_id.clone(),
                taker_account: account.clone(),
                maker_account: fill.maker_account,
                price: fill.price,
                quantity: fill.quantity,
                taker_side: side,
            });
            self.next_trade_id += 1;
            if fill.maker_remaining == 0 {
                reports.push(Report::Filled { order_id: fill.maker_order_id });
            }
        }
        reports.push(if remaining == 0 {
            Report::Filled { order_id }
        } else if self.book.is_matchable(side, limit) {
            Report::Cancelled { order_id, remaining, reason: CancelReason::FillLimit }
        } else if let Some(price) = limit {
            self.book.insert(RestingOrder { order_id: order_id.clone(), account, side, price, remaining });
            Report::Rested { order_id, side, price, remaining }
        } else {
            Report::Cancelled { order_id, remaining, reason: CancelReason::NoLiquidity }
        });
        reports
    }
}

/// The engine's state as a snapshot saves it (ordered collections only: the same bytes on
/// every replica).
#[derive(Serialize)]
struct SavedState<'a> {
    book: &'a OrderBook,
    order_ids: &'a BTreeSet<String>,
    next_trade_id: u64,
}

/// [`SavedState`] read back.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoredState {
    book: OrderBook,
    order_ids: BTreeSet<String>,
    next_trade_id: u64,
}

impl Default for MatchingEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl Transform for MatchingEngine {
    fn name(&self) -> &str {
        self.name.as_str()
    }

    fn version(&self) -> u32 {
        1
    }

    fn subscriptions(&self) -> Vec<EventSourceKey> {
        vec![self.input_key.clone()]
    }

    fn output_schema(&self) -> Option<&str> {
        Some(REPORT_SCHEMA)
    }

    fn apply(&mut self, input: &Input<'_>, out: &mut Outputs) -> Result<(), TransformError> {
        for report in self.execute(input.decode()?)? {
            out.emit_value(&report)?;
        }
        Ok(())
    }

    fn save_state(&self) -> Option<Vec<u8>> {
        let state = SavedState { book: &self.book, order_ids: &self.order_ids, next_trade_id: self.next_trade_id };
        Some(state_to_bytes(&state))
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), String> {
        let restored: RestoredState = state_from_bytes(state)?;
        restored.book.check().map_err(|why| format!("the saved order book is inconsistent: {why}"))?;
        self.book = restored.book;
        self.order_ids = restored.order_ids;
        self.next_trade_id = restored.next_trade_id;
        Ok(())
    }
}

/// An identifier must be present and bounded, or no report could name what it answers.
fn check_text(field: &str, value: &str, bytes_max: usize) -> Result<(), TransformError> {
    if value.is_empty() || value.len() > bytes_max {
        return Err(TransformError::Schema(format!("`{field}` must be 1 to {bytes_max} bytes, got {}", value.len())));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
