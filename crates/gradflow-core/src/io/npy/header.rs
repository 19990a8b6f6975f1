//! The `.npy` header: a Python dict literal read by a small bounded recursive-descent parser
//! (nesting limit, checked size arithmetic), so malformed or hostile headers give an error,
//! never a panic; and the dtype descriptors accepted.

use super::Elem;

#[derive(Debug)]
pub(super) struct Header {
    pub(super) elem: Elem,
    pub(super) fortran_order: bool,
    pub(super) shape: Vec<usize>,
}

impl Header {
    pub(super) fn parse(text: &str) -> std::result::Result<Header, String> {
        let malformed = |what: &str| format!("malformed .npy header ({what}): {:?}", text.trim());
        let mut p = Parser {
            s: text.as_bytes(),
            pos: 0,
        };
        let value = p.value(0).map_err(|e| malformed(&e))?;
        p.skip_ws();
        if p.pos != p.s.len() {
            return Err(malformed("unexpected text after the dict"));
        }
        let Lit::Dict(entries) = value else {
            return Err(malformed("expected a dict"));
        };
        let get = |key: &str| {
            entries
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .ok_or_else(|| malformed(&format!("missing key '{key}'")))
        };
        let elem = match get("descr")? {
            Lit::Str(d) => parse_descr(d)?,
            Lit::List(_) | Lit::Tuple(_) => {
                return Err(
                    "unsupported dtype: a structured (record) array; only plain float64 or float32 arrays are accepted"
                        .into(),
                )
            }
            _ => return Err(malformed("'descr' is not a string")),
        };
        let fortran_order = match get("fortran_order")? {
            Lit::Bool(b) => *b,
            _ => return Err(malformed("'fortran_order' is not True or False")),
        };
        let shape = match get("shape")? {
            Lit::Tuple(items) | Lit::List(items) => items
                .iter()
                .map(|v| match v {
                    Lit::Int(i) => usize::try_from(*i)
                        .map_err(|_| malformed(&format!("invalid dimension {i} in 'shape'"))),
                    _ => Err(malformed("'shape' holds a non-integer")),
                })
                .collect::<std::result::Result<Vec<usize>, String>>()?,
            _ => return Err(malformed("'shape' is not a tuple")),
        };
        Ok(Header {
            elem,
            fortran_order,
            shape,
        })
    }
}

/// Interprets a NumPy type string such as `'<f8'`.
fn parse_descr(d: &str) -> std::result::Result<Elem, String> {
    let native_little = cfg!(target_endian = "little");
    let (little, rest) = match d.as_bytes().first() {
        Some(b'<') => (true, &d[1..]),
        Some(b'>') => (false, &d[1..]),
        Some(b'=') | Some(b'|') => (native_little, &d[1..]),
        _ => (native_little, d),
    };
    match rest {
        "f8" => Ok(Elem::F64 { little }),
        "f4" => Ok(Elem::F32 { little }),
        _ => Err(format!(
            "unsupported dtype '{d}' ({}); only float64 ('<f8'/'>f8') and float32 ('<f4'/'>f4') arrays are accepted — convert with `arr.astype(np.float64)` before saving",
            describe_dtype(rest)
        )),
    }
}

/// A human name for a NumPy type string without its byte-order character.
fn describe_dtype(t: &str) -> String {
    let (kind, size) = t.split_at(t.find(|c: char| c.is_ascii_digit()).unwrap_or(t.len()));
    let bits = size.parse::<u32>().ok().and_then(|b| b.checked_mul(8));
    let sized = |name: &str| match bits {
        Some(b) => format!("{b}-bit {name}"),
        None => name.to_string(),
    };
    match kind {
        "f" | "e" | "d" | "g" => sized("float"),
        "i" => sized("signed integer"),
        "u" => sized("unsigned integer"),
        "c" => sized("complex"),
        "b" | "?" => "boolean".into(),
        "O" => "Python objects".into(),
        "U" | "S" | "a" => "strings".into(),
        "M" | "m" => "datetime".into(),
        "V" => "raw bytes".into(),
        _ => "unrecognised type".into(),
    }
}

