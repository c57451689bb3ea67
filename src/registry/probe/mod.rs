//! Health seen from outside: verdicts on instances, written beside them by a
//! prober, and read with them.
//!
//! A verdict lives at `<namespace>service/<name>/<id>/probe`, under the
//! service's prefix, so a read or watch of the service sees instances and
//! verdicts together (one read, one watch, in order). The instance's own key is
//! never written by a prober: its registration keeps its key, its keeper and its
//! compare-and-set updates to itself. An ephemeral instance's verdict is on the
//! instance's lease and ends with it; a verdict names the registration it judged
//! (the key's create revision), so a registration made again is not judged by
//! its predecessor's verdict.
//!
//! The library part ([`RegistryService::probe_targets`],
//! [`RegistryService::record_verdict`], [`RegistryService::remove_probed`]) needs
//! no feature: any checker can record verdicts. The prober that checks over
//! HTTP, TCP and gRPC (`RegistryService::prober`) needs the `probe` feature.

#[cfg(feature = "probe")]
mod check;
#[cfg(feature = "probe")]
mod prober;
#[cfg(feature = "probe")]
mod streak;
pub(crate) mod verdict;

#[cfg(feature = "probe")]
pub use check::Check;
#[cfg(feature = "probe")]
pub use prober::{Prober, ProberConfig, ProberEvent};
pub use verdict::ProbeVerdict;

use crate::ambiguous::{first_change_after, outcome_unknown};
use crate::backend::{
    Compare, CompareOp, DeleteRequest, LeaseId, PutRequest, RangeRequest, Revision, Txn,
};
use crate::error::{Error, Result};
use crate::registry::{segment, RegistryService, ServiceInfo};
use verdict::Entry;

/// An instance as a prober finds it: its entry as registered (its own health,
/// no verdict folded in), its key's revisions and lease, and the verdict stored
/// beside it, if any. Taken by [`RegistryService::record_verdict`] and
/// [`RegistryService::remove_probed`] as the state their writes compare against.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProbeTarget {
    /// The instance as registered.
    pub info: ServiceInfo,
    /// The instance key's mod revision.
    pub mod_revision: Revision,
    /// The instance key's create revision (the registration's identity).
    pub create_revision: Revision,
    /// The instance's lease (`None` for a persistent instance).
    pub lease: Option<LeaseId>,
    /// The stored verdict (on this registration or an earlier one), if any.
    pub verdict: Option<ProbeVerdict>,
    /// The verdict key's mod revision, 0 when there is none.
    pub verdict_revision: Revision,
    /// The store revision of the read that found it.
    pub read_at: Revision,
}

impl ProbeTarget {
    /// The instance as every read of the registry shows it: the stored
    /// verdict folded in, if it judged this registration.
    pub fn as_read(&self) -> ServiceInfo {
        self.info
            .clone()
            .with_verdict(self.create_revision, self.verdict.as_ref())
    }

    /// The stored verdict, if it judged this registration.
    pub fn current_verdict(&self) -> Option<&ProbeVerdict> {
        self.verdict
            .as_ref()
            .filter(|v| v.instance == self.create_revision)
    }
}

impl RegistryService {
    /// The instances of `name` with their revisions and stored verdicts, by id
    /// (one read of the service's prefix). Malformed entries are skipped. A read
    /// only: dropping it leaves nothing.
    pub async fn probe_targets(&self, name: &str) -> Result<Vec<ProbeTarget>> {
        segment("name", name)?;
        let prefix = self.coord.keys.service(name);
        let backend = &self.coord.backend;
        let read = self
            .coord
            .retry
            .run("probe targets", |_| {
                backend.range(RangeRequest::prefix(prefix.clone()))
            })
            .await?;
        let kvs = read.kvs;
        let mut verdicts = std::collections::HashMap::new();
        for kv in &kvs {
            if let Entry::Verdict { instance_key } = verdict::entry(prefix.as_bytes(), &kv.key) {
                if let Some(v) = ProbeVerdict::decode(&kv.value) {
                    verdicts.insert(instance_key.to_vec(), (v, kv.mod_revision));
                }
            }
        }
        let mut targets = Vec::new();
        for kv in &kvs {
            if verdict::entry(prefix.as_bytes(), &kv.key) != Entry::Instance {
                continue;
            }
            let Ok(info) = serde_json::from_slice::<ServiceInfo>(&kv.value) else {
                continue;
            };
            if info.name != name || kv.key != self.coord.keys.instance(name, &info.id).as_bytes() {
                continue;
            }
            let (verdict, verdict_revision) = match verdicts.remove(&kv.key) {
                Some((v, at)) => (Some(v), at),
                None => (None, 0),
            };
            targets.push(ProbeTarget {
                info,
                mod_revision: kv.mod_revision,
                create_revision: kv.create_revision,
                lease: kv.lease,
                verdict,
                verdict_revision,
                read_at: read.revision,
            });
        }
        targets.sort_by(|a, b| a.info.id.cmp(&b.info.id));
        Ok(targets)
    }

