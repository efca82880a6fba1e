//! Writing frames and the version handshake. Nothing here can fail.

use bytes::BufMut;

use crate::frame::{Frame, Name, VERSION};
use crate::hex::write_hex;

/// Writes this side's protocol version, `01`.
pub fn encode_version(dst: &mut impl BufMut) {
    let mut digits = [0u8; 2];
    write_hex(&mut digits, u32::from(VERSION));
    dst.put_slice(&digits);
}

fn put_hex(dst: &mut impl BufMut, value: u32, width: usize) {
    let mut digits = [0u8; 8];
    write_hex(&mut digits[..width], value);
    dst.put_slice(&digits[..width]);
}

fn put_name(dst: &mut impl BufMut, name: &Name) {
    // Name::new caps the length at 0xfff, so three digits always hold it.
    put_hex(dst, name.len() as u32, 3);
    dst.put_slice(name.as_str().as_bytes());
}

fn put_size(dst: &mut impl BufMut, payload_len: usize) {
    debug_assert!(u32::try_from(payload_len).is_ok(), "payload over u32::MAX bytes");
    put_hex(dst, payload_len as u32, 8);
}

impl Frame {
    /// The length of this frame's header: everything but the payload.
    pub fn header_len(&self) -> usize {
        match self {
            Frame::SingleRequest { op, .. } | Frame::StreamRequest { op, .. } => 16 + op.len(),
            Frame::Notification { name, .. } => 12 + name.len(),
            Frame::StreamRequestPart { .. }
            | Frame::SingleResult { .. }
            | Frame::StreamResult { .. }
            | Frame::ErrorResult { .. }
            | Frame::Heartbeat { .. } => 13,
            Frame::RetryResult { .. } => 21,
            Frame::ProtocolError { .. } => 9,
        }
    }

    /// The length of the whole encoded frame.
    pub fn encoded_len(&self) -> usize {
        self.header_len() + self.payload().len()
    }

    /// Writes the header only. The WebSocket transport sends header and payload as separate
    /// messages, because the original gotalk.js reads one header per message.
    pub fn encode_header(&self, dst: &mut impl BufMut) {
        dst.put_u8(self.msg_type().byte());
        match self {
            Frame::SingleRequest { id, op, payload } | Frame::StreamRequest { id, op, payload } => {
                dst.put_slice(&id.0);
                put_name(dst, op);
                put_size(dst, payload.len());
            }
            Frame::StreamRequestPart { id, payload }
            | Frame::SingleResult { id, payload }
            | Frame::StreamResult { id, payload }
            | Frame::ErrorResult { id, payload } => {
                dst.put_slice(&id.0);
                put_size(dst, payload.len());
            }
            Frame::RetryResult { id, wait, payload } => {
                dst.put_slice(&id.0);
                put_hex(dst, *wait, 8);
                put_size(dst, payload.len());
            }
            Frame::Notification { name, payload } => {
                put_name(dst, name);
                put_size(dst, payload.len());
            }
            Frame::Heartbeat { load, time } => {
                put_hex(dst, u32::from(*load), 4);
                put_hex(dst, *time, 8);
            }
            Frame::ProtocolError { code } => put_hex(dst, *code, 8),
        }
    }

    /// Writes the whole frame: header, then payload.
    pub fn encode(&self, dst: &mut impl BufMut) {
        self.encode_header(dst);
        dst.put_slice(self.payload());
    }
}
