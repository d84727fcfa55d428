//! What the backend tells of its server beside the matrix
//! ([`Backend::describe_store`](distsync_core::Backend::describe_store)): the version
//! and the settings the guarantees depend on.
//!
//! `INFO server` and `INFO memory` give `redis_version` and `maxmemory_policy`
//! (`INFO` answers where `CONFIG` is renamed away or refused); the persistence is the
//! one read at connect (`persistence.rs`), from which `survives_restart` is declared.

use distsync_core::Result;

use crate::info::{info_field, info_text};

use crate::persistence::Persistence;
use crate::store::Shared;

/// `redis_version`, `maxmemory_policy` and `persistence`; a section the server refuses
/// is left out.
pub(crate) async fn describe(
    shared: &Shared,
    persistence: &Persistence,
) -> Result<Vec<(String, String)>> {
    let mut facts = Vec::new();
    for (section, field) in [("server", "redis_version"), ("memory", "maxmemory_policy")] {
        match shared.query(redis::cmd("INFO").arg(section)).await {
            Ok(reply) => {
                if let Some(value) = info_text(&reply).and_then(|text| info_field(&text, field)) {
                    facts.push((field.to_owned(), value));
                }
            }
            Err(error) if error.is_transient() => return Err(error),
            Err(error) => tracing::debug!(%error, section, "INFO refused"),
        }
    }
    facts.push(("persistence".to_owned(), persistence.to_string()));
    Ok(facts)
}
