//! Hrana's JSON written straight from SQLite's values into the response body, with no
//! intermediate tree: integers as decimal strings (exact to 64 bits), blobs as unpadded
//! base64 (the Go client decodes strictly), floats as JSON numbers.

use base64::Engine as _;
use rusqlite::types::ValueRef;

/// Append `s` as a JSON string.
pub fn string(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail, and a &str is always valid JSON text.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Append `s` as a JSON string, or `null`.
pub fn opt_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// Append an integer as a JSON number.
pub fn number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Append an integer as a JSON string (Hrana's `last_insert_rowid`).
pub fn int_string(out: &mut Vec<u8>, n: i64) {
    out.push(b'"');
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.push(b'"');
}

/// Append one value; returns about how many bytes of data it held.
pub fn value(out: &mut Vec<u8>, v: ValueRef<'_>) -> usize {
    match v {
        ValueRef::Null => {
            out.extend_from_slice(br#"{"type":"null"}"#);
            4
        }
        ValueRef::Integer(i) => {
            out.extend_from_slice(br#"{"type":"integer","value":"#);
            int_string(out, i);
            out.push(b'}');
            8
        }
        ValueRef::Real(f) if f.is_finite() => {
            out.extend_from_slice(br#"{"type":"float","value":"#);
            out.extend_from_slice(ryu::Buffer::new().format_finite(f).as_bytes());
            out.push(b'}');
            8
        }
        // JSON has no infinity or NaN (the JSON API sends null for them too).
        ValueRef::Real(_) => {
            out.extend_from_slice(br#"{"type":"null"}"#);
            8
        }
        ValueRef::Text(t) => {
            out.extend_from_slice(br#"{"type":"text","value":"#);
            string(out, &String::from_utf8_lossy(t));
            out.push(b'}');
            t.len()
        }
        ValueRef::Blob(b) => {
            out.extend_from_slice(br#"{"type":"blob","base64":""#);
            let start = out.len();
            out.resize(start + b.len().div_ceil(3) * 4, 0);
            let n = base64::engine::general_purpose::STANDARD_NO_PAD
                .encode_slice(b, &mut out[start..])
                .unwrap_or(0);
            out.truncate(start + n);
            out.push(b'"');
            out.push(b'}');
            b.len()
        }
    }
}

/// Append one row as a JSON array; returns about how many bytes of data it held.
pub fn row(out: &mut Vec<u8>, row: &rusqlite::Row<'_>, columns: usize) -> rusqlite::Result<usize> {
    out.push(b'[');
    let mut bytes = 0;
    for i in 0..columns {
        if i > 0 {
            out.push(b',');
        }
        bytes += value(out, row.get_ref(i)?);
    }
    out.push(b']');
    Ok(bytes)
}

/// Append the statement's columns, `[{"name": …, "decltype": …}, …]`.
pub fn columns(out: &mut Vec<u8>, stmt: &rusqlite::Statement<'_>) {
    out.push(b'[');
    for (i, c) in stmt.columns().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        string(out, c.name());
        out.extend_from_slice(b",\"decltype\":");
        opt_string(out, c.decl_type());
        out.push(b'}');
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(v: ValueRef<'_>) -> String {
        let mut out = Vec::new();
        value(&mut out, v);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn values_encode_as_hrana_says() {
        assert_eq!(
            one(ValueRef::Integer(9_007_199_254_740_993)),
            r#"{"type":"integer","value":"9007199254740993"}"#
        );
        assert_eq!(
            one(ValueRef::Integer(i64::MIN)),
            r#"{"type":"integer","value":"-9223372036854775808"}"#
        );
        assert_eq!(
            one(ValueRef::Real(2.75)),
            r#"{"type":"float","value":2.75}"#
        );
        assert_eq!(one(ValueRef::Real(1.0)), r#"{"type":"float","value":1.0}"#);
        assert_eq!(
            one(ValueRef::Text(b"a\"b\n")),
            r#"{"type":"text","value":"a\"b\n"}"#
        );
        assert_eq!(
            one(ValueRef::Blob(&[0, 1, 2, 3])),
            r#"{"type":"blob","base64":"AAECAw"}"#,
            "no padding"
        );
        assert_eq!(one(ValueRef::Blob(&[])), r#"{"type":"blob","base64":""}"#);
        assert_eq!(one(ValueRef::Null), r#"{"type":"null"}"#);
    }
}
