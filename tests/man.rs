//! The man pages in man/ against the CLI: every subcommand has a page, every option of
//! `--help` is documented, every page has the sections it must have and renders without
//! warnings. No registry needed; rendering needs groff (Debian package groff-base).

use std::path::PathBuf;
use std::process::Command;

/// Runs the binary with `args` and returns its stdout; it must succeed.
fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_image-rebase"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "image-rebase {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands listed under "Commands:" in `image-rebase --help`, with their one-line
/// summaries; clap's own `help` is left out.
fn subcommands() -> Vec<(String, String)> {
    let text = help(&["--help"]);
    let list: Vec<(String, String)> = text
        .lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let l = l.trim();
            let (name, summary) = l.split_once(char::is_whitespace)?;
            Some((name.to_string(), summary.trim().to_string()))
        })
        .filter(|(name, _)| name != "help")
        .collect();
    assert!(
        list.len() >= 6,
        "found the subcommands in image-rebase --help: {list:?}\n{text}"
    );
    list
}

/// The man page of `command` (`None`: the top-level page).
fn page_path(command: Option<&str>) -> PathBuf {
    let name = match command {
        Some(c) => format!("image-rebase-{c}.1"),
        None => "image-rebase.1".to_string(),
    };
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("man")
        .join(name)
}

fn page(command: Option<&str>) -> String {
    let path = page_path(command);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} cannot be read: {e}", path.display()))
}

/// Every `--long` option in a help text, without duplicates.
fn long_options(help: &str) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = help.as_bytes();
    let mut i = 0;
    while let Some(pos) = help[i..].find("--") {
        let start = i + pos;
        let name_start = start + 2;
        let name_end = help[name_start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .map_or(help.len(), |n| name_start + n);
        let preceded_ok = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric());
        if preceded_ok && name_end > name_start {
            let option = help[start..name_end].to_string();
            if !found.contains(&option) {
                found.push(option);
            }
        }
        i = name_end.max(start + 2);
    }
    found
}

/// Every short option (`-x,` before a long one, as clap lists them) in a help text.
fn short_options(help: &str) -> Vec<String> {
    help.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let b = l.as_bytes();
            (b.len() >= 3 && b[0] == b'-' && b[1].is_ascii_alphanumeric() && b[2] == b',')
                .then(|| l[..2].to_string())
        })
        .collect()
}

/// Whether the roff source mentions `option`, written with `\-` or `-` for each hyphen,
/// and not as the start of a longer name.
fn mentions(page: &str, option: &str) -> bool {
    let escaped = option.replace('-', "\\-");
    [option.to_string(), escaped].iter().any(|needle| {
        page.match_indices(needle.as_str()).any(|(at, _)| {
            let rest = &page[at + needle.len()..];
            let next_continues_name = rest
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                || rest.starts_with("\\-")
                || (rest.starts_with('-')
                    && rest[1..].starts_with(|c: char| c.is_ascii_alphanumeric()));
            !next_continues_name
        })
    })
}

/// The section names (`.SH`) of a page, unquoted.
fn sections(page: &str) -> Vec<String> {
    page.lines()
        .filter_map(|l| l.strip_prefix(".SH "))
        .map(|s| s.trim().trim_matches('"').to_string())
        .collect()
}

/// Every page: the top-level one and one per subcommand.
fn all_commands() -> Vec<Option<String>> {
    std::iter::once(None)
        .chain(subcommands().into_iter().map(|(c, _)| Some(c)))
        .collect()
}

fn help_of(command: Option<&str>) -> String {
    match command {
        Some(c) => help(&[c, "--help"]),
        None => help(&["--help"]),
    }
}

#[test]
fn every_subcommand_has_a_page_listed_in_the_overview() {
    let overview = page(None);
    for (command, _) in subcommands() {
        assert!(
            page_path(Some(&command)).is_file(),
            "man/image-rebase-{command}.1 is missing"
        );
        let reference = format!("image\\-rebase\\-{} (1)", command.replace('-', "\\-"));
        assert!(
            overview.contains(&reference),
            "image-rebase.1 does not list {command} as `.BR {reference}`"
        );
    }
}

#[test]
fn every_option_in_help_is_in_the_page() {
    for command in all_commands() {
        let command = command.as_deref();
        let help = help_of(command);
        let page = page(command);
        let long = long_options(&help);
        assert!(
            long.iter().any(|o| o == "--help"),
            "long options found in the help of {command:?}: {long:?}"
        );
        for option in long.iter().chain(&short_options(&help)) {
            assert!(
                mentions(&page, option),
                "{} does not document {option} (from image-rebase {} --help)",
                page_path(command).display(),
                command.unwrap_or("")
            );
        }
    }
}

#[test]
fn every_page_has_its_sections() {
    let required = [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "EXIT STATUS",
        "EXAMPLES",
    ];
    for command in all_commands() {
        let command = command.as_deref();
        let found = sections(&page(command));
        // Plumbing and the porcelain alike say what they read and what they write.
        let io: &[&str] = if command.is_some() {
            &["INPUT", "OUTPUT"]
        } else {
            &[]
        };
        for section in required.iter().chain(io) {
            assert!(
                found.iter().any(|s| s == section),
                "{} has no .SH {section} (it has {found:?})",
                page_path(command).display()
            );
        }
    }
}

#[test]
fn name_lines_match_the_help_summaries() {
    for (command, summary) in subcommands() {
        let page = page(Some(&command));
        let name_line = page
            .lines()
            .skip_while(|l| l.trim() != ".SH NAME")
            .nth(1)
            .unwrap_or_default()
            .replace("\\-", "-");
        // "Fetch an image's manifest ... (plumbing)" -> "fetch an image's manifest ..."
        let summary = summary
            .trim_end_matches("(plumbing)")
            .trim_end_matches("(porcelain)")
            .trim();
        let mut chars = summary.chars();
        let summary: String = chars
            .next()
            .map(|c| c.to_lowercase().chain(chars).collect())
            .unwrap_or_default();
        assert_eq!(
            name_line,
            format!("image-rebase-{command} - {summary}"),
            "the NAME line of image-rebase-{command}.1"
        );
    }
}

#[test]
fn every_page_renders_without_warnings() {
    for command in all_commands() {
        let path = page_path(command.as_deref());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.is_ascii(),
            "{} has non-ASCII characters: use roff escapes",
            path.display()
        );
        let out = Command::new("groff")
            .args(["-man", "-ww", "-z", "-Tutf8"])
            .arg(&path)
            .output()
            .expect("groff is installed (Debian package groff-base)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "groff -man -ww warns about {}: {stderr}",
            path.display()
        );
    }
}

#[test]
fn option_extraction_finds_what_clap_prints() {
    let help = "  -t, --tag <TAG>  Tag\n      --old-base <OLD_BASE>  x --as\n  -h, --help  Print";
    assert_eq!(
        long_options(help),
        ["--tag", "--old-base", "--as", "--help"]
    );
    assert_eq!(short_options(help), ["-t", "-h"]);
    assert!(mentions(r".BR \-t \-\-tag", "--tag"));
    assert!(mentions("--tag x", "--tag"));
    assert!(!mentions(r"\-\-tags", "--tag"));
    assert!(!mentions(r"\-\-old\-base\-ref", "--old-base"));
    assert!(mentions(r"\-\-old\-base ref", "--old-base"));
}
