//! tinydevcrm: a multi-tenant realtime data platform.
//!
//! - [`app`]: wiring: the HTTP server and its middleware, the `serve`/`migrate` commands
//! - [`state`]: `AppState`, what handlers and background tasks share
//! - [`auth`]: accounts, JWT sessions, the `AuthUser` extractor
//! - [`tables`]: tenant tables from Parquet uploads, the sample generator
//! - [`query`]: rows of a relation: filters, order, pagination, JSON/CSV/Parquet
//! - [`views`]: materialized views, the SQL sandbox, refresh
//! - [`jobs`]: cron jobs, the scheduler loop, run history
//! - [`channels`]: SSE channels, the events table, the listener hub
//! - [`notify`]: webhook delivery: signatures, the destination (SSRF) policy, the HTTP client
//! - [`console`]: the browser console at `/console/`, its files embedded
//! - [`service`]: health, OpenAPI and its viewers, Prometheus metrics
//! - [`db`]: pool, migrations, identifiers, tenant provisioning, the managed local cluster
//! - [`config`], [`error`], [`telemetry`], [`secrets`]: plumbing
//! - [`cli`]: the command-line client (`tinydevcrm login`, `tables upload`, ...), an HTTP client
//!   of the API that names no server module

pub mod app;
pub mod auth;
pub mod channels;
pub mod cli;
pub mod config;
pub mod console;
pub mod db;
pub mod drain;
pub mod error;
pub mod jobs;
pub mod notify;
pub mod query;
pub mod secrets;
pub mod service;
pub mod state;
pub mod tables;
pub mod telemetry;
pub mod views;
