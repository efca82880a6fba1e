//! A raw WebSocket client that writes the HTTP upgrade and every frame by hand, so a test
//! controls exactly what the server sees (headers, masking, opcodes, UTF-8) and reads every
//! frame the server sends, control frames included.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub(crate) const CONTINUATION: u8 = 0x0;
pub(crate) const TEXT: u8 = 0x1;
pub(crate) const BINARY: u8 = 0x2;
pub(crate) const CLOSE: u8 = 0x8;
pub(crate) const PING: u8 = 0x9;
pub(crate) const PONG: u8 = 0xA;

/// A raw WebSocket client over any byte stream.
pub(crate) struct RawWs<S> {
    pub(crate) io: S,
    buf: Vec<u8>,
}

/// What the server answered to the upgrade request.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) status: u16,
    pub(crate) text: String,
}

/// One frame from the server, or how the stream ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Got {
    Frame { opcode: u8, payload: Vec<u8> },
    Eof,
    Error(String),
    Timeout,
}

impl Got {
    /// The close code, if this is a close frame.
    pub(crate) fn close_code(&self) -> Option<u16> {
        match self {
            Got::Frame { opcode: CLOSE, payload } if payload.len() >= 2 => {
                Some(u16::from_be_bytes([payload[0], payload[1]]))
            }
            _ => None,
        }
    }
}

/// The upgrade request for `path` with `host` and extra header lines.
pub(crate) fn upgrade_request(path: &str, host: &str, headers: &[(&str, &str)]) -> String {
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request
}

