//! Incremental decoding: bytes arriving in any pieces give the same frames as one buffer.

use bytes::{Bytes, BytesMut};
use gotalk_protocol::{DecodeError, Decoder, Frame, Id, Name};

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

/// One of every frame type, with empty and non-empty payloads and names.
fn sample_frames() -> Vec<Frame> {
    let id = Id(*b"0001");
    vec![
        Frame::SingleRequest {
            id,
            op: name("echo"),
            payload: Bytes::from_static(br#"{"message":"Hello World"}"#),
        },
        Frame::SingleResult { id, payload: Bytes::from_static(br#"{"message":"Hello World"}"#) },
        Frame::ErrorResult { id, payload: Bytes::from_static(b"unknown operation \"x\"") },
        Frame::RetryResult { id, wait: 5000, payload: Bytes::from_static(b"request rate limit") },
        Frame::StreamRequest {
            id: Id::from_u32(0),
            op: name("echo"),
            payload: Bytes::from_static(br#"{"message":"#),
        },
        Frame::StreamRequestPart {
            id: Id::from_u32(0),
            payload: Bytes::from_static(br#""Hello World"}"#),
        },
        Frame::StreamRequestPart { id: Id::from_u32(0), payload: Bytes::new() },
        Frame::StreamResult { id, payload: Bytes::from_static(br#"{"message":"#) },
        Frame::StreamResult { id, payload: Bytes::new() },
        Frame::Notification { name: Name::default(), payload: Bytes::new() },
        Frame::Notification {
            name: name("chat message"),
            payload: Bytes::from_static(br#"{"message":"Hi","from":"nthn","room":"gonuts"}"#),
        },
        Frame::SingleRequest {
            id: Id([0xff, 0x0a, 0x00, 0x7f]),
            op: Name::default(),
            payload: Bytes::new(),
        },
        Frame::Heartbeat { load: 2, time: 0x54d7de9a },
        Frame::ProtocolError { code: 1 },
    ]
}

fn encode_all(frames: &[Frame]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for frame in frames {
        frame.encode(&mut out);
    }
    out.to_vec()
}

/// Takes every whole frame off `buf`.
fn drain(decoder: &mut Decoder, buf: &mut BytesMut, out: &mut Vec<Frame>) {
    while let Some(frame) = decoder.decode(buf).unwrap() {
        out.push(frame);
    }
}

#[test]
fn one_byte_at_a_time() {
    let frames = sample_frames();
    let wire = encode_all(&frames);

    // The offsets at which each frame becomes whole.
    let mut ends = Vec::new();
    let mut end = 0;
    for frame in &frames {
        end += frame.encoded_len();
        ends.push(end);
    }
    assert_eq!(end, wire.len());

    let mut decoder = Decoder::new();
    let mut buf = BytesMut::new();
    let mut decoded = Vec::new();
    for (i, &byte) in wire.iter().enumerate() {
        buf.extend_from_slice(&[byte]);
        let fed = i + 1;
        let result = decoder.decode(&mut buf).unwrap();
        if ends.contains(&fed) {
            let frame = result.unwrap_or_else(|| panic!("no frame after {fed} bytes"));
            assert_eq!(frame, frames[decoded.len()]);
            decoded.push(frame);
            assert!(buf.is_empty());
            assert_eq!(decoder.finish(&buf), Ok(()), "at a boundary after {fed} bytes");
        } else {
            assert_eq!(result, None, "after {fed} bytes");
            assert_eq!(decoder.finish(&buf), Err(DecodeError::Truncated), "after {fed} bytes");
        }
        // Nothing more comes out until the next byte arrives.
        assert_eq!(decoder.decode(&mut buf), Ok(None));
    }
    assert_eq!(decoded, frames);
}

#[test]
fn every_split_point_of_two_frames() {
    let frames = vec![
        Frame::SingleRequest {
            id: Id(*b"0001"),
            op: name("echo"),
            payload: Bytes::from_static(br#"{"message":"Hello World"}"#),
        },
        Frame::Notification {
            name: name("chat message"),
            payload: Bytes::from_static(br#"{"message":"Hi","from":"nthn","room":"gonuts"}"#),
        },
    ];
    let wire = encode_all(&frames);
    for split in 0..=wire.len() {
        let mut decoder = Decoder::new();
        let mut buf = BytesMut::from(&wire[..split]);
        let mut decoded = Vec::new();
        drain(&mut decoder, &mut buf, &mut decoded);
        let whole = if split == wire.len() {
            2
        } else if split >= frames[0].encoded_len() {
            1
        } else {
            0
        };
        assert_eq!(decoded.len(), whole, "split at {split}");
        buf.extend_from_slice(&wire[split..]);
        drain(&mut decoder, &mut buf, &mut decoded);
        assert_eq!(decoded, frames, "split at {split}");
        assert!(buf.is_empty());
        assert_eq!(decoder.finish(&buf), Ok(()));
    }
}

#[test]
fn every_pair_of_split_points_of_three_frames() {
    let frames = vec![
        Frame::Heartbeat { load: 2, time: 0x54d7de9a },
        Frame::RetryResult { id: Id(*b"0001"), wait: 5000, payload: Bytes::from_static(b"x") },
        Frame::Notification { name: Name::default(), payload: Bytes::new() },
    ];
    let wire = encode_all(&frames);
    for a in 0..=wire.len() {
        for b in a..=wire.len() {
            let mut decoder = Decoder::new();
            let mut buf = BytesMut::new();
            let mut decoded = Vec::new();
            for piece in [&wire[..a], &wire[a..b], &wire[b..]] {
                buf.extend_from_slice(piece);
                drain(&mut decoder, &mut buf, &mut decoded);
            }
            assert_eq!(decoded, frames, "split at {a} and {b}");
            assert_eq!(decoder.finish(&buf), Ok(()));
        }
    }
}

#[test]
fn header_is_consumed_once() {
    let payload = Bytes::from_static(b"0123456789");
    let frame = Frame::SingleResult { id: Id(*b"0001"), payload: payload.clone() };
    let mut wire = BytesMut::new();
    frame.encode(&mut wire);
    let header_len = frame.header_len();

    let mut decoder = Decoder::new();
    let mut buf = BytesMut::new();
    // While the header is incomplete, nothing is consumed and no payload is pending.
    for i in 0..header_len - 1 {
        buf.extend_from_slice(&wire[i..=i]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert_eq!(buf.len(), i + 1);
        assert_eq!(decoder.payload_remaining(buf.len()), None);
        assert!(decoder.is_mid_message(&buf));
    }
    // The last header byte: the header is taken off the buffer at once.
    buf.extend_from_slice(&wire[header_len - 1..header_len]);
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    assert!(buf.is_empty(), "header bytes should be consumed");
    assert_eq!(decoder.payload_remaining(0), Some(payload.len()));
    assert!(decoder.is_mid_message(&buf));
    assert_eq!(decoder.finish(&buf), Err(DecodeError::Truncated));

    // Payload bytes are left in the buffer until the payload is whole.
    for i in 0..payload.len() - 1 {
        buf.extend_from_slice(&payload[i..=i]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert_eq!(buf.len(), i + 1);
        assert_eq!(decoder.payload_remaining(buf.len()), Some(payload.len() - i - 1));
        assert_eq!(decoder.finish(&buf), Err(DecodeError::Truncated));
    }
    buf.extend_from_slice(&payload[payload.len() - 1..]);
    assert_eq!(decoder.decode(&mut buf), Ok(Some(frame)));
    assert!(buf.is_empty());
    assert_eq!(decoder.payload_remaining(0), None);
    assert!(!decoder.is_mid_message(&buf));
    assert_eq!(decoder.finish(&buf), Ok(()));
}

#[test]
fn payload_remaining_when_more_than_the_payload_is_buffered() {
    let mut decoder = Decoder::new();
    let mut buf = BytesMut::from(&b"R000100000004ab"[..]);
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    assert_eq!(decoder.payload_remaining(buf.len()), Some(2));
    assert_eq!(decoder.payload_remaining(10), Some(0));
    buf.extend_from_slice(b"cdh000254d7de9a");
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Some(Frame::SingleResult { id: Id(*b"0001"), payload: Bytes::from_static(b"abcd") }))
    );
    assert_eq!(&buf[..], b"h000254d7de9a");
    assert_eq!(decoder.decode(&mut buf), Ok(Some(Frame::Heartbeat { load: 2, time: 0x54d7de9a })));
    assert!(buf.is_empty());
}

#[test]
fn finish_at_and_between_boundaries() {
    let decoder = Decoder::new();
    assert_eq!(decoder.finish(b""), Ok(()));
    assert_eq!(decoder.finish(b"r"), Err(DecodeError::Truncated));

    let wire = b"f00000003";
    for cut in 1..wire.len() {
        let mut decoder = Decoder::new();
        let mut buf = BytesMut::from(&wire[..cut]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert_eq!(decoder.finish(&buf), Err(DecodeError::Truncated), "cut at {cut}");
    }
    let mut decoder = Decoder::new();
    let mut buf = BytesMut::from(&wire[..]);
    assert_eq!(decoder.decode(&mut buf), Ok(Some(Frame::ProtocolError { code: 3 })));
    assert_eq!(decoder.finish(&buf), Ok(()));
}

#[test]
fn decoded_payloads_share_the_buffer_without_copying_the_rest() {
    // Decoding two frames from one buffer leaves the second intact after the first.
    let frames = sample_frames();
    let wire = encode_all(&frames);
    let mut buf = BytesMut::from(&wire[..]);
    let mut decoder = Decoder::new();
    let first = decoder.decode(&mut buf).unwrap().unwrap();
    assert_eq!(first, frames[0]);
    assert_eq!(&buf[..], &wire[frames[0].encoded_len()..]);
}
