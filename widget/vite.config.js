// Builds the chat widget into widget/dist, served by the reference server at /widget/.
//   npx vite build --config widget/vite.config.js     (from the repository root)
//   npx vite --config widget/vite.config.js           (dev server; needs a guest WebSocket: ?ws=...)
// `chunkup` resolves by name to node_modules/chunkup (root devDependency "file:./pkg").
import { fileURLToPath } from "node:url";

export default {
  root: fileURLToPath(new URL(".", import.meta.url)),
  base: "/widget/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
  },
  // wasm-pack's output finds its .wasm with new URL(..., import.meta.url): keep it out of
  // the dev server's dependency pre-bundling, which would break that URL.
  optimizeDeps: { exclude: ["chunkup"] },
};
