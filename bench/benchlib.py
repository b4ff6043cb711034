#!/usr/bin/env python3
"""Helpers for bench/run.sh and bench/scale.sh (stdlib only).

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
  garbage BASE REPO N OUT [--threads T] [--bytes B]
                                   upload N random blobs no manifest references
                                   (monolithic POST + PUT); their digests to OUT
  sweep BASE...                    POST /api/v1/gc/sweep to every BASE at once;
                                   prints JSON: wall seconds, each sweep's counts
  gcload BASE REPO IMAGES BLOBS [--threads T] [--untag]
                                   push IMAGES images of BLOBS small unique blobs
                                   each (config + layers), then delete every
                                   manifest (or tag): garbage for one sweep
  pushlat BASE REPO STOPFILE [--min-pushes N]
                                   push small unique images one after another
                                   until STOPFILE is gone (and at least N were
                                   pushed); JSON latency percentiles (ms)
  headall BASE REPO FILE           HEAD every digest in FILE; JSON status counts
  tagcount BASE REPO               tags in REPO, following tags/list's Link pages
  scalereport SAMPLES OUT.md [BASELINE.md]
                                   scale.sh samples -> markdown table
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
            raise SystemExit(f"{method} {path} -> {r.status} "
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
                      "config_size": csize, "manifest": mdig, "tag_put_seconds": round(time.time() - t0, 3)}))


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
        # bench/scale.sh's manifest PUT script counts every answer but 201 itself
        # (a superset of wrk's non-2xx/3xx count, which it replaces).
        m201 = re.search(r"Non-201 responses:\s+(\d+)", txt)
        if m201:
            out["non201"] = int(m201.group(1))
            out["bad"] += int(m201.group(1))
            if int(m201.group(1)):
                detail.append(f"{m201.group(1)} answers other than 201")
        elif m:
            out["bad"] += int(m.group(1))
            detail.append(f"{m.group(1)} non-2xx/3xx")
        m = re.search(r"PUTs sent:\s+(\d+)", txt)
        if m:
            out["sent"] = int(m.group(1))
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
    ("upload_mono", "Blob upload, monolithic (POST + one PUT)", "MB/s", True, "≥ 3×", lambda r: r >= 3),
    ("upload_mono_cpu", "… server CPU per GB uploaded", "CPU-s/GB", False, "", None),
    ("upload_again", "The same blob again, to another repository (monolithic)", "MB/s", True, "", None),
    ("upload_again_cpu", "… server CPU per GB uploaded", "CPU-s/GB", False, "", None),
    ("upload_chunked", "Blob upload, chunked (PATCH × {chunk} MiB + PUT)", "MB/s", True, "≥ 3×", lambda r: r >= 3),
    ("upload_chunked_close", "… of which the closing PUT (empty body)", "s", False, "", None),
    ("download_first", "Blob download, first GET right after the upload", "MB/s", True, "≥ 2×", lambda r: r >= 2),
    ("download", "Blob download (GET, warm)", "MB/s", True, "≥ 2×", lambda r: r >= 2),
    ("download_range", "Blob download, ranged GET (half the blob, unaligned offset)", "MB/s", True, "≥ 2×", lambda r: r >= 2),
    ("download_tls", "Blob download over TLS (GET, warm)", "MB/s", True, "≥ 2×", lambda r: r >= 2),
    ("download_redirect", "Blob download through a presigned redirect (GET → 307 → S3, both redirecting)", "MB/s", True, "", None),
    ("skopeo_push_big", "skopeo push, 1 layer × {blob} MiB", "s", False, "", None),
    ("skopeo_pull_big", "skopeo pull, 1 layer × {blob} MiB", "s", False, "", None),
    ("skopeo_push_many", "skopeo push, {layers} layers ({many_mib} MiB)", "s", False, "", None),
    ("skopeo_pull_many", "skopeo pull, {layers} layers ({many_mib} MiB)", "s", False, "", None),
    ("manifest_put_all", "Manifest PUT × {ntags} tags (sequential, one connection)", "s", False, "", None),
    ("manifest_get_rps", "Manifest GET by tag", "req/s", True, "≥ 10×", lambda r: r >= 10),
    ("manifest_get_p50", "Manifest GET p50", "ms", False, "", None),
    ("manifest_get_p99", "Manifest GET p99", "ms", False, "", None),
    ("blob_head_rps", "Blob HEAD", "req/s", True, "≥ 15×", lambda r: r >= 15),
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

    storage = g('storage', '-', 'filesystem')
    metrics = METRICS
    if storage.startswith("S3"):
        # Issue 15's targets on object storage.
        s3_targets = {
            "download": ("≥ 1.5×", lambda r: r >= 1.5),
            "rss_peak": ("≤ 0.5×", lambda r: r <= 0.5),
        }
        metrics = [
            (k, l, u, h, *s3_targets[k]) if k in s3_targets else (k, l, u, h, t, c)
            for k, l, u, h, t, c in METRICS
        ]
    L = []
    L.append(f"## berth vs reference registry — {g('date')}")
    L.append("")
    L.append(f"Machine: {g('machine')}. Work dir: {g('workdir_fs')}. Blob storage: {storage}.  ")
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
    for key, label, unit, hib, tdesc, tcheck in metrics:
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
    # Issue 15 allows its download target through redirects: berth redirecting beside the
    # reference as it is measured above (serving blobs itself) and as it is by default.
    b_redir, _ = summary("download_redirect", "berth")
    r_redir, _ = summary("download_redirect", "ref")
    r_proxy, _ = summary("download", "ref")
    if isinstance(b_redir, float) and isinstance(r_proxy, float) and r_proxy > 0:
        L.append("")
        L.append("Download through redirects (issue 15: \"at least 1.5×, or through redirects\"):")
        L.append("")
        L.append("| berth redirecting (MB/s) | reference serving (MB/s) | ratio | target | met "
                 "| reference redirecting (MB/s) | ratio |")
        L.append("|---:|---:|---:|:-:|:-:|---:|---:|")
        ratio = b_redir / r_proxy
        both = (f"{fmt(r_redir)} | {fmt(b_redir / r_redir)}×"
                if isinstance(r_redir, float) and r_redir > 0 else "— | —")
        L.append(f"| {fmt(b_redir)} | {fmt(r_proxy)} | {fmt(ratio)}× | ≥ 1.5× | "
                 f"{'✅' if ratio >= 1.5 else '❌'} | {both} |")
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
                   ("durable_write_MBps", "durable write (1 GiB + fsync, work dir)"),
                   ("loopback_tcp_MBps", "loopback TCP, one stream (4 GiB from memory, 1 MiB reads)")):
        v = g(k)
        L.append(f"| {lbl} | {v + ' MB/s' if v else 'not measured'} |")
    # Issue 17's targets against the machine: berth beside the limit, in one run.
    def limit(k):
        try:
            return float(g(k))
        except ValueError:
            return None
    tcp, disk = limit("loopback_tcp_MBps"), limit("durable_write_MBps")
    rows = []
    for key, what in (("download_first", "first GET after the upload"), ("download", "warm GET"),
                      ("download_range", "ranged GET"), ("download_tls", "GET over TLS")):
        b, _ = summary(key, "berth")
        if isinstance(b, float) and tcp:
            rows.append((f"Blob download, {what}: ≥ 60 % of loopback TCP", f"{fmt(b)} MB/s",
                         f"{fmt(b / tcp * 100)} % of {fmt(tcp)} MB/s", b >= 0.6 * tcp))
    b, _ = summary("upload_mono", "berth")
    if isinstance(b, float) and disk:
        rows.append(("Blob upload, monolithic: ≥ 90 % of durable write", f"{fmt(b)} MB/s",
                     f"{fmt(b / disk * 100)} % of {fmt(disk)} MB/s", b >= 0.9 * disk))
    for key, what in (("upload_mono_cpu", "monolithic upload"), ("upload_again_cpu", "the same blob again")):
        c, _ = summary(key, "berth")
        if isinstance(c, float):
            rows.append((f"Server CPU, {what}: ≤ 1.0 CPU-s/GB", f"{fmt(c)} CPU-s/GB", "", c <= 1.0))
    if rows:
        L.append("")
        L.append("Targets against the machine (issue 17), berth:")
        L.append("")
        L.append("| target | berth | against the limit | met |")
        L.append("|---|---:|---:|:-:|")
        for what, val, against, ok in rows:
            L.append(f"| {what} | {val} | {against} | {'✅' if ok else '❌'} |")
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
# bench/scale.sh: garbage for the GC sweep rate, sweeps, checks, its report.

def _conn(base, timeout=60):
    u = urllib.parse.urlsplit(base)
    return http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)


def garbage(argv):
    """Uploads N random blobs (POST, then one PUT ?digest=) that no manifest
    references: after the review delay (scale.sh sets 0s) the next sweep
    deletes them. T threads, each on its own keep-alive connection."""
    import argparse
    import threading

    ap = argparse.ArgumentParser(prog="garbage")
    ap.add_argument("base")
    ap.add_argument("repo")
    ap.add_argument("n", type=int)
    ap.add_argument("out")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--bytes", type=int, default=4096)
    a = ap.parse_args(argv)
    todo = list(range(a.n))
    lock = threading.Lock()
    digests, errors = [], []

    def worker():
        reg = Registry(a.base)
        while True:
            with lock:
                if not todo or errors:
                    return
                todo.pop()
            data = os.urandom(a.bytes)
            d = "sha256:" + hashlib.sha256(data).hexdigest()
            try:
                r, _ = reg.req("POST", f"/v2/{a.repo}/blobs/uploads/", body=b"", expect=(202,))
                p = reg.path_of(r.getheader("Location"))
                p += ("&" if "?" in p else "?") + "digest=" + d
                reg.req("PUT", p, body=data,
                        headers={"Content-Type": "application/octet-stream"}, expect=(201,))
            except BaseException as e:  # SystemExit from req, or a socket error
                with lock:
                    errors.append(f"{e}")
                return
            with lock:
                digests.append(d)

    t0 = time.monotonic()
    ts = [threading.Thread(target=worker) for _ in range(max(1, a.threads))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    secs = time.monotonic() - t0
    with open(a.out, "w") as f:
        f.write("".join(d + "\n" for d in digests))
    print(json.dumps({"uploaded": len(digests), "seconds": round(secs, 3),
                      "errors": errors[:5]}))
    if errors:
        sys.exit(1)


def sweep(bases):
    """POSTs /api/v1/gc/sweep to every base at the same moment (connections
    opened first, then released together); wall time from the first request
    sent to the last answer read."""
    import threading

    res = [None] * len(bases)
    barrier = threading.Barrier(len(bases))

    def one(i, base):
        c = _conn(base, timeout=1800)
        c.connect()
        barrier.wait()
        t0 = time.monotonic()
        try:
            c.request("POST", "/api/v1/gc/sweep", body=b"", headers={"Content-Length": "0"})
            r = c.getresponse()
            body = r.read()
            status = r.status
        except (OSError, http.client.HTTPException) as e:
            body, status = str(e).encode(), 0
        t1 = time.monotonic()
        try:
            counts = json.loads(body) if status == 200 else None
        except ValueError:
            counts = None
        res[i] = {"base": base, "status": status, "t0": t0, "t1": t1,
                  "seconds": round(t1 - t0, 3), "counts": counts,
                  "body": None if counts else body[:300].decode(errors="replace")}

    ts = [threading.Thread(target=one, args=(i, b)) for i, b in enumerate(bases)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = max(r["t1"] for r in res) - min(r["t0"] for r in res)
    total = lambda k: sum((r["counts"] or {}).get(k, 0) for r in res)
    for r in res:
        del r["t0"], r["t1"]
    print(json.dumps({"seconds": round(wall, 4), "ok": all(r["status"] == 200 for r in res),
                      "blobs_deleted": total("blobs_deleted"),
                      "blob_reviews": total("blob_reviews"),
                      "manifests_deleted": total("manifests_deleted"), "sweeps": res}))


OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _push_image(reg, repo, tag, blobs):
    """Monolithic POST ?digest= per blob (POST then PUT where a registry has
    no monolithic POST), then the manifest: its digest."""
    descs = []
    for data in blobs:
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        r, _ = reg.req("POST", f"/v2/{repo}/blobs/uploads/?digest={d}", body=data,
                       headers={"Content-Type": "application/octet-stream"}, expect=(201, 202))
        if r.status == 202:  # no monolithic POST (distribution 2.8): PUT the body
            p = reg.path_of(r.getheader("Location"))
            p += ("&" if "?" in p else "?") + "digest=" + d
            reg.req("PUT", p, body=data,
                    headers={"Content-Type": "application/octet-stream"}, expect=(201,))
        descs.append({"mediaType": "application/octet-stream", "digest": d, "size": len(data)})
    m = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": dict(descs[0], mediaType="application/vnd.oci.image.config.v1+json"),
                    "layers": descs[1:]}).encode()
    reg.req("PUT", f"/v2/{repo}/manifests/{tag}", body=m,
            headers={"Content-Type": OCI_MANIFEST}, expect=(201,))
    return "sha256:" + hashlib.sha256(m).hexdigest()


def gcload(argv):
    """IMAGES images of BLOBS unique 256-byte blobs each, each in a repository
    of its own under REPO, pushed by T threads, then every manifest deleted by digest (or, --untag, every tag): with
    review delay 0 one sweep (--untag) reviews IMAGES manifests and
    IMAGES*BLOBS blobs and deletes them all."""
    import argparse
    import threading

    ap = argparse.ArgumentParser(prog="gcload")
    ap.add_argument("base")
    ap.add_argument("repo")
    ap.add_argument("images", type=int)
    ap.add_argument("blobs", type=int)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--untag", action="store_true",
                    help="delete the tags, not the manifests (the sweep deletes the manifests)")
    a = ap.parse_args(argv)
    todo = list(range(a.images))
    lock = threading.Lock()
    pushed, errors = [], []

    def worker(delete):
        reg = Registry(a.base)
        while True:
            with lock:
                if not todo or errors:
                    return
                n = todo.pop()
            try:
                if delete:
                    repo, ref = n
                    reg.req("DELETE", f"/v2/{repo}/manifests/{ref}", expect=(202,))
                else:
                    blobs = [os.urandom(256) for _ in range(a.blobs)]
                    # A repository per image: the reference's DELETE by
                    # digest reads every tag of the repository.
                    repo = f"{a.repo}/{n}"
                    d = _push_image(reg, repo, "gc", blobs)
                    with lock:
                        pushed.append((repo, "gc" if a.untag else d))
            except BaseException as e:  # SystemExit from req, or a socket error
                with lock:
                    errors.append(f"{e}")
                return

    def run(delete):
        ts = [threading.Thread(target=worker, args=(delete,)) for _ in range(max(1, a.threads))]
        t0 = time.monotonic()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return round(time.monotonic() - t0, 1)

    push_s = run(False)
    todo.extend(pushed)
    delete_s = run(True) if not errors else 0
    print(json.dumps({"images": len(pushed), "blobs": len(pushed) * a.blobs,
                      "push_seconds": push_s, "delete_seconds": delete_s,
                      "errors": errors[:5]}))
    if errors:
        sys.exit(1)


def pushlat(argv):
    """One client pushing small unique images (config + 1 layer + manifest,
    each blob one POST ?digest=) back to back until STOPFILE is removed and
    at least N were pushed: latency of each whole push, percentiles in ms."""
    import argparse

    ap = argparse.ArgumentParser(prog="pushlat")
    ap.add_argument("base")
    ap.add_argument("repo")
    ap.add_argument("stopfile")
    ap.add_argument("--min-pushes", type=int, default=50)
    a = ap.parse_args(argv)
    reg = Registry(a.base)
    lat = []
    n = 0
    while os.path.exists(a.stopfile) or len(lat) < a.min_pushes:
        blobs = [os.urandom(200), os.urandom(2000)]
        t0 = time.monotonic()
        _push_image(reg, a.repo, f"lat-{os.getpid()}-{n}", blobs)
        lat.append((time.monotonic() - t0) * 1000)
        n += 1
    lat.sort()
    pct = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 2)
    print(json.dumps({"pushes": len(lat), "p50_ms": pct(0.50), "p90_ms": pct(0.90),
                      "p99_ms": pct(0.99), "max_ms": round(lat[-1], 2)}))


def headall(base, repo, path):
    """HEAD /v2/REPO/blobs/<digest> for every digest in the file: status counts."""
    c = _conn(base)
    counts = {}
    for d in open(path).read().split():
        for attempt in range(2):
            try:
                c.request("HEAD", f"/v2/{repo}/blobs/{d}")
                r = c.getresponse()
                r.read()
                break
            except (OSError, http.client.HTTPException):
                if attempt:
                    raise
                c.close()
                c = _conn(base)
        counts[str(r.status)] = counts.get(str(r.status), 0) + 1
    print(json.dumps(counts))


def tagcount(base, repo):
    """Tags in a repository, following tags/list's Link header page by page."""
    c = _conn(base)
    path, n = f"/v2/{repo}/tags/list?n=10000", 0
    while path:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            raise SystemExit(f"GET {path} -> {r.status}: {body[:200]!r}")
        n += len(json.loads(body).get("tags") or [])
        m = re.search(r"<([^>]+)>\s*;\s*rel=\"?next", r.getheader("Link") or "")
        path = urllib.parse.urlsplit(m.group(1))._replace(scheme="", netloc="").geturl() if m else None
    print(n)


