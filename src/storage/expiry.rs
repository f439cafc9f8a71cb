//! Finding keys whose time is up, for the leader's expiry proposals.
//!
//! Apply already treats an expired key as absent, so deleting it is only
//! housekeeping: the leader periodically calls [`Store::expired_keys`] and
//! proposes `Op::ExpireKeys` with the result, and apply deletes those still
//! expired at the proposal's stamped time. The candidates come from the
//! generation's expiry index (expire-at ++ key, maintained in the same
//! batches as the data), so finding them is a short range scan from the
//! start of the index, however large the store is.

use bytes::Bytes;

use super::encoding::split_expiry_key;
use super::{StorageError, Store};

impl Store {
    /// Up to `limit` keys whose expiry is not after `now_ms`, earliest
    /// first.
    ///
    /// # Errors
    /// Any fjall error, or an index entry that does not decode.
    pub fn expired_keys(&self, now_ms: u64, limit: usize) -> Result<Vec<Bytes>, StorageError> {
        let generation = self.current();
        let items = match now_ms.checked_add(1) {
            Some(end) => generation.expiry.range(..end.to_be_bytes()),
            None => generation.expiry.iter(),
        };
        let mut out = Vec::new();
        for item in items.take(limit) {
            let raw = item.key()?;
            let (_, key) = split_expiry_key(&raw)?;
            out.push(Bytes::copy_from_slice(key));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::op::{Deadline, Op, SetCondition, SetExpiry};
    use crate::storage::tests::open_store;

    #[test]
    fn expired_keys_come_from_the_index_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let mut batch = store.begin();
        for (key, at) in [("late", 300), ("early", 100), ("middle", 200)] {
            let op = Op::Set {
                key: Bytes::from_static(key.as_bytes()),
                value: Bytes::from_static(b"v"),
                condition: SetCondition::Always,
                expiry: SetExpiry::Set(Deadline::At(at)),
                get: false,
            };
            batch.apply(&op, 0).unwrap();
        }
        batch
            .apply(
                &Op::MSet(vec![(
                    Bytes::from_static(b"forever"),
                    Bytes::from_static(b"v"),
                )]),
                0,
            )
            .unwrap();
        batch.commit().unwrap();

        assert!(store.expired_keys(99, 10).unwrap().is_empty());
        assert_eq!(
            store.expired_keys(100, 10).unwrap(),
            vec![Bytes::from_static(b"early")]
        );
        assert_eq!(
            store.expired_keys(250, 10).unwrap(),
            vec![Bytes::from_static(b"early"), Bytes::from_static(b"middle")]
        );
        assert_eq!(store.expired_keys(u64::MAX, 2).unwrap().len(), 2);
        assert_eq!(store.expired_keys(u64::MAX, 10).unwrap().len(), 3);
        assert!(store.expired_keys(u64::MAX, 0).unwrap().is_empty());
    }
}
