//! Mapping between coordkit's primitive types and etcd-client's, and etcd's errors onto
//! coordkit's.

use coordkit::{
    Compare, CompareOp, CompareTarget, DeleteRequest, Error, KeyRange, KeyValue, LeaseId,
    PutRequest, RangeRequest, SortOrder, TxnOp,
};
use etcd_client as etcd;

pub(crate) const BACKEND: &str = "etcd";

pub(crate) fn kv(kv: &etcd::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key().to_vec(),
        value: kv.value().to_vec(),
        ..revisions(kv)
    }
}

/// [`kv`], moving the key and value rather than copying them.
pub(crate) fn into_kv(kv: etcd::KeyValue) -> KeyValue {
    let mut out = revisions(&kv);
    (out.key, out.value) = kv.into_key_value();
    out
}

/// Everything of `kv` but its key and value (left empty).
fn revisions(kv: &etcd::KeyValue) -> KeyValue {
    KeyValue {
        key: Vec::new(),
        value: Vec::new(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: (kv.lease() != 0).then_some(LeaseId(kv.lease())),
    }
}

/// The key to send for a range of keys, and whether it is a prefix.
pub(crate) fn key_of(keys: &KeyRange) -> (Vec<u8>, bool) {
    into_key(keys.clone())
}

/// [`key_of`], taking the key rather than copying it.
fn into_key(keys: KeyRange) -> (Vec<u8>, bool) {
    match keys {
        KeyRange::Key(k) => (k, false),
        KeyRange::Prefix(p) => (p, true),
    }
}

/// The key and options of a range.
pub(crate) fn get(request: RangeRequest) -> (Vec<u8>, etcd::GetOptions) {
    let mut options = etcd::GetOptions::new();
    let (key, prefix) = into_key(request.keys);
    if prefix {
        options = options.with_prefix();
    }
    if let Some(r) = request.revision {
        options = options.with_revision(r);
    }
    if let Some(l) = request.limit {
        options = options.with_limit(l as i64);
    }
    if let Some(order) = request.sort_by_create_revision {
        let order = match order {
            SortOrder::Ascend => etcd::SortOrder::Ascend,
            SortOrder::Descend => etcd::SortOrder::Descend,
        };
        options = options.with_sort(etcd::SortTarget::Create, order);
    }
    if let Some(max) = request.max_create_revision {
        options = options.with_max_create_revision(max);
    }
    if request.count_only {
        options = options.with_count_only();
    }
    (key, options)
}

pub(crate) fn compare(c: Compare) -> etcd::Compare {
    let op = match c.op {
        CompareOp::Equal => etcd::CompareOp::Equal,
        CompareOp::NotEqual => etcd::CompareOp::NotEqual,
        CompareOp::Less => etcd::CompareOp::Less,
        CompareOp::Greater => etcd::CompareOp::Greater,
    };
    let key = c.key;
    match c.target {
        CompareTarget::Value(v) => etcd::Compare::value(key, op, v),
        CompareTarget::Version(v) => etcd::Compare::version(key, op, v),
        CompareTarget::CreateRevision(r) => etcd::Compare::create_revision(key, op, r),
        CompareTarget::ModRevision(r) => etcd::Compare::mod_revision(key, op, r),
        CompareTarget::Lease(l) => etcd::Compare::lease(key, op, l.map_or(0, |l| l.0)),
    }
}

pub(crate) fn put_options(p: &PutRequest) -> etcd::PutOptions {
    let mut options = etcd::PutOptions::new();
    if let Some(l) = p.lease {
        options = options.with_lease(l.0);
    }
    if p.prev_kv {
        options = options.with_prev_key();
    }
    options
}

pub(crate) fn delete_options(d: DeleteRequest) -> (Vec<u8>, etcd::DeleteOptions) {
    let mut options = etcd::DeleteOptions::new();
    let (key, prefix) = into_key(d.keys);
    if prefix {
        options = options.with_prefix();
    }
    if d.prev_kv {
        options = options.with_prev_key();
    }
    (key, options)
}

/// A transaction; its reads serializable (answered by the member asked) when
/// `serializable`.
pub(crate) fn txn(txn: coordkit::Txn, serializable: bool) -> etcd::Txn {
    let op = |o| op(o, serializable);
    etcd::Txn::new()
        .when(txn.compares.into_iter().map(compare).collect::<Vec<_>>())
        .and_then(txn.success.into_iter().map(op).collect::<Vec<_>>())
        .or_else(txn.failure.into_iter().map(op).collect::<Vec<_>>())
}

pub(crate) fn op(op: TxnOp, serializable: bool) -> etcd::TxnOp {
    match op {
        TxnOp::Put(p) => {
            let options = put_options(&p);
            etcd::TxnOp::put(p.key, p.value, Some(options))
        }
        TxnOp::Delete(d) => {
            let (key, options) = delete_options(d);
            etcd::TxnOp::delete(key, Some(options))
        }
        TxnOp::Range(r) => {
            let (key, mut options) = get(r);
            if serializable {
                options = options.with_serializable();
            }
            etcd::TxnOp::get(key, Some(options))
        }
    }
}

/// What a failed call was about, to name the lease, the endpoint and the argument
/// in the error.
#[derive(Clone, Copy, Default)]
pub(crate) struct Context<'a> {
    /// The lease the call was about, for `LeaseNotFound`.
    pub(crate) lease: Option<i64>,
    /// The endpoint the call went to.
    pub(crate) endpoint: Option<&'a str>,
    /// The larger part of the request (`"key"` or `"value"`), named when etcd
    /// refuses the request as too large.
    pub(crate) larger: Option<&'static str>,
}

