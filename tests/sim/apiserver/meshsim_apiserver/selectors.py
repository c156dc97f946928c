"""Label and field selectors, as the API server parses them.

Grammar from k8s.io/apimachinery/pkg/labels/selector.go (Parse): a comma-separated
list of requirements `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`,
`!k`, and `k>n` / `k<n` (integers). Field selectors
(k8s.io/apimachinery/pkg/fields/selector.go) only know `=`, `==` and `!=`.
"""
import re


class SelectorError(ValueError):
    pass


_TOKEN = re.compile(r"\s*(!=|==|=|>|<|\(|\)|,|!|[^\s!=<>(),]+)")


def _tokens(text):
    pos, out = 0, []
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise SelectorError(f"unable to parse requirement: {text!r}")
        out.append(m.group(1))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


class LabelSelector:
    """A parsed label selector; `matches(labels)` is true when every requirement holds."""

    def __init__(self, requirements):
        self.requirements = requirements  # (key, op, values)

    @classmethod
    def parse(cls, text):
        reqs = []
        if text is None or not text.strip():
            return cls(reqs)
        toks = _tokens(text)
        i = 0

        def need(what):
            nonlocal i
            if i >= len(toks):
                raise SelectorError(f"unable to parse requirement: found '', expected: {what}")
            t = toks[i]
            i += 1
            return t

        while i < len(toks):
            t = need("identifier")
            if t == "!":
                key = need("identifier")
                reqs.append((key, "!", ()))
            else:
                key = t
                if key in ("=", "==", "!=", "(", ")", ",", ">", "<"):
                    raise SelectorError(f"unable to parse requirement: found '{key}', expected: identifier")
                if i >= len(toks) or toks[i] == ",":
                    reqs.append((key, "exists", ()))
                else:
                    op = need("operator")
                    if op in ("=", "==", "!="):
                        value = ""
                        if i < len(toks) and toks[i] != ",":
                            value = need("value")
                        reqs.append((key, "!=" if op == "!=" else "=", (value,)))
                    elif op in (">", "<"):
                        value = need("value")
                        try:
                            int(value)
                        except ValueError:
                            raise SelectorError(f"for 'Gt', 'Lt' operators, the value must be an integer: {value}")
                        reqs.append((key, op, (value,)))
                    elif op in ("in", "notin"):
                        if need("(") != "(":
                            raise SelectorError(f"found '{toks[i-1]}', expected: '('")
                        values = []
                        while True:
                            v = need("value or )")
                            if v == ")":
                                break
                            if v == ",":
                                continue
                            values.append(v)
                        reqs.append((key, op, tuple(values)))
                    else:
                        raise SelectorError(f"unable to parse requirement: found '{op}', expected: in, notin, =, ==, !=, gt, lt")
            if i < len(toks):
                if toks[i] != ",":
                    raise SelectorError(f"found '{toks[i]}', expected: ',' or 'end of string'")
                i += 1
        return cls(reqs)

    @classmethod
    def from_map(cls, labels):
        return cls([(k, "=", (v,)) for k, v in (labels or {}).items()])

    def empty(self):
        return not self.requirements

    def matches(self, labels):
        labels = labels or {}
        for key, op, values in self.requirements:
            have = key in labels
            value = labels.get(key)
            if op == "exists" and not have:
                return False
            if op == "!" and have:
                return False
            if op == "=" and value != values[0]:
                return False
            if op == "!=" and have and value == values[0]:
                return False
            if op == "in" and (not have or value not in values):
                return False
            if op == "notin" and have and value in values:
                return False
            if op in (">", "<"):
                try:
                    n = int(value)
                except (TypeError, ValueError):
                    return False
                if (op == ">" and not n > int(values[0])) or (op == "<" and not n < int(values[0])):
                    return False
        return True


def _lookup(obj, path):
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


class FieldSelector:
    """A field selector checked against the fields a resource declares selectable.

    The API server refuses other fields with 400 "field label not supported"
    (k8s.io/apiserver/pkg/registry/generic/registry/store.go via the resource's
    GetAttrs / fields.Set); `allowed` is that set for the resource."""

    def __init__(self, requirements):
        self.requirements = requirements  # (field, op, value)

    @classmethod
    def parse(cls, text, allowed, defaults=None):
        reqs = []
        if text is None or not text.strip():
            return cls(reqs)
        for part in _split_unescaped(text):
            part = part.strip()
            if not part:
                continue
            for op in ("!=", "==", "="):
                idx = part.find(op)
                if idx > 0:
                    field, value = part[:idx].strip(), part[idx + len(op):].strip()
                    break
            else:
                raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
            if field not in allowed:
                raise SelectorError(f'field label not supported: {field}')
            reqs.append((field, "!=" if op == "!=" else "=", _unescape(value)))
        return cls(reqs)

    def empty(self):
        return not self.requirements

    def matches(self, obj, defaults=None):
        for field, op, value in self.requirements:
            have = _lookup(obj, field)
            if have is None and defaults and field in defaults:
                have = defaults[field]
            have = "" if have is None else str(have)
            if (op == "=") != (have == value):
                return False
        return True

    def exact_name(self):
        for field, op, value in self.requirements:
            if field == "metadata.name" and op == "=":
                return value
        return None


def _split_unescaped(text):
    out, cur, esc = [], "", False
    for ch in text:
        if esc:
            cur += "\\" + ch
            esc = False
        elif ch == "\\":
            esc = True
        elif ch == ",":
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out


def _unescape(value):
    return value.replace("\\,", ",").replace("\\=", "=").replace("\\\\", "\\")
