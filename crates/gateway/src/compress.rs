//! The two content codings the gateway serves, shared by the build script (which compresses
//! the browser bundle once per build) and [`Assets`](crate::Assets) (which compresses files
//! an app adds), so both produce the same bytes for the same file.

use std::io::{self, Write as _};

/// `body` gzipped at level 9.
pub(crate) fn gzip(body: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(9));
    encoder.write_all(body)?;
    encoder.finish()
}

/// `body` as brotli at `quality` (0 to 11), with a 4 MiB window.
pub(crate) fn brotli(body: &[u8], quality: i32) -> io::Result<Vec<u8>> {
    let params = brotli::enc::BrotliEncoderParams {
        quality,
        lgwin: 22,
        size_hint: body.len(),
        ..Default::default()
    };
    let mut out = Vec::new();
    brotli::BrotliCompress(&mut &body[..], &mut out, &params)?;
    Ok(out)
}
