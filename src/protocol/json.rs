//! A small JSON value type that keeps what Python's `json` module keeps, and a writer that
//! produces exactly the bytes of Python's `json.dumps` with default settings.
//!
//! `serde_json::Value` is not used because, without its `preserve_order` feature (which this
//! workspace does not enable), objects come back with their keys sorted, while Python keeps the
//! client's order; `list_jobs` echoes a job's keyword arguments, so the order is visible on the
//! wire. Parsing still goes through `serde_json`'s deserializer, so its recursion limit (128
//! levels) protects the stack on hostile input.

use std::fmt::Write as _;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A parsed JSON value, as Python's `json.loads` would see it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Json {
    /// `null` (`None`).
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer literal that fits in 64 bits (signed or unsigned). Larger integer literals
    /// arrive as [`Json::Float`] (serde_json's behaviour without `arbitrary_precision`).
    Int(i128),
    /// A number with a fraction or exponent (always finite: serde_json rejects overflow).
    Float(f64),
    /// A string.
    Str(String),
    /// An array.
    Array(Vec<Json>),
    /// An object, in the order the keys first appeared; a repeated key keeps its first position
    /// and its last value, as a Python `dict` built by `json.loads` does.
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The name of the Python type this value becomes, for `TypeError`-style messages.
    pub(crate) fn py_type(&self) -> &'static str {
        match self {
            Json::Null => "NoneType",
            Json::Bool(_) => "bool",
            Json::Int(_) => "int",
            Json::Float(_) => "float",
            Json::Str(_) => "str",
            Json::Array(_) => "list",
            Json::Object(_) => "dict",
        }
    }

    /// Python-style JSON text (see [`write_json`]).
    pub(crate) fn to_python_json(&self) -> String {
        let mut out = String::new();
        write_json(&mut out, self);
        out
    }
}

/// Parses one JSON text. Errors (syntax, nesting deeper than serde_json's limit of 128, numbers
/// out of range, lone surrogates) come back as serde_json's message.
pub(crate) fn parse(text: &str) -> Result<Json, String> {
    serde_json::from_str::<Json>(text).map_err(|e| e.to_string())
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

/// Objects with up to this many keys find repeated keys by scanning (requests have a few);
/// larger ones through an index, so parsing stays linear in the line's length.
const SMALL_OBJECT_KEYS: usize = 16;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Int(i128::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Int(i128::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::Str(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Json>()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries: Vec<(String, Json)> = Vec::new();
        // Where each key is in `entries`, once there are more than a few: finding a repeated
        // key by scanning would make an object of n distinct keys cost n² (a 64 KiB line of
        // 6,500 keys took 55 ms). Only looked up, never iterated, so its order is irrelevant.
        let mut index: Option<std::collections::HashMap<String, usize>> = None;
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<Json>()?;
            // Python's dict keeps the first position and the last value of a repeated key.
            if entries.len() == SMALL_OBJECT_KEYS && index.is_none() {
                index = Some(
                    entries
                        .iter()
                        .enumerate()
                        .map(|(i, (k, _))| (k.clone(), i))
                        .collect(),
                );
            }
            let found = match &mut index {
                Some(index) => match index.get(&key) {
                    Some(&i) => Some(i),
                    None => {
                        index.insert(key.clone(), entries.len());
                        None
                    }
                },
                None => entries.iter().position(|(k, _)| *k == key),
            };
            match found {
                Some(i) => entries[i].1 = value,
                None => entries.push((key, value)),
            }
        }
        Ok(Json::Object(entries))
    }
}

/// Appends `value` as Python's `json.dumps(value)` writes it: `", "` and `": "` separators,
/// `ensure_ascii`, floats as Python's `repr`, `NaN`/`Infinity` for non-finite floats.
pub(crate) fn write_json(out: &mut String, value: &Json) {
    write_nested(out, value, write_json_scalar, write_str);
}

fn write_json_scalar(out: &mut String, value: &Json) {
    match value {
        Json::Null => out.push_str("null"),
        Json::Bool(true) => out.push_str("true"),
        Json::Bool(false) => out.push_str("false"),
        Json::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Json::Float(f) => write_float(out, *f),
        Json::Str(s) => write_str(out, s),
        Json::Array(_) | Json::Object(_) => write_json(out, value),
    }
}

/// The layout `json.dumps` and Python's `repr` share: `[a, b]` and `{k: v}`, with `", "` and
/// `": "`; `scalar` writes everything else and `key` writes object keys.
fn write_nested(
    out: &mut String,
    value: &Json,
    scalar: fn(&mut String, &Json),
    key: fn(&mut String, &str),
) {
    match value {
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_nested(out, item, scalar, key);
            }
            out.push(']');
        }
        Json::Object(entries) => {
            out.push('{');
            for (i, (k, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                key(out, k);
                out.push_str(": ");
                write_nested(out, item, scalar, key);
            }
            out.push('}');
        }
        _ => scalar(out, value),
    }
}

