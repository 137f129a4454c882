//! Rows of a table (or, later, a view): PostgREST-style filters, `select`, `order`, keyset or
//! page pagination, and JSON/CSV/Parquet output. One implementation serves every relation.
//!
//! From the top: `rows` (the entry) -> `page` (JSON) and `export` (CSV, and streaming any
//! spooled file) -> `parquet_export` -> `spool`; `relation` (the lookup), `statement` and `limits` are below them all.

mod export;
mod limits;
mod page;
pub mod params;
mod parquet_export;
mod relation;
#[doc(hidden)]
pub use relation::FIND_SQL;
pub mod rows;
mod spool;
mod statement;
