//! A string that must never be printed: passwords, tokens, auth fields.

use std::fmt;

/// A secret value. `Debug` prints `Secret(***)`; there is no `Display`, so it cannot end
/// up in a message by accident. `expose` is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(
            format!("{:?}", Some(vec![s.clone()])),
            "Some([Secret(***)])"
        );
        assert_eq!(s.expose(), "hunter2");
    }
}
