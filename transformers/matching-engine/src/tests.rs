//! Scenario tests through [`Transform::apply`], and properties over random order streams.

use std::collections::BTreeMap;

use competing_transformers::codec::NO_SCHEMAS;
use competing_transformers::dead_letter::{DeadLetter, Reason};
use competing_transformers::transform::{Input, Outputs, Transform, TransformError};
use competing_transformers::{Digest, EventSourceKey};
use proptest::prelude::*;

use super::*;

/// The input the framework would hand over for the `index`th event of `key`.
fn input<'a>(key: &'a EventSourceKey, index: u64, payload: &'a [u8]) -> Input<'a> {
    let content_type = "application/json";
    Input {
        key,
        index,
        offset: index,
        effective_time_ms: 0,
        content_type,
        payload,
        digest: Digest([0; 32]),
        schemas: &NO_SCHEMAS,
    }
}

/// Feeds one raw payload to `apply` and returns the decoded reports.
fn apply_raw(engine: &mut MatchingEngine, payload: &[u8]) -> Result<Vec<Report>, TransformError> {
    let key = EventSourceKey::new("orders").unwrap();
    let mut out = Outputs::default();
    engine.apply(&input(&key, 0, payload), &mut out)?;
    Ok(out.events().iter().map(|event| serde_json::from_slice(&event.payload).unwrap()).collect())
}

fn apply(engine: &mut MatchingEngine, json: serde_json::Value) -> Vec<Report> {
    apply_raw(engine, json.to_string().as_bytes()).expect("a valid command")
}

fn limit(order_id: &str, side: &str, price: u64, quantity: u64) -> serde_json::Value {
    let account = format!("acct-{order_id}");
    serde_json::json!({"type": "limit", "order_id": order_id, "account": account, "side": side, "price": price, "quantity": quantity})
}

fn market(order_id: &str, side: &str, quantity: u64) -> serde_json::Value {
    serde_json::json!({"type": "market", "order_id": order_id, "account": format!("acct-{order_id}"), "side": side, "quantity": quantity})
}

fn cancel(order_id: &str) -> serde_json::Value {
    serde_json::json!({"type": "cancel", "order_id": order_id})
}

/// The trades among the reports, as (maker, price, quantity).
fn trades(reports: &[Report]) -> Vec<(String, u64, u64)> {
    reports
        .iter()
        .filter_map(|report| match report {
            Report::Trade { maker_order_id, price, quantity, .. } => Some((maker_order_id.clone(), *price, *quantity)),
            _ => None,
        })
        .collect()
}

fn trade(maker: &str, price: u64, quantity: u64) -> (String, u64, u64) {
    (maker.to_string(), price, quantity)
}

#[test]
fn crossing_limit_orders_trade_at_the_makers_price() {
    let mut engine = MatchingEngine::new();
    apply(&mut engine, limit("s1", "sell", 100, 5));
    let reports = apply(&mut engine, limit("b1", "buy", 103, 5));
    assert_eq!(
        reports[0],
        Report::Accepted {
            order_id: "b1".into(),
            account: "acct-b1".into(),
            side: Side::Buy,
            price: Some(103),
            quantity: 5
        }
    );
    assert_eq!(
        reports[1],
        Report::Trade {
            trade_id: 1,
            taker_order_id: "b1".into(),
            maker_order_id: "s1".into(),
            taker_account: "acct-b1".into(),
            maker_account: "acct-s1".into(),
            price: 100,
            quantity: 5,
            taker_side: Side::Buy,
        }
    );
    assert_eq!(reports[2..], [Report::Filled { order_id: "s1".into() }, Report::Filled { order_id: "b1".into() }]);
    assert!(engine.book().is_empty());
}

#[test]
fn orders_that_do_not_cross_rest() {
    let mut engine = MatchingEngine::new();
    apply(&mut engine, limit("s1", "sell", 101, 5));
    let reports = apply(&mut engine, limit("b1", "buy", 100, 4));
    assert_eq!(reports[1], Report::Rested { order_id: "b1".into(), side: Side::Buy, price: 100, remaining: 4 });
    assert_eq!((engine.book().best_bid(), engine.book().best_ask()), (Some(100), Some(101)));
    assert_eq!(engine.book().depth(Side::Buy), [Level { price: 100, quantity: 4 }]);
}

