//! A run-wide single-flight cache: each value computed once per key, however many
//! threads ask at once. A lock poisoned by a panicking thread is taken over, not fatal:
//! the panicking image fails alone (fleet mode catches its panic).

use anyhow::Result;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Results computed once per run per key, even when threads ask at the same time (the
/// others wait for the first). Errors are not kept: the next caller tries again.
pub(super) struct Memo<T> {
    cells: Mutex<HashMap<String, Arc<Mutex<Option<T>>>>>,
}

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Memo {
            cells: Mutex::default(),
        }
    }
}

impl<T: Clone> Memo<T> {
    /// The value for `key`, computing it with `f` if no caller has; and whether this
    /// call computed it.
    pub(super) fn get_or_try(
        &self,
        key: String,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<(T, bool)> {
        let cell = self.cell(key);
        let mut slot = cell.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = slot.as_ref() {
            return Ok((v.clone(), false));
        }
        let v = f()?;
        *slot = Some(v.clone());
        Ok((v, true))
    }

    fn cell(&self, key: String) -> Arc<Mutex<Option<T>>> {
        self.cells
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_computed_once_and_errors_are_not_kept() {
        let memo: Memo<u32> = Memo::default();
        assert!(memo.get_or_try("k".into(), || anyhow::bail!("no")).is_err());
        assert_eq!(memo.get_or_try("k".into(), || Ok(1)).unwrap(), (1, true));
        assert_eq!(memo.get_or_try("k".into(), || Ok(2)).unwrap(), (1, false));
        assert_eq!(memo.get_or_try("j".into(), || Ok(3)).unwrap(), (3, true));
    }
}
