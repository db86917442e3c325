//! Routed pages, one file each with its server functions, and what they share.

pub mod audit;
pub mod console;
pub mod dead_letter;
pub mod format;
pub mod live;
pub mod login;
pub mod nav;
pub mod wallboard;
pub mod widget;

use leptos::prelude::*;

/// `"true"` once the page runs in the browser (its `data-hydrated` attribute, which the
/// end-to-end tests wait for before they interact).
pub fn use_hydrated() -> impl Fn() -> String + Copy + Send + Sync + 'static {
    let hydrated = RwSignal::new(false);
    Effect::new(move |_| hydrated.set(true));
    move || hydrated.get().to_string()
}

/// The message a server function sent, without the error-type prefix.
pub fn server_message(err: &ServerFnError) -> String {
    match err {
        ServerFnError::ServerError(message) => message.clone(),
        other => other.to_string(),
    }
}
