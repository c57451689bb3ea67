//! History rows as watch responses.

use coordkit::{Event, EventKind, KeyValue, LeaseId, Revision, WatchResponse};
use tokio_postgres::Row;

/// The history columns an event is read from, in order (13 columns).
pub(crate) const EVENT_COLUMNS: &str = "h.revision, h.seq, h.key, h.deleted, h.value, \
    h.create_revision, h.version, h.lease, h.prev_value, h.prev_create_revision, \
    h.prev_mod_revision, h.prev_version, h.prev_lease";

/// The event of a row whose history columns start at `c` (`None` for the
/// null row of an outer join that matched nothing).
fn event(row: &Row, c: usize) -> Option<(Revision, Event)> {
    let revision: Option<i64> = row.get(c);
    let revision = revision?;
    let key: Vec<u8> = row.get(c + 2);
    let deleted: bool = row.get(c + 3);
    let prev_kv = row.get::<_, Option<Vec<u8>>>(c + 8).map(|value| KeyValue {
        key: key.clone(),
        value,
        create_revision: row.get(c + 9),
        mod_revision: row.get(c + 10),
        version: row.get(c + 11),
        lease: row.get::<_, Option<i64>>(c + 12).map(LeaseId),
    });
    let kv = if deleted {
        // As etcd: a delete event carries the key and its revision only.
        KeyValue {
            key,
            value: Vec::new(),
            create_revision: 0,
            mod_revision: revision,
            version: 0,
            lease: None,
        }
    } else {
        KeyValue {
            key,
            value: row.get(c + 4),
            create_revision: row.get(c + 5),
            mod_revision: revision,
            version: row.get(c + 6),
            lease: row.get::<_, Option<i64>>(c + 7).map(LeaseId),
        }
    };
    let kind = if deleted {
        EventKind::Delete
    } else {
        EventKind::Put
    };
    Some((revision, Event { kind, kv, prev_kv }))
}

/// The rows (ordered by revision and seq, history columns from `c`) grouped
/// into one response per revision.
pub(crate) fn responses(rows: &[Row], c: usize) -> Vec<WatchResponse> {
    let mut out: Vec<WatchResponse> = Vec::new();
    for (revision, event) in rows.iter().filter_map(|r| event(r, c)) {
        match out.last_mut() {
            Some(last) if last.revision == revision => last.events.push(event),
            _ => out.push(WatchResponse {
                revision,
                events: vec![event],
            }),
        }
    }
    out
}
