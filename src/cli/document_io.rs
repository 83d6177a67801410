//! Reading and writing the document on stdin and stdout.

use crate::document::Document;
use anyhow::{Context, Result, bail};
use std::io::{IsTerminal, Read, Write};

/// Largest document read from stdin.
const MAX_DOCUMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Reads the document from stdin. `command` names the reader in messages. When `optional`,
/// a terminal or empty stdin gives a new, empty document; otherwise it is an error.
pub fn read_document(command: &str, optional: bool) -> Result<Document> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        if optional {
            return Ok(Document::default());
        }
        bail!(
            "{command} reads the JSON document of the previous step on stdin, and stdin is a terminal; \
             pipe it in, e.g. `image-rebase fetch-manifest IMAGE | ... | image-rebase {command}`"
        );
    }
    let mut text = String::new();
    stdin
        .lock()
        .take(MAX_DOCUMENT_BYTES + 1)
        .read_to_string(&mut text)
        .context("reading the document from stdin")?;
    if text.len() as u64 > MAX_DOCUMENT_BYTES {
        bail!("the document on stdin is larger than {MAX_DOCUMENT_BYTES} bytes");
    }
    if text.trim().is_empty() {
        if optional {
            return Ok(Document::default());
        }
        bail!(
            "{command} needs the JSON document of the previous step on stdin, and stdin was empty"
        );
    }
    Document::from_json(&text).context("reading the document from stdin")
}

/// Writes the document as one line of JSON.
pub fn write_document(doc: &Document, out: &mut impl Write) -> Result<()> {
    writeln!(out, "{}", doc.to_json())?;
    out.flush()?;
    Ok(())
}
