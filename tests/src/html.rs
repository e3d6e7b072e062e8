//! What a scripted user agent needs to drive the unit's server-rendered OAuth pages as a browser
//! would, with std only: the `<form>`s of a page (action, method, every `<input>` with its type
//! and value, the `<button>`s with a name), the fields a submission sends, URL resolution against
//! the page's URL, `application/x-www-form-urlencoded` encoding and decoding, and the
//! `name=value` pairs of a query or fragment.
//!
//! Not a general HTML parser: it reads start tags and their attributes (quoted or not, entities
//! decoded), which is all a form submission depends on. Std only, so the matrix-rust-sdk
//! project in `tests/client/` includes this same file (`#[path]`) instead of a copy.

/// One `<input>` of a form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// The `name` attribute ("" when absent: such an input is never submitted).
    pub name: String,
    /// The `type` attribute, lower-cased; `text` when absent.
    pub kind: String,
    /// The `value` attribute ("" when absent).
    pub value: String,
    /// The `id` attribute, if any (what a `<label for=...>` names).
    pub id: Option<String>,
}

/// One `<button>` of a form with its `name` and `value` (a submit button sends them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Button {
    /// The `name` attribute ("" when absent).
    pub name: String,
    /// The `value` attribute ("" when absent).
    pub value: String,
}

/// One `<form>` of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    /// The `method` attribute, lower-cased; `get` when absent, as in HTML.
    pub method: String,
    /// The `action` attribute as written ("" when absent: the page's own URL).
    pub action: String,
    /// The form's inputs in document order.
    pub inputs: Vec<Input>,
    /// The form's buttons in document order.
    pub buttons: Vec<Button>,
}

impl Form {
    /// The value of the input called `name`, if the form has one.
    pub fn input(&self, name: &str) -> Option<&Input> {
        self.inputs.iter().find(|input| input.name == name)
    }

    /// What submitting the form sends: every named hidden input with its value, then `fill`
    /// (the visible fields the user typed, and the pressed button's name and value), in order.
    pub fn submission(&self, fill: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut fields: Vec<(String, String)> = self
            .inputs
            .iter()
            .filter(|input| input.kind == "hidden" && !input.name.is_empty())
            .map(|input| (input.name.clone(), input.value.clone()))
            .collect();
        fields.extend(
            fill.iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
        );
        fields
    }
}

/// Every `<form>` of `page`, in document order.
pub fn forms(page: &str) -> Vec<Form> {
    let mut forms = Vec::new();
    let mut current: Option<Form> = None;
    for tag in start_tags(page) {
        match tag.name.as_str() {
            "form" => {
                if let Some(done) = current.take() {
                    forms.push(done);
                }
                current = Some(Form {
                    method: tag.attr("method").unwrap_or("get").to_ascii_lowercase(),
                    action: tag.attr("action").unwrap_or("").to_owned(),
                    inputs: Vec::new(),
                    buttons: Vec::new(),
                });
            }
            "/form" => {
                if let Some(done) = current.take() {
                    forms.push(done);
                }
            }
            "input" => {
                if let Some(form) = current.as_mut() {
                    form.inputs.push(Input {
                        name: tag.attr("name").unwrap_or("").to_owned(),
                        kind: tag.attr("type").unwrap_or("text").to_ascii_lowercase(),
                        value: tag.attr("value").unwrap_or("").to_owned(),
                        id: tag.attr("id").map(str::to_owned),
                    });
                }
            }
            "button" => {
                if let Some(form) = current.as_mut() {
                    form.buttons.push(Button {
                        name: tag.attr("name").unwrap_or("").to_owned(),
                        value: tag.attr("value").unwrap_or("").to_owned(),
                    });
                }
            }
            _ => {}
        }
    }
    if let Some(done) = current {
        forms.push(done);
    }
    forms
}

/// The `for` attribute of every `<label>` of `page`.
pub fn label_targets(page: &str) -> Vec<String> {
    start_tags(page)
        .into_iter()
        .filter(|tag| tag.name == "label")
        .filter_map(|tag| tag.attr("for").map(str::to_owned))
        .collect()
}

