#!/usr/bin/env python3
"""Test data for e2e/ui.sh (berth's web UI).

  seed.py layout DIR
      Writes one OCI image layout into DIR with these references (index.json ref names):
        v1, v2, v3   single-platform linux/amd64 images with 64, 128 and 256 KiB of random
                     (incompressible) layer data, so their sizes differ clearly
        latest       a distinct 32 KiB image
        multi        an image index: linux/amd64 and linux/arm64 (8 KiB each)
        many         a 4 KiB image (the 10,000-tag repository)
      skopeo pushes these (copy --all --preserve-digests oci:DIR:REF docker://...).
      Prints a JSON summary (digests, sizes) and writes it to DIR/layout.json.

  seed.py web DIR REPO      (after skopeo pushed v1 to REPO)
      Pushes through the registry API: an OCI artifact (artifactType
      application/vnd.example.signature.v1, config = the empty descriptor, subject = v1's
      manifest) tagged v1-sig, and tags rc-01..rc-25 = v1's manifest bytes (PUT by tag).
      Writes DIR/web.json (artifact digest).

  seed.py many DIR REPO COUNT   (after skopeo pushed `many` to REPO:t00000)
      PUTs the `many` manifest as tags t00001..t<COUNT-1> (5 digits), with keep-alive
      connections in SEED_THREADS (4) threads; bearer tokens are refreshed before they expire.
      Then counts the tags through /v2/REPO/tags/list (following Link headers).

Environment for web/many: BERTH_URL, BERTH_REALM, BERTH_SERVICE, SEED_USER, SEED_PASS.
"""
import base64, gzip, hashlib, http.client, io, json, os, sys, tarfile, threading, time
import urllib.parse

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
ARTIFACT_TYPE = "application/vnd.example.signature.v1"
SIG_LAYER = "application/vnd.example.signature.v1+json"


