//! Bad bytes are errors, not "need more bytes", and every limit is enforced from the header.

use bytes::{Bytes, BytesMut};
use gotalk_protocol::{
    decode_version, DecodeError, Decoder, Frame, Id, Name, DEFAULT_MAX_PAYLOAD, MAX_NAME_LEN,
};

fn decode_one(decoder: &mut Decoder, wire: &[u8]) -> Result<Option<Frame>, DecodeError> {
    decoder.decode(&mut BytesMut::from(wire))
}

fn decode(wire: &[u8]) -> Result<Option<Frame>, DecodeError> {
    decode_one(&mut Decoder::new(), wire)
}

fn name_limit(bytes: usize) -> Decoder {
    let mut decoder = Decoder::new();
    decoder.max_name_len(bytes);
    decoder
}

fn payload_limit(bytes: u32) -> Decoder {
    let mut decoder = Decoder::new();
    decoder.max_payload(bytes);
    decoder
}

/// `wire` is an error, and so is every longer input that starts with it.
fn rejects(wire: &[u8], error: DecodeError) {
    assert_eq!(decode(wire), Err(error.clone()), "decoding {:?}", Bytes::copy_from_slice(wire));
    let mut longer = wire.to_vec();
    longer.extend_from_slice(b"0000000000000000000000000000");
    assert_eq!(decode(&longer), Err(error), "decoding {:?}", Bytes::copy_from_slice(&longer));
}

#[test]
fn invalid_type_byte() {
    for byte in [b'x', b'\0', b'0', b'1', b'{', b' ', b'\n', b'P', b'H', b'F', b'N', 0xff] {
        rejects(&[byte], DecodeError::InvalidType(byte));
    }
    // Every byte that is not one of the ten types is rejected.
    for byte in 0..=u8::MAX {
        let valid = b"rspRSEenhf".contains(&byte);
        assert_eq!(decode(&[byte]).is_err(), !valid, "type byte 0x{byte:02x}");
    }
}

#[test]
fn invalid_type_after_a_valid_frame() {
    let mut decoder = Decoder::new();
    let mut buf = BytesMut::from(&b"f00000001x"[..]);
    assert_eq!(decoder.decode(&mut buf), Ok(Some(Frame::ProtocolError { code: 1 })));
    assert_eq!(decoder.decode(&mut buf), Err(DecodeError::InvalidType(b'x')));
}

#[test]
fn bad_hex_in_name_length_errors_before_the_field_is_whole() {
    let name_len = DecodeError::InvalidNumber("name length");
    rejects(b"r0001zz", name_len.clone());
    rejects(b"r0001z", name_len.clone());
    rejects(b"r00010z", name_len.clone());
    rejects(b"r000100g", name_len.clone());
    rejects(b"s0001-", name_len.clone());
    rejects(b"s0001 04", name_len.clone());
    rejects(b"nz", name_len.clone());
    rejects(b"n+0c", name_len.clone());
    rejects(b"n00x", name_len);
}

#[test]
fn bad_hex_in_payload_size() {
    let size = DecodeError::InvalidNumber("payload size");
    rejects(b"r0001004echoz", size.clone());
    rejects(b"r0001004echo0000001g", size.clone());
    rejects(b"s0001004echo 0", size.clone());
    rejects(b"n00cchat message00x", size.clone());
    rejects(b"n000-", size.clone());
    for t in [b'p', b'R', b'S', b'E'] {
        let mut wire = vec![t];
        wire.extend_from_slice(b"0001");
        rejects(&[&wire[..], b"x"].concat(), size.clone());
        rejects(&[&wire[..], b"0000000G"].concat(), size.clone());
        rejects(&[&wire[..], b"0x19"].concat(), size.clone());
    }
    rejects(b"e000100001388z", size.clone());
    rejects(b"e0001000013880000001-", size);
}

#[test]
fn bad_hex_in_wait() {
    let wait = DecodeError::InvalidNumber("wait");
    rejects(b"e0001z", wait.clone());
    rejects(b"e0001zz", wait.clone());
    rejects(b"e00010000138g", wait.clone());
    rejects(b"e0001-0001388", wait);
}

#[test]
fn bad_hex_in_heartbeat() {
    let load = DecodeError::InvalidNumber("load");
    rejects(b"hz", load.clone());
    rejects(b"h0g", load.clone());
    rejects(b"h000254d7de9a".map(|b| if b == b'2' { b'x' } else { b }).as_slice(), load);
    let time = DecodeError::InvalidNumber("time");
    rejects(b"h0002x", time.clone());
    rejects(b"h000254d7de9z", time.clone());
    rejects(b"h0002 4d7de9a", time);
}

#[test]
fn bad_hex_in_code() {
    let code = DecodeError::InvalidNumber("code");
    rejects(b"fz", code.clone());
    rejects(b"f0000000z", code.clone());
    rejects(b"f-0000001", code);
}

