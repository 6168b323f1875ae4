//! The OpenAPI 3 document (`GET /openapi.json`) and its docs page
//! (`GET /docs`), generated from the route table: every mounted route is in
//! the document, with its path parameters, its security (an API key with
//! the route's permission, or none for public routes, whose reason is
//! given) and, where the route declares them, its query parameters, request
//! body and response schemas (types deriving `utoipa::ToSchema`).
//! CI fuzzes the API from this document (scripts/fuzz-api.sh).

use std::borrow::Cow;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::Json;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, ObjectBuilder, OpenApi, OpenApiBuilder,
    PathsBuilder, Ref, RefOr, Required, ResponseBuilder, Schema, Type,
};

use super::routes::{routes, Access, Route};
use super::AppState;

/// A schema and the named schemas it refers to.
pub type SchemaFn = fn(&mut Vec<(String, RefOr<Schema>)>) -> RefOr<Schema>;

/// Query parameters of a route.
pub type ParamsFn = fn() -> Vec<utoipa::openapi::path::Parameter>;

/// What the document says of one route beyond its path and access.
#[derive(Clone, Copy, Default)]
pub struct Doc {
    pub summary: Option<&'static str>,
    pub query: Option<ParamsFn>,
    pub body: Option<SchemaFn>,
    pub response: Option<SchemaFn>,
}

/// [`SchemaFn`] of `T`: registers `T` and what it refers to, returns a ref.
pub fn schema_of<T: utoipa::ToSchema>(out: &mut Vec<(String, RefOr<Schema>)>) -> RefOr<Schema> {
    T::schemas(out);
    let name: Cow<str> = T::name();
    out.push((name.to_string(), T::schema()));
    RefOr::Ref(Ref::from_schema_name(name))
}

/// [`ParamsFn`] of a query struct.
pub fn query_of<T: utoipa::IntoParams>() -> Vec<utoipa::openapi::path::Parameter> {
    T::into_params(|| Some(ParameterIn::Query))
}

fn method(m: &axum::http::Method) -> HttpMethod {
    match *m {
        axum::http::Method::POST => HttpMethod::Post,
        axum::http::Method::PUT => HttpMethod::Put,
        axum::http::Method::PATCH => HttpMethod::Patch,
        axum::http::Method::DELETE => HttpMethod::Delete,
        _ => HttpMethod::Get,
    }
}

/// The `{"error": {"code", "message"}}` body every API error has.
fn error_schema() -> Schema {
    let inner = ObjectBuilder::new()
        .property("code", ObjectBuilder::new().schema_type(Type::String))
        .required("code")
        .property("message", ObjectBuilder::new().schema_type(Type::String))
        .required("message");
    Schema::Object(
        ObjectBuilder::new()
            .property("error", inner)
            .required("error")
            .build(),
    )
}

