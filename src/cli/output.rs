//! What the client prints. Everything the server supplies (row values, names, details) is
//! somebody's data: a value holding `ESC [ 2 J` or a bidirectional override must not drive the
//! reader's terminal, so text for people goes through [`escape`] and JSON through
//! [`terminal_safe_json`] (which keeps it valid JSON).

use std::borrow::Cow;
use std::fmt;

use comfy_table::{ContentArrangement, Table, presets};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Characters a terminal may act on or that hide or reorder text: C0 and C1 controls, DEL,
/// the line and paragraph separators, and every Unicode format character (general category
/// Cf: bidirectional marks, embeddings, overrides and isolates, zero-width characters, the
/// byte order mark, interlinear annotations, tags), as the `unicode-properties` tables say.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c.general_category(),
            GeneralCategory::Format
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
        )
}

/// `text` with every unsafe character written as `\u{..}` (and `\` itself doubled, so an
/// escape the server sent cannot pass for one of ours).
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| is_unsafe(c) || c == '\\') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// JSON text with the characters serde leaves raw (DEL, C1 controls, bidi controls) written
/// as `\uXXXX`. They can only occur inside strings, so the result is the same JSON.
pub fn terminal_safe_json(json: &str) -> Cow<'_, str> {
    if !json.chars().any(is_unsafe) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if is_unsafe(c) {
            // JSON's `\u` takes UTF-16 units: a surrogate pair beyond the BMP (tags).
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Prints JSON text on its own line, terminal-safe.
pub fn print_json_text(json: &str) {
    println!("{}", terminal_safe_json(json.trim_end()));
}

/// Prints a value as one line of JSON, terminal-safe.
pub fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string(value) {
        Ok(text) => print_json_text(&text),
        Err(e) => eprintln!("error: cannot write JSON: {e}"),
    }
}

/// A value as a table cell: strings bare, `null` empty, anything else as compact JSON;
/// escaped.
pub fn cell(value: &Value) -> String {
    let text = match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    escape(&text).into_owned()
}

/// A table of `header` and `rows` (cells already escaped), sized for the terminal when there
/// is one.
pub fn table(header: &[String], rows: Vec<Vec<String>>) -> String {
    let mut table = Table::new();
    table
        .load_style(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().map(|h| escape(h).into_owned()));
    for row in rows {
        table.add_row(row);
    }
    table.to_string()
}

/// Prints objects as a table of the given fields (in that order).
pub fn print_list(items: &[Value], fields: &[&str]) {
    if items.is_empty() {
        println!("(none)");
        return;
    }
    let header: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
    let rows = items
        .iter()
        .map(|item| fields.iter().map(|f| cell(&item[*f])).collect())
        .collect();
    println!("{}", table(&header, rows));
}

/// Prints one object as a two-column table of its fields.
pub fn print_record(item: &Value) {
    let Some(fields) = item.as_object() else {
        println!("{}", cell(item));
        return;
    };
    let rows = fields
        .iter()
        .map(|(k, v)| vec![escape(k).into_owned(), cell(v)])
        .collect();
    println!("{}", table(&["field".to_owned(), "value".to_owned()], rows));
}

/// A row object with its columns in the order the server sent them (a `serde_json::Map`
/// sorts its keys, and column order is part of a table).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrderedRow(pub Vec<(String, Value)>);

impl<'de> Deserialize<'de> for OrderedRow {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RowVisitor;
        impl<'de> Visitor<'de> for RowVisitor {
            type Value = OrderedRow;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a row object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedRow, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    fields.push(entry);
                }
                Ok(OrderedRow(fields))
            }
        }
        deserializer.deserialize_map(RowVisitor)
    }
}

