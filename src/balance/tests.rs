//! The balancer's choices, on providers whose numbers the tests set.
use super::*;
use crate::capability::{Capability, Kind, Source};
use crate::routing::Trust;

fn provider(node: &str) -> Provider {
    Provider {
        entry: Arc::new(Entry {
            capability: Arc::new(Capability::new(
                "farm/coder".parse().expect("id"),
                Kind::chat(),
                Source::Config,
                "b",
                "m",
            )),
            node: node.into(),
            local: false,
            available: true,
            vector: vec![1.0],
            prototypes: Vec::new(),
            reference: None,
            trust: Trust::Stranger,
        }),
        backend: None,
        score: None,
    }
}

fn balancer(strategy: Strategy) -> Balancer {
    Balancer::new(
        BalanceConfig {
            strategy,
            ..Default::default()
        },
        Arc::default(),
    )
}

/// Makes `node`'s time to first byte `ms` (one answer).
fn answered(b: &Balancer, p: &Provider, ms: u64) {
    let lease = b.lease(p);
    lease
        .stats
        .lock()
        .answered(Duration::from_millis(ms), Instant::now());
}

fn first(b: &Balancer, group: &[Provider], session: Option<&str>) -> (String, &'static str) {
    let turn = b.turn.fetch_add(1, Ordering::Relaxed);
    let (order, reason) = b.pick(b.rate(group.to_vec(), Instant::now()), session, turn);
    assert_eq!(
        order.len(),
        group.len(),
        "every provider stays in the order"
    );
    (order[0].entry.node.clone(), reason)
}

fn counts(b: &Balancer, group: &[Provider], n: usize) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for _ in 0..n {
        *out.entry(first(b, group, None).0).or_default() += 1;
    }
    out
}

#[test]
fn idle_the_fastest_gets_every_request_and_power_of_two_a_share_only() {
    let group = [provider("fast"), provider("slow"), provider("slower")];
    let b = balancer(Strategy::LeastCost);
    for (p, ms) in group.iter().zip([5, 20, 50]) {
        answered(&b, p, ms);
    }
    assert_eq!(counts(&b, &group, 100)["fast"], 100);
    // The cheaper of a random pair: fast whenever drawn (2/3), slow against
    // slower (1/3), slower never.
    let b = balancer(Strategy::PowerOfTwo);
    for (p, ms) in group.iter().zip([5, 20, 50]) {
        answered(&b, p, ms);
    }
    let seen = counts(&b, &group, 600);
    assert!(seen["fast"] > 300, "{seen:?}");
    assert!(seen["slow"] > 100, "{seen:?}");
    assert!(!seen.contains_key("slower"), "{seen:?}");
}

#[test]
fn providers_within_a_fifth_of_the_cheapest_share() {
    let b = balancer(Strategy::LeastCost);
    let group = [provider("a"), provider("b"), provider("c")];
    for (p, ms) in group.iter().zip([10, 11, 13]) {
        answered(&b, p, ms);
    }
    let seen = counts(&b, &group, 300);
    assert!(seen["a"] > 50 && seen["b"] > 50, "{seen:?}");
    assert!(!seen.contains_key("c"), "{seen:?}");
}

#[test]
fn requests_in_flight_move_new_ones_elsewhere() {
    let b = balancer(Strategy::LeastCost);
    let group = [provider("a"), provider("b")];
    answered(&b, &group[0], 10);
    answered(&b, &group[1], 10);
    let held: Vec<Lease> = (0..3).map(|_| b.lease(&group[0])).collect();
    // a: 10 x 4, b: 10 x 1.
    for _ in 0..50 {
        assert_eq!(first(&b, &group, None).0, "b");
    }
    drop(held);
    let choice = b.explain(&group, None);
    assert!(choice.members.iter().all(|m| m.in_flight == 0));
}

#[test]
fn an_unmeasured_provider_is_taken_for_as_fast_as_the_fastest() {
    let b = balancer(Strategy::LeastCost);
    let group = [provider("known"), provider("new")];
    answered(&b, &group[0], 40);
    let choice = b.explain(&group, None);
    assert_eq!(choice.members[0].cost, choice.members[1].cost);
    assert!(counts(&b, &group, 200).contains_key("new"));
}

#[test]
fn a_failed_provider_is_backed_off_then_probed_once_then_back() {
    let b = balancer(Strategy::LeastCost);
    let group = [provider("a"), provider("b")];
    answered(&b, &group[0], 5);
    answered(&b, &group[1], 50);
    b.lease(&group[0]).failed();
    for _ in 0..50 {
        assert_eq!(first(&b, &group, None).0, "b", "a is backed off");
    }
    let order = b.order(group.to_vec(), None);
    assert_eq!(order[1].entry.node, "a", "still there to fail over to");
    let choice = b.explain(&group, None);
    let left = choice.members[0].backed_off_ms.expect("backed off");
    assert!(left > 500 && left <= 1000, "{left}");

    // Its time is up: the next request probes it; while it runs, nobody else
    // does; its answer ends the backoff.
    let stats = b.stats_of(&group[0].key()).expect("stats");
    stats.lock().backoff_until = Some(Instant::now());
    assert_eq!(first(&b, &group, None), ("a".into(), "probe"));
    let probe = b.lease(&group[0]);
    assert_eq!(first(&b, &group, None).0, "b");
    probe.answered();
    drop(probe);
    assert_eq!(first(&b, &group, None).1, "cost");
    assert!(stats.lock().backoff_until.is_none());
}

