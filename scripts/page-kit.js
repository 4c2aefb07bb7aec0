// Page-side helpers shared by `npm run bench` and `npm run anatomy`: a classic script that
// both inject into their page (playwright's page.addScriptTag), defining
// `window.chunkupPageKit`. It plays the two parts a widget's page plays beside chunkup:
//   s3Hooks(base)                 options.s3 for protocol "s3", with the reference server as
//                                 the widget's backend (it signs with rusty-s3); `created()`
//                                 tells the object key createMultipartUpload answered.
//   openGuestSession(base, id)    a guest session over the reference server's guest API
//                                 emulator, as a widget opens it (configureSession, then the
//                                 SessionResponse with the attachment rules): the `session`
//                                 argument of attachFile, and `close()`.
// tests/e2e/guest.test.mjs opens its sessions with its own code: it runs in three engines
// and records what was sent.
"use strict";
window.chunkupPageKit = {
  s3Hooks(base) {
    const post = async (route, body) => {
      const response = await fetch(new URL(route, base), { method: "POST", body: JSON.stringify(body) });
      if (!response.ok) throw new Error(`${route} answered ${response.status}`);
      return response.json();
    };
    let key;
    return {
      created: () => key,
      hooks: {
        createMultipartUpload: async (args) => {
          const upload = await post("s3/multipart", args);
          key = upload.key;
          return upload;
        },
        signPart: (args) => post("s3/multipart/sign", args),
        listParts: (args) => post("s3/multipart/list", args),
        completeMultipartUpload: (args) => post("s3/multipart/complete", args),
        abortMultipartUpload: (args) => post("s3/multipart/abort", args),
      },
    };
  },

  async openGuestSession(base, deploymentId) {
    const socket = new WebSocket(`${new URL("guest/v1", base).href.replace(/^http/, "ws")}?deploymentId=${encodeURIComponent(deploymentId)}`);
    const listeners = new Set();
    const session = {
      token: crypto.randomUUID(),
      send: (message) => socket.send(JSON.stringify(message)),
      subscribe(listener) {
        listeners.add(listener);
        return () => listeners.delete(listener);
      },
    };
    await new Promise((resolve, reject) => {
      socket.onerror = () => reject(new Error("the guest WebSocket failed"));
      socket.onclose = () => reject(new Error("the guest WebSocket closed before the SessionResponse"));
      socket.onopen = () => session.send({ action: "configureSession", token: session.token, deploymentId });
      socket.onmessage = (event) => {
        const message = JSON.parse(event.data);
        if (message.class === "SessionResponse") session.sessionResponse ??= message.body;
        if (session.sessionResponse) resolve();
        for (const listener of listeners) listener(message);
      };
    });
    return { session, close: () => socket.close() };
  },
};
