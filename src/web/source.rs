//! The file being uploaded, read through the counting stream.
//!
//! Each (re)start creates a fresh `CountingReader` (src/js/io.js) over
//! `blob.slice(offset).stream()`; dropping or closing it cancels the stream, so a retry never
//! leaves a reader running. Pieces are copied once, from the stream's `Uint8Array` into a
//! reused buffer in wasm memory, where they are hashed.

use js_sys::Uint8Array;
use wasm_bindgen::JsCast;
use web_sys::{AbortSignal, Blob};

use crate::core::digest::FileDigest;
use crate::core::engine::{ByteSource, HASH_SLICE};
use crate::core::error::UploadError;
use crate::web::io::{self, CountingReader, Failure};
use crate::web::worker::Pacer;

struct OpenReader {
    start: u64,
    reader: CountingReader,
}

impl Drop for OpenReader {
    fn drop(&mut self) {
        self.reader.cancel();
    }
}

/// A `Blob` (or `File`) read as a [`ByteSource`].
pub struct FileSource {
    blob: Blob,
    size: u64,
    signal: Option<AbortSignal>,
    reader: Option<OpenReader>,
}

impl FileSource {
    /// A source over `blob`; reads end with `Aborted` when `signal` fires.
    pub fn new(blob: Blob, signal: Option<AbortSignal>) -> Self {
        FileSource {
            size: blob.size() as u64,
            blob,
            signal,
            reader: None,
        }
    }
}

impl ByteSource for FileSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn open_at(&mut self, offset: u64) -> Result<(), UploadError> {
        self.reader = None;
        let reader = CountingReader::new(&self.blob, offset as f64, &io::signal_arg(&self.signal))
            .map_err(|_| UploadError::ReadFailed("the file could not be opened".into()))?;
        self.reader = Some(OpenReader {
            start: offset,
            reader,
        });
        Ok(())
    }

    fn close(&mut self) {
        self.reader = None;
    }

    async fn read_piece(&mut self, buf: &mut Vec<u8>) -> Result<bool, UploadError> {
        let reader = self
            .reader
            .as_ref()
            .ok_or_else(|| UploadError::ReadFailed("the file stream is not open".into()))?;
        let piece = io::wait(reader.reader.read()).await.map_err(|failure| {
            failure.into_error(|other| match other {
                Failure::Network(detail) => UploadError::ReadFailed(detail),
                _ => UploadError::ReadFailed("the file stream failed".into()),
            })
        })?;
        if piece.is_null() {
            buf.clear();
            return Ok(false);
        }
        let piece: Uint8Array = piece.dyn_into().map_err(|_| {
            UploadError::ReadFailed("the file stream yielded something that is not bytes".into())
        })?;
        buf.resize(piece.length() as usize, 0);
        piece.copy_to(buf);
        Ok(true)
    }

    fn position(&self) -> u64 {
        self.reader
            .as_ref()
            .map_or(0, |r| r.start + r.reader.bytes() as u64)
    }
}

/// Reads the whole of `blob` through the counting stream into a digest (SHA-256, and MD5
/// with `md5`), as uploads do, failing if the file ends short of its size.
pub async fn digest_whole_file(
    blob: &Blob,
    signal: &Option<AbortSignal>,
    md5: bool,
) -> Result<FileDigest, UploadError> {
    let mut source = FileSource::new(blob.clone(), signal.clone());
    source.open_at(0)?;
    let mut digest = FileDigest::new(md5);
    let mut piece = Vec::new();
    let pacer = Pacer::for_this_thread();
    while source.read_piece(&mut piece).await? {
        for slice in piece.chunks(HASH_SLICE as usize) {
            digest.update(slice);
            pacer.pace().await;
        }
    }
    if digest.hashed_offset() != source.size() {
        return Err(UploadError::ReadFailed(
            "the file ended before its size was read".into(),
        ));
    }
    Ok(digest)
}
