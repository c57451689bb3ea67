//! A lock-safety checker over a history of holds: each hold's fencing token, when
//! (in a logical clock shared by the clients) it was acquired, and the store
//! revisions of the fenced writes it made. Safe means: tokens strictly increase
//! in the order holds were acquired, and the writes of two holds never
//! interleave in the store's order (every write of an earlier token precedes
//! every write of a later one).

use coordkit::Revision;

/// One holder's tenure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    /// Who held it.
    pub client: usize,
    /// Its fencing token.
    pub token: Revision,
    /// When it was acquired (a logical clock shared by the clients).
    pub acquired: u64,
    /// The store revisions of the fenced writes it made while it held the lock.
    pub writes: Vec<Revision>,
}

/// Check a history of holds of one lock; `Err` says which rule broke, and where.
pub fn check(holds: &[Hold]) -> Result<(), String> {
    let mut by_acquisition: Vec<&Hold> = holds.iter().collect();
    by_acquisition.sort_by_key(|h| h.acquired);
    for pair in by_acquisition.windows(2) {
        if pair[0].token >= pair[1].token {
            return Err(format!(
                "fencing tokens must strictly increase in acquisition order: client {} got {} at {}, then client {} got {} at {}",
                pair[0].client, pair[0].token, pair[0].acquired, pair[1].client, pair[1].token, pair[1].acquired
            ));
        }
    }
    let mut by_token: Vec<&Hold> = holds.iter().filter(|h| !h.writes.is_empty()).collect();
    by_token.sort_by_key(|h| h.token);
    for pair in by_token.windows(2) {
        let last = pair[0].writes.iter().max().copied().unwrap_or(0);
        let first = pair[1].writes.iter().min().copied().unwrap_or(0);
        if last >= first {
            return Err(format!(
                "two holders' fenced writes interleave: token {} (client {}) wrote at revision {last}, after token {} (client {}) wrote at {first}",
                pair[0].token, pair[0].client, pair[1].token, pair[1].client
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(client: usize, token: Revision, acquired: u64, writes: &[Revision]) -> Hold {
        Hold {
            client,
            token,
            acquired,
            writes: writes.to_vec(),
        }
    }

    #[test]
    fn successive_holds_with_ordered_writes_are_safe() {
        assert!(check(&[
            hold(0, 5, 1, &[6, 7]),
            hold(1, 8, 2, &[9]),
            hold(0, 10, 3, &[])
        ])
        .is_ok());
    }

    #[test]
    fn a_repeated_or_decreasing_token_is_caught() {
        let e = check(&[hold(0, 5, 1, &[6]), hold(1, 5, 2, &[7])]).unwrap_err();
        assert!(e.contains("strictly increase"), "{e}");
    }

    #[test]
    fn interleaved_writes_are_caught() {
        let e = check(&[hold(0, 5, 1, &[6, 9]), hold(1, 7, 2, &[8])]).unwrap_err();
        assert!(e.contains("interleave"), "{e}");
    }
}
