//! The engine's outputs through the in-memory log do not depend on how inputs were batched
//! into records.

use competing_transformers::replica::run_to_end;
use competing_transformers::{Event, EventSourceKey, MemoryLog};
use matching_engine::MatchingEngine;
use proptest::prelude::*;

fn key(name: &str) -> EventSourceKey {
    EventSourceKey::new(name).unwrap()
}

fn order() -> impl Strategy<Value = serde_json::Value> {
    let id = 0u32..40;
    let side = prop_oneof![Just("buy"), Just("sell")];
    prop_oneof![
        6 => (id.clone(), side.clone(), 95u64..105, 1u64..6).prop_map(|(id, side, price, quantity)| serde_json::json!(
            {"type": "limit", "order_id": format!("o{id}"), "account": "a", "side": side, "price": price, "quantity": quantity})),
        2 => (id.clone(), side, 1u64..8).prop_map(|(id, side, quantity)| serde_json::json!(
            {"type": "market", "order_id": format!("m{id}"), "account": "b", "side": side, "quantity": quantity})),
        1 => id.prop_map(|id| serde_json::json!({"type": "cancel", "order_id": format!("o{id}")})),
    ]
}

fn outputs(batches: &[Vec<serde_json::Value>]) -> Vec<Vec<u8>> {
    let log = MemoryLog::new();
    let mut time = 0;
    for batch in batches {
        let events = batch
            .iter()
            .map(|value| {
                time += 1;
                Event::json(key("orders"), time, value)
            })
            .collect();
        log.publish(&key("orders"), events);
    }
    run_to_end(&log, MatchingEngine::new());
    log.canonical(&key("matching-engine")).into_iter().map(|e| e.payload).collect()
}

proptest! {
    #[test]
    fn outputs_do_not_depend_on_input_batching(orders in proptest::collection::vec(order(), 1..60), cuts in proptest::collection::vec(1usize..6, 1..30)) {
        let one_per_record: Vec<_> = orders.iter().map(|o| vec![o.clone()]).collect();
        let mut batched = Vec::new();
        let mut rest = orders.as_slice();
        for cut in cuts.iter().cycle() {
            if rest.is_empty() { break; }
            let (head, tail) = rest.split_at((*cut).min(rest.len()));
            batched.push(head.to_vec());
            rest = tail;
        }
        prop_assert_eq!(outputs(&batched), outputs(&one_per_record));
    }
}