SCALE_COLS = [("ref", "distribution (reference)"), ("sqlite", "berth SQLite"),
              ("pg1", "berth PostgreSQL ×1"), ("pg3", "berth PostgreSQL ×3 + haproxy")]
PG_COLS = ("pg1", "pg3")
SCALE_METRICS = [
    # key, label, unit, higher_is_better, target text, target check on the ratio to the reference
    ("manifest_get_rps", "Manifest GET by tag", "req/s", True, "PG ≥ 5×", lambda r: r >= 5),
    ("manifest_get_p50", "Manifest GET p50", "ms", False, "", None),
    ("manifest_get_p99", "Manifest GET p99", "ms", False, "", None),
    ("tags_list_rps", "tags/list ({ntags} tags)", "req/s", True, "PG ≥ 5×", lambda r: r >= 5),
    ("tags_list_p50", "tags/list p50", "ms", False, "", None),
    ("tags_list_p99", "tags/list p99", "ms", False, "", None),
    ("blob_head_rps", "Blob HEAD", "req/s", True, "", None),
    ("blob_head_p50", "Blob HEAD p50", "ms", False, "", None),
    ("blob_head_p99", "Blob HEAD p99", "ms", False, "", None),
    ("manifest_put_rps", "Manifest PUT (distinct manifest and tag each, all 201)", "req/s", True,
     "PG ≥ 3×", lambda r: r >= 3),
    ("manifest_put_p50", "Manifest PUT p50", "ms", False, "", None),
    ("manifest_put_p99", "Manifest PUT p99", "ms", False, "", None),
    ("gc1_rate", "GC, 1 sweeper: {gc_blobs} unreferenced blobs ¹", "blobs/s", True, "", None),
    ("gc3_rate", "GC, 3 sweepers at once (one per replica): {gc_blobs} blobs", "blobs/s", True, "", None),
]
# What "before" is for the SQLite column: run.sh's own keys in the baseline results.md.
SQLITE_BEFORE = [("manifest_get_rps", "Manifest GET by tag"), ("tags_list_rps", "tags/list"),
                 ("blob_head_rps", "Blob HEAD")]


