//! Notifications of channel events to receivers outside the service (issue 14). So far the
//! parts every delivery needs, with no routes or tables yet:
//!
//! - [`signature`]: Standard Webhooks secrets, signatures and their verification
//! - [`destination`]: which webhook URLs and addresses may be delivered to (the SSRF guard)
//! - [`client`]: the HTTP client that delivers, connecting only to checked addresses
//! - [`outbox`]: the background task that claims due deliveries, sends them, and retries

pub mod client;
pub mod destination;
pub mod outbox;
pub mod signature;