#[test]
fn backoff_doubles_to_thirty_seconds() {
    let b = balancer(Strategy::LeastCost);
    let p = provider("a");
    let mut seen = Vec::new();
    for _ in 0..8 {
        let lease = b.lease(&p);
        lease.failed();
        let until = lease.stats.lock().backoff_until.expect("backed off");
        seen.push((until - Instant::now()).as_secs_f64().round() as u64);
    }
    assert_eq!(seen, [1, 2, 4, 8, 16, 30, 30, 30]);
}

#[test]
fn a_probe_given_up_without_an_answer_frees_the_next_probe() {
    let b = balancer(Strategy::LeastCost);
    let group = [provider("a"), provider("b")];
    b.lease(&group[0]).failed();
    let stats = b.stats_of(&group[0].key()).expect("stats");
    stats.lock().backoff_until = Some(Instant::now());
    drop(b.lease(&group[0]));
    assert_eq!(first(&b, &group, None), ("a".into(), "probe"));
}

#[test]
fn every_provider_backed_off_the_one_free_soonest_goes_first() {
    let b = balancer(Strategy::LeastCost);
    let group = [provider("a"), provider("b")];
    for _ in 0..3 {
        b.lease(&group[0]).failed();
    }
    b.lease(&group[1]).failed();
    assert_eq!(first(&b, &group, None), ("b".into(), "backed_off"));
}

#[test]
fn a_session_stays_on_its_provider_while_it_is_healthy() {
    let b = balancer(Strategy::LeastCost);
    let group = [provider("a"), provider("b"), provider("c")];
    for (p, ms) in group.iter().zip([5, 20, 50]) {
        answered(&b, p, ms);
    }
    let home = |key: &str| first(&b, &group, Some(key));
    let sessions: Vec<String> = (0..30).map(|i| format!("user-{i}")).collect();
    let homes: Vec<String> = sessions.iter().map(|s| home(s).0).collect();
    for (s, h) in sessions.iter().zip(&homes) {
        for _ in 0..5 {
            assert_eq!(home(s), (h.clone(), "session"));
        }
    }
    // Sessions are spread, whatever the load.
    let distinct: std::collections::HashSet<&String> = homes.iter().collect();
    assert_eq!(distinct.len(), 3, "{homes:?}");

    // One provider fails: its sessions move, the others stay.
    let gone = homes[0].clone();
    let at = group
        .iter()
        .position(|p| p.entry.node == gone)
        .expect("member");
    b.lease(&group[at]).failed();
    for (s, h) in sessions.iter().zip(&homes) {
        let now = home(s).0;
        if *h == gone {
            assert_ne!(now, gone);
        } else {
            assert_eq!(now, *h);
        }
    }
}

#[test]
fn round_robin_takes_turns_and_first_keeps_the_order() {
    let b = balancer(Strategy::RoundRobin);
    let group = [provider("a"), provider("b"), provider("c")];
    let turns: Vec<String> = (0..6).map(|_| first(&b, &group, None).0).collect();
    assert_eq!(turns, ["a", "b", "c", "a", "b", "c"]);

    let b = balancer(Strategy::First);
    answered(&b, &group[1], 1);
    answered(&b, &group[0], 500);
    for _ in 0..10 {
        assert_eq!(first(&b, &group, None), ("a".into(), "first"));
    }
    b.lease(&group[0]).failed();
    assert_eq!(first(&b, &group, None).0, "b");
}

#[test]
fn peak_ewma_takes_a_slow_answer_at_once_and_forgets_it_gradually() {
    let now = Instant::now();
    let mut s = Stats::new(now);
    s.answered(Duration::from_millis(10), now);
    s.answered(Duration::from_millis(100), now);
    assert_eq!(s.ttfb_ms, Some(100.0));
    s.answered(Duration::from_millis(10), now + TTFB_DECAY);
    let after = s.ttfb_ms.expect("measured");
    // One decay time later, a fast answer brings it about 63% of the way.
    assert!(
        (after - (10.0 + 90.0 / std::f64::consts::E)).abs() < 0.5,
        "{after}"
    );
}

#[test]
fn errors_raise_the_cost() {
    let now = Instant::now();
    let mut s = Stats::new(now);
    s.answered(Duration::from_millis(10), now);
    let clean = s.cost(1.0, 0.0);
    s.failed(now, now);
    s.answered(Duration::from_millis(10), now);
    assert!(s.cost(1.0, 0.0) > clean);
}

