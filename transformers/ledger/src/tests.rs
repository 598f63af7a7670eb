//! Scenario tests through the in-memory log and a real replica, and the conservation property.

use competing_transformers::dead_letter::{DeadLetter, Reason};
use competing_transformers::replica::run_to_end;
use competing_transformers::{Event, MemoryLog};
use proptest::prelude::*;
use serde_json::json;

use super::*;

fn key(name: &str) -> EventSourceKey {
    EventSourceKey::new(name).unwrap()
}

/// Publishes `commands` on `transfers`, runs a replica to the end, returns the ledger entries.
fn run(commands: &[serde_json::Value]) -> (Vec<Entry>, MemoryLog) {
    let log = MemoryLog::new();
    for (i, command) in commands.iter().enumerate() {
        log.publish(&key(TRANSFERS_KEY), vec![Event::json(key(TRANSFERS_KEY), i as i64, command)]);
    }
    run_to_end(&log, Ledger::new());
    let entries = log.canonical(&key(LEDGER_KEY)).iter().map(|e| serde_json::from_slice(&e.payload).unwrap()).collect();
    (entries, log)
}

fn open(account: &str, initial: u64) -> serde_json::Value {
    json!({"type": "open", "account": account, "initial": initial})
}

fn transfer(id: &str, from: &str, to: &str, amount: u64) -> serde_json::Value {
    json!({"type": "transfer", "id": id, "from": from, "to": to, "amount": amount})
}

#[test]
fn a_transfer_moves_money_and_reports_both_balances() {
    let (entries, _) = run(&[open("a", 100), open("b", 5), transfer("t1", "a", "b", 30)]);
    assert_eq!(
        entries[2],
        Entry::Transferred {
            id: "t1".into(),
            from: "a".into(),
            to: "b".into(),
            amount: 30,
            from_balance: 70,
            to_balance: 35
        }
    );
    let text = serde_json::to_string(&entries[2]).unwrap();
    assert_eq!(
        text,
        r#"{"type":"transferred","id":"t1","from":"a","to":"b","amount":30,"from_balance":70,"to_balance":35}"#
    );
}

#[test]
fn an_overdraft_is_rejected_as_an_event_and_changes_nothing() {
    let (entries, log) =
        run(&[open("a", 10), open("b", 0), transfer("t1", "a", "b", 11), transfer("t2", "a", "b", 10)]);
    assert_eq!(
        serde_json::to_string(&entries[2]).unwrap(),
        r#"{"type":"rejected","id":"t1","reason":"insufficient_funds"}"#
    );
    assert!(matches!(&entries[3], Entry::Transferred { from_balance: 0, to_balance: 10, .. }));
    assert!(log.canonical(&key(LEDGER_KEY).dead_letters()).is_empty(), "business rejections are never dead letters");
}

#[test]
fn business_rules_answer_with_their_reasons() {
    let (entries, _) = run(&[
        open("a", 10),
        open("a", 99),
        transfer("t1", "a", "nobody", 1),
        transfer("t2", "a", "a", 1),
        transfer("t3", "a", "a", 1),
        transfer("t3", "a", "a", 1),
        open("huge", TOTAL_MAX),
    ]);
    let reasons: Vec<_> = entries[1..]
        .iter()
        .map(|e| match e {
            Entry::Rejected { reason, .. } => *reason,
            other => panic!("expected a rejection, got {other:?}"),
        })
        .collect();
    use RejectReason::*;
    assert_eq!(reasons, [AccountExists, UnknownAccount, SameAccount, SameAccount, DuplicateId, LimitExceeded]);
    assert_eq!(
        serde_json::to_string(&entries[1]).unwrap(),
        r#"{"type":"rejected","account":"a","reason":"account_exists"}"#
    );
}

#[test]
fn malformed_commands_are_dead_lettered_with_a_precise_reason_and_the_ledger_goes_on() {
    let log = MemoryLog::new();
    let transfers = key(TRANSFERS_KEY);
    let payloads: [&[u8]; 5] = [
        br#"{"type":"open","account":"a","initial":10}"#,
        b"{not json",
        br#"{"type":"transfer","id":"t1","from":"a","to":"a"}"#,
        br#"{"type":"transfer","id":"t2","from":"a","to":"b","amount":0}"#,
        br#"{"type":"open","account":"b","initial":1}"#,
    ];
    for (i, payload) in payloads.iter().enumerate() {
        log.publish(
            &transfers,
            vec![Event::new(transfers.clone(), None, None, i as i64, "application/json", payload.to_vec())],
        );
    }
    run_to_end(&log, Ledger::new());
    let letters: Vec<DeadLetter> = log
        .canonical(&key(LEDGER_KEY).dead_letters())
        .iter()
        .map(|e| serde_json::from_slice(&e.payload).unwrap())
        .collect();
    let summary: Vec<_> = letters.iter().map(|l| (l.input.index, l.reason, l.message.clone())).collect();
    assert_eq!(summary.len(), 3);
    assert_eq!((summary[0].0, summary[0].1), (1, Reason::Decode));
    assert_eq!((summary[1].0, summary[1].1), (2, Reason::Schema));
    assert_eq!(summary[1].2, crate::COMMAND_SHAPE, "serde's own text stays out of the digested payload");
    assert_eq!((summary[2].0, summary[2].1), (3, Reason::Schema));
    assert!(summary[2].2.contains("field `amount` must be at least 1"), "{}", summary[2].2);
    assert_eq!(log.canonical(&key(LEDGER_KEY)).len(), 2, "the valid commands around the bad ones are applied");
}

