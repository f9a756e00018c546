//! The two ways a client can merge into session data, defined next to the storage trait
//! (engines without a merge of their own apply them in `SessionStore::update_session_data`'s
//! default) and re-exported here for the routes.

pub use sessiond_store::merge::{merge_patch, shallow_merge};
