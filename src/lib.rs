//! gc-status: a durable, fast receiver for Genesys Cloud webhooks with a live status page.
//!
//! One crate, two builds (the cargo-leptos convention):
//! - `ssr`: the server binary — webhook ingestion, the SQLite store and the page renderer;
//! - `hydrate`: the WebAssembly that makes the rendered page live in the browser.

/// The Leptos application: shell, routes and pages (shared by both builds).
pub mod app;
/// Types shared between the server and the browser.
pub mod model;
/// One module per routed page, with its server functions.
pub mod pages;
/// Everything that runs only on the server; nothing here reaches the wasm build.
#[cfg(feature = "ssr")]
pub mod server;

#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    // `hydrate_lazy`: a page whose code is split off (the admin pages) loads it first.
    leptos::mount::hydrate_lazy(app::App);
}
