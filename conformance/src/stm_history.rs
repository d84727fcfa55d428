//! Histories of STM transactions on a versioned bank, and the checker that judges them
//! afterwards, from the records alone (it never asks the store), as
//! [`crate::history`] judges holds.
//!
//! Every transaction reads a `version` and every account's balance, and writes
//! `version + 1` and the balances after one transfer: so the [`State`] it wrote names
//! the state it followed, and the committed transactions, ordered by the version they
//! wrote, must form one chain from the initial state to the final one. A client
//! records, for each transaction, every attempt of its body (the state it read and the
//! state it would write) and whether it **committed** (its last attempt applied) or is
//! **indeterminate** (an error or a call given up: at most one of its attempts applied,
//! perhaps none). A transaction that ended in a conflict wrote nothing and is not
//! recorded.
//!
//! # What is checked
//! - No two committed transactions wrote the same version (no lost update).
//! - No committed transaction wrote a version above the final state's (nothing
//!   committed lost).
//! - **Serializable**: there is a chain from the initial state to the final one in
//!   which each version `v` is written by one transaction that read exactly the state
//!   of version `v - 1` and wrote exactly the state of version `v`: by the committed
//!   transaction that wrote `v` where there is one, otherwise by one attempt of an
//!   indeterminate transaction (which the chain then proves committed; each at most
//!   once). So every committed transaction read exactly the state its predecessor left,
//!   and the final state is the committed ones applied in order.
//!
//! Real-time order (a transaction that started after another returned writes a higher
//! version: strict serializability) is not checked.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// The bank at one version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct State {
    /// The `version` key.
    pub(crate) version: u64,
    /// The accounts' balances.
    pub(crate) balances: Vec<i64>,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{} {:?}", self.version, self.balances)
    }
}

/// One run of a transaction's body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Attempt {
    /// What it read.
    pub(crate) read: State,
    /// What it would write.
    pub(crate) wrote: State,
}

/// One transaction, as its client saw it.
#[derive(Clone, Debug)]
pub(crate) struct Transaction {
    /// The client.
    pub(crate) client: usize,
    /// When the call started.
    pub(crate) invoked: Duration,
    /// When it returned (or was given up).
    pub(crate) returned: Duration,
    /// Whether it committed: its last attempt applied. Otherwise it is indeterminate:
    /// at most one of its attempts applied.
    pub(crate) committed: bool,
    /// Every attempt of its body, in order.
    pub(crate) attempts: Vec<Attempt>,
}

impl Transaction {
    /// The attempt that applied, for a committed transaction.
    fn applied(&self) -> Option<&Attempt> {
        self.attempts.last().filter(|_| self.committed)
    }
}

impl fmt::Display for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "c{} {} (called {:.3}s, returned {:.3}s)",
            self.client,
            if self.committed {
                "committed"
            } else {
                "indeterminate"
            },
            self.invoked.as_secs_f64(),
            self.returned.as_secs_f64()
        )?;
        match self.applied() {
            Some(attempt) => write!(f, " read {} wrote {}", attempt.read, attempt.wrote),
            None => write!(f, " with {} attempts", self.attempts.len()),
        }
    }
}

/// A violation the checker found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Violation {
    /// Two committed transactions wrote one version.
    SameVersion {
        /// One of them.
        first: String,
        /// The other.
        second: String,
    },
    /// A committed transaction wrote a version above the final state's.
    CommittedLost {
        /// The transaction.
        transaction: String,
        /// The final state.
        last: State,
    },
    /// No chain explains the history: where the longest attempt stopped, and why.
    NoChain {
        /// The version that could not be explained.
        version: u64,
        /// Why.
        why: String,
    },
    /// The search for a chain gave up (too many indeterminate transactions read the
    /// same states).
    Undecided,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SameVersion { first, second } => {
                write!(
                    f,
                    "two committed transactions wrote one version: [{first}] [{second}]"
                )
            }
            Self::CommittedLost { transaction, last } => write!(
                f,
                "committed [{transaction}] is not in the final state {last}"
            ),
            Self::NoChain { version, why } => {
                write!(f, "not serializable at version {version}: {why}")
            }
            Self::Undecided => write!(f, "no chain found within {MAX_STEPS} steps"),
        }
    }
}

/// What [`check`] found.
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    /// Committed transactions.
    pub(crate) committed: usize,
    /// Indeterminate transactions.
    pub(crate) indeterminate: usize,
    /// Indeterminate transactions the chain proves committed.
    pub(crate) proved: usize,
    /// What is violated (empty when the history passes).
    pub(crate) violations: Vec<Violation>,
}