    /// Store `verdict` beside `target`'s instance — only if the instance's key
    /// and its verdict key are still as `target` read them (a newer
    /// registration, an update of the instance, another prober's verdict:
    /// nothing is written) and `fence` (a leadership's compare, see
    /// [`LatchState::compare`](crate::LatchState::compare)) holds. The verdict
    /// is written on the instance's lease, so it ends with the instance.
    /// Returns whether it was written.
    ///
    /// A try whose answer was lost is tried again; the compares let at most one
    /// try apply, and a later answer of "not written" is checked against the
    /// key's first change after `target`: `true` when it is this verdict.
    /// Errors: `InvalidArgument` when `verdict` does not name `target`'s
    /// registration (its create revision); `OutcomeUnknown` when no answer
    /// came and the store could not be asked; other store errors. Cancelling
    /// leaves the verdict written or not, never anything else.
    pub async fn record_verdict(
        &self,
        target: &ProbeTarget,
        verdict: &ProbeVerdict,
        fence: Option<Compare>,
    ) -> Result<bool> {
        if verdict.instance != target.create_revision {
            return Err(Error::invalid(
                "verdict",
                format!(
                    "judges the registration created at {}, not {}",
                    verdict.instance, target.create_revision
                ),
            ));
        }
        let (instance, key) = self.probe_keys(&target.info);
        let value = verdict.encode();
        let mut put = PutRequest::new(key.clone(), value.clone());
        if let Some(lease) = target.lease {
            put = put.with_lease(lease);
        }
        let txn = Txn::new()
            .when(
                [
                    Compare::mod_revision(instance, CompareOp::Equal, target.mod_revision),
                    Compare::mod_revision(key.clone(), CompareOp::Equal, target.verdict_revision),
                ]
                .into_iter()
                .chain(fence),
            )
            .and_then([put]);
        let written =
            |kv: Option<&crate::backend::KeyValue>| kv.is_some_and(|kv| kv.value == value);
        self.guarded_write("record verdict", txn, &key, target.read_at, written)
            .await
    }

    /// Remove `target`'s instance — persistent ones only: an ephemeral instance
    /// ends with its lease — with its id-index entry and its verdict, only if
    /// both keys are still as `target` read them and `fence` holds. Returns
    /// whether it was removed (by this call; after a lost answer, also when the
    /// instance was gone at its first change after `target`).
    ///
    /// Errors: `InvalidArgument` for an instance with a lease;
    /// `OutcomeUnknown` when no answer came and the store could not be asked;
    /// other store errors. One transaction: cancelling leaves the instance
    /// whole or removed whole.
    pub async fn remove_probed(
        &self,
        target: &ProbeTarget,
        fence: Option<Compare>,
    ) -> Result<bool> {
        if target.lease.is_some() || !target.info.persistent {
            return Err(Error::invalid(
                "target",
                "only a persistent instance is removed by a prober; an ephemeral one ends with its lease",
            ));
        }
        let (instance, verdict) = self.probe_keys(&target.info);
        let index = self
            .coord
            .keys
            .id_index_entry(&target.info.id, &target.info.name);
        let txn = Txn::new()
            .when(
                [
                    Compare::mod_revision(instance.clone(), CompareOp::Equal, target.mod_revision),
                    Compare::mod_revision(
                        verdict.clone(),
                        CompareOp::Equal,
                        target.verdict_revision,
                    ),
                ]
                .into_iter()
                .chain(fence),
            )
            .and_then([
                DeleteRequest::key(instance.clone()),
                DeleteRequest::key(index),
                DeleteRequest::key(verdict),
            ]);
        // The instance's first change after the read being its removal is ours
        // (or an equal removal: either way it is gone).
        self.guarded_write(
            "remove probed instance",
            txn,
            &instance,
            target.read_at,
            |kv| kv.is_none(),
        )
        .await
    }

    /// The instance's key and its verdict's.
    fn probe_keys(&self, info: &ServiceInfo) -> (String, String) {
        (
            self.coord.keys.instance(&info.name, &info.id),
            self.coord.keys.probe_verdict(&info.name, &info.id),
        )
    }

    /// Send `txn` (its compares make at most one try apply) under the retry
    /// policy. When a try may have applied but the last answer says it did
    /// not, `key`'s first change after the read at `read_at` tells: `ours`
    /// judges the key as that change left it (`None`: deleted).
    async fn guarded_write(
        &self,
        operation: &'static str,
        txn: Txn,
        key: &str,
        read_at: Revision,
        ours: impl Fn(Option<&crate::backend::KeyValue>) -> bool,
    ) -> Result<bool> {
        let backend = &self.coord.backend;
        let mut in_doubt = false;
        let sent = self
            .coord
            .retry
            .run(operation, |attempt| {
                in_doubt |= attempt > 1;
                backend.txn(txn.clone())
            })
            .await;
        let failure = match sent {
            Ok(r) if r.succeeded => return Ok(true),
            Ok(_) if !in_doubt => return Ok(false),
            Ok(_) => None,
            // The instance's lease ended: the instance is gone.
            Err(Error::LeaseNotFound { .. }) if !in_doubt => return Ok(false),
            Err(e) if !e.is_retryable() && !in_doubt => return Err(e),
            Err(e) => Some(e),
        };
        let unknown = |why: String| outcome_unknown(operation, why);
        match first_change_after(backend.as_ref(), key, read_at).await {
            Ok(Some(at)) => {
                let then = backend
                    .range(RangeRequest::key(key.to_string()).at_revision(at))
                    .await
                    .map_err(|e| unknown(e.to_string()))?;
                Ok(ours(then.kvs.first()))
            }
            Ok(None) => match failure {
                None => Ok(false),
                Some(e) => Err(unknown(format!("{e}; the write may still apply"))),
            },
            Err(e) => Err(unknown(e.to_string())),
        }
    }
}
