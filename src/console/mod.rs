//! The web console: `GET /console`, a page to schedule events and watch
//! them, served from files compiled into the binary.
//!
//! The page is plain HTML, CSS and ES modules: no build step, nothing
//! fetched from elsewhere. It talks to chime only through the public
//! `POST /v1/metadata`, as any other client would, so this module serves
//! bytes and knows nothing of events, the log or the admin secret (the
//! page asks for the secret itself when the API answers 401).
//!
//! The files, and what each owns (every file says so at its top):
//! - `index.html`: the page's structure: tabs, the form, the secret dialog.
//! - `style.css`: the look, at 1280 px wide and down to 800 px.
//! - `app.js`: the entry point: tabs, refresh, the secret dialog.
//! - `api.js`: the calls to `/v1/metadata` and the admin secret.
//! - `form.js`: the "Schedule an event" form.
//! - `lists.js`: Pending, Processed and Invocation logs.
//! - `time.js`: the browser's time zone, and time as shown and as sent.
//! - `dom.js`: building elements from data without parsing HTML.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const INDEX: &str = include_str!("index.html");

/// Every file the page loads, by the name it is served under `/console/`.
const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: INDEX,
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("style.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("app.js"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("api.js"),
    },
    Asset {
        name: "form.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("form.js"),
    },
    Asset {
        name: "lists.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("lists.js"),
    },
    Asset {
        name: "time.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("time.js"),
    },
    Asset {
        name: "dom.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("dom.js"),
    },
];

/// The page may load only its own files and call only its own origin:
/// with no inline script or style allowed, text from an event (a URL, a
/// payload) that somehow reached the DOM as markup still could not run.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `/console`, `/console/` and `/console/<file>`, for any router state, so
/// they merge into the API's router.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/console", get(index))
        .route("/console/", get(index))
        .route("/console/{file}", get(asset))
}

async fn index() -> Response {
    serve(&ASSETS[0])
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(asset) => serve(asset),
        None => (StatusCode::NOT_FOUND, "no such console file\n").into_response(),
    }
}

fn serve(asset: &Asset) -> Response {
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    // The files change with the binary; no-cache makes the browser ask
    // again after an upgrade instead of mixing old and new modules.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(path: &str) -> (StatusCode, String, String) {
        let response = routes::<()>()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn serves_the_page_with_and_without_a_slash() {
        for path in ["/console", "/console/", "/console/index.html"] {
            let (status, content_type, body) = get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(content_type, "text/html; charset=utf-8", "{path}");
            assert!(body.contains("<title>"), "{path}");
        }
    }

    #[tokio::test]
    async fn serves_every_asset_with_its_type_and_nothing_else() {
        for asset in ASSETS {
            let (status, content_type, body) = get(&format!("/console/{}", asset.name)).await;
            assert_eq!(status, StatusCode::OK, "{}", asset.name);
            assert_eq!(content_type, asset.content_type, "{}", asset.name);
            assert_eq!(body, asset.body, "{}", asset.name);
        }
        let (status, _, _) = get("/console/nope.js").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, _) = get("/console/../Cargo.toml").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    /// Every file the page or a module refers to is one that is served, and
    /// every served file is used: a renamed module fails here, not in a
    /// browser.
    #[test]
    fn references_match_the_served_files() {
        let mut referenced = vec!["index.html".to_owned()];
        for asset in ASSETS {
            for quote in ['"', '\''] {
                for piece in asset.body.split(quote) {
                    let name = piece
                        .strip_prefix("/console/")
                        .or_else(|| piece.strip_prefix("./"));
                    if let Some(name) = name
                        && (name.ends_with(".js") || name.ends_with(".css"))
                    {
                        referenced.push(name.to_owned());
                    }
                }
            }
        }
        for name in &referenced {
            assert!(
                ASSETS.iter().any(|a| a.name == name),
                "{name} is referenced but not served"
            );
        }
        for asset in ASSETS {
            assert!(
                referenced.iter().any(|r| r == asset.name),
                "{} is served but never referenced",
                asset.name
            );
        }
    }
}