/// How many steps the chain search takes at most.
const MAX_STEPS: usize = 1_000_000;

/// A candidate writer: a transaction and one of its attempts.
#[derive(Clone, Copy)]
struct Writer {
    transaction: usize,
    attempt: usize,
}

/// Judges `transactions` from `initial` to `last` (the module docs say what is
/// checked).
pub(crate) fn check(initial: &State, transactions: &[Transaction], last: &State) -> Verdict {
    let mut verdict = Verdict {
        committed: transactions.iter().filter(|t| t.committed).count(),
        indeterminate: transactions.iter().filter(|t| !t.committed).count(),
        ..Verdict::default()
    };
    // The committed writer of each version.
    let mut writers: HashMap<u64, usize> = HashMap::new();
    for (index, transaction) in transactions.iter().enumerate() {
        let Some(applied) = transaction.applied() else {
            continue;
        };
        if applied.wrote.version > last.version {
            verdict.violations.push(Violation::CommittedLost {
                transaction: transaction.to_string(),
                last: last.clone(),
            });
        }
        if let Some(&other) = writers.get(&applied.wrote.version) {
            verdict.violations.push(Violation::SameVersion {
                first: transactions[other].to_string(),
                second: transaction.to_string(),
            });
        } else {
            writers.insert(applied.wrote.version, index);
        }
    }
    if !verdict.violations.is_empty() {
        return verdict;
    }
    match chain(initial, transactions, &writers, last) {
        Ok(proved) => verdict.proved = proved,
        Err(violation) => verdict.violations.push(violation),
    }
    verdict
}

/// Searches a chain (depth first, backtracking over indeterminate writers); returns how
/// many indeterminate transactions it uses.
fn chain(
    initial: &State,
    transactions: &[Transaction],
    writers: &HashMap<u64, usize>,
    last: &State,
) -> Result<usize, Violation> {
    let wrote = |writer: Writer| &transactions[writer.transaction].attempts[writer.attempt].wrote;
    let mut used = vec![false; transactions.len()];
    // Per chosen version: the candidates and the index of the one chosen.
    let mut levels: Vec<(Vec<Writer>, usize)> = Vec::new();
    let mut states: Vec<State> = vec![initial.clone()];
    let mut deepest: Option<Violation> = None;
    for _ in 0..MAX_STEPS {
        let state = states.last().unwrap_or(initial);
        let (options, failure) = if state.version >= last.version {
            if state == last {
                return Ok(levels
                    .iter()
                    .filter(|(options, chosen)| {
                        !transactions[options[*chosen].transaction].committed
                    })
                    .count());
            }
            (
                Vec::new(),
                format!("the final state {last} differs from {state}, where the transactions lead"),
            )
        } else {
            candidates(state, transactions, writers, &used)
        };
        if let Some(&first) = options.first() {
            used[first.transaction] = true;
            states.push(wrote(first).clone());
            levels.push((options, 0));
            continue;
        }
        // The final state is judged at its own version, a missing writer at the next.
        let version = state.version + u64::from(state.version < last.version);
        if deepest
            .as_ref()
            .is_none_or(|d| matches!(d, Violation::NoChain { version: v, .. } if *v < version))
        {
            deepest = Some(Violation::NoChain {
                version,
                why: failure,
            });
        }
        // Backtrack to the latest version with an untried writer.
        loop {
            let Some((options, chosen)) = levels.last_mut() else {
                return Err(deepest.unwrap_or(Violation::Undecided));
            };
            used[options[*chosen].transaction] = false;
            states.pop();
            *chosen += 1;
            if let Some(&next) = options.get(*chosen) {
                used[next.transaction] = true;
                states.push(wrote(next).clone());
                break;
            }
            levels.pop();
        }
    }
    Err(Violation::Undecided)
}

