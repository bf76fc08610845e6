#!/usr/bin/env python3
"""Writes a container image as a docker-archive tar (what `ctr images import` reads), with no
registry, daemon or base image: one layer made of the given files.

    mkimage.py OUT.tar NAME:TAG --entrypoint '/bin/x arg' [--cmd 'arg ...'] [--user 65532:65532]
               [--file SRC=/dst ...] [--with-libs /dst/binary ...]

--with-libs copies the shared libraries a binary needs (as `ldd` resolves them on this machine,
plus the dynamic loader) to the same paths in the image: the layout of a distroless `cc` base.
The layer also gets /etc/passwd and /etc/group naming root and `nonroot` (65532), /tmp, and
nothing else. Timestamps are fixed, so the same inputs give the same image ID.
"""

import argparse
import hashlib
import io
import json
import os
import shlex
import subprocess
import sys
import tarfile

MTIME = 1_700_000_000


def libs_of(binary):
    """The absolute paths of the shared objects `binary` loads, from ldd."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if out.returncode != 0:
        # ldd says "not a dynamic executable" for static binaries: nothing to copy.
        return []
    paths = []
    for line in out.stdout.splitlines():
        parts = line.split()
        if "=>" in parts:
            target = parts[parts.index("=>") + 1]
            if target.startswith("/"):
                paths.append(target)
        elif parts and parts[0].startswith("/"):
            paths.append(parts[0])  # the dynamic loader
    return paths


def add_dir(tar, path, mode=0o755):
    info = tarfile.TarInfo(path.lstrip("/"))
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, MTIME
    tar.addfile(info)


def add_bytes(tar, path, data, mode=0o644):
    info = tarfile.TarInfo(path.lstrip("/"))
    info.size, info.mode, info.mtime = len(data), mode, MTIME
    tar.addfile(info, io.BytesIO(data))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("name")
    ap.add_argument("--entrypoint", required=True, help="the entrypoint, words split as a shell would")
    ap.add_argument("--cmd", default="", help="the default arguments, words split as a shell would")
    ap.add_argument("--user", default="")
    ap.add_argument("--file", action="append", default=[], help="SRC=/dst")
    ap.add_argument("--with-libs", action="append", default=[], help="a binary whose libraries to copy")
    args = ap.parse_args()

    files = {}
    for spec in args.file:
        src, _, dst = spec.partition("=")
        if not dst.startswith("/"):
            sys.exit(f"mkimage: --file {spec}: the destination must be an absolute path")
        files[dst] = src
    for binary in args.with_libs:
        for lib in libs_of(binary):
            files.setdefault(lib, os.path.realpath(lib))

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = {"/etc", "/tmp"}
        for dst in files:
            d = os.path.dirname(dst)
            while d not in ("/", ""):
                dirs.add(d)
                d = os.path.dirname(d)
        for d in sorted(dirs):
            add_dir(tar, d, 0o1777 if d == "/tmp" else 0o755)
        add_bytes(tar, "/etc/passwd", b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
        add_bytes(tar, "/etc/group", b"root:x:0:\nnonroot:x:65532:\n")
        for dst in sorted(files):
            with open(files[dst], "rb") as f:
                data = f.read()
            mode = os.stat(files[dst]).st_mode & 0o777
            add_bytes(tar, dst, data, mode)
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()

    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {"Entrypoint": shlex.split(args.entrypoint), "Cmd": shlex.split(args.cmd) or None, "User": args.user, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "tests/cluster/mkimage.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [args.name], "Layers": ["layer.tar"]}]

    tmp = args.out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as out:
        add_bytes(out, "layer.tar", layer_bytes)
        add_bytes(out, config_name, config_bytes)
        add_bytes(out, "manifest.json", json.dumps(manifest).encode())
    os.replace(tmp, args.out)
    print(f"mkimage: {args.name} -> {args.out} ({len(layer_bytes) // 1024} KiB layer, {len(files)} files)")


if __name__ == "__main__":
    main()
