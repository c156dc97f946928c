"""The three patch types the API server accepts on PATCH
(k8s.io/apiserver/pkg/endpoints/handlers/patch.go):

- application/merge-patch+json: RFC 7386 (kubectl label, kubectl apply of custom resources);
- application/strategic-merge-patch+json: built-in kinds only, with the merge keys of
  their Go types (k8s.io/api/core/v1/types.go `patchStrategy`/`patchMergeKey` tags) and
  the directives of k8s.io/apimachinery/pkg/util/strategicpatch/patch.go ($patch,
  $retainKeys, $deleteFromPrimitiveList/…, $setElementOrder/…);
- application/json-patch+json: RFC 6902.
Custom resources refuse strategic merge with 415, as the real server does.
"""
import copy


class PatchError(ValueError):
    pass


def merge_patch(original, patch):
    """RFC 7386 section 2."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# (parent field, field) -> merge key; parent "*" matches any. From the patchMergeKey
# tags in k8s.io/api/core/v1/types.go and meta/v1/types.go.
_MERGE_KEYS = {
    ("*", "containers"): "name",
    ("*", "initContainers"): "name",
    ("*", "ephemeralContainers"): "name",
    ("containers", "ports"): "containerPort",
    ("initContainers", "ports"): "containerPort",
    ("*", "env"): "name",
    ("*", "volumeMounts"): "mountPath",
    ("*", "volumeDevices"): "devicePath",
    ("*", "volumes"): "name",
    ("*", "imagePullSecrets"): "name",
    ("*", "hostAliases"): "ip",
    ("*", "topologySpreadConstraints"): "topologyKey",
    ("*", "resourceClaims"): "name",
    ("*", "ownerReferences"): "uid",
    ("status", "conditions"): "type",
    ("status", "podIPs"): "ip",
    ("status", "hostIPs"): "ip",
}
# Service.spec.ports merges by port (types.go: patchMergeKey:"port").
_SERVICE_PORTS = ("spec", "ports")
# Lists of strings merged as sets (patchStrategy:"merge" on a []string).
_PRIMITIVE_MERGE = {("metadata", "finalizers")}


def _merge_key(kind, parent, field):
    if kind == "Service" and (parent, field) == _SERVICE_PORTS:
        return "port"
    if (parent, field) in _MERGE_KEYS:
        return _MERGE_KEYS[(parent, field)]
    if field == "ports" and parent in ("containers", "initContainers", "ephemeralContainers"):
        return "containerPort"
    return _MERGE_KEYS.get(("*", field))


def _strip(value):
    """A patch value inserted where nothing was: drop directives inside it."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in ("$patch", "$retainKeys") or k.startswith("$setElementOrder/") or k.startswith("$deleteFromPrimitiveList/"):
                continue
            if v is None:
                continue
            out[k] = _strip(v)
        return out
    if isinstance(value, list):
        return [_strip(v) for v in value if not (isinstance(v, dict) and v.get("$patch") == "delete")]
    return value


def strategic_merge_patch(original, patch, kind):
    if not isinstance(patch, dict):
        raise PatchError("strategic merge patch must be a JSON object")
    return _merge_map(copy.deepcopy(original or {}), patch, kind, "", "")


def _merge_map(original, patch, kind, parent, field):
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip({k: v for k, v in patch.items() if k != "$patch"})
    if directive == "delete":
        return None
    if directive not in (None, "merge"):
        raise PatchError(f"unknown patch type: {directive} in map: {patch}")
    if not isinstance(original, dict):
        original = {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            if isinstance(original.get(name), list):
                original[name] = [v for v in original[name] if v not in (value or [])]
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/") or key.startswith("$deleteFromPrimitiveList/"):
            continue
        if value is None:
            original.pop(key, None)
            continue
        cur = original.get(key)
        if isinstance(value, dict) and isinstance(cur, dict):
            merged = _merge_map(cur, value, kind, field, key)
            if merged is None:
                original.pop(key, None)
            else:
                original[key] = merged
        elif isinstance(value, dict) and value.get("$patch") == "delete":
            original.pop(key, None)
        elif isinstance(value, list) and isinstance(cur, list):
            original[key] = _merge_list(cur, value, kind, field, key)
        else:
            original[key] = _strip(value)
    if retain is not None:
        for key in list(original):
            if key not in retain:
                del original[key]
    return original


def _merge_list(original, patch, kind, parent, field):
    if (parent, field) in _PRIMITIVE_MERGE:
        out = list(original)
        for v in patch:
            if v not in out:
                out.append(v)
        return out
    key = _merge_key(kind, parent, field)
    if key is None or not all(isinstance(v, dict) for v in original + patch):
        return _strip(patch)
    if any(v.get("$patch") == "replace" for v in patch):
        return _strip([v for v in patch if v.get("$patch") != "replace"])
    out = [copy.deepcopy(v) for v in original]
    for item in patch:
        if key not in item:
            raise PatchError(f"map: {item} does not contain declared merge key: {key}")
        idx = next((i for i, v in enumerate(out) if v.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                del out[idx]
            continue
        if idx is None:
            out.append(_strip(item))
        else:
            out[idx] = _merge_map(out[idx], item, kind, field, field)
    return out


def _pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer: {path}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc, parts):
    cur = doc
    for p in parts:
        if isinstance(cur, list):
            try:
                cur = cur[int(p)]
            except (ValueError, IndexError):
                raise PatchError(f"path not found: /{'/'.join(parts)}")
        elif isinstance(cur, dict):
            if p not in cur:
                raise PatchError(f"path not found: /{'/'.join(parts)}")
            cur = cur[p]
        else:
            raise PatchError(f"path not found: /{'/'.join(parts)}")
    return cur


def json_patch(original, ops):
    """RFC 6902: add, remove, replace, move, copy, test."""
    if not isinstance(ops, list):
        raise PatchError("json patch must be a JSON array")
    doc = copy.deepcopy(original)
    for op in ops:
        kind = op.get("op")
        parts = _pointer(op.get("path", ""))
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"missing value in {kind} operation")
        if kind == "test":
            if _walk(doc, parts) != op["value"]:
                raise PatchError(f"testing value {op.get('path')} failed")
            continue
        if kind in ("move", "copy"):
            src = _pointer(op.get("from", ""))
            value = copy.deepcopy(_walk(doc, src))
            if kind == "move":
                doc = _remove(doc, src)
            doc = _add(doc, parts, value, replace=False)
        elif kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op["value"]), replace=False)
        elif kind == "replace":
            _walk(doc, parts)
            doc = _add(doc, parts, copy.deepcopy(op["value"]), replace=True)
        elif kind == "remove":
            doc = _remove(doc, parts)
        else:
            raise PatchError(f"unexpected operation: {kind}")
    return doc


def _add(doc, parts, value, replace):
    if not parts:
        return value
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            try:
                idx = int(last)
            except ValueError:
                raise PatchError(f"invalid index {last}")
            if idx < 0 or idx > len(parent) or (replace and idx == len(parent)):
                raise PatchError(f"index out of range: {idx}")
            if replace:
                parent[idx] = value
            else:
                parent.insert(idx, value)
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise PatchError(f"cannot add to /{'/'.join(parts)}")
    return doc


def _remove(doc, parts):
    if not parts:
        raise PatchError("cannot remove the whole document")
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    try:
        if isinstance(parent, list):
            del parent[int(last)]
        else:
            del parent[last]
    except (KeyError, IndexError, ValueError, TypeError):
        raise PatchError(f"path not found: /{'/'.join(parts)}")
    return doc
