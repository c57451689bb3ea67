//! Ranges: the newest state from `kv`, a past one from `history`.

use coordkit::{Error, RangeRequest, RangeResponse, Result, SortOrder};
use deadpool_postgres::GenericClient;

use crate::schema::Tables;
use crate::sql::{key_condition, kv_from, query, Params};

/// Read `request` in one statement (one snapshot): the keys, their count and
/// the revision they were read at. Inside a write transaction it sees that
/// transaction's earlier writes; the caller then reports the transaction's
/// revision instead.
pub(crate) async fn range(
    client: &impl GenericClient,
    t: &Tables,
    request: &RangeRequest,
) -> Result<RangeResponse> {
    let mut params = Params::default();
    let cond = key_condition(&request.keys, "key", &mut params);
    let source = match request.revision {
        None => format!(
            "SELECT key, value, create_revision, mod_revision, version, lease FROM {kv} WHERE {cond}",
            kv = t.kv
        ),
        Some(at) => {
            let at = params.add(at);
            format!(
                "SELECT key, value, create_revision, mod_revision, version, lease FROM (\
                   SELECT DISTINCT ON (key) key, deleted, value, create_revision, \
                          revision AS mod_revision, version, lease \
                   FROM {history} WHERE revision <= {at} AND {cond} \
                   ORDER BY key, revision DESC, seq DESC) h WHERE NOT deleted",
                history = t.history
            )
        }
    };
    let filter = match request.max_create_revision {
        Some(max) => format!("create_revision <= {}", params.add(max)),
        None => "true".to_string(),
    };
    let order = match request.sort_by_create_revision {
        None => "key",
        Some(SortOrder::Ascend) => "create_revision, key",
        Some(SortOrder::Descend) => "create_revision DESC, key",
    };
    let outer_order = match request.sort_by_create_revision {
        None => "s.key",
        Some(SortOrder::Ascend) => "s.create_revision, s.key",
        Some(SortOrder::Descend) => "s.create_revision DESC, s.key",
    };
    let limit = if request.count_only {
        "LIMIT 0".to_string()
    } else {
        match request.limit {
            Some(n) => format!("LIMIT {}", params.add(n as i64 + 1)),
            None => String::new(),
        }
    };
    let sql = format!(
        "WITH m AS (SELECT revision, compacted FROM {meta}), r AS ({source}), \
              c AS (SELECT count(*) AS n FROM r) \
         SELECT m.revision, m.compacted, c.n, s.key, s.value, s.create_revision, \
                s.mod_revision, s.version, s.lease \
         FROM m CROSS JOIN c LEFT JOIN LATERAL \
              (SELECT * FROM r WHERE {filter} ORDER BY {order} {limit}) s ON true \
         ORDER BY {outer_order}",
        meta = t.meta
    );
    let rows = query(client, &sql, &params, "range").await?;
    let first = rows
        .first()
        .ok_or_else(|| Error::unavailable("postgres: range: the store's meta row is missing"))?;
    let (revision, compacted, count): (i64, i64, i64) = (first.get(0), first.get(1), first.get(2));
    if let Some(at) = request.revision {
        check_readable(at, revision, compacted)?;
    }
    let mut kvs: Vec<_> = rows
        .iter()
        .filter(|row| row.get::<_, Option<Vec<u8>>>(3).is_some())
        .map(|row| kv_from(row, 3))
        .collect();
    let mut more = false;
    if let Some(limit) = request.limit {
        if kvs.len() as u64 > limit {
            kvs.truncate(limit as usize);
            more = true;
        }
    }
    Ok(RangeResponse {
        kvs,
        count,
        more: more && !request.count_only,
        revision,
    })
}

/// Whether the store, at `revision` with `compacted` in force, can be read at
/// `at`: a future revision is `InvalidArgument`, a compacted one `Compacted`.
pub(crate) fn check_readable(at: i64, revision: i64, compacted: i64) -> Result<()> {
    if at > revision {
        return Err(Error::invalid(
            "revision",
            format!("{at} is in the future (the store is at {revision})"),
        ));
    }
    if at < compacted {
        return Err(Error::Compacted {
            compact_revision: compacted,
        });
    }
    Ok(())
}
