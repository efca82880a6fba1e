//! Who may connect: a second gateway, at `/private/gotalk/`, that only opens sockets for a
//! logged-in user, shown by the page at `/private`.
//!
//! `POST /private/login` with a name in the body starts a session. Its token comes back two
//! ways, and the gateway's `on_connect` hook takes either:
//! - **a cookie** (`session`, `HttpOnly`, `SameSite=Strict`), which the browser sends with the
//!   WebSocket upgrade by itself: the way for pages on this site;
//! - **the token in the body**, which a page puts in the socket's URL as
//!   `?access_token=…`: the way for pages on other sites and for programs. A browser's
//!   WebSocket cannot send an `Authorization` header, and the other place a page controls,
//!   `Sec-WebSocket-Protocol`, is for naming a subprotocol (the server must echo one back),
//!   so the query it is. A query can end up in a proxy's access log: keep such tokens short
//!   lived. Neither the gateway nor this app logs URLs, and the browser client leaves the
//!   query out of its errors.
//!
//! Without a session the socket is refused with 4401 and a reason; with a token that is not
//! one, 4403. The page hears `refused`, its keepalive stops instead of retrying, and after
//! the login it calls `resume()` (cookie) or opens a socket with the token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use gotalk::{Config, Handlers, UpgradeRequest};
use gotalk_gateway::{Gateway, Refusal};

/// The user a socket belongs to, as `on_connect` found it; handlers read it from the
/// upgrade request's extensions.
#[derive(Clone, Debug)]
pub(crate) struct User(pub(crate) String);

/// Sessions by token. A real app keeps them in its database, with an expiry.
#[derive(Clone, Default)]
struct Sessions(Arc<Mutex<HashMap<String, String>>>);

impl Sessions {
    fn user(&self, token: &str) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(token).cloned()
    }
}

/// The routes under `/private`, with a gateway of their own on `handlers`.
pub(crate) fn router(handlers: Arc<Handlers>) -> (Router, Gateway) {
    let sessions = Sessions::default();
    let check = sessions.clone();
    let gateway = Gateway::new(handlers, Config::default())
        .on_connect(move |request| std::future::ready(authenticate(&check, request)));
    let router = Router::new()
        .route("/private", get(|| async { Html(PAGE) }))
        .route("/private/login", post(login))
        .with_state(sessions)
        .nest_service("/private/gotalk", gateway.router());
    (router, gateway)
}

/// The `on_connect` hook: a session's token from the query or the cookie, or a refusal.
fn authenticate(
    sessions: &Sessions,
    mut request: UpgradeRequest,
) -> Result<UpgradeRequest, Refusal> {
    let token = query_token(request.uri.query()).or_else(|| cookie_token(&request.headers));
    let Some(token) = token else {
        return Err(Refusal::unauthorized("log in first"));
    };
    let Some(name) = sessions.user(&token) else {
        return Err(Refusal::forbidden("unknown or expired session"));
    };
    request.extensions.insert(User(name));
    Ok(request)
}

fn query_token(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|pair| pair.strip_prefix("access_token=")).map(str::to_owned)
}

fn cookie_token(headers: &axum::http::HeaderMap) -> Option<String> {
    headers.get_all(COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|cookies| {
        cookies.split(';').find_map(|c| c.trim().strip_prefix("session=")).map(str::to_owned)
    })
}

/// Starts a session for the name in the body: the cookie, and the token as JSON.
async fn login(State(sessions): State<Sessions>, name: String) -> Response {
    let name = name.trim();
    if name.is_empty() || name.len() > 64 {
        return (StatusCode::BAD_REQUEST, "a name of 1 to 64 bytes, please").into_response();
    }
    // URL-safe, so it goes in a query as is.
    let token = format!("{:032x}", rand::random::<u128>());
    sessions.0.lock().unwrap_or_else(|p| p.into_inner()).insert(token.clone(), name.to_owned());
    let cookie = format!("session={token}; Path=/private; HttpOnly; SameSite=Strict");
    let body = serde_json::json!({ "token": token }).to_string();
    ([(SET_COOKIE, cookie), (CONTENT_TYPE, "application/json".to_owned())], body).into_response()
}

/// The page: connects at once, is refused, logs in and connects again. `?mode=token` uses
/// the token in the URL instead of the cookie.
const PAGE: &str = r#"<!DOCTYPE html>
<meta charset="utf-8">
<title>gotalk: logging in</title>
<link rel="icon" href="data:,">
<script src="/private/gotalk/gotalk.js"></script>
<form id="login"><input id="name" value="ada"> <button>Log in</button></form>
<p>state: <span id="state">…</span>; refused: <span id="refused">no</span></p>
<p>you are: <span id="who">…</span></p>
<script>
  const tokenMode = new URLSearchParams(location.search).get('mode') === 'token';
  const show = (id, text) => (document.getElementById(id).textContent = text);
  const refusals = (window.refusals = []);
  let sock;
  function connect(address) {
    sock = window.sock = gotalk.connection(address);
    sock.on('state', (state) => show('state', state));
    sock.on('refused', (r) => {
      refusals.push(r);
      show('refused', r.code + ' ' + r.reason);
    });
    // A refused socket opens too (the refusal is its close), so this call may fail.
    sock.on('open', () => sock.request('whoami').then((name) => show('who', name), () => {}));
  }
  connect();
  document.getElementById('login').addEventListener('submit', async (event) => {
    event.preventDefault();
    const response = await fetch('/private/login', {
      method: 'POST',
      body: document.getElementById('name').value,
      // A page on another site would have no cookie here: only the token.
      credentials: tokenMode ? 'omit' : 'same-origin',
    });
    const { token } = await response.json();
    if (tokenMode) {
      sock.end();
      connect('/private/gotalk/?access_token=' + encodeURIComponent(token));
    } else {
      sock.resume(); // the cookie is set: the refused keepalive tries again
    }
  });
</script>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(uri: &str, cookie: Option<&str>) -> UpgradeRequest {
        let mut headers = axum::http::HeaderMap::new();
        if let Some(cookie) = cookie {
            headers.insert(COOKIE, cookie.parse().unwrap());
        }
        UpgradeRequest::new(uri.parse().unwrap(), headers)
    }

    #[test]
    fn a_session_token_in_the_query_or_the_cookie_lets_its_user_in() {
        let sessions = Sessions::default();
        sessions.0.lock().unwrap().insert("t1".into(), "ada".into());
        let cases = [
            upgrade("/private/gotalk/?gotalk-retry=1&access_token=t1", None),
            upgrade("/private/gotalk/", Some("theme=dark; session=t1")),
        ];
        for request in cases {
            let request = authenticate(&sessions, request).expect("accepted");
            assert_eq!(request.extensions.get::<User>().unwrap().0, "ada");
        }
        let refused = authenticate(&sessions, upgrade("/private/gotalk/", None)).unwrap_err();
        assert_eq!(refused.close_code(), 4401);
        let stranger = upgrade("/private/gotalk/?access_token=t2", None);
        assert_eq!(authenticate(&sessions, stranger).unwrap_err().close_code(), 4403);
    }
}
