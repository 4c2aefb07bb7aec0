// The web-messaging attachment flow (attachFile) against the reference server's Genesys
// guest API emulator, in the engine CHUNKUP_ENGINE names (see engines.mjs): success, every
// validation refusal (with no request sent), rate limiting, expired URLs, failed uploads,
// server-side refusals, session expiry and abort (deleteAttachment). Every success is
// checked against the server's SHA-256.
//
//   CHUNKUP_ENGINE=webkit node --test tests/e2e/guest.test.mjs
//   (CHUNKUP_SERVER_URL: a running server, else one is started)

import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, test as nodeTest } from "node:test";

import { engine, eventually, installFileHelpers, openBrowser } from "./engines.mjs";
import { logDir, startReferenceServer, stop } from "../../scripts/lib.mjs";

let base;
let server;
let page;

before(async () => {
  base = process.env.CHUNKUP_SERVER_URL;
  if (!base) {
    server = await startReferenceServer([], { log: path.join(logDir, "guest-server.log") });
    base = server.url;
  }
  page = await openBrowser();
  await page.goto(base);
  await page.evaluate(async () => {
    const chunkup = await import("/pkg/chunkup.js");
    await chunkup.default();
    // A minimal widget session over the guest WebSocket, recording what it sends.
    window.openSession = (query = "") =>
      new Promise((resolve, reject) => {
        const socket = new WebSocket(`ws://${location.host}/guest/v1?deploymentId=test${query}`);
        const token = crypto.randomUUID();
        const sent = [];
        const listeners = new Set();
        socket.onerror = () => reject(new Error("websocket error"));
        socket.onmessage = (event) => {
          const message = JSON.parse(event.data);
          if (message.class === "SessionResponse" && !session.sessionResponse) {
            session.sessionResponse = message.body;
            resolve(session);
          }
          for (const listener of listeners) listener(message);
        };
        const session = {
          token,
          sent,
          send(message) {
            sent.push(message);
            socket.send(JSON.stringify(message));
          },
          subscribe(listener) {
            listeners.add(listener);
            return () => listeners.delete(listener);
          },
          close: () => socket.close(),
        };
        socket.onopen = () => session.send({ action: "configureSession", token, deploymentId: "test" });
      });
    // Runs attachFile; returns the result or the error's code, plus what the session sent.
    window.attach = async ({ query = "", size = 300_000, name = "report.pdf", type = "application/pdf", rules, options = {}, abortOnProgress = false, sendMessage = false, textFirst, deleteHangs = false }) => {
      const session = await window.openSession(query);
      if (rules) session.sessionResponse = rules(session.sessionResponse);
      if (deleteHangs) {
        // A widget whose send settles only once its socket is back (it never is here).
        const send = session.send;
        session.send = (message) => {
          send(message);
          if (message.action === "deleteAttachment") return new Promise(() => {});
        };
      }
      if (textFirst) {
        // The customer's text goes out just before the onAttachment: its answer comes while
        // attachFile waits for the URL, as when the widget sends both at once.
        const send = session.send;
        session.send = (message) => {
          if (message.action === "onAttachment" && textFirst) {
            send({ action: "onMessage", token: session.token, message: { type: "Text", text: textFirst } });
            textFirst = undefined;
          }
          return send(message);
        };
      }
      const file = window.fileOf(size, name, type);
      const controller = new AbortController();
      let abortedAt;
      controller.signal.addEventListener("abort", () => (abortedAt = performance.now()));
      const progress = [];
      let abortTimer;
      try {
        const result = await window.chunkup.attachFile(
          session,
          file,
          (p) => {
            progress.push({ phase: p.phase, percent: p.percent, sent: p.bytesSent });
            // Abort mid-PUT: once bytes are reported sent, or half a second into the PUT
            // (which lasts seconds). Firefox reports none while a body that fits in the
            // socket buffers waits for the server, and then only just before the answer.
            if (abortOnProgress && p.bytesSent > 0) controller.abort();
            if (abortOnProgress && p.phase === "uploading") abortTimer ??= setTimeout(() => controller.abort(), 500);
          },
          { signal: controller.signal, eventTimeoutMs: 30_000, retry: { attempts: 5, baseDelayMs: 10, maxDelayMs: 2000 }, ...options },
        );
        let echoed;
        if (sendMessage) {
          // The message carrying it, on the same session; the server echoes it resolved.
          const echo = new Promise((resolve, reject) => {
            setTimeout(() => reject(new Error("no echo within 30 s")), 30_000);
            session.subscribe((m) => {
              if (m.class === "StructuredMessage" && m.body.direction === "Inbound") resolve(m.body);
              if (m.class === "string" && m.code >= 400) reject(new Error(`refused: ${m.code} ${m.body}`));
            });
          });
          session.send(window.chunkup.buildAttachmentMessage(session.token, "here it is", [result.attachmentId]));
          echoed = await echo;
        }
        return { result, echoed, expected: await window.sha256(file), token: session.token, sent: session.sent, progress };
      } catch (error) {
        const msAfterAbort = abortedAt === undefined ? undefined : performance.now() - abortedAt;
        return { error: { code: error.code, message: error.message, serverCode: error.serverCode, msAfterAbort }, token: session.token, sent: session.sent, progress };
      } finally {
        clearTimeout(abortTimer);
        await new Promise((r) => setTimeout(r, 200));
        session.close();
      }
    };
    window.chunkup = chunkup;
  });
  await page.evaluate(installFileHelpers);
});

