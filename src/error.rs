//! Exit statuses and the error kinds that map to them.

use std::fmt;

/// Exit status: done.
pub const EXIT_OK: u8 = 0;
/// Exit status: the image is not based on the given old base (or fails the layer and
/// history consistency checks), so it cannot be split.
pub const EXIT_NOT_BASED: u8 = 1;
/// Exit status: any other error.
pub const EXIT_ERROR: u8 = 2;

/// An error that is its message: `Display` writes it, and it is an `Error`.
macro_rules! message_error {
    ($name:ident) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::error::Error for $name {}
    };
}

/// The image cannot be split at the given base. Carried in an `anyhow::Error` chain and
/// turned into exit status 1 by `main`.
#[derive(Debug)]
pub struct NotBased(pub String);
message_error!(NotBased);

/// The rebase is refused by a contract: a label that must stay the same between the old
/// and the new base differs, or the image is labelled not rebasable. Exit status 1, as
/// `NotBased`: the image is left as it is, and a fleet run reports it `skipped`.
#[derive(Debug)]
pub struct Refused(pub String);
message_error!(Refused);

/// The exit status for an error: 1 when any error in its chain is `NotBased` or
/// `Refused`.
pub fn exit_status(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| e.is::<NotBased>() || e.is::<Refused>()) {
        EXIT_NOT_BASED
    } else {
        EXIT_ERROR
    }
}
