//! The web UI, embedded in the binary. Owned by the UI issue.
//!
//! Every file under `ui/` (HTML, ES modules, CSS and the vendored uPlot) is
//! compiled into the binary with `rust-embed` and served at its own path, with
//! `/` answering `index.html`. There is no wildcard route: a path that is not
//! an embedded file falls through to the service's other routes (`/api`,
//! `/metrics`, `/healthz`) or to its 404.
//!
//! Caching: every answer carries a strong `ETag` (the file's SHA-256), and a
//! matching `If-None-Match` gets `304 Not Modified`. `index.html` and the
//! application's own modules are `no-cache` (always revalidated, so a new
//! binary is picked up at once); the vendored libraries, whose content only
//! changes with their version, may be cached for a year.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_embed::Embed;

#[derive(Embed)]
#[folder = "ui/"]
struct Assets;

/// `Cache-Control` for files that must be revalidated on every load.
const REVALIDATE: &str = "no-cache";
/// `Cache-Control` for vendored third-party files.
const LONG_LIVED: &str = "public, max-age=31536000, immutable";

/// Routes serving the UI at `/` (static files; the API lives under `/api`).
pub fn router() -> axum::Router {
    let mut router =
        Router::new().route("/", get(|headers: HeaderMap| serve("index.html", headers)));
    for path in Assets::iter() {
        let path: &'static str = match path {
            std::borrow::Cow::Borrowed(path) => path,
            // Debug builds read the folder at run time; the router lives for
            // the whole process, so leaking these few names is fine.
            std::borrow::Cow::Owned(path) => Box::leak(path.into_boxed_str()),
        };
        router = router.route(
            &format!("/{path}"),
            get(move |headers: HeaderMap| serve(path, headers)),
        );
    }
    router
}

/// Paths of every embedded file, relative to `ui/` (for tests and docs).
pub fn files() -> Vec<String> {
    Assets::iter().map(|path| path.into_owned()).collect()
}

async fn serve(path: &'static str, headers: HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    let cache = if path.starts_with("vendor/") {
        LONG_LIVED
    } else {
        REVALIDATE
    };
    let mut response = if if_none_match(&headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mime = mime_guess::from_path(path).first_or_octet_stream();
        let mut response = file.data.into_owned().into_response();
        let textual = mime.type_() == mime_guess::mime::TEXT
            || mime.subtype() == mime_guess::mime::JAVASCRIPT
            || mime.subtype() == mime_guess::mime::JSON;
        let content_type = if textual && mime.get_param("charset").is_none() {
            format!("{mime}; charset=utf-8")
        } else {
            mime.to_string()
        };
        if let Ok(value) = HeaderValue::from_str(&content_type) {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        response
    };
    let out = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, value);
    }
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if path == "index.html" {
        out.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
    }
    response
}

/// Whether `If-None-Match` names `etag` (or is `*`).
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(path: &str, etag: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(etag) = etag {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        router()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn index_is_served_at_root_and_revalidated() {
        let response = get("/", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers();
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        let etag = headers[header::ETAG].to_str().unwrap().to_string();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&body).contains("<title>"));
        let again = get("/", Some(&etag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()[header::ETAG], etag.as_str());
    }

    #[tokio::test]
    async fn modules_and_vendor_files_have_types_and_cache_policy() {
        let app = get("/js/app.js", None).await;
        assert_eq!(app.status(), StatusCode::OK);
        assert_eq!(
            app.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(app.headers()[header::CACHE_CONTROL], "no-cache");
        let uplot = get("/vendor/uplot/uPlot.iife.min.js", None).await;
        assert_eq!(uplot.status(), StatusCode::OK);
        assert!(
            uplot.headers()[header::CACHE_CONTROL]
                .to_str()
                .unwrap()
                .contains("max-age=31536000")
        );
        let css = get("/vendor/uplot/uPlot.min.css", None).await;
        assert_eq!(
            css.headers()[header::CONTENT_TYPE],
            "text/css; charset=utf-8"
        );
        assert_eq!(
            get("/vendor/uplot/LICENSE", None).await.status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn unknown_paths_are_not_found_and_api_is_not_shadowed() {
        for path in [
            "/nope",
            "/js/nope.js",
            "/api/charts",
            "/metrics",
            "/healthz",
        ] {
            assert_eq!(
                get(path, None).await.status(),
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
        // Merged with other routes, the UI does not take them over.
        let app = router().route("/healthz", axum::routing::get(|| async { "ok" }));
        let response = app
            .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[test]
    fn every_file_is_embedded() {
        let files = files();
        for needed in [
            "index.html",
            "js/app.js",
            "vendor/uplot/uPlot.iife.min.js",
            "vendor/uplot/LICENSE",
        ] {
            assert!(files.iter().any(|f| f == needed), "{needed} missing");
        }
    }
}
