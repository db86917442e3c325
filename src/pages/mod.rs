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

use leptos::prelude::ServerFnError;

/// The message a server function sent, without the error-type prefix.
pub fn server_message(err: &ServerFnError) -> String {
    match err {
        ServerFnError::ServerError(message) => message.clone(),
        other => other.to_string(),
    }
}
