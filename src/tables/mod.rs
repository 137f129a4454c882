//! Tenant tables from Parquet uploads: streaming ingest into the caller's schema (as the
//! caller's role), type mapping, description, listing and deletion.
//!
//! An upload flows through the stages in this order, and each module names only modules after
//! it (a unit test below checks it):
//! [`routes`](mod@routes) (handlers) -> [`upload`] (body to a temporary file or bytes) -> [`parquet`] (the
//! footer to a plan, then the file's batches) or [`json_rows`] (JSON rows to a plan and batches)
//! -> [`convert`] (Arrow columns to the types they are encoded from) -> [`copy`] (binary COPY
//! into the tenant's table, storage measured) -> [`indexes`] (declared indexes; its `routes`
//! add and drop them later) -> [`store`] (registry, DDL and catalog SQL).
//! Below the stages: [`plan`] (the [`Plan`](plan::Plan) and [`IngestError`](plan::IngestError)
//! every stage hands on), [`types`] (the PostgreSQL <-> Arrow type rules) and [`name`] (table
//! names). [`sample`] (the call-record generator) stands apart.

pub mod convert;
pub mod copy;
pub mod indexes;
pub mod json_rows;
pub mod name;
pub mod parquet;
pub mod plan;
pub mod routes;
pub mod sample;
pub mod store;
pub mod types;
pub mod upload;

use actix_web::web;

/// Registers the `/tables/...` routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/tables/create").route(web::post().to(routes::create_table)))
        .service(web::resource("/tables").route(web::get().to(routes::list_tables)))
        .service(
            web::resource("/tables/{name}/rows")
                .route(web::get().to(routes::list_rows))
                .route(web::post().to(routes::add_rows)),
        )
        .service(
            web::resource("/tables/{name}/indexes")
                .route(web::get().to(indexes::routes::list_indexes))
                .route(web::post().to(indexes::routes::create_index)),
        )
        .service(
            web::resource("/tables/{name}/indexes/{index}")
                .route(web::delete().to(indexes::routes::delete_index)),
        )
        .service(
            web::resource("/tables/{name}")
                .route(web::get().to(routes::describe_table))
                .route(web::delete().to(routes::delete_table)),
        );
}

#[cfg(test)]
mod tests {
    /// The modules in the order of the module doc, each with its source.
    const ORDER: [(&str, &str); 12] = [
        ("routes", include_str!("routes.rs")),
        ("upload", include_str!("upload.rs")),
        ("parquet", include_str!("parquet.rs")),
        ("json_rows", include_str!("json_rows.rs")),
        ("convert", include_str!("convert.rs")),
        ("copy", include_str!("copy.rs")),
        ("indexes", include_str!("indexes/mod.rs")),
        ("store", include_str!("store.rs")),
        ("plan", include_str!("plan.rs")),
        ("types", include_str!("types.rs")),
        ("name", include_str!("name.rs")),
        ("sample", include_str!("sample.rs")),
    ];

    /// The sibling modules a source names (`super::x`, `super::{x, y::z}`, `crate::tables::x`),
    /// outside comments and its unit tests.
    fn named(source: &str) -> Vec<String> {
        let code = source
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or_default();
        let code: String = code
            .lines()
            .map(|line| line.split("//").next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        let ident = |s: &str| -> String {
            s.trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        let mut names = Vec::new();
        for prefix in ["super::", "crate::tables::"] {
            for (at, _) in code.match_indices(prefix) {
                let rest = &code[at + prefix.len()..];
                match rest.strip_prefix('{') {
                    Some(group) => {
                        let group = group.split('}').next().unwrap_or_default();
                        names.extend(group.split(',').map(ident));
                    }
                    None => names.push(ident(rest)),
                }
            }
        }
        names
    }

    #[test]
    fn each_module_names_only_modules_after_it_in_the_data_flow() {
        let position = |name: &str| ORDER.iter().position(|(module, _)| *module == name);
        let mut problems = Vec::new();
        for (i, (module, source)) in ORDER.iter().enumerate() {
            for name in named(source) {
                if let Some(j) = position(&name)
                    && j <= i
                {
                    problems.push(format!("{module} names {name}, which comes before it"));
                }
            }
        }
        assert!(problems.is_empty(), "{problems:#?}");
        assert!(
            named(ORDER[0].1).contains(&"store".to_owned()),
            "the reader sees `use super::..` lines"
        );
    }

    #[test]
    fn no_module_is_over_500_lines() {
        let others = [
            ("mod", include_str!("mod.rs")),
            ("indexes::routes", include_str!("indexes/routes.rs")),
            ("indexes::concurrent", include_str!("indexes/concurrent.rs")),
        ];
        for (module, source) in ORDER.iter().chain(others.iter()) {
            let lines = source.lines().count();
            assert!(
                lines <= 500,
                "tables::{module} has {lines} lines; split it by stage"
            );
        }
    }
}
