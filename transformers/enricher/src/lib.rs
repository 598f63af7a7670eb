//! Validates inbound payments and emits them enriched: a deterministic event transform.
//!
//! The [`Enricher`] reads JSON payments from the `inbound` stream,
//! `{"id":"p1","amount":1250,"currency":"EUR"}` (amount in minor units), and writes to the
//! `enricher` stream the same payment with what the pipeline knows about it: its position
//! (`source_index`), its effective time, its amount in major units as a decimal string, the
//! currency's name and minor-unit exponent, and a per-currency sequence number.
//!
//! What fails validation is dead-lettered with reason `schema` and a message naming the
//! field (`field \`amount\` missing`); a payload that is not JSON has reason `decode`.
//! Validation is by hand rather than by serde so every message names one field the same way.
//!
//! ```
//! use competing_transformers::{replica::run_to_end, Event, EventSourceKey, MemoryLog};
//! let log = MemoryLog::new();
//! let inbound: EventSourceKey = "inbound".parse().unwrap();
//! log.publish(&inbound, vec![Event::json(inbound.clone(), 7, &serde_json::json!({"id": "p1", "amount": 1250, "currency": "EUR"}))]);
//! run_to_end(&log, enricher::Enricher::new());
//! let out = &log.canonical(&"enricher".parse().unwrap())[0];
//! assert_eq!(std::str::from_utf8(&out.payload).unwrap(),
//!     r#"{"id":"p1","amount":1250,"currency":"EUR","amount_major":"12.50","currency_name":"Euro","source_index":0,"effective_time_ms":7,"sequence":1}"#);
//! ```

use std::collections::BTreeMap;

use competing_transformers::snapshot::{state_from_bytes, state_to_bytes};
use competing_transformers::transform::{Input, Outputs, Transform, TransformError};
use competing_transformers::EventSourceKey;
use serde::Serialize;

/// The enricher's name and output stream.
pub const ENRICHER_KEY: &str = "enricher";
/// The stream it reads.
pub const INBOUND_KEY: &str = "inbound";
/// Longest payment id, in bytes.
pub const ID_BYTES_MAX: usize = 64;
/// Largest amount accepted, in minor units: keeps every amount exact in a JSON double.
pub const AMOUNT_MAX: u64 = 1 << 53;

/// Currencies it knows: ISO 4217 code, name, minor-unit exponent.
const CURRENCIES: &[(&str, &str, u32)] = &[
    ("CHF", "Swiss franc", 2),
    ("EUR", "Euro", 2),
    ("GBP", "Pound sterling", 2),
    ("JPY", "Japanese yen", 0),
    ("KWD", "Kuwaiti dinar", 3),
    ("USD", "United States dollar", 2),
];

/// An enriched payment, as written to the `enricher` stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Enriched {
    /// The payment's id.
    pub id: String,
    /// Its amount in minor units.
    pub amount: u64,
    /// Its ISO 4217 currency code.
    pub currency: String,
    /// The amount in major units, as an exact decimal string.
    pub amount_major: String,
    /// The currency's name.
    pub currency_name: String,
    /// The input's index on `inbound`.
    pub source_index: u64,
    /// The input's effective time.
    pub effective_time_ms: i64,
    /// 1 for the first valid payment in this currency, then 2, 3, …
    pub sequence: u64,
}

/// The enricher: a counter per currency is its only state.
#[derive(Clone, Debug)]
pub struct Enricher {
    name: EventSourceKey,
    input_key: EventSourceKey,
    sequences: BTreeMap<String, u64>,
}

impl Default for Enricher {
    fn default() -> Self {
        Self::new()
    }
}

impl Enricher {
    /// The enricher named `enricher`, reading `inbound`.
    pub fn new() -> Self {
        let key = |name: &str| EventSourceKey::new(name).expect("a valid constant key");
        Self { name: key(ENRICHER_KEY), input_key: key(INBOUND_KEY), sequences: BTreeMap::new() }
    }
}

fn schema(message: String) -> TransformError {
    TransformError::Schema(message)
}