/// Every URL-valued attribute of every start tag of `page`, as `(tag, attribute, value)`:
/// `href`, `src`, `action`, `formaction`, `srcset`, `poster`, `data`.
pub fn linked_urls(page: &str) -> Vec<(String, String, String)> {
    const URL_ATTRS: [&str; 7] = [
        "href",
        "src",
        "action",
        "formaction",
        "srcset",
        "poster",
        "data",
    ];
    start_tags(page)
        .into_iter()
        .flat_map(|tag| {
            let name = tag.name;
            tag.attrs
                .into_iter()
                .filter(|(attr, _)| URL_ATTRS.contains(&attr.as_str()))
                .map(move |(attr, value)| (name.clone(), attr, value))
        })
        .collect()
}

/// A start (or end) tag: its lower-cased name (`/form` for an end tag) and attributes.
#[derive(Debug)]
struct Tag {
    name: String,
    attrs: Vec<(String, String)>,
}

impl Tag {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The tags of `page` in order, skipping comments and the text between tags.
fn start_tags(page: &str) -> Vec<Tag> {
    let bytes = page.as_bytes();
    let mut tags = Vec::new();
    let mut i = 0;
    while let Some(offset) = page[i..].find('<') {
        i += offset + 1;
        if page[i..].starts_with("!--") {
            match page[i..].find("-->") {
                Some(end) => i += end + 3,
                None => break,
            }
            continue;
        }
        let name_start = i;
        if bytes.get(i) == Some(&b'/') {
            i += 1;
        }
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'-') {
            i += 1;
        }
        let name = page[name_start..i].to_ascii_lowercase();
        if name.is_empty() || name == "/" {
            continue;
        }
        let mut attrs = Vec::new();
        loop {
            while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
                i += 1;
            }
            if i >= bytes.len() || bytes[i] == b'>' {
                i += 1;
                break;
            }
            let key_start = i;
            while i < bytes.len()
                && !bytes[i].is_ascii_whitespace()
                && !matches!(bytes[i], b'=' | b'>' | b'/')
            {
                i += 1;
            }
            let key = page[key_start..i].to_ascii_lowercase();
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            let mut value = String::new();
            if bytes.get(i) == Some(&b'=') {
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                match bytes.get(i) {
                    Some(&quote @ (b'"' | b'\'')) => {
                        let start = i + 1;
                        let end = page[start..]
                            .find(char::from(quote))
                            .map_or(bytes.len(), |n| start + n);
                        value = decode_entities(&page[start..end]);
                        i = (end + 1).min(bytes.len());
                    }
                    _ => {
                        let start = i;
                        while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'>'
                        {
                            i += 1;
                        }
                        value = decode_entities(&page[start..i]);
                    }
                }
            }
            if key.is_empty() {
                // A stray character: skip it so the scan always advances.
                i += 1;
            } else {
                attrs.push((key, value));
            }
        }
        tags.push(Tag { name, attrs });
        if i >= bytes.len() {
            break;
        }
    }
    tags
}

