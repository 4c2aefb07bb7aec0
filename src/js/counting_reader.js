// chunkup: the byte-counting reader over a Blob, the one piece of the data path that is
// simpler in JavaScript. Rust (src/web/source.rs) creates one per (re)start of the file
// stream: `blob.slice(offset).stream()` piped through a TransformStream that counts the
// bytes passing through (progress's `bytesRead`) without copying them.

export class CountingReader {
  constructor(blob, offset) {
    this.bytes = 0;
    const counter = this;
    const counting = new TransformStream({
      transform(chunk, controller) {
        counter.bytes += chunk.byteLength;
        controller.enqueue(chunk);
      },
    });
    this.reader = blob.slice(offset).stream().pipeThrough(counting).getReader();
  }

  // Resolves to { done, value: Uint8Array }.
  read() {
    return this.reader.read();
  }

  // Stops reading the file; a pending read() resolves as done. Never rejects.
  cancel() {
    this.reader.cancel().catch(() => {});
  }
}
