//! Rows of a table (or, later, a view): PostgREST-style filters, `select`, `order`, keyset or
//! page pagination, and JSON/CSV/Parquet output. One implementation serves every relation.

pub mod params;
pub mod rows;