/// One frame on the wire, masked (as a client must) unless `masked` is false.
pub(crate) fn encode(opcode: u8, fin: bool, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | opcode);
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n < 65536 => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x12, 0x34, 0x56, 0x78];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawWs<S> {
    /// Sends the upgrade request and reads the response head (and body, if not 101).
    pub(crate) async fn upgrade(
        mut io: S,
        path: &str,
        host: &str,
        headers: &[(&str, &str)],
    ) -> Result<RawWs<S>, Head> {
        io.write_all(upgrade_request(path, host, headers).as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), io.read(&mut chunk))
                .await
                .expect("response head in time")
                .unwrap_or(0);
            if n == 0 {
                return Err(Head { status: 0, text: String::from_utf8_lossy(&buf).into() });
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let text = String::from_utf8_lossy(&buf[..end]).into_owned();
        let status: u16 = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        if status != 101 {
            let mut rest = buf[end..].to_vec();
            let _ =
                tokio::time::timeout(Duration::from_millis(300), io.read_to_end(&mut rest)).await;
            return Err(Head { status, text: text + &String::from_utf8_lossy(&rest) });
        }
        let rest = buf[end..].to_vec();
        Ok(RawWs { io, buf: rest })
    }

    /// The stream and what was read from it but not yet taken, to split it.
    pub(crate) fn into_parts(self) -> (S, Vec<u8>) {
        (self.io, self.buf)
    }

    /// A client over `io`, past the upgrade, with `buf` already read from it.
    pub(crate) fn from_parts(io: S, buf: Vec<u8>) -> RawWs<S> {
        RawWs { io, buf }
    }

    /// Sends one frame, masked (as a client must) unless `masked` is false.
    pub(crate) async fn frame_with(&mut self, opcode: u8, fin: bool, payload: &[u8], masked: bool) {
        self.io.write_all(&encode(opcode, fin, payload, masked)).await.unwrap();
    }

    /// Sends `count` copies of a frame in one write.
    pub(crate) async fn frames(&mut self, opcode: u8, payload: &[u8], count: usize) {
        let mut one = vec![0x80 | opcode, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        one.extend_from_slice(payload);
        self.io.write_all(&one.repeat(count)).await.unwrap();
    }

    /// Writes `bytes` one at a time, `every` apart, keeping what the server sends meanwhile
    /// for [`next`](Self::next); stops early once the server has closed the connection.
    /// Returns how many bytes were written.
    pub(crate) async fn trickle(&mut self, bytes: &[u8], every: Duration) -> usize {
        for (i, byte) in bytes.iter().enumerate() {
            if !self.deliver(&[*byte]).await {
                return i;
            }
            tokio::time::sleep(every).await;
        }
        bytes.len()
    }

    /// Writes `bytes` at once, then gives loopback a real moment to deliver them: under a
    /// paused clock the runtime may otherwise jump to the next timer before the server's
    /// socket is readable (a loaded machine defers loopback delivery). False once the
    /// server has closed the connection.
    pub(crate) async fn deliver(&mut self, bytes: &[u8]) -> bool {
        if !self.take_available() || self.io.write_all(bytes).await.is_err() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
        true
    }

    /// Moves what has already arrived into the buffer, without waiting, for
    /// [`next`](Self::next); false once the server has closed the connection.
    pub(crate) fn take_available(&mut self) -> bool {
        use futures_util::FutureExt;
        loop {
            let mut chunk = [0u8; 4096];
            match self.io.read(&mut chunk).now_or_never() {
                None => return true,
                Some(Ok(0) | Err(_)) => return false,
                Some(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Sends one masked, final frame.
    pub(crate) async fn frame(&mut self, opcode: u8, payload: &[u8]) {
        self.frame_with(opcode, true, payload, true).await;
    }

    /// Sends a close frame with `code`.
    pub(crate) async fn close(&mut self, code: u16) {
        self.frame(CLOSE, &code.to_be_bytes()).await;
    }

    async fn fill(&mut self, need: usize, wait: Duration) -> Result<(), Got> {
        while self.buf.len() < need {
            let mut chunk = vec![0u8; 64 * 1024];
            match tokio::time::timeout(wait, self.io.read(&mut chunk)).await {
                Err(_) => return Err(Got::Timeout),
                Ok(Ok(0)) => return Err(Got::Eof),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return Err(Got::Error(e.to_string())),
            }
        }
        Ok(())
    }

    /// The next frame's opcode, payload length and header length, once its header is in.
    async fn header_within(&mut self, wait: Duration) -> Result<(u8, usize, usize), Got> {
        self.fill(2, wait).await?;
        let opcode = self.buf[0] & 0x0f;
        let len7 = (self.buf[1] & 0x7f) as usize;
        Ok(match len7 {
            126 => {
                self.fill(4, wait).await?;
                (opcode, u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
            }
            127 => {
                self.fill(10, wait).await?;
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.buf[2..10]);
                (opcode, u64::from_be_bytes(b) as usize, 10)
            }
            n => (opcode, n, 2),
        })
    }

    /// The next frame from the server (any opcode), or how the stream ended.
    pub(crate) async fn next_within(&mut self, wait: Duration) -> Got {
        let (opcode, len, header) = match self.header_within(wait).await {
            Ok(header) => header,
            Err(got) => return got,
        };
        if let Err(got) = self.fill(header + len, wait).await {
            return got;
        }
        let payload = self.buf[header..header + len].to_vec();
        self.buf.drain(..header + len);
        Got::Frame { opcode, payload }
    }

    /// The next frame within 5 s.
    pub(crate) async fn next(&mut self) -> Got {
        self.next_within(Duration::from_secs(5)).await
    }

    /// The next data frame's payload, skipping pings and pongs; panics on anything else.
    pub(crate) async fn data(&mut self) -> Vec<u8> {
        loop {
            match self.next().await {
                Got::Frame { opcode: 0x9 | 0xA, .. } => {}
                Got::Frame { opcode: TEXT | BINARY, payload } => return payload,
                other => panic!("expected data, got {other:?}"),
            }
        }
    }

    /// Reads the next data frame without keeping its payload (skipping pings and pongs), for
    /// payloads too large to hold; returns its opcode and length.
    pub(crate) async fn skip_data(&mut self) -> (u8, usize) {
        let wait = Duration::from_secs(30);
        loop {
            let (opcode, len, header) = self.header_within(wait).await.expect("a frame");
            if opcode == PING || opcode == PONG {
                self.fill(header + len, wait).await.expect("a control frame");
                self.buf.drain(..header + len);
                continue;
            }
            let mut left = (header + len).saturating_sub(self.buf.len());
            self.buf.drain(..(header + len).min(self.buf.len()));
            let mut chunk = vec![0u8; 256 * 1024];
            while left > 0 {
                let n = tokio::time::timeout(wait, self.io.read(&mut chunk))
                    .await
                    .expect("the payload in time")
                    .expect("the payload");
                assert!(n > 0, "the server closed in a payload");
                // What is past this frame belongs to the next.
                self.buf.extend_from_slice(&chunk[left.min(n)..n]);
                left -= left.min(n);
            }
            return (opcode, len);
        }
    }

    /// Sends a masked frame whose payload is `parts` one after another, with the all-zero
    /// mask key, so a large payload goes on the wire as it is, without a masked copy.
    pub(crate) async fn frame_zero_key(&mut self, opcode: u8, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut header = vec![0x80 | opcode];
        match len {
            n if n < 126 => header.push(0x80 | n as u8),
            n if n < 65536 => {
                header.push(0x80 | 126);
                header.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                header.push(0x80 | 127);
                header.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        header.extend_from_slice(&[0, 0, 0, 0]);
        self.io.write_all(&header).await.unwrap();
        for part in parts {
            self.io.write_all(part).await.unwrap();
        }
    }

    /// Does the gotalk handshake: sends `01`, expects the server's `01`.
    pub(crate) async fn gotalk_handshake(&mut self) {
        self.frame(BINARY, b"01").await;
        assert_eq!(self.data().await, b"01");
    }
}
