//! A cache of encoded read responses, validated against the store's change generation.
//!
//! A hit is served only when the generation read for the request equals the generation the
//! entry was built under, and the generation is read before the data is, so an entry is never
//! older than its label. Any write in any process advances the generation, so every process
//! sees its own and the others' changes at once.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Bytes;
use magnum_domain::policy::Target;

#[derive(Clone)]
pub struct CachedResponse {
    pub generation: i64,
    pub body: Bytes,
    /// For a single resource: its owner and whether it is public, to re-check policy on a hit.
    pub owner: Option<(Target, bool)>,
}

pub struct ResponseCache {
    budget_bytes: usize,
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    entries: HashMap<String, CachedResponse>,
    bytes: usize,
}

impl ResponseCache {
    /// A cache holding at most `budget_bytes` of bodies; 0 disables it.
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            budget_bytes,
            state: Mutex::new(CacheState::default()),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.budget_bytes > 0
    }

    pub fn get(&self, key: &str, generation: i64) -> Option<CachedResponse> {
        if self.budget_bytes == 0 {
            return None;
        }
        let state = self.state.lock().expect("cache lock is never poisoned");
        state
            .entries
            .get(key)
            .filter(|entry| entry.generation == generation)
            .cloned()
    }

    pub fn put(&self, key: String, entry: CachedResponse) {
        let size = entry.body.len() + key.len();
        if size > self.budget_bytes {
            return;
        }
        let mut state = self.state.lock().expect("cache lock is never poisoned");
        if state.bytes + size > self.budget_bytes {
            // Entries of older generations can never be served again; drop them first.
            let newest = entry.generation;
            state
                .entries
                .retain(|_, cached| cached.generation >= newest);
            state.bytes = state
                .entries
                .iter()
                .map(|(key, cached)| key.len() + cached.body.len())
                .sum();
            if state.bytes + size > self.budget_bytes {
                state.entries.clear();
                state.bytes = 0;
            }
        }
        if let Some(previous) = state.entries.insert(key.clone(), entry) {
            state.bytes -= previous.body.len() + key.len();
        }
        state.bytes += size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(generation: i64, body: &'static [u8]) -> CachedResponse {
        CachedResponse {
            generation,
            body: Bytes::from_static(body),
            owner: None,
        }
    }

    #[test]
    fn hits_only_for_the_same_generation() {
        let cache = ResponseCache::new(1024);
        cache.put("k".to_owned(), entry(3, b"body"));
        assert_eq!(cache.get("k", 3).unwrap().body, Bytes::from_static(b"body"));
        assert!(cache.get("k", 4).is_none());
        assert!(cache.get("other", 3).is_none());
    }

    #[test]
    fn stays_within_its_budget() {
        let cache = ResponseCache::new(30);
        cache.put("a".to_owned(), entry(1, b"0123456789"));
        cache.put("b".to_owned(), entry(1, b"0123456789"));
        cache.put("c".to_owned(), entry(2, b"0123456789"));
        assert!(cache.get("a", 1).is_none(), "older generations go first");
        assert!(cache.get("c", 2).is_some());
        cache.put("d".to_owned(), entry(2, &[b'x'; 100]));
        assert!(
            cache.get("d", 2).is_none(),
            "bodies larger than the budget are not kept"
        );
        let disabled = ResponseCache::new(0);
        disabled.put("a".to_owned(), entry(1, b""));
        assert!(disabled.get("a", 1).is_none());
        let state = cache.state.lock().unwrap();
        assert!(state.bytes <= 30);
    }
}
