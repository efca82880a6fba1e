//! The gateway's WebSocket framing against a raw client that writes every byte by hand: each
//! rule of RFC 6455 a server enforces, with its close code; fragments, interleaved pings and
//! characters split across frames, all one byte stream; the message limit counted across
//! fragments; the close handshake, every time; the reason for a close reaching a client that
//! is still sending; and the opening handshake's refusals.

mod common;

use common::process::ServeProcess;
use common::raw_ws::{self, Got, RawWs, BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT};
use common::web::WebServer;
use common::{handlers, within};
use gotalk::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn raw(server: &WebServer) -> RawWs<TcpStream> {
    let stream = TcpStream::connect(server.http).await.unwrap();
    let host = server.http.to_string();
    let mut ws = RawWs::upgrade(stream, "/gotalk/", &host, &[]).await.expect("upgrade");
    ws.gotalk_handshake().await;
    ws
}

/// The close frame's code and text, past any pongs.
async fn close_of(ws: &mut RawWs<TcpStream>) -> (Option<u16>, String) {
    loop {
        match ws.next().await {
            Got::Frame { opcode: PONG, .. } => {}
            Got::Frame { opcode: CLOSE, payload } if payload.len() >= 2 => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                return (Some(code), String::from_utf8_lossy(&payload[2..]).into_owned());
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    raw_ws::encode(opcode, fin, payload, true)
}

#[tokio::test]
async fn every_rule_a_server_enforces_is_closed_with_its_code() {
    let server = WebServer::start(handlers(), Config::default(), |g| g).await;
    let euro = "€".as_bytes();
    let close_with = |code: u16, reason: &[u8]| [&code.to_be_bytes()[..], reason].concat();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("a reserved bit", frame(BINARY | 0x40, true, b"x"), 1002),
        ("reserved opcode 3", frame(0x3, true, b"x"), 1002),
        ("reserved opcode 0xB", frame(0xB, true, b"x"), 1002),
        ("a ping of 126 bytes", frame(PING, true, &[b'p'; 126]), 1002),
        ("a fragmented ping", frame(PING, false, b"p"), 1002),
        ("a continuation with no message", frame(CONTINUATION, true, b"x"), 1002),
        (
            "a new message inside a fragmented one",
            [frame(TEXT, false, b"r0001"), frame(BINARY, true, b"004echo")].concat(),
            1002,
        ),
        (
            "a length with its top bit set",
            [&[0x82, 0xff][..], &[0x80, 0, 0, 0, 0, 0, 0, 1], &[1, 2, 3, 4]].concat(),
            1002,
        ),
        ("a close of one byte", frame(CLOSE, true, &[3]), 1002),
        ("close code 1005", frame(CLOSE, true, &close_with(1005, b"")), 1002),
        ("close code 2999", frame(CLOSE, true, &close_with(2999, b"")), 1002),
        (
            "bad UTF-8 across fragments",
            [frame(TEXT, false, &euro[..2]), frame(CONTINUATION, true, b"(")].concat(),
            1007,
        ),
        ("UTF-8 cut at the end of a message", frame(TEXT, true, &euro[..2]), 1007),
        ("a close reason that is not UTF-8", frame(CLOSE, true, &close_with(1000, b"\xff")), 1007),
    ];
    for (what, wire, code) in cases {
        let mut ws = raw(&server).await;
        ws.io.write_all(&wire).await.unwrap();
        let (got, _) = close_of(&mut ws).await;
        assert_eq!(got, Some(code), "{what}");
    }
    server.stop().await;
}

#[tokio::test]
async fn fragments_pings_and_characters_split_across_frames_are_one_byte_stream() {
    let server = WebServer::start(handlers(), Config::default(), |g| g).await;
    let mut ws = raw(&server).await;
    // One text message in fragments of one byte, the euro sign split across three of them,
    // with a ping after every fourth.
    let request = "r0001004echo00000006€uro".as_bytes();
    let mut wire = Vec::new();
    for (i, byte) in request.iter().enumerate() {
        let opcode = if i == 0 { TEXT } else { CONTINUATION };
        wire.extend(frame(opcode, i == request.len() - 1, &[*byte]));
        if i % 4 == 3 {
            wire.extend(frame(PING, true, format!("p{i}").as_bytes()));
        }
    }
    ws.io.write_all(&wire).await.unwrap();
    let mut data = Vec::new();
    let mut pongs = 0;
    while data.len() < 2 {
        match ws.next().await {
            Got::Frame { opcode: PONG, .. } => pongs += 1,
            Got::Frame { opcode: BINARY, payload } => data.push(payload),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(data, [b"R000100000006".to_vec(), "€uro".as_bytes().to_vec()]);
    // Pongs may be coalesced (only the latest ping not yet answered is), but never lost.
    assert!(pongs >= 1, "{pongs} pongs");
    ws.frame(PING, b"last").await;
    loop {
        match ws.next().await {
            Got::Frame { opcode: PONG, payload } if payload == b"last" => break,
            Got::Frame { opcode: PONG, .. } => {}
            other => panic!("{other:?}"),
        }
    }
    server.stop().await;
}

/// `count` notifications for nobody, `size` bytes each on the wire.
fn notifications(count: usize, size: usize) -> Vec<u8> {
    let payload = size - "n004none00000000".len();
    let one = format!("n004none{payload:08x}{}", "x".repeat(payload));
    one.repeat(count).into_bytes()
}

#[tokio::test]
async fn the_message_limit_counts_every_fragment() {
    let config = Config::default().max_payload(1000);
    let limit = gotalk::ws::max_message_size(&config);
    let server = WebServer::start(handlers(), config, |g| g).await;

    // Exactly the limit, in three fragments with a ping between: accepted.
    let mut ws = raw(&server).await;
    let message = notifications(12, 766);
    assert_eq!(message.len(), limit);
    let (a, rest) = message.split_at(3000);
    let (b, c) = rest.split_at(3000);
    let wire = [
        frame(BINARY, false, a),
        frame(PING, true, b"between"),
        frame(CONTINUATION, false, b),
        frame(CONTINUATION, true, c),
    ]
    .concat();
    ws.io.write_all(&wire).await.unwrap();
    ws.frame(BINARY, b"r0001004echo00000002ok").await;
    assert_eq!(ws.data().await, b"R000100000002");
    assert_eq!(ws.data().await, b"ok");

    // One byte more, in its last fragment: closed with 1009.
    let mut ws = raw(&server).await;
    let mut message = notifications(12, 766);
    message.push(b'n');
    let (a, b) = message.split_at(limit);
    let wire = [frame(BINARY, false, a), frame(CONTINUATION, true, b)].concat();
    ws.io.write_all(&wire).await.unwrap();
    assert_eq!(close_of(&mut ws).await, (Some(1009), "message too big".into()));
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_sends_01_and_its_close_in_one_write_gets_a_close_back_every_time() {
    // The real server, which talks first (a relay id, a question for the page): its writes
    // race the peer's Close.
    let served = ServeProcess::start(&["--http", "127.0.0.1:0", "--tcp", "127.0.0.1:0"]).await;
    let host = format!("127.0.0.1:{}", served.http_port());
    let mut missing = Vec::new();
    for attempt in 0..100 {
        let stream = TcpStream::connect(&host).await.unwrap();
        let mut ws = RawWs::upgrade(stream, "/gotalk/", &host, &[]).await.expect("upgrade");
        let wire = [frame(BINARY, true, b"01"), frame(CLOSE, true, &1000u16.to_be_bytes())];
        ws.io.write_all(&wire.concat()).await.unwrap();
        let answered = loop {
            match ws.next().await {
                Got::Frame { opcode: BINARY, .. } => {}
                Got::Frame { opcode: CLOSE, payload } => break payload == 1000u16.to_be_bytes(),
                _ => break false,
            }
        };
        if !answered {
            missing.push(attempt);
        }
    }
    assert!(missing.is_empty(), "no close came back in attempts {missing:?}");
}

#[tokio::test]
async fn a_message_over_the_limit_is_closed_with_1009_and_no_reset_while_the_client_sends() {
    let config = Config::default().max_payload(1000);
    let server = WebServer::start(handlers(), config, |g| g).await;
    for attempt in 0..10 {
        let mut ws = raw(&server).await;
        // The header of a 4 MiB message and its first MiB: the server refuses the message on
        // its header, while the client is still sending it.
        let header = [&[0x82, 0xff][..], &(4u64 << 20).to_be_bytes(), &[0, 0, 0, 0]].concat();
        ws.io.write_all(&header).await.unwrap();
        ws.io.write_all(&vec![b'x'; 1 << 20]).await.unwrap();
        match ws.next().await {
            Got::Frame { opcode: CLOSE, payload } => {
                assert_eq!(&payload[..], b"\x03\xf1message too big", "attempt {attempt}");
            }
            other => panic!("attempt {attempt}: {other:?}, not close 1009"),
        }
        // The client answers the close. The server must have read what the client sent
        // before its Close: a socket closed with bytes unread is reset, and a reset can
        // destroy the close before a client reads it.
        ws.close(1009).await;
        assert_eq!(ws.next().await, Got::Eof, "attempt {attempt}: the connection ends cleanly");
    }
    server.stop().await;
}

/// Sends an upgrade request with `version` and `extra` header lines, and returns the
/// response head.
async fn upgrade_head(server: &WebServer, version: &str, extra: &str) -> String {
    let mut stream = TcpStream::connect(server.http).await.unwrap();
    let request = format!(
        "GET /gotalk/ HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: {version}\r\n\
         {extra}\r\n",
        server.http
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    within("the response head", async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before the head ended");
            head.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    String::from_utf8_lossy(&head).to_ascii_lowercase()
}

#[tokio::test]
async fn a_bad_version_is_refused_with_the_version_we_speak() {
    let server = WebServer::start(handlers(), Config::default(), |g| g).await;
    let refused = upgrade_head(&server, "8", "").await;
    assert!(refused.starts_with("http/1.1 400"), "{refused}");
    assert!(refused.contains("\r\nsec-websocket-version: 13\r\n"), "{refused}");
    server.stop().await;
}

#[tokio::test]
async fn no_extension_is_agreed_to() {
    let server = WebServer::start(handlers(), Config::default(), |g| g).await;
    let extensions = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
    let accepted = upgrade_head(&server, "13", extensions).await;
    assert!(accepted.starts_with("http/1.1 101"), "{accepted}");
    assert!(accepted.contains("\r\nsec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"));
    assert!(!accepted.contains("sec-websocket-extensions"), "{accepted}");
    server.stop().await;
}

#[tokio::test]
async fn frames_sent_with_the_upgrade_request_are_read() {
    // A client may send its first frames without waiting for the 101: the server's HTTP side
    // reads them along with the request, and they must reach the socket all the same.
    let server = WebServer::start(handlers(), Config::default(), |g| g).await;
    let mut stream = TcpStream::connect(server.http).await.unwrap();
    let mut wire = raw_ws::upgrade_request("/gotalk/", &server.http.to_string(), &[]).into_bytes();
    wire.extend(frame(BINARY, true, b"01"));
    wire.extend(frame(BINARY, true, b"r0001004echo00000002hi"));
    stream.write_all(&wire).await.unwrap();
    let head = common::read_head(&mut stream).await;
    assert!(head.starts_with(b"HTTP/1.1 101 "), "{}", String::from_utf8_lossy(&head));
    let mut ws = RawWs::from_parts(stream, Vec::new());
    assert_eq!(ws.data().await, b"01");
    assert_eq!(ws.data().await, b"R000100000002");
    assert_eq!(ws.data().await, b"hi");
    server.stop().await;
}
