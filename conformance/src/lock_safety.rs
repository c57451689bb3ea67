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

/// Check a history of holds of a semaphore with `permits` permits (or, with
/// `permits` 1, of any exclusive lock whose holds may arrive out of token order):
/// each hold's fenced writes span from its first to its last write, and at no
/// store revision do more than `permits` spans overlap; tokens are distinct.
pub fn check_permits(holds: &[Hold], permits: usize) -> Result<(), String> {
    check_spans(holds, |open| {
        (open.len() > permits).then(|| {
            format!(
                "more than {permits} holders at once: tokens {:?} all held",
                open.iter().map(|h| h.token).collect::<Vec<_>>()
            )
        })
    })
}

/// Check a history of holds of a read-write lock (`writer` says which holds were
/// write holds): a writer's span of fenced writes overlaps no other hold's span,
/// readers' spans may overlap each other; tokens are distinct.
pub fn check_read_write(holds: &[(Hold, bool)]) -> Result<(), String> {
    let writers: std::collections::HashSet<Revision> = holds
        .iter()
        .filter(|(_, w)| *w)
        .map(|(h, _)| h.token)
        .collect();
    let plain: Vec<Hold> = holds.iter().map(|(h, _)| h.clone()).collect();
    check_spans(&plain, |open| {
        let writer = open.iter().find(|h| writers.contains(&h.token))?;
        (open.len() > 1).then(|| {
            format!(
                "writer token {} (client {}) held together with tokens {:?}",
                writer.token,
                writer.client,
                open.iter()
                    .filter(|h| h.token != writer.token)
                    .map(|h| h.token)
                    .collect::<Vec<_>>()
            )
        })
    })
}

/// Sweep the holds' spans of writes in store order; `broken` judges each set of
/// spans open at once.
fn check_spans(holds: &[Hold], broken: impl Fn(&[&Hold]) -> Option<String>) -> Result<(), String> {
    let mut tokens: Vec<Revision> = holds.iter().map(|h| h.token).collect();
    tokens.sort_unstable();
    if let Some(pair) = tokens.windows(2).find(|p| p[0] == p[1]) {
        return Err(format!("fencing token {} was handed out twice", pair[0]));
    }
    // (revision, opens?) with closes after opens at one revision: two spans that
    // share a revision overlap.
    let spans: Vec<(&Hold, Revision, Revision)> = holds
        .iter()
        .filter_map(|h| Some((h, *h.writes.iter().min()?, *h.writes.iter().max()?)))
        .collect();
    let mut points: Vec<(Revision, bool, usize)> = Vec::new();
    for (i, (_, first, last)) in spans.iter().enumerate() {
        points.push((*first, false, i));
        points.push((*last, true, i));
    }
    points.sort_by_key(|&(rev, closes, _)| (rev, closes));
    let mut open: Vec<usize> = Vec::new();
    for (_, closes, i) in points {
        if closes {
            open.retain(|&j| j != i);
        } else {
            open.push(i);
            let holding: Vec<&Hold> = open.iter().map(|&j| spans[j].0).collect();
            if let Some(why) = broken(&holding) {
                return Err(why);
            }
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

    #[test]
    fn permits_allow_n_overlapping_holds_but_not_more() {
        let holds = [
            hold(0, 10, 0, &[11, 20]),
            hold(1, 12, 1, &[13, 21]),
            hold(2, 14, 2, &[22, 23]),
        ];
        assert!(check_permits(&holds, 2).is_ok());
        let crowded = [
            hold(0, 10, 0, &[11, 20]),
            hold(1, 12, 1, &[13, 21]),
            hold(2, 14, 2, &[15, 16]),
        ];
        let err = check_permits(&crowded, 2).unwrap_err();
        assert!(err.contains("more than 2"), "{err}");
        assert!(check_permits(&[hold(0, 5, 0, &[6]), hold(1, 5, 1, &[7])], 2).is_err());
    }

    #[test]
    fn a_writer_overlapping_anyone_is_unsafe() {
        let readers = [
            (hold(0, 10, 0, &[11, 20]), false),
            (hold(1, 12, 1, &[13, 21]), false),
        ];
        assert!(check_read_write(&readers).is_ok());
        let mut mixed = readers.to_vec();
        mixed.push((hold(2, 14, 2, &[21, 22]), true));
        let err = check_read_write(&mixed).unwrap_err();
        assert!(err.contains("writer token 14"), "{err}");
        let apart = [
            (hold(0, 10, 0, &[11, 12]), true),
            (hold(1, 13, 1, &[14, 15]), false),
        ];
        assert!(check_read_write(&apart).is_ok());
    }
}
