#!/usr/bin/env python3
"""Helpers for bench/run.sh (stdlib only).

Subcommands:
  freeport                         print a free 127.0.0.1 TCP port
  mklayout DIR TAG --layers N --layer-bytes B [--files-per-layer F]
                                   write an OCI image layout with N random
                                   tar+gzip layers (gzip level 0: valid gzip,
                                   so skopeo does not recompress on push, and
                                   cheap to make); prints the layer digests
  populate BASE REPO NTAGS         push one small image and tag it NTAGS times
                                   (tag-0000 ...); prints JSON with digests
  loadparse wrk|hey FILE           load generator output -> JSON
  report SAMPLES OUT.md            samples TSV -> markdown report
"""

import gzip  # noqa: F401  (documents the format; zlib does the work)
import hashlib
import http.client
import io
import json
import os
import re
import socket
import statistics
import sys
import tarfile
import time
import urllib.parse
import zlib

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"


# --------------------------------------------------------------------------- #
def freeport():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


# --------------------------------------------------------------------------- #
class RandomReader:
    """File-like object returning fresh random bytes (for tarfile.addfile)."""

    def read(self, n=-1):
        return os.urandom(n if n and n > 0 else 1 << 20)


class GzBlobWriter:
    """Write side of a tar stream: hashes the uncompressed bytes (diff_id),
    deflates at level 0 into a gzip member, hashes the compressed bytes
    (digest) and writes them to a file."""

    def __init__(self, path):
        self.f = open(path, "wb")
        self.diff = hashlib.sha256()
        self.dig = hashlib.sha256()
        self.z = zlib.compressobj(0, zlib.DEFLATED, 31)  # 31 = gzip wrapper
        self.size = 0

    def _out(self, b):
        if b:
            self.dig.update(b)
            self.f.write(b)
            self.size += len(b)

    def write(self, b):
        self.diff.update(b)
        self._out(self.z.compress(b))
        return len(b)

    def close(self):
        self._out(self.z.flush())
        self.f.close()


def write_blob(blobdir, data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobdir, d), "wb") as f:
        f.write(data)
    return "sha256:" + d, len(data)


def mklayout(argv):
    import argparse

    ap = argparse.ArgumentParser(prog="mklayout")
    ap.add_argument("dir")
    ap.add_argument("tag")
    ap.add_argument("--layers", type=int, required=True)
    ap.add_argument("--layer-bytes", type=int, required=True)
    ap.add_argument("--files-per-layer", type=int, default=1)
    a = ap.parse_args(argv)

    blobdir = os.path.join(a.dir, "blobs", "sha256")
    os.makedirs(blobdir, exist_ok=True)
    layers, diff_ids = [], []
    mtime = int(time.time())
    for i in range(a.layers):
        tmp = os.path.join(blobdir, f".layer{i}.tmp")
        w = GzBlobWriter(tmp)
        with tarfile.open(fileobj=w, mode="w|", format=tarfile.PAX_FORMAT) as tf:
            d = tarfile.TarInfo(f"layer{i:03d}")
            d.type = tarfile.DIRTYPE
            d.mode = 0o755
            d.mtime = mtime
            tf.addfile(d)
            per = a.layer_bytes // a.files_per_layer
            for j in range(a.files_per_layer):
                size = per if j < a.files_per_layer - 1 else a.layer_bytes - per * j
                ti = tarfile.TarInfo(f"layer{i:03d}/file{j:03d}.bin")
                ti.size = size
                ti.mode = 0o644
                ti.mtime = mtime
                tf.addfile(ti, RandomReader())
        w.close()
        digest = "sha256:" + w.dig.hexdigest()
        os.rename(tmp, os.path.join(blobdir, w.dig.hexdigest()))
        layers.append({"mediaType": OCI_LAYER_GZ, "digest": digest, "size": w.size})
        diff_ids.append("sha256:" + w.diff.hexdigest())

    config = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime)),
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Labels": {"bench.nonce": os.urandom(8).hex()}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"bench layer {i}"} for i in range(a.layers)],
    }
    cdig, csize = write_blob(blobdir, json.dumps(config, separators=(",", ":")).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cdig, "size": csize},
        "layers": layers,
    }
    mdig, msize = write_blob(blobdir, json.dumps(manifest, separators=(",", ":")).encode())
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": mdig, "size": msize,
            "annotations": {"org.opencontainers.image.ref.name": a.tag},
        }],
    }
    with open(os.path.join(a.dir, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(a.dir, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    print(json.dumps({"manifest": mdig, "config": cdig,
                      "layers": [l["digest"] for l in layers]}))


# --------------------------------------------------------------------------- #
class Registry:
    def __init__(self, base):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port or 80
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def req(self, method, path, body=None, headers=None, expect=None):
        h = dict(headers or {})
        if body is not None:
            h.setdefault("Content-Length", str(len(body)))
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body, headers=h)
                r = self.conn.getresponse()
                data = r.read()
                break
            except (http.client.HTTPException, ConnectionError):
                if attempt:
                    raise
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        if expect and r.status not in expect:
            raise SystemExit(f"populate: {method} {path} -> {r.status} "
                             f"(want {expect}): {data[:300]!r}")
        return r, data

    def path_of(self, location):
        u = urllib.parse.urlsplit(location)
        return u.path + ("?" + u.query if u.query else "")

    def push_blob(self, repo, data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r, _ = self.req("HEAD", f"/v2/{repo}/blobs/{digest}")
        if r.status == 200:
            return digest, len(data)
        r, _ = self.req("POST", f"/v2/{repo}/blobs/uploads/", body=b"", expect=(202,))
        p = self.path_of(r.getheader("Location"))
        p += ("&" if "?" in p else "?") + "digest=" + digest
        self.req("PUT", p, body=data,
                 headers={"Content-Type": "application/octet-stream"}, expect=(201,))
        return digest, len(data)


def populate(base, repo, ntags):
    reg = Registry(base)
    # A small real-looking image: one 256 KiB random layer.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("hello.bin")
        ti.size = 256 << 10
        tf.addfile(ti, io.BytesIO(os.urandom(ti.size)))
    raw = buf.getvalue()
    layer = gzip_level0(raw)
    ldig, lsize = reg.push_blob(repo, layer)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]},
    }).encode()
    cdig, csize = reg.push_blob(repo, config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cdig, "size": csize},
        "layers": [{"mediaType": OCI_LAYER_GZ, "digest": ldig, "size": lsize}],
    }).encode()
    mdig = "sha256:" + hashlib.sha256(manifest).hexdigest()
    t0 = time.time()
    for i in range(ntags):
        r, _ = reg.req("PUT", f"/v2/{repo}/manifests/tag-{i:04d}", body=manifest,
                       headers={"Content-Type": OCI_MANIFEST}, expect=(201,))
        got = r.getheader("Docker-Content-Digest")
        if got and got != mdig:
            raise SystemExit(f"populate: manifest PUT returned digest {got}, want {mdig}")
    print(json.dumps({"layer": ldig, "layer_size": lsize, "config": cdig,
                      "manifest": mdig, "tag_put_seconds": round(time.time() - t0, 3)}))


