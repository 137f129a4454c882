//! Rows of a table (or, later, a view): PostgREST-style filters, `select`, `order`, keyset or
//! page pagination, and JSON/CSV/Parquet output. One implementation serves every relation.

mod export;
mod page;
pub mod params;
mod parquet_export;
pub mod rows;
mod statement;
