import { cloudflareTest } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

// Every test file runs inside workerd (the real Workers runtime) with the bindings of
// wrangler.toml; test-only secrets come from `miniflare.bindings`.
export default defineConfig({
  plugins: [
    cloudflareTest({
      wrangler: { configPath: "./wrangler.toml" },
      miniflare: {
        bindings: {
          EDGE_API_TOKEN: "test-edge-token",
          QSTASH_TOKEN: "test-qstash-token",
        },
      },
    }),
  ],
  test: {
    include: ["test/**/*.test.js"],
    testTimeout: 20_000,
  },
});
