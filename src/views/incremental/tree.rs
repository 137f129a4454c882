//! PostgreSQL's node text (`pg_rewrite.ev_action`) read into a tree, so that the incremental
//! check decides on the structure PostgreSQL resolved (which function id, which range-table
//! entry, which column number), never on how the user spelled it.
//!
//! The tokens are `views::resolved`'s (`pg_strtok`'s rules): a user-given name is one token
//! with its blanks and brackets backslash-escaped, so it can neither open a node nor end one.

use std::fmt::Write as _;

use crate::views::resolved::tokens;

/// One value of the node text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// `{LABEL :field value ...}`.
    Map {
        /// The node type (`QUERY`, `FUNCEXPR`, ...).
        label: String,
        /// Fields in order.
        fields: Vec<(String, Node)>,
    },
    /// `( ... )`: a list of nodes, or of ids (`(o 1 2)`, `(i 1 2)`).
    List(Vec<Node>),
    /// `<>`.
    Null,
    /// A scalar token.
    Atom(String),
    /// A `Const`'s datum: `N [ b0 b1 ... ]`.
    Datum(Vec<u8>),
}

/// Why the text could not be read as a tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the stored query could not be read: {0}")]
pub struct Unreadable(pub String);

/// Deepest nesting read; PostgreSQL's own trees for accepted views are far shallower, and the
/// sandbox bounds the SQL's nesting before any tree exists.
const MAX_DEPTH: usize = 400;

/// Reads node text into a tree.
pub fn parse(text: &str) -> Result<Node, Unreadable> {
    let tokens = tokens(text);
    let mut at = 0;
    let node = value(&tokens, &mut at, 0)?;
    if at != tokens.len() {
        return Err(Unreadable("text after the tree".to_owned()));
    }
    Ok(node)
}

fn value(tokens: &[&str], at: &mut usize, depth: usize) -> Result<Node, Unreadable> {
    if depth > MAX_DEPTH {
        return Err(Unreadable("the tree is too deep".to_owned()));
    }
    let token = *tokens
        .get(*at)
        .ok_or_else(|| Unreadable("the text ends early".to_owned()))?;
    *at += 1;
    match token {
        "{" => {
            let label = (*tokens
                .get(*at)
                .ok_or_else(|| Unreadable("a node without a type".to_owned()))?)
            .to_owned();
            *at += 1;
            let mut fields = Vec::new();
            loop {
                match tokens.get(*at).copied() {
                    Some("}") => {
                        *at += 1;
                        return Ok(Node::Map { label, fields });
                    }
                    Some(field) if field.starts_with(':') => {
                        *at += 1;
                        let field = field[1..].to_owned();
                        // An empty value (`:field` followed by the next field or the end).
                        let next = tokens.get(*at).copied();
                        let v = if next.is_none_or(|t| t == "}" || t.starts_with(':')) {
                            Node::Null
                        } else {
                            value(tokens, at, depth + 1)?
                        };
                        fields.push((field, v));
                    }
                    Some(other) => {
                        return Err(Unreadable(format!("unexpected {other:?} in a node")));
                    }
                    None => return Err(Unreadable("a node is not closed".to_owned())),
                }
            }
        }
        "(" => {
            let mut items = Vec::new();
            loop {
                match tokens.get(*at).copied() {
                    Some(")") => {
                        *at += 1;
                        return Ok(Node::List(items));
                    }
                    Some(_) => items.push(value(tokens, at, depth + 1)?),
                    None => return Err(Unreadable("a list is not closed".to_owned())),
                }
            }
        }
        "<>" => Ok(Node::Null),
        atom => {
            // A datum: its length, then its bytes in brackets.
            if tokens.get(*at) == Some(&"[") && atom.parse::<usize>().is_ok() {
                *at += 1;
                let mut bytes = Vec::new();
                loop {
                    match tokens.get(*at).copied() {
                        Some("]") => {
                            *at += 1;
                            return Ok(Node::Datum(bytes));
                        }
                        Some(b) => {
                            let byte = b.parse::<i16>().map_err(|_| {
                                Unreadable(format!("{b:?} is not a byte of a datum"))
                            })?;
                            // Bytes are written as signed chars.
                            bytes.push(byte.to_le_bytes()[0]);
                            *at += 1;
                        }
                        None => return Err(Unreadable("a datum is not closed".to_owned())),
                    }
                }
            }
            Ok(Node::Atom(atom.to_owned()))
        }
    }
}