/// Decodes the character references a server's escaping produces: `&amp; &lt; &gt; &quot;
/// &apos; &#NN; &#xHH;`. Anything else is kept as written.
pub fn decode_entities(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest.find(';').and_then(|semi| {
            let entity = &rest[1..semi];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => entity
                    .strip_prefix("#x")
                    .or_else(|| entity.strip_prefix("#X"))
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                    .or_else(|| entity.strip_prefix('#').and_then(|dec| dec.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, semi + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `scheme://host[:port]` of an absolute URL, or `None` when `url` is not absolute.
pub fn origin(url: &str) -> Option<&str> {
    let after_scheme = url.find("://")? + 3;
    let end = url[after_scheme..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |n| after_scheme + n);
    Some(&url[..end])
}

/// `reference` (an `action` or `Location`) resolved against the absolute URL `base`: absolute
/// URLs as they are, `/path` on `base`'s origin, `?query` on `base`'s path, "" as `base`
/// itself, anything else relative to `base`'s directory.
pub fn resolve(base: &str, reference: &str) -> String {
    if reference.contains("://") {
        return reference.to_owned();
    }
    let without_fragment = base.split('#').next().unwrap_or(base);
    if reference.is_empty() {
        return without_fragment.to_owned();
    }
    let origin = origin(base).unwrap_or("");
    if let Some(query) = reference.strip_prefix('?') {
        let path = without_fragment
            .split('?')
            .next()
            .unwrap_or(without_fragment);
        return format!("{path}?{query}");
    }
    if reference.starts_with('/') {
        return format!("{origin}{reference}");
    }
    let path_and_more = &without_fragment[origin.len()..];
    let path = path_and_more.split('?').next().unwrap_or("");
    let dir = path.rfind('/').map_or("/", |n| &path[..=n]);
    format!("{origin}{dir}{reference}")
}

/// Percent-encodes a form field or query value (everything except RFC 3986 unreserved).
pub fn form_encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `fields` as an `application/x-www-form-urlencoded` body or query.
pub fn form_body<K: AsRef<str>, V: AsRef<str>>(fields: &[(K, V)]) -> String {
    fields
        .iter()
        .map(|(name, value)| {
            format!(
                "{}={}",
                form_encode(name.as_ref()),
                form_encode(value.as_ref())
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Decodes one `application/x-www-form-urlencoded` component (`+` is a space).
pub fn form_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The decoded `name=value` pairs of a query string or fragment (without its `?` / `#`).
pub fn parse_pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) => (form_decode(name), form_decode(value)),
            None => (form_decode(pair), String::new()),
        })
        .collect()
}

/// The parameters of an authorization response at the redirect URI `url`: from its query for
/// `response_mode=query`, from its fragment for `fragment`.
pub fn callback_params(url: &str, response_mode: &str) -> Vec<(String, String)> {
    let (before_fragment, fragment) = url.split_once('#').unwrap_or((url, ""));
    match response_mode {
        "fragment" => parse_pairs(fragment),
        _ => parse_pairs(before_fragment.split_once('?').map_or("", |(_, q)| q)),
    }
}

/// The value of `name` among `pairs`.
pub fn pair<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn reads_a_form_with_quoted_unquoted_and_escaped_attributes() {
        let page = r#"<!doctype html><!-- <form action="/not"> --><p>Sign in
            <FORM Method=POST action="/_outpost/oauth/login?x=1&amp;y=2">
            <input type="hidden" name="csrf" value="a&quot;b&#x27;c&#39;">
            <label for=u>User</label><input id=u name=username autocomplete=username>
            <input type=password name='password' id="p" />
            <button name="action" value="allow">Allow</button><button name=action value=deny>No</button>
            </form><form method="get" action="/other"><input name="q"></form>"#;
        let forms = forms(page);
        assert_eq!(forms.len(), 2);
        let form = &forms[0];
        assert_eq!(form.method, "post");
        assert_eq!(form.action, "/_outpost/oauth/login?x=1&y=2");
        assert_eq!(
            form.input("csrf").map(|i| i.value.as_str()),
            Some("a\"b'c'")
        );
        assert_eq!(
            form.input("username").map(|i| i.kind.as_str()),
            Some("text")
        );
        assert_eq!(
            form.input("password").map(|i| i.kind.as_str()),
            Some("password")
        );
        assert_eq!(form.buttons.len(), 2);
        assert_eq!(
            form.submission(&[("username", "al ice")]),
            vec![
                ("csrf".to_owned(), "a\"b'c'".to_owned()),
                ("username".to_owned(), "al ice".to_owned())
            ]
        );
        assert_eq!(label_targets(page), vec!["u".to_owned()]);
    }

    #[test]
    fn resolves_encodes_and_decodes() {
        let base = "http://127.0.0.1:8008/_outpost/oauth/authorize?a=b#f";
        assert_eq!(
            resolve(base, ""),
            "http://127.0.0.1:8008/_outpost/oauth/authorize?a=b"
        );
        assert_eq!(resolve(base, "/x"), "http://127.0.0.1:8008/x");
        assert_eq!(
            resolve(base, "consent"),
            "http://127.0.0.1:8008/_outpost/oauth/consent"
        );
        assert_eq!(
            resolve(base, "?c=d"),
            "http://127.0.0.1:8008/_outpost/oauth/authorize?c=d"
        );
        assert_eq!(resolve(base, "https://e.example/"), "https://e.example/");
        assert_eq!(origin(base), Some("http://127.0.0.1:8008"));
        let body = form_body(&[("state", "a b&c=d/é")]);
        assert_eq!(body, "state=a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(
            parse_pairs("state=a+b%26c%3Dd%2F%C3%A9&x"),
            vec![
                ("state".to_owned(), "a b&c=d/é".to_owned()),
                ("x".to_owned(), String::new())
            ]
        );
        let url = "http://127.0.0.1/cb?code=1&state=s#code=2&state=t";
        assert_eq!(pair(&callback_params(url, "query"), "code"), Some("1"));
        assert_eq!(pair(&callback_params(url, "fragment"), "state"), Some("t"));
        assert_eq!(form_decode("%zz%4"), "%zz%4");
    }
}