/// Who may have written the version after `state`, or why no one can have.
fn candidates(
    state: &State,
    transactions: &[Transaction],
    writers: &HashMap<u64, usize>,
    used: &[bool],
) -> (Vec<Writer>, String) {
    let next = state.version + 1;
    if let Some(&index) = writers.get(&next) {
        let transaction = &transactions[index];
        let attempt = transaction.attempts.len() - 1;
        if transaction.attempts[attempt].read == *state {
            return (
                vec![Writer {
                    transaction: index,
                    attempt,
                }],
                String::new(),
            );
        }
        return (
            Vec::new(),
            format!("[{transaction}] wrote it, but the state it follows is {state}"),
        );
    }
    let options: Vec<Writer> = transactions
        .iter()
        .enumerate()
        .filter(|(index, transaction)| !transaction.committed && !used[*index])
        .flat_map(|(index, transaction)| {
            transaction
                .attempts
                .iter()
                .enumerate()
                .filter(|(_, attempt)| attempt.read == *state && attempt.wrote.version == next)
                .map(move |(attempt, _)| Writer {
                    transaction: index,
                    attempt,
                })
        })
        .collect();
    let why =
        format!("no committed or indeterminate transaction read {state} and wrote version {next}");
    (options, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(version: u64, balances: [i64; 2]) -> State {
        State {
            version,
            balances: balances.to_vec(),
        }
    }

    fn tx(committed: bool, attempts: &[(State, State)]) -> Transaction {
        Transaction {
            client: 0,
            invoked: Duration::ZERO,
            returned: Duration::ZERO,
            committed,
            attempts: attempts
                .iter()
                .map(|(read, wrote)| Attempt {
                    read: read.clone(),
                    wrote: wrote.clone(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_chain_with_an_indeterminate_link_passes() {
        let (s0, s1, s2, s3) = (
            state(0, [10, 10]),
            state(1, [5, 15]),
            state(2, [0, 20]),
            state(3, [1, 19]),
        );
        let transactions = [
            tx(true, &[(s0.clone(), s1.clone())]),
            // Its first attempt read s0 and conflicted; its second applied (reply lost).
            tx(
                false,
                &[(s0.clone(), state(1, [9, 11])), (s1.clone(), s2.clone())],
            ),
            // Indeterminate and never applied.
            tx(false, &[(s1.clone(), state(2, [4, 16]))]),
            tx(true, &[(s2.clone(), s3.clone())]),
        ];
        let verdict = check(&s0, &transactions, &s3);
        assert!(verdict.violations.is_empty(), "{:?}", verdict.violations);
        assert_eq!(
            (verdict.committed, verdict.indeterminate, verdict.proved),
            (2, 2, 1)
        );
    }

    #[test]
    fn the_search_backtracks_over_indeterminate_writers() {
        let (s0, s2) = (state(0, [10, 10]), state(2, [3, 17]));
        let transactions = [
            tx(false, &[(s0.clone(), state(1, [9, 11]))]),
            tx(false, &[(s0.clone(), state(1, [5, 15]))]),
            tx(true, &[(state(1, [5, 15]), s2.clone())]),
        ];
        let verdict = check(&s0, &transactions, &s2);
        assert!(verdict.violations.is_empty(), "{:?}", verdict.violations);
        assert_eq!(verdict.proved, 1);
    }

    #[test]
    fn two_commits_of_one_version_are_a_lost_update() {
        let s0 = state(0, [10, 10]);
        let transactions = [
            tx(true, &[(s0.clone(), state(1, [5, 15]))]),
            tx(true, &[(s0.clone(), state(1, [9, 11]))]),
        ];
        let verdict = check(&s0, &transactions, &state(1, [9, 11]));
        assert!(matches!(
            verdict.violations[..],
            [Violation::SameVersion { .. }]
        ));
    }

    #[test]
    fn a_commit_that_read_a_state_that_never_was_is_not_serializable() {
        let s0 = state(0, [10, 10]);
        let transactions = [
            tx(true, &[(s0.clone(), state(1, [5, 15]))]),
            // Read version 1 with balances no transaction wrote.
            tx(true, &[(state(1, [10, 10]), state(2, [0, 20]))]),
        ];
        let verdict = check(&s0, &transactions, &state(2, [0, 20]));
        assert!(
            matches!(
                &verdict.violations[..],
                [Violation::NoChain { version: 2, .. }]
            ),
            "{:?}",
            verdict.violations
        );
    }

    #[test]
    fn a_lost_commit_and_an_unexplained_final_state_are_violations() {
        let s0 = state(0, [10, 10]);
        let lost = [tx(true, &[(s0.clone(), state(1, [5, 15]))])];
        let verdict = check(&s0, &lost, &s0);
        assert!(matches!(
            verdict.violations[..],
            [Violation::CommittedLost { .. }]
        ));
        let verdict = check(&s0, &[], &state(1, [0, 20]));
        assert!(matches!(
            verdict.violations[..],
            [Violation::NoChain { version: 1, .. }]
        ));
        let verdict = check(&s0, &[], &state(0, [0, 20]));
        assert!(matches!(
            verdict.violations[..],
            [Violation::NoChain { version: 0, .. }]
        ));
    }
}
