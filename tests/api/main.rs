//! Integration tests: the real HTTP API on port 0 against a real PostgreSQL, one fresh database
//! per test. With `DATABASE_URL` unset, one managed cluster is started per test run through the
//! same code as `serve`, and removed when the run ends.

mod architecture;
mod attacks;
mod attacks_first_hour;
mod attacks_input;
mod auth;
mod awkward_input;
mod browser;
mod channels;
mod cli;
mod cluster;
mod console;
mod cors;
mod db;
mod deploy;
mod docs_run;
mod emails;
mod fairness;
mod helpers;
mod incremental;
mod indexes;
mod jobs;
mod keys;
mod notify;
mod openapi;
mod operations;
mod outbox;
mod parquet_corpus;
mod processes;
mod quotas;
mod revocation;
mod rows;
mod scale;
mod service;
mod smtp;
mod sse;
mod tables;
mod topology;
mod tutorials;
mod views;
mod webhooks;
