//! Random session lifecycles — garbage and valid packets in random splits,
//! time steps, allow/deny answers in any order, closes, takeover, shutdown,
//! deliveries — checked against the session's invariants by the same
//! harness the `session` fuzz target runs (see `testament::fuzzing::session`).

use proptest::collection::vec;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn session_invariants_hold(program in vec(any::<u8>(), 0..400)) {
        testament::fuzzing::session(&program);
    }

    /// Programs biased towards valid packets and answers, which reach the
    /// connected state far more often than uniform bytes.
    #[test]
    fn session_invariants_hold_on_mostly_valid_traffic(
        steps in vec((prop_oneof![Just(1u8), Just(3), Just(7), Just(2), Just(4), Just(5), Just(6)], any::<u8>(), any::<u8>(), any::<u8>()), 0..60),
        v5 in any::<bool>(),
    ) {
        let mut program = vec![u8::from(v5)];
        // Start with a CONNECT and its answers.
        program.extend([1, 0, 0, 0, 3, 1, 3, 1, 3, 1]);
        for (op, a, b, c) in steps {
            program.extend([op, a, b, c]);
        }
        testament::fuzzing::session(&program);
    }
}

#[test]
fn the_biased_programs_reach_every_part_of_a_session() {
    use testament::session::Action;
    // A fixed program: connect, answer, publish at each QoS, answer, pubrel,
    // subscribe, answer, deliver, time passes, disconnect with will.
    let program = [
        1u8, 1, 0, 0, 0, 3, 1, 3, 1, 3, 1, 1, 1, 1, 0, 3, 1, 1, 2, 2, 0, 3, 1, 1, 3, 3, 0, 3, 1, 1,
        8, 3, 0, 1, 4, 1, 0, 3, 1, 6, 1, 2, 20, 1, 7, 0, 0,
    ];
    let actions = testament::fuzzing::run_session(&program);
    let has = |f: fn(&Action) -> bool| actions.iter().any(f);
    assert!(has(|a| matches!(a, Action::Open { .. })), "{actions:?}");
    assert!(has(|a| matches!(a, Action::Publish(_))), "{actions:?}");
    assert!(
        has(|a| matches!(a, Action::Subscribe { .. })),
        "{actions:?}"
    );
    assert!(has(|a| matches!(a, Action::DeliverWill(_))), "{actions:?}");
}
