/**
 * URL hygiene: one canonical form per page (so KV dedup works across trivially different
 * links) and an SSRF guard, because the receiver's crawler will fetch whatever we publish.
 */

/** Query parameters that only track clicks; they never change the page. */
const TRACKING_PARAMS = new Set([
  "fbclid",
  "gclid",
  "gclsrc",
  "dclid",
  "gbraid",
  "wbraid",
  "msclkid",
  "yclid",
  "twclid",
  "igshid",
  "mc_cid",
  "mc_eid",
  "_ga",
  "_gl",
  "_hsenc",
  "_hsmi",
  "mkt_tok",
  "oly_anon_id",
  "oly_enc_id",
  "vero_id",
  "ref_src",
]);

function isTrackingParam(name) {
  const lower = name.toLowerCase();
  return lower.startsWith("utm_") || TRACKING_PARAMS.has(lower);
}

/**
 * Canonical form: lower-case scheme/host (WHATWG URL does this), default port dropped,
 * no fragment, tracking parameters removed, remaining query parameters sorted.
 * @param {string} raw
 * @returns {string}
 * @throws {TypeError} when `raw` is not an absolute URL.
 */
export function normaliseUrl(raw) {
  const url = new URL(raw);
  url.hash = "";
  const kept = [...url.searchParams].filter(([name]) => !isTrackingParam(name));
  kept.sort(([a, av], [b, bv]) => (a < b ? -1 : a > b ? 1 : av < bv ? -1 : av > bv ? 1 : 0));
  url.search = kept.length ? new URLSearchParams(kept).toString() : "";
  return url.toString();
}

function ipv4Octets(host) {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(host);
  return m ? m.slice(1).map(Number) : null;
}

/** Loopback, private, link-local (cloud metadata), CGNAT, benchmark, multicast, reserved. */
function privateIpv4(o) {
  const [a, b] = o;
  return (
    a === 0 ||
    a === 10 ||
    a === 127 ||
    (a === 100 && b >= 64 && b <= 127) ||
    (a === 169 && b === 254) ||
    (a === 172 && b >= 16 && b <= 31) ||
    (a === 192 && b === 168) ||
    (a === 192 && b === 0 && o[2] === 0) ||
    (a === 198 && (b === 18 || b === 19)) ||
    a >= 224
  );
}

/** Expands a (WHATWG-serialised) IPv6 literal into eight 16-bit groups. */
function ipv6Groups(host) {
  let text = host.replace(/^\[|\]$/g, "");
  const tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (tail) {
    const o = ipv4Octets(tail[1]);
    if (!o) return null;
    const hi = ((o[0] << 8) | o[1]).toString(16);
    const lo = ((o[2] << 8) | o[3]).toString(16);
    text = text.slice(0, -tail[1].length) + `${hi}:${lo}`;
  }
  const [head, rest] = text.split("::");
  const headParts = head ? head.split(":") : [];
  const restParts = rest === undefined ? [] : rest ? rest.split(":") : [];
  const missing = 8 - headParts.length - restParts.length;
  if (rest === undefined && missing !== 0) return null;
  const parts = [...headParts, ...Array(Math.max(missing, 0)).fill("0"), ...restParts];
  return parts.length === 8 ? parts.map((p) => parseInt(p, 16)) : null;
}

