//! SQL identifiers built from names: the only way a runtime name enters SQL text.

use std::fmt;

/// A validated identifier (`^[a-z_][a-z0-9_]{0,62}$`) that renders double-quoted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ident(String);

/// Why a name is not a valid identifier.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{0:?} is not a valid identifier: use 1 to 63 characters from a-z, 0-9 and _, not starting with a digit"
)]
pub struct InvalidIdent(pub String);

impl Ident {
    /// Validates `name`; nothing is folded or escaped here, the caller decides the folding.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidIdent> {
        let name = name.into();
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if first_ok && rest_ok && name.len() <= 63 {
            Ok(Self(name))
        } else {
            Err(InvalidIdent(name))
        }
    }

    /// The bare name, for use as a bind parameter value (catalog lookups).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Validation already excludes quotes; doubling them anyway keeps this safe on its own.
        write!(f, "\"{}\"", self.0.replace('"', "\"\""))
    }
}

/// A column name as users give it (case kept, any characters but NUL, 1 to 63 bytes), always
/// rendered double-quoted with embedded quotes doubled.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColumnIdent(String);

impl ColumnIdent {
    /// Validates the length and the absence of NUL.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidIdent> {
        let name = name.into();
        if name.is_empty() || name.len() > 63 || name.contains('\0') {
            return Err(InvalidIdent(name));
        }
        Ok(Self(name))
    }

    /// The bare name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ColumnIdent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_lower_case_names_and_quotes_them() {
        let ident = Ident::new("t_0123abc").expect("valid");
        assert_eq!(ident.to_string(), "\"t_0123abc\"");
    }

    #[test]
    fn rejects_everything_that_could_escape_quoting_or_fold() {
        for bad in [
            "",
            "1abc",
            "Abc",
            "a\"b",
            "a b",
            "a;drop",
            "é",
            &"a".repeat(64),
        ] {
            assert!(Ident::new(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(Ident::new("a".repeat(63)).is_ok());
    }

    #[test]
    fn column_names_keep_their_case_and_double_embedded_quotes() {
        assert_eq!(
            ColumnIdent::new("SomeNumber").expect("valid").to_string(),
            "\"SomeNumber\""
        );
        assert_eq!(
            ColumnIdent::new("a\"b").expect("valid").to_string(),
            "\"a\"\"b\""
        );
        assert!(ColumnIdent::new("").is_err() && ColumnIdent::new("a\0b").is_err());
    }
}