#[test]
fn a_taker_sweeps_makers_best_price_first_then_rests_the_rest() {
    let mut engine = MatchingEngine::new();
    apply(&mut engine, limit("s1", "sell", 102, 3));
    apply(&mut engine, limit("s2", "sell", 100, 2));
    apply(&mut engine, limit("s3", "sell", 101, 4));
    apply(&mut engine, limit("s4", "sell", 105, 1));
    let reports = apply(&mut engine, limit("b1", "buy", 102, 10));
    assert_eq!(trades(&reports), [trade("s2", 100, 2), trade("s3", 101, 4), trade("s1", 102, 3)]);
    assert_eq!(
        reports.last(),
        Some(&Report::Rested { order_id: "b1".into(), side: Side::Buy, price: 102, remaining: 1 })
    );
    assert_eq!((engine.book().best_bid(), engine.book().best_ask()), (Some(102), Some(105)));
}

#[test]
fn a_partially_filled_maker_keeps_its_place() {
    let mut engine = MatchingEngine::new();
    apply(&mut engine, limit("b1", "buy", 100, 5));
    let reports = apply(&mut engine, limit("s1", "sell", 99, 2));
    assert_eq!(trades(&reports), [trade("b1", 100, 2)]);
    assert_eq!(engine.book().order("b1").map(|order| order.remaining), Some(3));
}

#[test]
fn orders_at_one_price_fill_first_come_first_served() {
    let mut engine = MatchingEngine::new();
    for id in ["b1", "b2", "b3"] {
        apply(&mut engine, limit(id, "buy", 100, 2));
    }
    let reports = apply(&mut engine, limit("s1", "sell", 100, 3));
    assert_eq!(trades(&reports), [trade("b1", 100, 2), trade("b2", 100, 1)]);
    assert_eq!(engine.book().depth(Side::Buy), [Level { price: 100, quantity: 3 }]);
}

#[test]
fn a_market_order_sweeps_the_book_and_cancels_its_remainder() {
    let mut engine = MatchingEngine::new();
    apply(&mut engine, limit("b1", "buy", 99, 2));
    apply(&mut engine, limit("b2", "buy", 100, 1));
    let reports = apply(&mut engine, market("s1", "sell", 5));
    assert_eq!(trades(&reports), [trade("b2", 100, 1), trade("b1", 99, 2)]);
    assert_eq!(
        reports.last(),
        Some(&Report::Cancelled { order_id: "s1".into(), remaining: 2, reason: CancelReason::NoLiquidity })
    );
    assert!(engine.book().is_empty());
    let reports = apply(&mut engine, market("s2", "sell", 1));
    assert_eq!(
        reports.last(),
        Some(&Report::Cancelled { order_id: "s2".into(), remaining: 1, reason: CancelReason::NoLiquidity })
    );
}

#[test]
fn an_order_stops_at_the_fill_limit_and_cancels_its_remainder() {
    let mut engine = MatchingEngine::new();
    for index in 0..=FILLS_PER_ORDER_MAX {
        apply(&mut engine, limit(&format!("s{index}"), "sell", 100, 1));
    }
    let reports = apply(&mut engine, limit("b1", "buy", 100, 1_000));
    assert_eq!(trades(&reports).len(), FILLS_PER_ORDER_MAX);
    assert_eq!(
        reports.last(),
        Some(&Report::Cancelled { order_id: "b1".into(), remaining: 600, reason: CancelReason::FillLimit })
    );
    assert_eq!(engine.book().depth(Side::Sell), [Level { price: 100, quantity: 1 }]);
}

#[test]
fn cancel_removes_a_resting_order_and_rejects_an_unknown_one() {
    let mut engine = MatchingEngine::new();
    apply(&mut engine, limit("b1", "buy", 100, 5));
    assert_eq!(
        apply(&mut engine, cancel("b1")),
        [Report::Cancelled { order_id: "b1".into(), remaining: 5, reason: CancelReason::Requested }]
    );
    assert!(engine.book().is_empty());
    let rejected = [Report::Rejected { order_id: "b1".into(), reason: RejectReason::UnknownOrder }];
    assert_eq!(apply(&mut engine, cancel("b1")), rejected);
}