#[test]
fn incomplete_but_valid_fields_need_more_bytes() {
    for wire in [
        &b"r"[..],
        b"r0",
        b"r0001",
        b"r00010",
        b"r0001004ec",
        b"r0001004echo0000",
        b"e000100",
        b"e00010000138800",
        b"nFF",
        b"h00",
        b"h000254D7",
        b"f0000000",
        b"R0001",
        b"R0001000000",
    ] {
        assert_eq!(decode(wire), Ok(None), "decoding {:?}", Bytes::copy_from_slice(wire));
    }
}

#[test]
fn non_utf8_name() {
    rejects(b"r0001002\xff\xfe00000000", DecodeError::InvalidName);
    rejects(b"n002\xc3\x2800000000", DecodeError::InvalidName);
    // A multi-byte character cut off by the name length is not UTF-8 either.
    rejects("n001ö00000000".as_bytes(), DecodeError::InvalidName);
    // Overlong encodings and surrogates are not UTF-8.
    rejects(b"s0001002\xc0\x8000000000", DecodeError::InvalidName);
    rejects(b"n003\xed\xa0\x8000000000", DecodeError::InvalidName);
}

#[test]
fn name_limit_edges() {
    let mut decoder = Decoder::new();
    decoder.max_name_len(4);
    assert_eq!(
        decode_one(&mut decoder, b"r0001004echo00000000"),
        Ok(Some(Frame::SingleRequest {
            id: Id(*b"0001"),
            op: Name::new("echo").unwrap(),
            payload: Bytes::new()
        }))
    );
    // One over fails from the length field alone, before any name byte has arrived.
    let too_long = DecodeError::NameTooLong { len: 5, max: 4 };
    for wire in [&b"r0001005"[..], b"r0001005echo", b"s0001005echos00000000"] {
        assert_eq!(decode_one(&mut name_limit(4), wire), Err(too_long.clone()));
    }
    assert_eq!(decode_one(&mut name_limit(4), b"n004ping00000000").map(|f| f.is_some()), Ok(true));
    assert_eq!(decode_one(&mut name_limit(4), b"n005"), Err(too_long));

    // A zero limit still allows the empty name.
    assert_eq!(decode_one(&mut name_limit(0), b"n00000000000").map(|f| f.is_some()), Ok(true));
    assert_eq!(
        decode_one(&mut name_limit(0), b"n001"),
        Err(DecodeError::NameTooLong { len: 1, max: 0 })
    );
}

#[test]
fn name_limit_is_capped_at_the_wire_maximum() {
    let op = "o".repeat(MAX_NAME_LEN);
    let mut wire = b"r0001fff".to_vec();
    wire.extend_from_slice(op.as_bytes());
    wire.extend_from_slice(b"00000000");
    for limit in [MAX_NAME_LEN, MAX_NAME_LEN + 1, usize::MAX] {
        let mut decoder = Decoder::new();
        decoder.max_name_len(limit);
        let frame = decode_one(&mut decoder, &wire).unwrap().unwrap();
        assert_eq!(
            frame,
            Frame::SingleRequest {
                id: Id(*b"0001"),
                op: Name::new(op.clone()).unwrap(),
                payload: Bytes::new()
            }
        );
    }
    let mut decoder = Decoder::new();
    decoder.max_name_len(MAX_NAME_LEN - 1);
    assert_eq!(
        decode_one(&mut decoder, b"r0001fff"),
        Err(DecodeError::NameTooLong { len: MAX_NAME_LEN, max: MAX_NAME_LEN - 1 })
    );
}

/// The headers of every payload-carrying type, for a payload of `size` bytes.
fn headers_with_size(size: &str) -> Vec<Vec<u8>> {
    [
        &b"r0001004echo"[..],
        b"s0001004echo",
        b"p0001",
        b"R0001",
        b"S0001",
        b"E0001",
        b"e000100001388",
        b"n00cchat message",
        b"n000",
    ]
    .iter()
    .map(|prefix| [*prefix, size.as_bytes()].concat())
    .collect()
}

