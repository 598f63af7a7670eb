//! Money transfers between accounts as a deterministic event transform. Its PostgreSQL
//! projection is the `ledger-projection` crate, so this one depends on the core alone.
//!
//! The [`Ledger`] reads [`Command`]s (JSON) from the `transfers` stream and writes [`Entry`]s
//! to the `ledger` stream: `opened` for a new account, `transferred` (with both resulting
//! balances) for an accepted transfer, and `rejected` for a command that breaks a business
//! rule. An overdraft is a business outcome, not a failure, so it is answered with an event
//! (`{"type":"rejected","id":"t1","reason":"insufficient_funds"}`), never dead-lettered.
//!
//! Amounts are integers in minor units (cents). Every balance and the ledger's total stay in
//! `0 ..= i64::MAX` ([`TOTAL_MAX`]), so they fit PostgreSQL's `bigint` and no sum overflows;
//! money is conserved: the balances always add up to the opened accounts' initial amounts.
//!
//! Input errors: a payload that is not JSON is a `decode` [`TransformError`]; JSON that is
//! not a command (a missing or mistyped field, an unknown `type`), a zero amount, or an empty
//! or over-long id or account is a [`TransformError::Schema`]. Both are dead-lettered.
//!
//! ```
//! # use ledger::{Command, Ledger};
//! let mut ledger = Ledger::new();
//! let mut run = |json: &str| -> String {
//!     let command: Command = serde_json::from_str(json).unwrap();
//!     serde_json::to_string(&ledger.execute(command).unwrap()).unwrap()
//! };
//! run(r#"{"type":"open","account":"a","initial":100}"#);
//! run(r#"{"type":"open","account":"b","initial":0}"#);
//! assert_eq!(run(r#"{"type":"transfer","id":"t1","from":"a","to":"b","amount":30}"#),
//!     r#"{"type":"transferred","id":"t1","from":"a","to":"b","amount":30,"from_balance":70,"to_balance":30}"#);
//! assert_eq!(run(r#"{"type":"transfer","id":"t2","from":"b","to":"a","amount":31}"#),
//!     r#"{"type":"rejected","id":"t2","reason":"insufficient_funds"}"#);
//! ```
//!
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use competing_transformers::codec::CodecError;
use competing_transformers::transform::{Input, Outputs, Transform, TransformError};
use competing_transformers::EventSourceKey;
use serde::{Deserialize, Serialize};

/// The ledger's name and output stream.
pub const LEDGER_KEY: &str = "ledger";
/// The stream of commands it reads.
pub const TRANSFERS_KEY: &str = "transfers";
/// Longest account name or transfer id, in bytes: bounds the state per account and transfer.
pub const NAME_BYTES_MAX: usize = 64;
/// The message of a command whose JSON does not have a command's shape.
pub const COMMAND_SHAPE: &str =
    "the payload is not an `open` or `transfer` command with every field it needs (see the ledger's documentation)";
/// The most money the whole ledger may hold, in minor units: PostgreSQL's `bigint` maximum,
/// so no balance and no sum of balances overflows anywhere.
pub const TOTAL_MAX: u64 = i64::MAX as u64;

/// A command on the `transfers` stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Opens `account` holding `initial`.
    Open {
        /// The new account's name.
        account: String,
        /// Its opening balance, in minor units.
        initial: u64,
    },
    /// Moves `amount` from `from` to `to`, once per `id`.
    Transfer {
        /// The transfer's id; a second transfer with the same id is rejected.
        id: String,
        /// The account paying.
        from: String,
        /// The account paid.
        to: String,
        /// How much, in minor units; at least 1.
        amount: u64,
    },
}

/// Why a command was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The paying account holds less than the amount: no overdrafts.
    InsufficientFunds,
    /// `from` or `to` was never opened.
    UnknownAccount,
    /// The account is already open.
    AccountExists,
    /// A transfer with this id was already decided.
    DuplicateId,
    /// `from` and `to` are the same account.
    SameAccount,
    /// Opening the account would take the ledger's total past [`TOTAL_MAX`].
    LimitExceeded,
}

/// An event on the `ledger` stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Entry {
    /// An account was opened.
    Opened {
        /// Its name.
        account: String,
        /// Its opening balance.
        balance: u64,
    },
    /// A transfer was applied.
    Transferred {
        /// The transfer's id.
        id: String,
        /// The account paying.
        from: String,
        /// The account paid.
        to: String,
        /// How much moved.
        amount: u64,
        /// The paying account's balance afterwards.
        from_balance: u64,
        /// The paid account's balance afterwards.
        to_balance: u64,
    },
    /// A command was refused; nothing changed.
    Rejected {
        /// The transfer's id, for a refused transfer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The account, for a refused open.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        account: Option<String>,
        /// Why.
        reason: RejectReason,
    },
}

