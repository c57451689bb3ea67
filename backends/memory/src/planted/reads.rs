//! Planted bugs of reads (1–9, 40) and of compaction (24, 25).

use coordkit::{
    Backend, Error, KeyRange, RangeRequest, RangeResponse, Result, Revision, SortOrder,
};

use super::PlantedClient;

impl PlantedClient {
    pub(super) async fn planted_range(&self, mut request: RangeRequest) -> Result<RangeResponse> {
        if self.is(40) && request.keys == KeyRange::Key(Vec::new()) {
            // An empty key is read as a key nobody wrote.
            return Ok(RangeResponse {
                kvs: Vec::new(),
                count: 0,
                more: false,
                revision: self.inner.revision(),
            });
        }
        let asked = request.clone();
        if self.is(1) && request.revision.is_some() {
            // The past revision is checked, then the latest state is read.
            self.inner.range(request.clone()).await?;
            request.revision = None;
        }
        if self.is(8) && request.revision > Some(self.inner.revision()) {
            request.revision = None;
        }
        if self.is(3) && request.sort_by_create_revision == Some(SortOrder::Descend) {
            request.sort_by_create_revision = Some(SortOrder::Ascend);
        }
        if self.is(5) {
            request.max_create_revision = request.max_create_revision.map(|r| r - 1);
        }
        if self.is(6) {
            request.count_only = false;
        }
        let mut response = match self.inner.range(request.clone()).await {
            Err(Error::Compacted { compact_revision }) if self.is(9) => {
                request.revision = Some(compact_revision);
                self.inner.range(request).await?
            }
            other => other?,
        };
        if self.is(7) {
            self.add_the_key_after(&asked, &mut response).await?;
        }
        if self.is(2) {
            response.count = response.kvs.len() as i64;
        }
        if self.is(4) {
            response.more = false;
        }
        for kv in &mut response.kvs {
            self.shown(kv);
        }
        Ok(response)
    }

    /// Bug 7: a prefix range also returns the first key after the prefix.
    async fn add_the_key_after(
        &self,
        asked: &RangeRequest,
        response: &mut RangeResponse,
    ) -> Result<()> {
        let KeyRange::Prefix(prefix) = &asked.keys else {
            return Ok(());
        };
        if prefix.is_empty() || asked.count_only {
            return Ok(());
        }
        let end = KeyRange::prefix_end(prefix);
        let all = self
            .inner
            .range(RangeRequest::prefix(Vec::new()).at_revision(response.revision))
            .await?;
        if let Some(after) = all.kvs.into_iter().find(|kv| kv.key >= end) {
            response.kvs.push(after);
            response.count += 1;
        }
        Ok(())
    }

    pub(super) async fn planted_compact(&self, revision: Revision) -> Result<()> {
        if self.is(24) && revision > self.inner.revision() {
            // Bug 24: a compaction at a future revision is accepted.
            return Ok(());
        }
        self.lose_answer_after_applying();
        match self.inner.compact(revision).await {
            // Bug 25: compacting a compacted revision is accepted.
            Err(Error::Compacted { .. }) if self.is(25) => Ok(()),
            other => other,
        }
    }
}