function privateIpv6(g) {
  const allZeroPrefix = g.slice(0, 5).every((x) => x === 0);
  if (g.every((x) => x === 0)) return true; // ::
  if (g.slice(0, 7).every((x) => x === 0) && g[7] === 1) return true; // ::1
  if (allZeroPrefix && (g[5] === 0xffff || g[5] === 0)) {
    // IPv4-mapped / IPv4-compatible: judge the embedded IPv4 address.
    return privateIpv4([g[6] >> 8, g[6] & 255, g[7] >> 8, g[7] & 255]);
  }
  if (g[0] === 0x64 && g[1] === 0xff9b) {
    return privateIpv4([g[6] >> 8, g[6] & 255, g[7] >> 8, g[7] & 255]); // NAT64
  }
  if (g.slice(0, 4).every((x) => x === 0) && g[4] === 0xffff && g[5] === 0) {
    return privateIpv4([g[6] >> 8, g[6] & 255, g[7] >> 8, g[7] & 255]); // IPv4-translated
  }
  if (g[0] === 0x2002) {
    return privateIpv4([g[1] >> 8, g[1] & 255, g[2] >> 8, g[2] & 255]); // 6to4
  }
  return (
    (g[0] & 0xfe00) === 0xfc00 || // unique local fc00::/7
    (g[0] & 0xffc0) === 0xfe80 || // link-local fe80::/10
    (g[0] & 0xffc0) === 0xfec0 || // site-local fec0::/10 (deprecated, still routed inside)
    (g[0] & 0xff00) === 0xff00 || // multicast
    (g[0] === 0x2001 && g[1] === 0x0db8) // documentation
  );
}

const INTERNAL_SUFFIXES = [".localhost", ".local", ".internal", ".lan", ".home.arpa"];

function hostMatches(host, domain) {
  return host === domain || host.endsWith(`.${domain}`);
}

/**
 * Why `raw` must not be crawled, or `null` when it is fine. Checks scheme, credentials and
 * literal private/loopback/link-local addresses (the URL parser already turns `0x7f.1` or
 * `2130706433` into dotted IPv4). Hostnames that resolve to private addresses (DNS
 * rebinding) cannot be checked from a Worker; the crawler must guard against those.
 * @param {string} raw
 * @returns {string|null}
 */
export function unsafeUrlReason(raw) {
  let url;
  try {
    url = new URL(raw);
  } catch {
    // With a scheme the parser failed on the host or port (spaces, forbidden characters,
    // a port over 65535); without one it is a relative or garbled link.
    return /^[a-z][a-z0-9+.-]*:\/\//i.test(raw)
      ? "not a valid URL (its host or port is malformed)"
      : "not an absolute URL";
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return `scheme ${url.protocol} is not http/https`;
  }
  if (url.username || url.password) return "URLs with credentials are not allowed";
  const host = url.hostname.toLowerCase().replace(/\.$/, "");
  if (host === "" || host === "localhost" || INTERNAL_SUFFIXES.some((s) => host.endsWith(s))) {
    return `host ${host || "(empty)"} is a local name`;
  }
  if (!host.includes(".") && !host.startsWith("[")) {
    return `host ${host} is not a public domain name`;
  }
  // The receiver (qpipe_dagster.concepts.host_fault) and the crawler refuse these too.
  if (host.startsWith(".") || host.includes("..")) return `host ${host} has an empty label`;
  if (url.port === "0") return "port 0 is not a valid port";
  const v4 = ipv4Octets(host);
  if (v4 && privateIpv4(v4)) return `address ${host} is private, loopback or link-local`;
  if (host.startsWith("[")) {
    const groups = ipv6Groups(host);
    if (!groups || privateIpv6(groups)) {
      return `address ${host} is private, loopback or link-local`;
    }
  }
  return null;
}

/**
 * Why the URL's domain is refused by the configured allow/deny lists, or `null`.
 * @param {string} raw absolute URL
 * @param {string[]} allow empty = every domain allowed
 * @param {string[]} deny
 */
export function domainRefusal(raw, allow, deny) {
  const host = new URL(raw).hostname.toLowerCase().replace(/\.$/, "");
  const denied = deny.find((d) => hostMatches(host, d));
  if (denied) return `domain ${host} is on the deny list (${denied})`;
  if (allow.length && !allow.some((d) => hostMatches(host, d))) {
    return `domain ${host} is not on the allow list`;
  }
  return null;
}

/** SSRF guard + domain lists in one call: the reason to drop `raw`, or `null` to keep it. */
export function refusalReason(raw, config) {
  return unsafeUrlReason(raw) ?? domainRefusal(raw, config.allowDomains, config.denyDomains);
}
