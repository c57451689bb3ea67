//! The instances of one service as seen through a follower: parsing entries and
//! turning store changes into service events.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::warn;

use super::probe::verdict::{self, Entry};
use super::{validate, Format, ProbeVerdict, ServiceEvent, ServiceEventKind, ServiceInfo, Source};
use crate::backend::{EventKind, KeyValue, Revision};
use crate::context::Context;
use crate::follow::Change;

pub(crate) struct ServiceView {
    source: Source,
    coord: Arc<Context>,
    /// Each instance key's entry as registered, with the key's create revision.
    registered: BTreeMap<Vec<u8>, (ServiceInfo, Revision)>,
    /// Each instance key's verdict, by the instance's key (native format only).
    verdicts: BTreeMap<Vec<u8>, ProbeVerdict>,
    /// The instances as read: each registered one with its verdict folded in.
    instances: BTreeMap<Vec<u8>, ServiceInfo>,
}

impl ServiceView {
    pub(crate) fn new(source: &Source, coord: Arc<Context>) -> Self {
        ServiceView {
            source: source.clone(),
            coord,
            registered: BTreeMap::new(),
            verdicts: BTreeMap::new(),
            instances: BTreeMap::new(),
        }
    }

    /// The instance an entry describes, if it is a valid one for its key; a
    /// malformed entry is logged, counted and skipped.
    fn parse(&self, key: &[u8], value: &[u8]) -> Option<ServiceInfo> {
        let key = String::from_utf8_lossy(key);
        let problem = match self.source.format {
            Format::Native => {
                let id = key.rsplit('/').next().unwrap_or_default();
                match serde_json::from_slice::<ServiceInfo>(value) {
                    Err(e) => e.to_string(),
                    Ok(info) if info.name != self.source.name || info.id != id => format!(
                        "it describes {}/{}, not the instance its key names",
                        info.name, info.id
                    ),
                    Ok(info) => match validate(&info, usize::MAX) {
                        Ok(_) => return Some(info),
                        Err(e) => e.to_string(),
                    },
                }
            }
            Format::EtcdNaming { .. } => {
                let id = key.strip_prefix(&self.source.prefix).unwrap_or(&key);
                match super::etcd_naming::decode(&self.source.name, id, value) {
                    Ok(info) => return Some(info),
                    Err(e) => e,
                }
            }
        };
        self.coord.malformed_entries.fetch_add(1, Ordering::Relaxed);
        warn!(%key, problem, "skipping a malformed registry entry");
        None
    }

    /// Take in every key of a read of the service's prefix.
    pub(crate) fn load(&mut self, kvs: &[KeyValue]) {
        for kv in kvs {
            self.apply(&Change {
                kind: EventKind::Put,
                key: kv.key.clone(),
                value: kv.value.clone(),
                version: kv.mod_revision,
                create_revision: kv.create_revision,
                resync: false,
            });
        }
    }

    /// Apply a change; the event it makes for users, if the instance set changed.
    pub(crate) fn apply(&mut self, change: &Change) -> Option<ServiceEvent> {
        let entry = match self.source.format {
            Format::Native => verdict::entry(self.source.prefix.as_bytes(), &change.key),
            Format::EtcdNaming { .. } => Entry::Instance,
        };
        let instance_key = match entry {
            Entry::Instance => {
                let parsed = match change.kind {
                    EventKind::Put => self.parse(&change.key, &change.value),
                    EventKind::Delete => None,
                };
                match parsed {
                    Some(info) => self
                        .registered
                        .insert(change.key.clone(), (info, change.create_revision)),
                    // Deleted, or overwritten by something that is not an instance.
                    None => self.registered.remove(&change.key),
                };
                change.key.clone()
            }
            Entry::Verdict { instance_key } => {
                let verdict = match change.kind {
                    EventKind::Put => ProbeVerdict::decode(&change.value),
                    EventKind::Delete => None,
                };
                match verdict {
                    Some(v) => self.verdicts.insert(instance_key.to_vec(), v),
                    None => self.verdicts.remove(instance_key),
                };
                instance_key.to_vec()
            }
            Entry::Other => return None,
        };
        self.refresh(instance_key)
    }

    /// Fold `key`'s verdict into its instance again; the event, if the
    /// instance as read changed.
    fn refresh(&mut self, key: Vec<u8>) -> Option<ServiceEvent> {
        match self.registered.get(&key) {
            Some((info, created)) => {
                let info = info.clone().with_verdict(*created, self.verdicts.get(&key));
                let previous = self.instances.insert(key, info.clone());
                (previous.as_ref() != Some(&info)).then_some(ServiceEvent {
                    kind: ServiceEventKind::Put,
                    service: info,
                })
            }
            None => self.instances.remove(&key).map(|info| ServiceEvent {
                kind: ServiceEventKind::Delete,
                service: info,
            }),
        }
    }

    /// The instances, by id.
    pub(crate) fn instances(&self) -> Vec<ServiceInfo> {
        let mut all: Vec<_> = self.instances.values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }
}