#[test]
fn payload_limit_edges() {
    for header in headers_with_size("00000010") {
        let mut decoder = Decoder::new();
        decoder.max_payload(16);
        let mut buf = BytesMut::from(&header[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert_eq!(decoder.payload_remaining(buf.len()), Some(16));
        buf.extend_from_slice(&[b'x'; 16]);
        let frame = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame.payload().len(), 16);
    }
    for header in headers_with_size("00000011") {
        let mut decoder = Decoder::new();
        decoder.max_payload(16);
        assert_eq!(
            decode_one(&mut decoder, &header),
            Err(DecodeError::PayloadTooLarge { size: 17, max: 16 }),
            "{:?}",
            Bytes::copy_from_slice(&header)
        );
    }
}

#[test]
fn zero_payload_limit_allows_empty_payloads() {
    let mut decoder = Decoder::new();
    decoder.max_payload(0);
    assert_eq!(decode_one(&mut decoder, b"p000100000000").map(|f| f.is_some()), Ok(true));
    assert_eq!(
        decode_one(&mut payload_limit(0), b"p000100000001"),
        Err(DecodeError::PayloadTooLarge { size: 1, max: 0 })
    );
    // Heartbeats and protocol errors carry no payload and are unaffected.
    assert_eq!(decode_one(&mut payload_limit(0), b"h000254d7de9a").map(|f| f.is_some()), Ok(true));
    assert_eq!(decode_one(&mut payload_limit(0), b"fffffffff").map(|f| f.is_some()), Ok(true));
}

#[test]
fn default_payload_limit_edges() {
    assert_eq!(DEFAULT_MAX_PAYLOAD, 16 * 1024 * 1024);
    let at_limit = format!("{DEFAULT_MAX_PAYLOAD:08x}");
    let over_limit = format!("{:08X}", DEFAULT_MAX_PAYLOAD + 1);
    for header in headers_with_size(&at_limit) {
        let mut decoder = Decoder::new();
        let mut buf = BytesMut::from(&header[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert!(buf.is_empty());
        assert_eq!(decoder.payload_remaining(0), Some(DEFAULT_MAX_PAYLOAD as usize));
    }
    for header in headers_with_size(&over_limit) {
        assert_eq!(
            decode(&header),
            Err(DecodeError::PayloadTooLarge {
                size: DEFAULT_MAX_PAYLOAD + 1,
                max: DEFAULT_MAX_PAYLOAD
            })
        );
    }
}

#[test]
fn four_gib_payload_is_rejected_from_the_header_alone() {
    for size in ["ffffffff", "FFFFFFFF"] {
        for header in headers_with_size(size) {
            // No payload bytes at all: the header is enough to refuse.
            assert_eq!(
                decode(&header),
                Err(DecodeError::PayloadTooLarge { size: u32::MAX, max: DEFAULT_MAX_PAYLOAD }),
                "{:?}",
                Bytes::copy_from_slice(&header)
            );
        }
    }
}

#[test]
fn four_gib_payload_allowed_by_the_limit_allocates_nothing() {
    let mut decoder = Decoder::new();
    decoder.max_payload(u32::MAX);
    let mut buf = BytesMut::from(&b"R0001ffffffffabc"[..]);
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    assert_eq!(&buf[..], b"abc");
    assert_eq!(decoder.payload_remaining(buf.len()), Some(u32::MAX as usize - 3));
    assert!(buf.capacity() < 1024, "decoder reserved {} bytes", buf.capacity());
}

#[test]
fn empty_name_notification_then_another_frame() {
    // The Go reader desynchronizes here; we must not.
    let mut decoder = Decoder::new();
    let mut buf = BytesMut::from(&b"n00000000000h000254d7de9an00000000002hiR000100000000"[..]);
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Some(Frame::Notification { name: Name::default(), payload: Bytes::new() }))
    );
    assert_eq!(decoder.decode(&mut buf), Ok(Some(Frame::Heartbeat { load: 2, time: 0x54d7de9a })));
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Some(Frame::Notification { name: Name::default(), payload: Bytes::from_static(b"hi") }))
    );
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Some(Frame::SingleResult { id: Id(*b"0001"), payload: Bytes::new() }))
    );
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    assert!(buf.is_empty());
    assert_eq!(decoder.finish(&buf), Ok(()));

    let mut out = BytesMut::new();
    Frame::Notification { name: Name::default(), payload: Bytes::new() }.encode(&mut out);
    assert_eq!(&out[..], b"n00000000000");
}

#[test]
fn empty_name_request() {
    let mut decoder = Decoder::new();
    let mut buf = BytesMut::from(&b"r000100000000000r0001001x00000000"[..]);
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Some(Frame::SingleRequest {
            id: Id(*b"0001"),
            op: Name::default(),
            payload: Bytes::new()
        }))
    );
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Some(Frame::SingleRequest {
            id: Id(*b"0001"),
            op: Name::new("x").unwrap(),
            payload: Bytes::new()
        }))
    );
}

#[test]
fn bad_version_bytes() {
    for wire in [&b"x"[..], b"0x", b"\0\0", b" 1", b"-1", b"r0"] {
        assert_eq!(
            decode_version(&mut BytesMut::from(wire)),
            Err(DecodeError::InvalidVersion),
            "{:?}",
            Bytes::copy_from_slice(wire)
        );
    }
    assert_eq!(decode_version(&mut BytesMut::new()), Ok(None));
    assert_eq!(decode_version(&mut BytesMut::from(&b"0"[..])), Ok(None));
    // A version the caller does not speak is still a version; the sock answers f00000001.
    assert_eq!(decode_version(&mut BytesMut::from(&b"02"[..])), Ok(Some(2)));
}

#[test]
fn names_over_the_wire_maximum_cannot_be_made() {
    assert_eq!(Name::new("a".repeat(MAX_NAME_LEN)).map(|n| n.len()), Ok(MAX_NAME_LEN));
    let err = Name::new("a".repeat(MAX_NAME_LEN + 1)).unwrap_err();
    assert_eq!((err.len, err.max), (MAX_NAME_LEN + 1, MAX_NAME_LEN));
    // The limit counts bytes, not characters.
    assert!(Name::new("ö".repeat(MAX_NAME_LEN / 2 + 1)).is_err());
    assert!(Name::new("ö".repeat(MAX_NAME_LEN / 2)).is_ok());
}
