//! The OpenAPI document, generated from the handlers' `#[utoipa::path]`
//! annotations and the view types' schemas.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes;
use crate::view;

#[derive(OpenApi)]
#[openapi(
    info(title = "Stemroom", description = "Split songs into stems (drums, bass, other, vocals) with Demucs v4 on this machine."),
    paths(
        routes::root, routes::health, routes::server_status, routes::job_status, routes::list_jobs,
        routes::delete_job, routes::upload, routes::create_job, routes::stemify, routes::separate,
        routes::download, routes::stem, routes::events, routes::openapi_json
    ),
    components(schemas(view::JobView, view::Created, view::JobList, view::Health, view::ServerStatus,
        view::Deleted, view::Status, view::Details, view::OptionsView, routes::JobForm, routes::UploadForm, routes::LinkJob, routes::JobOptionFields,
        crate::broker::WorkerView)),
    modifiers(&Bearer, &Aliases),
    security(("bearer" = []))
)]
struct ApiDoc;

struct Bearer;
impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // `GET /events/{id}` only: a browser's `EventSource` sets no headers.
        components.add_security_scheme(
            "access_token",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "access_token",
                "The bearer token in the address (GET /events/{id} only)",
            ))),
        );
    }
}

/// The routes that answer as another (`routes::router`): each documented
/// as that one's operations, under operation ids of its own (an OpenAPI
/// operation id names one operation).
const ALIASES: &[(&str, &str)] = &[
    ("/job/{id}", "/status/{id}"),
    ("/jobs/{id}", "/status/{id}"),
    ("/api/jobs/{id}", "/status/{id}"),
    ("/result/{id}", "/download/{id}"),
];

struct Aliases;
impl Modify for Aliases {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let paths = &mut openapi.paths.paths;
        // DELETE is documented at /job/{id}; /jobs/{id} takes it too.
        let delete = paths.get("/job/{id}").and_then(|p| p.delete.clone());
        for (alias, of) in ALIASES {
            let Some(mut item) = paths.get(*of).cloned() else { continue };
            let suffix = alias.trim_matches('/').replace(['/', '{', '}'], "_");
            let renamed = |op: &mut utoipa::openapi::path::Operation| {
                op.operation_id = op.operation_id.as_ref().map(|id| format!("{id}__{suffix}"));
            };
            if let Some(op) = item.get.as_mut() {
                renamed(op);
            }
            match *alias {
                "/job/{id}" => item.delete = delete.clone(),
                "/jobs/{id}" => {
                    item.delete = delete.clone();
                    if let Some(op) = item.delete.as_mut() {
                        renamed(op);
                    }
                }
                _ => {}
            }
            paths.insert((*alias).to_string(), item);
        }
    }
}

/// The document served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