impl<'a> Context<'a> {
    /// About lease `id`.
    pub(crate) fn lease(id: i64) -> Self {
        Context {
            lease: Some(id),
            ..Context::default()
        }
    }

    /// About a call to `endpoint`.
    pub(crate) fn at(endpoint: &'a str) -> Self {
        Context {
            endpoint: Some(endpoint),
            ..Context::default()
        }
    }

    fn place(&self) -> String {
        self.endpoint
            .map(|e| format!(" at {e}"))
            .unwrap_or_default()
    }
}

/// Whether the call failed before any member received it, so that it cannot have
/// applied and may go to another endpoint whatever it is: no connection could be
/// made, or the member refused it up front for want of a leader (the
/// `hasleader` requirement every request carries).
pub(crate) fn never_sent(e: &etcd::Error) -> bool {
    match e {
        etcd::Error::TransportError(_) => true,
        etcd::Error::GRpcStatus(status) => {
            let msg = status.message();
            // Only the connector's own failures: a connection reset or closed
            // mid-request ("connection reset", "transport is closing") may have
            // delivered the request, so it does not count.
            (status.code() == tonic::Code::Unavailable
                && NOT_CONNECTED.iter().any(|m| msg.contains(m)))
                || msg == "etcdserver: no leader"
        }
        _ => false,
    }
}

/// What tonic's connector says when it could not connect (tonic maps its
/// `ConnectError` to `Unavailable` with the connector's message), and what the
/// backend's own connection says of a request it never sent (`transport`).
const NOT_CONNECTED: [&str; 5] = [
    "tcp connect error",
    "error trying to connect",
    "Connection refused",
    "connection refused",
    "request not sent",
];

/// Whether etcd refused the call because the auth token predates an auth change:
/// refresh the token and send it once more. etcd 3.4 says "revision of auth
/// store is old" (FailedPrecondition); 3.5 may say "auth: revision in header is
/// old" (Unknown) when the change lands between the check and the apply.
pub(crate) fn auth_revision_old(e: &etcd::Error) -> bool {
    matches!(e, etcd::Error::GRpcStatus(s)
        if s.message().contains("revision of auth store is old")
            || s.message().contains("revision in header is old"))
}

/// Map an etcd-client error onto coordkit's error, keeping it as the source where
/// the variant has one.
pub(crate) fn error(e: etcd::Error, ctx: Context) -> Error {
    match e {
        etcd::Error::GRpcStatus(status) => status_error(status, ctx),
        etcd::Error::TransportError(t) => {
            Error::unavailable_from(format!("cannot connect{}: {t}", ctx.place()), t)
        }
        etcd::Error::IoError(io) => {
            Error::unavailable_from(format!("i/o{}: {io}", ctx.place()), io)
        }
        etcd::Error::WatchError(m) | etcd::Error::LeaseKeepAliveError(m) => {
            if m.contains("lease not found") {
                Error::LeaseNotFound {
                    id: ctx.lease.unwrap_or(0),
                }
            } else {
                Error::unavailable(format!("{m}{}", ctx.place()))
            }
        }
        etcd::Error::InvalidArgs(m) => Error::invalid("request", m),
        etcd::Error::InvalidUri(u) => Error::invalid("endpoints", format!("not a URL: {u}")),
        other => Error::Backend {
            backend: BACKEND,
            source: Box::new(other),
        },
    }
}

