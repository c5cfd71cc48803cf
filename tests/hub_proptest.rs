//! Random multi-client lifecycles through the hub, checked after every step
//! by the harness the `hub` fuzz target runs (see `testament::fuzzing::hub`).

use proptest::collection::vec;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn hub_invariants_hold(flags in any::<u8>(), steps in vec((0u8..10, any::<u8>(), any::<u8>()), 0..80)) {
        let mut program = vec![flags];
        for (op, a, b) in steps {
            program.extend([op, a, b]);
        }
        testament::fuzzing::hub(&program);
    }

    /// Programs about wills: connections, crashes, goodbyes, time, key
    /// rotation, ACL changes and answers, few publishes.
    #[test]
    fn hub_invariants_hold_for_will_lifecycles(
        flags in any::<u8>(),
        steps in vec((prop_oneof![Just(0u8), Just(3), Just(4), Just(5), Just(6), Just(7), Just(8), Just(8), Just(9)], any::<u8>(), any::<u8>()), 0..60),
    ) {
        let mut program = vec![flags];
        for (op, a, b) in steps {
            program.extend([op, a, b]);
        }
        testament::fuzzing::hub(&program);
    }

    /// A durable hub: restarts — crashes and planned stops — at random
    /// points, each restoring what was committed.
    #[test]
    fn hub_invariants_hold_across_restarts(
        flags in any::<u8>(),
        steps in vec((prop_oneof![Just(0u8), Just(1), Just(2), Just(2), Just(3), Just(4), Just(5), Just(6), Just(6), Just(8), Just(9)], any::<u8>(), any::<u8>()), 0..60),
    ) {
        let mut program = vec![flags | 32];
        for (op, a, b) in steps {
            program.extend([op, a, b]);
        }
        testament::fuzzing::hub(&program);
    }

    /// Programs that end with a shutdown.
    #[test]
    fn hub_invariants_hold_through_shutdown(flags in any::<u8>(), steps in vec((0u8..10, any::<u8>(), any::<u8>()), 0..40)) {
        let mut program = vec![flags];
        for (op, a, b) in steps {
            program.extend([op, a, b]);
        }
        program.extend([255, 0, 0, 5, 40, 0]);
        testament::fuzzing::hub(&program);
    }
}

#[test]
fn the_programs_reach_wills_routing_and_takeover() {
    use testament::auth::{AuditRecord, WillOutcome};
    use testament::broker::Action;
    // c0 (5.0, will delay 5 s, expiry 3600) connects, publishes; c1 (3.1.1)
    // connects and crashes; c0 is taken over by a clean start; time passes.
    let program = [
        0u8, // sync ACL, default policies
        0,
        0b1010_0100,
        1, // connect c0: 5.0, delay 5, expiry 3600, long token
        2,
        0,
        0, // c0 publishes open/1
        0,
        1,
        1, // connect c1: 3.1.1, long token
        3,
        1,
        0, // c1 crashes
        0,
        0b1010_1100,
        1, // c0 again, clean start: takeover
        5,
        40,
        0, // 40 s pass
    ];
    let actions = testament::fuzzing::run_hub(&program);
    let will = |o: fn(&WillOutcome) -> bool| {
        actions
            .iter()
            .any(|a| matches!(a, Action::Audit(AuditRecord::Will { outcome, .. }) if o(outcome)))
    };
    assert!(
        will(|o| matches!(o, WillOutcome::Delivered)),
        "{actions:#?}"
    );
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Audit(AuditRecord::Takeover { .. })))
    );
    assert!(actions.iter().any(|a| matches!(a, Action::Close { .. })));
}

#[test]
fn the_restart_programs_reach_wills_triggered_by_a_crash_and_paused_by_a_stop() {
    use testament::auth::{AuditRecord, WillOutcome, WillTrigger};
    use testament::broker::Action;
    let will = |actions: &[Action], f: &dyn Fn(&WillOutcome, Option<WillTrigger>) -> bool| {
        actions.iter().any(|a| {
            matches!(a, Action::Audit(AuditRecord::Will { outcome, trigger, .. }) if f(outcome, *trigger))
        })
    };
    // Durable, sync ACL, wills resume after a stop. c0 (5.0, will delay 5
    // s, expiry 3600) connects; the broker crashes (op 6, b = 2) and is
    // back 10 s later; 40 s pass.
    let crash = [32u8 | 64, 0, 0b1010_0101, 1, 6, 10, 2, 5, 40, 0];
    let actions = testament::fuzzing::run_hub(&crash);
    assert!(will(&actions, &|o, t| matches!(o, WillOutcome::Triggered)
        && t == Some(WillTrigger::ServerCrashed)));
    assert!(will(&actions, &|o, _| matches!(o, WillOutcome::Delivered)));
    // The same with a planned stop (b = 3): paused, then delivered.
    let stop = [32u8 | 64, 0, 0b1010_0101, 1, 6, 10, 3, 5, 40, 0];
    let actions = testament::fuzzing::run_hub(&stop);
    assert!(will(&actions, &|o, _| matches!(
        o,
        WillOutcome::Paused { .. }
    )));
    assert!(will(&actions, &|o, _| matches!(o, WillOutcome::Delivered)));
}

#[test]
fn the_restart_programs_reach_a_full_store_refusing_qos_1() {
    use testament::auth::{AuditRecord, DecidedBy, Operation};
    use testament::broker::Action;
    // Durable, sync ACL. c0 (5.0) connects; the store fills up (op 6, b =
    // 4); c0 publishes QoS 1 on open/…; room again; the same once more.
    let program = [
        32u8 | 64,
        0,
        0b1010_0101,
        1,
        6,
        0,
        4,
        2,
        10,
        0,
        6,
        0,
        4,
        2,
        10,
        0,
    ];
    let actions = testament::fuzzing::run_hub(&program);
    let publishes: Vec<&DecidedBy> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Audit(AuditRecord::Authorization {
                query, decision, ..
            }) if query.op == Operation::Publish => Some(&decision.decided_by),
            _ => None,
        })
        .collect();
    assert!(
        matches!(publishes[..], [DecidedBy::StorageUnavailable, b] if *b != DecidedBy::StorageUnavailable),
        "{publishes:?}"
    );
}

/// Found by the will lifecycles (CI, 2026-12-05): c1 connects twice, the
/// second connection takes the first over (its will waits 30 s), then the
/// broker crashes and restarts at once. Two wills of one session come back
/// — the taken-over one, triggered before the crash, and the connected
/// one's, triggered by the restart — in the store's order: the newer was
/// sent at once, before its delay. Now the older goes, as it would live.
#[test]
fn two_restored_wills_of_one_session_send_the_older() {
    testament::fuzzing::hub(&[
        187, 7, 0, 0, 7, 0, 0, 0, 111, 0, 0, 191, 0, 8, 187, 1, 8, 0, 1, 6, 0, 250,
    ]);
}
