//! Signing in and out (`/ui/login`, `POST /ui/login`, `POST /ui/logout`):
//! a user name and token open a session (see [`super::session`]); the
//! sign-in page goes back to `next`, a page of the UI.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::error::UiResult;
use super::session::{SESSION_COOKIE, set_cookie};
use super::viewer::{Posted, Viewer};
use super::views::{Crumb, LoginPage, html};

/// A `next` target that stays within the UI.
fn safe_next(next: &str) -> String {
    let ok = next.starts_with("/ui/")
        && !next.contains("//")
        && !next.contains('\\')
        && !next.starts_with("/ui/login")
        && next.chars().all(|c| !c.is_control());
    if ok { next.to_string() } else { "/ui/".into() }
}

pub(super) async fn login_page(v: Viewer) -> UiResult<Response> {
    if v.reg.auth.is_none() {
        return Ok(Redirect::to("/ui/").into_response());
    }
    let next = safe_next(&v.param("next"));
    Ok(v.page(&LoginPage {
        layout: v.layout("Sign in", vec![Crumb::link("Projects", "/ui/")]),
        error: None,
        next,
        user: String::new(),
        session_hours: v.reg.ui_sessions.ttl().as_secs() / 3600,
    }))
}

pub(super) async fn login(Posted(v, form): Posted) -> UiResult<Response> {
    let Some(auth) = v.reg.auth.clone() else {
        return Ok(Redirect::to("/ui/").into_response());
    };
    let user = form.get("user").unwrap_or_default().trim().to_string();
    let token = form.get("token").unwrap_or_default().to_string();
    let next = safe_next(form.get("next").unwrap_or_default());
    let signed_in = if user.is_empty() || token.is_empty() {
        None
    } else {
        auth.sign_in(&user, &token).await
    };
    drop(token);
    let Some((identity, proof)) = signed_in else {
        tracing::info!(user = %user, "web UI: sign-in refused");
        let page = LoginPage {
            layout: v.layout("Sign in", vec![Crumb::link("Projects", "/ui/")]),
            error: Some("Invalid user name or token.".into()),
            next,
            user,
            session_hours: v.reg.ui_sessions.ttl().as_secs() / 3600,
        };
        return Ok(html(StatusCode::UNAUTHORIZED, &page, v.cookies()));
    };
    if let Some(old) = &v.session_id {
        v.reg.ui_sessions.remove(&v.reg.meta, old).await?;
    }
    let ttl = v.reg.ui_sessions.ttl_of(&proof);
    let id = v.reg.ui_sessions.create(&v.reg.meta, &user, proof).await?;
    tracing::info!(user = %user, identity = %identity.subject(), "web UI: signed in");
    let mut response = Redirect::to(&next).into_response();
    let cookie = set_cookie(SESSION_COOKIE, &id, "Lax", ttl, v.secure());
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}

pub(super) async fn logout(Posted(v, _): Posted) -> UiResult<Response> {
    if let Some(id) = &v.session_id {
        v.reg.ui_sessions.remove(&v.reg.meta, id).await?;
    }
    let mut response = Redirect::to("/ui/?signed_out=1").into_response();
    let cookie = set_cookie(SESSION_COOKIE, "", "Lax", Duration::ZERO, v.secure());
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_targets_stay_in_the_ui() {
        assert_eq!(safe_next("/ui/projects/a%2Fb"), "/ui/projects/a%2Fb");
        for bad in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/ui//evil",
            "/ui/\\evil",
            "/v2/",
            "",
            "/ui/login?next=/ui/",
        ] {
            assert_eq!(safe_next(bad), "/ui/", "{bad}");
        }
    }
}
