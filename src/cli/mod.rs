//! The command line: the only code that knows clap, stdin, stdout, stderr and the terminal.

pub mod args;
pub mod document_io;