impl Node {
    /// The node type, if this is a node.
    pub fn label(&self) -> Option<&str> {
        match self {
            Self::Map { label, .. } => Some(label),
            _ => None,
        }
    }

    /// A field of a node (`Null` when absent).
    pub fn get(&self, name: &str) -> &Node {
        static NULL: Node = Node::Null;
        match self {
            Self::Map { fields, .. } => fields
                .iter()
                .find(|(f, _)| f == name)
                .map_or(&NULL, |(_, v)| v),
            _ => &NULL,
        }
    }

    /// A scalar field's text.
    pub fn atom(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Self::Atom(a) => Some(a),
            _ => None,
        }
    }

    /// A numeric field.
    pub fn number(&self, name: &str) -> Option<i64> {
        self.atom(name).and_then(|a| a.parse().ok())
    }

    /// A boolean field (`true`/`false`).
    pub fn flag(&self, name: &str) -> bool {
        self.atom(name) == Some("true")
    }

    /// The items of a list field (empty for `<>`).
    pub fn list(&self, name: &str) -> &[Node] {
        match self.get(name) {
            Self::List(items) => items,
            _ => &[],
        }
    }

    /// Whether the field is absent or `<>`.
    pub fn is_null(&self, name: &str) -> bool {
        matches!(self.get(name), Self::Null)
    }

    /// Every node of the given type below (and including) this one, outside nested `QUERY`s
    /// when `same_level` (their own aggregates belong to them).
    pub fn find_all<'a>(&'a self, label: &str, out: &mut Vec<&'a Node>) {
        match self {
            Self::Map { label: l, fields } => {
                if l == label {
                    out.push(self);
                }
                for (_, v) in fields {
                    v.find_all(label, out);
                }
            }
            Self::List(items) => items.iter().for_each(|i| i.find_all(label, out)),
            _ => {}
        }
    }

    /// The tree as text without the `location` fields (character offsets in the SQL text):
    /// two queries that PostgreSQL resolved to the same tree print the same.
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        self.write_canonical(&mut out);
        out
    }

    fn write_canonical(&self, out: &mut String) {
        match self {
            Self::Map { label, fields } => {
                let _ = write!(out, "{{{label}");
                for (f, v) in fields {
                    if f == "location" || f.ends_with("_location") || f == "stmt_location" {
                        continue;
                    }
                    let _ = write!(out, " :{f} ");
                    v.write_canonical(out);
                }
                out.push('}');
            }
            Self::List(items) => {
                out.push('(');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    item.write_canonical(out);
                }
                out.push(')');
            }
            Self::Null => out.push_str("<>"),
            Self::Atom(a) => out.push_str(a),
            Self::Datum(bytes) => {
                let _ = write!(out, "{} [", bytes.len());
                for b in bytes {
                    let _ = write!(out, " {b}");
                }
                out.push_str(" ]");
            }
        }
    }
}

/// A name as PostgreSQL wrote it (backslash-escaped), as the user gave it.
pub fn unescape(atom: &str) -> String {
    let mut out = String::with_capacity(atom.len());
    let mut chars = atom.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_lists_and_datums_are_read() {
        let tree = parse(
            r"({QUERY :commandType 1 :cteList <> :targetList ({TARGETENTRY :expr {CONST :consttype 25 :constvalue 8 [ 32 0 0 0 104 111 117 114 ] :location 7} :resname my\ hour})})",
        )
        .expect("reads");
        let Node::List(queries) = &tree else {
            panic!("a list")
        };
        let query = &queries[0];
        assert_eq!(query.label(), Some("QUERY"));
        assert!(query.is_null("cteList"));
        let entry = &query.list("targetList")[0];
        assert_eq!(unescape(entry.atom("resname").expect("name")), "my hour");
        assert_eq!(
            entry.get("expr").get("constvalue"),
            &Node::Datum(vec![32, 0, 0, 0, 104, 111, 117, 114])
        );
        assert!(!query.canonical().contains("location"));
    }

    #[test]
    fn a_name_cannot_close_a_node() {
        let tree =
            parse(r"{TARGETENTRY :resname a\}\ :resjunk\ true :resjunk false}").expect("reads");
        assert_eq!(tree.atom("resjunk"), Some("false"));
    }

    #[test]
    fn signed_bytes_are_read_back_as_bytes() {
        let tree = parse("{CONST :constvalue 2 [ -1 127 ]}").expect("reads");
        assert_eq!(tree.get("constvalue"), &Node::Datum(vec![255, 127]));
    }
}
