// A tiny HTTP proxy in front of the reference server, for the end-to-end tests that need to
// see or shape HTTP traffic in every engine alike (WebDriver, unlike playwright, has no
// network interception): it records every request it forwards (method, path, status and
// Location of the answer, including requests from chunkup's Worker), and it can serve a few
// pages of its own, with headers of the test's choosing (a Content-Security-Policy).
//
// The browser talks to the proxy as to the server itself: the Host header is forwarded
// unchanged, so URLs the server builds from it point at the proxy again. A broken upstream
// connection breaks the browser's connection too, as the server's own reset faults would.

import http from "node:http";

/**
 * Starts the proxy to `target` (a base URL) on a free loopback port. `pages` maps a path to
 * `{ headers, body }` served by the proxy itself. Resolves to `{ url, requests, close() }`.
 */
export function startProxy(target, { pages = {} } = {}) {
  const requests = [];
  const agent = new http.Agent({ keepAlive: true });
  const server = http.createServer((request, response) => {
    const own = pages[new URL(request.url, "http://proxy").pathname];
    if (own) {
      response.writeHead(200, { "Cache-Control": "no-store", ...own.headers });
      response.end(own.body);
      return;
    }
    const entry = { method: request.method, path: request.url, status: null, location: null };
    requests.push(entry);
    const upstream = http.request(
      new URL(request.url, target),
      { method: request.method, headers: request.headers, agent },
      (answer) => {
        entry.status = answer.statusCode;
        entry.location = answer.headers.location ?? null;
        response.writeHead(answer.statusCode, answer.rawHeaders);
        answer.pipe(response);
        answer.on("aborted", () => response.destroy());
        answer.on("error", () => response.destroy());
      },
    );
    upstream.on("error", () => response.destroy());
    request.on("aborted", () => upstream.destroy());
    request.pipe(upstream);
  });
  return new Promise((resolve, reject) => {
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      resolve({
        url: `http://127.0.0.1:${port}/`,
        requests,
        close: () =>
          new Promise((done) => {
            server.close(() => done());
            server.closeAllConnections();
            agent.destroy();
          }),
      });
    });
  });
}
