//! etcd's key-values as distsync's, for ranges and watch events alike.

use bytes::Bytes;
use distsync_kv::kv::KeyValue;

/// distsync's key-value of an etcd one.
pub(crate) fn key_value(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
    }
}
