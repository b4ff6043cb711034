#!/usr/bin/env python3
"""Writes a small single-platform OCI image layout (one gzip layer with random
data, a config, a manifest tagged v1) into the directory given as argv[1].
Used by the e2e scripts: nothing can be pulled here, so test images are made."""
import gzip, hashlib, io, json, os, sys, tarfile, time
layout = sys.argv[1]
os.makedirs(f"{layout}/blobs/sha256", exist_ok=True)
def blob(data):
    d = hashlib.sha256(data).hexdigest()
    open(f"{layout}/blobs/sha256/{d}", "wb").write(data)
    return "sha256:" + d, len(data)
raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w") as tf:
    for name, data in (("etc/berth-auth", b"berth e2e %d\n" % time.time_ns()),
                       ("app/data.bin", os.urandom(65536))):
        ti = tarfile.TarInfo(name); ti.size = len(data); ti.mtime = 0
        tf.addfile(ti, io.BytesIO(data))
raw = raw.getvalue()
layer, lsize = blob(gzip.compress(raw, mtime=0))
config, csize = blob(json.dumps({
    "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/true"]},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]},
}).encode())
manifest, msize = blob(json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": csize},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": lsize}],
}).encode())
json.dump({"schemaVersion": 2, "manifests": [{
    "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest, "size": msize,
    "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}, open(f"{layout}/index.json", "w"))
json.dump({"imageLayoutVersion": "1.0.0"}, open(f"{layout}/oci-layout", "w"))
