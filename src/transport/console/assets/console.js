// govshare console: the checks a reader makes without trusting the server.
//
// On an entry page: the checkpoint's signature under the log key (pinned in
// this browser on first use: a change is an alarm), each configured
// witness's cosignature (cosignature/v1), and the RFC 6962 inclusion path
// from the entry's own bytes to the checkpoint's root — all with WebCrypto.
// The fields shown as verified are decoded from those same bytes.
// On the live page: new entries from server-sent events.
"use strict";

const TEXT = {
  en: {
    proven: "Proven in this browser: the log key signed this checkpoint, every witness cosigned it, and this entry is in it.",
    refused: "NOT proven: ",
    sig: "checkpoint signed by the log key",
    pinned: "the log's and the witnesses' keys are the ones this browser pinned",
    pinnedNow: "the log's and the witnesses' keys are now pinned in this browser (first use)",
    changed: "ALARM: the log's or the witnesses' keys differ from the ones this browser pinned",
    unwitnessed: "no witness cosigns this log: the gateway alone vouches for it",
    index: "the entry's bytes are the entry asked for",
    cosig: "cosigned by ",
    inclusion: "inclusion path from this entry to the checkpoint's root",
    uncovered: "no checkpoint covers this entry yet: reload in a moment",
  },
  "zh-CN": {
    proven: "已在本浏览器中证明：日志公钥签署了该检查点，所有见证者均已联署，且本条目包含在其中。",
    refused: "未能证明：",
    sig: "检查点由日志公钥签署",
    pinned: "日志与见证者的公钥与本浏览器固定的公钥一致",
    pinnedNow: "日志与见证者的公钥已在本浏览器中固定（首次使用）",
    changed: "警报：日志或见证者的公钥与本浏览器固定的公钥不同",
    unwitnessed: "没有见证者联署此日志：仅由网关自身担保",
    index: "条目字节与所请求的条目一致",
    cosig: "见证者联署：",
    inclusion: "从本条目到检查点根哈希的包含路径",
    uncovered: "尚无检查点覆盖本条目：请稍后刷新",
  },
};

const enc = new TextEncoder();
const b64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
};
const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

// A C2SP verifier key "name+hash+base64(type || key)" (the base64 may
// itself hold "+").
function parseKey(vkey, type) {
  const first = vkey.indexOf("+");
  const second = vkey.indexOf("+", first + 1);
  if (first < 0 || second < 0) throw new Error("not a verifier key");
  const name = vkey.slice(0, first);
  const raw = b64(vkey.slice(second + 1));
  if (raw[0] !== type || raw.length !== 33) throw new Error("not a key of type " + type);
  return { name, pub: raw.slice(1) };
}

async function keyHash(name, type, pub) {
  return (await sha256(concat(enc.encode(name + "\n"), Uint8Array.of(type), pub))).slice(0, 4);
}

async function ed25519(pub, sig, msg) {
  const key = await crypto.subtle.importKey("raw", pub, { name: "Ed25519" }, false, ["verify"]);
  return crypto.subtle.verify({ name: "Ed25519" }, key, sig, msg);
}

// A signed note: its body (signed text) and its signature lines.
function parseNote(note) {
  const cut = note.indexOf("\n\n");
  if (cut < 0) throw new Error("not a signed note");
  const body = note.slice(0, cut + 1);
  const sigs = note.slice(cut + 2).split("\n").filter((l) => l.startsWith("\u2014 ")).map((l) => {
    const [, name, sig] = l.split(" ");
    return { name, sig: b64(sig) };
  });
  const [origin, size, root] = body.split("\n");
  return { body, sigs, origin, size: BigInt(size), root: b64(root) };
}

async function logSigned(note, pub) {
  const want = await keyHash(note.origin, 0x01, pub);
  for (const s of note.sigs) {
    if (s.name === note.origin && s.sig.length === 68 && equal(s.sig.slice(0, 4), want)) {
      if (await ed25519(pub, s.sig.slice(4), enc.encode(note.body))) return true;
    }
  }
  return false;
}

