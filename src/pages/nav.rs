//! The header of the full pages: where you are, where admins can go, sign in or out.

use leptos::prelude::*;

use crate::model::Role;

#[component]
pub fn Nav(
    role: Resource<Result<Option<Role>, ServerFnError>>,
    /// Which page is open: `wallboard`, `dead-letters` or `audit`.
    current: &'static str,
) -> impl IntoView {
    let here = move |page: &'static str| (page == current).then_some("page");
    view! {
        <header class="top">
            <a class="brand" href="/">
                "gc-status"
            </a>
            <nav aria-label="Main">
                <ul>
                    <li>
                        <a href="/" aria-current=here("wallboard")>
                            "Wallboard"
                        </a>
                    </li>
                    <Suspense fallback=|| ()>
                        {move || {
                            let admin = matches!(role.get(), Some(Ok(Some(Role::Admin))));
                            admin
                                .then(|| {
                                    view! {
                                        <li>
                                            <a href="/admin/dead-letters" aria-current=here("dead-letters")>
                                                "Dead letters"
                                            </a>
                                        </li>
                                        <li>
                                            <a href="/admin/audit" aria-current=here("audit")>
                                                "Audit"
                                            </a>
                                        </li>
                                    }
                                })
                        }}
                    </Suspense>
                </ul>
            </nav>
            <Suspense fallback=|| ()>
                {move || match role.get() {
                    Some(Ok(Some(Role::Admin))) => {
                        // A plain form: it works before (or without) scripts, and keeps the
                        // form-encoding code out of the wasm every wallboard downloads.
                        view! {
                            <form method="post" action="/api/logout" class="sign-out">
                                <button type="submit" data-testid="sign-out">
                                    "Sign out"
                                </button>
                            </form>
                        }
                            .into_any()
                    }
                    _ => {
                        view! {
                            <a class="sign-in" href="/login" data-testid="sign-in-link">
                                "Admin sign-in"
                            </a>
                        }
                            .into_any()
                    }
                }}
            </Suspense>
        </header>
    }
}
