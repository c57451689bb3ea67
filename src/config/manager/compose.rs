//! A composed manager: the value assembled from every key under a prefix,
//! read again at each change.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::{ConfigManagerError, ManagerInner};
use crate::error::{Error, Result};

impl<T> ManagerInner<T>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    /// A composed manager: read every key under the prefix, assemble them and
    /// offer the result; whether the store answered.
    pub(super) async fn reread(&self) -> bool {
        let full = self.center.full(&self.key);
        let backend = self.center.backend();
        let read = self
            .center
            .retry()
            .run("config prefix read", |_| {
                backend.range(crate::backend::RangeRequest::prefix(full.clone()))
            })
            .await;
        let resp = match read {
            Ok(r) => r,
            Err(e) => {
                self.record_error(ConfigManagerError::Store(Arc::new(e)));
                return false;
            }
        };
        self.status.synced();
        let Some(last) = &self.composed else {
            return true;
        };
        if resp.kvs.is_empty() {
            *last.lock().unwrap_or_else(|e| e.into_inner()) = None;
            self.revert_to_default();
            return true;
        }
        let assembled = self.assemble(&full, &resp.kvs);
        let value = match assembled {
            Ok(v) => v,
            Err(e) => {
                self.offer(resp.revision, Some(Err(e)));
                return true;
            }
        };
        if last.lock().unwrap_or_else(|e| e.into_inner()).as_ref() == Some(&value) {
            // The store holds the value in force again (after a refused one).
            *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
            return true;
        }
        let decoded = serde_json::from_value::<T>(value.clone()).map_err(|e| Error::Codec {
            key: self.key.clone(),
            reason: e.to_string(),
        });
        self.offer(resp.revision, Some(decoded));
        if self.version.load(Ordering::SeqCst) == resp.revision {
            *last.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
        }
        true
    }

    /// The keys under the prefix as one JSON object, each at its path.
    fn assemble(&self, full: &str, kvs: &[crate::backend::KeyValue]) -> Result<serde_json::Value> {
        let mut root = serde_json::Map::new();
        for kv in kvs {
            let store_key = kv.key_str();
            let rest = store_key.strip_prefix(full).unwrap_or(&store_key);
            let key = format!("{}{rest}", self.key);
            let value: serde_json::Value = self.center.decode(&key, &kv.value)?;
            let clash = || Error::Codec {
                key: key.clone(),
                reason: "a key under the prefix is both a value and a folder".to_string(),
            };
            let mut segments: Vec<&str> = rest.split('/').collect();
            let leaf = segments.pop().unwrap_or_default();
            let mut node = &mut root;
            for segment in segments {
                let next = node
                    .entry(segment.to_string())
                    .or_insert_with(|| serde_json::Value::Object(Default::default()));
                node = next.as_object_mut().ok_or_else(clash)?;
            }
            if node.insert(leaf.to_string(), value).is_some() {
                return Err(clash());
            }
        }
        Ok(serde_json::Value::Object(root))
    }
}