async function cosigned(note, vkey) {
  const { name, pub } = parseKey(vkey, 0x04);
  const want = await keyHash(name, 0x04, pub);
  for (const s of note.sigs) {
    if (s.name !== name || s.sig.length !== 76 || !equal(s.sig.slice(0, 4), want)) continue;
    let t = 0n;
    for (const b of s.sig.slice(4, 12)) t = (t << 8n) | BigInt(b);
    const msg = enc.encode("cosignature/v1\ntime " + t + "\n" + note.body);
    if (await ed25519(pub, s.sig.slice(12), msg)) return true;
  }
  return false;
}

// RFC 9162 2.1.3.2.
async function included(leafBytes, index, size, path, root) {
  let fn = BigInt(index), sn = size - 1n;
  if (fn > sn) return false;
  let r = await sha256(concat(Uint8Array.of(0), leafBytes));
  for (const p of path) {
    if (sn === 0n) return false;
    if ((fn & 1n) === 1n || fn === sn) {
      r = await sha256(concat(Uint8Array.of(1), p, r));
      if ((fn & 1n) === 0n) {
        while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
      }
    } else {
      r = await sha256(concat(Uint8Array.of(1), r, p));
    }
    fn >>= 1n; sn >>= 1n;
  }
  return sn === 0n && equal(r, root);
}

// A protobuf message's fields: [number, wire type, value] (value: BigInt
// for varints, bytes for length-delimited).
function fields(bytes) {
  const out = [];
  let at = 0;
  const varint = () => {
    let v = 0n, shift = 0n;
    for (;;) {
      if (at >= bytes.length) throw new Error("truncated");
      const b = bytes[at++];
      v |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
      shift += 7n;
    }
  };
  while (at < bytes.length) {
    const tag = Number(varint());
    const [num, wt] = [tag >> 3, tag & 7];
    if (wt === 0) out.push([num, wt, varint()]);
    else if (wt === 2) { const n = Number(varint()); out.push([num, wt, bytes.slice(at, at + n)]); at += n; }
    else if (wt === 1) { out.push([num, wt, bytes.slice(at, at + 8)]); at += 8; }
    else if (wt === 5) { out.push([num, wt, bytes.slice(at, at + 4)]); at += 4; }
    else throw new Error("wire type " + wt);
  }
  return out;
}

// AuditEntry's fields by number; nested messages by their own maps.
const SCHEMA = {
  entry: { 1: "index", 2: ["time", "ts"], 3: "node", 4: "kind", 5: ["principal", "principal"], 6: "method", 7: "dataset", 8: "operation", 9: "purpose", 10: "case_id", 11: ["query", "query"], 12: "decision", 13: "reason_code", 14: "message", 15: "grants_used", 16: "keys_returned", 17: "keys_out_of_scope", 18: ["fields", "field"], 19: "record_count", 20: ["change", "change"], 21: "prev_leaf_hash", 22: ["withdrawn", "field"], 23: ["disclosed_after", "ts"], 24: ["generation", "generation"] },
  ts: { 1: "seconds", 2: "nanos" },
  principal: { 1: "department", 2: "client_id", 3: "operator", 4: "token_id", 5: "cert_thumbprint", 6: "peer_address", 7: "roles" },
  query: { 1: "keys", 2: "region", 3: "filter", 4: "page_token", 5: "page_size" },
  field: { 1: "field", 2: "view" },
  change: { 1: "object", 2: "object_id", 3: "before_json", 4: "after_json" },
  generation: { 1: "number", 2: "origin", 3: "predecessor_origin", 4: "size", 5: "root", 6: "lost", 7: "started_by", 8: "reason" },
};
const BINARY = new Set(["prev_leaf_hash", "root"]);

