//! Each case's rule, as its doc comment states it, for failure messages: a failed
//! assertion deep in a case then says which rule of the contract was broken.

/// The sources of every case, searched only when a case fails.
const SOURCES: &[&str] = &[
    include_str!("cases/ambiguous.rs"),
    include_str!("cases/ambiguous_runs.rs"),
    include_str!("cases/barrier.rs"),
    include_str!("cases/config.rs"),
    include_str!("cases/config_codecs.rs"),
    include_str!("cases/config_faults.rs"),
    include_str!("cases/config_gray.rs"),
    include_str!("cases/config_more.rs"),
    include_str!("cases/config_sealed.rs"),
    include_str!("cases/config_transfer.rs"),
    include_str!("cases/counter.rs"),
    include_str!("cases/election.rs"),
    include_str!("cases/faults.rs"),
    include_str!("cases/input.rs"),
    include_str!("cases/kv.rs"),
    include_str!("cases/lease.rs"),
    include_str!("cases/left_behind.rs"),
    include_str!("cases/lock.rs"),
    include_str!("cases/registry.rs"),
    include_str!("cases/registry_faults.rs"),
    include_str!("cases/registry_more.rs"),
    include_str!("cases/registry_persistent.rs"),
    include_str!("cases/registry_probe.rs"),
    include_str!("cases/registry_protection.rs"),
    include_str!("cases/semaphore.rs"),
    include_str!("cases/session_faults.rs"),
    include_str!("cases/txn.rs"),
    include_str!("cases/watch.rs"),
    include_str!("model.rs"),
    include_str!("linearizability.rs"),
];

/// The doc comment of case `case`, joined into one line; `None` if not found.
pub(crate) fn rule_of(case: &str) -> Option<String> {
    let signature = format!("pub async fn {case}(");
    SOURCES.iter().find_map(|source| {
        let at = source.find(&signature)?;
        let before: Vec<&str> = source[..at].lines().collect();
        let doc: Vec<&str> = before
            .iter()
            .rev()
            .map(|l| l.trim())
            .take_while(|l| l.starts_with("///") || l.starts_with("#["))
            .filter_map(|l| l.strip_prefix("///"))
            .map(str::trim)
            .collect();
        let rule = doc.into_iter().rev().collect::<Vec<_>>().join(" ");
        (!rule.is_empty()).then_some(rule)
    })
}

/// The text of a panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_rule_of_a_case() {
        let rule = rule_of("delete_of_missing_key_changes_nothing").unwrap();
        assert!(rule.contains("revision"), "{rule}");
        assert!(rule_of("random_operations_match_the_model").is_some());
        assert!(rule_of("no_such_case").is_none());
    }
}