/// Checks a payment and returns `(id, amount, currency code, name, exponent)`.
pub fn validate(value: &serde_json::Value) -> Result<(String, u64, &'static str, &'static str, u32), TransformError> {
    let object = value.as_object().ok_or_else(|| schema("the payment is not a JSON object".into()))?;
    for field in object.keys() {
        if !["id", "amount", "currency"].contains(&field.as_str()) {
            return Err(schema(format!("field `{field}` is not part of a payment (id, amount, currency)")));
        }
    }
    let field = |name: &str| object.get(name).ok_or_else(|| schema(format!("field `{name}` missing")));
    let id = field("id")?.as_str().ok_or_else(|| schema("field `id` must be a string".into()))?;
    if id.is_empty() || id.len() > ID_BYTES_MAX {
        return Err(schema(format!("field `id` must be 1 to {ID_BYTES_MAX} bytes")));
    }
    let amount = field("amount")?
        .as_u64()
        .ok_or_else(|| schema("field `amount` must be a non-negative integer (minor units)".into()))?;
    if amount == 0 || amount > AMOUNT_MAX {
        return Err(schema(format!("field `amount` must be between 1 and {AMOUNT_MAX}")));
    }
    let code = field("currency")?.as_str().ok_or_else(|| schema("field `currency` must be a string".into()))?;
    let (code, name, exponent) = CURRENCIES
        .iter()
        .find(|(c, _, _)| *c == code)
        .ok_or_else(|| schema(format!("field `currency` is `{code}`, not a known ISO 4217 code")))?;
    Ok((id.to_string(), amount, code, name, *exponent))
}

/// `amount` minor units as a decimal string with `exponent` fraction digits.
fn major(amount: u64, exponent: u32) -> String {
    if exponent == 0 {
        return amount.to_string();
    }
    let scale = 10u64.pow(exponent);
    format!("{}.{:0width$}", amount / scale, amount % scale, width = exponent as usize)
}

