//! Byte-exact tests for every message example in the gotalk document and PROTOCOL-NOTES.
//!
//! Each example is encoded and compared with the document's bytes, and the document's bytes are
//! decoded and compared with the frame. The sizes the document declares were checked against its
//! own payloads and all agree (25, 38, 20, 20, 19, 11, 14 and 46 bytes).

use bytes::{Bytes, BytesMut};
use gotalk_protocol::{
    decode_version, encode_version, Decoder, Frame, Id, Name, ProtocolErrorCode, VERSION,
};

const ID: Id = Id(*b"0001");

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

fn encode(frame: &Frame) -> Bytes {
    let mut out = BytesMut::new();
    frame.encode(&mut out);
    out.freeze()
}

fn encode_header(frame: &Frame) -> Bytes {
    let mut out = BytesMut::new();
    frame.encode_header(&mut out);
    out.freeze()
}

/// Encoding `frame` gives exactly `wire`, and decoding `wire` gives exactly `frame`, consuming
/// every byte and leaving the decoder at a message boundary.
fn check(frame: Frame, wire: &'static [u8]) {
    let wire = Bytes::from_static(wire);
    assert_eq!(encode(&frame), wire, "encoding {frame:?}");
    assert_eq!(frame.encoded_len(), wire.len(), "encoded_len of {frame:?}");
    let header = encode_header(&frame);
    assert_eq!(header.len(), frame.header_len(), "header_len of {frame:?}");
    assert_eq!(header, wire.slice(..frame.header_len()), "header of {frame:?}");

    let mut buf = BytesMut::from(&wire[..]);
    let mut decoder = Decoder::new();
    assert_eq!(decoder.decode(&mut buf), Ok(Some(frame)));
    assert!(buf.is_empty(), "left over: {buf:?}");
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    assert_eq!(decoder.finish(&buf), Ok(()));
}

/// Decodes all of `wire`, which must hold only whole frames.
fn decode_all(wire: &[u8]) -> Vec<Frame> {
    let mut buf = BytesMut::from(wire);
    let mut decoder = Decoder::new();
    let mut frames = Vec::new();
    while let Some(frame) = decoder.decode(&mut buf).unwrap() {
        frames.push(frame);
    }
    assert!(buf.is_empty(), "left over: {buf:?}");
    decoder.finish(&buf).unwrap();
    frames
}

#[test]
fn version_is_01() {
    assert_eq!(VERSION, 1);
    let mut out = BytesMut::new();
    encode_version(&mut out);
    assert_eq!(&out[..], b"01");
    assert_eq!(decode_version(&mut out), Ok(Some(VERSION)));
    assert!(out.is_empty());
}

