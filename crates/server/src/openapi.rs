//! The OpenAPI document, generated from the handlers' `#[utoipa::path]`
//! annotations and the view types' schemas.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
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
        view::Deleted, view::Status, view::Details, view::OptionsView, routes::JobForm, crate::broker::WorkerView)),
    modifiers(&Bearer),
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
    }
}

/// The document served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
