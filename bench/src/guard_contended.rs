//! The guard's contended ratios: grants per second of clients all cycling one lock, at
//! 2, 8 and 64 clients ([`CLIENTS`]), so that a change that slows the lock under
//! contention fails the guard as a slower cycle does.
//!
//! Which pairs are measured follows the performance targets of docs/BENCHMARKS.md:
//! - on every backend, the unfair lock against the fair lock (the unfair lock exists to
//!   grant more under contention);
//! - on Redis, the unfair lock against rslock at its default retry;
//! - on PostgreSQL, the fair lock against `distributed-lock` and, on the durable
//!   backend, the durable floor (one row update and a synchronous commit per grant).
//!
//! A ratio is the other's grants per second ÷ distsync's, so that, as with the cycle
//! ratios, a larger ratio is worse and [`crate::guard::judge`] applies unchanged. Each
//! of [`ROUNDS`] rounds measures every implementation once for [`BURST`], in turn and
//! with its clients made afresh ([`crate::contended::measure`]); a round's ratio needs
//! both sides measured without error, and the ratio is summed up over the rounds by
//! [`crate::guard::from_round_ratios`]. Throughput on a loaded two-vCPU machine moves
//! by tens of percent between bursts: the rounds' spread is the noise the verdict
//! allows for.

use std::time::Duration;

use distsync::lock::Fairness;

use crate::args::Plan;
use crate::contended::{self, Implementation};
use crate::guard::{from_round_ratios, Measured, MIN_ROUNDS, UNFAIR_PREFIX};
use crate::peers::ContendedPeer;
use crate::target::Target;

/// The numbers of clients measured.
pub const CLIENTS: [usize; 3] = [2, 8, 64];

/// The rounds per number of clients.
pub const ROUNDS: usize = 5;

/// How long each implementation's measured burst lasts in a round.
pub const BURST: Duration = Duration::from_secs(1);

/// What one backend gave: each ratio by key, and why the unfair lock was not measured
/// (a backend without it).
#[derive(Debug, Default)]
pub struct ContendedRatios {
    /// Each ratio, keyed as the baseline keys it.
    pub ratios: Vec<(String, Result<Measured, String>)>,
    /// Why the unfair lock's ratios are missing, if it is unsupported.
    pub unfair_unsupported: Option<String>,
}

/// One ratio: `other`'s grants per second ÷ `mine`'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pair {
    mine: Implementation,
    other: Implementation,
}

impl Pair {
    /// The baseline's key of this pair at `clients` clients: the unfair lock's pairs
    /// start with [`UNFAIR_PREFIX`], so that a backend without it reports them as the
    /// cycle's unfair ratios are reported.
    fn key(self, clients: usize) -> String {
        let unfair = if self.mine == Implementation::Distsync(Fairness::Unfair) {
            UNFAIR_PREFIX
        } else {
            ""
        };
        format!(
            "{unfair}contended grants/s, {clients} clients: {} ÷ {}",
            self.other.label(),
            self.mine.label()
        )
    }
}

/// The pairs measured on `target` (see the module docs).
fn pairs(target: &Target) -> Vec<Pair> {
    let fair = Implementation::Distsync(Fairness::Fair);
    let unfair = Implementation::Distsync(Fairness::Unfair);
    let mut pairs = vec![Pair {
        mine: unfair,
        other: fair,
    }];
    for peer in crate::peers::contended(target) {
        let mine = match peer {
            #[cfg(feature = "redis")]
            ContendedPeer::Rslock { short: false } => unfair,
            #[cfg(feature = "distributed-lock")]
            ContendedPeer::DistributedLockPostgres => fair,
            #[cfg(feature = "postgres")]
            ContendedPeer::DurableFloorPostgres => fair,
            _ => continue,
        };
        pairs.push(Pair {
            mine,
            other: Implementation::Peer(peer),
        });
    }
    pairs
}

