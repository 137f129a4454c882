//! E-mail subscriptions (issue 14): the owner's `/channels/{id}/emails/...` routes and the
//! recipient's public link pages ([`routes`](mod@routes)), their SQL ([`store`]), and the drainer
//! that sends them from the outbox, one message per subscription per interval ([`drainer`]).

pub mod drainer;
pub mod routes;
pub mod store;

pub use drainer::{EmailConfig, OUTCOMES, spawn};