fn command() -> impl Strategy<Value = serde_json::Value> {
    let account = (0u8..6).prop_map(|a| format!("acct{a}"));
    prop_oneof![
        1 => (account.clone(), 0u64..1_000).prop_map(|(a, initial)| open(&a, initial)),
        5 => (0u32..60, account.clone(), account, 0u64..400)
            .prop_map(|(id, from, to, amount)| transfer(&format!("t{id}"), &from, &to, amount)),
    ]
}

proptest! {
    /// Whatever the commands, the balances add up to the money opened, no balance is
    /// negative (u64, and no overdraft is accepted), and every transferred entry's balances
    /// are the ledger's running balances.
    #[test]
    fn money_is_conserved(commands in proptest::collection::vec(command(), 0..120)) {
        let (entries, _) = run(&commands);
        let mut balances: BTreeMap<String, u64> = BTreeMap::new();
        let mut opened = 0u64;
        for entry in &entries {
            match entry {
                Entry::Opened { account, balance } => {
                    opened += balance;
                    prop_assert!(balances.insert(account.clone(), *balance).is_none());
                }
                Entry::Transferred { from, to, amount, from_balance, to_balance, .. } => {
                    let paying = balances[from];
                    prop_assert!(paying >= *amount, "an overdraft was accepted");
                    prop_assert_eq!(paying - amount, *from_balance);
                    prop_assert_eq!(balances[to] + amount, *to_balance);
                    balances.insert(from.clone(), *from_balance);
                    balances.insert(to.clone(), *to_balance);
                }
                Entry::Rejected { .. } => {}
            }
            prop_assert_eq!(balances.values().sum::<u64>(), opened);
        }
        // And a ledger fed the same commands directly agrees with the replica's outputs.
        let mut ledger = Ledger::new();
        for command in &commands {
            if let Ok(command) = serde_json::from_value::<Command>(command.clone()) {
                let _ = ledger.execute(command);
            }
        }
        prop_assert_eq!(ledger.balances(), &balances);
        prop_assert_eq!(ledger.total(), opened);
    }

    /// A ledger restored from the state saved after the first `k` commands, fed the rest,
    /// writes what one fed every command from the start writes, byte for byte.
    #[test]
    fn a_restored_ledger_writes_what_one_fed_from_the_start_writes(
        commands in proptest::collection::vec(command(), 1..120),
        cut in any::<proptest::sample::Index>(),
    ) {
        let payloads: Vec<Vec<u8>> = commands.iter().map(|c| c.to_string().into_bytes()).collect();
        let k = cut.index(payloads.len() + 1);
        let whole = feed(&mut Ledger::new(), &payloads, 0);
        let mut before = Ledger::new();
        feed(&mut before, &payloads[..k], 0);
        let saved = before.save_state().expect("the ledger saves its state");
        let mut restored = Ledger::new();
        restored.restore_state(&saved).unwrap();
        prop_assert_eq!(restored.total(), before.total());
        prop_assert_eq!(restored.save_state(), Some(saved));
        prop_assert_eq!(&feed(&mut restored, &payloads, k)[..], &whole[k..]);
    }
}

/// Each command's output from index `from` on, as written (or why the command failed).
fn feed(ledger: &mut Ledger, payloads: &[Vec<u8>], from: usize) -> Vec<Result<Vec<Vec<u8>>, TransformError>> {
    let transfers = key(TRANSFERS_KEY);
    (from..payloads.len())
        .map(|index| {
            let input = Input {
                key: &transfers,
                index: index as u64,
                offset: index as u64,
                effective_time_ms: 0,
                content_type: "application/json",
                payload: &payloads[index],
                digest: competing_transformers::Digest([0; 32]),
                schemas: &competing_transformers::codec::NO_SCHEMAS,
            };
            let mut out = Outputs::default();
            ledger.apply(&input, &mut out).map(|()| out.into_events().into_iter().map(|e| e.payload).collect())
        })
        .collect()
}

#[test]
fn a_saved_state_holding_more_money_than_the_ledger_may_is_refused() {
    let too_much = format!(r#"{{"balances":{{"a":{TOTAL_MAX},"b":1}},"transfer_ids":[]}}"#);
    let error = Ledger::new().restore_state(too_much.as_bytes()).unwrap_err();
    assert!(error.contains("more than"), "{error}");
    let error = Ledger::new().restore_state(br#"{"balances":{}}"#).unwrap_err();
    assert!(error.contains("does not read back"), "{error}");
}
