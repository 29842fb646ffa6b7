#!/usr/bin/env python3
"""Writes the openAPIV3Schema of every served version of a CustomResourceDefinition as JSON.

Usage: extract-crd-schema.py CRD.yaml OUT_DIR

Each schema goes to OUT_DIR/<group>_<kind>_<version>.json (e.g. keda.sh_ScaledObject_v1alpha1.json),
the file name scripts/validate-manifests.py looks up for a resource's apiVersion and kind.
The CRD YAML comes from the project's release (see README.md next to this file).
"""
import json
import pathlib
import sys

import yaml


def main(crd_path: str, out_dir: str) -> None:
    crd = yaml.safe_load(pathlib.Path(crd_path).read_text())
    if crd.get("kind") != "CustomResourceDefinition":
        sys.exit(f"{crd_path}: not a CustomResourceDefinition")
    group = crd["spec"]["group"]
    kind = crd["spec"]["names"]["kind"]
    for version in crd["spec"]["versions"]:
        if not version.get("served", False):
            continue
        schema = version["schema"]["openAPIV3Schema"]
        out = pathlib.Path(out_dir) / f"{group}_{kind}_{version['name']}.json"
        out.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
        print(f"{out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