/// The document for `table`.
pub fn document(table: &[Route]) -> OpenApi {
    let mut schemas: Vec<(String, RefOr<Schema>)> = vec![("Error".into(), error_schema().into())];
    let mut paths = PathsBuilder::new().build();
    for route in table {
        let mut op = OperationBuilder::new()
            .operation_id(Some(format!(
                "{}{}",
                route.method.as_str().to_lowercase(),
                route
                    .path
                    .replace(['/', '{', '}', '-'], "_")
                    .trim_end_matches('_')
            )))
            .tag(route.path.split('/').nth(2).unwrap_or("gateway"));
        let mut description = String::new();
        match route.access {
            Access::Public(why) => description.push_str(&format!("Public: {why}.")),
            Access::Key(p) | Access::KeyOrQueryToken(p) => {
                description.push_str(&format!("Needs permission `{}`.", p.as_str()));
                op = op.security(SecurityRequirement::new("api_key", Vec::<String>::new()));
            }
        }
        if let Some(s) = route.doc.summary {
            op = op.summary(Some(s));
        }
        op = op.description(Some(description));
        for name in route
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        {
            op = op.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
            );
        }
        if let Some(query) = route.doc.query {
            for p in query() {
                op = op.parameter(p);
            }
        }
        if let Some(body) = route.doc.body {
            let schema = body(&mut schemas);
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(schema)).build(),
                    )
                    .required(Some(Required::True))
                    .build(),
            ));
        }
        let ok = match route.doc.response {
            Some(resp) => {
                let schema = resp(&mut schemas);
                ResponseBuilder::new().description("success").content(
                    "application/json",
                    ContentBuilder::new().schema(Some(schema)).build(),
                )
            }
            None => ResponseBuilder::new().description("success"),
        };
        let error = || {
            ResponseBuilder::new()
                .description("error")
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(RefOr::Ref(Ref::from_schema_name("Error"))))
                        .build(),
                )
                .build()
        };
        op = op.response("200", ok.build());
        if route.doc.body.is_some() || route.doc.query.is_some() {
            op = op.response("400", error());
        }
        if route.access.permission().is_some() {
            op = op.response("401", error()).response("403", error());
        }
        if route.path.contains('{') {
            op = op.response("404", error());
        }
        paths.add_path_operation(route.path, vec![method(&route.method)], op.build());
    }
    let mut components = ComponentsBuilder::new().security_scheme(
        "api_key",
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    for (name, schema) in schemas {
        components = components.schema(name, schema);
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("callstream")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Real-time media gateway for a multi-tenant contact center. \
                     Authenticate with `Authorization: Bearer <api key>`.",
                )),
        )
        .paths(paths)
        .components(Some(components.build()))
        .build()
}

pub async fn openapi_json(State(_): State<AppState>) -> impl IntoResponse {
    Json(document(&routes()))
}

/// A self-contained page listing every operation (no external scripts: the
/// gateway may run where browsers cannot fetch a CDN).
pub async fn docs_page(State(_): State<AppState>) -> impl IntoResponse {
    let doc = document(&routes());
    let mut rows = String::new();
    for (path, item) in &doc.paths.paths {
        for (m, op) in operations(item) {
            let esc = |s: &str| {
                s.replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
            };
            rows.push_str(&format!(
                "<tr><td class=m>{m}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>\n",
                esc(path),
                esc(op.summary.as_deref().unwrap_or("")),
                esc(op.description.as_deref().unwrap_or("")),
            ));
        }
    }
    let html = format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>callstream API</title>\
         <style>body{{font:15px system-ui;margin:2em}}td{{padding:.3em .8em;border-bottom:1px solid #ddd}}\
         .m{{font-weight:bold}}</style></head><body><h1>callstream API {}</h1>\
         <p>The machine-readable document: <a href=\"/openapi.json\">/openapi.json</a> (OpenAPI {}).</p>\
         <table><tr><th>method</th><th>path</th><th>what</th><th>access</th></tr>\n{rows}</table></body></html>",
        doc.info.version, "3.1",
    );
    ([(header::CACHE_CONTROL, "no-cache")], Html(html))
}

fn operations(item: &PathItem) -> Vec<(&'static str, &utoipa::openapi::path::Operation)> {
    [
        ("GET", &item.get),
        ("POST", &item.post),
        ("PUT", &item.put),
        ("PATCH", &item.patch),
        ("DELETE", &item.delete),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.as_ref().map(|o| (m, o)))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_document_with_its_security() {
        let table = routes();
        let doc = document(&table);
        let json = serde_json::to_value(&doc).unwrap();
        for route in &table {
            let m = route.method.as_str().to_lowercase();
            let op = &json["paths"][route.path][&m];
            assert!(op.is_object(), "{} {} missing", route.method, route.path);
            let secured = op["security"].is_array();
            assert_eq!(
                secured,
                route.access.permission().is_some(),
                "{}",
                route.path
            );
        }
        assert_eq!(json["openapi"], "3.1.0");
        assert!(json["components"]["schemas"]["Error"].is_object());
    }
}
