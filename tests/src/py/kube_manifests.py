"""Renders the Kubernetes manifests of deploy/kubernetes/ and validates them with
kubernetes-validate (the API's own OpenAPI schemas, strict: unknown fields are errors).

  render ROOT             prints {"base": [objects], "overlays/eu": [...], ...}: the base and
                          every overlays/* directory, rendered as `kubectl kustomize` would.
  render-dir DIR          prints the objects of one kustomization directory.
  validate VERSION...     reads a JSON list of objects on stdin and prints a JSON list with, for
                          each object, null or the first schema error (any VERSION).

There is no kustomize here, so this renders the subset the manifests use and refuses every
other kustomization field, patch directive or list, rather than render it wrongly:
resources (files and directories), patches (strategic-merge files, no target), namespace,
labels (without selectors) and images, applied in kustomize's order (patches, namespace,
labels, images).
"""
import copy
import json
import os
import sys

import yaml

FIELDS = {"apiVersion", "kind", "resources", "patches", "namespace", "labels", "images"}
# Lists a strategic-merge patch may touch, with their merge keys (the API's patchMergeKey).
MERGE_KEYS = {"containers": "name", "env": "name"}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
}


class Refused(Exception):
    pass


def load_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def merge(base, patch, where):
    """Strategic merge of `patch` into `base` for maps, merge-keyed lists and scalars."""
    if isinstance(patch, dict):
        if not isinstance(base, dict):
            raise Refused(f"{where}: patch has a map where the resource has {type(base).__name__}")
        out = dict(base)
        for k, v in patch.items():
            if k.startswith("$"):
                raise Refused(f"{where}: patch directive {k} is not supported")
            if v is None:
                raise Refused(f"{where}/{k}: deleting with null is not supported")
            if isinstance(v, list):
                out[k] = merge_list(base.get(k, []), v, k, f"{where}/{k}")
            elif k in base:
                out[k] = merge(base[k], v, f"{where}/{k}")
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(patch, list):
        raise Refused(f"{where}: list outside a merge-keyed field")
    return patch


def merge_list(base, patch, field, where):
    key = MERGE_KEYS.get(field)
    if key is None:
        raise Refused(f"{where}: merging list {field!r} is not supported")
    out = [copy.deepcopy(item) for item in base]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise Refused(f"{where}: item without its merge key {key!r}")
        at = [i for i, b in enumerate(out) if b.get(key) == item[key]]
        if at:
            out[at[0]] = merge(out[at[0]], item, f"{where}[{key}={item[key]}]")
        else:
            out.append(copy.deepcopy(item))
    return out


def same(a, b):
    ma, mb = a.get("metadata", {}), b.get("metadata", {})
    return (
        a.get("apiVersion") == b.get("apiVersion")
        and a.get("kind") == b.get("kind")
        and ma.get("name") == mb.get("name")
    )


def pod_specs(obj):
    spec = obj.get("spec", {}).get("template", {}).get("spec")
    return [spec] if spec else []


def set_image(image, rule):
    name, tag = image, None
    if "@" in image:
        raise Refused(f"image {image}: digests are not supported")
    if ":" in image.rsplit("/", 1)[-1]:
        name, tag = image.rsplit(":", 1)
    if name != rule["name"]:
        return image
    name = rule.get("newName", name)
    tag = str(rule["newTag"]) if "newTag" in rule else tag
    return f"{name}:{tag}" if tag else name


def render_dir(directory):
    path = os.path.join(directory, "kustomization.yaml")
    (k,) = load_docs(path)
    unknown = set(k) - FIELDS
    if unknown:
        raise Refused(f"{path}: unsupported kustomization fields {sorted(unknown)}")
    objects = []
    for entry in k.get("resources", []):
        target = os.path.normpath(os.path.join(directory, entry))
        objects += render_dir(target) if os.path.isdir(target) else load_docs(target)
    for p in k.get("patches", []):
        if set(p) != {"path"}:
            raise Refused(f"{path}: patches support only `path` ({sorted(p)})")
        for patch in load_docs(os.path.join(directory, p["path"])):
            hits = [i for i, o in enumerate(objects) if same(o, patch)]
            if len(hits) != 1:
                raise Refused(f"{p['path']}: patch matches {len(hits)} resources, not one")
            objects[hits[0]] = merge(objects[hits[0]], patch, p["path"])
    if "namespace" in k:
        for o in objects:
            if o["kind"] in CLUSTER_SCOPED:
                raise Refused(f"{path}: namespace on cluster-scoped {o['kind']}")
            o.setdefault("metadata", {})["namespace"] = k["namespace"]
    for rule in k.get("labels", []):
        if set(rule) - {"pairs", "includeTemplates", "includeSelectors"} or rule.get(
            "includeSelectors"
        ):
            raise Refused(f"{path}: labels support pairs and includeTemplates only")
        for o in objects:
            o.setdefault("metadata", {}).setdefault("labels", {}).update(rule["pairs"])
            template = o.get("spec", {}).get("template")
            if rule.get("includeTemplates") and template is not None:
                template.setdefault("metadata", {}).setdefault("labels", {}).update(rule["pairs"])
    for rule in k.get("images", []):
        if set(rule) - {"name", "newName", "newTag"}:
            raise Refused(f"{path}: images support name, newName and newTag only")
        for o in objects:
            for spec in pod_specs(o):
                for c in spec.get("initContainers", []) + spec.get("containers", []):
                    c["image"] = set_image(c["image"], rule)
    return objects


def render(root):
    out = {"base": render_dir(os.path.join(root, "base"))}
    overlays = os.path.join(root, "overlays")
    for name in sorted(os.listdir(overlays)):
        out[f"overlays/{name}"] = render_dir(os.path.join(overlays, name))
    return out


def validate(versions, objects):
    import kubernetes_validate

    results = []
    for obj in objects:
        error = None
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except Exception as e:  # a schema error, or a kind the version does not know
                at = "/".join(str(p) for p in getattr(e, "absolute_path", []))
                first = str(e).splitlines()[0]
                error = f"Kubernetes {version}: {type(e).__name__} at /{at}: {first}"
                break
        results.append(error)
    return results


def main():
    command, args = sys.argv[1], sys.argv[2:]
    try:
        if command == "render":
            result = render(args[0])
        elif command == "render-dir":
            result = render_dir(args[0])
        elif command == "validate":
            result = validate(args, json.load(sys.stdin))
        else:
            raise SystemExit(f"unknown command {command}")
    except Refused as e:
        print(f"refused: {e}", file=sys.stderr)
        sys.exit(2)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