fn status_error(status: tonic::Status, ctx: Context) -> Error {
    use tonic::Code;
    let msg = status.message().to_string();
    if msg.contains("required revision has been compacted") {
        // etcd does not say which revision it compacted at in this answer.
        return Error::Compacted {
            compact_revision: 0,
        };
    }
    if msg.contains("required revision is a future revision") {
        return Error::invalid("revision", msg);
    }
    if msg.contains("requested lease not found") {
        return Error::LeaseNotFound {
            id: ctx.lease.unwrap_or(0),
        };
    }
    if msg.contains("request is too large") || msg.contains("message larger than max") {
        let argument = ctx.larger.unwrap_or("value");
        return Error::invalid(
            argument,
            format!("etcd refused the request as too large (its --max-request-bytes): {msg}"),
        );
    }
    if msg.contains("duplicate key given in txn request")
        || msg.contains("too many operations in txn request")
    {
        return Error::invalid("txn", msg);
    }
    if msg.contains("database space exceeded") {
        return Error::Alarm {
            alarm: "NOSPACE".to_string(),
            reason: msg,
        };
    }
    if msg.contains("corrupt cluster") {
        return Error::Alarm {
            alarm: "CORRUPT".to_string(),
            reason: msg,
        };
    }
    if msg.contains("too many requests") {
        return Error::Overloaded {
            reason: format!("{msg}{}", ctx.place()),
        };
    }
    if msg.contains("permission denied") {
        return Error::PermissionDenied { reason: msg };
    }
    if msg.contains("authentication failed")
        || msg.contains("invalid auth token")
        || msg.contains("user name is empty")
        || msg.contains("authentication is not enabled")
    {
        return Error::AuthFailed { reason: msg };
    }
    let code = status.code();
    let place = ctx.place();
    match code {
        Code::Unauthenticated => Error::AuthFailed { reason: msg },
        Code::PermissionDenied => Error::PermissionDenied { reason: msg },
        // Leader changes, a member without a leader, stream resets, a stale auth
        // revision: transient, the same call may succeed on the next try.
        Code::Unavailable | Code::Aborted | Code::Cancelled | Code::Unknown | Code::Internal => {
            Error::unavailable_from(format!("{code:?}{place}: {msg}"), status)
        }
        Code::FailedPrecondition if msg.contains("leader") => {
            Error::unavailable_from(format!("{code:?}{place}: {msg}"), status)
        }
        Code::InvalidArgument if msg.contains("revision of auth store is old") => {
            Error::unavailable_from(format!("{code:?}{place}: {msg}"), status)
        }
        Code::DeadlineExceeded => Error::Timeout {
            operation: "etcd request",
        },
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
            Error::invalid("request", msg)
        }
        Code::ResourceExhausted => Error::Overloaded {
            reason: format!("{msg}{place}"),
        },
        _ => Error::Backend {
            backend: BACKEND,
            source: Box::new(status),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: tonic::Code, msg: &str) -> etcd::Error {
        etcd::Error::GRpcStatus(tonic::Status::new(code, msg))
    }

    #[test]
    fn only_failures_before_sending_count_as_never_sent() {
        use tonic::Code;
        assert!(never_sent(&status(Code::Unavailable, "tcp connect error")));
        assert!(never_sent(&status(
            Code::Unavailable,
            "error trying to connect: Connection refused (os error 111)"
        )));
        assert!(never_sent(&status(
            Code::Unavailable,
            "etcdserver: no leader"
        )));
        // These may have reached the member: a write could have applied.
        assert!(!never_sent(&status(Code::Unavailable, "connection reset")));
        assert!(!never_sent(&status(
            Code::Unavailable,
            "transport is closing"
        )));
        assert!(!never_sent(&status(
            Code::Unavailable,
            "etcdserver: request timed out"
        )));
        assert!(!never_sent(&status(
            Code::Unavailable,
            "etcdserver: leader changed"
        )));
        assert!(!never_sent(&status(
            Code::Unknown,
            "h2 protocol error: connection closed"
        )));
    }

    #[test]
    fn old_auth_revisions_of_both_versions_are_recognised() {
        use tonic::Code;
        assert!(auth_revision_old(&status(
            Code::FailedPrecondition,
            "etcdserver: revision of auth store is old"
        )));
        assert!(auth_revision_old(&status(
            Code::Unknown,
            "auth: revision in header is old"
        )));
        assert!(!auth_revision_old(&status(
            Code::PermissionDenied,
            "etcdserver: permission denied"
        )));
    }

    #[test]
    fn etcd_refusals_map_to_named_errors() {
        use tonic::Code;
        let ctx = Context::at("http://m1:2379");
        assert!(matches!(
            error(
                status(Code::ResourceExhausted, "etcdserver: too many requests"),
                ctx
            ),
            Error::Overloaded { .. }
        ));
        assert!(matches!(
            error(status(Code::ResourceExhausted, "etcdserver: mvcc: database space exceeded"), ctx),
            Error::Alarm { ref alarm, .. } if alarm == "NOSPACE"
        ));
        for retryable in [
            status(Code::FailedPrecondition, "etcdserver: not leader"),
            status(Code::Unavailable, "etcdserver: no leader"),
            status(Code::Internal, "h2 protocol error: stream reset"),
            status(
                Code::InvalidArgument,
                "etcdserver: revision of auth store is old",
            ),
        ] {
            let e = error(retryable, ctx);
            assert!(e.is_retryable(), "{e:?}");
            assert!(
                e.to_string().contains("http://m1:2379"),
                "names no endpoint: {e}"
            );
            assert!(
                std::error::Error::source(&e).is_some(),
                "lost the source: {e:?}"
            );
        }
        assert!(matches!(
            error(
                status(Code::PermissionDenied, "etcdserver: permission denied"),
                ctx
            ),
            Error::PermissionDenied { .. }
        ));
        let too_large = Context {
            larger: Some("key"),
            ..ctx
        };
        assert!(matches!(
            error(
                status(Code::InvalidArgument, "etcdserver: request is too large"),
                too_large
            ),
            Error::InvalidArgument {
                argument: "key",
                ..
            }
        ));
    }
}
