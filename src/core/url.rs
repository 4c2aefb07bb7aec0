//! Resolving the URLs servers hand back (`Location: /files/abc`) against the URL the request
//! went to, as RFC 3986 §5.2 says, without a browser.
//!
//! Only what upload servers send is needed: absolute URLs, network-path (`//host/p`),
//! absolute-path (`/p`), relative-path (`p`, `../p`) and query-only references.

/// Resolves `reference` against the absolute `base` URL.
///
/// Returns `None` when `base` is not an absolute URL with a scheme and an authority.
pub fn resolve(base: &str, reference: &str) -> Option<String> {
    let reference = reference.trim();
    let (scheme, rest) = split_scheme(base)?;
    let rest = rest.strip_prefix("//")?;
    let (authority, base_path_and_more) = split_before(rest, &['/', '?', '#']);
    let base_no_fragment = base_path_and_more.split('#').next().unwrap_or("");
    let (base_path, base_query) = split_before(base_no_fragment, &['?']);

    if split_scheme(reference).is_some() {
        return Some(reference.to_owned());
    }
    if let Some(net) = reference.strip_prefix("//") {
        return Some(format!("{scheme}://{net}"));
    }
    let (ref_path, ref_tail) = split_before(reference, &['?', '#']);
    let path = if ref_path.is_empty() {
        let tail = if ref_tail.starts_with('#') {
            format!("{base_query}{ref_tail}")
        } else {
            ref_tail.to_owned()
        };
        return Some(format!("{scheme}://{authority}{base_path}{tail}"));
    } else if ref_path.starts_with('/') {
        remove_dot_segments(ref_path)
    } else {
        let dir = match base_path.rsplit_once('/') {
            Some((before, _)) => format!("{before}/"),
            None => "/".to_owned(),
        };
        remove_dot_segments(&format!("{dir}{ref_path}"))
    };
    Some(format!("{scheme}://{authority}{path}{ref_tail}"))
}

/// Splits `scheme:rest` when the string starts with a valid scheme.
fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = s.split_once(':')?;
    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (first_ok && rest_ok).then_some((scheme, rest))
}

/// `s` split before the first of `delimiters`, the delimiter starting the second part;
/// `(s, "")` when there is none. (Not `&s[..i]`: a slice by index keeps std's panic
/// message code, with its Unicode tables, in the wasm.)
fn split_before<'a>(s: &'a str, delimiters: &[char]) -> (&'a str, &'a str) {
    s.find(delimiters)
        .and_then(|i| s.split_at_checked(i))
        .unwrap_or((s, ""))
}

/// RFC 3986 §5.2.4 for an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::resolve;

    const BASE: &str = "https://up.example.com/api/files/?tenant=1#frag";

    #[test]
    fn resolves_the_forms_servers_send() {
        let cases = [
            ("https://cdn.example.net/x", "https://cdn.example.net/x"),
            ("//other.example/u/1", "https://other.example/u/1"),
            ("/files/abc", "https://up.example.com/files/abc"),
            ("abc", "https://up.example.com/api/files/abc"),
            ("./abc", "https://up.example.com/api/files/abc"),
            ("../abc", "https://up.example.com/api/abc"),
            ("../../../abc", "https://up.example.com/abc"),
            ("abc?x=1", "https://up.example.com/api/files/abc?x=1"),
            ("?x=2", "https://up.example.com/api/files/?x=2"),
            ("", "https://up.example.com/api/files/"),
            ("  /padded  ", "https://up.example.com/padded"),
        ];
        for (reference, expected) in cases {
            assert_eq!(
                resolve(BASE, reference).as_deref(),
                Some(expected),
                "{reference:?}"
            );
        }
    }

    #[test]
    fn base_without_path_and_with_port() {
        assert_eq!(
            resolve("http://127.0.0.1:8080", "files/1").as_deref(),
            Some("http://127.0.0.1:8080/files/1")
        );
        assert_eq!(
            resolve("http://127.0.0.1:8080/files", "a/./b/../c").as_deref(),
            Some("http://127.0.0.1:8080/a/c")
        );
    }

    #[test]
    fn non_ascii_paths_and_queries() {
        let base = "https://h.example/dossiers/été/upload?ü=1";
        assert_eq!(
            resolve(base, "ñ").as_deref(),
            Some("https://h.example/dossiers/été/ñ")
        );
        assert_eq!(
            resolve(base, "?é=2").as_deref(),
            Some("https://h.example/dossiers/été/upload?é=2")
        );
        assert_eq!(
            resolve(base, "#à").as_deref(),
            Some("https://h.example/dossiers/été/upload?ü=1#à")
        );
        assert_eq!(
            resolve("https://h.example", "ö/x").as_deref(),
            Some("https://h.example/ö/x")
        );
    }

    #[test]
    fn relative_base_is_refused() {
        assert_eq!(resolve("/files/", "abc"), None);
        assert_eq!(resolve("mailto:x@y", "abc"), None);
    }
}
