//! Serving the console's embedded files, with the headers that keep it safe to show tenant
//! data in: a Content-Security-Policy that allows only this origin's own scripts, styles and
//! connections (no inline script, no framing), `nosniff`, and an `ETag` per file so a browser
//! revalidates instead of running a stale copy after an upgrade.

use std::sync::LazyLock;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, web};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Where the console lives. Its index is `/console/`; the bare path redirects there so that the
/// page's relative URLs resolve under it.
pub const PREFIX: &str = "/console";

/// The policy of every console file. `require-trusted-types-for 'script'` with no policy makes
/// the browser refuse any string assigned to `innerHTML` and its kin: the console can only
/// build the page with DOM calls and `textContent`, which never parse tenant data as markup.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self'; font-src 'self'; connect-src 'self'; object-src 'none'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
    require-trusted-types-for 'script'; trusted-types 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// The files, by the name they have under `/console/` (the index is `index.html`).
const ASSETS: &[Asset] = &[
    asset(
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("assets/index.html"),
    ),
    asset(
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/console.css"),
    ),
    asset(
        "icon.svg",
        "image/svg+xml",
        include_bytes!("assets/icon.svg"),
    ),
    asset(
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/app.js"),
    ),
    asset(
        "api.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/api.js"),
    ),
    asset(
        "dom.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/dom.js"),
    ),
    asset(
        "live.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/live.js"),
    ),
];

const fn asset(name: &'static str, content_type: &'static str, body: &'static [u8]) -> Asset {
    Asset {
        name,
        content_type,
        body,
    }
}

/// Each file's strong `ETag`: a digest of its bytes, computed once.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let digest = Sha256::digest(a.body);
            format!("\"{}\"", hex::encode(&digest[..12]))
        })
        .collect()
});

/// Registers `/console` (the index: `NormalizePath` has already trimmed `/console/` to it) and
/// `/console/{file}`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource(PREFIX).route(web::get().to(index)))
        .service(web::resource(format!("{PREFIX}/{{file}}")).route(web::get().to(file)));
}

async fn index(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    serve(&req, "index.html")
}

async fn file(req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    serve(&req, &path)
}

/// The file `name` with the console's headers, `304` when the client's copy is current, or a
/// 404 (problem JSON) for a name the console does not have.
fn serve(req: &HttpRequest, name: &str) -> Result<HttpResponse, ApiError> {
    let Some(at) = ASSETS.iter().position(|a| a.name == name) else {
        return Err(ApiError::NotFound {
            detail: format!("the console has no file {name:?}"),
        });
    };
    let (asset, etag) = (&ASSETS[at], &ETAGS[at]);
    let current = req
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == etag
        });
    let mut response = if current {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, etag.as_str()))
        // Revalidate every time (a 304 is a few bytes): a new binary's files are used at once.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header(("cross-origin-opener-policy", "same-origin"));
    if current {
        return Ok(response.finish());
    }
    Ok(response.content_type(asset.content_type).body(asset.body))
}

/// Middleware (outside `NormalizePath`, which makes `/console/` and `/console` one path):
/// redirects the bare `/console` to `/console/`, keeping the query, so that the page's
/// relative URLs resolve under it.
pub async fn redirect_bare_path(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if req.path() != PREFIX {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let location = match req.query_string() {
        "" => format!("{PREFIX}/"),
        query => format!("{PREFIX}/?{query}"),
    };
    let mut response = HttpResponse::PermanentRedirect().finish();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(req.into_response(response).map_into_right_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_consoles_reserved_filter_names_are_the_servers() {
        let app = include_str!("assets/app.js");
        let line = app
            .lines()
            .find(|l| l.starts_with("const RESERVED_QUERY_KEYS = ["))
            .expect("app.js declares RESERVED_QUERY_KEYS");
        let list = line
            .split_once('[')
            .and_then(|(_, rest)| rest.split_once(']'))
            .map(|(inside, _)| inside)
            .expect("a list");
        let console: Vec<&str> = list
            .split(',')
            .map(|k| k.trim().trim_matches('"'))
            .collect();
        assert_eq!(console, crate::query::params::RESERVED_KEYS);
    }

    #[test]
    fn every_asset_has_a_distinct_name_and_a_body() {
        for (i, a) in ASSETS.iter().enumerate() {
            assert!(!a.body.is_empty(), "{} is empty", a.name);
            assert!(
                ASSETS[..i].iter().all(|b| b.name != a.name),
                "{} twice",
                a.name
            );
        }
        assert_eq!(ETAGS.len(), ASSETS.len());
    }

    /// The relative URLs the files name (`import ... from "./api.js"`, `src="app.js"`).
    fn references(text: &str) -> Vec<String> {
        let mut found = Vec::new();
        for quote in ['"', '\''] {
            for (i, part) in text.split(quote).enumerate() {
                let name = part.strip_prefix("./").unwrap_or(part);
                let is_file = [".js", ".css", ".svg"].iter().any(|e| name.ends_with(e));
                if i % 2 == 1 && is_file && !name.contains('/') && !name.contains(' ') {
                    found.push(name.to_owned());
                }
            }
        }
        found
    }

    #[test]
    fn every_file_the_console_loads_is_embedded() {
        let mut checked = 0;
        for a in ASSETS
            .iter()
            .filter(|a| !a.content_type.starts_with("image/"))
        {
            let text = std::str::from_utf8(a.body).expect("text");
            for name in references(text) {
                assert!(
                    ASSETS.iter().any(|b| b.name == name),
                    "{} loads {name}, which is not embedded",
                    a.name
                );
                checked += 1;
            }
        }
        assert!(checked >= 6, "the references were read: {checked}");
    }

    #[test]
    fn no_console_script_parses_strings_as_html() {
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(a.body).expect("text");
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
            ] {
                assert!(!text.contains(sink), "{} uses {sink}", a.name);
            }
        }
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    }
}