#[test]
fn business_rule_violations_are_rejected_reports() {
    let mut engine = MatchingEngine::new();
    apply(&mut engine, limit("b1", "buy", 100, 5));
    let rejected = |order_id: &str, reason| vec![Report::Rejected { order_id: order_id.into(), reason }];
    assert_eq!(apply(&mut engine, limit("b1", "sell", 100, 5)), rejected("b1", RejectReason::DuplicateOrderId));
    assert_eq!(apply(&mut engine, limit("b2", "buy", 100, 0)), rejected("b2", RejectReason::ZeroQuantity));
    assert_eq!(apply(&mut engine, market("b3", "buy", 0)), rejected("b3", RejectReason::ZeroQuantity));
    assert_eq!(apply(&mut engine, limit("b4", "buy", 0, 1)), rejected("b4", RejectReason::ZeroPrice));
    assert_eq!(engine.book().len(), 1);
}

#[test]
fn undecodable_payloads_are_decode_errors_and_unaddressable_ids_schema_errors() {
    let mut engine = MatchingEngine::new();
    let decode = |result: Result<Vec<Report>, TransformError>| matches!(result, Err(error) if DeadLetter::reason_of(&error) == Reason::Decode);
    assert!(decode(apply_raw(&mut engine, b"{not json")));
    assert!(decode(apply_raw(&mut engine, br#"{"type":"stop","order_id":"x"}"#)));
    assert!(decode(apply_raw(
        &mut engine,
        br#"{"type":"limit","order_id":"x","account":"a","side":"buy","price":1.5,"quantity":1}"#
    )));
    assert!(decode(apply_raw(
        &mut engine,
        br#"{"type":"market","order_id":"x","account":"a","side":"buy","quantity":-1}"#
    )));
    let long = "x".repeat(ORDER_ID_BYTES_MAX + 1);
    for payload in [limit("", "buy", 100, 1), limit(&long, "buy", 100, 1), cancel("")] {
        assert!(matches!(apply_raw(&mut engine, payload.to_string().as_bytes()), Err(TransformError::Schema(_))));
    }
    assert!(engine.book().is_empty());
}

#[test]
fn transform_identity_follows_the_constructor() {
    let engine = MatchingEngine::default();
    assert_eq!(
        (engine.name(), engine.subscriptions()),
        ("matching-engine", vec![EventSourceKey::new("orders").unwrap()])
    );
    let engine = MatchingEngine::with_names(
        EventSourceKey::new("book-eurusd").unwrap(),
        EventSourceKey::new("orders-eurusd").unwrap(),
    );
    assert_eq!(
        (engine.name(), engine.subscriptions()),
        ("book-eurusd", vec![EventSourceKey::new("orders-eurusd").unwrap()])
    );
}

/// Random commands over few ids and prices, so duplicates, cancels and crosses are common.
fn command() -> impl Strategy<Value = serde_json::Value> {
    let id = (0..40u32).prop_map(|n| format!("o{n}"));
    let side = prop_oneof![Just("buy"), Just("sell")];
    prop_oneof![
        4 => (id.clone(), side.clone(), 95..=105u64, 0..=10u64).prop_map(|(id, side, price, quantity)| limit(&id, side, price, quantity)),
        1 => (id.clone(), side, 0..=15u64).prop_map(|(id, side, quantity)| market(&id, side, quantity)),
        1 => id.prop_map(|id| cancel(&id)),
    ]
}

proptest! {
    #[test]
    fn quantity_is_conserved_and_the_book_never_crosses(commands in prop::collection::vec(command(), 0..120)) {
        let mut engine = MatchingEngine::new();
        // Per accepted order: (submitted, filled, cancelled).
        let mut ledger: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
        for command in commands {
            for report in apply(&mut engine, command) {
                match report {
                    Report::Accepted { order_id, quantity, .. } => { ledger.insert(order_id, (quantity, 0, 0)); }
                    Report::Trade { taker_order_id, maker_order_id, quantity, .. } => {
                        prop_assert!(quantity > 0);
                        ledger.get_mut(&taker_order_id).unwrap().1 += quantity;
                        ledger.get_mut(&maker_order_id).unwrap().1 += quantity;
                    }
                    Report::Cancelled { order_id, remaining, .. } => ledger.get_mut(&order_id).unwrap().2 += remaining,
                    _ => {}
                }
            }
            let book = engine.book();
            if let (Some(bid), Some(ask)) = (book.best_bid(), book.best_ask()) {
                prop_assert!(bid < ask, "crossed book: bid {} ask {}", bid, ask);
            }
            for (order_id, (submitted, filled, cancelled)) in &ledger {
                let resting = book.order(order_id).map_or(0, |order| order.remaining);
                prop_assert_eq!(filled + resting + cancelled, *submitted, "order {}", order_id);
            }
        }
    }

    #[test]
    fn two_engines_fed_the_same_stream_write_the_same_bytes(commands in prop::collection::vec(command(), 0..120)) {
        let key = EventSourceKey::new("orders").unwrap();
        let (mut first, mut second) = (MatchingEngine::new(), MatchingEngine::new());
        for (index, command) in commands.iter().enumerate() {
            let payload = command.to_string().into_bytes();
            let input = input(&key, index as u64, &payload);
            let (mut first_out, mut second_out) = (Outputs::default(), Outputs::default());
            first.apply(&input, &mut first_out).unwrap();
            second.apply(&input, &mut second_out).unwrap();
            prop_assert_eq!(first_out.into_events(), second_out.into_events());
        }
    }

    #[test]
    fn an_engine_restored_from_saved_state_writes_what_one_fed_from_the_start_writes(
        commands in prop::collection::vec(command(), 1..120),
        cut in any::<prop::sample::Index>(),
    ) {
        let payloads: Vec<Vec<u8>> = commands.iter().map(|c| c.to_string().into_bytes()).collect();
        let k = cut.index(payloads.len() + 1);
        let mut first = MatchingEngine::new();
        let whole = feed(&mut first, &payloads, 0);
        let mut before = MatchingEngine::new();
        feed(&mut before, &payloads[..k], 0);
        let saved = before.save_state().expect("the engine saves its state");
        let mut restored = MatchingEngine::new();
        restored.restore_state(&saved).unwrap();
        prop_assert_eq!(restored.save_state(), Some(saved), "the state reads back to the same bytes");
        prop_assert_eq!(&feed(&mut restored, &payloads, k)[..], &whole[k..]);
    }
}

/// Each input's outputs from index `from` on, as written (or why the input failed).
fn feed(engine: &mut MatchingEngine, payloads: &[Vec<u8>], from: usize) -> Vec<Result<Vec<Vec<u8>>, TransformError>> {
    let key = EventSourceKey::new("orders").unwrap();
    (from..payloads.len())
        .map(|index| {
            let mut out = Outputs::default();
            engine
                .apply(&input(&key, index as u64, &payloads[index]), &mut out)
                .map(|()| out.into_events().into_iter().map(|e| e.payload).collect())
        })
        .collect()
}

#[test]
fn a_saved_state_that_breaks_the_books_invariants_is_refused() {
    let mut engine = MatchingEngine::new();
    apply(&mut engine, limit("s1", "sell", 100, 5));
    apply(&mut engine, limit("b1", "buy", 99, 5));
    let saved = String::from_utf8(engine.save_state().unwrap()).unwrap();
    // The bid moved above the ask: a crossed book.
    let crossed = saved
        .replace(r#""price":99"#, r#""price":101"#)
        .replace(r#""99":"#, r#""101":"#)
        .replace(r#"["buy",99]"#, r#"["buy",101]"#);
    assert_ne!(crossed, saved);
    let error = MatchingEngine::new().restore_state(crossed.as_bytes()).unwrap_err();
    assert!(error.contains("crossed"), "{error}");
    let error = MatchingEngine::new().restore_state(b"{}").unwrap_err();
    assert!(error.contains("does not read back"), "{error}");
    assert!(MatchingEngine::new().restore_state(saved.as_bytes()).is_ok());
}
