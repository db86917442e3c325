//! The Leptos application: the HTML shell and the routes.

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, Meta, MetaTags, Stylesheet, Title};
use leptos_router::{
    components::{Route, Router, Routes},
    lazy_route, Lazy, LazyRoute, ParamSegment, SsrMode, StaticSegment,
};

use crate::pages::{
    audit::AuditPage, console::ConsolePage, dead_letter::DeadLetterPage, login::LoginPage,
    wallboard::WallboardPage, widget::WidgetPage,
};

/// The document around every page, rendered on the server.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <AutoReload options=options.clone() />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    // Every page waits for its data before the first byte (`SsrMode::Async`): the HTML is
    // complete before any script runs, which wallboards on locked-down screens rely on.
    let ssr = SsrMode::Async;
    view! {
        <Stylesheet id="leptos" href="/pkg/gc-status.css" />
        <Meta name="color-scheme" content="light dark" />
        <Title text="gc-status" />
        <Router>
            <Routes fallback=|| view! { <main class="narrow"><p class="not-found">"Page not found."</p></main> }>
                <Route path=StaticSegment("") view=WallboardPage ssr=ssr.clone() />
                <Route path=StaticSegment("widget") view=WidgetPage ssr=ssr.clone() />
                <Route path=(StaticSegment("widget"), ParamSegment("queue")) view=WidgetPage ssr=ssr.clone() />
                <Route path=StaticSegment("login") view={Lazy::<LoginRoute>::new()} ssr=ssr.clone() />
                <Route path=(StaticSegment("admin"), StaticSegment("dead-letters")) view={Lazy::<ConsoleRoute>::new()} ssr=ssr.clone() />
                <Route path=(StaticSegment("admin"), StaticSegment("dead-letter")) view={Lazy::<DeadLetterRoute>::new()} ssr=ssr.clone() />
                <Route path=(StaticSegment("admin"), StaticSegment("audit")) view={Lazy::<AuditRoute>::new()} ssr=ssr />
            </Routes>
        </Router>
    }
}

// The sign-in and admin pages load their code only when opened (`cargo leptos build --split`),
// so the wallboard and the widget, which every screen downloads, stay small.
macro_rules! lazy_page {
    ($route:ident, $page:ident) => {
        pub struct $route;

        #[lazy_route]
        impl LazyRoute for $route {
            fn data() -> Self {
                $route
            }

            fn view(_this: Self) -> AnyView {
                view! { <$page /> }.into_any()
            }
        }
    };
}

lazy_page!(LoginRoute, LoginPage);
lazy_page!(ConsoleRoute, ConsolePage);
lazy_page!(DeadLetterRoute, DeadLetterPage);
lazy_page!(AuditRoute, AuditPage);