impl Transform for Enricher {
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
        let value: serde_json::Value = input.json()?;
        let (id, amount, code, name, exponent) = validate(&value)?;
        let sequence = self.sequences.entry(code.to_string()).or_insert(0);
        *sequence += 1;
        out.emit_json(&Enriched {
            id,
            amount,
            currency: code.to_string(),
            amount_major: major(amount, exponent),
            currency_name: name.to_string(),
            source_index: input.index,
            effective_time_ms: input.effective_time_ms,
            sequence: *sequence,
        });
        Ok(())
    }

    /// The state is the counter per currency, a JSON object ordered by code.
    fn save_state(&self) -> Option<Vec<u8>> {
        Some(state_to_bytes(&self.sequences))
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), String> {
        let sequences: BTreeMap<String, u64> = state_from_bytes(state)?;
        if let Some(code) = sequences.keys().find(|code| !CURRENCIES.iter().any(|(known, _, _)| known == code)) {
            return Err(format!("the saved state counts `{code}`, which is not a currency the enricher knows"));
        }
        self.sequences = sequences;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use competing_transformers::dead_letter::{DeadLetter, Reason};
    use competing_transformers::replica::run_to_end;
    use competing_transformers::{Event, MemoryLog};

    use super::*;

    fn key(name: &str) -> EventSourceKey {
        EventSourceKey::new(name).unwrap()
    }

    fn run(payloads: &[&str]) -> (Vec<serde_json::Value>, Vec<DeadLetter>) {
        let log = MemoryLog::new();
        let inbound = key(INBOUND_KEY);
        for (i, payload) in payloads.iter().enumerate() {
            log.publish(
                &inbound,
                vec![Event::new(
                    inbound.clone(),
                    None,
                    None,
                    i as i64,
                    "application/json",
                    payload.as_bytes().to_vec(),
                )],
            );
        }
        run_to_end(&log, Enricher::new());
        let outputs =
            log.canonical(&key(ENRICHER_KEY)).iter().map(|e| serde_json::from_slice(&e.payload).unwrap()).collect();
        let letters = log
            .canonical(&key(ENRICHER_KEY).dead_letters())
            .iter()
            .map(|e| serde_json::from_slice(&e.payload).unwrap())
            .collect();
        (outputs, letters)
    }

    /// Each input's output from index `from` on, as written (or why the input failed).
    fn feed(enricher: &mut Enricher, payloads: &[&str], from: usize) -> Vec<Result<Vec<Vec<u8>>, TransformError>> {
        let inbound = key(INBOUND_KEY);
        (from..payloads.len())
            .map(|index| {
                let input = Input {
                    key: &inbound,
                    index: index as u64,
                    offset: 2 * index as u64,
                    effective_time_ms: index as i64,
                    content_type: "application/json",
                    payload: payloads[index].as_bytes(),
                    digest: competing_transformers::Digest([0; 32]),
                    schemas: &competing_transformers::codec::NO_SCHEMAS,
                };
                let mut out = Outputs::default();
                enricher.apply(&input, &mut out).map(|()| out.into_events().into_iter().map(|e| e.payload).collect())
            })
            .collect()
    }

    #[test]
    fn an_enricher_restored_at_any_input_writes_what_one_fed_from_the_start_writes() {
        let payloads = [
            r#"{"id":"p1","amount":1250,"currency":"EUR"}"#,
            r#"{"id":"p2","amount":7,"currency":"KWD"}"#,
            "{broken",
            r#"{"id":"p3","amount":500,"currency":"JPY"}"#,
            r#"{"id":"p4","amount":5,"currency":"EUR"}"#,
            r#"{"id":"p5","amount":3,"currency":"XXX"}"#,
            r#"{"id":"p6","amount":99,"currency":"KWD"}"#,
            r#"{"id":"p7","amount":1,"currency":"EUR"}"#,
        ];
        let whole = feed(&mut Enricher::new(), &payloads, 0);
        for k in 0..=payloads.len() {
            let mut before = Enricher::new();
            feed(&mut before, &payloads[..k], 0);
            let saved = before.save_state().expect("the enricher saves its state");
            let mut restored = Enricher::new();
            restored.restore_state(&saved).unwrap();
            assert_eq!(restored.save_state(), Some(saved), "restored after {k} inputs");
            assert_eq!(feed(&mut restored, &payloads, k), whole[k..], "restored after {k} inputs");
        }
    }

    #[test]
    fn a_saved_state_counting_an_unknown_currency_is_refused() {
        let error = Enricher::new().restore_state(br#"{"EUR":2,"XXX":1}"#).unwrap_err();
        assert!(error.contains("`XXX`"), "{error}");
        assert!(Enricher::new().restore_state(b"[1]").is_err());
        let mut enricher = Enricher::new();
        enricher.restore_state(br#"{"EUR":2}"#).unwrap();
        assert_eq!(enricher.save_state().unwrap(), br#"{"EUR":2}"#);
    }

    #[test]
    fn valid_payments_are_enriched_with_exact_major_amounts_and_sequences() {
        let (outputs, letters) = run(&[
            r#"{"id":"p1","amount":1250,"currency":"EUR"}"#,
            r#"{"id":"p2","amount":7,"currency":"KWD"}"#,
            r#"{"id":"p3","amount":500,"currency":"JPY"}"#,
            r#"{"id":"p4","amount":5,"currency":"EUR"}"#,
        ]);
        assert!(letters.is_empty());
        let majors: Vec<_> = outputs
            .iter()
            .map(|o| (o["amount_major"].as_str().unwrap().to_string(), o["sequence"].as_u64().unwrap()))
            .collect();
        assert_eq!(majors, [("12.50".into(), 1), ("0.007".into(), 1), ("500".into(), 1), ("0.05".into(), 2)]);
        assert_eq!(outputs[3]["source_index"], 3);
    }

    #[test]
    fn invalid_payments_are_dead_lettered_with_reason_schema_naming_the_field() {
        let (outputs, letters) = run(&[
            r#"{"id":"p1","currency":"EUR"}"#,
            r#"{"id":"p2","amount":-3,"currency":"EUR"}"#,
            r#"{"id":"p3","amount":3,"currency":"XXX"}"#,
            r#"{"id":"p4","amount":3,"currency":"EUR","note":"x"}"#,
            r#"[1,2]"#,
            r#"{"id":"p5","amount":3,"currency":"EUR"}"#,
            "{broken",
        ]);
        assert_eq!(outputs.len(), 1, "the valid payment among them is enriched");
        let got: Vec<_> = letters.iter().map(|l| (l.input.index, l.reason, l.message.as_str())).collect();
        assert_eq!(
            got[..5],
            [
                (0, Reason::Schema, "field `amount` missing"),
                (1, Reason::Schema, "field `amount` must be a non-negative integer (minor units)"),
                (2, Reason::Schema, "field `currency` is `XXX`, not a known ISO 4217 code"),
                (3, Reason::Schema, "field `note` is not part of a payment (id, amount, currency)"),
                (4, Reason::Schema, "the payment is not a JSON object"),
            ]
        );
        assert_eq!((got[5].0, got[5].1), (6, Reason::Decode));
        let sentence = letters[0].describe();
        assert!(
            sentence.contains("enricher failed on event 0 of `inbound` because it failed schema validation"),
            "{sentence}"
        );
        assert!(sentence.ends_with("field `amount` missing"), "{sentence}");
    }
}