def gzip_level0(raw):
    z = zlib.compressobj(0, zlib.DEFLATED, 31)
    return z.compress(raw) + z.flush()


# --------------------------------------------------------------------------- #
def to_ms(s):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", s)
    if not m:
        return None
    v = float(m.group(1))
    return v * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]


def loadparse(tool, path):
    """wrk --latency or hey output -> JSON {rps, p50_ms, p99_ms, requests, bad, detail}."""
    txt = open(path).read()
    out = {"rps": None, "p50_ms": None, "p99_ms": None, "requests": 0, "bad": 0, "detail": ""}
    m = re.search(r"Requests/sec:\s+([\d.]+)", txt)
    if m:
        out["rps"] = float(m.group(1))
    detail = []
    if tool == "wrk":
        m = re.search(r"(\d+) requests in", txt)
        if m:
            out["requests"] = int(m.group(1))
        for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
            m = re.search(r"^\s+" + pct + r"%\s+(\S+)", txt, re.M)
            if m:
                out[key] = to_ms(m.group(1))
        m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", txt)
        if m:
            out["bad"] += int(m.group(1))
            detail.append(f"{m.group(1)} non-2xx/3xx")
        m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", txt)
        if m:
            n = sum(int(x) for x in m.groups())
            out["bad"] += n
            detail.append("socket errors: " + m.group(0).split(": ", 1)[1])
        if out["requests"] == 0:
            out["rps"] = None
    else:  # hey
        for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
            m = re.search(r"^\s+" + pct + r"% in ([\d.]+) secs", txt, re.M)
            if m:
                out[key] = float(m.group(1)) * 1e3
        total = 0
        sec = re.search(r"Status code distribution:\n((?:\s+\[\d+\]\s+\d+ responses\n?)+)", txt)
        if sec:
            for code, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", sec.group(1)):
                total += int(n)
                if not code.startswith("2"):
                    out["bad"] += int(n)
                    detail.append(f"{n} × HTTP {code}")
        sec = re.search(r"Error distribution:\n((?:\s+\[\d+\].*\n?)+)", txt)
        if sec:
            for n, msg in re.findall(r"\[(\d+)\]\s+(.*)", sec.group(1)):
                total += int(n)
                out["bad"] += int(n)
                detail.append(f"{n} × {msg.strip()[:120]}")
        out["requests"] = total
        if total == 0:
            out["rps"] = None
    if out["rps"] is not None and out["requests"] and out["bad"] == out["requests"]:
        out["rps"] = None  # nothing but errors: no rate to report
    out["detail"] = "; ".join(detail)
    for k in ("rps", "p50_ms", "p99_ms"):
        if out[k] is not None:
            out[k] = round(out[k], 3)
    print(json.dumps(out))