def read_samples(path):
    samples, info, notes = {}, {}, []
    for line in open(path):
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
    return samples, info, notes


def median_of(vals):
    nums = []
    for v in vals or []:
        try:
            nums.append(float(v))
        except ValueError:
            pass
    if not vals:
        return None
    return statistics.median(nums) if nums else "ERR"


def parse_baseline(path):
    """run.sh's results.md -> ({key: (berth, ref)}, header lines): medians of
    its raw samples table."""
    vals, head = {}, []
    text = open(path).read()
    for line in text.splitlines():
        m = re.match(r"## .* — (.*)", line)
        if m and not head:
            head.append(f"measured {m.group(1).strip()}")
        m = re.match(r"berth: `[^`]*repo (\w+)", line)
        if m:
            head.append(f"berth built from commit {m.group(1)}")
        m = re.fullmatch(r"\|\s*(\w+)\s*\|([^|]*)\|([^|]*)\|", line.strip())
        if not m:
            continue
        def nums(cell):
            out = []
            for x in cell.split(", "):
                try:
                    out.append(float(x.strip().replace(",", "")))
                except ValueError:
                    pass
            return statistics.median(out) if out else None
        vals[m.group(1)] = (nums(m.group(2)), nums(m.group(3)))
    return vals, head


def scalereport(samples_path, out_path, baseline_path=None):
    samples, info, notes = read_samples(samples_path)

    def g(k, reg="-", d=""):
        return info.get((k, reg), d)

    subst = {"ntags": g("ntags"), "gc_blobs": g("gc_blobs")}
    L = []
    L.append(f"## berth on PostgreSQL (1 replica, 3 behind haproxy) vs SQLite vs the reference — {g('date')}")
    L.append("")
    L.append(f"Machine: {g('machine')}. Work dir: {g('workdir_fs')}.  ")
    L.append(f"berth: `{g('berth_version')}`; reference: `{g('ref_version')}`.  ")
    L.append(f"PostgreSQL {g('pg_version')}, a server of its own for this run (data in the work dir; "
             f"{g('pg_settings')}); both PostgreSQL columns use it, each its own database.  ")
    L.append(f"PG ×3: three `berth serve` on one data directory and database behind haproxy "
             f"{g('haproxy_version')} ({g('haproxy_mode')}).  ")
    L.append(f"Load: {g('wrk_duration')} × {g('wrk_conns')} connections after a {g('warmup')} warm-up "
             f"(wrk; hey for HEAD); {g('pin')}.  ")
    L.append(f"CPU busy before start: {g('busy_start', '-', '?')}%; CPU used by other processes during the run: "
             f"{g('foreign_cpu', '-', '?')}.  ")
    L.append("Ratio = column / reference; ↑ = higher is better, ↓ = lower is better. berth runs with "
             "`--no-auth` like the reference, `gc.reviewDelay: 0s`, `gc.sweepInterval: 24h` (sweeps only when asked).")
    L.append("")
    names = [n for _, n in SCALE_COLS]
    L.append("| metric | unit | " + " | ".join(names) + " | SQLite / ref | PG ×1 / ref | PG ×3 / ref | better | target | met |")
    L.append("|---|---|" + "---:|" * (len(names) + 3) + ":-:|:-:|:-:|")
    for key, label, unit, hib, tdesc, tcheck in SCALE_METRICS:
        vals = {c: median_of(samples.get((key, c))) for c, _ in SCALE_COLS}
        if all(v is None for v in vals.values()):
            continue
        ref = vals["ref"]
        ratios = {}
        for c in ("sqlite", "pg1", "pg3"):
            v = vals[c]
            ratios[c] = v / ref if isinstance(v, float) and isinstance(ref, float) and ref > 0 else None
        met = ""
        if tcheck:
            met = " · ".join(
                f"{'×1' if c == 'pg1' else '×3'} {'✅' if ratios[c] is not None and tcheck(ratios[c]) else '❌'}"
                for c in PG_COLS)
        cells = [fmt(vals[c]) for c, _ in SCALE_COLS]
        rcells = [(fmt(ratios[c]) + "×") if ratios[c] is not None else "—" for c in ("sqlite", "pg1", "pg3")]
        L.append(f"| {label.format(**subst)} | {unit} | " + " | ".join(cells) + " | " + " | ".join(rcells)
                 + f" | {'↑' if hib else '↓'} | {tdesc} | {met} |")
    L.append("")
    L.append("¹ berth: an online sweep (`POST /api/v1/gc/sweep`, the registry keeps serving), timed from "
             "the request to its answer; the garbage is blobs uploaded and never referenced, reviewed at "
             "once. Reference: its offline `registry garbage-collect` (the server stopped, a mark phase "
             "over every repository and manifest, then the sweep), timed from start to exit, on the same "
             "kind of garbage; the reference has no online collector. For PG ×3 the 1-sweeper row is one "
             "replica sweeping while the other two are idle.")
    # GC checks: exactly the garbage went.
    rows = [(k[1], k[0], v) for k, v in info.items() if k[0].startswith("gc_detail_")]
    if rows:
        L.append("")
        L.append("Garbage collection checks (after each timed sweep): exactly the garbage went.")
        L.append("")
        L.append("| column | sweepers | garbage made | deleted (sweep answers) | GC total Δ | blob files on disk Δ "
                 "| garbage HEAD → 404 | live image intact | reviews left | ok |")
        L.append("|---|---:|---:|---|---:|---:|---:|:-:|---:|:-:|")
        order = {c: i for i, (c, _) in enumerate(SCALE_COLS)}
        for col, key, val in sorted(rows, key=lambda r: (order.get(r[0], 9), r[1])):
            try:
                d = json.loads(val)
            except ValueError:
                continue
            name = dict(SCALE_COLS).get(col, col)
            L.append(f"| {name} | {d.get('sweepers', '')} | {d.get('made', '')} | {d.get('deleted', '')} | "
                     f"{d.get('total_delta', '—')} | {d.get('files_delta', '')} | {d.get('head404', '')} | "
                     f"{'✅' if d.get('live_ok') else '❌'} | {d.get('reviews_left', '—')} | "
                     f"{'✅' if d.get('ok') else '❌'} |")
    # The SQLite column against run.sh's last SQLite-only results (before PostgreSQL support).
    if baseline_path and os.path.exists(baseline_path):
        base, head = parse_baseline(baseline_path)
        L.append("")
        L.append("SQLite, now vs before PostgreSQL support (target: no slower). \"Before\" is "
                 f"{g('baseline_source')} ({', '.join(head)}). The machine's "
                 "speed varies from run to run, so the comparison is of each run's ratio to the reference "
                 "measured beside it; met when now/before ≥ 0.90 (10 % allowed for noise).")
        L.append("")
        L.append("| metric | before: berth | before: ref | before ratio | now: SQLite | now: ref | now ratio | now / before | target | met |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|:-:|:-:|")
        for key, label in SQLITE_BEFORE:
            b_b, b_r = base.get(key, (None, None))
            n_b = median_of(samples.get((key, "sqlite")))
            n_r = median_of(samples.get((key, "ref")))
            br = b_b / b_r if b_b and b_r else None
            nr = n_b / n_r if isinstance(n_b, float) and isinstance(n_r, float) and n_r > 0 else None
            q = nr / br if nr is not None and br else None
            met = ("✅" if q >= 0.9 else "❌") if q is not None else "❌"
            L.append(f"| {label} (req/s) | {fmt(b_b)} | {fmt(b_r)} | {fmt(br) + '×' if br else '—'} | "
                     f"{fmt(n_b)} | {fmt(n_r)} | {fmt(nr) + '×' if nr is not None else '—'} | "
                     f"{fmt(q) + '×' if q is not None else '—'} | ≥ 0.90× | {met} |")
        L.append("")
        L.append("Manifest PUT at c=32 has no \"before\" (run.sh timed 1000 sequential PUTs on one connection).")
    L.append("")
    L.append("<details><summary>raw samples</summary>")
    L.append("")
    L.append("| metric | " + " | ".join(names) + " |")
    L.append("|---|" + "---|" * len(names))
    for key, *_ in SCALE_METRICS:
        row = [samples.get((key, c)) for c, _ in SCALE_COLS]
        if any(row):
            L.append(f"| {key} | " + " | ".join(", ".join(fmt_raw(x) for x in (v or [])) for v in row) + " |")
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
    elif cmd == "garbage":
        garbage(args)
    elif cmd == "sweep":
        sweep(args)
    elif cmd == "gcload":
        gcload(args)
    elif cmd == "pushlat":
        pushlat(args)
    elif cmd == "headall":
        headall(args[0], args[1], args[2])
    elif cmd == "tagcount":
        tagcount(args[0], args[1])
    elif cmd == "scalereport":
        scalereport(args[0], args[1], args[2] if len(args) > 2 else None)
    else:
        raise SystemExit(f"unknown subcommand {cmd}\n{__doc__}")


if __name__ == "__main__":
    main()