def canon(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


# ------------------------------------------------------------------ layout
class Layout:
    def __init__(self, root):
        self.root = root
        os.makedirs(f"{root}/blobs/sha256", exist_ok=True)
        self.refs = []

    def blob(self, data):
        d = hashlib.sha256(data).hexdigest()
        with open(f"{self.root}/blobs/sha256/{d}", "wb") as f:
            f.write(data)
        return {"digest": "sha256:" + d, "size": len(data)}

    def image(self, label, arch, payload, created):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tf:
            for name, data in ((f"etc/berth-ui-{label}", f"berth ui e2e {label} {time.time_ns()}\n".encode()),
                               (f"app/{label}.bin", os.urandom(payload))):
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                ti.mtime = 0
                tf.addfile(ti, io.BytesIO(data))
        raw = raw.getvalue()
        layer = self.blob(gzip.compress(raw, mtime=0))
        config = self.blob(canon({
            "architecture": arch, "os": "linux", "created": created,
            "config": {"Cmd": ["/bin/true"], "Labels": {"dev.berth.e2e": label}},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]},
        }))
        manifest = canon({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, **config},
            "layers": [{"mediaType": OCI_LAYER, **layer}],
            "annotations": {"org.opencontainers.image.created": created},
        })
        m = self.blob(manifest)
        total = m["size"] + config["size"] + layer["size"]
        return {"mediaType": OCI_MANIFEST, **m}, total

    def ref(self, name, desc):
        self.refs.append({**desc, "annotations": {"org.opencontainers.image.ref.name": name}})

    def finish(self):
        with open(f"{self.root}/index.json", "w") as f:
            json.dump({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.refs}, f)
        with open(f"{self.root}/oci-layout", "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)


def cmd_layout(root):
    lay = Layout(root)
    out = {"images": {}}
    kib = 1024
    for name, size, created in (("v1", 64 * kib, "2024-01-10T10:00:00Z"),
                                ("v2", 128 * kib, "2024-02-10T10:00:00Z"),
                                ("v3", 256 * kib, "2024-03-10T10:00:00Z"),
                                ("latest", 32 * kib, "2024-04-10T10:00:00Z"),
                                ("many", 4 * kib, "2024-05-10T10:00:00Z")):
        desc, total = lay.image(name, "amd64", size, created)
        lay.ref(name, desc)
        out["images"][name] = {"digest": desc["digest"], "size": desc["size"], "total_size": total}
    children, total = [], 0
    for arch in ("amd64", "arm64"):
        desc, t = lay.image(f"multi-{arch}", arch, 8 * kib, "2024-04-01T10:00:00Z")
        children.append({**desc, "platform": {"architecture": arch, "os": "linux"}})
        out["images"][f"multi-{arch}"] = {"digest": desc["digest"], "size": desc["size"], "total_size": t}
        total += t
    index = lay.blob(canon({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}))
    lay.ref("multi", {"mediaType": OCI_INDEX, **index})
    out["images"]["multi"] = {"digest": index["digest"], "size": index["size"],
                              "total_size": total + index["size"], "index": True}
    lay.finish()
    with open(f"{root}/layout.json", "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(out))


def layout_manifest(root, ref):
    """(bytes, media type) of the manifest that index.json names `ref`."""
    with open(f"{root}/index.json") as f:
        for m in json.load(f)["manifests"]:
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref:
                with open(f"{root}/blobs/sha256/{m['digest'].split(':', 1)[1]}", "rb") as b:
                    return b.read(), m["mediaType"], m["digest"]
    raise SystemExit(f"{root}: no reference {ref!r} in index.json")


# ------------------------------------------------------------------ registry client
class Registry:
    """Bearer tokens from the realm (Basic credentials), cached per scope, refreshed
    after TOKEN_REUSE_S (berth's tokens live 300 s)."""
    TOKEN_REUSE_S = 200

    def __init__(self):
        self.url = os.environ["BERTH_URL"]
        u = urllib.parse.urlsplit(self.url)
        self.host, self.port = u.hostname, u.port or 80
        self.realm = os.environ["BERTH_REALM"]
        self.service = os.environ["BERTH_SERVICE"]
        self.basic = "Basic " + base64.b64encode(
            f"{os.environ['SEED_USER']}:{os.environ['SEED_PASS']}".encode()).decode()
        self.tokens = {}
        self.lock = threading.Lock()

    def conn(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=60)

    def token(self, scope, refresh=False):
        with self.lock:
            t = self.tokens.get(scope)
            if t and not refresh and time.monotonic() - t[1] < self.TOKEN_REUSE_S:
                return t[0]
            r = urllib.parse.urlsplit(self.realm)
            q = urllib.parse.urlencode({"service": self.service, "scope": scope})
            c = http.client.HTTPConnection(r.hostname, r.port or 80, timeout=30)
            c.request("GET", f"{r.path}?{q}", headers={"Authorization": self.basic})
            resp = c.getresponse()
            body = resp.read()
            c.close()
            if resp.status != 200:
                raise SystemExit(f"token request GET {self.realm}?{q}: HTTP {resp.status}: {body[:500]!r}")
            doc = json.loads(body)
            tok = doc.get("token") or doc.get("access_token")
            self.tokens[scope] = (tok, time.monotonic())
            return tok

    def request(self, conn, method, path, scope, body=None, headers=None, want=(200,)):
        """One request on `conn` (reconnects once on a dropped keep-alive connection,
        fetches a new token once on 401). Returns (status, headers, body, conn)."""
        for attempt in range(3):
            h = dict(headers or {})
            h["Authorization"] = "Bearer " + self.token(scope, refresh=attempt > 0 and last == 401)
            try:
                conn.request(method, path, body=body, headers=h)
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.HTTPException, ConnectionError, OSError) as e:
                conn.close()
                conn = self.conn()
                last = repr(e)
                continue
            last = resp.status
            if resp.status == 401:
                continue
            if resp.status not in want:
                raise RuntimeError(f"{method} {self.url}{path}: HTTP {resp.status}, want {want}: {data[:500]!r}")
            return resp.status, resp, data, conn
        raise RuntimeError(f"{method} {self.url}{path}: failed after 3 attempts (last: {last})")

    def upload_blob(self, conn, repo, data):
        scope = f"repository:{repo}:pull,push"
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        _, resp, _, conn = self.request(conn, "POST", f"/v2/{repo}/blobs/uploads/", scope, body=b"",
                                        headers={"Content-Length": "0"}, want=(202,))
        loc = urllib.parse.urlsplit(urllib.parse.urljoin(self.url + "/", resp.getheader("Location")))
        path = loc.path + "?" + (loc.query + "&" if loc.query else "") + "digest=" + urllib.parse.quote(digest)
        self.request(conn, "PUT", path, scope, body=data,
                     headers={"Content-Type": "application/octet-stream"}, want=(201,))
        return {"digest": digest, "size": len(data)}, conn

    def put_manifest(self, conn, repo, ref, data, media_type):
        _, resp, _, conn = self.request(conn, "PUT", f"/v2/{repo}/manifests/{ref}", f"repository:{repo}:pull,push",
                                        body=data, headers={"Content-Type": media_type}, want=(201,))
        return resp, conn

    def tags(self, repo):
        conn = self.conn()
        path, out = f"/v2/{repo}/tags/list?n=10000", []
        while path:
            _, resp, data, conn = self.request(conn, "GET", path, f"repository:{repo}:pull")
            out += json.loads(data).get("tags") or []
            link = resp.getheader("Link")
            path = None
            if link and 'rel="next"' in link:
                path = urllib.parse.urlsplit(link.split(";")[0].strip().strip("<>"))
                path = path.path + "?" + path.query
        conn.close()
        return out


def cmd_web(root, repo):
    reg = Registry()
    t0 = time.monotonic()
    v1, v1_type, v1_digest = layout_manifest(root, "v1")
    conn = reg.conn()
    empty, conn = reg.upload_blob(conn, repo, b"{}")
    sig = canon({"critical": {"image": {"docker-manifest-digest": v1_digest}, "type": "berth e2e signature"},
                 "optional": {"created": time.time_ns()}})
    layer, conn = reg.upload_blob(conn, repo, sig)
    artifact = canon({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": OCI_EMPTY, **empty, "data": "e30="},
        "layers": [{"mediaType": SIG_LAYER, **layer}],
        "subject": {"mediaType": v1_type, "digest": v1_digest, "size": len(v1)},
        "annotations": {"org.opencontainers.image.created": "2024-01-11T10:00:00Z"},
    })
    a_digest = "sha256:" + hashlib.sha256(artifact).hexdigest()
    resp, conn = reg.put_manifest(conn, repo, "v1-sig", artifact, OCI_MANIFEST)
    got = resp.getheader("Docker-Content-Digest")
    if got and got != a_digest:
        raise SystemExit(f"PUT {repo}:v1-sig: Docker-Content-Digest {got}, want {a_digest}")
    if resp.getheader("OCI-Subject") not in (None, v1_digest):
        raise SystemExit(f"PUT {repo}:v1-sig: OCI-Subject {resp.getheader('OCI-Subject')}, want {v1_digest}")
    rc = [f"rc-{i:02d}" for i in range(1, 26)]
    for tag in rc:
        _, conn = reg.put_manifest(conn, repo, tag, v1, v1_type)
    conn.close()
    out = {"artifact": {"tag": "v1-sig", "digest": a_digest, "size": len(artifact),
                        "artifactType": ARTIFACT_TYPE, "subject": v1_digest},
           "rc_tags": rc}
    with open(f"{root}/web.json", "w") as f:
        json.dump(out, f, indent=1)
    print(f"seed web: artifact v1-sig ({a_digest}) and {len(rc)} rc tags pushed to {repo} "
          f"in {time.monotonic() - t0:.2f}s")


def cmd_many(root, repo, count):
    reg = Registry()
    data, media_type, digest = layout_manifest(root, "many")
    names = [f"t{i:05d}" for i in range(1, count)]
    threads = int(os.environ.get("SEED_THREADS", "4"))
    lock = threading.Lock()
    state = {"next": 0, "done": 0, "errors": []}
    t0 = time.monotonic()

    def worker():
        conn = reg.conn()
        while True:
            with lock:
                if state["errors"] or state["next"] >= len(names):
                    break
                name = names[state["next"]]
                state["next"] += 1
            try:
                _, conn = reg.put_manifest(conn, repo, name, data, media_type)
            except Exception as e:  # report the first few, stop everyone
                with lock:
                    state["errors"].append(f"{name}: {e}")
                break
            with lock:
                state["done"] += 1
                if state["done"] % 2500 == 0:
                    print(f"seed many: {state['done']}/{len(names)} tags, {time.monotonic() - t0:.1f}s", flush=True)
        conn.close()

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt = time.monotonic() - t0
    if state["errors"]:
        raise SystemExit("seed many: " + "; ".join(state["errors"][:5]))
    print(f"seed many: PUT {state['done']} manifests by tag in {dt:.1f}s "
          f"({state['done'] / max(dt, 1e-9):.0f}/s, {threads} threads, keep-alive)")
    t1 = time.monotonic()
    tags = reg.tags(repo)
    want = {f"t{i:05d}" for i in range(count)}
    missing = sorted(want - set(tags))
    print(f"seed many: tags/list has {len(tags)} tags ({time.monotonic() - t1:.2f}s)")
    if missing:
        raise SystemExit(f"seed many: {len(missing)} tags missing from tags/list, e.g. {missing[:5]}")
    with open(f"{root}/many.json", "w") as f:
        json.dump({"count": len(tags), "digest": digest}, f)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "layout":
        cmd_layout(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "web":
        cmd_web(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 5 and sys.argv[1] == "many":
        cmd_many(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(__doc__)