# --------------------------------------------------------------------------- #
# Report. SAMPLES is a TSV: kind<TAB>key<TAB>registry<TAB>value
#   kind "s": one sample of metric key for registry (value numeric or ERR)
#   kind "i": info key for registry ("-" for global)
#   kind "n": a note line (value)

METRICS = [
    # key, label, unit, higher_is_better, target ratio description, target check
    ("upload_mono", "Blob upload, monolithic (POST + one PUT)", "MB/s", True, "≥ 2×", lambda r: r >= 2),
    ("upload_chunked", "Blob upload, chunked (PATCH × {chunk} MiB + PUT)", "MB/s", True, "≥ 2×", lambda r: r >= 2),
    ("upload_chunked_close", "… of which the closing PUT (empty body)", "s", False, "", None),
    ("download", "Blob download (GET)", "MB/s", True, "≥ 1×", lambda r: r >= 1),
    ("skopeo_push_big", "skopeo push, 1 layer × {blob} MiB", "s", False, "", None),
    ("skopeo_pull_big", "skopeo pull, 1 layer × {blob} MiB", "s", False, "", None),
    ("skopeo_push_many", "skopeo push, {layers} layers ({many_mib} MiB)", "s", False, "", None),
    ("skopeo_pull_many", "skopeo pull, {layers} layers ({many_mib} MiB)", "s", False, "", None),
    ("manifest_put_all", "Manifest PUT × {ntags} tags (sequential, one connection)", "s", False, "", None),
    ("manifest_get_rps", "Manifest GET by tag", "req/s", True, "≥ 5×", lambda r: r >= 5),
    ("manifest_get_p50", "Manifest GET p50", "ms", False, "", None),
    ("manifest_get_p99", "Manifest GET p99", "ms", False, "", None),
    ("blob_head_rps", "Blob HEAD", "req/s", True, "", None),
    ("blob_head_p50", "Blob HEAD p50", "ms", False, "", None),
    ("blob_head_p99", "Blob HEAD p99", "ms", False, "", None),
    ("tags_list_rps", "tags/list ({ntags} tags)", "req/s", True, "≥ 5×", lambda r: r >= 5),
    ("tags_list_p50", "tags/list p50", "ms", False, "", None),
    ("tags_list_p99", "tags/list p99", "ms", False, "", None),
    ("manifest_get_noauth_rps", "Manifest GET by tag, auth off (repeat, just before ↓)", "req/s", True, "", None),
    ("manifest_get_auth_rps", "Manifest GET by tag, auth on (bearer token)", "req/s", True, "", None),
    ("manifest_get_auth_p50", "Manifest GET, auth on, p50", "ms", False, "", None),
    ("manifest_get_auth_p99", "Manifest GET, auth on, p99", "ms", False, "", None),
    ("rss_idle", "Server RSS, idle (VmRSS after start)", "MiB", False, "", None),
    ("rss_peak", "Server RSS, peak (VmHWM at end)", "MiB", False, "< 1×", lambda r: r < 1),
]


