//! Locating fields in the TOML document, for error messages that give a line.

type Span = std::ops::Range<usize>;

fn span_within(inner: &Span, outer: &Span) -> bool {
    if inner.is_empty() {
        outer.start < inner.start && inner.start < outer.end
    } else {
        outer.start <= inner.start && inner.end <= outer.end
    }
}

/// The dotted path of the deepest key whose key or value covers `target`.
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
        if let toml::de::DeValue::Table(t) = value.get_ref() {
            deepest_key(t, target, prefix, best);
        }
        prefix.pop();
    }
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
        path.join(".")
    }
}

/// Where `field` is in the document: the 1-based line of its key and the dotted path found there,
/// which is `field` itself or, for a missing key, its deepest existing parent.
pub(super) fn locate_field(
    text: &str,
    doc: &toml::de::DeTable<'_>,
    field: &str,
) -> Option<(usize, String)> {
    let mut table = Some(doc);
    let mut found: Vec<&str> = Vec::new();
    let mut span = None;
    for part in field.split('.') {
        let Some((key, value)) =
            table.and_then(|t| t.iter().find(|(k, _)| k.get_ref().as_ref() == part))
        else {
            break;
        };
        found.push(part);
        span = Some(key.span());
        table = match value.get_ref() {
            toml::de::DeValue::Table(t) => Some(t),
            _ => None,
        };
    }
    let start = span?.start.min(text.len());
    let line = text[..start].bytes().filter(|&b| b == b'\n').count() + 1;
    Some((line, found.join(".")))
}