/// Measures the contended ratios on `target`, its lock names under `run_id`. Once the
/// unfair lock answers unsupported it is measured no more, and its pairs are left out.
pub async fn measure(target: &Target, run_id: &str, plan: &Plan) -> ContendedRatios {
    let plan = Plan {
        contended_time: BURST,
        ..plan.clone()
    };
    let pairs = pairs(target);
    let mut implementations: Vec<Implementation> = Vec::new();
    for pair in &pairs {
        for implementation in [pair.mine, pair.other] {
            if !implementations.contains(&implementation) {
                implementations.push(implementation);
            }
        }
    }
    let unfair = Implementation::Distsync(Fairness::Unfair);
    let mut outcome = ContendedRatios::default();
    for clients in CLIENTS {
        let mut rounds = Rounds::new(implementations.len());
        for round in 0..ROUNDS {
            for (index, &implementation) in implementations.iter().enumerate() {
                if implementation == unfair && outcome.unfair_unsupported.is_some() {
                    continue;
                }
                let name = format!("{run_id}/guard-contended/{clients}/{round}/{index}");
                let result =
                    contended::measure(target, &name, implementation, clients, &plan).await;
                if result.unsupported && implementation == unfair {
                    outcome.unfair_unsupported = Some(result.error.clone().unwrap_or_default());
                }
                rounds.record(index, &result);
            }
        }
        for pair in &pairs {
            if pair.mine == unfair && outcome.unfair_unsupported.is_some() {
                continue;
            }
            let mine = index_of(&implementations, pair.mine);
            let other = index_of(&implementations, pair.other);
            outcome
                .ratios
                .push((pair.key(clients), rounds.ratio(mine, other)));
        }
    }
    outcome
}

fn index_of(implementations: &[Implementation], wanted: Implementation) -> usize {
    implementations
        .iter()
        .position(|implementation| *implementation == wanted)
        .unwrap_or_default()
}

/// Each implementation's grants per second round by round, and its first error.
struct Rounds {
    /// `None` for a round that failed or granted nothing.
    rates: Vec<Vec<Option<f64>>>,
    errors: Vec<Option<String>>,
}

impl Rounds {
    fn new(implementations: usize) -> Self {
        Self {
            rates: vec![Vec::new(); implementations],
            errors: vec![None; implementations],
        }
    }

    fn record(&mut self, index: usize, result: &contended::ContendedResult) {
        let rate = (result.error.is_none() && result.grants > 0).then(|| result.rate());
        if let Some(error) = &result.error {
            self.errors[index].get_or_insert_with(|| error.clone());
        }
        self.rates[index].push(rate);
    }

    /// `other`'s grants per second ÷ `mine`'s, over the rounds where both measured.
    fn ratio(&self, mine: usize, other: usize) -> Result<Measured, String> {
        let ratios: Vec<f64> = self.rates[mine]
            .iter()
            .zip(&self.rates[other])
            .filter_map(|(mine, other)| Some(other.as_ref()? / mine.as_ref()?))
            .collect();
        from_round_ratios(&ratios).ok_or_else(|| {
            let why = [mine, other]
                .iter()
                .find_map(|&index| self.errors[index].clone())
                .unwrap_or_else(|| "no grants".to_owned());
            format!(
                "{} of {ROUNDS} rounds measured both (at least {MIN_ROUNDS} needed): {why}",
                ratios.len()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(grants: usize, error: Option<&str>) -> contended::ContendedResult {
        contended::ContendedResult {
            grants,
            elapsed: Duration::from_secs(1),
            error: error.map(str::to_owned),
            ..contended::ContendedResult::default()
        }
    }

    #[test]
    fn a_ratio_is_the_others_rate_over_mine_on_rounds_where_both_measured() {
        let mut rounds = Rounds::new(2);
        for (mine, other) in [(100, 200), (100, 300), (50, 100), (100, 200)] {
            rounds.record(0, &result(mine, None));
            rounds.record(1, &result(other, None));
        }
        rounds.record(0, &result(100, Some("a client stopped")));
        rounds.record(1, &result(900, None));
        let measured = rounds.ratio(0, 1).unwrap();
        assert_eq!(measured.rounds, 4);
        assert!((measured.ratio - 2.0).abs() < 1e-9, "{measured:?}");
    }

    #[test]
    fn too_few_rounds_say_why() {
        let mut rounds = Rounds::new(2);
        for _ in 0..ROUNDS {
            rounds.record(0, &result(0, Some("could not connect")));
            rounds.record(1, &result(10, None));
        }
        let why = rounds.ratio(0, 1).unwrap_err();
        assert!(why.starts_with("0 of 5 rounds"), "{why}");
        assert!(why.contains("could not connect"), "{why}");
    }

    #[test]
    fn the_unfair_locks_pairs_are_keyed_as_its_cycle_ratios() {
        let pair = Pair {
            mine: Implementation::Distsync(Fairness::Unfair),
            other: Implementation::Distsync(Fairness::Fair),
        };
        let key = pair.key(8);
        assert!(key.starts_with(UNFAIR_PREFIX), "{key}");
        assert!(key.contains("8 clients"), "{key}");
        let fair = Pair {
            mine: Implementation::Distsync(Fairness::Fair),
            other: Implementation::Distsync(Fairness::Unfair),
        };
        assert!(!fair.key(2).starts_with(UNFAIR_PREFIX));
    }
}