impl Serialize for OrderedRow {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Prints rows as a table whose columns are the first row's.
pub fn print_rows_table(rows: &[OrderedRow]) {
    let Some(first) = rows.first() else {
        println!("(no rows)");
        return;
    };
    let header: Vec<String> = first.0.iter().map(|(k, _)| k.clone()).collect();
    let body = rows
        .iter()
        .map(|row| row.0.iter().map(|(_, v)| cell(v)).collect())
        .collect();
    println!("{}", table(&header, body));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_terminal_controls_and_keeps_text() {
        assert_eq!(escape("plain, ünïcode 🙂"), "plain, ünïcode 🙂");
        assert_eq!(escape("\u{1b}[2Jx"), "\\u{1b}[2Jx");
        assert_eq!(escape("a\nb\tc"), "a\\nb\\tc");
        assert_eq!(escape("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(escape("\u{202e}evil"), "\\u{202e}evil");
        assert_eq!(escape("a\\u{1b}"), "a\\\\u{1b}");
    }

    #[test]
    fn every_format_character_range_and_the_separators_are_escaped() {
        // The ends of each range (and the single ones), as the review listed them and the
        // rest of category Cf.
        let unsafe_chars = [
            '\u{00AD}',
            '\u{0600}',
            '\u{0605}',
            '\u{061C}',
            '\u{06DD}',
            '\u{070F}',
            '\u{0890}',
            '\u{0891}',
            '\u{08E2}',
            '\u{180E}',
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{200E}',
            '\u{200F}',
            '\u{2028}',
            '\u{2029}',
            '\u{202A}',
            '\u{202E}',
            '\u{2060}',
            '\u{2064}',
            '\u{2066}',
            '\u{2069}',
            '\u{206A}',
            '\u{206F}',
            '\u{FEFF}',
            '\u{FFF9}',
            '\u{FFFB}',
            '\u{110BD}',
            '\u{110CD}',
            '\u{13430}',
            '\u{1343F}',
            '\u{1BCA0}',
            '\u{1BCA3}',
            '\u{1D173}',
            '\u{1D17A}',
            '\u{E0001}',
            '\u{E0020}',
            '\u{E007F}',
        ];
        for c in unsafe_chars {
            let text = format!("a{c}b");
            assert_eq!(
                escape(&text),
                format!("a\\u{{{:x}}}b", u32::from(c)),
                "U+{:04X}",
                u32::from(c)
            );
        }
        // Neighbours that are ordinary text stay as they are.
        for c in [
            '\u{00AC}',
            '\u{200A}',
            '\u{2030}',
            '\u{2065}',
            '\u{FEFE}',
            '\u{FFFC}',
            '\u{E0080}',
        ] {
            assert!(!is_unsafe(c), "U+{:04X}", u32::from(c));
        }
    }

    #[test]
    fn terminal_safe_json_escapes_tags_as_surrogate_pairs() {
        let value = serde_json::json!({"v": "x\u{E0041}\u{2028}\u{61C}"});
        let text = serde_json::to_string(&value).expect("json");
        let safe = terminal_safe_json(&text);
        assert!(safe.contains("\\udb40\\udc41"), "{safe}");
        assert!(!safe.chars().any(is_unsafe), "{safe}");
        let back: Value = serde_json::from_str(&safe).expect("still JSON");
        assert_eq!(back, value);
    }

    #[test]
    fn terminal_safe_json_stays_the_same_json() {
        let value = serde_json::json!({"v": "\u{1b}[31m\u{7f}\u{9b}\u{202e}x"});
        let text = serde_json::to_string(&value).expect("json");
        let safe = terminal_safe_json(&text);
        assert!(!safe.chars().any(is_unsafe), "{safe}");
        let back: Value = serde_json::from_str(&safe).expect("still JSON");
        assert_eq!(back, value);
    }

    #[test]
    fn rows_keep_their_column_order() {
        let row: OrderedRow = serde_json::from_str(r#"{"z":1,"a":"x","m":null}"#).expect("row");
        let keys: Vec<&str> = row.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["z", "a", "m"]);
        assert_eq!(
            serde_json::to_string(&row).expect("json"),
            r#"{"z":1,"a":"x","m":null}"#
        );
    }
}