def fmt(v):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def report(samples_path, out_path):
    samples, info, notes = {}, {}, []
    for line in open(samples_path):
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 4:
            continue
        kind, key, reg, val = parts[0], parts[1], parts[2], "\t".join(parts[3:])
        if kind == "s":
            samples.setdefault((key, reg), []).append(val)
        elif kind == "i":
            info[(key, reg)] = val
        elif kind == "n":
            notes.append(val)

    def g(k, reg="-", d=""):
        return info.get((k, reg), d)

    berth_label = g("berth_label", "-", "berth")
    subst = {"chunk": g("chunk_mib"), "blob": g("blob_mib"), "layers": g("layers"),
             "many_mib": g("many_mib"), "ntags": g("ntags")}

    def summary(key, reg):
        vals = samples.get((key, reg), [])
        nums = []
        for v in vals:
            try:
                nums.append(float(v))
            except ValueError:
                pass
        if not vals:
            return None, ""
        if not nums:
            return "ERR", f"{len(vals)}/{len(vals)} failed"
        med = statistics.median(nums)
        extra = "" if len(nums) == len(vals) else f"{len(vals) - len(nums)}/{len(vals)} failed"
        return med, extra

    L = []
    L.append(f"## berth vs reference registry — {g('date')}")
    L.append("")
    L.append(f"Machine: {g('machine')}. Work dir: {g('workdir_fs')}.  ")
    L.append(f"berth: `{g('berth_version')}`; reference: `{g('ref_version')}`.  ")
    L.append(f"Blob {g('blob_mib')} MiB random, chunk {g('chunk_mib')} MiB, {g('runs')} runs "
             f"(median shown); wrk {g('wrk_duration')} × {g('wrk_conns')} connections, {g('wrk_pin')}.  ")
    L.append(f"CPU busy before start: {g('busy_start', '-', '?')}%; CPU used by other processes during the run: "
             f"{g('foreign_cpu', '-', '?')}.  ")
    L.append("Ratio = berth / reference; ↑ = higher is better, ↓ = lower is better. MB = 10⁶ bytes. "
             "Uploads are timed from the POST to the 201: berth fsyncs the blob before answering, "
             "the reference does not (its data is still in the page cache).")
    L.append("")
    L.append(f"| metric | unit | {berth_label} | reference | ratio (berth/ref) | better | target | met |")
    L.append("|---|---|---:|---:|---:|:-:|:-:|:-:|")
    for key, label, unit, hib, tdesc, tcheck in METRICS:
        b, bx = summary(key, "berth")
        r, rx = summary(key, "ref")
        if b is None and r is None:
            continue
        ratio = None
        if isinstance(b, float) and isinstance(r, float) and r > 0:
            ratio = b / r
        met = ""
        if tcheck and ratio is not None:
            met = "✅" if tcheck(ratio) else "❌"
        elif tcheck:
            met = "❌"
        bs = fmt(b) + (f" ({bx})" if bx else "")
        rs = fmt(r) + (f" ({rx})" if rx else "")
        L.append(f"| {label.format(**subst)} | {unit} | {bs} | {rs} | "
                 f"{(fmt(ratio) + '×') if ratio is not None else '—'} | {'↑' if hib else '↓'} | {tdesc} | {met} |")
    # berth's own cost of token authentication: the same manifest GET load, back to back,
    # without (--no-auth) and with a bearer token. Target: within 10 %.
    off, _ = summary("manifest_get_noauth_rps", "berth")
    on, _ = summary("manifest_get_auth_rps", "berth")
    if off is not None or on is not None:
        L.append("")
        L.append("Authentication overhead (berth, manifest GET by tag, same load back to back):")
        L.append("")
        L.append("| auth off (req/s) | auth on, bearer token (req/s) | on / off | target | met |")
        L.append("|---:|---:|---:|:-:|:-:|")
        ok = isinstance(off, float) and isinstance(on, float) and off > 0
        ratio = on / off if ok else None
        met = ("✅" if ratio >= 0.9 else "❌") if ratio is not None else "❌"
        L.append(f"| {fmt(off)} | {fmt(on)} | {(fmt(ratio) + '×') if ratio is not None else '—'} | ≥ 0.90× | {met} |")
    L.append("")
    L.append("Machine limits (this box):")
    L.append("")
    L.append("| limit | value |")
    L.append("|---|---:|")
    for k, lbl in (("sha256_MBps", "sha256 single core (Rust `sha2` 0.11)"),
                   ("durable_write_MBps", "durable write (1 GiB + fsync, work dir)")):
        v = g(k)
        L.append(f"| {lbl} | {v + ' MB/s' if v else 'not measured'} |")
    L.append("")
    L.append("<details><summary>raw samples</summary>")
    L.append("")
    L.append(f"| metric | {berth_label} | reference |")
    L.append("|---|---|---|")
    for key, *_ in METRICS:
        bv = samples.get((key, "berth"))
        rv = samples.get((key, "ref"))
        if bv or rv:
            L.append(f"| {key} | {', '.join(fmt_raw(x) for x in bv or [])} | "
                     f"{', '.join(fmt_raw(x) for x in rv or [])} |")
    L.append("")
    L.append("</details>")
    if notes:
        L.append("")
        L.append("Notes:")
        L.append("")
        for n in notes:
            L.append(f"- {n}")
    text = "\n".join(L) + "\n"
    with open(out_path, "w") as f:
        f.write(text)
    sys.stdout.write(text)


def fmt_raw(x):
    try:
        return fmt(float(x))
    except ValueError:
        return x


# --------------------------------------------------------------------------- #
def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "freeport":
        freeport()
    elif cmd == "mklayout":
        mklayout(args)
    elif cmd == "populate":
        populate(args[0], args[1], int(args[2]))
    elif cmd == "loadparse":
        loadparse(args[0], args[1])
    elif cmd == "report":
        report(args[0], args[1])
    else:
        raise SystemExit(f"unknown subcommand {cmd}\n{__doc__}")


if __name__ == "__main__":
    main()