after(async () => {
  await page?.close();
  await stop(server);
});

const actionsOf = (sent) => sent.map((m) => m.action);
async function record(attachmentId) {
  const res = await fetch(new URL(`guest/attachments/${attachmentId}`, base));
  return res.status === 200 ? res.json() : null;
}

/** Asserts a successful attach and that the server holds exactly the file. */
async function assertAttached(outcome) {
  assert.equal(outcome.error, undefined, JSON.stringify(outcome.error));
  const { result, expected } = outcome;
  assert.equal(result.sha256, expected);
  assert.match(result.downloadUrl, /^http:\/\/.+\/guest\/files\//);
  const stored = await record(result.attachmentId);
  assert.equal(stored.state, "uploaded");
  assert.equal(stored.sha256, expected);
  assert.equal(stored.size, result.size);
  const percents = outcome.progress.map((p) => p.percent);
  assert.deepEqual(percents, [...percents].sort((a, b) => a - b), "percent never goes back");
  assert.equal(outcome.progress.at(-1).percent, 100);
  return stored;
}

// Every scenario in chunkup's Worker (the default; the session's send and subscribe are
// called through messages) and on the page: both must behave the same. On the page, Chromium
// runs them all; Firefox and WebKit run these, one of each kind (success, faults, abort,
// a broken session), to keep `npm test` short: the rest check rules that run on the page
// before any work starts, or the protocol, which is the same engine in both modes.
const PAGE_MODE_IN_EVERY_ENGINE = new Set([
  "attaches a file, then sends it in a message the server echoes",
  "survives faults on the PUT itself",
  "restarts with a fresh URL after an UploadFailureEvent 4008, then attaches",
  "abort stops the upload and deletes the attachment",
  "a session whose send throws fails the attachment with network",
]);

for (const worker of [true, false]) {
  describe(worker ? "in chunkup's Worker" : "on the page (worker: false)", () => {
    const attach = (args) => page.evaluate((a) => window.attach(a), { ...args, options: { worker, ...args.options } });
    const names = new Set();
    const test = (name, fn) => {
      names.add(name);
      if (worker || engine === "chromium" || PAGE_MODE_IN_EVERY_ENGINE.has(name)) nodeTest(name, fn);
    };

    test("attaches a file, then sends it in a message the server echoes", async () => {
      const outcome = await attach({ size: 2_000_000, options: { md5: true }, sendMessage: true });
      const stored = await assertAttached(outcome);
      assert.equal(outcome.result.md5, stored.md5, "fileMd5 sent and matched");
      assert.equal(outcome.sent.find((m) => m.action === "onAttachment").fileMd5, stored.md5);
      const { echoed } = outcome;
      assert.equal(echoed.text, "here it is");
      const attachment = echoed.content[0].attachment;
      assert.equal(attachment.id, outcome.result.attachmentId);
      assert.equal(attachment.url, outcome.result.downloadUrl);
      assert.equal(attachment.sha256, stored.sha256);
    });

    test("the message built for an attachment is the guest API's onMessage", async () => {
      const message = await page.evaluate(() => window.chunkup.buildAttachmentMessage("tok", "hi", ["a", "b"]));
      assert.deepEqual(message, {
        action: "onMessage",
        token: "tok",
        message: {
          type: "Text",
          text: "hi",
          content: [
            { contentType: "Attachment", attachment: { id: "a" } },
            { contentType: "Attachment", attachment: { id: "b" } },
          ],
        },
      });
    });

    test("an image is accepted through the image/* wildcard", async () => {
      await assertAttached(await attach({ name: "photo.PNG", type: "image/png", size: 50_000 }));
    });

    for (const [what, args, code] of [
      ["a type not allowed", { name: "table.csv", type: "text/csv" }, "file_type_invalid"],
      ["a type outside the image/* wildcard family", { name: "clip.mp4", type: "video/mp4" }, "file_type_invalid"],
      ["a blocked extension", { name: "setup.EXE", type: "application/pdf" }, "file_extension_blocked"],
      ["an empty file", { size: 0 }, "file_empty"],
      [
        "a file over maxFileSizeKB",
        { size: 2_001, rules: "maxFileSizeKB=2" },
        "file_size_invalid",
      ],
      ["attachments turned off", { rules: "off" }, "attachments_disabled"],
    ]) {
      test(`refuses ${what} before sending anything`, async () => {
        const outcome = await page.evaluate(async ({ args, rules }) => {
          const set = {
            "maxFileSizeKB=2": (r) => ({ ...r, allowedMedia: { inbound: { ...r.allowedMedia.inbound, maxFileSizeKB: 2 } } }),
            off: (r) => ({ ...r, allowedMedia: { inbound: { fileTypes: [], maxFileSizeKB: 0 } } }),
          }[rules];
          const verdict = await (async () => {
            const session = await window.openSession();
            const rulesNow = set ? set(session.sessionResponse) : session.sessionResponse;
            session.close();
            const file = window.fileOf(args.size ?? 300_000, args.name ?? "report.pdf", args.type ?? "application/pdf");
            return window.chunkup.validateAttachment(rulesNow, file)?.code ?? null;
          })();
          return { verdict, attach: await window.attach({ ...args, rules: set }) };
        }, { args, rules: args.rules });
        assert.equal(outcome.verdict, code, "validateAttachment");
        assert.equal(outcome.attach.error?.code, code, "attachFile");
        assert.ok(outcome.attach.error.message.length > 10);
        assert.deepEqual(actionsOf(outcome.attach.sent), ["configureSession"], "no onAttachment was sent");
      });
    }

    test("waits out a 4029 rate limit, then attaches", async () => {
      const outcome = await attach({ query: "&faults=rate-limit:1,retry-after:1" });
      await assertAttached(outcome);
      assert.deepEqual(actionsOf(outcome.sent), ["configureSession", "onAttachment", "onAttachment"]);
      // Progress says so from the start: starting, the wait, starting again, then the PUT.
      const phases = outcome.progress.map((p) => p.phase).filter((phase, i, all) => phase !== all[i - 1]);
      assert.deepEqual(phases.slice(0, 3), ["starting", "retrying", "starting"], phases.join());
    });

    test("gives up with too_many_requests when rate limited for longer than allowed", async () => {
      const outcome = await attach({ query: "&faults=rate-limit:9,retry-after:0", options: { retry: { attempts: 2, baseDelayMs: 1, maxDelayMs: 10 } } });
      assert.equal(outcome.error?.code, "too_many_requests");
      assert.equal(outcome.error.serverCode, 4029);
    });

    test("asks for a fresh URL when the first one expired, then attaches", async () => {
      const outcome = await attach({ query: "&faults=expired-url:1" });
      const stored = await assertAttached(outcome);
      assert.equal(stored.urlRequests, 2);
      assert.equal(actionsOf(outcome.sent).filter((a) => a === "onAttachment").length, 2);
    });

    test("restarts with a fresh URL after an UploadFailureEvent 4008, then attaches", async () => {
      const outcome = await attach({ query: "&faults=upload-failure:1" });
      const stored = await assertAttached(outcome);
      assert.equal(stored.urlRequests, 2);
    });

    test("survives faults on the PUT itself", async () => {
      // Half the PUTs fail. The proxy that injects them is shared by every run side by side,
      // so the sequence is not repeatable: enough retries that giving up is out of reach
      // (0.5^16), few enough that a retry that does not work would still fail the test.
      const faults = encodeURIComponent("503:0.2,reset:0.2,429:0.1,retry-after:0");
      const outcome = await attach({
        query: `&putFaults=${faults}`,
        size: 1_000_000,
        options: { retry: { attempts: 15, baseDelayMs: 5, maxDelayMs: 100 } },
      });
      await assertAttached(outcome);
    });

    test("maps the server's own refusals to stable codes", async () => {
      const tooLong = await attach({ name: `${"x".repeat(300)}.pdf` });
      assert.equal(tooLong.error?.code, "file_name_too_long");
      assert.equal(tooLong.error.serverCode, 4005);
      const expired = await attach({ query: "&faults=session-expired" });
      assert.equal(expired.error?.code, "session_expired");
      assert.match(expired.error.message, /session has expired/);
    });

    test("a text refused while the URL is awaited is not taken for the attachment's refusal", async () => {
      const outcome = await attach({ textFirst: "x".repeat(4001) });
      await assertAttached(outcome);
      assert.deepEqual(actionsOf(outcome.sent), ["configureSession", "onMessage", "onAttachment"]);
    });

    test("abort stops the upload and deletes the attachment", async () => {
      const outcome = await attach({ query: `&putFaults=${encodeURIComponent("bandwidth:1MB")}`, size: 4_000_000, abortOnProgress: true });
      assert.equal(outcome.error?.code, "aborted", JSON.stringify(outcome.progress));
      assert.ok(outcome.progress.some((p) => p.phase === "uploading"), "aborted while the PUT was under way");
      const actions = actionsOf(outcome.sent);
      assert.deepEqual(actions, ["configureSession", "onAttachment", "deleteAttachment"]);
      const id = outcome.sent.find((m) => m.action === "deleteAttachment").attachmentId;
      // The deletion is sent as the call rejects, not waited for: it lands a little later.
      const stored = await eventually(() => record(id), (r) => r?.state === "deleted");
      assert.equal(stored?.state, "deleted");
      const log = await (await fetch(new URL(`guest/sessions/${outcome.token}`, base))).json();
      assert.ok(log.requests.includes("deleteAttachment"));
    });

    test("abort does not wait for the deleteAttachment to be sent", async () => {
      // The widget's send never settles the deletion; eventTimeoutMs would end that wait
      // only after a minute.
      const outcome = await attach({
        query: `&putFaults=${encodeURIComponent("bandwidth:1MB")}`,
        size: 4_000_000,
        abortOnProgress: true,
        deleteHangs: true,
        options: { eventTimeoutMs: 60_000 },
      });
      assert.equal(outcome.error?.code, "aborted", JSON.stringify(outcome.progress));
      assert.deepEqual(actionsOf(outcome.sent), ["configureSession", "onAttachment", "deleteAttachment"]);
      assert.ok(outcome.error.msAfterAbort < 20_000, `rejected ${outcome.error.msAfterAbort} ms after the abort`);
    });

    test("bad arguments are refused", async () => {
      const codes = await page.evaluate(async () => {
        const file = window.fileOf(10, "a.pdf", "application/pdf");
        const tries = [
          () => window.chunkup.attachFile(null, file, null),
          () => window.chunkup.attachFile({ token: "t", send() {} }, file, null),
          () => window.chunkup.attachFile({ token: "t", send() {}, subscribe: () => () => {} }, "not a file", null),
          () => window.chunkup.attachFile({ token: "t", send() {}, subscribe: () => () => {} }, file, null, { bogus: 1 }),
        ];
        const out = [];
        for (const run of tries) {
          try {
            await run();
            out.push("resolved");
          } catch (error) {
            out.push(error.code);
          }
        }
        return out;
      });
      assert.deepEqual(codes, ["invalid_input", "invalid_input", "invalid_input", "invalid_input"]);
    });

    // A widget's send that throws, or returns a promise that never settles. In the Worker,
    // the call crosses to the page and back within eventTimeoutMs: a throw is given ample
    // time, so that a loaded machine cannot turn it into a timeout.
    for (const [name, send, eventTimeoutMs, expected] of [
      [
        "a session whose send throws fails the attachment with network",
        "throws",
        30_000,
        { code: "network", message: "network error during POST (send a chat message): session.send threw: socket closed" },
      ],
      [
        "a session whose send never settles fails the attachment with timeout",
        "hangs",
        1000,
        { code: "timeout", message: "POST (send a chat message) got no answer within 1000 ms" },
      ],
    ]) {
      test(name, async () => {
        const outcome = await page.evaluate(
          async ({ worker, send, eventTimeoutMs }) => {
            const session = await window.openSession();
            const file = window.fileOf(1000, "a.pdf", "application/pdf");
            const broken = {
              ...session,
              send:
                send === "throws"
                  ? () => {
                      throw new Error("socket closed");
                    }
                  : () => new Promise(() => {}),
            };
            try {
              await window.chunkup.attachFile(broken, file, null, { worker, eventTimeoutMs });
              return null;
            } catch (error) {
              return { code: error.code, message: error.message };
            } finally {
              session.close();
            }
          },
          { worker, send, eventTimeoutMs },
        );
        assert.deepEqual(outcome, expected);
      });
    }

    test("an abort while subscribing still unsubscribes the listener", async () => {
      const outcome = await page.evaluate(async (worker) => {
        const session = await window.openSession();
        const file = window.fileOf(1000, "a.pdf", "application/pdf");
        const controller = new AbortController();
        let subscribed = 0;
        let unsubscribed = 0;
        const aborting = {
          ...session,
          subscribe(listener) {
            subscribed += 1;
            const unsubscribe = session.subscribe(listener);
            // The abort comes before the answer (in the Worker, before it crosses back).
            controller.abort();
            return () => {
              unsubscribed += 1;
              unsubscribe();
            };
          },
        };
        try {
          const code = await window.chunkup.attachFile(aborting, file, null, { worker, signal: controller.signal }).then(
            () => "resolved",
            (error) => error.code,
          );
          for (let i = 0; i < 500 && unsubscribed < subscribed; i += 1) await new Promise((resolve) => setTimeout(resolve, 20));
          return { code, subscribed, unsubscribed };
        } finally {
          session.close();
        }
      }, worker);
      assert.deepEqual(outcome, { code: "aborted", subscribed: 1, unsubscribed: 1 });
    });
    for (const name of PAGE_MODE_IN_EVERY_ENGINE) {
      if (!names.has(name)) throw new Error(`PAGE_MODE_IN_EVERY_ENGINE names no test: ${name}`);
    }
  });
}