#[test]
fn requests_under_way_when_a_provider_fails_back_it_off_once() {
    let b = balancer(Strategy::LeastCost);
    let p = provider("a");
    let under_way: Vec<Lease> = (0..20).map(|_| b.lease(&p)).collect();
    for lease in &under_way {
        lease.failed();
    }
    let stats = b.stats_of(&p.key()).expect("stats");
    let left = stats.lock().backoff_until.expect("backed off") - Instant::now();
    assert!(left <= BACKOFF_FIRST, "{left:?}");
    // A request begun after that failure (the probe) failing doubles it.
    stats.lock().backoff_until = Some(Instant::now());
    b.lease(&p).failed();
    let left = stats.lock().backoff_until.expect("backed off") - Instant::now();
    assert!(left > BACKOFF_FIRST, "{left:?}");
}

#[test]
fn only_the_probe_ending_frees_the_next_probe() {
    let b = balancer(Strategy::LeastCost);
    let group = [provider("a"), provider("b")];
    let older = b.lease(&group[0]);
    b.lease(&group[0]).failed();
    let stats = b.stats_of(&group[0].key()).expect("stats");
    stats.lock().backoff_until = Some(Instant::now());
    let probe = b.lease(&group[0]);
    // A request begun before the failure ends: the probe is still under way.
    drop(older);
    assert_eq!(first(&b, &group, None).0, "b");
    drop(probe);
    assert_eq!(first(&b, &group, None), ("a".into(), "probe"));
}

#[test]
fn explaining_the_choice_does_not_move_round_robin_on() {
    let b = balancer(Strategy::RoundRobin);
    let group = [provider("a"), provider("b"), provider("c")];
    let mut turns = Vec::new();
    for _ in 0..3 {
        b.explain(&group, None);
        turns.push(b.order(group.to_vec(), None)[0].entry.node.clone());
    }
    assert_eq!(turns, ["a", "b", "c"]);
}

#[test]
fn what_other_nodes_send_a_provider_counts_too() {
    let (pa, pb) = (libp2p::PeerId::random(), libp2p::PeerId::random());
    let group = [provider(&pa.to_base58()), provider(&pb.to_base58())];
    let id = group[0].entry.capability.id.clone();
    for advertised_load in [true, false] {
        let loads = Arc::new(Loads::default());
        let b = Balancer::new(
            BalanceConfig {
                advertised_load,
                ..Default::default()
            },
            loads.clone(),
        );
        answered(&b, &group[0], 10);
        answered(&b, &group[1], 10);
        // a's node runs 3 requests of others: a costs 10 x 4, b 10 x 1.
        loads.advertise(pa, [(id.clone(), 3)]);
        let seen = counts(&b, &group, 100);
        if advertised_load {
            assert_eq!(seen.get(&pb.to_base58()), Some(&100), "{seen:?}");
            let choice = b.explain(&group, None);
            assert_eq!(choice.members[0].advertised, Some(3));
            assert!((choice.members[0].cost - 40.0).abs() < 0.1, "{choice:?}");
            // This node's own requests are part of what a node advertises:
            // with 3 of them in flight for a while, an advertised 4 leaves 1
            // for others (10 x 5), and an advertised 2 none (10 x 4).
            let held: Vec<Lease> = (0..3).map(|_| b.lease(&group[0])).collect();
            {
                let stats = b.stats_of(&group[0].key()).expect("leased");
                let mut s = stats.lock();
                s.mean_in_flight = 3.0;
                s.mean_at = Instant::now();
            }
            loads.advertise(pa, [(id.clone(), 4)]);
            let cost = b.explain(&group, None).members[0].cost;
            assert!((cost - 50.0).abs() < 0.1, "{cost}");
            loads.advertise(pa, [(id.clone(), 2)]);
            let cost = b.explain(&group, None).members[0].cost;
            assert!((cost - 40.0).abs() < 0.1, "{cost}");
            drop(held);
        } else {
            assert!(seen.len() == 2, "off, only own requests count: {seen:?}");
            let choice = b.explain(&group, None);
            assert_eq!(choice.members[0].advertised, Some(3), "shown all the same");
            assert_eq!(choice.members[0].cost, 10.0);
        }
    }
}

#[test]
fn requests_on_this_node_s_backends_are_its_load() {
    let loads = Arc::new(Loads::default());
    let b = Balancer::new(BalanceConfig::default(), loads.clone());
    let mut local = provider("me");
    local.backend = Some("gpu0".into());
    let mut other = local.clone();
    other.backend = Some("gpu1".into());
    let id = local.entry.capability.id.clone();
    let held = [b.lease(&local), b.lease(&other), b.lease(&local)];
    // Another node's provider of the same id is not this node's load.
    let remote = b.lease(&provider("elsewhere"));
    assert_eq!(loads.local(&id), 3);
    drop(held);
    drop(remote);
    assert_eq!(loads.local(&id), 0);
}
