//! chunkup: resumable, checksummed, chunked file uploads from the browser.
pub mod core;