#[test]
fn single_request() {
    check(
        Frame::SingleRequest {
            id: ID,
            op: name("echo"),
            payload: Bytes::from_static(br#"{"message":"Hello World"}"#),
        },
        br#"r0001004echo00000019{"message":"Hello World"}"#,
    );
}

#[test]
fn single_result() {
    check(
        Frame::SingleResult {
            id: ID,
            payload: Bytes::from_static(br#"{"message":"Hello World"}"#),
        },
        br#"R000100000019{"message":"Hello World"}"#,
    );
}

#[test]
fn error_result() {
    check(
        Frame::ErrorResult {
            id: ID,
            payload: Bytes::from_static(br#"{"error":"Unknown operation \"echo\""}"#),
        },
        br#"E000100000026{"error":"Unknown operation \"echo\""}"#,
    );
}

#[test]
fn error_result_plain_text_as_go_sends_it() {
    check(
        Frame::ErrorResult { id: ID, payload: Bytes::from_static(br#"unknown operation "x""#) },
        br#"E000100000015unknown operation "x""#,
    );
}

#[test]
fn retry_result_without_wait() {
    check(
        Frame::RetryResult {
            id: ID,
            wait: 0,
            payload: Bytes::from_static(br#""service restarting""#),
        },
        br#"e00010000000000000014"service restarting""#,
    );
}

#[test]
fn retry_result_request_rate_limit() {
    check(
        Frame::RetryResult {
            id: ID,
            wait: 5000,
            payload: Bytes::from_static(br#""request rate limit""#),
        },
        br#"e00010000138800000014"request rate limit""#,
    );
}

#[test]
fn retry_result_stream_rate_limit() {
    check(
        Frame::RetryResult {
            id: ID,
            wait: 5000,
            payload: Bytes::from_static(br#""stream rate limit""#),
        },
        br#"e00010000138800000013"stream rate limit""#,
    );
}

#[test]
fn retry_result_as_go_sends_it() {
    // PROTOCOL-NOTES: Go replies with plain text and a wait in [500, 5000) ms.
    check(
        Frame::RetryResult {
            id: ID,
            wait: 500,
            payload: Bytes::from_static(b"request rate limit"),
        },
        b"e0001000001f400000012request rate limit",
    );
}

#[test]
fn protocol_error_unsupported_version() {
    check(Frame::ProtocolError { code: 1 }, b"f00000001");
    check(Frame::protocol_error(ProtocolErrorCode::Unsupported), b"f00000001");
}

#[test]
fn protocol_error_codes() {
    check(Frame::protocol_error(ProtocolErrorCode::Abnormal), b"f00000000");
    check(Frame::protocol_error(ProtocolErrorCode::InvalidMessage), b"f00000002");
    check(Frame::protocol_error(ProtocolErrorCode::Timeout), b"f00000003");
    check(Frame::protocol_error(ProtocolErrorCode::Other(0xdeadbeef)), b"fdeadbeef");
    for code in [0, 1, 2, 3, 4, u32::MAX] {
        assert_eq!(ProtocolErrorCode::from_u32(code).as_u32(), code);
    }
    assert_eq!(ProtocolErrorCode::from_u32(2), ProtocolErrorCode::InvalidMessage);
    assert_eq!(ProtocolErrorCode::from_u32(9), ProtocolErrorCode::Other(9));
}

#[test]
fn stream_request() {
    check(
        Frame::StreamRequest {
            id: ID,
            op: name("echo"),
            payload: Bytes::from_static(br#"{"message":"#),
        },
        br#"s0001004echo0000000b{"message":"#,
    );
    check(
        Frame::StreamRequestPart { id: ID, payload: Bytes::from_static(br#""Hello World"}"#) },
        br#"p00010000000e"Hello World"}"#,
    );
    check(Frame::StreamRequestPart { id: ID, payload: Bytes::new() }, b"p000100000000");
}

#[test]
fn stream_result() {
    check(
        Frame::StreamResult { id: ID, payload: Bytes::from_static(br#"{"message":"#) },
        br#"S00010000000b{"message":"#,
    );
    check(
        Frame::StreamResult { id: ID, payload: Bytes::from_static(br#""Hello World"}"#) },
        br#"S00010000000e"Hello World"}"#,
    );
    check(Frame::StreamResult { id: ID, payload: Bytes::new() }, b"S000100000000");
}

#[test]
fn notification() {
    check(
        Frame::Notification {
            name: name("chat message"),
            payload: Bytes::from_static(br#"{"message":"Hi","from":"nthn","room":"gonuts"}"#),
        },
        br#"n00cchat message0000002e{"message":"Hi","from":"nthn","room":"gonuts"}"#,
    );
}

#[test]
fn heartbeat() {
    // load 2, time 2015-02-08 22:09:30 UTC.
    assert_eq!(0x54d7de9a, 1_423_433_370);
    check(Frame::Heartbeat { load: 2, time: 0x54d7de9a }, b"h000254d7de9a");
    check(Frame::Heartbeat { load: 0xffff, time: u32::MAX }, b"hffffffffffff");
    check(Frame::Heartbeat { load: 0, time: 0 }, b"h000000000000");
}

#[test]
fn whole_document_conversation() {
    let mut wire = BytesMut::new();
    wire.extend_from_slice(b"01");
    wire.extend_from_slice(br#"r0001004echo00000019{"message":"Hello World"}"#);
    wire.extend_from_slice(br#"R000100000019{"message":"Hello World"}"#);
    wire.extend_from_slice(br#"E000100000026{"error":"Unknown operation \"echo\""}"#);
    wire.extend_from_slice(br#"e00010000000000000014"service restarting""#);
    wire.extend_from_slice(br#"e00010000138800000014"request rate limit""#);
    wire.extend_from_slice(br#"s0001004echo0000000b{"message":"#);
    wire.extend_from_slice(br#"p00010000000e"Hello World"}"#);
    wire.extend_from_slice(b"p000100000000");
    wire.extend_from_slice(br#"S00010000000b{"message":"#);
    wire.extend_from_slice(br#"S00010000000e"Hello World"}"#);
    wire.extend_from_slice(b"S000100000000");
    wire.extend_from_slice(br#"e00010000138800000013"stream rate limit""#);
    wire.extend_from_slice(
        br#"n00cchat message0000002e{"message":"Hi","from":"nthn","room":"gonuts"}"#,
    );
    wire.extend_from_slice(b"h000254d7de9a");
    wire.extend_from_slice(b"f00000001");

    assert_eq!(decode_version(&mut wire), Ok(Some(1)));
    let frames = decode_all(&wire);
    let types: String = frames.iter().map(|f| char::from(f.msg_type().byte())).collect();
    assert_eq!(types, "rREeesppSSSenhf");
    assert!(frames.iter().take(12).all(|f| f.id() == Some(ID)));
    assert!(frames.iter().skip(12).all(|f| f.id().is_none()));
    assert_eq!(frames[12].payload().len(), 46);
    assert_eq!(frames[14], Frame::ProtocolError { code: 1 });

    // Re-encoding the decoded frames gives the document's bytes back.
    let mut out = BytesMut::new();
    for frame in &frames {
        frame.encode(&mut out);
    }
    assert_eq!(out, wire);
}

#[test]
fn header_lengths_match_protocol_notes() {
    let id = Id::from_u32(7);
    let op = name("echo");
    let payload = Bytes::from_static(b"payload");
    let cases = [
        (Frame::SingleRequest { id, op: op.clone(), payload: payload.clone() }, 16 + 4),
        (Frame::StreamRequest { id, op: op.clone(), payload: payload.clone() }, 16 + 4),
        (Frame::SingleRequest { id, op: Name::default(), payload: payload.clone() }, 16),
        (Frame::Notification { name: name("chat message"), payload: payload.clone() }, 12 + 12),
        (Frame::Notification { name: Name::default(), payload: payload.clone() }, 12),
        (Frame::StreamRequestPart { id, payload: payload.clone() }, 13),
        (Frame::SingleResult { id, payload: payload.clone() }, 13),
        (Frame::StreamResult { id, payload: payload.clone() }, 13),
        (Frame::ErrorResult { id, payload: payload.clone() }, 13),
        (Frame::RetryResult { id, wait: 1, payload: payload.clone() }, 21),
        (Frame::Heartbeat { load: 1, time: 2 }, 13),
        (Frame::ProtocolError { code: 3 }, 9),
    ];
    for (frame, header_len) in cases {
        assert_eq!(frame.header_len(), header_len, "{frame:?}");
        assert_eq!(encode_header(&frame).len(), header_len, "{frame:?}");
        assert_eq!(frame.encoded_len(), header_len + frame.payload().len(), "{frame:?}");
        assert_eq!(encode(&frame).len(), frame.encoded_len(), "{frame:?}");
    }
    // Heartbeats and protocol errors have no payload at all.
    assert!(Frame::Heartbeat { load: 1, time: 2 }.payload().is_empty());
    assert!(Frame::ProtocolError { code: 3 }.payload().is_empty());
}

#[test]
fn name_length_uses_utf8_bytes() {
    // "ö" is two bytes, "😀" four: gotalk.js gets this wrong, we must not.
    check(
        Frame::Notification {
            name: name("ö😀"), payload: Bytes::from_static("😀".as_bytes())
        },
        "n006ö😀00000004😀".as_bytes(),
    );
}

#[test]
fn longest_name() {
    let op = "a".repeat(0xfff);
    let frame = Frame::SingleRequest { id: ID, op: name(&op), payload: Bytes::new() };
    let mut wire = b"r0001fff".to_vec();
    wire.extend_from_slice(op.as_bytes());
    wire.extend_from_slice(b"00000000");
    assert_eq!(encode(&frame), wire);
    assert_eq!(frame.header_len(), 16 + 0xfff);
    assert_eq!(decode_all(&wire), [frame]);
    assert!(Name::new("a".repeat(0x1000)).is_err());
}

mod uppercase_hex {
    //! Peers write lowercase; readers accept uppercase in every number field.

    use super::*;

    /// `upper` decodes to `frame`, and `frame` encodes back to the lowercase `lower`.
    fn accepts(upper: &[u8], lower: &'static [u8], frame: Frame) {
        assert_eq!(
            decode_all(upper),
            std::slice::from_ref(&frame),
            "decoding {:?}",
            Bytes::copy_from_slice(upper)
        );
        check(frame, lower);
    }

    #[test]
    fn payload_sizes() {
        let payload = Bytes::from_static(&[b'x'; 0x2e]);
        let mut upper = b"R00010000002E".to_vec();
        upper.extend_from_slice(&payload);
        let frame = Frame::SingleResult { id: ID, payload };
        assert_eq!(decode_all(&upper), std::slice::from_ref(&frame));
        let mut lower = b"R00010000002e".to_vec();
        lower.extend_from_slice(frame.payload());
        assert_eq!(encode(&frame), lower);
    }

    #[test]
    fn name_length_and_size() {
        accepts(
            br#"n00Cchat message0000002E{"message":"Hi","from":"nthn","room":"gonuts"}"#,
            br#"n00cchat message0000002e{"message":"Hi","from":"nthn","room":"gonuts"}"#,
            Frame::Notification {
                name: name("chat message"),
                payload: Bytes::from_static(br#"{"message":"Hi","from":"nthn","room":"gonuts"}"#),
            },
        );
        accepts(
            br#"s0001004echo0000000B{"message":"#,
            br#"s0001004echo0000000b{"message":"#,
            Frame::StreamRequest {
                id: ID,
                op: name("echo"),
                payload: Bytes::from_static(br#"{"message":"#),
            },
        );
        accepts(
            br#"p00010000000E"Hello World"}"#,
            br#"p00010000000e"Hello World"}"#,
            Frame::StreamRequestPart { id: ID, payload: Bytes::from_static(br#""Hello World"}"#) },
        );
    }

    #[test]
    fn wait() {
        accepts(
            b"e0001ABCDEF0100000000",
            b"e0001abcdef0100000000",
            Frame::RetryResult { id: ID, wait: 0xabcdef01, payload: Bytes::new() },
        );
        accepts(
            b"e0001aBcDeF0100000000",
            b"e0001abcdef0100000000",
            Frame::RetryResult { id: ID, wait: 0xabcdef01, payload: Bytes::new() },
        );
    }

    #[test]
    fn load_and_time() {
        accepts(
            b"h00FF54D7DE9A",
            b"h00ff54d7de9a",
            Frame::Heartbeat { load: 0xff, time: 0x54d7de9a },
        );
        accepts(
            b"hFFFFFFFFFFFF",
            b"hffffffffffff",
            Frame::Heartbeat { load: 0xffff, time: u32::MAX },
        );
    }

    #[test]
    fn code() {
        accepts(b"f0000000A", b"f0000000a", Frame::ProtocolError { code: 10 });
        accepts(b"fDEADBEEF", b"fdeadbeef", Frame::ProtocolError { code: 0xdeadbeef });
    }

    #[test]
    fn version() {
        assert_eq!(decode_version(&mut BytesMut::from(&b"0A"[..])), Ok(Some(10)));
        assert_eq!(decode_version(&mut BytesMut::from(&b"FF"[..])), Ok(Some(0xff)));
    }
}

mod ids {
    //! Request ids are four opaque bytes, never interpreted.

    use super::*;

    #[test]
    fn go_style_ids_are_little_endian() {
        assert_eq!(Id::from_u32(0), Id([0, 0, 0, 0]));
        assert_eq!(Id::from_u32(1), Id([1, 0, 0, 0]));
        assert_eq!(Id::from_u32(0x0403_0201), Id([1, 2, 3, 4]));
        assert_eq!(Id::from_u32(u32::MAX), Id([0xff; 4]));
    }

    #[test]
    fn go_client_first_request() {
        check(
            Frame::SingleRequest {
                id: Id::from_u32(0),
                op: name("echo"),
                payload: Bytes::from_static(b"{}"),
            },
            b"r\x00\x00\x00\x00004echo00000002{}",
        );
    }

    #[test]
    fn non_printable_ids_round_trip() {
        for id in [[0, 0, 0, 0], [0xff, 0x0a, 0x00, 0x7f], [0xff; 4], *b"\r\n\t ", *b"r000"] {
            let id = Id(id);
            let mut wire = b"R".to_vec();
            wire.extend_from_slice(&id.0);
            wire.extend_from_slice(b"00000002ok");
            let frame = Frame::SingleResult { id, payload: Bytes::from_static(b"ok") };
            assert_eq!(encode(&frame), wire);
            assert_eq!(decode_all(&wire), [frame]);

            let mut wire = b"e".to_vec();
            wire.extend_from_slice(&id.0);
            wire.extend_from_slice(b"0000138800000000");
            let frame = Frame::RetryResult { id, wait: 5000, payload: Bytes::new() };
            assert_eq!(encode(&frame), wire);
            assert_eq!(decode_all(&wire), [frame]);
        }
    }

    #[test]
    fn ids_that_look_like_hex_or_types_are_not_interpreted() {
        // An id of "ffff" or "r000" must not be read as a size or a new message.
        let wire = b"sffff004echo00000000pr00000000000Sr00000000000";
        let frames = decode_all(wire);
        assert_eq!(
            frames,
            [
                Frame::StreamRequest { id: Id(*b"ffff"), op: name("echo"), payload: Bytes::new() },
                Frame::StreamRequestPart { id: Id(*b"r000"), payload: Bytes::new() },
                Frame::StreamResult { id: Id(*b"r000"), payload: Bytes::new() },
            ]
        );
    }

    #[test]
    fn gotalk_js_style_ids() {
        check(
            Frame::StreamRequest { id: Id(*b"!000"), op: name("x"), payload: Bytes::new() },
            b"s!000001x00000000",
        );
    }

    #[test]
    fn display_shows_printable_ids_as_text_and_others_as_hex() {
        assert_eq!(Id(*b"0001").to_string(), "0001");
        assert_eq!(Id([0xff, 0x0a, 0x00, 0x7f]).to_string(), "0xff0a007f");
        assert_eq!(Id::from_u32(0).to_string(), "0x00000000");
    }
}
