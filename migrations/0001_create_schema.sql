-- The application schema. Tenant data never lives here: each tenant has a schema of its own.
CREATE SCHEMA IF NOT EXISTS tinydevcrm;
