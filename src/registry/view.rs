//! The instances of one service as seen through a follower: parsing entries and
//! turning store changes into service events.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::warn;

use super::{validate, Format, ServiceEvent, ServiceEventKind, ServiceInfo, Source};
use crate::backend::EventKind;
use crate::context::Context;
use crate::follow::Change;

pub(crate) struct ServiceView {
    source: Source,
    coord: Arc<Context>,
    instances: BTreeMap<Vec<u8>, ServiceInfo>,
}

impl ServiceView {
    pub(crate) fn new(source: &Source, coord: Arc<Context>) -> Self {
        ServiceView {
            source: source.clone(),
            coord,
            instances: BTreeMap::new(),
        }
    }

    /// The instance an entry describes, if it is a valid one for its key; a
    /// malformed entry is logged, counted and skipped.
    pub(crate) fn parse(&self, key: &[u8], value: &[u8]) -> Option<ServiceInfo> {
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

    /// Apply a change; the event it makes for users, if the instance set changed.
    pub(crate) fn apply(&mut self, change: &Change) -> Option<ServiceEvent> {
        let parsed = match change.kind {
            EventKind::Put => self.parse(&change.key, &change.value),
            EventKind::Delete => None,
        };
        match parsed {
            Some(info) => {
                let previous = self.instances.insert(change.key.clone(), info.clone());
                (previous.as_ref() != Some(&info)).then_some(ServiceEvent {
                    kind: ServiceEventKind::Put,
                    service: info,
                })
            }
            // Deleted, or overwritten by something that is not an instance.
            None => self.instances.remove(&change.key).map(|info| ServiceEvent {
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
