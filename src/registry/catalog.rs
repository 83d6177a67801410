//! What a registry holds: its catalog of repositories and each repository's tags, read
//! page by page as the registry's `Link: <...>; rel="next"` header leads, bounded in the
//! number of pages and the size of each.

use super::{Client, api_path, http};
use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Entries asked for per page: distribution refuses more than 1,000
/// (`PAGINATION_NUMBER_INVALID`).
pub const PAGE_SIZE: usize = 1000;
/// Most pages followed for one list (10 million entries at 1,000 a page).
const MAX_PAGES: usize = 10_000;
/// Largest page accepted.
const MAX_PAGE_BYTES: u64 = 16 * 1024 * 1024;

impl Client {
    /// Every repository in the catalog of `registry`, in the registry's order.
    pub fn catalog(&self, registry: &str) -> Result<Vec<String>> {
        let first = format!("/v2/_catalog?n={PAGE_SIZE}");
        let names = self
            .pages(registry, "/v2/_catalog", &first, "repositories")
            .with_context(|| {
                format!(
                    "listing the catalog of {registry} (a registry without a usable catalog needs \
                     its repositories named with --repositories FILE)"
                )
            })?;
        // A name that is not a valid repository fails where it is used (`api_path`),
        // alone.
        Ok(names)
    }

    /// Every tag of `registry/repository`.
    pub fn tags(&self, registry: &str, repository: &str) -> Result<Vec<String>> {
        let path = api_path(repository, "tags", "list")?;
        let first = format!("{path}?n={PAGE_SIZE}");
        // A tag that is not a valid tag fails where it is used (`api_path`), alone.
        self.pages(registry, &path, &first, "tags")
            .with_context(|| format!("listing the tags of {registry}/{repository}"))
    }

    /// The entries under `key` of every page, from `first` on, following `Link` headers
    /// that stay on `path` of the same registry.
    fn pages(&self, registry: &str, path: &str, first: &str, key: &str) -> Result<Vec<String>> {
        let mut all = Vec::new();
        let mut next = Some(first.to_string());
        let mut pages = 0;
        while let Some(target) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                bail!("the list goes on for more than {MAX_PAGES} pages");
            }
            let (bytes, link) = self
                .transport
                .retry_cut_body(|| self.page(registry, &target))?;
            let page: Value = serde_json::from_slice(&bytes)
                .with_context(|| format!("page {pages} of the list is not valid JSON"))?;
            let entries = match page.get(key) {
                Some(Value::Array(a)) => a,
                // distribution answers `null` for a repository without tags.
                Some(Value::Null) | None => &Vec::new(),
                Some(_) => bail!("page {pages} of the list has no {key:?} array"),
            };
            let before = all.len();
            for e in entries {
                let name = e.as_str().with_context(|| {
                    format!("page {pages} of the list has a {key:?} entry that is not a string")
                })?;
                all.push(name.to_string());
            }
            if let Some(link) = link.as_deref().and_then(next_link) {
                // Resolved only now: the first page taught the registry's scheme.
                let same_list = self.transport.resolve(registry, path)?;
                let url = self.transport.resolve(registry, link)?;
                if !url.starts_with(&format!("{same_list}?")) {
                    bail!("the registry's Link header leads elsewhere ({link:?})");
                }
                if all.len() == before {
                    bail!("the registry sent an empty page with a link to another one");
                }
                next = Some(url);
            }
        }
        Ok(all)
    }

    /// One page: its body and its `Link` header.
    fn page(&self, registry: &str, target: &str) -> Result<(Vec<u8>, Option<String>)> {
        let resp = self.transport.send(registry, "GET", target, &[], None)?;
        let resp = self.expect(resp, registry, "GET", 200, "the registry refused the list")?;
        let link = resp.header("Link").map(str::to_string);
        let bytes = http::read_limited(resp, MAX_PAGE_BYTES, "list page")?;
        Ok((bytes, link))
    }
}

/// The target of the `rel="next"` link in a `Link` header, if any.
fn next_link(header: &str) -> Option<&str> {
    header.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then_some(target)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links() {
        assert_eq!(
            next_link(r#"</v2/_catalog?last=b&n=2>; rel="next""#),
            Some("/v2/_catalog?last=b&n=2")
        );
        assert_eq!(
            next_link(r#"<http://r/a>; rel="prev", <http://r/b>; rel=next"#),
            Some("http://r/b")
        );
        assert_eq!(next_link(r#"</v2/_catalog?n=2>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
        assert_eq!(next_link(""), None);
    }

    use crate::oci::media::OCI_MANIFEST;
    use crate::registry::fake::Fake;

    #[test]
    fn lists_follow_the_link_header_page_by_page() {
        let fake = Fake::start();
        let m = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        for t in 0..2500 {
            fake.put_manifest("team/app", Some(&format!("t{t:04}")), OCI_MANIFEST, m);
        }
        for r in 0..1001 {
            fake.put_manifest(&format!("many/r{r:04}"), Some("1"), OCI_MANIFEST, m);
        }
        let client = fake.client();
        let tags = client.tags(fake.addr(), "team/app").unwrap();
        assert_eq!(tags.len(), 2500);
        assert_eq!((tags[0].as_str(), tags[2499].as_str()), ("t0000", "t2499"));
        let pages = fake
            .requests()
            .into_iter()
            .filter(|r| r.path == "/v2/team/app/tags/list")
            .count();
        assert_eq!(pages, 3, "1,000 a page");
        let repos = client.catalog(fake.addr()).unwrap();
        assert_eq!(repos.len(), 1002);
        assert_eq!(fake.count("GET", "/v2/_catalog"), 2);
        let err = client.tags(fake.addr(), "nowhere").unwrap_err();
        assert!(format!("{err:#}").contains("NAME_UNKNOWN"), "{err:#}");
    }
}
