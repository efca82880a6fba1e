//! The demo's source service: `search`, a query fanned out to a few shards of embedded text,
//! each shard a source whose matches stream in at its own pace.
//!
//! Request body: the query, UTF-8 text matched case-insensitively (empty matches every line;
//! at most 200 bytes). Each source's header is JSON `{"shard", "lines"}`; each frame is JSON
//! `{"line", "text"}` for one matching line. A shard waits between matches (a slower shard
//! for each further one), so a page sees results arrive from several sources at once.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use gotalk::sources::{Source, SourceService};
use gotalk::Handlers;

/// The longest query, in bytes.
const MAX_QUERY: usize = 200;

/// The shards: a name and its lines. Written for the demo.
const SHARDS: [(&str, &[&str]); 4] = [
    (
        "harbour",
        &[
            "The ferry leaves the harbour at dawn with a cargo of letters.",
            "Gulls follow the fishing boats back in the afternoon.",
            "A lighthouse keeper counts the ships that pass at night.",
            "The harbour master keeps a log of every tide and storm.",
            "Rope, tar and salt: the smell of the docks in summer.",
            "A crane lifts containers stamped with distant port names.",
        ],
    ),
    (
        "mountain",
        &[
            "The trail climbs through pine forest to a high meadow.",
            "Snow stays on the north face until late in the summer.",
            "A hut at the pass offers soup and a bench to sleep on.",
            "Storms come over the ridge faster than a walker expects.",
            "From the summit the harbour is a grey line far below.",
            "Goats watch the climbers from ledges no person could reach.",
        ],
    ),
    (
        "city",
        &[
            "Trams rattle past the market before the shops open.",
            "The old library keeps its letters in oak cabinets.",
            "Night buses carry bakers to work and dancers home.",
            "A clock tower has run five minutes slow for a century.",
            "Street musicians play under the bridge when it rains.",
            "The river splits the city into two rival neighbourhoods.",
        ],
    ),
    (
        "desert",
        &[
            "Dunes shift a few metres each year with the wind.",
            "A caravan route follows wells spaced a day apart.",
            "At night the sky is full of stars and the sand turns cold.",
            "Lizards hide under stones through the heat of the day.",
            "A storm of sand can bury a road in a single afternoon.",
            "The oasis town trades dates, salt and news from the coast.",
        ],
    ),
];

/// Registers `search`.
pub(crate) fn register(handlers: &mut Handlers) {
    SourceService::new(|_sock, body: Bytes| async move {
        if body.len() > MAX_QUERY {
            return Err(format!("the query is longer than {MAX_QUERY} bytes"));
        }
        let query = std::str::from_utf8(&body)
            .map_err(|_| "the query is not UTF-8".to_owned())?
            .trim()
            .to_lowercase();
        let sources = SHARDS.iter().enumerate().map(move |(n, (name, lines))| {
            let hits: Vec<(usize, &str)> = lines
                .iter()
                .enumerate()
                .filter(|(_, line)| line.to_lowercase().contains(&query))
                .map(|(i, line)| (i + 1, *line))
                .collect();
            let header = serde_json::json!({ "shard": name, "lines": lines.len() });
            let pace = Duration::from_millis(40 + 30 * n as u64);
            let frames = stream::iter(hits).then(move |(line, text)| async move {
                tokio::time::sleep(pace).await;
                let frame = serde_json::json!({ "line": line, "text": text });
                Ok::<_, String>(Bytes::from(frame.to_string()))
            });
            Source::new(header.to_string(), frames)
        });
        Ok(stream::iter(sources))
    })
    .compress(true)
    .register(handlers, "search");
}