function decode(bytes, schema, prefix, rows) {
  for (const [num, wt, v] of fields(bytes)) {
    const spec = SCHEMA[schema][num];
    if (spec === undefined) { rows.push([prefix + "#" + num, String(v)]); continue; }
    if (Array.isArray(spec)) { decode(v, spec[1], prefix + spec[0] + ".", rows); continue; }
    const name = prefix + spec;
    if (wt === 0) rows.push([name, v.toString()]);
    else if (BINARY.has(spec)) rows.push([name, btoa(String.fromCharCode(...v))]);
    else rows.push([name, new TextDecoder("utf-8", { fatal: true }).decode(v)]);
  }
  return rows;
}

function item(list, ok, text) {
  const li = document.createElement("li");
  li.textContent = (ok ? "\u2713 " : "\u2717 ") + text;
  li.dataset.ok = ok ? "yes" : "no";
  list.appendChild(li);
  return ok;
}

async function proveEntry(island) {
  const d = JSON.parse(island.textContent);
  const t = TEXT[d.lang] || TEXT.en;
  const verdict = document.getElementById("verdict");
  const checks = document.getElementById("checks");
  const table = document.getElementById("verified-fields");
  let ok = true;
  try {
    const bytes = b64(d.entry);
    for (const [k, v] of decode(bytes, "entry", "", [])) {
      const tr = table.insertRow();
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = k;
      tr.appendChild(th);
      tr.insertCell().textContent = v;
    }
    const decodedIndex = decode(bytes, "entry", "", []).find(([k]) => k === "index");
    ok = item(checks, (decodedIndex ? BigInt(decodedIndex[1]) : 0n) === BigInt(d.index), t.index) && ok;
    // The log key and the witnesses' keys are pinned in this browser on
    // first use: the server that is being checked must not choose them
    // afresh each time (a change is an alarm, not a new pin).
    const { pub } = parseKey(d.log_key, 0x01);
    const pins = JSON.stringify({ log: btoa(String.fromCharCode(...pub)), witnesses: [...d.witnesses].sort() });
    const stored = localStorage.getItem("govshare.pinned-keys");
    if (stored === null) {
      localStorage.setItem("govshare.pinned-keys", pins);
      item(checks, true, t.pinnedNow);
    } else {
      ok = item(checks, stored === pins, stored === pins ? t.pinned : t.changed) && ok;
    }
    const leaf = await sha256(concat(Uint8Array.of(0), bytes));
    const receipt = table.insertRow(0);
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = "leaf_hash";
    receipt.appendChild(th);
    receipt.insertCell().textContent = btoa(String.fromCharCode(...leaf));
    const note = parseNote(d.note);
    ok = item(checks, await logSigned(note, pub), t.sig) && ok;
    // Without a witness the gateway alone vouches for its checkpoint, and
    // it holds the key that signs it: nothing is proven to a reader.
    if (d.witnesses.length === 0) ok = item(checks, false, t.unwitnessed) && ok;
    for (const w of d.witnesses) {
      ok = item(checks, await cosigned(note, w), t.cosig + w.split("+")[0]) && ok;
    }
    if (BigInt(d.index) >= note.size) {
      ok = item(checks, false, t.uncovered) && ok;
    } else {
      const path = d.proof.map(b64);
      ok = item(checks, await included(bytes, d.index, note.size, path, note.root), t.inclusion) && ok;
    }
  } catch (e) {
    ok = item(checks, false, String(e)) && false;
  }
  verdict.textContent = ok ? t.proven : t.refused + [...checks.querySelectorAll("[data-ok=no]")].map((li) => li.textContent.slice(2)).join("; ");
  verdict.dataset.state = ok ? "proven" : "refused";
}

function followLive(table) {
  const dept = table.dataset.dept || "";
  const source = new EventSource("/live/events" + (dept ? "?dept=" + encodeURIComponent(dept) : ""));
  source.onmessage = (ev) => {
    table.querySelector("tr").insertAdjacentHTML("afterend", ev.data);
  };
}

document.addEventListener("DOMContentLoaded", () => {
  const island = document.getElementById("proof-data");
  if (island) proveEntry(island);
  const live = document.getElementById("live");
  if (live) followLive(live);
});