/// A float as `json.dumps` writes it (`float.__repr__`, except for the non-finite values).
pub(crate) fn write_float(out: &mut String, x: f64) {
    if x.is_nan() {
        out.push_str("NaN");
    } else if x.is_infinite() {
        out.push_str(if x > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        write_py_float(out, x);
    }
}

/// Python's `repr(float)` for a finite float.
///
/// Both Rust's `{:e}` and Python's `repr` print the shortest digit string that round-trips, so
/// only the layout differs. Python's rule (`format_float_short`, mode `'r'`): with the value
/// written as `0.DIGITS × 10^decpt`, use positional notation when `-4 < decpt <= 16` (always
/// with a fractional part, `60.0`), otherwise scientific notation with a signed exponent of at
/// least two digits (`1e+16`, `1e-05`, `1.2345678901234568e+20`).
#[cfg(test)]
pub(crate) fn py_float_repr(x: f64) -> String {
    let mut out = String::new();
    write_py_float(&mut out, x);
    out
}

/// [`py_float_repr`] appended to `out`, without allocating (replies carry a float or two
/// each: `get_job_state` is the commonest request there is).
pub(crate) fn write_py_float(out: &mut String, x: f64) {
    use std::fmt::Write as _;
    if x == 0.0 {
        out.push_str(if x.is_sign_negative() { "-0.0" } else { "0.0" });
        return;
    }
    // A whole number below 10^16 (a keepalive period, say) is its integer digits and `.0`:
    // exactly representable, so these digits are the shortest that round-trip, and its
    // decimal point (`decpt`, at most 16) is positional in Python's rule below.
    if x.fract() == 0.0 && x.abs() < 1e16 {
        let _ = write!(out, "{}.0", x as i64);
        return;
    }
    // The same few floats are written over and over (a job's start time, in every poll of
    // its state): remembered per thread, by their bits, in a small direct-mapped table.
    let slot = (x.to_bits().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize;
    let hit = FLOAT_TEXT.with(|t| {
        let t = t.borrow();
        match &t[slot] {
            Some((bits, text)) if *bits == x.to_bits() => {
                out.push_str(text.as_str());
                true
            }
            _ => false,
        }
    });
    if hit {
        return;
    }
    let start = out.len();
    write_py_float_uncached(out, x);
    let text = &out[start..];
    if text.len() <= 32 {
        let mut stack = StackText::new();
        let _ = stack.write_str(text);
        FLOAT_TEXT.with(|t| t.borrow_mut()[slot] = Some((x.to_bits(), stack)));
    }
}

thread_local! {
    /// [`write_py_float`]'s remembered texts: 64 slots, each a float's bits and its text.
    static FLOAT_TEXT: std::cell::RefCell<[Option<(u64, StackText)>; 64]> =
        const { std::cell::RefCell::new([const { None }; 64]) };
}

/// [`write_py_float`] for a non-zero, non-whole (or huge) finite float, worked out.
fn write_py_float_uncached(out: &mut String, x: f64) {
    use std::fmt::Write as _;
    // Rust's shortest digits round-trip, but when two strings of that length both do, Rust
    // may pick the farther one where Python picks the one closest to the exact value (e.g.
    // ...618.25 prints as ...618.3 in Rust, ...618.2 in Python). The correctly rounded string
    // with the same number of digits is Python's choice whenever it round-trips (and when
    // it is the same string as the shortest, it does).
    let mut shortest = StackText::new();
    let _ = write!(shortest, "{x:e}");
    let shortest = shortest.as_str();
    let digit_count = shortest
        .split('e')
        .next()
        .map_or(1, |m| m.bytes().filter(u8::is_ascii_digit).count());
    let mut rounded = StackText::new();
    let _ = write!(rounded, "{x:.prec$e}", prec = digit_count.saturating_sub(1));
    let rounded = rounded.as_str();
    let sci = if rounded == shortest || rounded.parse::<f64>() == Ok(x) {
        rounded
    } else {
        shortest
    };
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let mut digits = StackText::new();
    for c in mantissa.chars().filter(char::is_ascii_digit) {
        let _ = digits.write_char(c);
    }
    let digits = digits.as_str();
    if x < 0.0 {
        out.push('-');
    }
    let decpt = exponent + 1;
    let n = digits.len() as i32;
    let zeros = |out: &mut String, k: i32| {
        for _ in 0..k {
            out.push('0');
        }
    };
    if -4 < decpt && decpt <= 16 {
        if decpt <= 0 {
            out.push_str("0.");
            zeros(out, -decpt);
            out.push_str(digits);
        } else if decpt >= n {
            out.push_str(digits);
            zeros(out, decpt - n);
            out.push_str(".0");
        } else {
            let (int_part, frac_part) = digits.split_at(decpt as usize);
            out.push_str(int_part);
            out.push('.');
            out.push_str(frac_part);
        }
    } else {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        let _ = write!(out, "e{exp_sign}{:02}", exponent.unsigned_abs());
    }
}

/// A float's `{:e}` text, on the stack: at most 17 digits, a sign, a point and an exponent
/// of three digits with its sign (24 bytes); anything longer is cut, which the round-trip
/// check above would notice (it never happens).
#[derive(Clone, Copy)]
struct StackText {
    bytes: [u8; 32],
    len: usize,
}

impl StackText {
    const fn new() -> StackText {
        StackText {
            bytes: [0; 32],
            len: 0,
        }
    }

    fn as_str(&self) -> &str {
        // Only whole `&str`s are appended (below), so the bytes are UTF-8.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.bytes.len() {
            return Err(std::fmt::Error);
        }
        self.bytes[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// A string as `json.dumps` writes it with `ensure_ascii=True`: every character outside
/// printable ASCII (space to `~`) is escaped, as `\uXXXX` with lowercase hex (a surrogate pair
/// above U+FFFF) unless it has a short escape.
pub(crate) fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// Python's `repr()` of the value `json.loads` would have produced (`None`, `True`, `'text'`,
/// `[1, 'a']`, `{'k': 2.0}`), used where the original put client data into a message or
/// through `str()`.
pub(crate) fn py_repr(value: &Json) -> String {
    let mut out = String::new();
    write_py_repr(&mut out, value);
    out
}

/// Python's `str()` of a value: strings as they are, everything else as [`py_repr`].
pub(crate) fn py_str(value: &Json) -> String {
    match value {
        Json::Str(s) => s.clone(),
        other => py_repr(other),
    }
}

fn write_py_repr(out: &mut String, value: &Json) {
    write_nested(out, value, write_py_repr_scalar, |out, key| {
        out.push_str(&py_repr_str(key))
    });
}

fn write_py_repr_scalar(out: &mut String, value: &Json) {
    match value {
        Json::Null => out.push_str("None"),
        Json::Bool(true) => out.push_str("True"),
        Json::Bool(false) => out.push_str("False"),
        Json::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Json::Float(f) => {
            if f.is_nan() {
                out.push_str("nan");
            } else if f.is_infinite() {
                out.push_str(if *f > 0.0 { "inf" } else { "-inf" });
            } else {
                write_py_float(out, *f);
            }
        }
        Json::Str(s) => out.push_str(&py_repr_str(s)),
        Json::Array(_) | Json::Object(_) => write_py_repr(out, value),
    }
}

/// Python's `repr(str)`: single quotes unless the text contains a single quote and no double
/// quote; backslash escapes for the quote, backslash, `\n`, `\r`, `\t` and other control
/// characters. (Python also escapes some non-printable non-ASCII characters; this handles the
/// control ones, which is all a message could reasonably contain.)
pub(crate) fn py_repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !py_printable(c) => {
                let code = c as u32;
                let _ = match code {
                    0..=0xff => write!(out, "\\x{code:02x}"),
                    0x100..=0xffff => write!(out, "\\u{code:04x}"),
                    _ => write!(out, "\\U{code:08x}"),
                };
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// An approximation of Python's `str.isprintable()` for one character: false for control
/// characters, separators other than the space, the common format characters and private
/// use. (Python also escapes unassigned code points, which would need Unicode tables.)
fn py_printable(c: char) -> bool {
    let code = c as u32;
    !(c.is_control()
        || matches!(
            code,
            0xa0 | 0xad
                | 0x600..=0x605
                | 0x61c
                | 0x6dd
                | 0x70f
                | 0x1680
                | 0x180e
                | 0x2000..=0x200f
                | 0x2028..=0x202f
                | 0x205f..=0x2064
                | 0x2066..=0x206f
                | 0x3000
                | 0xe000..=0xf8ff
                | 0xfeff
                | 0xfff9..=0xfffb
                | 0xf0000..=0x10ffff
        ))
}
