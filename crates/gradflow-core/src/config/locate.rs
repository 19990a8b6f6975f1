//! Locating fields in the TOML document, for error messages that give a line. Paths are dotted
//! keys with array indices in brackets (`model.layers[2].layers[0].out`), the form layer-list
//! errors use.

type Span = std::ops::Range<usize>;

fn span_within(inner: &Span, outer: &Span) -> bool {
    if inner.is_empty() {
        outer.start < inner.start && inner.start < outer.end
    } else {
        outer.start <= inner.start && inner.end <= outer.end
    }
}

/// The dotted path of the deepest key (or array element) whose key or value covers `target`.
fn deepest_key(
    table: &toml::de::DeTable<'_>,
    target: &Span,
    prefix: &mut Vec<String>,
    best: &mut Vec<String>,
) {
    for (key, value) in table.iter() {
        prefix.push(key.get_ref().to_string());
        if (span_within(target, &key.span()) || span_within(target, &value.span()))
            && prefix.len() > best.len()
        {
            best.clone_from(prefix);
        }
        deeper(value.get_ref(), target, prefix, best);
        prefix.pop();
    }
}

/// [`deepest_key`] inside a value: its table's keys, or its array's elements (as `[i]`).
fn deeper(
    value: &toml::de::DeValue<'_>,
    target: &Span,
    prefix: &mut Vec<String>,
    best: &mut Vec<String>,
) {
    match value {
        toml::de::DeValue::Table(t) => deepest_key(t, target, prefix, best),
        toml::de::DeValue::Array(items) => {
            // Only tables and lists inside lists are named by index (layer lists); a bad
            // number in `hidden = [8, -1]` is reported at `hidden`.
            let nested = |v: &toml::de::DeValue<'_>| {
                matches!(v, toml::de::DeValue::Table(_) | toml::de::DeValue::Array(_))
            };
            for (i, item) in items.iter().enumerate() {
                if !nested(item.get_ref()) {
                    continue;
                }
                prefix.push(format!("[{i}]"));
                if span_within(target, &item.span()) && prefix.len() > best.len() {
                    best.clone_from(prefix);
                }
                deeper(item.get_ref(), target, prefix, best);
                prefix.pop();
            }
        }
        _ => {}
    }
}

/// Joins path parts with dots, except `[i]` parts, which attach to the part before.
fn join_path(parts: &[String]) -> String {
    let mut out = String::new();
    for p in parts {
        if !out.is_empty() && !p.starts_with('[') {
            out.push('.');
        }
        out.push_str(p);
    }
    out
}

/// The parts of a path written by [`join_path`]: keys and `[i]` indices.
fn split_path(field: &str) -> Vec<String> {
    let mut parts = Vec::new();
    for key in field.split('.') {
        let (name, mut rest) = key.split_once('[').map_or((key, ""), |(n, r)| (n, r));
        parts.push(name.to_string());
        while let Some((index, after)) = rest.split_once(']') {
            parts.push(format!("[{index}]"));
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    parts
}

/// The field a TOML deserialisation error is about: the key at the error's position, plus the
/// missing key for "missing field" errors; "(syntax)" when nothing can be found.
pub(super) fn toml_error_field(doc: &toml::de::DeTable<'_>, e: &toml::de::Error) -> String {
    let mut path = Vec::new();
    if let Some(span) = e.span() {
        deepest_key(doc, &span, &mut Vec::new(), &mut path);
    }
    let msg = e.message();
    if let Some(rest) = msg.strip_prefix("missing field `") {
        if let Some(name) = rest.split('`').next() {
            path.push(name.to_string());
        }
    }
    if path.is_empty() {
        "(syntax)".to_string()
    } else {
        join_path(&path)
    }
}

/// Where `field` is in the document: the 1-based line of its key (or array element) and the
/// path found there, which is `field` itself or, for a missing key, its deepest existing parent.
pub(super) fn locate_field(
    text: &str,
    doc: &toml::de::DeTable<'_>,
    field: &str,
) -> Option<(usize, String)> {
    let mut value: Option<&toml::de::DeValue<'_>> = None;
    let mut table = Some(doc);
    let mut found: Vec<String> = Vec::new();
    let mut span = None;
    for part in split_path(field) {
        let next = if let Some(i) = part.strip_prefix('[').and_then(|p| p.strip_suffix(']')) {
            let items = match value {
                Some(toml::de::DeValue::Array(items)) => items,
                _ => break,
            };
            let Some(item) = i.parse::<usize>().ok().and_then(|i| items.get(i)) else {
                break;
            };
            (item.span(), item.get_ref())
        } else {
            let Some((key, v)) =
                table.and_then(|t| t.iter().find(|(k, _)| k.get_ref().as_ref() == part))
            else {
                break;
            };
            (key.span(), v.get_ref())
        };
        found.push(part);
        span = Some(next.0);
        value = Some(next.1);
        table = match next.1 {
            toml::de::DeValue::Table(t) => Some(t),
            _ => None,
        };
    }
    let start = span?.start.min(text.len());
    let line = text[..start].bytes().filter(|&b| b == b'\n').count() + 1;
    Some((line, join_path(&found)))
}