/// The ledger: balances per account, and the transfer ids already decided.
#[derive(Clone, Debug)]
pub struct Ledger {
    name: EventSourceKey,
    input_key: EventSourceKey,
    balances: BTreeMap<String, u64>,
    /// Every transfer id decided (accepted or rejected), so none is applied twice. Grows by
    /// one per transfer.
    transfer_ids: BTreeSet<String>,
    /// Sum of the balances: the opened accounts' initial amounts.
    total: u64,
}

impl Default for Ledger {
    fn default() -> Self {
        Self::new()
    }
}

impl Ledger {
    /// The ledger named `ledger`, reading `transfers`.
    pub fn new() -> Self {
        let key = |name: &str| EventSourceKey::new(name).expect("a valid constant key");
        Self::with_names(key(LEDGER_KEY), key(TRANSFERS_KEY))
    }

    /// A ledger whose output stream is `name` and which reads `input_key`.
    pub fn with_names(name: EventSourceKey, input_key: EventSourceKey) -> Self {
        Self { name, input_key, balances: BTreeMap::new(), transfer_ids: BTreeSet::new(), total: 0 }
    }

    /// Balance per account.
    pub fn balances(&self) -> &BTreeMap<String, u64> {
        &self.balances
    }

    /// The sum of all balances, which only opening an account changes.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Decides one command: the pure core of [`Transform::apply`].
    pub fn execute(&mut self, command: Command) -> Result<Entry, TransformError> {
        let entry = match command {
            Command::Open { account, initial } => {
                check_name("account", &account)?;
                if self.balances.contains_key(&account) {
                    Entry::Rejected { id: None, account: Some(account), reason: RejectReason::AccountExists }
                } else if initial > TOTAL_MAX - self.total {
                    Entry::Rejected { id: None, account: Some(account), reason: RejectReason::LimitExceeded }
                } else {
                    self.total += initial;
                    self.balances.insert(account.clone(), initial);
                    Entry::Opened { account, balance: initial }
                }
            }
            Command::Transfer { id, from, to, amount } => {
                check_name("id", &id)?;
                check_name("from", &from)?;
                check_name("to", &to)?;
                if amount == 0 {
                    return Err(TransformError::Schema("field `amount` must be at least 1".into()));
                }
                let reject = |id: String, reason| Entry::Rejected { id: Some(id), account: None, reason };
                if self.transfer_ids.contains(&id) {
                    return Ok(reject(id, RejectReason::DuplicateId));
                }
                self.transfer_ids.insert(id.clone());
                match (self.balances.get(&from).copied(), self.balances.get(&to).copied()) {
                    _ if from == to => reject(id, RejectReason::SameAccount),
                    (Some(paying), Some(paid)) => {
                        if paying < amount {
                            reject(id, RejectReason::InsufficientFunds)
                        } else {
                            // Cannot overflow: every balance is part of a total of at most TOTAL_MAX.
                            let (from_balance, to_balance) = (paying - amount, paid + amount);
                            self.balances.insert(from.clone(), from_balance);
                            self.balances.insert(to.clone(), to_balance);
                            Entry::Transferred { id, from, to, amount, from_balance, to_balance }
                        }
                    }
                    _ => reject(id, RejectReason::UnknownAccount),
                }
            }
        };
        debug_assert_eq!(self.balances.values().sum::<u64>(), self.total, "money is conserved");
        Ok(entry)
    }
}

fn check_name(field: &str, value: &str) -> Result<(), TransformError> {
    if value.is_empty() {
        return Err(TransformError::Schema(format!("field `{field}` is empty")));
    }
    if value.len() > NAME_BYTES_MAX {
        return Err(TransformError::Schema(format!("field `{field}` is longer than {NAME_BYTES_MAX} bytes")));
    }
    Ok(())
}

impl Transform for Ledger {
    fn name(&self) -> &str {
        self.name.as_str()
    }

    fn version(&self) -> u32 {
        1
    }

    fn subscriptions(&self) -> Vec<EventSourceKey> {
        vec![self.input_key.clone()]
    }

    fn apply(&mut self, input: &Input<'_>, out: &mut Outputs) -> Result<(), TransformError> {
        // Not JSON: a decode failure. JSON of the wrong shape: a schema failure whose digested
        // message is ours; serde's precise one ("missing field `amount`") goes to the dead
        // letter's detail, so a serde_json upgrade cannot change what replicas write.
        let value: serde_json::Value = input.json()?;
        let command: Command =
            serde_json::from_value(value).map_err(|e| CodecError::schema_because(COMMAND_SHAPE, e))?;
        out.emit_json(&self.execute(command)?);
        Ok(())
    }
}
