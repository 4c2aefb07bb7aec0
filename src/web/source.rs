//! The file being uploaded, read through the counting stream.
//!
//! Each (re)start creates a fresh `CountingReader` (src/js/counting_reader.js) over
//! `blob.slice(offset).stream()`; dropping or closing it cancels the stream, so a retry never
//! leaves a reader running. Pieces are copied once, from the stream's `Uint8Array` into a
//! reused buffer in wasm memory, where they are hashed.

use std::rc::Rc;

use js_sys::{Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::Blob;

use crate::core::digest::FileDigest;
use crate::core::engine::ByteSource;
use crate::core::error::UploadError;
use crate::web::abort::AbortWatch;
use crate::web::js::{get, message_of, settle};

#[wasm_bindgen(module = "/src/js/counting_reader.js")]
extern "C" {
    type CountingReader;

    #[wasm_bindgen(constructor, catch)]
    fn new(blob: &Blob, offset: f64) -> Result<CountingReader, JsValue>;

    #[wasm_bindgen(method)]
    fn read(this: &CountingReader) -> Promise;

    #[wasm_bindgen(method)]
    fn cancel(this: &CountingReader);

    #[wasm_bindgen(method, getter)]
    fn bytes(this: &CountingReader) -> f64;
}

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
    abort: Rc<AbortWatch>,
    reader: Option<OpenReader>,
}

impl FileSource {
    /// A source over `blob`; reads end with `Aborted` when `abort` fires.
    pub fn new(blob: Blob, abort: Rc<AbortWatch>) -> Self {
        FileSource {
            size: blob.size() as u64,
            blob,
            abort,
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
        let reader = CountingReader::new(&self.blob, offset as f64)
            .map_err(|e| UploadError::ReadFailed(message_of(&e)))?;
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
        let result = self
            .abort
            .race(settle(reader.reader.read()))
            .await?
            .map_err(|e| UploadError::ReadFailed(message_of(&e)))?;
        if get(&result, "done").is_truthy() {
            buf.clear();
            return Ok(false);
        }
        let piece: Uint8Array = get(&result, "value").dyn_into().map_err(|_| {
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
    abort: &Rc<AbortWatch>,
    md5: bool,
) -> Result<FileDigest, UploadError> {
    let mut source = FileSource::new(blob.clone(), Rc::clone(abort));
    source.open_at(0)?;
    let mut digest = FileDigest::new(md5);
    let mut piece = Vec::new();
    while source.read_piece(&mut piece).await? {
        digest.update(&piece);
    }
    if digest.hashed_offset() != source.size() {
        return Err(UploadError::ReadFailed(
            "the file ended before its size was read".into(),
        ));
    }
    Ok(digest)
}