/// The subset of Python literals that appears in `.npy` headers.
#[derive(Debug)]
enum Lit {
    Str(String),
    Int(i128),
    Bool(bool),
    None,
    Tuple(Vec<Lit>),
    List(Vec<Lit>),
    Dict(Vec<(String, Lit)>),
}

/// A recursive-descent parser with a nesting limit, so hostile headers cannot exhaust the stack.
struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

const MAX_DEPTH: usize = 16;

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.pos).copied()
    }

    fn value(&mut self, depth: usize) -> std::result::Result<Lit, String> {
        if depth > MAX_DEPTH {
            return Err("nested too deeply".into());
        }
        match self.peek() {
            None => Err("unexpected end".into()),
            Some(b'{') => {
                self.pos += 1;
                let mut entries = Vec::new();
                loop {
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                        return Ok(Lit::Dict(entries));
                    }
                    let key = match self.value(depth + 1)? {
                        Lit::Str(k) => k,
                        _ => return Err("a dict key is not a string".into()),
                    };
                    if self.peek() != Some(b':') {
                        return Err("expected ':' in dict".into());
                    }
                    self.pos += 1;
                    let v = self.value(depth + 1)?;
                    entries.push((key, v));
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {}
                        _ => return Err("expected ',' or '}' in dict".into()),
                    }
                }
            }
            Some(open @ (b'(' | b'[')) => {
                self.pos += 1;
                let close = if open == b'(' { b')' } else { b']' };
                let mut items = Vec::new();
                let mut saw_comma = false;
                loop {
                    if self.peek() == Some(close) {
                        self.pos += 1;
                        // `(3)` is just 3 in Python; numpy never writes it, but be faithful.
                        if open == b'(' && items.len() == 1 && !saw_comma {
                            return Ok(items.pop().unwrap_or(Lit::None));
                        }
                        return Ok(if open == b'(' {
                            Lit::Tuple(items)
                        } else {
                            Lit::List(items)
                        });
                    }
                    items.push(self.value(depth + 1)?);
                    match self.peek() {
                        Some(b',') => {
                            self.pos += 1;
                            saw_comma = true;
                        }
                        Some(c) if c == close => {}
                        _ => return Err("expected ',' or a closing bracket".into()),
                    }
                }
            }
            Some(q @ (b'\'' | b'"')) => {
                self.pos += 1;
                let mut out = Vec::new();
                loop {
                    match self.s.get(self.pos).copied() {
                        None => return Err("unterminated string".into()),
                        Some(b'\\') => {
                            let c = *self
                                .s
                                .get(self.pos + 1)
                                .ok_or_else(|| "unterminated string".to_string())?;
                            out.push(c);
                            self.pos += 2;
                        }
                        Some(c) if c == q => {
                            self.pos += 1;
                            break;
                        }
                        Some(c) => {
                            out.push(c);
                            self.pos += 1;
                        }
                    }
                }
                String::from_utf8(out)
                    .map(Lit::Str)
                    .map_err(|_| "a string is not UTF-8".into())
            }
            Some(c) if c == b'-' || c == b'+' || c.is_ascii_digit() => {
                let start = self.pos;
                self.pos += 1;
                while self.pos < self.s.len() && self.s[self.pos].is_ascii_digit() {
                    self.pos += 1;
                }
                let digits = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("");
                let n: i128 = digits
                    .parse()
                    .map_err(|_| format!("invalid integer {digits:?}"))?;
                // Python 2 era files write long integers as `3L`.
                if matches!(self.s.get(self.pos), Some(b'L' | b'l')) {
                    self.pos += 1;
                }
                Ok(Lit::Int(n))
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.pos;
                while self.pos < self.s.len() && self.s[self.pos].is_ascii_alphanumeric() {
                    self.pos += 1;
                }
                match &self.s[start..self.pos] {
                    b"True" => Ok(Lit::Bool(true)),
                    b"False" => Ok(Lit::Bool(false)),
                    b"None" => Ok(Lit::None),
                    w => Err(format!("unexpected word {:?}", String::from_utf8_lossy(w))),
                }
            }
            Some(c) => Err(format!("unexpected character {:?}", c as char)),
        }
    }
}
