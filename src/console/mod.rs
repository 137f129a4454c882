//! The browser console at `/console/`: a few static files (HTML, CSS, ES modules, no framework,
//! no build step) compiled into the binary, which call the API from the same origin with the
//! user's own tokens. See `docs/ARCHITECTURE.md` ("The browser console") for why it is built
//! this way and `docs/SECURITY.md` for its headers and where its tokens live.

pub mod routes;

pub use routes::{redirect_bare_path, routes};
