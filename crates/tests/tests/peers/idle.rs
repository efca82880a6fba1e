//! One idle period past the Go client's 30 s read timeout, for the Go client over TCP and
//! WebSocket and gotalk.js, at once, against the fixture's default heartbeats.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;

use crate::tools::reserved;
use crate::{go_client, gotalk_js, Server};

/// Longer than Go's read timeout (30 s): our heartbeats (every 20 s) keep Go's reader alive.
const IDLE: Duration = Duration::from_secs(35);

/// Probes after 8 s of silence, dead after 24 s: the Go client's heartbeats (every 20 s)
/// leave gaps long enough for probes to come due, and short enough to stay within the bound,
/// since the `$ping` its handlers would see is withheld.
const PROBE_INTERVAL: &str = "8";

#[tokio::test]
async fn every_peer_idles_past_go_read_timeout_and_sees_no_reserved_message() {
    let server = Server::fixture(&["--probe-interval", PROBE_INTERVAL]).await;
    let go = async {
        let Some(lines) = go_client::checklist(&server, IDLE).await else { return };
        for transport in ["tcp", "websocket"] {
            let names = go_client::names(&lines, transport);
            assert_eq!(reserved(&names), Vec::<&String>::new(), "{transport}: {lines:#?}");
        }
    };
    let js = async {
        let Some(names) = gotalk_js::checklist(&server, IDLE).await else { return };
        assert_eq!(reserved(&names), Vec::<&String>::new(), "{names:?}");
    };
    // Both run to their end, so a failure of one does not hide the other's.
    let (go, js) =
        tokio::join!(AssertUnwindSafe(go).catch_unwind(), AssertUnwindSafe(js).catch_unwind());
    if let Err(panic) = go.and(js) {
        std::panic::resume_unwind(panic);
    }
}
